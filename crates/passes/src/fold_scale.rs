//! Folds a constant scale into the Conv that makes the value it scales.
//!
//! `conv(x, w, b) * s` = `conv(x, w * s, b * s)` when `s` is a constant per
//! output channel (or one number). Between the Conv and the `Mul` there
//! may be MaxPools and nearest Resizes that keep every channel where it
//! is, which commute with a positive per-channel scale. Where the Conv's
//! output is read elsewhere too, those readers see the scaled value and
//! are compensated: another constant
//! `Mul` by `s' / s`, a Conv reading it by its weights divided by `s` along
//! their input channels (zero padding stays zero). A graph output or any
//! other reader leaves the Conv as it is. Of a Conv's scaling `Mul`s, the
//! one on the largest tensor goes (the one after an upsample).
//!
//! What this is for: EfficientDet's BiFPN weights, one per-channel `Mul`
//! per input of each weighted sum once the members are stacked (ONNX
//! Runtime runs each as a pass over the whole tensor). It runs on the fused
//! graph, not on each member: whether a scale may fold depends on its
//! values (a BiFPN weight can be 0), and the members must keep one
//! structure to align.

use fuse_ir::{Graph, IrError, NodeId, Op, ResizeMode, ValueId};

use std::collections::HashSet;

use crate::util::{all_finite, apply_changes, constant_along, is_weight_f32, rescaled, value_names, Change};

/// A reader of the Conv's output (directly or after MaxPools and nearest
/// Resizes) that the fold must account for.
enum Reader {
    /// A `Mul` by a constant per-channel scale: input `slot` is the
    /// constant, `scale` its values per channel.
    Scale { node: NodeId, slot: usize, scale: Vec<f64>, numel: usize, output: bool },
    /// A Conv reading the value as its input.
    Conv(NodeId),
}

/// Folds one scaling `Mul` into each Conv it can; returns how many `Mul`s
/// went.
pub fn fold_scale(g: &mut Graph) -> Result<usize, IrError> {
    let mut names = value_names(g);
    let mut folded = 0;
    // Only `Mul`s are removed on the way: the Convs listed stay.
    let convs: Vec<NodeId> = g.topo_order()?.into_iter().filter(|&n| matches!(g.node(n).op, Op::Conv(_))).collect();
    for conv in convs {
        if fold_into(g, conv, &mut names)? {
            folded += 1;
        }
    }
    Ok(folded)
}

/// Channels of a Conv's output, when its weight and bias are f32 constants.
fn conv_channels(g: &Graph, n: NodeId) -> Option<usize> {
    let node = g.node(n);
    let Op::Conv(_) = &node.op else { return None };
    let w = node.inputs.get(1).copied().flatten();
    let bias = node.inputs.get(2).copied().flatten();
    if !is_weight_f32(g, w) || bias.is_some_and(|b| !is_weight_f32(g, Some(b))) {
        return None;
    }
    g.value(w?).ty.shape.first().copied()
}

/// The per-channel values of `Mul` node `n`'s constant input when it scales
/// `v` (rank ≥ 2, channels on axis 1) per channel: `(slot, scale)`.
fn channel_scale(g: &Graph, n: NodeId, v: ValueId, channels: usize) -> Option<(usize, Vec<f64>)> {
    let node = g.node(n);
    if !matches!(node.op, Op::Binary(fuse_ir::BinaryOp::Mul)) || node.inputs.len() != 2 {
        return None;
    }
    let slot = node.inputs.iter().position(|i| *i != Some(v))?;
    if node.inputs[1 - slot] != Some(v) {
        return None;
    }
    let rank = g.value(v).ty.shape.len();
    if rank < 2 {
        return None;
    }
    Some((slot, constant_along(g, node.inputs[slot]?, rank, 1, channels)?))
}

