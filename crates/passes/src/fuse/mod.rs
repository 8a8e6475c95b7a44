//! The fusion wing. The driver is here: prepare each member (the
//! single-graph passes), [`align`] them, then build one fused graph node
//! group by node group, each lowered as shared (computed once,
//! [`share`]), grouped (channel-stacked, [`group`], or stacked on a member
//! axis, [`stack_members`]) or per member ([`heads`]),
//! with [`regions`] deciding where grouping starts ([`assign`]: the
//! cheapest choice per node group from costs measured elsewhere), and finish with
//! [`fold_scale`](crate::fold_scale), DCE and validation.
//!
//! Where each member's copy of a value lives (its own value, or a slice of
//! a stacked one) is [`layout`]'s alone to say; the other files ask it.
//! Imports go one way: the driver uses every file, `group`,
//! `stack_members`, `heads` and `share` use `layout` and `align`, and `layout` uses `align`
//! and `report` (a fused node's [`Origin`]).

pub mod align;
pub mod assign;
mod group;
mod heads;
mod layout;
mod options;
mod regions;
mod report;
pub mod share;
mod stack_members;

use fuse_ir::{Graph, Op, UnaryOp, ValueDef, ValueId};

pub use options::{FuseOptions, Lowering, Member, DEFAULT_GROUP_FROM, SUBGRAPH_MIN_NODES};
pub use report::{explain, FuseReport, Lowered, Origin};

use self::align::{align, describe, fill_biases};
use self::layout::FuseBuilder;
use self::share::{identical_members, shared_groups};
use crate::canonicalize::{canonicalize, CanonStats};
use crate::validate::validated;
use crate::{
    dce, flatten_rows, fold_bn, fold_layer_scale, fold_scale, merge_linear, pad_channels, MergeStats, PadStats,
    PassError, RowStats,
};

pub struct Fused {
    pub graph: Graph,
    pub report: FuseReport,
}

fn conv_count(g: &Graph) -> usize {
    g.node_ids().into_iter().filter(|n| matches!(g.node(*n).op, Op::Conv(_))).count()
}

/// What [`prepare_member`] did to one member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    pub canon: CanonStats,
    /// BatchNorms folded into the Conv before them.
    pub bn_folded: usize,
    /// Layer-scale `Mul`s folded into the linear layer before them
    /// ([`fold_layer_scale`](crate::fold_layer_scale)).
    pub layer_scales: usize,
    /// Sibling linear layers merged into one product ([`merge_linear`]).
    pub merged: MergeStats,
    /// Row-wise regions run on 2-D rows ([`flatten_rows`]).
    pub rows: RowStats,
}

/// The single-model passes `fuse` runs on every member before aligning
/// them: canonicalize, fold BatchNorm (unless `keep_bn`), fold layer
/// scales into the linear layers before them, merge sibling linear layers, run row-wise regions on 2-D rows, DCE, each followed by validation. `fusec bench` times
/// members prepared this way (unfused) to show how much of a speedup comes
/// from these rewrites alone.
pub fn prepare_member(g: &mut Graph, keep_bn: bool) -> Result<Prepared, PassError> {
    let canon = canonicalize(g)?;
    validated("canonicalize", g)?;
    let bn_folded = if keep_bn { 0 } else { fold_bn(g)? };
    validated("fold_bn", g)?;
    let layer_scales = fold_layer_scale(g)?;
    validated("fold_layer_scale", g)?;
    let merged = merge_linear(g)?;
    validated("merge_linear", g)?;
    let rows = flatten_rows(g)?;
    validated("flatten_rows", g)?;
    dce(g);
    validated("dce", g)?;
    Ok(Prepared { canon, bn_folded, layer_scales, merged, rows })
}

