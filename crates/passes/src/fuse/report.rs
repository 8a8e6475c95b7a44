//! What fusion did ([`FuseReport`]) and its summary for `fusec fuse
//! --explain`.

use std::fmt::Write as _;

use crate::canonicalize::CanonStats;

/// What fusion did, for `--explain` and tests.
#[derive(Clone, Debug, Default)]
pub struct FuseReport {
    pub members: Vec<String>,
    pub member_nodes: Vec<usize>,
    pub member_convs: Vec<usize>,
    pub canon: Vec<CanonStats>,
    pub bn_folded: Vec<usize>,
    /// Per member, the layer-scale `Mul`s folded into the linear layer
    /// before them ([`fold_layer_scale`](crate::fold_layer_scale)).
    pub layer_scales: Vec<usize>,
    /// Per member, the sibling linear layers merged into one product each.
    pub merged: Vec<crate::MergeStats>,
    /// Per member, the row-wise regions run on 2-D rows.
    pub rows: Vec<crate::RowStats>,
    /// Per member, what padding channel counts to the block did
    /// (`FuseOptions::channel_block`).
    pub padded: Vec<crate::PadStats>,
    /// The channel block padded to (`FuseOptions::channel_block`).
    pub channel_block: Option<usize>,
    /// Per member, the Conv and Gemm nodes given an explicit zero bias to
    /// match a counterpart's bias (an exporter dropped theirs).
    pub zero_biases: Vec<Vec<String>>,
    pub groups: usize,
    pub same: usize,
    pub shared: usize,
    /// Convs among the shared node groups (a frozen backbone's).
    pub shared_convs: usize,
    pub grouped: usize,
    /// Of the grouped, those stacked on a member axis (the rest: on channels).
    pub member_axis: usize,
    /// Per aligned node group, in dataflow order: its op and how it was
    /// lowered.
    pub lowered: Vec<(&'static str, Lowered)>,
    /// Same node groups the group pass could not stack, run per member.
    pub separate_same: usize,
    /// Of those, the ones grouping could not stack (where the lowering
    /// asked for it), by op: what does not fuse yet.
    pub unstackable: std::collections::BTreeMap<&'static str, usize>,
    /// Of those, the ones channel stacking could not take where the
    /// lowering does not stack on a member axis (the `Regions` default):
    /// kept per member by choice, not for want of a stacking.
    pub not_on_members: std::collections::BTreeMap<&'static str, usize>,
    /// Of those, the ones the default lowering keeps per member although
    /// channels stack them: runs with no Conv, Gemm or MatMul between
    /// per-member layers, which stacked would only copy (`regions::islands`).
    pub islands: std::collections::BTreeMap<&'static str, usize>,
    pub divergent: usize,
    pub fused_nodes: usize,
    pub fused_convs: usize,
    /// Constant per-channel `Mul`s folded into the Conv before them in the
    /// fused graph ([`fold_scale`](crate::fold_scale)).
    pub scales_folded: usize,
    /// One line per divergence.
    pub divergences: Vec<String>,
    /// (member, earlier member it is identical to).
    pub identical: Vec<(usize, usize)>,
    /// Every fused node's name (before DCE) with what it computes: the node
    /// group it lowers or a layout conversion between them (what a
    /// runtime's profile of the fused model is attributed by).
    pub origins: Vec<(String, Origin)>,
    /// The data flowing between aligned node groups (member 0's sizes).
    pub flows: Vec<super::assign::Flow>,
}

/// What a fused node computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// (Part of) aligned node group `i` (dataflow order), stacked or one
    /// member's copy, with any restacking between stackings it needs.
    Group(usize),
    /// A Split or Concat between stacked and per-member values.
    Conversion,
    /// A copy of an output under its member's name.
    Output,
}

/// How one aligned node group was lowered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lowered {
    /// Computed once for every member.
    Shared,
    /// Stacked on channels.
    Channels,
    /// Stacked on a member axis.
    MemberAxis,
    /// Each member's own node.
    PerMember,
}

