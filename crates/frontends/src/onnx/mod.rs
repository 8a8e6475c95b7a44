//! ONNX frontend: parses a `ModelProto` and builds a static [`Graph`].
//!
//! What it normalizes: attribute-or-input parameters (axes, pads, sizes,
//! scales, split, min/max, shape) across opsets 11 to 21 become the IR's
//! static attributes, read from initializers, Constant nodes or shape
//! arithmetic on static shapes; `auto_pad` becomes explicit pads.
//! What it does not do: fold constants, remove dead nodes or Identity;
//! those are passes.
//!
//! The loader is here; [`attrs`] reads a node's attributes and static
//! inputs, [`tensor`] converts tensors, [`external`] maps external data,
//! and [`ops`] converts nodes, one file per op family. A model with ops
//! fusec lacks gets one error listing every one of them.

mod attrs;
mod external;
mod ops;
mod subgraphs;
mod tensor;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use fuse_ir::*;
use onnx_protobuf::{tensor_shape_proto::dimension, type_proto, Message, ModelProto, NodeProto, ValueInfoProto};

pub use external::ExternalData;
pub use ops::resolve_reshape;
pub use tensor::{const_tensor, tensor_from_proto};

use crate::LoadError;

pub const MIN_OPSET: i64 = 11;
pub const MAX_OPSET: i64 = 21;

/// Reads and imports an ONNX file. Weights saved as external data
/// (`torch.onnx.export(..., external_data=True)`) are memory-mapped from
/// files inside the model's directory, never outside it.
pub fn load(path: &Path) -> Result<Graph, LoadError> {
    load_bytes(&crate::read_file(path)?, path)
}

/// Imports the bytes already read from the ONNX file `path` (as [`load`]
/// does, external data included), for a caller that also needs the bytes.
pub fn load_bytes(bytes: &[u8], path: &Path) -> Result<Graph, LoadError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut ext = ExternalData::new(dir).map_err(|m| LoadError::new(path, m))?;
    import_with(bytes, path, Some(&mut ext))
}

/// Imports ONNX bytes; `file` only names the source in errors. External
/// data is refused (there is no directory to read it from): use [`load`].
pub fn import(bytes: &[u8], file: &Path) -> Result<Graph, LoadError> {
    import_with(bytes, file, None)
}

fn import_with(bytes: &[u8], file: &Path, mut ext: Option<&mut ExternalData>) -> Result<Graph, LoadError> {
    let err = |msg: String| LoadError::new(file, msg);
    if bytes.is_empty() {
        return Err(err("empty file, not an ONNX model".into()));
    }
    let mut model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| err(format!("not a valid ONNX model (protobuf decoding failed: {e})")))?;
    if model.ir_version <= 0 || model.graph.is_none() {
        return Err(err("not an ONNX model: no IR version or no graph".into()));
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| err("the model imports no default-domain (ai.onnx) opset".into()))?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(err(format!("opset {opset} is not supported (fusec reads opsets {MIN_OPSET} to {MAX_OPSET})")));
    }
    let mut gp = model.graph.take().unwrap_or_default();
    subgraphs::inline_scans(&mut gp, opset);
    let name = if gp.name.is_empty() {
        file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    } else {
        gp.name.clone()
    };
    let mut g = Graph::new(name);
    g.metadata = model.metadata_props.iter().map(|p| (p.key.clone(), p.value.clone())).collect();
    let mut env: HashMap<String, ValueId> = HashMap::new();

    for mut tp in std::mem::take(&mut gp.initializer) {
        let tname = tp.name.clone();
        if tname.is_empty() {
            return Err(err("an initializer has no name".into()));
        }
        let t = tensor_from_proto(&mut tp, ext.as_deref_mut())
            .map_err(|m| LoadError::tensor(file, &tname, format!("initializer `{tname}`: {m}")))?;
        let id = g.add_weight(tname.clone(), t);
        env.insert(tname, id);
    }
    for vi in &gp.input {
        if env.contains_key(&vi.name) {
            continue; // older exporters list initializers as inputs too
        }
        let ty =
            value_type(vi).map_err(|m| LoadError::tensor(file, &vi.name, format!("graph input `{}`: {m}", vi.name)))?;
        let id = g.add_input(vi.name.clone(), ty);
        env.insert(vi.name.clone(), id);
    }

    // Values something reads: an optional output nothing reads may be left off.
    let read: std::collections::HashSet<&str> = gp
        .node
        .iter()
        .flat_map(|n| n.input.iter())
        .chain(gp.output.iter().map(|o| &o.name))
        .map(|s| s.as_str())
        .collect();
    let order = topo_sort(&gp.node, &env).map_err(|(node, m)| LoadError::node(file, &node, m))?;
    unsupported_ops(&gp.node).map_err(|(node, m)| LoadError::node(file, &node, m))?;
    for i in order {
        let node = &gp.node[i];
        let nname = node_name(node, i);
        let nerr = |m: String| LoadError::node(file, &nname, format!("node `{nname}` ({}): {m}", node.op_type));
        let (op, inputs) = ops::convert_node(node, opset, &g, &env).map_err(nerr)?;
        let n_out = match &op {
            Op::Split { split, .. } => split.len(),
            _ => 1,
        };
        let outputs: Vec<String> = node.output.iter().take(n_out).cloned().collect();
        if outputs.len() != n_out || outputs.iter().any(|o| o.is_empty()) {
            return Err(nerr(format!("expected {n_out} named outputs")));
        }
        if let Some(extra) = node.output.iter().skip(n_out).find(|o| !o.is_empty() && read.contains(o.as_str())) {
            return Err(nerr(format!("optional output `{extra}` is not supported")));
        }
        let id = g.add_node(nname.clone(), op, inputs, outputs).map_err(|e| LoadError::ir(file, &e))?;
        for (o, v) in node.output.iter().zip(g.node(id).outputs.clone()) {
            env.insert(o.clone(), v);
        }
    }

    let mut outs = vec![];
    for vi in &gp.output {
        let id = *env.get(&vi.name).ok_or_else(|| {
            LoadError::tensor(file, &vi.name, format!("graph output `{}` is not produced by any node", vi.name))
        })?;
        outs.push(id);
    }
    if outs.is_empty() {
        return Err(err("the graph has no outputs".into()));
    }
    g.set_outputs(outs);
    g.validate().map_err(|e| LoadError::ir(file, &e))?;
    Ok(g)
}

