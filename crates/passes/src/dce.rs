//! Dead-code elimination: removes every node no graph output depends on.

use std::collections::HashSet;

use fuse_ir::{Graph, NodeId, ValueDef};

/// Removes dead nodes; returns how many were removed.
pub fn dce(g: &mut Graph) -> usize {
    let mut live: HashSet<NodeId> = HashSet::new();
    let mut stack: Vec<_> = g.outputs().to_vec();
    while let Some(v) = stack.pop() {
        if let ValueDef::Node { node, .. } = g.value(v).def {
            if live.insert(node) {
                stack.extend(g.node(node).inputs.iter().flatten().copied());
            }
        }
    }
    let dead: Vec<NodeId> = g.node_ids().into_iter().filter(|n| !live.contains(n)).collect();
    for &n in &dead {
        g.remove_node(n);
    }
    dead.len()
}
