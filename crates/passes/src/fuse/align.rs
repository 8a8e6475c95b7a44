//! Align: the node-by-node correspondence between the members' graphs.
//!
//! Walks member 0 in topological order and finds, in every other member,
//! the node of the same op kind reading the corresponding values in the
//! same input slots (weights are per node and compared, not followed). The
//! correspondence must cover every node of every member: members whose
//! dataflow differs are different architectures and cannot be fused.
//!
//! A bias is optional in ONNX, and exporters drop one that is all zeros
//! (torch's dynamo exporter does, for a freshly initialised classifier):
//! a Conv or Gemm without a bias matches one with a bias weight, and
//! [`Alignment::missing_biases`] lists the slots to fill with zeros
//! ([`fill_biases`]) so that every member's node has one.
//!
//! A matched group of nodes is *same* when ops, attributes and every input
//! and output type agree and its data inputs come from same nodes; the
//! first nodes where that stops holding are the *divergences* (class heads
//! with different class counts), and everything after them is per member.

use std::collections::{HashMap, HashSet};

use fuse_ir::{Bytes, Graph, NodeId, Op, Tensor, TensorType, ValueDef, ValueId};

use crate::PassError;

/// An aligned node group: one node of member 0 and its counterpart in
/// each member (index = member).
#[derive(Clone, Debug)]
pub struct NodeGroup {
    pub nodes: Vec<NodeId>,
    pub same: bool,
}

/// Where members first differ: the node group (its index in
/// [`Alignment::groups`]), one member that differs from member 0, and what
/// differs.
#[derive(Clone, Debug)]
pub struct Divergence {
    pub group: usize,
    pub member: usize,
    pub what: String,
}

#[derive(Clone, Debug)]
pub struct Alignment {
    /// In member 0's topological order.
    pub groups: Vec<NodeGroup>,
    pub divergences: Vec<Divergence>,
    /// Bias slots left empty in some members where a counterpart has a
    /// bias weight: (member, node, slot, a counterpart's bias type).
    pub missing_biases: Vec<(usize, NodeId, usize, TensorType)>,
}

/// Whether input `slot` of `op` is an optional bias that is zero when absent.
fn bias_slot(op: &Op, slot: usize) -> bool {
    matches!(op, Op::Conv(_) | Op::Gemm(_)) && slot == 2
}

/// Fills the empty bias slots `al.missing_biases` names with zero weights,
/// in `members` (the graphs `al` aligned), shaped as the counterpart's
/// bias but for the node's own output channels. Returns, per member, the
/// names of the nodes given a zero bias. The members compute what they did.
pub fn fill_biases(members: &mut [&mut Graph], al: &Alignment) -> Result<Vec<Vec<String>>, PassError> {
    let mut filled = vec![vec![]; members.len()];
    for (k, n, slot, like) in &al.missing_biases {
        let g = &mut *members[*k];
        let node = g.node(*n).name.clone();
        let out = g.value(g.node(*n).outputs[0]).ty.shape.clone();
        let mut shape = like.shape.clone();
        match &g.node(*n).op {
            Op::Conv(_) => shape = vec![out.get(1).copied().unwrap_or(1)],
            _ if shape.len() == 2 && shape[0] != 1 => shape = out.clone(),
            _ => {
                if let (Some(last), Some(own)) = (shape.last_mut(), out.last()) {
                    *last = *own;
                }
            }
        }
        let ty = TensorType::new(like.dtype, shape);
        let bytes = ty.numel().unwrap_or(0) * ty.dtype.size();
        let zeros = Tensor::new(ty, Bytes::from(vec![0u8; bytes]))
            .map_err(|e| PassError::Internal(format!("zero bias of node `{node}`: {e}")))?;
        let v = g.add_weight(format!("{node}/zero_bias"), zeros);
        g.set_input(*n, *slot, Some(v));
        filled[*k].push(node);
    }
    Ok(filled)
}

fn is_data(g: &Graph, v: ValueId) -> bool {
    !matches!(g.value(v).def, ValueDef::Weight(_))
}