/// Every op the model uses that fusec cannot convert, in one error:
/// `unsupported ops: Erf (18 nodes), Squeeze (36); first: node `...``
/// (ops of other domains as `domain.Op`), naming the first such node.
fn unsupported_ops(nodes: &[NodeProto]) -> Result<(), (String, String)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut first = None;
    for (i, n) in nodes.iter().enumerate() {
        let default_domain = n.domain.is_empty() || n.domain == "ai.onnx";
        if default_domain && ops::is_supported(&n.op_type) {
            continue;
        }
        let op = if default_domain { n.op_type.clone() } else { format!("{}.{}", n.domain, n.op_type) };
        first.get_or_insert_with(|| (node_name(n, i), op.clone()));
        *counts.entry(op).or_default() += 1;
    }
    let Some((node, op)) = first else { return Ok(()) };
    let mut list: Vec<(String, usize)> = counts.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let list: Vec<String> =
        list.iter().map(|(op, n)| format!("{op} ({n} node{})", if *n == 1 { "" } else { "s" })).collect();
    let what = if list.len() == 1 { "unsupported op" } else { "unsupported ops" };
    Err((node.clone(), format!("{what}: {}; first: node `{node}` ({op})", list.join(", "))))
}

fn node_name(node: &NodeProto, i: usize) -> String {
    if node.name.is_empty() {
        format!("{}_{i}", node.op_type)
    } else {
        node.name.clone()
    }
}

/// Orders nodes so that producers come first (ONNX requires it, not every
/// file obeys), rejecting undefined inputs and cycles.
fn topo_sort(nodes: &[NodeProto], env: &HashMap<String, ValueId>) -> Result<Vec<usize>, (String, String)> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if env.contains_key(o) || producer.insert(o.as_str(), i).is_some() {
                return Err((
                    node_name(n, i),
                    format!("node `{}`: output `{o}` is defined more than once", node_name(n, i)),
                ));
            }
        }
    }
    let mut deps: Vec<Vec<usize>> = vec![vec![]; nodes.len()];
    let mut users: Vec<Vec<usize>> = vec![vec![]; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for inp in n.input.iter().filter(|s| !s.is_empty()) {
            if let Some(&p) = producer.get(inp.as_str()) {
                deps[i].push(p);
                users[p].push(i);
            } else if !env.contains_key(inp) {
                return Err((
                    node_name(n, i),
                    format!(
                        "node `{}` ({}) reads `{inp}`, which no node, input or initializer defines",
                        node_name(n, i),
                        n.op_type
                    ),
                ));
            }
        }
    }
    let mut indeg: Vec<usize> = deps.iter().map(|d| d.len()).collect();
    let mut ready: std::collections::BTreeSet<usize> = (0..nodes.len()).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() != nodes.len() {
        let i = (0..nodes.len()).find(|&i| indeg[i] > 0).unwrap_or(0);
        return Err((
            node_name(&nodes[i], i),
            format!("the graph has a cycle through node `{}`", node_name(&nodes[i], i)),
        ));
    }
    Ok(order)
}

fn value_type(vi: &ValueInfoProto) -> Result<TensorType, String> {
    let Some(type_proto::Value::TensorType(t)) = vi.type_.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err("is not a tensor".into());
    };
    let dtype = DType::from_onnx(t.elem_type).ok_or_else(|| format!("unsupported element type {}", t.elem_type))?;
    let shape = t.shape.as_ref().ok_or("has no shape: fusec needs static input shapes")?;
    let mut dims = vec![];
    for d in &shape.dim {
        match &d.value {
            Some(dimension::Value::DimValue(v)) if *v >= 0 => dims.push(*v as usize),
            Some(dimension::Value::DimParam(p)) => {
                return Err(format!("has dynamic dimension `{p}`: fusec needs static input shapes"))
            }
            _ => return Err("has an unknown dimension: fusec needs static input shapes".into()),
        }
    }
    let ty = TensorType::new(dtype, dims);
    ty.check_size()?;
    if ty.shape.contains(&0) {
        return Err(format!("is {ty}, with a zero-sized dimension: fusec needs non-empty inputs"));
    }
    Ok(ty)
}
