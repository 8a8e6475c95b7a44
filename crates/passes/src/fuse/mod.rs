//! The fusion driver: canonicalize and fold each member, align, then build
//! one graph node group by node group, each lowered as shared (computed
//! once, [`crate::share`]), grouped (channel-stacked, [`crate::group`]) or
//! per member ([`crate::heads`]), and finish with DCE and validation.
//!
//! Layout: member k's copy of a stacked value owns channels
//! `[k·C, (k+1)·C)` of axis 1. [`Builder`] converts between layouts on
//! demand (a Split to take members apart, a Concat to stack them), caching
//! each conversion so it is made once.

use std::collections::HashMap;
use std::fmt::Write as _;

use fuse_ir::{Bytes, Graph, Node, Op, Tensor, TensorType, UnaryOp, ValueDef, ValueId};

use crate::align::{align, describe, Pair};
use crate::canonicalize::{canonicalize, CanonStats};
use crate::share::{identical_members, shared_pairs};
use crate::{dce, fold_bn, group, heads, PassError};

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

/// What fusion did, for `--explain` and tests.
#[derive(Clone, Debug, Default)]
pub struct FuseReport {
    pub members: Vec<String>,
    pub member_nodes: Vec<usize>,
    pub member_convs: Vec<usize>,
    pub canon: Vec<CanonStats>,
    pub bn_folded: Vec<usize>,
    pub groups: usize,
    pub same: usize,
    pub shared: usize,
    /// Convs among the shared node groups (a frozen backbone's).
    pub shared_convs: usize,
    pub grouped: usize,
    /// Same node groups the group pass could not stack, run per member.
    pub separate_same: usize,
    pub divergent: usize,
    pub fused_nodes: usize,
    pub fused_convs: usize,
    /// One line per divergence.
    pub divergences: Vec<String>,
    /// (member, earlier member it is identical to).
    pub identical: Vec<(usize, usize)>,
}

pub struct Fused {
    pub graph: Graph,
    pub report: FuseReport,
}

fn conv_count(g: &Graph) -> usize {
    g.node_ids().into_iter().filter(|n| matches!(g.node(*n).op, Op::Conv(_))).count()
}

/// The single-model passes `fuse` runs on every member before aligning
/// them: canonicalize, fold BatchNorm (unless `keep_bn`), DCE, validate.
/// Returns the canonicalization counts and the number of folded
/// BatchNorms. `fusec bench` times members prepared this way (unfused) to
/// show how much of a speedup comes from these rewrites alone.
pub fn prepare_member(g: &mut Graph, keep_bn: bool) -> Result<(CanonStats, usize), fuse_ir::IrError> {
    let canon = canonicalize(g)?;
    let folded = if keep_bn { 0 } else { fold_bn(g)? };
    dce(g);
    g.validate()?;
    Ok((canon, folded))
}

/// Fuses the members into one graph with one input set and every member's
/// outputs, named `MEMBER/OUTPUT`.
pub fn fuse(mut members: Vec<Member>, opts: &FuseOptions) -> Result<Fused, PassError> {
    if members.len() < 2 {
        return Err(PassError::Incompatible(format!("fusion needs at least 2 members, got {}", members.len())));
    }
    let mut report = FuseReport::default();
    for m in &mut members {
        let (canon, folded) = prepare_member(&mut m.graph, opts.keep_bn).map_err(|e| PassError::Member(m.name.clone(), e))?;
        report.members.push(m.name.clone());
        report.member_nodes.push(m.graph.node_count());
        report.member_convs.push(conv_count(&m.graph));
        report.canon.push(canon);
        report.bn_folded.push(folded);
    }
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let graphs: Vec<&Graph> = members.iter().map(|m| &m.graph).collect();
    let al = align(&graphs, &names)?;
    let shared = shared_pairs(&graphs, &al);
    for (k, j) in identical_members(&graphs, &al).into_iter().enumerate() {
        if let Some(j) = j {
            report.identical.push((k, j));
        }
    }
    report.divergences = al.divergences.iter().map(|d| describe(&graphs, &names, &al.pairs, d)).collect();

    let cut = match opts.lowering {
        Lowering::Grouped => 0,
        Lowering::Separate => al.pairs.len(),
        Lowering::Regions { from } => {
            let at = ((from.clamp(0.0, 1.0) * al.pairs.len() as f32).round() as usize).min(al.pairs.len());
            narrowest_cut(graphs[0], &al.pairs, at)
        }
    };
    let mut b = Builder::new(&graphs, &names);
    for (i, pair) in al.pairs.iter().enumerate() {
        report.groups += 1;
        if pair.same {
            report.same += 1;
        } else {
            report.divergent += 1;
        }
        if shared[i] {
            report.shared += 1;
            report.shared_convs += usize::from(matches!(b.node(0, pair).op, Op::Conv(_)));
            b.lower_shared(pair)?;
        } else if pair.same && i >= cut && group::lower(&mut b, pair, opts)? {
            report.grouped += 1;
        } else {
            if pair.same {
                report.separate_same += 1;
            }
            heads::lower(&mut b, pair)?;
        }
    }
    let mut g = b.finish()?;
    dce(&mut g);
    g.validate()?;
    report.fused_nodes = g.node_count();
    report.fused_convs = conv_count(&g);
    Ok(Fused { graph: g, report })
}

