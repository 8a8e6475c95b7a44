//! Small helpers shared by the passes.

use std::collections::{HashMap, HashSet};

use fuse_ir::{Graph, IrError, NodeId, Tensor, ValueDef, ValueId};

/// The value names in use in `g` (inputs, weights, node outputs): what a
/// pass adding values claims new names against (`fuse_ir::claim_name`).
pub fn value_names(g: &Graph) -> HashSet<String> {
    let mut names: HashSet<String> = g.weights().map(|(_, v, _)| v.name.clone()).collect();
    names.extend(g.inputs().iter().map(|&i| g.value(i).name.clone()));
    for n in g.node_ids() {
        names.extend(g.node(n).outputs.iter().map(|&o| g.value(o).name.clone()));
    }
    names
}

/// The value names in use in `g` and its node names: what a pass adding
/// nodes claims both their names and their outputs' against.
pub fn value_and_node_names(g: &Graph) -> HashSet<String> {
    let mut names = value_names(g);
    names.extend(g.node_ids().into_iter().map(|n| g.node(n).name.clone()));
    names
}

/// `[rows, last]`: a shape as 2-D rows of its last axis (every leading axis
/// folded into the rows).
pub fn rows_of(shape: &[usize]) -> Vec<usize> {
    match shape.split_last() {
        Some((last, lead)) => vec![lead.iter().product(), *last],
        None => vec![1, 1],
    }
}

/// How many times each value is read: node inputs plus graph outputs.
pub fn use_counts(g: &Graph) -> HashMap<ValueId, usize> {
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    for n in g.node_ids() {
        for v in g.node(n).inputs.iter().flatten() {
            *uses.entry(*v).or_default() += 1;
        }
    }
    for o in g.outputs() {
        *uses.entry(*o).or_default() += 1;
    }
    uses
}

/// The constant behind a value, when it is a weight.
pub fn weight(g: &Graph, v: ValueId) -> Option<&Tensor> {
    match &g.value(v).def {
        ValueDef::Weight(t) => Some(t),
        _ => None,
    }
}

/// Whether a value is an f32 weight (its contents not read).
pub fn is_weight_f32(g: &Graph, v: Option<ValueId>) -> bool {
    v.and_then(|v| weight(g, v)).is_some_and(|t| t.ty().dtype == fuse_ir::DType::F32)
}

/// The f32 contents of a weight value.
pub fn weight_f32(g: &Graph, v: Option<ValueId>) -> Option<Vec<f32>> {
    if !is_weight_f32(g, v) {
        return None;
    }
    weight(g, v?)?.to_f32_vec()
}

/// The node making `v`, when a node does.
pub fn producer(g: &Graph, v: ValueId) -> Option<NodeId> {
    match g.value(v).def {
        ValueDef::Node { node, .. } => Some(node),
        _ => None,
    }
}

/// Values of f32 constant `c` along `axis` of a rank-`rank` value with `n`
/// entries there, `c` broadcasting to it without growing it: left-padded
/// with ones to `rank`, every other axis 1, `axis` either 1 (one value,
/// repeated) or `n`.
pub fn constant_along(g: &Graph, c: ValueId, rank: usize, axis: usize, n: usize) -> Option<Vec<f64>> {
    let vals = weight_f32(g, Some(c))?;
    let shape = &g.value(c).ty.shape;
    let pad = rank.checked_sub(shape.len())?;
    let padded: Vec<usize> = std::iter::repeat_n(1, pad).chain(shape.iter().copied()).collect();
    if padded.iter().enumerate().any(|(a, &d)| d != 1 && a != axis) {
        return None;
    }
    match padded[axis] {
        1 => Some(vec![vals[0] as f64; n]),
        d if d == n => Some(vals.iter().map(|&x| x as f64).collect()),
        _ => None,
    }
}

/// A constant input to replace (the scale folds): node, input slot, shape,
/// values.
pub struct Change {
    pub node: NodeId,
    pub slot: usize,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Input `slot` of `n` (an f32 weight), each value `x` at index `i` made
/// `f(i, x)`, rounded once.
pub fn rescaled(g: &Graph, n: NodeId, slot: usize, f: impl Fn(usize, f64) -> f64) -> Change {
    let v = g.node(n).inputs[slot].expect("a weight input");
    let old = weight_f32(g, Some(v)).expect("an f32 weight");
    let data = old.iter().enumerate().map(|(i, &x)| f(i, x as f64) as f32).collect();
    Change { node: n, slot, shape: g.value(v).ty.shape.clone(), data }
}

/// Whether every changed value is finite (a rescaled weight that would
/// overflow f32 is not).
pub fn all_finite(changes: &[Change]) -> bool {
    changes.iter().all(|c| c.data.iter().all(|x| x.is_finite()))
}

/// Each change made: a new weight `NAME::scaled` (a name claimed against
/// `names`) in the node's slot; the old weight stays for its other readers.
pub fn apply_changes(g: &mut Graph, changes: Vec<Change>, names: &mut HashSet<String>) -> Result<(), IrError> {
    for Change { node, slot, shape, data } in changes {
        let v = g.node(node).inputs[slot].expect("a weight input");
        let name = g.value(v).name.clone();
        let t = Tensor::from_f32(shape, &data).map_err(|msg| IrError::Tensor { name: name.clone(), msg })?;
        let w = g.add_weight(fuse_ir::claim_name(names, &format!("{name}::scaled"), 1), t);
        g.set_input(node, slot, Some(w));
    }
    Ok(())
}
