//! The member layout: where member k's copy of a value lives in the fused
//! graph, and the conversions between layouts. This file is the one place
//! that knows how members are stacked.
//!
//! A member's value is held as one of ([`Layout`]):
//! - `Shared(v)`: the same fused value for every member (graph inputs,
//!   layers computed once);
//! - `Stacked(v)`: a slice of one stacked value, stacked as [`Stacking`]
//!   says: channel-stacked, member k owning channel block k of axis 1
//!   (`[B, N·C, H, W]`, convolutional layers: [`Stacking::Channels`]), or
//!   on a leading member axis, member k owning index k of axis 0 (`[N, B,
//!   S, H]`, sequence layers: [`Stacking::Members`]);
//! - `Own(v)`: member k's own value.
//!
//! [`FuseBuilder`] holds the fused graph under construction and converts
//! between layouts on demand: a Split takes a stacked value apart into the
//! members' own values, a Concat stacks them, a Reshape and a Transpose
//! move a stacked value from one stacking to the other; each conversion is
//! made once and cached, so every reader shares it.

use std::collections::HashMap;

use fuse_ir::{shape, Bytes, Graph, Node, Op, Tensor, TensorType, ValueDef, ValueId};

use super::align::NodeGroup;
use super::report::Origin;
use crate::PassError;

/// How members' values are stacked into one fused value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Stacking {
    /// Member k owns channel block k of axis 1: `[B, N·C, ...]`. Weights
    /// stack on their output-channel axis 0 (grouped convs, BatchNorm).
    Channels,
    /// Member k owns index k of a new leading axis: `[N, ...member shape]`.
    /// Weights stack on a new leading axis too, `[N, 1, .., K, M]` for a
    /// batched MatMul; an op's axes shift by one.
    Members,
}

impl Stacking {
    /// The axis of an activation the members are stacked along.
    pub(crate) fn axis(self) -> usize {
        match self {
            Stacking::Channels => 1,
            Stacking::Members => 0,
        }
    }

    /// The stacked type of a value whose member type is `ty`, for `n`
    /// members.
    pub(crate) fn stacked_type(self, ty: &TensorType, n: usize) -> TensorType {
        TensorType::new(ty.dtype, self.stacked_shape(&ty.shape, n))
    }

    /// The stacked shape of a member shape (also: Resize's target sizes).
    pub(crate) fn stacked_shape(self, member: &[usize], n: usize) -> Vec<usize> {
        match self {
            Stacking::Channels => {
                let mut s = member.to_vec();
                s[self.axis()] *= n;
                s
            }
            Stacking::Members => std::iter::once(n).chain(member.iter().copied()).collect(),
        }
    }

    /// A value of rank `rank` can be stacked. Channels: a convolutional
    /// activation, `[B, C, H, W]` or more, whose axis 1 is channels; a
    /// `[B, S, H]` sequence has no channel axis (its axis 1 is the sequence:
    /// stacking members there makes every per-member constant a copy per
    /// position and every layout change a copy of the sequence), so it is
    /// not stacked on channels. Members: any rank.
    pub(crate) fn fits_rank(self, rank: usize) -> bool {
        match self {
            Stacking::Channels => rank >= 4,
            Stacking::Members => true,
        }
    }

    /// Whether an op over axis `axis` (of a value of rank `rank`, negative
    /// counting from the end) leaves each member's block where it is: it
    /// must not touch the batch or the channel axis. On a member axis every
    /// axis of the member does (see [`Stacking::member_axis`]).
    pub(crate) fn keeps_members_apart(self, axis: i64, rank: usize) -> bool {
        match self {
            Stacking::Channels => shape::norm_axis(axis, rank).is_ok_and(|a| a > self.axis()),
            Stacking::Members => shape::norm_axis(axis, rank).is_ok(),
        }
    }

    /// Member axis `axis` of a member value in the member-axis stacked
    /// value: non-negative axes shift past the member axis, negative ones
    /// (from the end) stay.
    pub(crate) fn member_axis(axis: i64) -> i64 {
        if axis >= 0 {
            axis + 1
        } else {
            axis
        }
    }

