//! The member layout: where member k's copy of a value lives in the fused
//! graph, and the conversions between layouts. This file is the one place
//! that knows how members are stacked.
//!
//! A member's value is held as one of ([`Layout`]):
//! - `Shared(v)`: the same fused value for every member (graph inputs,
//!   layers computed once);
//! - `Stacked(v)`: a slice of one stacked value, as [`STACKING`] says:
//!   today channel-stacked, member k owning channel block k of axis 1
//!   ([`Stacking::Channels`]). A sequence model's activations `[B, S, H]`
//!   have no channel axis; they need a leading member axis `[N, B, S, H]`,
//!   which is a second variant of [`Stacking`] with its own answers to the
//!   same questions (axis, stacked type, member view), not edits elsewhere;
//! - `Own(v)`: member k's own value.
//!
//! [`FuseBuilder`] holds the fused graph under construction and converts
//! between layouts on demand: a Split takes a stacked value apart into the
//! members' own values, a Concat stacks them; each conversion is made once
//! and cached, so every reader shares it.

use std::collections::HashMap;

use fuse_ir::{shape, Bytes, Graph, Node, Op, Tensor, TensorType, ValueDef, ValueId};

use super::align::NodeGroup;
use crate::PassError;

/// How members' values are stacked into one fused value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stacking {
    /// Member k owns channel block k of axis 1: `[B, N·C, ...]`. Weights
    /// stack on their output-channel axis 0 (grouped convs, BatchNorm).
    Channels,
}

/// The stacking every grouped region uses.
pub(crate) const STACKING: Stacking = Stacking::Channels;

impl Stacking {
    /// The axis of an activation the members are stacked along.
    pub(crate) fn axis(self) -> usize {
        match self {
            Stacking::Channels => 1,
        }
    }

    /// The axis of a per-channel parameter (conv weight, bias, BatchNorm
    /// statistics) the members' copies are concatenated along.
    pub(crate) fn weight_axis(self) -> usize {
        match self {
            Stacking::Channels => 0,
        }
    }

    /// The stacked type of a value whose member type is `ty`, for `n`
    /// members.
    pub(crate) fn stacked_type(self, ty: &TensorType, n: usize) -> TensorType {
        TensorType::new(ty.dtype, self.stacked_shape(&ty.shape, n))
    }

    /// The stacked shape of a member shape (also: Resize's target sizes).
    pub(crate) fn stacked_shape(self, member: &[usize], n: usize) -> Vec<usize> {
        let mut s = member.to_vec();
        s[self.axis()] *= n;
        s
    }

    /// A value of rank `rank` can be stacked. Channels: a convolutional
    /// activation, `[B, C, H, W]` or more, whose axis 1 is channels; a
    /// `[B, S, H]` sequence has no channel axis (its axis 1 is the sequence:
    /// stacking members there makes every per-member constant a copy per
    /// position and every layout change a copy of the sequence), so it is
    /// not stacked on channels.
    pub(crate) fn fits_rank(self, rank: usize) -> bool {
        match self {
            Stacking::Channels => rank >= 4,
        }
    }

    /// Whether an op over axis `axis` (of a value of rank `rank`, negative
    /// counting from the end) leaves each member's block where it is: it
    /// must not touch the batch or the stacking axis.
    pub(crate) fn keeps_members_apart(self, axis: i64, rank: usize) -> bool {
        shape::norm_axis(axis, rank).is_ok_and(|a| a > self.axis())
    }

    /// Pads that leave the batch and stacking axes alone.
    pub(crate) fn pads_keep_members_apart(self, pads: &[i64], rank: usize) -> bool {
        pads.len() == 2 * rank && (0..=self.axis()).all(|a| pads[a] == 0 && pads[rank + a] == 0)
    }

    /// The size of each member's block in a stacked value of shape `stacked`.
    pub(crate) fn block(self, stacked: &[usize], n: usize) -> usize {
        stacked[self.axis()] / n
    }

    /// A stacked shape viewed with the members on an axis of their own,
    /// `[B, N, C, ...]`, so that an op along the channels (a Concat) does
    /// not interleave members; the axis after the member axis is returned
    /// with it.
    pub(crate) fn member_view(self, stacked: &[usize], n: usize) -> (Vec<usize>, usize) {
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
    /// Member k's block of a value stacked as [`STACKING`] says.
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
    /// stacking is for: a model without a Conv (a transformer) has no
    /// channel axis to stack on, and its layers stay per member until a
    /// member-axis stacking exists.
    pub channels_apply: bool,
    layouts: Vec<HashMap<ValueId, Layout>>,
    weights: HashMap<(usize, ValueId), ValueId>,
    splits: HashMap<ValueId, Vec<ValueId>>,
    stacks: HashMap<Vec<ValueId>, ValueId>,
    /// Concatenated weights by the members' weight values: a weight read by
    /// several nodes (effdet's heads share convs across levels) is stacked once.
    stacked_weights: HashMap<Vec<ValueId>, ValueId>,
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
            layouts,
            weights: HashMap::new(),
            splits: HashMap::new(),
            stacks: HashMap::new(),
            stacked_weights: HashMap::new(),
        }
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