/// Aligns `members` (named for errors). Errors name the first divergence.
pub fn align(members: &[&Graph], names: &[String]) -> Result<Alignment, PassError> {
    let m0 = members[0];
    let incompatible = |msg: String| PassError::Incompatible(msg);
    for (k, g) in members.iter().enumerate().skip(1) {
        for (what, a, b) in
            [("inputs", m0.inputs().len(), g.inputs().len()), ("outputs", m0.outputs().len(), g.outputs().len())]
        {
            if a != b {
                return Err(incompatible(format!("{} has {a} {what} but {} has {b}", names[0], names[k])));
            }
        }
        for (a, b) in m0.inputs().iter().zip(g.inputs()) {
            let (a, b) = (m0.value(*a), g.value(*b));
            if a.ty != b.ty {
                return Err(incompatible(format!(
                    "input `{}` is {} in {} but {} in {} (inputs must have the same size and dtype)",
                    a.name, a.ty, names[0], b.ty, names[k]
                )));
            }
        }
    }

    let order0 = m0.topo_order()?;
    // Per member: users of each value in topological order, node positions.
    let mut users: Vec<HashMap<ValueId, Vec<(NodeId, usize)>>> = vec![];
    let mut orders = vec![];
    for g in members {
        let order = g.topo_order()?;
        let mut u: HashMap<ValueId, Vec<(NodeId, usize)>> = HashMap::new();
        for &n in &order {
            for (slot, v) in g.node(n).inputs.iter().enumerate() {
                if let Some(v) = v {
                    u.entry(*v).or_default().push((n, slot));
                }
            }
        }
        users.push(u);
        orders.push(order);
    }
    let mut vmap: Vec<HashMap<ValueId, ValueId>> =
        members.iter().map(|g| m0.inputs().iter().copied().zip(g.inputs().iter().copied()).collect()).collect();
    let mut matched: Vec<HashSet<NodeId>> = vec![HashSet::new(); members.len()];
    let mut same_values: HashSet<ValueId> = m0.inputs().iter().copied().collect();
    let mut groups = vec![];
    let mut divergences: Vec<Divergence> = vec![];

    for &n0 in &order0 {
        let node0 = m0.node(n0);
        let mut nodes = vec![n0];
        let data_in: Vec<(usize, ValueId)> = node0
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(s, v)| v.filter(|v| is_data(m0, *v)).map(|v| (s, v)))
            .collect();
        let inputs_same = data_in.iter().all(|(_, v)| same_values.contains(v));
        let mut same = inputs_same;
        for k in 1..members.len() {
            let g = members[k];
            let fits = |nk: NodeId| -> bool {
                let node = g.node(nk);
                node.op.name() == node0.op.name()
                    && node.inputs.len() == node0.inputs.len()
                    && node.outputs.len() == node0.outputs.len()
                    && node0.inputs.iter().zip(&node.inputs).enumerate().all(|(slot, (a, b))| match (a, b) {
                        (None, None) => true,
                        (Some(w), None) if bias_slot(&node0.op, slot) => !is_data(m0, *w),
                        (None, Some(w)) if bias_slot(&node0.op, slot) => !is_data(g, *w),
                        (Some(a), Some(b)) => {
                            if is_data(m0, *a) {
                                vmap[k].get(a) == Some(b)
                            } else {
                                !is_data(g, *b)
                            }
                        }
                        _ => false,
                    })
            };
            let candidates: Vec<NodeId> = match data_in.first() {
                Some((slot, v0)) => match vmap[k].get(v0) {
                    Some(vk) => users[k]
                        .get(vk)
                        .map(|us| us.iter().filter(|(_, s)| s == slot).map(|(n, _)| *n).collect())
                        .unwrap_or_default(),
                    None => vec![],
                },
                None => orders[k].clone(),
            };
            let found = candidates.into_iter().find(|nk| !matched[k].contains(nk) && fits(*nk));
            let Some(nk) = found else {
                return Err(structure_error(members, names, &divergences, &groups, k, &node0.name, node0.op.name()));
            };
            matched[k].insert(nk);
            let nodek = g.node(nk);
            for (a, b) in node0.outputs.iter().zip(&nodek.outputs) {
                vmap[k].insert(*a, *b);
            }
            if inputs_same {
                if let Some(what) = difference(m0, g, n0, nk) {
                    if same {
                        divergences.push(Divergence { group: groups.len(), member: k, what });
                    }
                    same = false;
                }
            }
            nodes.push(nk);
        }
        if same {
            same_values.extend(node0.outputs.iter().copied());
        }
        groups.push(NodeGroup { nodes, same });
    }
    for k in 1..members.len() {
        if let Some(extra) = orders[k].iter().find(|n| !matched[k].contains(n)) {
            let node = members[k].node(*extra);
            return Err(incompatible(format!(
                "{} and {} differ in structure: node `{}` ({}) of {} has no counterpart in {}",
                names[0],
                names[k],
                node.name,
                node.op.name(),
                names[k],
                names[0]
            )));
        }
        for (j, (a, b)) in m0.outputs().iter().zip(members[k].outputs()).enumerate() {
            let mapped = vmap[k].get(a).copied().or_else(|| (!is_data(m0, *a)).then_some(*b));
            if mapped != Some(*b) {
                return Err(incompatible(format!(
                    "{} and {} differ in structure: output {j} (`{}`) is computed differently",
                    names[0],
                    names[k],
                    m0.value(*a).name
                )));
            }
        }
    }
    let mut missing_biases = vec![];
    for group in &groups {
        let n0 = m0.node(group.nodes[0]);
        for slot in (0..n0.inputs.len()).filter(|s| bias_slot(&n0.op, *s)) {
            let ins: Vec<Option<ValueId>> =
                group.nodes.iter().zip(members).map(|(n, g)| g.node(*n).inputs[slot]).collect();
            let Some((k, v)) = ins.iter().enumerate().find_map(|(k, v)| v.map(|v| (k, v))) else { continue };
            let ty = members[k].value(v).ty.clone();
            for (k, (n, v)) in group.nodes.iter().zip(&ins).enumerate() {
                if v.is_none() {
                    missing_biases.push((k, *n, slot, ty.clone()));
                }
            }
        }
    }
    if !groups.iter().any(|p| p.same) {
        let first = divergences
            .first()
            .map(|d| describe(members, names, &groups, d))
            .unwrap_or_else(|| "the members have no nodes".into());
        return Err(incompatible(format!("nothing to fuse: the members differ from their first node: {first}")));
    }
    Ok(Alignment { groups, divergences, missing_biases })
}

