//! Canonicalize and constant-fold.
//!
//! - Nodes whose inputs are all constant become weights (BiFPN's
//!   `relu(w) / (sum(relu(w)) + eps)` turns into one scalar per input;
//!   Constant nodes and Shape of a static shape too).
//! - Identity nodes are bypassed.
//! - `Div(Mul(x, a), b)` with constant `a`, `b` becomes `Mul(x, a / b)`.
//! - torch's `stack([t0, t1, ...], -1).sum(-1)` (Unsqueeze + Concat +
//!   ReduceSum) becomes `t0 + t1 + ...`.
//! - Dead nodes (the shape arithmetic left behind) are removed.
//!
//! Every rewrite keeps the value's type; floats may differ by rounding.

use fuse_ir::{shape, BinaryOp, Graph, IrError, Op, ReduceOp, Tensor, UnaryOp};

use crate::dce;
use crate::util::{producer, use_counts, weight};
use fuse_ir::eval;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CanonStats {
    pub folded: usize,
    pub identities: usize,
    pub mul_div: usize,
    pub stack_sums: usize,
    pub dead: usize,
}

pub fn canonicalize(g: &mut Graph) -> Result<CanonStats, IrError> {
    let mut st = CanonStats::default();
    loop {
        let before = st.clone();
        fold_constants(g, &mut st)?;
        bypass_identities(g, &mut st);
        merge_mul_div(g, &mut st)?;
        stack_sums(g, &mut st)?;
        st.dead += dce(g);
        if st == before {
            return Ok(st);
        }
    }
}

/// Constants up to this size are folded whatever their inputs' size.
const FOLD_SLACK_BYTES: usize = 1 << 16;

fn fold_constants(g: &mut Graph, st: &mut CanonStats) -> Result<(), IrError> {
    for n in g.topo_order()? {
        let node = g.node(n);
        let all_const = node.inputs.iter().flatten().all(|v| weight(g, *v).is_some());
        if !all_const && !matches!(node.op, Op::Shape { .. }) {
            continue;
        }
        let ins: Vec<Option<&Tensor>> = node.inputs.iter().map(|v| v.and_then(|v| weight(g, v))).collect();
        // Memory stays bounded by the input: a fold may not make constants
        // much larger than those it reads (a broadcast of two vectors into
        // a matrix is left to run time).
        // A Constant node's tensor is already in memory, whatever its size.
        let own = if let Op::Constant(t) = &node.op { t.bytes().len() } else { 0 };
        let in_bytes: usize = ins.iter().flatten().map(|t| t.bytes().len()).sum::<usize>() + own;
        let out_bytes: usize = node.outputs.iter().map(|&o| g.value(o).ty.byte_len().unwrap_or(usize::MAX)).sum();
        if out_bytes > FOLD_SLACK_BYTES.saturating_add(in_bytes.saturating_mul(2)) {
            continue;
        }
        let tys: Vec<_> = node.inputs.iter().map(|v| v.map(|v| &g.value(v).ty)).collect();
        let folded = match &node.op {
            Op::Unsqueeze { .. } | Op::Reshape { .. } | Op::Flatten { .. } => {
                let ty = &g.value(node.outputs[0]).ty;
                ins.first().copied().flatten().and_then(|t| eval::reshape(t, ty)).map(|t| vec![t])
            }
            op => eval::fold(op, &ins, &tys),
        };
        let Some(folded) = folded else { continue };
        let outs = node.outputs.clone();
        if folded.len() != outs.len() || folded.iter().zip(&outs).any(|(t, o)| *t.ty() != g.value(*o).ty) {
            continue;
        }
        for (t, o) in folded.into_iter().zip(outs) {
            let name = g.value(o).name.clone();
            let w = g.add_weight(name, t);
            g.replace_uses(o, w);
        }
        g.remove_node(n);
        st.folded += 1;
    }
    Ok(())
}

fn bypass_identities(g: &mut Graph, st: &mut CanonStats) {
    for n in g.node_ids() {
        let node = g.node(n);
        if node.op != Op::Unary(UnaryOp::Identity) || g.outputs().contains(&node.outputs[0]) {
            continue;
        }
        let (x, o) = (node.inputs[0], node.outputs[0]);
        if let Some(x) = x {
            g.replace_uses(o, x);
            g.remove_node(n);
            st.identities += 1;
        }
    }
}

