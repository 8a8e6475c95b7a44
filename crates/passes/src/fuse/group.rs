//! Group: one aligned node group, same in every member, rewritten into the
//! channel-stacked form ([`Stacking::Channels`]: member k owns channel
//! block k of axis 1):
//!
//! | member op | fused op |
//! |---|---|
//! | Conv on the shared input, group 1 | one Conv, weights concatenated on the output axis |
//! | Conv on a stacked input | Conv with group·N, weights and biases concatenated |
//! | BatchNormalization, InstanceNormalization | one of it, parameters concatenated |
//! | unary ops, Clip, Cast, MaxPool, AveragePool, GlobalAveragePool | unchanged |
//! | Resize, Pad, Slice, Split, Reduce, Softmax off the channel axis | unchanged (sizes scaled) |
//! | Add/Sub/Mul/Div of stacked tensors | unchanged |
//! | Add/Sub/Mul/Div by per-member constants | one constant, each member's values over its channels |
//! | Concat on the channel axis | Reshape to [B, N, C, ...], Concat on axis 2, Reshape back |
//!
//! Anything else (Reshape, Transpose, Gemm, MatMul, LayerNorm, ops on the
//! channel axis) returns `false`: the caller tries the member axis
//! ([`stack_members`](super::stack_members)), then runs it per member.
//! Where the member axis is in use, the caller does not ask here for an
//! elementwise op or Softmax that reads a value stacked on the member axis
//! with a batch over 1 ([`follows_batched_member_axis`]): it stays there
//! rather than moving that value onto channels and back.

use fuse_ir::{shape, DType, Op, Tensor, TensorType, ValueDef, ValueId};
use ndarray::{ArrayD, Axis, IxDyn};

use super::align::NodeGroup;
use super::layout::{FuseBuilder, Layout, Stacking, WeightForm};
use super::options::FuseOptions;
use crate::PassError;

/// Every op here stacks on channels.
const STACKING: Stacking = Stacking::Channels;