/// Fuses the members into one graph with one input set and every member's
/// outputs, named `MEMBER/OUTPUT`.
pub fn fuse(mut members: Vec<Member>, opts: &FuseOptions) -> Result<Fused, PassError> {
    if members.len() < 2 {
        return Err(PassError::Incompatible(format!("fusion needs at least 2 members, got {}", members.len())));
    }
    // Padding serves grouped convs: a lowering that groups nothing
    // (`separate`, the tuner's plan 00000000) keeps the members as they run
    // alone.
    let groups_nothing =
        opts.assignment.is_none() && matches!(opts.lowering, Lowering::Separate | Lowering::Plan { stacked: 0, .. });
    let channel_block = opts.channel_block.filter(|_| !groups_nothing);
    let mut report = FuseReport { channel_block, ..Default::default() };
    for m in &mut members {
        let prepared = prepare_member(&mut m.graph, opts.keep_bn).map_err(|e| e.in_member(&m.name))?;
        let padded = match channel_block {
            Some(block) => {
                let st = pad_channels(&mut m.graph, block).map_err(|e| PassError::from(e).in_member(&m.name))?;
                validated("pad_channels", &m.graph).map_err(|e| e.in_member(&m.name))?;
                st
            }
            None => PadStats::default(),
        };
        report.padded.push(padded);
        report.members.push(m.name.clone());
        report.member_nodes.push(m.graph.node_count());
        report.member_convs.push(conv_count(&m.graph));
        report.canon.push(prepared.canon);
        report.bn_folded.push(prepared.bn_folded);
        report.layer_scales.push(prepared.layer_scales);
        report.merged.push(prepared.merged);
        report.rows.push(prepared.rows);
    }
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let mut al = align(&members.iter().map(|m| &m.graph).collect::<Vec<_>>(), &names)?;
    if !al.missing_biases.is_empty() {
        let mut graphs: Vec<&mut Graph> = members.iter_mut().map(|m| &mut m.graph).collect();
        report.zero_biases = fill_biases(&mut graphs, &al)?;
        for (g, name) in graphs.iter().zip(&names) {
            validated("fill_biases", g).map_err(|e| e.in_member(name))?;
        }
        al = align(&members.iter().map(|m| &m.graph).collect::<Vec<_>>(), &names)?;
    }
    let graphs: Vec<&Graph> = members.iter().map(|m| &m.graph).collect();
    let shared = shared_groups(&graphs, &al);
    for (k, j) in identical_members(&graphs, &al).into_iter().enumerate() {
        if let Some(j) = j {
            report.identical.push((k, j));
        }
    }
    report.divergences = al.divergences.iter().map(|d| describe(&graphs, &names, &al.groups, d)).collect();

    report.flows = assign::flows(graphs[0], &al.groups);
    let mut plan = regions::plan(opts, graphs[0], &al.groups)?;
    // The default lowering keeps per member a stacked run that would only
    // copy (regions::islands), and lowers again without it; with linear
    // layers per member, a run only between them (regions::sandwiched).
    let regions_default = opts.assignment.is_none() && matches!(opts.lowering, Lowering::Regions { .. });
    let mut islands = std::collections::BTreeMap::new();
    let (mut g, mut report) = loop {
        let mut r = report.clone();
        let g = lower(&graphs, &names, &al.groups, &shared, &plan, opts, &mut r)?;
        let found = if regions_default {
            regions::islands(&r.lowered, &r.flows)
        } else if opts.split_linear {
            regions::sandwiched(&r.lowered, &r.flows)
        } else {
            vec![]
        };
        if found.is_empty() {
            r.islands = islands;
            break (g, r);
        }
        for i in found {
            plan[i] = false;
            *islands.entry(r.lowered[i].0).or_default() += 1;
        }
    };
    validated("fuse", &g)?;
    report.scales_folded = fold_scale(&mut g)?;
    validated("fold_scale", &g)?;
    dce(&mut g);
    validated("dce", &g)?;
    report.fused_nodes = g.node_count();
    report.fused_convs = conv_count(&g);
    Ok(Fused { graph: g, report })
}

