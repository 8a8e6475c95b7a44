//! Merges sibling linear layers into one product.
//!
//! MatMuls that read the same value with constant 2-D f32 weights
//! `[K, N_i]`, each either followed by an Add of a constant f32 bias
//! `[N_i]` (the Add its output's only reader) or by no bias at all, become
//! one MatMul on the weights side by side, `[K, ΣN_i]`, one Add of the
//! biases end to end, and a Split of the last axis back into the layers'
//! outputs (which keep their names). Layers with a bias merge with layers
//! with a bias, those without with those without.
//!
//! BERT's query, key and value projections read one hidden state: merged,
//! they are one product of N = 1152 (MiniLM) instead of three of 384 that
//! each read it again. On ONNX Runtime's CPU provider, 2 threads, three
//! MiniLM-L6 cross-encoders at batch 1 ran 1.03x faster merged, one after
//! another, and their fused model 1.05x (README, "Merged projections").
//!
//! Only products of at most [`MAX_MERGED_ROWS`] rows merge: with more,
//! the Split's copy of the wider output costs more than the merge saves
//! (three MiniLM members merged, alone, side by side: 1.01x at batch 1,
//! 128 rows; 1.00x at 256; 0.97x at 512; 0.95x at 1024).
//!
//! Each output element is the same dot product over K as before, so the
//! outputs stay the same to float rounding (a runtime may tile a wider
//! product differently).

use std::collections::{HashMap, HashSet};

use fuse_ir::{BinaryOp, Graph, IrError, NodeId, Op, Tensor, ValueId};

use crate::util::{is_weight_f32, value_and_node_names, weight_f32};

/// The most rows (`x`'s elements over K) a merged product may have.
pub const MAX_MERGED_ROWS: usize = 256;

/// One linear layer: `x · W (+ b)`.
struct Layer {
    matmul: NodeId,
    /// The Add of the bias, and the bias.
    bias: Option<(NodeId, ValueId)>,
    weight: ValueId,
    /// The weight's output width `N_i`.
    width: usize,
    /// The layer's output: the Add's, else the MatMul's.
    out: ValueId,
}

/// What [`merge_linear`] did to one graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Linear layers merged with a sibling.
    pub layers: usize,
    /// The products they became.
    pub products: usize,
}

/// Merges every set of sibling linear layers in `g` as the module says.
pub fn merge_linear(g: &mut Graph) -> Result<MergeStats, IrError> {
    let outputs: HashSet<ValueId> = g.outputs().iter().copied().collect();
    // Layers by what they read and whether they have a bias, in dataflow
    // order (the order of the Split's outputs).
    let mut siblings: Vec<((ValueId, bool), Vec<Layer>)> = vec![];
    let mut index: HashMap<(ValueId, bool), usize> = HashMap::new();
    for n in g.topo_order()? {
        let Some(layer) = linear_layer(g, n, &outputs) else { continue };
        let key = (g.node(n).inputs[0].expect("a linear layer reads x"), layer.bias.is_some());
        let k = *index.entry(key).or_insert_with(|| {
            siblings.push((key, vec![]));
            siblings.len() - 1
        });
        siblings[k].1.push(layer);
    }
    // Node names too: the merged nodes' names are claimed from the same set.
    let mut names = value_and_node_names(g);
    let mut st = MergeStats::default();
    for ((x, _), layers) in siblings {
        if layers.len() < 2 {
            continue;
        }
        merge(g, x, &layers, &mut names)?;
        st.layers += layers.len();
        st.products += 1;
    }
    Ok(st)
}

/// Node `n` as a linear layer, if it is one: a MatMul of a non-constant
/// f32 value of at most [`MAX_MERGED_ROWS`] rows by a 2-D f32 weight,
/// with the bias Add that is its output's only reader, if there is one.
/// Graph outputs stay where they are.
fn linear_layer(g: &Graph, n: NodeId, outputs: &HashSet<ValueId>) -> Option<Layer> {
    let node = g.node(n);
    let (Op::MatMul, [Some(x), Some(w)]) = (&node.op, node.inputs.as_slice()) else { return None };
    if is_weight_f32(g, Some(*x)) || g.value(*x).ty.dtype != fuse_ir::DType::F32 || !is_weight_f32(g, Some(*w)) {
        return None;
    }
    let [k, width] = g.value(*w).ty.shape[..] else { return None };
    if g.value(*x).ty.numel().is_none_or(|n| n / k.max(1) > MAX_MERGED_ROWS) {
        return None;
    }
    let mm_out = node.outputs[0];
    if outputs.contains(&mm_out) {
        return None;
    }
    let mut layer = Layer { matmul: n, bias: None, weight: *w, width, out: mm_out };
    if let [(add, slot)] = g.users(mm_out)[..] {
        let a = g.node(add);
        let b = if matches!(a.op, Op::Binary(BinaryOp::Add)) { a.inputs[1 - slot] } else { None };
        if is_weight_f32(g, b) && b.is_some_and(|b| g.value(b).ty.shape == [width]) && !outputs.contains(&a.outputs[0])
        {
            layer.bias = Some((add, b.expect("checked")));
            layer.out = a.outputs[0];
        }
    }
    Some(layer)
}