fn merge_mul_div(g: &mut Graph, st: &mut CanonStats) -> Result<(), IrError> {
    let uses = use_counts(g);
    for n in g.topo_order()? {
        let div = g.node(n);
        if div.op != Op::Binary(BinaryOp::Div) {
            continue;
        }
        let (Some(m), Some(b)) = (div.inputs[0], div.inputs[1]) else { continue };
        let Some(bt) = weight(g, b) else { continue };
        let Some(mn) = producer(g, m) else { continue };
        if g.node(mn).op != Op::Binary(BinaryOp::Mul) || uses.get(&m) != Some(&1) {
            continue;
        }
        let mins = &g.node(mn).inputs;
        let (x, a) = match (mins[0], mins[1]) {
            (Some(x), Some(a)) if weight(g, a).is_some() => (x, a),
            (Some(a), Some(x)) if weight(g, a).is_some() => (x, a),
            _ => continue,
        };
        let at = weight(g, a).expect("checked");
        let Some(c) = eval::fold(&Op::Binary(BinaryOp::Div), &[Some(at), Some(bt)], &[]) else { continue };
        let c = c.into_iter().next().expect("one output");
        let out = div.outputs[0];
        let want = g.value(out).ty.clone();
        if shape::broadcast(&g.value(x).ty.shape, &c.ty().shape).ok().as_deref() != Some(&want.shape[..]) {
            continue;
        }
        let (name, oname) = (div.name.clone(), g.value(out).name.clone());
        let cw = g.add_weight(format!("{name}::scale"), c);
        let new = g.add_node(name, Op::Binary(BinaryOp::Mul), vec![Some(x), Some(cw)], vec![oname])?;
        let new_out = g.node(new).outputs[0];
        g.replace_uses(out, new_out);
        g.remove_node(n);
        g.remove_node(mn);
        st.mul_div += 1;
    }
    Ok(())
}