    /// A stacked value taken apart into the members' own values (once).
    fn split(&mut self, f: ValueId) -> Result<Vec<ValueId>, PassError> {
        if let Some(s) = self.splits.get(&f) {
            return Ok(s.clone());
        }
        let n = self.n();
        let c = STACKING.block(&self.f.value(f).ty.shape, n);
        let fname = self.f.value(f).name.clone();
        let outs = self.names.iter().map(|m| format!("{m}/{fname}")).collect();
        let split = Op::Split { axis: STACKING.axis() as i64, split: vec![c; n] };
        let node = self.f.add_node(format!("{fname}::split"), split, vec![Some(f)], outs)?;
        let s = self.f.node(node).outputs.clone();
        self.splits.insert(f, s.clone());
        Ok(s)
    }

    /// The stacked form of a value given per member (member k's ValueId
    /// each): the stacked value itself when it already is one, else a
    /// Concat of the members' own values (made once).
    pub(crate) fn stacked(&mut self, vals: &[ValueId]) -> Result<ValueId, PassError> {
        let layouts: Vec<Layout> =
            vals.iter().enumerate().map(|(k, v)| self.layout(k, *v)).collect::<Result<_, _>>()?;
        if let Layout::Stacked(f) = layouts[0] {
            if layouts.iter().all(|l| *l == Layout::Stacked(f)) {
                return Ok(f);
            }
        }
        let parts: Vec<ValueId> =
            vals.iter().enumerate().map(|(k, v)| self.member_value(k, *v)).collect::<Result<_, _>>()?;
        if let Some(s) = self.stacks.get(&parts) {
            return Ok(*s);
        }
        let name = format!("{}::stacked", self.f.value(parts[0]).name);
        let concat = Op::Concat { axis: STACKING.axis() as i64 };
        let node = self.f.add_node(name.clone(), concat, parts.iter().map(|p| Some(*p)).collect(), vec![name])?;
        let s = self.f.node(node).outputs[0];
        self.stacks.insert(parts, s);
        Ok(s)
    }

    /// The members' weights in input `slot` of the group, concatenated on
    /// the stacking's weight axis (conv weights, biases, BatchNorm
    /// parameters); `None` when they are not weights of one type.
    pub(crate) fn stacked_weight(&mut self, group: &NodeGroup, slot: usize) -> Option<ValueId> {
        let key: Vec<ValueId> =
            (0..self.n()).map(|k| self.node(k, group).inputs.get(slot).copied().flatten()).collect::<Option<_>>()?;
        if let Some(w) = self.stacked_weights.get(&key) {
            return Some(*w);
        }
        debug_assert_eq!(STACKING.weight_axis(), 0, "the bytes below concatenate on the outermost axis");
        let mut bytes = vec![];
        let mut ty: Option<TensorType> = None;
        let mut name = String::new();
        for (k, &v) in key.iter().enumerate() {
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
        ty.shape[STACKING.weight_axis()] *= self.n();
        let t = Tensor::new(ty, Bytes::from(bytes)).ok()?;
        let w = self.f.add_weight(name, t);
        self.stacked_weights.insert(key, w);
        Some(w)
    }

    /// Records the fused outputs `fo` of a group as stacked, checking each
    /// has the stacked type of the members' output.
    pub(crate) fn set_stacked(&mut self, group: &NodeGroup, fo: &[ValueId]) -> Result<(), PassError> {
        let n0 = self.node(0, group);
        for (j, f) in fo.iter().enumerate() {
            let want = STACKING.stacked_type(&self.members[0].value(n0.outputs[j]).ty, self.n());
            if self.f.value(*f).ty != want {
                return Err(PassError::Internal(format!(
                    "grouping node `{}` gave {} where {want} was expected",
                    n0.name,
                    self.f.value(*f).ty
                )));
            }
            for k in 0..self.n() {
                let o = self.node(k, group).outputs[j];
                self.set(k, o, Layout::Stacked(*f));
            }
        }
        Ok(())
    }
}
