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
    /// A measured plan (`fusec fuse --tune`): the aligned node groups, in
    /// dataflow order, cut into `chunks` equal runs (at most 64); run `i`
    /// is grouped when bit `i` of `stacked` is set, per member otherwise.
    Plan { stacked: u64, chunks: u8 },
}

impl Lowering {
    /// Whether layers channel stacking cannot take (a transformer's
    /// MatMuls, LayerNorms, attention; a classifier's Gemm) are stacked on
    /// a member axis where the lowering groups: for `Grouped` and a
    /// measured `Plan`, not for the `Regions` default, whose cut was tuned
    /// for channel stacking: on a 2-core CPU with ONNX Runtime, three
    /// MiniLM-L6 cross-encoders stacked on a member axis ran at 0.87–0.94x
    /// the members at batch 1 (the runtime pre-packs only 2-D weights and
    /// its fusions of each member's layers are lost),
    /// so member-axis stacking is used where it is asked for or measured
    /// faster (`fusec fuse --tune`).
    pub fn stacks_members(self) -> bool {
        matches!(self, Lowering::Grouped | Lowering::Plan { .. })
    }

    /// The run of `chunks` (1 to 64) equal runs that node group `group` of
    /// `groups` falls in (what a `Plan`'s bits decide).
    pub fn run_of(group: usize, groups: usize, chunks: u8) -> usize {
        group * usize::from(chunks.clamp(1, 64)) / groups.max(1)
    }

    /// A plan as the digits of its runs, first run first: `00111111`.
    pub fn plan_digits(stacked: u64, chunks: u8) -> String {
        (0..chunks).map(|i| if stacked >> i & 1 == 1 { '1' } else { '0' }).collect()
    }

    /// The plan of digits like `00111111` (1 = grouped), or why not.
    pub fn parse_plan(digits: &str) -> Result<Lowering, String> {
        if digits.is_empty() || digits.len() > 64 || !digits.chars().all(|c| c == '0' || c == '1') {
            return Err(format!("a plan is 1 to 64 digits 0 or 1 (1 = grouped), not `{digits}`"));
        }
        let stacked = digits.chars().enumerate().filter(|(_, c)| *c == '1').fold(0u64, |m, (i, _)| m | 1 << i);
        Ok(Lowering::Plan { stacked, chunks: digits.len() as u8 })
    }
}

#[derive(Clone, Debug)]
pub struct FuseOptions {
    /// Keep BatchNormalization nodes (grouped) instead of folding them into convs.
    pub keep_bn: bool,
    pub lowering: Lowering,
    /// Per-layer choice inside grouped regions: run depthwise convs per
    /// member (split) instead of as one grouped conv.
    pub split_depthwise: bool,
    /// Likewise for pointwise (1x1, group 1) convs.
    pub split_pointwise: bool,
    /// Per-layer choice on the member axis: linear layers (a MatMul or Gemm
    /// by each member's own 2-D weight, and the bias Add that reads one)
    /// run per member, each a 2-D product that a runtime pre-packs and
    /// fuses with its bias, instead of one batched MatMul over weights
    /// stacked `[N, 1, K, M]`; the rest (attention, LayerNorm, activations)
    /// stays stacked.
    pub split_linear: bool,
    /// Whether `Grouped` and `Plan` stack what channels cannot take on a
    /// member axis (true by default; false reproduces models fused before
    /// member-axis stacking existed, as calibration files of that time ask).
    pub member_axis: bool,
    /// Per aligned node group (dataflow order), whether grouping may take
    /// it: a choice made from measured costs (`fusec fuse --tune`). When
    /// set it decides instead of `lowering`, and stacks on a member axis
    /// too (when `member_axis`).
    pub assignment: Option<Vec<bool>>,
    /// Each member's block of a per-member region (of at least
    /// [`SUBGRAPH_MIN_NODES`] nodes) marked to be written as a subgraph of
    /// its own (`Node::subgraph`; the ONNX exporter writes a one-step
    /// `Scan`): ONNX Runtime then plans its memory apart from the other
    /// members', as when it runs alone, instead of handing one member's
    /// freed buffers to the next member's same-shaped values and keeping
    /// them all until the last member has run.
    pub member_subgraphs: bool,
    /// The most dimensions a fused value may have (Core ML's 5): a group
    /// whose member-axis stacked form would need more stays per member.
    pub max_rank: Option<usize>,
    /// Pad each member's conv channel counts to a multiple of this block
    /// before fusion ([`crate::pad_channels()`]): ONNX Runtime's CPU
    /// provider runs a grouped conv in its blocked layout only when each
    /// group's channels are a multiple of its block (16 with AVX-512), as
    /// it pads a plain conv's itself. `None` (Core ML) pads nothing, nor
    /// does a lowering that groups nothing (`Separate`, a `Plan` of no
    /// grouped run).
    pub channel_block: Option<usize>,
}

/// The fewest nodes a member's block needs to become a subgraph: a head
/// of a few nodes costs more as a `Scan` than its memory saves.
pub const SUBGRAPH_MIN_NODES: usize = 8;

impl FuseOptions {
    /// Whether grouped layers channels cannot take stack on a member axis
    /// ([`Lowering::stacks_members`], or an assignment's).
    pub fn stacks_members(&self) -> bool {
        self.assignment.is_some() || self.lowering.stacks_members()
    }
}

impl Default for FuseOptions {
    fn default() -> FuseOptions {
        FuseOptions {
            keep_bn: false,
            lowering: Lowering::default(),
            split_depthwise: false,
            split_pointwise: false,
            split_linear: false,
            member_axis: true,
            assignment: None,
            member_subgraphs: false,
            max_rank: None,
            channel_block: Some(crate::NCHWC_BLOCK),
        }
    }
}

pub struct Member {
    /// Short name: the file stem; prefixes the member's outputs.
    pub name: String,
    pub graph: Graph,
}
