//! Members' blocks as subgraphs: the nodes that share a `Node::subgraph`
//! id (one member's contiguous block of a fused graph, `fusec fuse
//! --member-subgraphs`) become the body of a one-step `Scan`, with the
//! weights only they read inside it. ONNX Runtime plans and frees a
//! subgraph's memory on its own, as for the member alone; in one flat
//! graph its planner hands each freed buffer to the next value of exactly
//! the same shape, so the next member's layers take over the first
//! member's buffers and none returns to the arena until the last member
//! has run (DenseNet-121: an arena of 128 MB against 16 MB a member).
//!
//! The form: `Scan(ticks)` with `ticks` a `[1]` float (one step, no
//! state), whose body reads the shared inputs and earlier values from the
//! outer scope, and outputs each value that something after the block
//! reads; each comes out stacked `[1, ...]` and a `Squeeze` gives it its
//! old name, so readers and graph outputs are unchanged. A node that reads
//! only weights and is read only by the block (an fp16 weight's Cast)
//! joins it. Weights stay outside where a node outside the block reads
//! them too (ONNX Runtime
//! neither pre-packs nor fuses outer-scope weights in a subgraph:
//! DenseNet's members with their weights outside ran at 0.70x).

use std::collections::{BTreeMap, HashMap, HashSet};

use fuse_ir::{DType, Tensor, TensorType};
use onnx_protobuf::{attribute_proto::AttributeType, AttributeProto, GraphProto, NodeProto};

use crate::onnx_proto::{int_attr, tensor_proto, value_info, Names};

