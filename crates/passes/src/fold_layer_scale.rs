//! Folds a constant scale into the linear layer that makes the value it
//! scales: layer scale.
//!
//! `(x · W + b) * s` = `x · (W * s) + b * s` when `W` is a constant `[K, N]`
//! matrix, `b` a constant bias along N (or none) and `s` a constant per
//! output feature (along N) or one number. Transposes may lie between the
//! layer and the `Mul`: the feature axis is followed through them. Every
//! value on the way has the next node as its only reader and is not a graph
//! output, so nothing else sees the change and nothing needs undoing (a
//! zero scale folds too). A rescaled weight that would overflow f32 leaves
//! the layer as it is (the check is on the weights, not on the sums the
//! product makes of them: a column of ±1e8 times 1e30 that cancelled to 0
//! before the scale could overflow after it; trained weights do not).
//!
//! What this is for: layer scale (`gamma`), one per-channel `Mul` after
//! each block's last linear layer in ConvNeXt and EdgeNeXt (after the
//! transpose back to channels first) and XCiT (timm's `LayerScale`, as in
//! CaiT and DeiT III). ONNX Runtime runs it as a pass over the block's
//! whole output; folded, ConvNeXt-Tiny loses 18 `Mul`s a member, XCiT-Nano
//! 26, EdgeNeXt-XXS 15 (README, "Layer scale folded").
//!
//! A single-model pass, run on each member before alignment: whether a
//! scale folds depends on its values only through the overflow check
//! (weights times scales past 3.4e38, which trained models do not reach),
//! so members of one architecture keep one structure.
//!
//! Not folded, on purpose: a `Mul` whose input has other readers, such as
//! a GELU's `x * 0.5` where `x` also feeds the `Erf` (ONNX Runtime fuses
//! that pattern whole).

use std::collections::HashSet;

use fuse_ir::{BinaryOp, Graph, IrError, NodeId, Op, ValueId};

use crate::util::{all_finite, apply_changes, constant_along, is_weight_f32, producer, rescaled, value_names, Change};

/// A fold found: the `Mul` and its scaled input, the layer's weight (and
/// bias) rescaled.
struct Fold {
    mul: NodeId,
    scaled: ValueId,
    changes: Vec<Change>,
}

/// Folds each scaling `Mul` it can into the linear layer before it;
/// returns how many went.
pub fn fold_layer_scale(g: &mut Graph) -> Result<usize, IrError> {
    let mut names = value_names(g);
    let mut folded = 0;
    // Only the `Mul` folded goes each time: the ids listed stay valid.
    let muls: Vec<NodeId> =
        g.topo_order()?.into_iter().filter(|&n| matches!(g.node(n).op, Op::Binary(BinaryOp::Mul))).collect();
    for mul in muls {
        let Some(fold) = find(g, mul) else { continue };
        apply(g, fold, &mut names)?;
        folded += 1;
    }
    Ok(folded)
}

/// Whether `v` is read exactly once, by a node, and is not a graph output.
fn read_once(g: &Graph, v: ValueId) -> bool {
    g.users(v).len() == 1 && !g.outputs().contains(&v)
}

/// `(constant slot, other value)` of a binary node with exactly one f32
/// constant input.
fn constant_and_value(g: &Graph, n: NodeId) -> Option<(usize, ValueId)> {
    let node = g.node(n);
    if node.inputs.len() != 2 {
        return None;
    }
    let consts: Vec<usize> = (0..2).filter(|&k| is_weight_f32(g, node.inputs[k])).collect();
    let [slot] = consts[..] else { return None };
    Some((slot, node.inputs[1 - slot]?))
}

fn find(g: &Graph, mul: NodeId) -> Option<Fold> {
    let (s_slot, scaled) = constant_and_value(g, mul)?;
    let out = g.node(mul).outputs[0];
    if g.outputs().contains(&out) || g.value(out).ty.shape != g.value(scaled).ty.shape {
        return None;
    }
    // Back through Transposes, each value read once.
    let mut perms = vec![];
    let mut v = scaled;
    loop {
        if !read_once(g, v) {
            return None;
        }
        let p = producer(g, v)?;
        match &g.node(p).op {
            Op::Transpose { perm } => {
                perms.push(perm.clone());
                v = g.node(p).inputs[0]?;
            }
            _ => break,
        }
    }
    // Then an Add of a constant bias (optional) and the MatMul.
    let mut node = producer(g, v)?;
    let mut bias = None;
    if matches!(g.node(node).op, Op::Binary(BinaryOp::Add)) {
        let (b_slot, y) = constant_and_value(g, node)?;
        if !read_once(g, y) || g.value(y).ty.shape != g.value(v).ty.shape {
            return None;
        }
        bias = Some((node, b_slot));
        node = producer(g, y)?;
    }
    let matmul = node;
    if !matches!(g.node(matmul).op, Op::MatMul) || !is_weight_f32(g, g.node(matmul).inputs[1]) {
        return None;
    }
    let w = g.node(matmul).inputs[1]?;
    let [_, n] = g.value(w).ty.shape[..] else { return None };
    let y = g.node(matmul).outputs[0];
    let rank = g.value(y).ty.shape.len();
    if rank < 2 || g.value(y).ty.shape[rank - 1] != n {
        return None;
    }
    // The feature axis, from the MatMul's last one through the Transposes.
    let mut axis = rank - 1;
    for perm in perms.iter().rev() {
        axis = perm.iter().position(|&a| a == axis)?;
    }
    let s = constant_along(g, g.node(mul).inputs[s_slot]?, rank, axis, n)?;
    let mut changes = vec![rescaled(g, matmul, 1, |i, x| x * s[i % n])];
    if let Some((add, b_slot)) = bias {
        let b = g.node(add).inputs[b_slot]?;
        let bv = constant_along(g, b, rank, rank - 1, n)?;
        let mut shape = g.value(b).ty.shape.clone();
        match shape.last_mut() {
            Some(last) => *last = n,
            None => shape.push(n),
        }
        let data = bv.iter().zip(&s).map(|(b, s)| (b * s) as f32).collect();
        changes.push(Change { node: add, slot: b_slot, shape, data });
    }
    if !all_finite(&changes) {
        return None;
    }
    Some(Fold { mul, scaled, changes })
}

fn apply(g: &mut Graph, fold: Fold, names: &mut HashSet<String>) -> Result<(), IrError> {
    apply_changes(g, fold.changes, names)?;
    let out = g.node(fold.mul).outputs[0];
    g.replace_uses(out, fold.scaled);
    g.remove_node(fold.mul);
    Ok(())
}
