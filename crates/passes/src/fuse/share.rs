//! Share: nodes whose weights are bit-identical in every member, reading
//! only shared values, are kept once and computed once. A frozen backbone
//! then costs one member's compute, not N.

use std::collections::HashSet;

use fuse_ir::{Graph, ValueDef, ValueId};

use super::align::{Alignment, NodeGroup};
use super::layout::{FuseBuilder, Layout};
use crate::PassError;

/// For each node group of the alignment: whether it is computed once for all.
pub fn shared_groups(members: &[&Graph], al: &Alignment) -> Vec<bool> {
    let m0 = members[0];
    let mut shared_values: HashSet<ValueId> = m0.inputs().iter().copied().collect();
    let mut out = Vec::with_capacity(al.groups.len());
    for p in &al.groups {
        let n0 = m0.node(p.nodes[0]);
        let shared = p.same
            && n0.inputs.iter().enumerate().all(|(slot, v)| match v {
                None => true,
                Some(v) => match &m0.value(*v).def {
                    ValueDef::Weight(t) => members.iter().zip(&p.nodes).skip(1).all(|(g, nk)| {
                        let wk = g.node(*nk).inputs[slot].expect("aligned inputs");
                        matches!(&g.value(wk).def, ValueDef::Weight(tk) if tk == t)
                    }),
                    _ => shared_values.contains(v),
                },
            });
        if shared {
            shared_values.extend(n0.outputs.iter().copied());
        }
        out.push(shared);
    }
    out
}

/// For each member, the earlier member it is identical to (every node the
/// same and every weight bit-identical), if any.
pub fn identical_members(members: &[&Graph], al: &Alignment) -> Vec<Option<usize>> {
    let weights_equal = |j: usize, k: usize| {
        al.groups.iter().all(|p| {
            let (nj, nk) = (members[j].node(p.nodes[j]), members[k].node(p.nodes[k]));
            nj.op == nk.op
                && nj.inputs.iter().zip(&nk.inputs).all(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => match (&members[j].value(*a).def, &members[k].value(*b).def) {
                        (ValueDef::Weight(x), ValueDef::Weight(y)) => x == y,
                        (ValueDef::Weight(_), _) | (_, ValueDef::Weight(_)) => false,
                        _ => members[j].value(*a).ty == members[k].value(*b).ty,
                    },
                    (None, None) => true,
                    _ => false,
                })
        })
    };
    (0..members.len()).map(|k| (0..k).find(|&j| weights_equal(j, k))).collect()
}

/// Lowers a shared group: member 0's node, computed once, its weights
/// keeping their names; every member's outputs are that node's.
pub(crate) fn lower(b: &mut FuseBuilder, group: &NodeGroup) -> Result<(), PassError> {
    let n0 = b.node(0, group);
    let ins = b.member_inputs(0, n0, true)?;
    let outs = n0.outputs.iter().map(|o| b.members[0].value(*o).name.clone()).collect();
    let node = b.f.add_node(n0.name.clone(), n0.op.clone(), ins, outs)?;
    let fo = b.f.node(node).outputs.clone();
    for k in 0..b.n() {
        let nk = b.node(k, group);
        for (o, f) in nk.outputs.iter().zip(&fo) {
            b.set(k, *o, Layout::Shared(*f));
        }
    }
    Ok(())
}
