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
