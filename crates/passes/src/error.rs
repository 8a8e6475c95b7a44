//! The passes' error.

use fuse_ir::IrError;

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Ir(#[from] IrError),
    /// A pass left a graph that does not validate: a bug in that pass.
    #[error("invalid graph after pass `{pass}`: {error}")]
    Invalid { pass: &'static str, error: IrError },
    /// A pass failed on one member's graph (named by the member).
    #[error("{0}: {1}")]
    Member(String, Box<PassError>),
    /// The members cannot be fused; the message names the first divergence.
    #[error("cannot fuse: {0}")]
    Incompatible(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl PassError {
    /// The same error, said of member `name`'s graph.
    pub fn in_member(self, name: &str) -> PassError {
        PassError::Member(name.to_string(), Box::new(self))
    }

    /// The graph error inside, if there is one (it names the node or tensor).
    pub fn ir(&self) -> Option<&IrError> {
        match self {
            PassError::Ir(e) | PassError::Invalid { error: e, .. } => Some(e),
            PassError::Member(_, e) => e.ir(),
            PassError::Incompatible(_) | PassError::Internal(_) => None,
        }
    }
}