/// The cut near `at` (within 5% of the pairs) where the least data crosses
/// from the per-member region into the grouped one: the elements of node
/// outputs made before the cut and read after it, which the grouped region
/// must stack (a Concat each). Ties go to the cut nearest `at`; a cut at
/// either end stays there.
fn narrowest_cut(g: &Graph, pairs: &[Pair], at: usize) -> usize {
    let n = pairs.len();
    if at == 0 || at >= n {
        return at; // all grouped, or none: nothing crosses
    }
    let mut made = HashMap::new();
    let mut last_read = HashMap::new();
    for (i, p) in pairs.iter().enumerate() {
        let node = g.node(p.nodes[0]);
        for &o in &node.outputs {
            made.insert(o, i);
        }
        for &v in node.inputs.iter().flatten() {
            last_read.insert(v, i);
        }
    }
    let crossing = |c: usize| -> usize {
        made.iter()
            .filter(|(v, &i)| i < c && last_read.get(*v).is_some_and(|&j| j >= c))
            .map(|(v, _)| g.value(*v).ty.shape.iter().product::<usize>())
            .sum()
    };
    let w = (n / 20).max(1);
    (at.saturating_sub(w)..=(at + w).min(n)).min_by_key(|&c| (crossing(c), c.abs_diff(at))).unwrap_or(at)
}

/// How one member's value is held in the fused graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repr {
    /// The same value for every member.
    Shared(ValueId),
    /// Channel-stacked: member k owns channel block k of axis 1.
    Stacked(ValueId),
    /// This member's own value.
    Own(ValueId),
}

pub(crate) struct Builder<'a> {
    pub f: Graph,
    pub members: &'a [&'a Graph],
    pub names: &'a [String],
    repr: Vec<HashMap<ValueId, Repr>>,
    weights: HashMap<(usize, ValueId), ValueId>,
    splits: HashMap<ValueId, Vec<ValueId>>,
    stacks: HashMap<Vec<ValueId>, ValueId>,
    /// Concatenated weights by the members' weight values: a weight read by
    /// several nodes (effdet's heads share convs across levels) is stacked once.
    stacked_weights: HashMap<Vec<ValueId>, ValueId>,
}

impl<'a> Builder<'a> {
    fn new(members: &'a [&'a Graph], names: &'a [String]) -> Builder<'a> {
        let m0 = members[0];
        let mut f = Graph::new(names.join("+"));
        let mut repr = vec![HashMap::new(); members.len()];
        for (j, &i0) in m0.inputs().iter().enumerate() {
            let v = m0.value(i0);
            let fi = f.add_input(v.name.clone(), v.ty.clone());
            for (k, g) in members.iter().enumerate() {
                repr[k].insert(g.inputs()[j], Repr::Shared(fi));
            }
        }
        Builder {
            f,
            members,
            names,
            repr,
            weights: HashMap::new(),
            splits: HashMap::new(),
            stacks: HashMap::new(),
            stacked_weights: HashMap::new(),
        }
    }

