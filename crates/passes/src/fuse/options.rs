//! What the caller chooses: the members, and how aligned layers are
//! lowered.

use fuse_ir::Graph;

/// `fusec fuse`'s default lowering, `Regions { from: DEFAULT_GROUP_FROM }`:
/// measured fastest by `fusec bench` on a 2-core CPU with ONNX Runtime.
pub const DEFAULT_GROUP_FROM: f32 = 0.25;

/// How aligned, non-shared node groups are lowered.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Lowering {
    /// Channel-stacked: grouped convs, concatenated parameters.
    #[default]
    Grouped,
    /// Every member keeps its own nodes (only bit-identical layers are shared).
    Separate,
    /// Regions: members keep their own nodes for the first `from` fraction
    /// of the aligned nodes (in dataflow order, 0.0 to 1.0); the rest is
    /// grouped. The cut moves (by up to 5% of the nodes) to where the least
    /// data crosses it, e.g. a block's output rather than its expanded
    /// inside, so the stacking Concats copy little. On CPU the big early
    /// layers are compute-bound and gain nothing from grouping; the many
    /// small late ones (BiFPN, heads) do.
    Regions { from: f32 },
}

#[derive(Clone, Debug, Default)]
pub struct FuseOptions {
    /// Keep BatchNormalization nodes (grouped) instead of folding them into convs.
    pub keep_bn: bool,
    pub lowering: Lowering,
    /// Per-layer choice inside grouped regions: run depthwise convs per
    /// member (split) instead of as one grouped conv.
    pub split_depthwise: bool,
    /// Likewise for pointwise (1x1, group 1) convs.
    pub split_pointwise: bool,
}

pub struct Member {
    /// Short name: the file stem; prefixes the member's outputs.
    pub name: String,
    pub graph: Graph,
}