    /// Pads that leave the batch and stacking axes alone.
    pub(crate) fn pads_keep_members_apart(self, pads: &[i64], rank: usize) -> bool {
        pads.len() == 2 * rank && (0..=self.axis()).all(|a| pads[a] == 0 && pads[rank + a] == 0)
    }

    /// A channel-stacked shape viewed with the members on an axis of their
    /// own, `[B, N, C, ...]`, so that an op along the channels (a Concat)
    /// does not interleave members; the axis after the member axis is
    /// returned with it.
    pub(crate) fn member_view(self, stacked: &[usize], n: usize) -> (Vec<usize>, usize) {
        debug_assert_eq!(self, Stacking::Channels);
        let a = self.axis();
        let mut shape = stacked[..a].to_vec();
        shape.push(n);
        shape.push(stacked[a] / n);
        shape.extend_from_slice(&stacked[a + 1..]);
        (shape, a + 1)
    }
}

/// How one member's value is held in the fused graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// The same value for every member.
    Shared(ValueId),
    /// Member k's block of a stacked value (how it is stacked:
    /// [`FuseBuilder::stacking`]).
    Stacked(ValueId),
    /// This member's own value.
    Own(ValueId),
}

/// The fused graph under construction, with every member value's layout.
pub(crate) struct FuseBuilder<'a> {
    pub f: Graph,
    pub members: &'a [&'a Graph],
    pub names: &'a [String],
    /// Whether the members are convolutional networks, which channel
    /// stacking is for; the layers channel stacking cannot take (a
    /// transformer's, a classifier's Gemm) stack on a member axis.
    pub channels_apply: bool,
    /// The next `Node::subgraph` id, when members' blocks are marked as
    /// subgraphs (`FuseOptions::member_subgraphs`).
    pub next_subgraph: Option<u32>,
    layouts: Vec<HashMap<ValueId, Layout>>,
    /// How each stacked fused value is stacked.
    stacking: HashMap<ValueId, Stacking>,
    weights: HashMap<(usize, ValueId), ValueId>,
    splits: HashMap<ValueId, Vec<ValueId>>,
    stacks: HashMap<(Vec<ValueId>, Stacking), ValueId>,
    restacks: HashMap<ValueId, ValueId>,
    /// Stacked weights by the members' weight values and the stacked form:
    /// a weight read by several nodes (effdet's heads share convs across
    /// levels) is stacked once.
    stacked_weights: HashMap<(Vec<ValueId>, WeightForm), ValueId>,
    /// Per fused node, in the order added: what it computes.
    origins: Vec<Origin>,
    /// What the nodes being added compute ([`FuseBuilder::begin`]).
    current: Origin,
}

/// How members' weights are stacked into one fused weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum WeightForm {
    /// Concatenated on axis 0 (output channels).
    Channels,
    /// On a new leading member axis, with ones after it up to `rank`
    /// (`[N, 1, .., shape]`), so that it broadcasts against a member-axis
    /// stacked value of member rank `rank`; `transposed`: each member's
    /// 2-D weight transposed first (a Gemm's `transB`).
    Members { rank: usize, transposed: bool },
}

impl<'a> FuseBuilder<'a> {
    /// A fused graph with the members' (shared) inputs.
    pub(crate) fn new(members: &'a [&'a Graph], names: &'a [String]) -> FuseBuilder<'a> {
        let m0 = members[0];
        let mut f = Graph::new(names.join("+"));
        let mut layouts = vec![HashMap::new(); members.len()];
        for (j, &i0) in m0.inputs().iter().enumerate() {
            let v = m0.value(i0);
            let fi = f.add_input(v.name.clone(), v.ty.clone());
            for (k, g) in members.iter().enumerate() {
                layouts[k].insert(g.inputs()[j], Layout::Shared(fi));
            }
        }
        let channels_apply = m0.node_ids().iter().any(|n| matches!(m0.node(*n).op, fuse_ir::Op::Conv(_)));
        FuseBuilder {
            f,
            members,
            names,
            channels_apply,
            next_subgraph: None,
            layouts,
            stacking: HashMap::new(),
            weights: HashMap::new(),
            splits: HashMap::new(),
            stacks: HashMap::new(),
            restacks: HashMap::new(),
            stacked_weights: HashMap::new(),
            origins: vec![],
            current: Origin::Output,
        }
    }

