use thiserror::Error;

/// Errors of graph construction and validation. They name the node or the
/// tensor; the frontend adds the file.
#[derive(Debug, Error)]
pub enum IrError {
    #[error("node `{node}` ({op}): {msg}")]
    Node { node: String, op: &'static str, msg: String },
    #[error("tensor `{name}`: {msg}")]
    Tensor { name: String, msg: String },
    #[error("the graph has a cycle through node `{node}`")]
    Cycle { node: String },
    #[error("{0}")]
    Invalid(String),
}

impl IrError {
    /// The node the error is about, if it names one.
    pub fn node(&self) -> Option<&str> {
        match self {
            IrError::Node { node, .. } | IrError::Cycle { node } => Some(node),
            IrError::Tensor { .. } | IrError::Invalid(_) => None,
        }
    }

    /// The tensor the error is about, if it names one.
    pub fn tensor(&self) -> Option<&str> {
        match self {
            IrError::Tensor { name, .. } => Some(name),
            IrError::Node { .. } | IrError::Cycle { .. } | IrError::Invalid(_) => None,
        }
    }
}