/// Replaces `layers` (all reading `x`, all with a bias or none) by one
/// MatMul (and Add) and a Split whose outputs take the layers' outputs'
/// names and readers.
fn merge(g: &mut Graph, x: ValueId, layers: &[Layer], names: &mut HashSet<String>) -> Result<(), IrError> {
    let node_names: Vec<String> = layers.iter().map(|l| g.node(l.matmul).name.clone()).collect();
    let base = joined_name(&node_names);
    let err = |msg: String| IrError::Node { node: base.clone(), op: "MatMul", msg };
    let weights: Vec<Vec<f32>> = layers
        .iter()
        .map(|l| {
            weight_f32(g, Some(l.weight)).ok_or_else(|| err(format!("weight `{}` unreadable", g.value(l.weight).name)))
        })
        .collect::<Result<_, _>>()?;
    let k = g.value(layers[0].weight).ty.shape[0];
    let widths: Vec<usize> = layers.iter().map(|l| l.width).collect();
    let total: usize = widths.iter().sum();
    let mut w = Vec::with_capacity(k * total);
    for row in 0..k {
        for (wi, &n) in weights.iter().zip(&widths) {
            w.extend_from_slice(&wi[row * n..(row + 1) * n]);
        }
    }
    drop(weights);
    let w = Tensor::from_f32(vec![k, total], &w).map_err(&err)?;
    let w = g.add_weight(fuse_ir::claim_name(names, &format!("{base}.weight"), 1), w);
    let mm_out = fuse_ir::claim_name(names, &format!("{base}:0"), 1);
    let mm = g.add_node(fuse_ir::claim_name(names, &base, 1), Op::MatMul, vec![Some(x), Some(w)], vec![mm_out])?;
    let mut last = g.node(mm).outputs[0];
    if layers[0].bias.is_some() {
        let mut b = Vec::with_capacity(total);
        for l in layers {
            let (_, bias) = l.bias.expect("all merged layers have a bias");
            b.extend(
                weight_f32(g, Some(bias)).ok_or_else(|| err(format!("bias `{}` unreadable", g.value(bias).name)))?,
            );
        }
        let b = g.add_weight(
            fuse_ir::claim_name(names, &format!("{base}.bias"), 1),
            Tensor::from_f32(vec![total], &b).map_err(&err)?,
        );
        let add_name = fuse_ir::claim_name(names, &format!("{base}/Add"), 1);
        let add_out = fuse_ir::claim_name(names, &format!("{add_name}:0"), 1);
        let add = g.add_node(add_name, Op::Binary(BinaryOp::Add), vec![Some(last), Some(b)], vec![add_out])?;
        last = g.node(add).outputs[0];
    }
    // The Split's outputs get the layers' output names once those are gone.
    let split_name = fuse_ir::claim_name(names, &format!("{base}/Split"), 1);
    let tmp: Vec<String> =
        (0..layers.len()).map(|i| fuse_ir::claim_name(names, &format!("{split_name}:{i}"), 1)).collect();
    let split = g.add_node(split_name, Op::Split { axis: -1, split: widths }, vec![Some(last)], tmp)?;
    let outs = g.node(split).outputs.clone();
    for (l, &o) in layers.iter().zip(&outs) {
        g.replace_uses(l.out, o);
        let name = g.value(l.out).name.clone();
        if let Some((add, _)) = l.bias {
            g.remove_node(add);
        }
        g.remove_node(l.matmul);
        names.remove(&g.value(o).name);
        g.value_mut(o).name = name;
    }
    Ok(())
}

/// The layers' node names joined where they differ, cut at separators
/// (`.`, `/`, `_`, `:`): `l0.attention.self.query/MatMul`, `...key/MatMul`
/// and `...value/MatMul` give `l0.attention.self.query+key+value/MatMul`.
fn joined_name(names: &[String]) -> String {
    let sep = |c: char| matches!(c, '.' | '/' | '_' | ':');
    let first = names[0].as_str();
    let mut prefix = names.iter().map(|n| common_len(first.chars(), n.chars())).min().unwrap_or(0);
    prefix = first[..prefix].rfind(sep).map_or(0, |i| i + 1);
    let shortest = names.iter().map(|n| n.len()).min().unwrap_or(0);
    let mut suffix = names.iter().map(|n| common_len(first.chars().rev(), n.chars().rev())).min().unwrap_or(0);
    suffix = suffix.min(shortest - prefix);
    let tail = &first[first.len() - suffix..];
    suffix = tail.find(sep).map_or(0, |i| suffix - i);
    format!(
        "{}{}{}",
        &first[..prefix],
        names.iter().map(|n| &n[prefix..n.len() - suffix]).collect::<Vec<_>>().join("+"),
        &first[first.len() - suffix..]
    )
}

/// Bytes of the chars `a` and `b` start with alike.
fn common_len(a: impl Iterator<Item = char>, b: impl Iterator<Item = char>) -> usize {
    a.zip(b).take_while(|(x, y)| x == y).map(|(x, _)| x.len_utf8()).sum()
}

#[cfg(test)]
mod tests {
    use super::joined_name;

    #[test]
    fn joined_name_keeps_what_the_names_share() {
        let n = |v: &[&str]| joined_name(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(n(&["a.query/MatMul", "a.key/MatMul", "a.value/MatMul"]), "a.query+key+value/MatMul");
        assert_eq!(n(&["q", "k"]), "q+k");
        assert_eq!(n(&["fc", "fc_1"]), "fc+fc_1");
        assert_eq!(n(&["x.é1", "x.é2"]), "x.é1+é2");
    }
}
