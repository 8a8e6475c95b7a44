//! Heads: node groups that differ between members (class heads with their
//! own class counts, and everything after) or that cannot be stacked run
//! per member: each member's own node, reading that member's own tensors
//! (a stacked input is split once, the split shared by every reader). A
//! region of consecutive such groups is emitted member by member, so each
//! member's layers run one after another as they do in the member alone.

use super::align::NodeGroup;
use super::layout::{FuseBuilder, Layout};
use super::report::Origin;
use crate::PassError;

/// Lowers `region` (consecutive node groups with their indices, in
/// dataflow order) per member: all of member 0's nodes, then member 1's, ...
pub(crate) fn lower_region(b: &mut FuseBuilder, region: &[(usize, &NodeGroup)]) -> Result<(), PassError> {
    for k in 0..b.n() {
        for (i, group) in region {
            b.begin(Origin::Group(*i));
            lower_member(b, k, group)?;
        }
    }
    Ok(())
}

/// Member k's node of the group, on member k's own tensors.
fn lower_member(b: &mut FuseBuilder, k: usize, group: &NodeGroup) -> Result<(), PassError> {
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
    Ok(())
}
