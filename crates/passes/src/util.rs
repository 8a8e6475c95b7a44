//! Small helpers shared by the passes.

use std::collections::{HashMap, HashSet};

use fuse_ir::{Graph, Tensor, ValueDef, ValueId};

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
