//! fusec passes: graph rewrites over [`fuse_ir::Graph`], one pass per file.
//!
//! Single-graph passes, run on each member before fusion:
//! - [`canonicalize()`]: constant folding, Identity removal, BiFPN's
//!   stacked sums into adds, dead shape arithmetic removed;
//! - [`fold_bn()`]: BatchNormalization folded into the Conv before it;
//! - [`dce()`]: dead-code elimination;
//! - [`fp16_weights()`]: f32 weights stored as f16, cast back where read.
//!
//! Fusion ([`fuse()`]), in data-flow order:
//! - [`align()`]: node-by-node correspondence, divergences;
//! - [`share`]: bit-identical layers computed once;
//! - [`group`]: the aligned trunk channel-stacked (grouped Conv, ...);
//! - [`heads`]: per-member layers after each divergence;
//! - then [`dce()`] and validation.

pub mod align;
pub mod canonicalize;
mod dce;
mod eval;
mod fold_bn;
mod fp16_weights;
pub mod fuse;
mod group;
mod heads;
pub mod share;
mod util;

pub use align::align;
pub use canonicalize::canonicalize;
pub use dce::dce;
pub use fold_bn::fold_bn;
pub use fp16_weights::fp16_weights;
pub use fuse::{explain, fuse, prepare_member, FuseOptions, FuseReport, Fused, Lowering, Member};

use fuse_ir::IrError;

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Ir(#[from] IrError),
    /// A pass failed on one member's graph (named by the member).
    #[error("{0}: {1}")]
    Member(String, IrError),
    /// The members cannot be fused; the message names the first divergence.
    #[error("cannot fuse: {0}")]
    Incompatible(String),
    #[error("internal error: {0}")]
    Internal(String),
}