/// Lowers `group` stacked; `Ok(false)` when the op cannot be stacked.
pub(crate) fn lower(b: &mut FuseBuilder, group: &NodeGroup, opts: &FuseOptions) -> Result<bool, PassError> {
    let n = b.n();
    let n0 = b.node(0, group);
    let g0 = b.members[0];
    if !b.channels_apply || n0.outputs.iter().any(|o| !STACKING.fits_rank(g0.value(*o).ty.rank())) {
        return Ok(false);
    }
    let is_weight = |v: Option<ValueId>| v.is_some_and(|v| matches!(g0.value(v).def, ValueDef::Weight(_)));
    let axes_off_channels = |axes: &[i64], rank: usize| axes.iter().all(|a| STACKING.keeps_members_apart(*a, rank));
    let in_rank = n0.inputs[0].map(|v| g0.value(v).ty.rank()).unwrap_or(0);
    let mut op = n0.op.clone();
    let mut ins: Vec<Option<ValueId>> = vec![];
    match &n0.op {
        Op::Conv(c) => {
            if is_weight(n0.inputs[0]) || !is_weight(n0.inputs[1]) {
                return Ok(false);
            }
            let depthwise = c.group > 1 && g0.value(n0.inputs[0].expect("conv input")).ty.shape[1] == c.group;
            let pointwise = c.group == 1 && c.kernel_shape.iter().all(|&k| k == 1);
            if (depthwise && opts.split_depthwise) || (pointwise && opts.split_pointwise) {
                return Ok(false);
            }
            let x = per_member(b, group, 0);
            let shared_in = matches!(b.layout(0, x[0])?, Layout::Shared(_))
                && (0..n).all(|k| b.layout(k, x[k]).ok() == b.layout(0, x[0]).ok());
            let (xf, conv_groups) = if shared_in && c.group == 1 {
                (b.member_value(0, x[0])?, 1)
            } else {
                (b.stacked(&x, STACKING)?, c.group * n)
            };
            let Some(w) = b.stacked_weight(group, 1, WeightForm::Channels) else { return Ok(false) };
            let bias = match n0.inputs.get(2).copied().flatten() {
                None => None,
                Some(_) => match b.stacked_weight(group, 2, WeightForm::Channels) {
                    Some(bv) => Some(bv),
                    None => return Ok(false),
                },
            };
            let mut c = c.clone();
            c.group = conv_groups;
            op = Op::Conv(c);
            ins = vec![Some(xf), Some(w), bias];
        }
        Op::BatchNorm(_) | Op::InstanceNorm { .. } => {
            if is_weight(n0.inputs[0]) {
                return Ok(false);
            }
            let x = per_member(b, group, 0);
            ins.push(Some(b.stacked(&x, STACKING)?));
            for slot in 1..n0.inputs.len() {
                match b.stacked_weight(group, slot, WeightForm::Channels) {
                    Some(p) => ins.push(Some(p)),
                    None => return Ok(false),
                }
            }
        }
        // Each channel computed apart: elementwise ops and pooling.
        op if op.is_elementwise_unary()
            || matches!(op, Op::MaxPool(_) | Op::AveragePool { .. } | Op::GlobalAveragePool) =>
        {
            if n0.inputs.len() != 1 || is_weight(n0.inputs[0]) {
                return Ok(false);
            }
            let x = per_member(b, group, 0);
            ins.push(Some(b.stacked(&x, STACKING)?));
        }
        Op::Softmax { axis } | Op::Split { axis, .. } => {
            if !axes_off_channels(&[*axis], in_rank) || is_weight(n0.inputs[0]) {
                return Ok(false);
            }
            let x = per_member(b, group, 0);
            ins.push(Some(b.stacked(&x, STACKING)?));
        }
        Op::Reduce { axes: Some(axes), .. } if axes_off_channels(axes, in_rank) && !is_weight(n0.inputs[0]) => {
            let x = per_member(b, group, 0);
            ins.push(Some(b.stacked(&x, STACKING)?));
        }
        Op::Slice(sl) if axes_off_channels(&sl.axes, in_rank) && !is_weight(n0.inputs[0]) => {
            let x = per_member(b, group, 0);
            ins.push(Some(b.stacked(&x, STACKING)?));
        }
        Op::Pad(p) => {
            if !STACKING.pads_keep_members_apart(&p.pads, in_rank) || is_weight(n0.inputs[0]) {
                return Ok(false);
            }
            let x = per_member(b, group, 0);
            ins.push(Some(b.stacked(&x, STACKING)?));
        }
        Op::Resize(r) => {
            let a = STACKING.axis();
            if r.scales.as_ref().is_some_and(|s| s.len() <= a || s[..=a].iter().any(|&x| x != 1.0))
                || is_weight(n0.inputs[0])
            {
                return Ok(false);
            }
            let mut r = r.clone();
            r.sizes = STACKING.stacked_shape(&r.sizes, n);
            op = Op::Resize(r);
            let x = per_member(b, group, 0);
            ins.push(Some(b.stacked(&x, STACKING)?));
        }
        Op::Concat { axis } => {
            let Ok(ax) = shape::norm_axis(*axis, in_rank) else { return Ok(false) };
            if ax < STACKING.axis() || n0.inputs.iter().any(|v| v.is_none() || is_weight(*v)) {
                return Ok(false);
            }
            let parts: Vec<ValueId> = (0..n0.inputs.len())
                .map(|slot| {
                    let x = per_member(b, group, slot);
                    b.stacked(&x, STACKING)
                })
                .collect::<Result<_, _>>()?;
            if ax > STACKING.axis() {
                ins = parts.into_iter().map(Some).collect();
            } else {
                return concat_on_stacking_axis(b, group, parts).map(|()| true);
            }
        }
        Op::Binary(_) => match binary_inputs(b, group)? {
            Some(v) => ins = v,
            None => return Ok(false),
        },
        _ => return Ok(false),
    }
    let outs = n0.outputs.iter().map(|o| g0.value(*o).name.clone()).collect();
    let node = b.f.add_node(n0.name.clone(), op, ins, outs)?;
    let fo = b.f.node(node).outputs.clone();
    b.set_stacked(group, &fo, STACKING)?;
    Ok(true)
}

