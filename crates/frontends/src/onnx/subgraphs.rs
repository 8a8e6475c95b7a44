//! Reads back the member subgraphs fusec writes (`fusec fuse
//! --member-subgraphs`, the exporter's `onnx_subgraphs`): a `Scan` of one
//! step over a `[1]` initializer, with no state, whose body reads its
//! outer scope. Its body's nodes and weights join the graph, and each
//! output becomes an `Unsqueeze` of the body's value (the `[1, ...]` a
//! one-step Scan stacks). Any other `Scan` is left for the unsupported-op
//! error.

use std::collections::HashSet;

use onnx_protobuf::{attribute_proto::AttributeType, AttributeProto, GraphProto, NodeProto, TensorProto};

/// Inlines every one-step `Scan` of `gp` (see the module docs); names of
/// the body that clash with the graph's leave that Scan as it is.
pub(crate) fn inline_scans(gp: &mut GraphProto, opset: i64) {
    let steps: HashSet<String> = gp.initializer.iter().filter(|t| t.dims == [1]).map(|t| t.name.clone()).collect();
    let mut names: HashSet<String> = gp.initializer.iter().map(|t| t.name.clone()).collect();
    names.extend(gp.input.iter().map(|v| v.name.clone()));
    names.extend(gp.node.iter().flat_map(|n| n.output.iter().cloned()));
    let nodes = std::mem::take(&mut gp.node);
    for node in nodes {
        match one_step_body(&node, &steps) {
            Some(body) if fits(body, &names) => {
                let body = body.clone();
                names.extend(body.initializer.iter().map(|t| t.name.clone()));
                names.extend(body.node.iter().flat_map(|n| n.output.iter().cloned()));
                gp.initializer.extend(body.initializer);
                gp.node.extend(body.node);
                let axes = fuse_ir::claim_name(&mut names, &format!("{}::axes", node.name), 1);
                if opset >= 13 {
                    gp.initializer.push(TensorProto {
                        name: axes.clone(),
                        dims: vec![1],
                        data_type: 7, // INT64
                        int64_data: vec![0],
                        ..Default::default()
                    });
                }
                for (o, stacked) in body.output.iter().zip(&node.output) {
                    let mut input = vec![o.name.clone()];
                    let mut attribute = vec![];
                    if opset >= 13 {
                        input.push(axes.clone());
                    } else {
                        attribute.push(AttributeProto {
                            name: "axes".into(),
                            type_: AttributeType::INTS.into(),
                            ints: vec![0],
                            ..Default::default()
                        });
                    }
                    gp.node.push(NodeProto {
                        name: fuse_ir::claim_name(&mut names, &format!("{stacked}::unsqueeze"), 1),
                        op_type: "Unsqueeze".into(),
                        input,
                        output: vec![stacked.clone()],
                        attribute,
                        ..Default::default()
                    });
                }
            }
            _ => gp.node.push(node),
        }
    }
}

/// The body of a one-step, stateless `Scan` over one of `steps`, whose
/// nodes do not read the step.
fn one_step_body<'a>(node: &'a NodeProto, steps: &HashSet<String>) -> Option<&'a GraphProto> {
    if node.op_type != "Scan" || !(node.domain.is_empty() || node.domain == "ai.onnx") {
        return None;
    }
    if node.input.len() != 1 || !steps.contains(&node.input[0]) {
        return None;
    }
    let mut body = None;
    for a in &node.attribute {
        match a.name.as_str() {
            "body" => body = a.g.as_ref(),
            "num_scan_inputs" if a.i == 1 => {}
            "scan_input_axes" | "scan_output_axes" | "scan_input_directions" | "scan_output_directions"
                if a.ints.iter().all(|&i| i == 0) => {}
            _ => return None,
        }
    }
    let body = body?;
    let step = &body.input.first()?.name;
    let reads_step = body.node.iter().any(|n| n.input.contains(step));
    (body.input.len() == 1 && body.output.len() == node.output.len() && !reads_step).then_some(body)
}

/// Whether none of the body's weights or node outputs is already a name
/// of the graph.
fn fits(body: &GraphProto, names: &HashSet<String>) -> bool {
    body.initializer.iter().all(|t| !names.contains(&t.name))
        && body.node.iter().flat_map(|n| &n.output).all(|o| !names.contains(o))
}
