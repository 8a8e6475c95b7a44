//! fuse-ir: the graph IR every fusec stage reads and writes.
//!
//! - [`Graph`]: nodes on a petgraph `StableDiGraph`, values in an arena,
//!   addressed by typed ids ([`NodeId`], [`ValueId`]).
//! - [`Op`]: a closed enum, one variant per operator; static parameters are
//!   attributes (the frontends resolve ONNX's attribute-or-input forms).
//! - [`shape::infer`]: static shape inference for every op, run when a node is
//!   added, so every value has a complete [`TensorType`].
//! - [`text::to_text`]: the deterministic text form used by snapshot tests
//!   and `fusec inspect --ir`.
//! - [`eval::fold`]: one op evaluated on constant inputs (constant folding
//!   in the passes; static parameters the frontends must resolve).
//!
//! Architecture Invariant: shapes are static. Every value's type is fully
//! known; an input that is not (a dynamic dimension) is rejected by the
//! frontend, not carried along.
//!
//! Weights ([`Tensor`]) are memory-mapped or moved out of the parsed file,
//! never copied; cloning a `Tensor` shares its bytes.

mod dims;
mod dtype;
pub mod einsum;
mod error;
pub mod eval;
mod graph;
mod op;
pub mod shape;
mod tensor;
pub mod text;
mod value;

pub use dtype::{saturated_f16, DType, TensorType, MAX_ELEMENTS, MAX_RANK};
pub use error::IrError;
pub use graph::{claim_name, Graph, Node};
pub use op::*;
pub use tensor::{Bytes, Tensor};
pub use value::{known_of, NodeId, Value, ValueDef, ValueId, KNOWN_LIMIT};