/// Rewrites `gp` in place: `blocks[i]` is the subgraph id of `gp.node[i]`;
/// `types` the type of each value a node writes; `weights` the tensors of
/// initializers whose bytes are not yet in their protos (a weight moved
/// into a body gets its bytes there and leaves the map). A block whose
/// values are read between its nodes by a node outside it stays flat.
/// Returns how many blocks became subgraphs.
pub(crate) fn wrap(
    gp: &mut GraphProto,
    blocks: &[Option<u32>],
    types: &HashMap<String, TensorType>,
    weights: &mut HashMap<String, &Tensor>,
    names: &mut Names,
) -> usize {
    if blocks.iter().all(Option::is_none) {
        return 0;
    }
    // Who reads each value: node indices, and the graph outputs.
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in gp.node.iter().enumerate() {
        for x in n.input.iter().filter(|x| !x.is_empty()) {
            readers.entry(x.as_str()).or_default().push(i);
        }
    }
    let graph_outputs: HashSet<&str> = gp.output.iter().map(|o| o.name.as_str()).collect();
    // A node of weights only (an fp16 weight's Cast back to f32) read by
    // one block alone joins it, so that the weight moves in with it.
    let weight_names: HashSet<&str> = gp.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut blocks = blocks.to_vec();
    for (i, n) in gp.node.iter().enumerate() {
        if blocks[i].is_some() || n.input.is_empty() || !n.input.iter().all(|x| weight_names.contains(x.as_str())) {
            continue;
        }
        let mut of_readers = n.output.iter().flat_map(|o| readers.get(o.as_str()).into_iter().flatten());
        let first = of_readers.next().and_then(|&r| blocks[r]);
        let outputs_read_outside = n.output.iter().any(|o| graph_outputs.contains(o.as_str()));
        if first.is_some() && !outputs_read_outside && of_readers.all(|&r| blocks[r] == first) {
            blocks[i] = first;
        }
    }
    let mut members: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, b) in blocks.iter().enumerate() {
        if let Some(b) = b {
            members.entry(*b).or_default().push(i);
        }
    }
    // Per block: its nodes, the values read after it, the initializers
    // only it reads.
    struct Plan {
        nodes: Vec<usize>,
        escaping: Vec<String>,
        inner: HashSet<String>,
    }
    let mut plans: Vec<Plan> = vec![];
    for nodes in members.into_values() {
        let set: HashSet<usize> = nodes.iter().copied().collect();
        let last = *nodes.last().expect("a block has a node");
        let mut escaping = vec![];
        let mut flat = false;
        for &i in &nodes {
            for o in &gp.node[i].output {
                let outside: Vec<usize> =
                    readers.get(o.as_str()).into_iter().flatten().copied().filter(|r| !set.contains(r)).collect();
                flat |= outside.iter().any(|&r| r < last);
                if !outside.is_empty() || graph_outputs.contains(o.as_str()) {
                    escaping.push(o.clone());
                }
            }
        }
        if flat || escaping.is_empty() {
            continue;
        }
        let inner: HashSet<String> = gp
            .initializer
            .iter()
            .map(|t| &t.name)
            .filter(|t| {
                let r = readers.get(t.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                !r.is_empty() && r.iter().all(|i| set.contains(i)) && !graph_outputs.contains(t.as_str())
            })
            .cloned()
            .collect();
        plans.push(Plan { nodes, escaping, inner });
    }
    if plans.is_empty() {
        return 0;
    }
    let ticks = names.fresh("fusec::ticks");
    let axis0 = names.fresh("fusec::axis0");
    let order: Vec<String> = gp.initializer.iter().map(|t| t.name.clone()).collect();
    let mut initializers: HashMap<String, onnx_protobuf::TensorProto> =
        std::mem::take(&mut gp.initializer).into_iter().map(|t| (t.name.clone(), t)).collect();
    let mut old: Vec<Option<NodeProto>> = std::mem::take(&mut gp.node).into_iter().map(Some).collect();
    // Where each block's Scan goes: at its last node.
    let mut at: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut moved: HashSet<String> = HashSet::new();
    for p in &plans {
        let first = old[p.nodes[0]].as_ref().map(|n| n.name.clone()).unwrap_or_default();
        let inside: HashMap<&str, String> =
            p.escaping.iter().map(|v| (v.as_str(), names.fresh(&format!("{v}::in")))).collect();
        let mut body = GraphProto { name: names.fresh(&format!("{first}::subgraph")), ..Default::default() };
        let tick = names.fresh(&format!("{first}::tick"));
        body.input.push(value_info(&tick, &TensorType::new(DType::F32, vec![])));
        for &i in &p.nodes {
            let mut n = old[i].take().expect("a node is in one block");
            for x in n.input.iter_mut().chain(n.output.iter_mut()) {
                if let Some(r) = inside.get(x.as_str()) {
                    *x = r.clone();
                }
            }
            body.node.push(n);
        }
        for v in &p.escaping {
            body.output.push(value_info(&inside[v.as_str()], &types[v]));
        }
        let mut inner: Vec<&String> = p.inner.iter().collect();
        inner.sort_by_key(|t| order.iter().position(|o| o == *t));
        for t in inner {
            let mut tp = initializers.remove(t).expect("an initializer moves once");
            if let Some(w) = weights.remove(t) {
                tp.raw_data = w.bytes().to_vec();
            }
            moved.insert(t.clone());
            body.initializer.push(tp);
        }
        let stacked: Vec<String> = p.escaping.iter().map(|v| names.fresh(&format!("{v}::scan"))).collect();
        let scan = NodeProto {
            name: names.fresh(&format!("{first}::scan")),
            op_type: "Scan".into(),
            input: vec![ticks.clone()],
            output: stacked.clone(),
            attribute: vec![
                AttributeProto {
                    name: "body".into(),
                    type_: AttributeType::GRAPH.into(),
                    g: Some(body).into(),
                    ..Default::default()
                },
                int_attr("num_scan_inputs", 1),
            ],
            ..Default::default()
        };
        let mut out = vec![scan];
        for (s, v) in stacked.iter().zip(&p.escaping) {
            out.push(NodeProto {
                name: names.fresh(&format!("{v}::squeeze")),
                op_type: "Squeeze".into(),
                input: vec![s.clone(), axis0.clone()],
                output: vec![v.clone()],
                ..Default::default()
            });
        }
        at.insert(*p.nodes.last().expect("a block has a node"), out);
    }
    for (i, n) in old.into_iter().enumerate() {
        if let Some(n) = n {
            gp.node.push(n);
        }
        if let Some(scan) = at.remove(&i) {
            gp.node.extend(scan);
        }
    }
    for name in order.iter().filter(|o| !moved.contains(*o)) {
        gp.initializer.push(initializers.remove(name).expect("each initializer once"));
    }
    gp.initializer.push(tensor_proto(&ticks, &Tensor::from_f32(vec![1], &[0.0]).expect("one float")));
    gp.initializer.push(tensor_proto(&axis0, &Tensor::from_i64(vec![1], &[0]).expect("one int")));
    plans.len()
}
