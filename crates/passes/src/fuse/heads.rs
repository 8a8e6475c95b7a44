//! Heads: node groups that differ between members (class heads with their
//! own class counts, and everything after) or that cannot be stacked run
//! per member: each member's own node, reading that member's own tensors
//! (a stacked input is split once, the split shared by every reader). A
//! region of consecutive such groups is emitted member by member, so each
//! member's layers run one after another as they do in the member alone.

use super::align::NodeGroup;
use super::layout::{FuseBuilder, Layout};
use super::options::SUBGRAPH_MIN_NODES;
use super::report::Origin;
use crate::PassError;

/// Lowers `region` (consecutive node groups with their indices, in
/// dataflow order) per member: all of member 0's nodes, then member 1's, ...
/// Where members' blocks become subgraphs (`b.next_subgraph`), each
/// member's nodes of a region of at least [`SUBGRAPH_MIN_NODES`] groups
/// share one `Node::subgraph` id.
pub(crate) fn lower_region(b: &mut FuseBuilder, region: &[(usize, &NodeGroup)]) -> Result<(), PassError> {
    for k in 0..b.n() {
        let mut block = vec![];
        for (i, group) in region {
            b.begin(Origin::Group(*i));
            block.push(lower_member(b, k, group)?);
        }
        if let Some(id) = b.next_subgraph.filter(|_| block.len() >= SUBGRAPH_MIN_NODES) {
            for n in block {
                b.f.node_mut(n).subgraph = Some(id);
            }
            b.next_subgraph = Some(id + 1);
        }
    }
    Ok(())
}

/// Member k's node of the group, on member k's own tensors.
fn lower_member(b: &mut FuseBuilder, k: usize, group: &NodeGroup) -> Result<fuse_ir::NodeId, PassError> {
    let nk = b.node(k, group);
    let g = b.members[k];
    let ins = b.member_inputs(k, nk, false)?;
    let member = &b.names[k];
    let outs = nk.outputs.iter().map(|o| format!("{member}/{}", g.value(*o).name)).collect();
    let node = b.f.add_node(format!("{member}/{}", nk.name), nk.op.clone(), ins, outs)?;
    let fo = b.f.node(node).outputs.clone();
    for (o, f) in nk.outputs.iter().zip(fo) {
        b.set(k, *o, Layout::Own(f));
    }
    Ok(node)
}
