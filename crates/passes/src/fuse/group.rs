//! Group: one aligned node group, same in every member, rewritten into the
//! channel-stacked form (member k owns channel block k of axis 1):
//!
//! | member op | fused op |
//! |---|---|
//! | Conv on the shared input, group 1 | one Conv, weights concatenated on the output axis |
//! | Conv on a stacked input | Conv with group·N, weights and biases concatenated |
//! | BatchNormalization | one BatchNormalization, parameters concatenated |
//! | unary ops, Clip, Cast, MaxPool, GlobalAveragePool | unchanged |
//! | Resize, Pad, Slice, Split, Reduce, Softmax off the channel axis | unchanged (sizes scaled) |
//! | Add/Sub/Mul/Div of stacked tensors | unchanged |
//! | Add/Sub/Mul/Div by per-member constants | one constant, each member's values over its channels |
//! | Concat on the channel axis | Reshape to [B, N, C, ...], Concat on axis 2, Reshape back |
//!
//! Anything else (Reshape, Transpose, Gemm, MatMul, LayerNorm, ops on the
//! channel axis) returns `false`: the caller runs it per member.

use fuse_ir::{shape, DType, Op, Tensor, TensorType, ValueDef, ValueId};
use ndarray::{ArrayD, Axis, IxDyn};

use crate::align::Pair;
use crate::fuse::{Builder, Repr};
use crate::{FuseOptions, PassError};

/// Lowers `pair` stacked; `Ok(false)` when the op cannot be stacked.
pub(crate) fn lower(b: &mut Builder, pair: &Pair, opts: &FuseOptions) -> Result<bool, PassError> {
    let n = b.n();
    let n0 = b.node(0, pair);
    let g0 = b.members[0];
    let out0 = &g0.value(n0.outputs[0]).ty;
    if out0.rank() < 2 || n0.outputs.iter().any(|o| g0.value(*o).ty.rank() < 2) {
        return Ok(false);
    }
    let is_weight = |v: Option<ValueId>| v.is_some_and(|v| matches!(g0.value(v).def, ValueDef::Weight(_)));
    let axes_off_channels = |axes: &[i64], rank: usize| {
        axes.iter().all(|a| shape::norm_axis(*a, rank).is_ok_and(|a| a >= 2))
    };
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
            let x = per_member(b, pair, 0);
            let shared_in = matches!(b.repr(0, x[0])?, Repr::Shared(_))
                && (0..n).all(|k| b.repr(k, x[k]).ok() == b.repr(0, x[0]).ok());
            let (xf, group) = if shared_in && c.group == 1 { (b.member_value(0, x[0])?, 1) } else { (b.stacked(&x)?, c.group * n) };
            let Some(w) = b.concat_weights(pair, 1) else { return Ok(false) };
            let bias = match n0.inputs.get(2).copied().flatten() {
                None => None,
                Some(_) => match b.concat_weights(pair, 2) {
                    Some(bv) => Some(bv),
                    None => return Ok(false),
                },
            };
            let mut c = c.clone();
            c.group = group;
            op = Op::Conv(c);
            ins = vec![Some(xf), Some(w), bias];
        }
        Op::BatchNorm(_) => {
            if is_weight(n0.inputs[0]) {
                return Ok(false);
            }
            let x = per_member(b, pair, 0);
            ins.push(Some(b.stacked(&x)?));
            for slot in 1..5 {
                match b.concat_weights(pair, slot) {
                    Some(p) => ins.push(Some(p)),
                    None => return Ok(false),
                }
            }
        }
        Op::Unary(_) | Op::HardSigmoid { .. } | Op::Clip { .. } | Op::Cast { .. } | Op::MaxPool(_) | Op::GlobalAveragePool => {
            if n0.inputs.len() != 1 || is_weight(n0.inputs[0]) {
                return Ok(false);
            }
            let x = per_member(b, pair, 0);
            ins.push(Some(b.stacked(&x)?));
        }
        Op::Softmax { axis } | Op::Split { axis, .. } => {
            if !axes_off_channels(&[*axis], in_rank) || is_weight(n0.inputs[0]) {
                return Ok(false);
            }
            let x = per_member(b, pair, 0);
            ins.push(Some(b.stacked(&x)?));
        }
        Op::Reduce { axes: Some(axes), .. } if axes_off_channels(axes, in_rank) && !is_weight(n0.inputs[0]) => {
            let x = per_member(b, pair, 0);
            ins.push(Some(b.stacked(&x)?));
        }
        Op::Slice(sl) if axes_off_channels(&sl.axes, in_rank) && !is_weight(n0.inputs[0]) => {
            let x = per_member(b, pair, 0);
            ins.push(Some(b.stacked(&x)?));
        }
        Op::Pad(p) => {
            let r = in_rank;
            if p.pads.len() != 2 * r || [0, 1, r, r + 1].iter().any(|&i| p.pads[i] != 0) || is_weight(n0.inputs[0]) {
                return Ok(false);
            }
            let x = per_member(b, pair, 0);
            ins.push(Some(b.stacked(&x)?));
        }
        Op::Resize(r) => {
            if r.scales.as_ref().is_some_and(|s| s.len() < 2 || s[0] != 1.0 || s[1] != 1.0) || is_weight(n0.inputs[0]) {
                return Ok(false);
            }
            let mut r = r.clone();
            r.sizes[1] *= n;
            op = Op::Resize(r);
            let x = per_member(b, pair, 0);
            ins.push(Some(b.stacked(&x)?));
        }
        Op::Concat { axis } => {
            let Ok(ax) = shape::norm_axis(*axis, in_rank) else { return Ok(false) };
            if ax == 0 || n0.inputs.iter().any(|v| v.is_none() || is_weight(*v)) {
                return Ok(false);
            }
            let parts: Vec<ValueId> = (0..n0.inputs.len())
                .map(|slot| {
                    let x = per_member(b, pair, slot);
                    b.stacked(&x)
                })
                .collect::<Result<_, _>>()?;
            if ax >= 2 {
                ins = parts.into_iter().map(Some).collect();
            } else {
                return concat_channels(b, pair, parts).map(|()| true);
            }
        }
        Op::Binary(_) => match binary_inputs(b, pair)? {
            Some(v) => ins = v,
            None => return Ok(false),
        },
        _ => return Ok(false),
    }
    let outs = n0.outputs.iter().map(|o| g0.value(*o).name.clone()).collect();
    let node = b.f.add_node(n0.name.clone(), op, ins, outs)?;
    let fo = b.f.node(node).outputs.clone();
    finish(b, pair, &fo)?;
    Ok(true)
}