/// Whether `group` is an elementwise op or a Softmax (which the member
/// axis stacks as well) reading a value stacked on the member axis whose
/// batch is over 1. On channels it would cost a Transpose of that value
/// (`[N, B, C, ...]` to `[B, N·C, ...]`) and another of its output back
/// for the member-axis layers after it; at batch 1 those are Reshapes.
/// Stacked ViT-Tiny at batch 8 spent 6 such Transposes per attention
/// block on the attention scale's Muls and the Softmax, 39 ms a run of
/// 250 (README, "Rows").
pub(crate) fn follows_batched_member_axis(b: &FuseBuilder, group: &NodeGroup) -> Result<bool, PassError> {
    let n0 = b.node(0, group);
    if !(n0.op.is_elementwise_unary() || matches!(n0.op, Op::Binary(_) | Op::Softmax { .. })) {
        return Ok(false);
    }
    let g0 = b.members[0];
    for v in n0.inputs.iter().flatten() {
        if matches!(g0.value(*v).def, ValueDef::Weight(_)) {
            continue;
        }
        if let Layout::Stacked(f) = b.layout(0, *v)? {
            let batched = g0.value(*v).ty.shape.first().is_some_and(|&batch| batch > 1);
            if batched && b.stacking_of(f)? == Stacking::Members {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Member k's value in input `slot` of the group, for every member.
fn per_member(b: &FuseBuilder, group: &NodeGroup, slot: usize) -> Vec<ValueId> {
    (0..b.n()).map(|k| b.node(k, group).inputs[slot].expect("aligned input")).collect()
}

/// Concat on the stacking axis: member blocks would interleave, so view
/// each stacked input with the members on an axis of their own
/// ([B, N, C, ...]), concatenate on the axis after it, and flatten back.
fn concat_on_stacking_axis(b: &mut FuseBuilder, group: &NodeGroup, parts: Vec<ValueId>) -> Result<(), PassError> {
    let n = b.n();
    let n0 = b.node(0, group);
    let mut views = vec![];
    let mut axis = 0;
    for (i, p) in parts.iter().enumerate() {
        let (shape, after) = STACKING.member_view(&b.f.value(*p).ty.shape, n);
        axis = after;
        let name = format!("{}::view{i}", n0.name);
        let r = b.f.add_node(name.clone(), Op::Reshape { shape }, vec![Some(*p)], vec![name])?;
        views.push(Some(b.f.node(r).outputs[0]));
    }
    let name = format!("{}::by_member", n0.name);
    let c = b.f.add_node(name.clone(), Op::Concat { axis: axis as i64 }, views, vec![name])?;
    let c = b.f.node(c).outputs[0];
    let out0 = b.members[0].value(n0.outputs[0]);
    let want = STACKING.stacked_shape(&out0.ty.shape, n);
    let oname = out0.name.clone();
    let r = b.f.add_node(n0.name.clone(), Op::Reshape { shape: want }, vec![Some(c)], vec![oname])?;
    let fo = b.f.node(r).outputs.clone();
    b.set_stacked(group, &fo, STACKING)
}

/// Inputs of a stacked Add/Sub/Mul/Div, or `None` when it cannot be stacked.
fn binary_inputs(b: &mut FuseBuilder, group: &NodeGroup) -> Result<Option<Vec<Option<ValueId>>>, PassError> {
    let n0 = b.node(0, group);
    let g0 = b.members[0];
    let out = g0.value(n0.outputs[0]).ty.clone();
    let a = STACKING.axis();
    let (r, c) = (out.rank(), out.shape[a]);
    let mut ins = vec![];
    for slot in 0..2 {
        let Some(v0) = n0.inputs[slot] else { return Ok(None) };
        let ty = &g0.value(v0).ty;
        if matches!(g0.value(v0).def, ValueDef::Weight(_)) {
            match stacked_constant(b, group, slot, r, c) {
                Some(w) => ins.push(Some(w)),
                None => return Ok(None),
            }
        } else {
            // A data operand must carry the stacking axis itself.
            if ty.rank() != r || ty.shape[a] != c {
                return Ok(None);
            }
            let x = per_member(b, group, slot);
            ins.push(Some(b.stacked(&x, STACKING)?));
        }
    }
    Ok(Some(ins))
}

/// The per-member constants of input `slot` as one constant over the
/// stacked value: each member's values broadcast over its `c` elements of
/// the stacking axis, concatenated on that axis. Bit-identical constants
/// that do not vary along it are used as they are.
fn stacked_constant(b: &mut FuseBuilder, group: &NodeGroup, slot: usize, rank: usize, c: usize) -> Option<ValueId> {
    let n = b.n();
    let a = STACKING.axis();
    let mut tensors = vec![];
    for k in 0..n {
        let v = b.node(k, group).inputs[slot]?;
        let ValueDef::Weight(t) = &b.members[k].value(v).def else { return None };
        if t.ty().dtype != DType::F32 || t.ty().rank() > rank {
            return None;
        }
        tensors.push((v, t));
    }
    let t0 = tensors[0].1;
    let mut shape = vec![1; rank - t0.ty().rank()];
    shape.extend_from_slice(&t0.ty().shape);
    if shape[a] != 1 && shape[a] != c {
        return None;
    }
    if shape[a] == 1 && tensors.iter().all(|(_, t)| *t == t0) {
        return Some(b.weight(0, tensors[0].0, true));
    }
    let mut expanded = shape.clone();
    expanded[a] = c;
    let mut arrays = vec![];
    for (_, t) in &tensors {
        let arr = ArrayD::from_shape_vec(IxDyn(&shape), t.to_f32_vec()?).ok()?;
        arrays.push(arr.broadcast(IxDyn(&expanded))?.to_owned());
    }
    let views: Vec<_> = arrays.iter().map(|x| x.view()).collect();
    let cat = ndarray::concatenate(Axis(a), &views).ok()?;
    let data: Vec<f32> = cat.iter().copied().collect();
    let t = Tensor::from_f32(cat.shape().to_vec(), &data).ok()?;
    debug_assert_eq!(*t.ty(), TensorType::new(DType::F32, cat.shape().to_vec()));
    let name = format!("{}::stacked", b.members[0].value(tensors[0].0).name);
    Some(b.f.add_weight(name, t))
}