/// What differs between node `a` of member 0 and node `b` of another, or
/// `None` when they compute the same function shape-wise.
fn difference(ga: &Graph, gb: &Graph, a: NodeId, b: NodeId) -> Option<String> {
    let (na, nb) = (ga.node(a), gb.node(b));
    if na.op != nb.op {
        return Some(format!("attributes {{{}}} vs {{{}}}", na.op.attrs_text(), nb.op.attrs_text()));
    }
    for (s, (x, y)) in na.inputs.iter().zip(&nb.inputs).enumerate() {
        if let (Some(x), Some(y)) = (x, y) {
            let (vx, vy) = (ga.value(*x), gb.value(*y));
            if vx.ty != vy.ty {
                let what = if is_data(ga, *x) { "input" } else { "weight" };
                return Some(format!("{what} {s} `{}` is {} vs {}", vy.name, vx.ty, vy.ty));
            }
        }
    }
    for (x, y) in na.outputs.iter().zip(&nb.outputs) {
        if ga.value(*x).ty != gb.value(*y).ty {
            return Some(format!("output is {} vs {}", ga.value(*x).ty, gb.value(*y).ty));
        }
    }
    None
}

/// One line naming the group's node in member 0, the differing member and what differs.
pub fn describe(members: &[&Graph], names: &[String], groups: &[NodeGroup], d: &Divergence) -> String {
    let n0 = members[0].node(groups[d.group].nodes[0]);
    let out = n0.outputs.first().map(|o| members[0].value(*o).name.as_str()).unwrap_or("");
    format!("node `{}` ({}) -> `{out}`: {} ({} vs {})", n0.name, n0.op.name(), d.what, names[0], names[d.member])
}

fn structure_error(
    members: &[&Graph],
    names: &[String],
    divergences: &[Divergence],
    groups: &[NodeGroup],
    k: usize,
    node: &str,
    op: &str,
) -> PassError {
    let mut msg = format!(
        "{} and {} differ in structure: node `{node}` ({op}) of {} has no counterpart in {}",
        names[0], names[k], names[0], names[k]
    );
    if let Some(d) = divergences.first() {
        msg.push_str(&format!("; first divergence before it: {}", describe(members, names, groups, d)));
    }
    PassError::Incompatible(msg)
}
