//! Runs row-wise layers on 2-D rows.
//!
//! A transformer's hidden state is `[batch, tokens, H]` (a ConvNeXt's
//! channels-last activation `[1, h, w, C]`), yet everything between two
//! attention reshapes works on each row of H alone: the linear layers
//! (a MatMul by a constant `[H, N]` weight), their bias Adds, residual
//! sums, LayerNorm over the last axis, GELU and other elementwise ops,
//! a Split or Concat of the last axis. Such a region is rewritten to work
//! on `[rows, H]`, rows being the product of the leading axes: a Reshape
//! where a value enters the region, one back to the first shape where a
//! value leaves it (to a reader that is not row-wise, or a graph output),
//! and none where a Reshape reads or writes it (its target shape is
//! static, so it reads 2-D rows as well).
//!
//! Why: ONNX Runtime's CPU provider fuses a 3-D residual Add and the
//! LayerNorm after it into its `SkipLayerNormalization`, which profiled
//! slower than the two ops apart (1.80 ms a MiniLM member run for 13 of
//! them, against 0.50 ms on rows), and wraps each 3-D MatMul and bias in
//! Reshapes of its own to run a `Gemm`. On 2-D rows neither happens: three
//! MiniLM-L6 members at batch 1 ran 1.06x faster rewritten this way
//! (ONNX Runtime 1.32 CPU, 2 threads, side by side; README, "Rows").
//!
//! Only regions with at least one linear layer are rewritten: elsewhere
//! the reshapes would be all there is. The values computed are the same,
//! in the same order; only their shapes change, and the graph's outputs
//! keep theirs.

use std::collections::{HashMap, HashSet};

use fuse_ir::{Graph, IrError, NodeId, Op, Tensor, TensorType, ValueDef, ValueId};

use crate::util::{rows_of, value_and_node_names};

/// What [`flatten_rows`] did to one graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowStats {
    /// Regions rewritten to 2-D rows.
    pub regions: usize,
    /// Their nodes (reshapes added at their borders not counted).
    pub nodes: usize,
    /// Linear layers among them.
    pub linear: usize,
}