    /// The nodes added from now on lower node group `i` (or are `origin`).
    pub(crate) fn begin(&mut self, origin: Origin) {
        self.attribute(self.current);
        self.current = origin;
    }

    /// The nodes added since the last call compute `origin`.
    fn attribute(&mut self, origin: Origin) {
        let n = self.f.node_count();
        self.origins.resize(n.max(self.origins.len()), origin);
    }

    /// Every fused node's name with its origin (all nodes added so far).
    pub(crate) fn origins(&mut self) -> Vec<(String, Origin)> {
        self.attribute(self.current);
        self.f.node_ids().into_iter().zip(&self.origins).map(|(n, o)| (self.f.node(n).name.clone(), *o)).collect()
    }

    pub(crate) fn n(&self) -> usize {
        self.members.len()
    }

    /// Member k's node of the group.
    pub(crate) fn node(&self, k: usize, group: &NodeGroup) -> &'a Node {
        self.members[k].node(group.nodes[k])
    }

    pub(crate) fn layout(&self, k: usize, v: ValueId) -> Result<Layout, PassError> {
        self.layouts[k].get(&v).copied().ok_or_else(|| {
            PassError::Internal(format!(
                "{}: value `{}` used before it was lowered",
                self.names[k],
                self.members[k].value(v).name
            ))
        })
    }

    pub(crate) fn set(&mut self, k: usize, v: ValueId, l: Layout) {
        self.layouts[k].insert(v, l);
    }

    /// How the stacked fused value `f` is stacked.
    pub(crate) fn stacking_of(&self, f: ValueId) -> Result<Stacking, PassError> {
        self.stacking
            .get(&f)
            .copied()
            .ok_or_else(|| PassError::Internal(format!("value `{}` is not stacked", self.f.value(f).name)))
    }

    /// Member k's weight `v`, added to the fused graph once.
    pub(crate) fn weight(&mut self, k: usize, v: ValueId, shared: bool) -> ValueId {
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
    pub(crate) fn member_inputs(
        &mut self,
        k: usize,
        node: &Node,
        shared: bool,
    ) -> Result<Vec<Option<ValueId>>, PassError> {
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
    pub(crate) fn member_value(&mut self, k: usize, v: ValueId) -> Result<ValueId, PassError> {
        if matches!(self.members[k].value(v).def, ValueDef::Weight(_)) {
            return Ok(self.weight(k, v, false));
        }
        Ok(match self.layout(k, v)? {
            Layout::Shared(f) | Layout::Own(f) => f,
            Layout::Stacked(f) => self.split(f)?[k],
        })
    }

    /// A node of one output, named like the node, on `ins`; its output.
    pub(crate) fn add(&mut self, name: String, op: Op, ins: Vec<ValueId>) -> Result<ValueId, PassError> {
        let node = self.f.add_node(name.clone(), op, ins.into_iter().map(Some).collect(), vec![name])?;
        Ok(self.f.node(node).outputs[0])
    }

    /// A stacked value taken apart into the members' own values (once).
    fn split(&mut self, f: ValueId) -> Result<Vec<ValueId>, PassError> {
        if let Some(s) = self.splits.get(&f) {
            return Ok(s.clone());
        }
        let n = self.n();
        let stacking = self.stacking_of(f)?;
        self.attribute(self.current);
        let stacked_shape = self.f.value(f).ty.shape.clone();
        let fname = self.f.value(f).name.clone();
        let s = match stacking {
            Stacking::Channels => {
                let c = stacked_shape[1] / n;
                let outs = self.names.iter().map(|m| format!("{m}/{fname}")).collect();
                let split = Op::Split { axis: 1, split: vec![c; n] };
                let node = self.f.add_node(format!("{fname}::split"), split, vec![Some(f)], outs)?;
                self.f.node(node).outputs.clone()
            }
            Stacking::Members => {
                // Split on the member axis, then drop it (a Reshape: free).
                let outs = self.names.iter().map(|m| format!("{m}/{fname}::slice")).collect();
                let split = Op::Split { axis: 0, split: vec![1; n] };
                let node = self.f.add_node(format!("{fname}::split"), split, vec![Some(f)], outs)?;
                let parts = self.f.node(node).outputs.clone();
                let member = stacked_shape[1..].to_vec();
                let mut s = vec![];
                for (k, p) in parts.into_iter().enumerate() {
                    let name = format!("{}/{fname}", self.names[k]);
                    s.push(self.add(name, Op::Reshape { shape: member.clone() }, vec![p])?);
                }
                s
            }
        };
        self.attribute(Origin::Conversion);
        self.splits.insert(f, s.clone());
        Ok(s)
    }

    /// The stacked form (`to`) of a value given per member (member k's
    /// ValueId each): the stacked value itself when it already is one,
    /// restacked when it is stacked the other way, else the members' own
    /// values stacked (a Concat, made once).
    pub(crate) fn stacked(&mut self, vals: &[ValueId], to: Stacking) -> Result<ValueId, PassError> {
        let layouts: Vec<Layout> =
            vals.iter().enumerate().map(|(k, v)| self.layout(k, *v)).collect::<Result<_, _>>()?;
        if let Layout::Stacked(f) = layouts[0] {
            if layouts.iter().all(|l| *l == Layout::Stacked(f)) {
                return if self.stacking_of(f)? == to { Ok(f) } else { self.restack(f, to) };
            }
        }
        let parts: Vec<ValueId> =
            vals.iter().enumerate().map(|(k, v)| self.member_value(k, *v)).collect::<Result<_, _>>()?;
        let key = (parts, to);
        if let Some(s) = self.stacks.get(&key) {
            return Ok(*s);
        }
        let parts = key.0.clone();
        self.attribute(self.current);
        let name = format!("{}::stacked", self.f.value(parts[0]).name);
        let s = match to {
            Stacking::Channels => self.add(name, Op::Concat { axis: 1 }, parts)?,
            Stacking::Members => {
                let mut views = vec![];
                for p in parts {
                    let one: Vec<usize> = std::iter::once(1).chain(self.f.value(p).ty.shape.iter().copied()).collect();
                    let vname = format!("{}::one", self.f.value(p).name);
                    views.push(self.add(vname, Op::Reshape { shape: one }, vec![p])?);
                }
                self.add(name, Op::Concat { axis: 0 }, views)?
            }
        };
        self.attribute(Origin::Conversion);
        self.stacking.insert(s, to);
        self.stacks.insert(key, s);
        Ok(s)
    }

    /// A stacked value moved to the other stacking (once): `[B, N·C, ...]`
    /// viewed as `[B, N, C, ...]` and transposed to `[N, B, C, ...]`, or
    /// back.
    fn restack(&mut self, f: ValueId, to: Stacking) -> Result<ValueId, PassError> {
        if let Some(r) = self.restacks.get(&f) {
            return Ok(*r);
        }
        let n = self.n();
        let shape = self.f.value(f).ty.shape.clone();
        let fname = self.f.value(f).name.clone();
        let rank = shape.len();
        // Channels need [B, C, ...] members: [N, B, C, ...] stacked on a member axis.
        if to == Stacking::Channels && rank < 3 {
            return Err(PassError::Internal(format!("`{fname}` has no channel axis to stack on")));
        }
        let swap: Vec<usize> = [1, 0].into_iter().chain(2..rank + usize::from(to == Stacking::Members)).collect();
        let r = match to {
            Stacking::Members => {
                let (view, _) = Stacking::Channels.member_view(&shape, n);
                let v = self.add(format!("{fname}::by_member"), Op::Reshape { shape: view }, vec![f])?;
                self.add(format!("{fname}::member_axis"), Op::Transpose { perm: swap }, vec![v])?
            }
            Stacking::Channels => {
                let t = self.add(format!("{fname}::by_batch"), Op::Transpose { perm: swap }, vec![f])?;
                let mut member = shape[1..].to_vec();
                member[1] *= n;
                self.add(format!("{fname}::channels"), Op::Reshape { shape: member }, vec![t])?
            }
        };
        self.stacking.insert(r, to);
        self.restacks.insert(f, r);
        Ok(r)
    }

    /// The members' weights in input `slot` of the group stacked as `form`
    /// says; `None` when they are not weights of one type (or a
    /// transposed form's weights are not 2-D floats).
    pub(crate) fn stacked_weight(&mut self, group: &NodeGroup, slot: usize, form: WeightForm) -> Option<ValueId> {
        let vals: Vec<ValueId> =
            (0..self.n()).map(|k| self.node(k, group).inputs.get(slot).copied().flatten()).collect::<Option<_>>()?;
        let key = (vals, form);
        if let Some(w) = self.stacked_weights.get(&key) {
            return Some(*w);
        }
        // Each member's bytes as they are (no copy: the exporter writes the
        // pieces), or transposed into a new buffer.
        let mut parts: Vec<Bytes> = vec![];
        let mut ty: Option<TensorType> = None;
        for (k, &v) in key.0.iter().enumerate() {
            let ValueDef::Weight(t) = &self.members[k].value(v).def else { return None };
            if ty.as_ref().is_some_and(|ty| ty != t.ty()) || t.ty().rank() == 0 && form == WeightForm::Channels {
                return None;
            }
            ty = Some(t.ty().clone());
            match form {
                WeightForm::Members { transposed: true, .. } => {
                    // Whole elements moved, whatever their dtype.
                    let [r, c] = t.ty().shape[..] else { return None };
                    let size = t.bytes().len() / (r * c).max(1);
                    let mut moved = Vec::with_capacity(t.bytes().len());
                    for j in 0..c {
                        for i in 0..r {
                            let at = (i * c + j) * size;
                            moved.extend_from_slice(&t.bytes()[at..at + size]);
                        }
                    }
                    parts.push(Bytes::from(moved));
                }
                _ => parts.push(t.storage().clone()),
            }
        }
        let mut ty = ty?;
        let n = self.n();
        match form {
            WeightForm::Channels => ty.shape[0] *= n,
            WeightForm::Members { rank, transposed } => {
                if transposed {
                    ty.shape.reverse();
                }
                let ones = rank.checked_sub(ty.rank())?;
                ty.shape = [n].into_iter().chain(std::iter::repeat_n(1, ones)).chain(ty.shape).collect();
            }
        }
        let name = format!("{}::stacked", self.members[0].value(key.0[0]).name);
        let t = Tensor::new(ty, Bytes::concat(parts)).ok()?;
        let w = self.f.add_weight(name, t);
        self.stacked_weights.insert(key, w);
        Some(w)
    }

    /// Records the fused outputs `fo` of a group as stacked `how`, checking
    /// each has the stacked type of the members' output.
    pub(crate) fn set_stacked(&mut self, group: &NodeGroup, fo: &[ValueId], how: Stacking) -> Result<(), PassError> {
        let n0 = self.node(0, group);
        for (j, f) in fo.iter().enumerate() {
            let want = how.stacked_type(&self.members[0].value(n0.outputs[j]).ty, self.n());
            if self.f.value(*f).ty != want {
                return Err(PassError::Internal(format!(
                    "grouping node `{}` gave {} where {want} was expected",
                    n0.name,
                    self.f.value(*f).ty
                )));
            }
            self.stacking.insert(*f, how);
            for k in 0..self.n() {
                let o = self.node(k, group).outputs[j];
                self.set(k, o, Layout::Stacked(*f));
            }
        }
        Ok(())
    }
}
