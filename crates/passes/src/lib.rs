//! fusec passes: graph rewrites over [`fuse_ir::Graph`], one pass per file.
//!
//! Single-graph passes, run on each member before fusion:
//! - [`canonicalize()`]: constant folding, Identity removal, BiFPN's
//!   stacked sums into adds, dead shape arithmetic removed;
//! - [`fold_bn()`]: BatchNormalization folded into the Conv before it;
//! - [`fold_layer_scale()`]: a constant per-feature `Mul` (layer scale)
//!   folded into the linear layer (MatMul, bias) before it;
//! - [`merge_linear()`]: linear layers reading one value (BERT's query,
//!   key and value projections) merged into one MatMul and a Split;
//! - [`flatten_rows()`]: row-wise layers (a transformer's linear layers,
//!   LayerNorms, GELUs between attention reshapes) run on 2-D rows;
//! - [`dce()`]: dead-code elimination;
//! - [`pad_channels()`]: conv channel counts padded to a multiple of a
//!   block (before fusion, so that grouped convs keep ONNX Runtime's
//!   blocked layout);
//! - [`fp16_weights()`]: f32 weights stored as f16, cast back where read.
//!
//! Run on the fused graph, after lowering:
//! - [`fold_scale()`]: a constant per-channel `Mul` (EfficientDet's BiFPN
//!   weights) folded into the Conv that makes the value it scales.
//!
//! Fusion ([`fuse()`]) is a wing of its own, `fuse/`: the driver, the
//! member layout (`fuse/layout.rs`, the one place that says how members
//! are stacked), and one file per step, in data-flow order:
//! - [`fuse::align`]: node-by-node correspondence, divergences;
//! - [`fuse::share`]: bit-identical layers computed once;
//! - `group`: the aligned trunk stacked (grouped Conv, ...);
//! - `heads`: per-member layers after each divergence;
//! - `regions`: where grouping starts;
//! - `report`: what fusion did, `--explain`.
//!
//! Every pass is followed by validation ([`validate::validated`]): an
//! invalid graph is an error naming the pass and the node.

pub mod canonicalize;
mod dce;
mod error;
mod flatten_rows;
mod fold_bn;
mod fold_layer_scale;
mod fold_scale;
mod fp16_compute;
mod fp16_weights;
pub mod fuse;
mod merge_linear;
mod pad_channels;
mod util;
pub mod validate;

pub use canonicalize::canonicalize;
pub use dce::dce;
pub use error::PassError;
pub use flatten_rows::{flatten_rows, RowStats};
pub use fold_bn::fold_bn;
pub use fold_layer_scale::fold_layer_scale;
pub use fold_scale::fold_scale;
pub use fp16_compute::fp16_compute;
pub use fp16_weights::fp16_weights;
pub use fuse::align::align;
pub use fuse::{
    explain, fuse, prepare_member, FuseOptions, FuseReport, Fused, Lowered, Lowering, Member, Origin, Prepared,
};
pub use merge_linear::{merge_linear, MergeStats, MAX_MERGED_ROWS};
pub use pad_channels::{pad_channels, PadStats, MAX_CHANNEL_BLOCK, NCHWC_BLOCK};