    pub fn n(&self) -> usize {
        self.members.len()
    }

    pub fn node(&self, k: usize, pair: &Pair) -> &'a Node {
        self.members[k].node(pair.nodes[k])
    }

    pub fn repr(&self, k: usize, v: ValueId) -> Result<Repr, PassError> {
        self.repr[k].get(&v).copied().ok_or_else(|| {
            PassError::Internal(format!("{}: value `{}` used before it was lowered", self.names[k], self.members[k].value(v).name))
        })
    }

    pub fn set(&mut self, k: usize, v: ValueId, r: Repr) {
        self.repr[k].insert(v, r);
    }

    /// Member k's weight `v`, added to the fused graph once.
    pub fn weight(&mut self, k: usize, v: ValueId, shared: bool) -> ValueId {
        if let Some(w) = self.weights.get(&(k, v)) {
            return *w;
        }
        let val = self.members[k].value(v);
        let ValueDef::Weight(t) = &val.def else { unreachable!("weight() on a computed value") };
        let name = if shared { val.name.clone() } else { format!("{}/{}", self.names[k], val.name) };
        let w = self.f.add_weight(name, t.clone());
        self.weights.insert((k, v), w);
        w
    }

    /// The inputs of member k's `node` in the fused graph: its weights
    /// (keeping their names when `shared`, prefixed by the member otherwise)
    /// and member k's own tensors for its data inputs.
    pub fn member_inputs(&mut self, k: usize, node: &Node, shared: bool) -> Result<Vec<Option<ValueId>>, PassError> {
        let g = self.members[k];
        node.inputs
            .iter()
            .map(|v| match v {
                None => Ok(None),
                Some(v) if matches!(g.value(*v).def, ValueDef::Weight(_)) => Ok(Some(self.weight(k, *v, shared))),
                Some(v) => self.member_value(k, *v).map(Some),
            })
            .collect()
    }

    /// Member k's value `v` as its own tensor (splitting a stacked value).
    pub fn member_value(&mut self, k: usize, v: ValueId) -> Result<ValueId, PassError> {
        if matches!(self.members[k].value(v).def, ValueDef::Weight(_)) {
            return Ok(self.weight(k, v, false));
        }
        Ok(match self.repr(k, v)? {
            Repr::Shared(f) | Repr::Own(f) => f,
            Repr::Stacked(f) => self.split(f)?[k],
        })
    }

    fn split(&mut self, f: ValueId) -> Result<Vec<ValueId>, PassError> {
        if let Some(s) = self.splits.get(&f) {
            return Ok(s.clone());
        }
        let n = self.n();
        let ty = &self.f.value(f).ty;
        let c = ty.shape[1] / n;
        let fname = self.f.value(f).name.clone();
        let outs = self.names.iter().map(|m| format!("{m}/{fname}")).collect();
        let node = self.f.add_node(format!("{fname}::split"), Op::Split { axis: 1, split: vec![c; n] }, vec![Some(f)], outs)?;
        let s = self.f.node(node).outputs.clone();
        self.splits.insert(f, s.clone());
        Ok(s)
    }

    /// The stacked form of a value given per member (member k's ValueId each).
    pub fn stacked(&mut self, vals: &[ValueId]) -> Result<ValueId, PassError> {
        let reprs: Vec<Repr> = vals.iter().enumerate().map(|(k, v)| self.repr(k, *v)).collect::<Result<_, _>>()?;
        if let Repr::Stacked(f) = reprs[0] {
            if reprs.iter().all(|r| *r == Repr::Stacked(f)) {
                return Ok(f);
            }
        }
        let parts: Vec<ValueId> = vals.iter().enumerate().map(|(k, v)| self.member_value(k, *v)).collect::<Result<_, _>>()?;
        if let Some(s) = self.stacks.get(&parts) {
            return Ok(*s);
        }
        let name = format!("{}::stacked", self.f.value(parts[0]).name);
        let node = self.f.add_node(name.clone(), Op::Concat { axis: 1 }, parts.iter().map(|p| Some(*p)).collect(), vec![name])?;
        let s = self.f.node(node).outputs[0];
        self.stacks.insert(parts, s);
        Ok(s)
    }

    /// Member tensors concatenated on axis 0 (conv weights, biases, BN parameters).
    pub fn concat_weights(&mut self, pair: &Pair, slot: usize) -> Option<ValueId> {
        let key: Vec<ValueId> = (0..self.n()).map(|k| self.node(k, pair).inputs.get(slot).copied().flatten()).collect::<Option<_>>()?;
        if let Some(w) = self.stacked_weights.get(&key) {
            return Some(*w);
        }
        let mut bytes = vec![];
        let mut ty: Option<TensorType> = None;
        let mut name = String::new();
        for k in 0..self.n() {
            let v = self.node(k, pair).inputs.get(slot).copied().flatten()?;
            let ValueDef::Weight(t) = &self.members[k].value(v).def else { return None };
            if k == 0 {
                ty = Some(t.ty().clone());
                name = format!("{}::stacked", self.members[0].value(v).name);
            }
            if ty.as_ref() != Some(t.ty()) || t.ty().rank() == 0 {
                return None;
            }
            bytes.extend_from_slice(t.bytes());
        }
        let mut ty = ty?;
        ty.shape[0] *= self.n();
        let t = Tensor::new(ty, Bytes::from(bytes)).ok()?;
        let w = self.f.add_weight(name, t);
        self.stacked_weights.insert(key, w);
        Some(w)
    }

    fn lower_shared(&mut self, pair: &Pair) -> Result<(), PassError> {
        let n0 = self.node(0, pair);
        let ins = self.member_inputs(0, n0, true)?;
        let outs = n0.outputs.iter().map(|o| self.members[0].value(*o).name.clone()).collect();
        let node = self.f.add_node(n0.name.clone(), n0.op.clone(), ins, outs)?;
        let fo = self.f.node(node).outputs.clone();
        for k in 0..self.n() {
            let nk = self.node(k, pair);
            for (o, f) in nk.outputs.iter().zip(&fo) {
                self.set(k, *o, Repr::Shared(*f));
            }
        }
        Ok(())
    }

    /// Sets graph outputs `MEMBER/OUTPUT` and returns the graph.
    fn finish(mut self) -> Result<Graph, PassError> {
        let mut outs: Vec<ValueId> = vec![];
        for k in 0..self.n() {
            let g = self.members[k];
            for &o in g.outputs() {
                let mut f = self.member_value(k, o)?;
                let name = format!("{}/{}", self.names[k], g.value(o).name);
                let taken = outs.contains(&f) || !matches!(self.f.value(f).def, ValueDef::Node { .. });
                if taken {
                    let node = self.f.add_node(format!("{name}::copy"), Op::Unary(UnaryOp::Identity), vec![Some(f)], vec![name.clone()])?;
                    f = self.f.node(node).outputs[0];
                }
                self.f.value_mut(f).name = name;
                outs.push(f);
            }
        }
        self.f.set_outputs(outs);
        let mut meta = vec![("fusec.members".to_string(), self.names.join(","))];
        meta.extend(self.members[0].metadata.iter().filter(|(k, _)| k == "fusec.arch").cloned());
        self.f.metadata = meta;
        Ok(self.f)
    }
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
    for (k, j) in &r.identical {
        let _ = writeln!(s, "  {} is identical to {}", r.members[*k], r.members[*j]);
    }
    let _ = writeln!(s, "aligned node groups: {} ({} same in all members, {} diverging)", r.groups, r.same, r.divergent);
    let _ = writeln!(s, "  shared (computed once):     {} ({} Conv)", r.shared, r.shared_convs);
    let _ = writeln!(s, "  grouped (channel-stacked):  {}", r.grouped);
    let _ = writeln!(s, "  same but kept per member:   {}", r.separate_same);
    let _ = writeln!(s, "  per member after divergence: {}", r.divergent);
    let total: usize = r.member_convs.iter().sum();
    let _ = writeln!(s, "fused graph: {} nodes, {} Conv (members one after another: {} Conv)", r.fused_nodes, r.fused_convs, total);
    let _ = writeln!(s, "divergences: {}", r.divergences.len());
    for d in &r.divergences {
        let _ = writeln!(s, "  {d}");
    }
    s
}