/// Rewrites every row-wise region of `g` with a linear layer to 2-D rows,
/// as the module says.
pub fn flatten_rows(g: &mut Graph) -> Result<RowStats, IrError> {
    let order = g.topo_order()?;
    let outputs: HashSet<ValueId> = g.outputs().iter().copied().collect();
    let row_wise: HashSet<NodeId> = order.iter().copied().filter(|&n| is_row_wise(g, n)).collect();
    // A Reshape whose output only row-wise nodes read can write rows itself.
    let writes_rows = |n: NodeId| {
        let node = g.node(n);
        let out = node.outputs[0];
        if !matches!(node.op, Op::Reshape { .. }) || g.value(out).ty.rank() < 3 || outputs.contains(&out) {
            return false;
        }
        let users = g.users(out);
        !users.is_empty() && users.iter().all(|(r, _)| row_wise.contains(r))
    };
    let candidates: Vec<NodeId> = order.iter().copied().filter(|&n| row_wise.contains(&n) || writes_rows(n)).collect();
    let index: HashMap<NodeId, usize> = candidates.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    // Regions: row-wise nodes (and such Reshapes) joined by the values
    // between them.
    let mut parent: Vec<usize> = (0..candidates.len()).collect();
    for (i, &n) in candidates.iter().enumerate() {
        for v in g.node(n).inputs.iter().flatten() {
            if let ValueDef::Node { node: p, .. } = g.value(*v).def {
                if let Some(&j) = index.get(&p) {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    parent[a] = b;
                }
            }
        }
    }
    let mut regions: Vec<(usize, Vec<NodeId>)> = vec![];
    for (i, &n) in candidates.iter().enumerate() {
        let root = find(&mut parent, i);
        match regions.iter_mut().find(|(r, _)| *r == root) {
            Some((_, nodes)) => nodes.push(n),
            None => regions.push((root, vec![n])),
        }
    }
    let mut st = RowStats::default();
    let mut names = value_and_node_names(g);
    for (_, nodes) in regions {
        let linear = nodes.iter().filter(|&&n| matches!(g.node(n).op, Op::MatMul)).count();
        if linear == 0 {
            continue;
        }
        rewrite(g, &nodes, &outputs, &mut names)?;
        st.regions += 1;
        st.nodes += nodes.len();
        st.linear += linear;
    }
    Ok(st)
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Whether node `n` works on each row of its rank-3-or-more output alone,
/// so that it computes the same on the rows laid out 2-D.
fn is_row_wise(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    let shape = |v: &Option<ValueId>| v.map(|v| g.value(v).ty.shape.clone());
    let Some(out) = node.outputs.first().map(|&o| g.value(o).ty.shape.clone()) else { return false };
    let r = out.len();
    if r < 3 {
        return false;
    }
    let last_axis = |axis: i64| axis == -1 || axis == r as i64 - 1;
    let lead = &out[..r - 1];
    let same = |v: &Option<ValueId>| shape(v).as_deref() == Some(out.as_slice());
    match &node.op {
        Op::MatMul => {
            let [Some(x), Some(w)] = node.inputs.as_slice() else { return false };
            let weight = matches!(g.value(*w).def, ValueDef::Weight(_));
            let xs = &g.value(*x).ty.shape;
            weight && g.value(*w).ty.rank() == 2 && xs.len() == r && &xs[..r - 1] == lead
        }
        // Each input the output's shape, or broadcast along the last axis
        // only (a scalar, `[H]`, `[1, H]`); one of them the output's shape.
        Op::Binary(_) => {
            let fits = |v: &Option<ValueId>| {
                let Some(s) = shape(v) else { return false };
                s == out || s.len() <= 1 || (s.len() == 2 && s[0] == 1)
            };
            node.inputs.iter().all(fits) && node.inputs.iter().any(same)
        }
        op if op.is_elementwise_unary() => node.inputs.len() == 1 && same(&node.inputs[0]),
        Op::LayerNorm { axis, .. } => {
            last_axis(*axis)
                && same(&node.inputs[0])
                && node.inputs[1..].iter().flatten().all(|&v| g.value(v).ty.rank() == 1)
        }
        Op::Softmax { axis } => last_axis(*axis) && same(&node.inputs[0]),
        Op::Split { axis, .. } => {
            last_axis(*axis)
                && shape(&node.inputs[0]).is_some_and(|s| s.len() == r && &s[..r - 1] == lead)
                && node.outputs.iter().all(|&o| g.value(o).ty.shape[..r - 1] == *lead)
        }
        Op::Concat { axis } => {
            last_axis(*axis)
                && node.inputs.iter().all(|v| shape(v).is_some_and(|s| s.len() == r && &s[..r - 1] == lead))
        }
        _ => false,
    }
}

/// Rewrites one region (`nodes`, in dataflow order) to 2-D rows.
fn rewrite(
    g: &mut Graph,
    nodes: &[NodeId],
    outputs: &HashSet<ValueId>,
    names: &mut HashSet<String>,
) -> Result<(), IrError> {
    let inside: HashSet<NodeId> = nodes.iter().copied().collect();
    let produced: HashSet<ValueId> = nodes.iter().flat_map(|&n| g.node(n).outputs.clone()).collect();
    // The values entering: read by a row-wise node, at rank 3 or more,
    // made elsewhere.
    let mut entries: HashMap<ValueId, ValueId> = HashMap::new();
    for &n in nodes {
        if matches!(g.node(n).op, Op::Reshape { .. }) {
            continue;
        }
        for (slot, v) in g.node(n).inputs.clone().into_iter().enumerate() {
            let Some(v) = v else { continue };
            if produced.contains(&v) || g.value(v).ty.rank() < 3 {
                continue;
            }
            let rows = match entries.get(&v) {
                Some(&rows) => rows,
                None => {
                    let ty = &g.value(v).ty;
                    let shape = rows_of(&ty.shape);
                    let name = fuse_ir::claim_name(names, &format!("{}::rows", g.value(v).name), 1);
                    // A constant is stored in rows; anything else reshaped.
                    let rows = match &g.value(v).def {
                        ValueDef::Weight(t) => {
                            let t = Tensor::new(TensorType::new(ty.dtype, shape), t.storage().clone())
                                .map_err(|msg| IrError::Tensor { name: name.clone(), msg })?;
                            g.add_weight(name, t)
                        }
                        _ => {
                            let out = fuse_ir::claim_name(names, &format!("{name}:0"), 1);
                            let r = g.add_node(name, Op::Reshape { shape }, vec![Some(v)], vec![out])?;
                            g.node(r).outputs[0]
                        }
                    };
                    entries.insert(v, rows);
                    rows
                }
            };
            g.set_input(n, slot, Some(rows));
        }
    }
    // The region's own values become rows; readers outside it that are not
    // Reshapes, and graph outputs, read them in their first shape again.
    for &n in nodes {
        let outs = g.node(n).outputs.clone();
        let first: Vec<Vec<usize>> = outs.iter().map(|&o| g.value(o).ty.shape.clone()).collect();
        for &o in &outs {
            let shape = rows_of(&g.value(o).ty.shape);
            g.value_mut(o).ty.shape = shape;
        }
        match &mut g.node_mut(n).op {
            Op::Reshape { shape } => *shape = rows_of(shape),
            Op::LayerNorm { axis, .. } | Op::Softmax { axis } | Op::Split { axis, .. } | Op::Concat { axis } => {
                *axis = -1
            }
            _ => {}
        }
        for (&o, shape) in outs.iter().zip(first) {
            let readers: Vec<(NodeId, usize)> = g
                .users(o)
                .into_iter()
                .filter(|(r, _)| !inside.contains(r) && !matches!(g.node(*r).op, Op::Reshape { .. }))
                .collect();
            if readers.is_empty() && !outputs.contains(&o) {
                continue;
            }
            let name = g.value(o).name.clone();
            let node_name = fuse_ir::claim_name(names, &format!("{name}::unrows"), 1);
            let tmp = fuse_ir::claim_name(names, &format!("{node_name}:0"), 1);
            let back = g.add_node(node_name, Op::Reshape { shape }, vec![Some(o)], vec![tmp])?;
            let back = g.node(back).outputs[0];
            for (r, slot) in readers {
                g.set_input(r, slot, Some(back));
            }
            if outputs.contains(&o) {
                // The graph output keeps its name and shape; the rows take
                // the Reshape's name.
                let outs: Vec<ValueId> = g.outputs().iter().map(|&x| if x == o { back } else { x }).collect();
                g.set_outputs(outs);
                let rows_name = g.value(back).name.clone();
                g.value_mut(back).name = name;
                g.value_mut(o).name = rows_name;
            }
        }
    }
    Ok(())
}