fn stack_sums(g: &mut Graph, st: &mut CanonStats) -> Result<(), IrError> {
    let uses = use_counts(g);
    for n in g.topo_order()? {
        let red = g.node(n);
        let Op::Reduce { op: ReduceOp::Sum, axes: Some(axes), keepdims: false } = &red.op else { continue };
        let Some(c) = red.inputs[0] else { continue };
        let rank = g.value(c).ty.rank();
        if axes.len() != 1 || red.inputs.len() > 1 && red.inputs[1].is_some() {
            continue;
        }
        let Ok(k) = shape::norm_axis(axes[0], rank) else { continue };
        let Some(cn) = producer(g, c) else { continue };
        let Op::Concat { axis } = g.node(cn).op else { continue };
        if shape::norm_axis(axis, rank).ok() != Some(k) || uses.get(&c) != Some(&1) {
            continue;
        }
        // Every concatenated piece must be `Unsqueeze(t, [k])`, read once.
        let mut terms = vec![];
        let mut unsq = vec![];
        for u in g.node(cn).inputs.iter() {
            let Some(u) = *u else { break };
            let Some(un) = producer(g, u) else { break };
            let Op::Unsqueeze { axes } = &g.node(un).op else { break };
            if axes.len() != 1 || shape::norm_axis(axes[0], rank).ok() != Some(k) || uses.get(&u) != Some(&1) {
                break;
            }
            let Some(t) = g.node(un).inputs[0] else { break };
            terms.push(t);
            unsq.push(un);
        }
        if terms.len() < 2 || terms.len() != g.node(cn).inputs.len() {
            continue;
        }
        let out = red.outputs[0];
        let (name, oname) = (red.name.clone(), g.value(out).name.clone());
        let mut acc = terms[0];
        for (i, &t) in terms.iter().enumerate().skip(1) {
            let nm = if i + 1 == terms.len() { oname.clone() } else { format!("{oname}::partial{i}") };
            let a =
                g.add_node(format!("{name}::add{i}"), Op::Binary(BinaryOp::Add), vec![Some(acc), Some(t)], vec![nm])?;
            acc = g.node(a).outputs[0];
        }
        if g.value(acc).ty != g.value(out).ty {
            return Err(IrError::Node {
                node: name,
                op: "ReduceSum",
                msg: "stacked-sum rewrite changed the type (internal error)".into(),
            });
        }
        g.replace_uses(out, acc);
        g.remove_node(n);
        g.remove_node(cn);
        for un in unsq {
            g.remove_node(un);
        }
        st.stack_sums += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuse_ir::{DType, TensorType, ValueDef, ValueId};

    /// y = x + (a + b) with a: [n, 1] and b: [1, n] constants.
    fn broadcast_sum(n: usize) -> Graph {
        let mut g = Graph::new("t");
        let x = g.add_input("x", TensorType::new(DType::F32, [n, n]));
        let a = g.add_weight("a", Tensor::from_f32([n, 1], &vec![1.0; n]).unwrap());
        let b = g.add_weight("b", Tensor::from_f32([1, n], &vec![2.0; n]).unwrap());
        let ab = g.add_node("ab", Op::Binary(BinaryOp::Add), vec![Some(a), Some(b)], vec!["ab".into()]).unwrap();
        let ab = g.node(ab).outputs[0];
        let y = g.add_node("y", Op::Binary(BinaryOp::Add), vec![Some(x), Some(ab)], vec!["y".into()]).unwrap();
        let y = g.node(y).outputs[0];
        g.set_outputs(vec![y]);
        g
    }

    /// Folding may not turn small constants into a large one: memory stays
    /// bounded by the input's size.
    #[test]
    fn folds_small_constants_but_not_a_blow_up() {
        let mut small = broadcast_sum(8);
        assert_eq!(canonicalize(&mut small).unwrap().folded, 1);
        assert_eq!(small.node_count(), 1);
        // 2 x 8 KiB of constants would fold into 16 MiB: left to run time.
        let mut big = broadcast_sum(2048);
        assert_eq!(canonicalize(&mut big).unwrap().folded, 0);
        assert_eq!(big.node_count(), 2);
    }

    /// BatchNormalization on constants folds (torch's dynamo exporter
    /// standardizes NFNet's conv weights with it): `(x - mean) / sqrt(var +
    /// eps) * scale + bias` per channel.
    #[test]
    fn batch_norm_on_constants_folds() {
        let mut g = Graph::new("t");
        let w = |v: &[f32]| Tensor::from_f32([v.len()], v).unwrap();
        let x = g.add_weight("x", Tensor::from_f32([1, 2, 2], &[1.0, 3.0, -2.0, 2.0]).unwrap());
        let ins: Vec<Option<ValueId>> = [("s", [2.0, 1.0]), ("b", [0.5, 0.0]), ("m", [2.0, 0.0]), ("v", [1.0, 4.0])]
            .iter()
            .map(|(n, v)| Some(g.add_weight(n.to_string(), w(v))))
            .collect();
        let bn = fuse_ir::BatchNorm { epsilon: 0.0 };
        let y = g.add_node("bn", Op::BatchNorm(bn), [vec![Some(x)], ins].concat(), vec!["y".into()]).unwrap();
        let y = g.node(y).outputs[0];
        let i = g.add_input("i", TensorType::new(DType::F32, [1, 2, 2]));
        let out = g.add_node("add", Op::Binary(BinaryOp::Add), vec![Some(i), Some(y)], vec!["o".into()]).unwrap();
        let out = g.node(out).outputs[0];
        g.set_outputs(vec![out]);
        assert_eq!(canonicalize(&mut g).unwrap().folded, 1);
        let add = g.node(g.node_ids()[0]).clone();
        let ValueDef::Weight(t) = &g.value(add.inputs[1].unwrap()).def else { panic!("not folded") };
        // Channel 0: (x - 2) / 1 * 2 + 0.5; channel 1: x / 2.
        assert_eq!(t.to_f32_vec().unwrap(), [-1.5, 2.5, -1.0, 1.0]);
    }

    /// A Constant node becomes a weight whatever its size: its tensor is in
    /// memory already (NFNet's standardized conv weights, 1 MiB and more,
    /// stayed nodes, and members differing in a node's attribute diverged
    /// there instead of stacking).
    #[test]
    fn a_large_constant_node_becomes_a_weight() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", TensorType::new(DType::F32, [512, 512]));
        let t = Tensor::from_f32([512, 512], &vec![0.5; 512 * 512]).unwrap();
        let c = g.add_node("c", Op::Constant(t), vec![], vec!["c".into()]).unwrap();
        let c = g.node(c).outputs[0];
        let y = g.add_node("y", Op::Binary(BinaryOp::Mul), vec![Some(x), Some(c)], vec!["y".into()]).unwrap();
        let y = g.node(y).outputs[0];
        g.set_outputs(vec![y]);
        assert_eq!(canonicalize(&mut g).unwrap().folded, 1);
        assert_eq!(g.node_count(), 1);
        let w = g.node(g.node_ids()[0]).inputs[1].unwrap();
        assert!(matches!(g.value(w).def, ValueDef::Weight(_)), "the Mul reads a weight");
    }
}