/// Member k's value in input `slot` of the pair, for every member.
fn per_member(b: &Builder, pair: &Pair, slot: usize) -> Vec<ValueId> {
    (0..b.n()).map(|k| b.node(k, pair).inputs[slot].expect("aligned input")).collect()
}

/// Records the fused outputs as stacked, checking each has the stacked
/// type of the members' output.
fn finish(b: &mut Builder, pair: &Pair, fo: &[ValueId]) -> Result<(), PassError> {
    let n0 = b.node(0, pair);
    for (j, f) in fo.iter().enumerate() {
        let mut want = b.members[0].value(n0.outputs[j]).ty.clone();
        want.shape[1] *= b.n();
        if b.f.value(*f).ty != want {
            return Err(PassError::Internal(format!(
                "grouping node `{}` gave {} where {want} was expected",
                n0.name,
                b.f.value(*f).ty
            )));
        }
        for k in 0..b.n() {
            let o = b.node(k, pair).outputs[j];
            b.set(k, o, Repr::Stacked(*f));
        }
    }
    Ok(())
}

/// Concat on the channel axis: member channels would interleave, so view
/// each stacked input as [B, N, C, ...], concatenate on axis 2, flatten back.
fn concat_channels(b: &mut Builder, pair: &Pair, parts: Vec<ValueId>) -> Result<(), PassError> {
    let n = b.n();
    let n0 = b.node(0, pair);
    let mut views = vec![];
    for (i, p) in parts.iter().enumerate() {
        let ty = &b.f.value(*p).ty;
        let mut shape = vec![ty.shape[0], n, ty.shape[1] / n];
        shape.extend_from_slice(&ty.shape[2..]);
        let name = format!("{}::view{i}", n0.name);
        let r = b.f.add_node(name.clone(), Op::Reshape { shape }, vec![Some(*p)], vec![name])?;
        views.push(Some(b.f.node(r).outputs[0]));
    }
    let name = format!("{}::by_member", n0.name);
    let c = b.f.add_node(name.clone(), Op::Concat { axis: 2 }, views, vec![name])?;
    let c = b.f.node(c).outputs[0];
    let mut want = b.members[0].value(n0.outputs[0]).ty.shape.clone();
    want[1] *= n;
    let oname = b.members[0].value(n0.outputs[0]).name.clone();
    let r = b.f.add_node(n0.name.clone(), Op::Reshape { shape: want }, vec![Some(c)], vec![oname])?;
    let fo = b.f.node(r).outputs.clone();
    finish(b, pair, &fo)
}