/// The fused graph's summary, printed by `fusec fuse --explain`.
pub fn explain(r: &FuseReport) -> String {
    let mut s = String::new();
    let n = r.members.len();
    let _ = writeln!(s, "members: {n}");
    for (k, m) in r.members.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {m}: {} nodes, {} Conv (folded {} constant nodes, {} BatchNorm)",
            r.member_nodes[k], r.member_convs[k], r.canon[k].folded, r.bn_folded[k]
        );
    }
    for (m, &n) in r.members.iter().zip(&r.layer_scales).filter(|(_, n)| **n > 0) {
        let _ = writeln!(s, "  {m}: {n} constant scales (layer scale) folded into the linear layer before them");
    }
    for (m, st) in r.members.iter().zip(&r.merged).filter(|(_, st)| st.layers > 0) {
        let _ = writeln!(
            s,
            "  {m}: {} linear layers reading one value merged into {} MatMul (each then split)",
            st.layers, st.products
        );
    }
    for (m, st) in r.members.iter().zip(&r.rows).filter(|(_, st)| st.regions > 0) {
        let _ = writeln!(
            s,
            "  {m}: {} row-wise region{} ({} nodes, {} linear layers) run on 2-D rows",
            st.regions,
            if st.regions == 1 { "" } else { "s" },
            st.nodes,
            st.linear
        );
    }
    for (m, p) in r.members.iter().zip(&r.padded).filter(|(_, p)| p.convs > 0) {
        let _ = writeln!(
            s,
            "  {m}: {} Conv padded with zero filters to a multiple of {} channels",
            p.convs,
            r.channel_block.unwrap_or_default()
        );
    }
    for (m, nodes) in r.members.iter().zip(&r.zero_biases).filter(|(_, n)| !n.is_empty()) {
        let more = if nodes.len() > 1 { format!(" and {} more", nodes.len() - 1) } else { String::new() };
        let _ = writeln!(s, "  {m}: zero bias made explicit on `{}`{more} (its counterparts have a bias)", nodes[0]);
    }
    for (k, j) in &r.identical {
        let _ = writeln!(s, "  {} is identical to {}", r.members[*k], r.members[*j]);
    }
    let _ =
        writeln!(s, "aligned node groups: {} ({} same in all members, {} diverging)", r.groups, r.same, r.divergent);
    let _ = writeln!(s, "  shared (computed once):     {} ({} Conv)", r.shared, r.shared_convs);
    let _ = writeln!(
        s,
        "  grouped (stacked):          {} ({} on channels, {} on a member axis)",
        r.grouped,
        r.grouped - r.member_axis,
        r.member_axis
    );
    let _ = writeln!(s, "  same but kept per member:   {}", r.separate_same);
    if !r.not_on_members.is_empty() {
        let _ = writeln!(
            s,
            "    of which channels cannot stack, and this lowering does not stack on a member axis \
             (--lowering grouped or --tune does): {}",
            by_count(&r.not_on_members)
        );
    }
    if !r.islands.is_empty() {
        let _ = writeln!(
            s,
            "    of which kept per member as runs with no Conv, Gemm or MatMul between per-member layers \
             (stacked, they would only copy): {}",
            by_count(&r.islands)
        );
    }
    if !r.unstackable.is_empty() {
        let _ = writeln!(s, "    of which not stackable yet: {}", by_count(&r.unstackable));
    }
    let _ = writeln!(s, "  per member after divergence: {}", r.divergent);
    let total: usize = r.member_convs.iter().sum();
    let _ = writeln!(
        s,
        "fused graph: {} nodes, {} Conv (members one after another: {} Conv)",
        r.fused_nodes, r.fused_convs, total
    );
    if r.scales_folded > 0 {
        let _ = writeln!(s, "  constant scales folded into the Conv before them: {}", r.scales_folded);
    }
    let _ = writeln!(s, "divergences: {}", r.divergences.len());
    for d in &r.divergences {
        let _ = writeln!(s, "  {d}");
    }
    s
}

/// `Add 63, MatMul 54`: the most frequent op first.
fn by_count(ops: &std::collections::BTreeMap<&'static str, usize>) -> String {
    let mut ops: Vec<(&&str, &usize)> = ops.iter().collect();
    ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    ops.iter().map(|(op, n)| format!("{op} {n}")).collect::<Vec<_>>().join(", ")
}