/// Every reader of `v` the fold must account for, through MaxPools (which
/// need a positive scale: `positive` is set) and nearest Resizes; `None`
/// when one of them cannot take it.
fn readers(g: &Graph, v: ValueId, channels: usize, positive: &mut bool, out: &mut Vec<Reader>) -> Option<()> {
    if g.outputs().contains(&v) {
        return None;
    }
    for (n, slot) in g.users(v) {
        let node = g.node(n);
        let next = match &node.op {
            Op::MaxPool(_) if slot == 0 => {
                *positive = true;
                Some(node.outputs[0])
            }
            Op::Resize(r)
                if slot == 0
                    && r.mode == ResizeMode::Nearest
                    && r.coordinate_transformation_mode != "tf_crop_and_resize"
                    && r.sizes.get(1) == Some(&channels)
                    // Given scales drive the coordinate transform: a
                    // channel scale other than 1 moves channels.
                    && r.scales.as_ref().is_none_or(|s| s.get(1) == Some(&1.0)) =>
            {
                Some(node.outputs[0])
            }
            Op::Conv(_) if slot == 0 && is_weight_f32(g, node.inputs[1]) => {
                out.push(Reader::Conv(n));
                None
            }
            _ => {
                let (slot, scale) = channel_scale(g, n, v, channels)?;
                let o = node.outputs[0];
                let numel = g.value(o).ty.shape.iter().product();
                out.push(Reader::Scale { node: n, slot, scale, numel, output: g.outputs().contains(&o) });
                None
            }
        };
        if let Some(next) = next {
            readers(g, next, channels, positive, out)?;
        }
    }
    Some(())
}

/// Folds one scaling `Mul` of Conv `conv`'s output into it, compensating
/// the other readers; whether it did.
fn fold_into(g: &mut Graph, conv: NodeId, names: &mut HashSet<String>) -> Result<bool, IrError> {
    let Some(channels) = conv_channels(g, conv) else { return Ok(false) };
    let y = g.node(conv).outputs[0];
    let (mut positive, mut found) = (false, vec![]);
    if readers(g, y, channels, &mut positive, &mut found).is_none() {
        return Ok(false);
    }
    // The scale on the largest tensor goes; a graph output stays.
    let mut pick = None;
    for (k, r) in found.iter().enumerate() {
        if let Reader::Scale { numel, output: false, .. } = r {
            if pick.is_none_or(|(_, best)| *numel > best) {
                pick = Some((k, *numel));
            }
        }
    }
    let Some((pick, _)) = pick else { return Ok(false) };
    let Reader::Scale { node: mul, slot: mul_slot, scale: ref s, .. } = found[pick] else { unreachable!() };
    // Normal f32 numbers only: no zero, subnormal, infinite or NaN scale.
    let ok = |x: f64| (x as f32).is_normal() && (!positive || x > 0.0);
    if !s.iter().all(|&x| ok(x)) {
        return Ok(false);
    }
    // The Conv scales its output; the other readers undo it.
    let per = {
        let w = g.node(conv).inputs[1].expect("conv weight");
        g.value(w).ty.shape.iter().skip(1).product::<usize>()
    };
    let mut changes = vec![rescaled(g, conv, 1, |i, x| x * s[i / per])];
    if g.node(conv).inputs.get(2).copied().flatten().is_some() {
        changes.push(rescaled(g, conv, 2, |i, x| x * s[i]));
    }
    for (k, r) in found.iter().enumerate() {
        match r {
            _ if k == pick => {}
            Reader::Scale { node, slot, scale, .. } => {
                let rank = g.value(g.node(*node).inputs[1 - slot].expect("the scaled value")).ty.shape.len();
                let mut shape = vec![1; rank];
                shape[1] = channels;
                let data = scale.iter().zip(s).map(|(a, b)| (a / b) as f32).collect();
                changes.push(Change { node: *node, slot: *slot, shape, data });
            }
            Reader::Conv(n) => {
                let Op::Conv(c) = &g.node(*n).op else { unreachable!() };
                let group = c.group.max(1);
                let w = g.node(*n).inputs[1].expect("conv weight");
                let shape = &g.value(w).ty.shape;
                let (cout, cin_g) = (shape[0], shape[1]);
                let per: usize = shape.iter().skip(2).product();
                let per_group = cout / group;
                changes.push(rescaled(g, *n, 1, |i, x| {
                    let (o, j) = (i / (cin_g * per), i / per % cin_g);
                    x / s[o / per_group * cin_g + j]
                }));
            }
        }
    }
    // A weight that would overflow f32 leaves everything as it is.
    if !all_finite(&changes) {
        return Ok(false);
    }
    apply_changes(g, changes, names)?;
    let x = g.node(mul).inputs[1 - mul_slot].expect("the scaled value");
    let out = g.node(mul).outputs[0];
    g.replace_uses(out, x);
    g.remove_node(mul);
    Ok(true)
}