/// Inputs of a stacked Add/Sub/Mul/Div, or `None` when it cannot be stacked.
fn binary_inputs(b: &mut Builder, pair: &Pair) -> Result<Option<Vec<Option<ValueId>>>, PassError> {
    let n0 = b.node(0, pair);
    let g0 = b.members[0];
    let out = g0.value(n0.outputs[0]).ty.clone();
    let (r, c) = (out.rank(), out.shape[1]);
    let mut ins = vec![];
    for slot in 0..2 {
        let Some(v0) = n0.inputs[slot] else { return Ok(None) };
        let ty = &g0.value(v0).ty;
        if matches!(g0.value(v0).def, ValueDef::Weight(_)) {
            match channel_constant(b, pair, slot, r, c) {
                Some(w) => ins.push(Some(w)),
                None => return Ok(None),
            }
        } else {
            // A data operand must carry the channel axis itself.
            if ty.rank() != r || ty.shape[1] != c {
                return Ok(None);
            }
            let x = per_member(b, pair, slot);
            ins.push(Some(b.stacked(&x)?));
        }
    }
    Ok(Some(ins))
}

/// The per-member constants of input `slot` as one constant over the
/// stacked channels: each member's values broadcast over its C channels,
/// concatenated on axis 1. Bit-identical constants that do not vary over
/// channels are used as they are.
fn channel_constant(b: &mut Builder, pair: &Pair, slot: usize, rank: usize, c: usize) -> Option<ValueId> {
    let n = b.n();
    let mut tensors = vec![];
    for k in 0..n {
        let v = b.node(k, pair).inputs[slot]?;
        let ValueDef::Weight(t) = &b.members[k].value(v).def else { return None };
        if t.ty().dtype != DType::F32 || t.ty().rank() > rank {
            return None;
        }
        tensors.push((v, t));
    }
    let t0 = tensors[0].1;
    let mut shape = vec![1; rank - t0.ty().rank()];
    shape.extend_from_slice(&t0.ty().shape);
    if shape[1] != 1 && shape[1] != c {
        return None;
    }
    if shape[1] == 1 && tensors.iter().all(|(_, t)| *t == t0) {
        return Some(b.weight(0, tensors[0].0, true));
    }
    let mut expanded = shape.clone();
    expanded[1] = c;
    let mut arrays = vec![];
    for (_, t) in &tensors {
        let a = ArrayD::from_shape_vec(IxDyn(&shape), t.to_f32_vec()?).ok()?;
        arrays.push(a.broadcast(IxDyn(&expanded))?.to_owned());
    }
    let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
    let cat = ndarray::concatenate(Axis(1), &views).ok()?;
    let data: Vec<f32> = cat.iter().copied().collect();
    let t = Tensor::from_f32(cat.shape().to_vec(), &data).ok()?;
    debug_assert_eq!(*t.ty(), TensorType::new(DType::F32, cat.shape().to_vec()));
    let name = format!("{}::stacked", b.members[0].value(tensors[0].0).name);
    Some(b.f.add_weight(name, t))
}