/// Lowers every aligned node group as `plan` and `shared` say (counting
/// what it did in `report`) and returns the fused graph, outputs set.
fn lower(
    graphs: &[&Graph],
    names: &[String],
    groups: &[align::NodeGroup],
    shared: &[bool],
    plan: &[bool],
    opts: &FuseOptions,
    report: &mut FuseReport,
) -> Result<Graph, PassError> {
    let mut b = FuseBuilder::new(graphs, names);
    b.next_subgraph = opts.member_subgraphs.then_some(0);
    // Consecutive per-member groups, lowered together member by member
    // (heads::lower_region) so that each member's layers run one after
    // another as they do alone, not interleaved with the other members'.
    let mut region: Vec<(usize, &align::NodeGroup)> = vec![];
    for (i, group) in groups.iter().enumerate() {
        report.groups += 1;
        if group.same {
            report.same += 1;
        } else {
            report.divergent += 1;
        }
        if shared[i] {
            heads::lower_region(&mut b, &std::mem::take(&mut region))?;
            b.begin(Origin::Group(i));
            report.shared += 1;
            report.shared_convs += usize::from(matches!(b.node(0, group).op, Op::Conv(_)));
            share::lower(&mut b, group)?;
            report.lowered.push((b.node(0, group).op.name(), Lowered::Shared));
            continue;
        }
        if group.same && plan[i] {
            let on_members = opts.member_axis && opts.stacks_members();
            // Grouping reads its inputs' layouts: what comes before is
            // lowered first (only where a stacking may take the group, so
            // per-member runs stay contiguous otherwise).
            if b.channels_apply || on_members {
                heads::lower_region(&mut b, &std::mem::take(&mut region))?;
                b.begin(Origin::Group(i));
                // Channels first, but not for an elementwise op between
                // member-axis layers at a batch over 1.
                let channels = b.channels_apply && !(on_members && group::follows_batched_member_axis(&b, group)?);
                if channels && group::lower(&mut b, group, opts)? {
                    report.grouped += 1;
                    report.lowered.push((b.node(0, group).op.name(), Lowered::Channels));
                    continue;
                }
                if on_members && stack_members::kept_apart(&b, group, opts)? {
                    report.separate_same += 1;
                    report.lowered.push((b.node(0, group).op.name(), Lowered::PerMember));
                    region.push((i, group));
                    continue;
                }
                if on_members && stack_members::lower(&mut b, group, opts.max_rank)? {
                    report.grouped += 1;
                    report.member_axis += 1;
                    report.lowered.push((b.node(0, group).op.name(), Lowered::MemberAxis));
                    continue;
                }
            }
            // Grouping did not take it: no stacking could, or (the default)
            // channels could not and the member axis was not used.
            let op = b.node(0, group).op.name();
            if on_members {
                *report.unstackable.entry(op).or_default() += 1;
            } else {
                *report.not_on_members.entry(op).or_default() += 1;
            }
        }
        if group.same {
            report.separate_same += 1;
        }
        report.lowered.push((b.node(0, group).op.name(), Lowered::PerMember));
        region.push((i, group));
    }
    heads::lower_region(&mut b, &region)?;
    debug_assert_eq!(report.lowered.len(), groups.len());
    b.begin(Origin::Output);
    let (g, origins) = finish(b)?;
    report.origins = origins;
    Ok(g)
}

/// Sets graph outputs `MEMBER/OUTPUT` (each member's own value; an output
/// that is another's too, or not computed, gets an Identity copy) and
/// returns the graph with every node's origin.
fn finish(mut b: FuseBuilder) -> Result<(Graph, Vec<(String, Origin)>), PassError> {
    let mut outs: Vec<ValueId> = vec![];
    for k in 0..b.n() {
        let g = b.members[k];
        for &o in g.outputs() {
            let mut f = b.member_value(k, o)?;
            let name = format!("{}/{}", b.names[k], g.value(o).name);
            let taken = outs.contains(&f) || !matches!(b.f.value(f).def, ValueDef::Node { .. });
            if taken {
                let node = b.f.add_node(
                    format!("{name}::copy"),
                    Op::Unary(UnaryOp::Identity),
                    vec![Some(f)],
                    vec![name.clone()],
                )?;
                f = b.f.node(node).outputs[0];
            }
            b.f.value_mut(f).name = name;
            outs.push(f);
        }
    }
    b.f.set_outputs(outs);
    let mut meta = vec![("fusec.members".to_string(), b.names.join(","))];
    meta.extend(b.members[0].metadata.iter().filter(|(k, _)| k == "fusec.arch").cloned());
    b.f.metadata = meta;
    let origins = b.origins();
    Ok((b.f, origins))
}
