//! ONNX frontend: parses a `ModelProto` and builds a static [`Graph`].
//!
//! What it normalizes: attribute-or-input parameters (axes, pads, sizes,
//! scales, split, min/max, shape) across opsets 11 to 21 become the IR's
//! static attributes, read from initializers, Constant nodes or shape
//! arithmetic on static shapes; `auto_pad` becomes explicit pads.
//! What it does not do: fold constants, remove dead nodes or Identity;
//! those are passes.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use fuse_ir::*;
use onnx_protobuf::{
    tensor_proto::DataLocation, tensor_shape_proto::dimension, type_proto,
    AttributeProto, Message, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};

use crate::LoadError;

pub const MIN_OPSET: i64 = 11;
pub const MAX_OPSET: i64 = 21;

/// Reads and imports an ONNX file. Weights saved as external data
/// (`torch.onnx.export(..., external_data=True)`) are memory-mapped from
/// files inside the model's directory, never outside it.
pub fn load(path: &Path) -> Result<Graph, LoadError> {
    let bytes = std::fs::read(path).map_err(|e| LoadError::new(path, format!("cannot read: {e}")))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut ext = ExternalData::new(dir).map_err(|m| LoadError::new(path, m))?;
    import_with(&bytes, path, Some(&mut ext))
}

/// Imports ONNX bytes; `file` only names the source in errors. External
/// data is refused (there is no directory to read it from): use [`load`].
pub fn import(bytes: &[u8], file: &Path) -> Result<Graph, LoadError> {
    import_with(bytes, file, None)
}

/// Files external tensor data may be read from: regular files inside one
/// directory (after resolving symlinks), each mapped once.
pub struct ExternalData {
    dir: PathBuf,
    maps: HashMap<PathBuf, Arc<memmap2::Mmap>>,
}

impl ExternalData {
    pub fn new(dir: &Path) -> Result<ExternalData, String> {
        let dir = dir.canonicalize().map_err(|e| format!("cannot resolve the model's directory: {e}"))?;
        Ok(ExternalData { dir, maps: HashMap::new() })
    }

    /// The bytes of one external tensor: `location` (relative, inside the
    /// directory), `offset` and `length` from the tensor's `external_data`.
    fn read(&mut self, tp: &TensorProto, want: usize) -> Result<Bytes, String> {
        let mut location = None;
        let (mut offset, mut length) = (0usize, None);
        for kv in &tp.external_data {
            let num = || kv.value.parse::<usize>().map_err(|_| format!("external data {} `{}` is not a byte count", kv.key, kv.value));
            match kv.key.as_str() {
                "location" => location = Some(kv.value.clone()),
                "offset" => offset = num()?,
                "length" => length = Some(num()?),
                _ => {}
            }
        }
        let location = location.ok_or("external data without a location")?;
        let rel = Path::new(&location);
        if location.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(format!(
                "external data location `{location}` must be a relative path inside the model's directory (no `..`, no absolute path)"
            ));
        }
        let path = self
            .dir
            .join(rel)
            .canonicalize()
            .map_err(|e| format!("external data file `{location}`: {e}"))?;
        if !path.starts_with(&self.dir) {
            return Err(format!("external data file `{location}` resolves outside the model's directory"));
        }
        let map = match self.maps.get(&path) {
            Some(m) => m.clone(),
            None => {
                let file = std::fs::File::open(&path).map_err(|e| format!("external data file `{location}`: {e}"))?;
                if !file.metadata().map_err(|e| format!("external data file `{location}`: {e}"))?.is_file() {
                    return Err(format!("external data `{location}` is not a regular file"));
                }
                // SAFETY: read-only map of a file fusec does not write; the
                // tensors keep the Arc, so the map outlives them.
                let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("external data file `{location}`: {e}"))?);
                self.maps.insert(path.clone(), map.clone());
                map
            }
        };
        let length = length.unwrap_or(want);
        if length != want {
            return Err(format!("external data declares {length} bytes but the tensor needs {want}"));
        }
        match offset.checked_add(length) {
            Some(end) if end <= map.len() => Ok(Bytes::Mapped { map, start: offset, len: length }),
            _ => Err(format!(
                "external data `{location}` holds {} bytes, fewer than offset {offset} + length {length}",
                map.len()
            )),
        }
    }
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
        let t = tensor_from_proto(&mut tp, ext.as_deref_mut()).map_err(|m| err(format!("initializer `{tname}`: {m}")))?;
        let id = g.add_weight(tname.clone(), t);
        env.insert(tname, id);
    }
    for vi in &gp.input {
        if env.contains_key(&vi.name) {
            continue; // older exporters list initializers as inputs too
        }
        let ty = value_type(vi).map_err(|m| err(format!("graph input `{}`: {m}", vi.name)))?;
        let id = g.add_input(vi.name.clone(), ty);
        env.insert(vi.name.clone(), id);
    }

    let order = topo_sort(&gp.node, &env).map_err(err)?;
    for i in order {
        let node = &gp.node[i];
        let nname = node_name(node, i);
        let nerr = |m: String| err(format!("node `{nname}` ({}): {m}", node.op_type));
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(nerr(format!("unsupported op `{}` from domain `{}`", node.op_type, node.domain)));
        }
        let (op, inputs) = convert_node(node, opset, &g, &env).map_err(nerr)?;
        let n_out = match &op {
            Op::Split { split, .. } => split.len(),
            _ => 1,
        };
        let outputs: Vec<String> = node.output.iter().take(n_out).cloned().collect();
        if outputs.len() != n_out || outputs.iter().any(|o| o.is_empty()) {
            return Err(nerr(format!("expected {n_out} named outputs")));
        }
        if let Some(extra) = node.output.iter().skip(n_out).find(|o| !o.is_empty()) {
            return Err(nerr(format!("optional output `{extra}` is not supported")));
        }
        let id = g.add_node(nname.clone(), op, inputs, outputs).map_err(|e| err(e.to_string()))?;
        for (o, v) in node.output.iter().zip(g.node(id).outputs.clone()) {
            env.insert(o.clone(), v);
        }
    }

    let mut outs = vec![];
    for vi in &gp.output {
        let id = *env
            .get(&vi.name)
            .ok_or_else(|| err(format!("graph output `{}` is not produced by any node", vi.name)))?;
        outs.push(id);
    }
    if outs.is_empty() {
        return Err(err("the graph has no outputs".into()));
    }
    g.set_outputs(outs);
    g.validate().map_err(|e| err(e.to_string()))?;
    Ok(g)
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
fn topo_sort(nodes: &[NodeProto], env: &HashMap<String, ValueId>) -> Result<Vec<usize>, String> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if env.contains_key(o) || producer.insert(o.as_str(), i).is_some() {
                return Err(format!("node `{}`: output `{o}` is defined more than once", node_name(n, i)));
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
                return Err(format!(
                    "node `{}` ({}) reads `{inp}`, which no node, input or initializer defines",
                    node_name(n, i),
                    n.op_type
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
        return Err(format!("the graph has a cycle through node `{}`", node_name(&nodes[i], i)));
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
    Ok(ty)
}

/// Converts a `TensorProto`, moving its raw bytes out rather than copying
/// (external data is mapped through `ext`; without it, refused).
pub fn tensor_from_proto(tp: &mut TensorProto, ext: Option<&mut ExternalData>) -> Result<Tensor, String> {
    let dtype = DType::from_onnx(tp.data_type).ok_or_else(|| format!("unsupported data type {}", tp.data_type))?;
    let external = tp.data_location.enum_value() == Ok(DataLocation::EXTERNAL) || !tp.external_data.is_empty();
    let mut shape = vec![];
    for &d in &tp.dims {
        if d < 0 {
            return Err(format!("negative dimension {d}"));
        }
        shape.push(d as usize);
    }
    let ty = TensorType::new(dtype, shape);
    let n = ty.numel().ok_or_else(|| format!("{ty} has too many elements"))?;
    ty.check_size()?;
    if external {
        let ext = ext.ok_or("external data is read only for initializers of a model loaded from its file")?;
        let want = ty.byte_len().ok_or_else(|| format!("{ty} has too many elements"))?;
        return Tensor::new(ty, ext.read(tp, want)?);
    }
    let bytes: Vec<u8> = if !tp.raw_data.is_empty() {
        std::mem::take(&mut tp.raw_data)
    } else {
        let (got, b): (usize, Vec<u8>) = match dtype {
            DType::F32 => (tp.float_data.len(), tp.float_data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            DType::F64 => (tp.double_data.len(), tp.double_data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            DType::I64 => (tp.int64_data.len(), tp.int64_data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            DType::I32 => (tp.int32_data.len(), tp.int32_data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            DType::F16 => (tp.int32_data.len(), tp.int32_data.iter().flat_map(|&x| (x as u16).to_le_bytes()).collect()),
            DType::I8 | DType::U8 | DType::Bool => (tp.int32_data.len(), tp.int32_data.iter().map(|&x| x as u8).collect()),
        };
        if got != n {
            return Err(format!("{ty} needs {n} values but the tensor holds {got}"));
        }
        b
    };
    Tensor::new(ty, bytes.into())
}

/// Attribute lookup for one node.
struct Attrs<'a>(&'a NodeProto);

impl<'a> Attrs<'a> {
    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map(|a| a.i).unwrap_or(default)
    }
    fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map(|a| a.f).unwrap_or(default)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    fn string(&self, name: &str, default: &str) -> String {
        self.get(name).map(|a| String::from_utf8_lossy(&a.s).into_owned()).unwrap_or_else(|| default.into())
    }
    fn usizes(&self, name: &str) -> Result<Option<Vec<usize>>, String> {
        self.ints(name)
            .map(|v| {
                v.iter()
                    .map(|&x| usize::try_from(x).map_err(|_| format!("attribute `{name}` has negative value {x}")))
                    .collect()
            })
            .transpose()
    }
}

struct Ctx<'a> {
    node: &'a NodeProto,
    g: &'a Graph,
    env: &'a HashMap<String, ValueId>,
}

impl Ctx<'_> {
    /// Input `i`, `None` when absent or empty.
    fn opt(&self, i: usize) -> Option<ValueId> {
        self.node.input.get(i).filter(|s| !s.is_empty()).and_then(|s| self.env.get(s).copied())
    }
    fn req(&self, i: usize) -> Result<ValueId, String> {
        self.opt(i).ok_or_else(|| format!("required input {i} is missing"))
    }
    fn ty(&self, i: usize) -> Result<&TensorType, String> {
        Ok(&self.g.value(self.req(i)?).ty)
    }
    /// Integer contents of input `i`, which must be known statically.
    fn ints(&self, i: usize, what: &str) -> Result<Option<Vec<i64>>, String> {
        let Some(v) = self.opt(i) else { return Ok(None) };
        let val = self.g.value(v);
        if let Some(k) = &val.known {
            return Ok(Some(k.clone()));
        }
        if let Some(t) = const_tensor(self.g, v) {
            if let Some(k) = t.to_i64_vec() {
                return Ok(Some(k));
            }
        }
        Err(format!("{what} (`{}`) must be a constant: fusec builds static graphs", val.name))
    }
    fn floats(&self, i: usize, what: &str) -> Result<Option<Vec<f32>>, String> {
        let Some(v) = self.opt(i) else { return Ok(None) };
        match const_tensor(self.g, v).and_then(|t| t.to_f32_vec()) {
            Some(f) => Ok(Some(f)),
            None => Err(format!("{what} (`{}`) must be a float constant", self.g.value(v).name)),
        }
    }
    fn scalar(&self, i: usize, what: &str) -> Result<Option<f32>, String> {
        match self.floats(i, what)? {
            None => Ok(None),
            Some(v) if v.len() == 1 => Ok(Some(v[0])),
            Some(v) => Err(format!("{what} must be a scalar, got {} values", v.len())),
        }
    }
}

/// The constant tensor behind a value: a weight or a Constant node's output.
pub fn const_tensor(g: &Graph, v: ValueId) -> Option<Tensor> {
    match &g.value(v).def {
        ValueDef::Weight(t) => Some(t.clone()),
        ValueDef::Node { node, .. } => match &g.node(*node).op {
            Op::Constant(t) => Some(t.clone()),
            _ => None,
        },
        ValueDef::Input => None,
    }
}

/// Explicit pads for `auto_pad`, from the input's spatial shape.
fn resolve_pads(
    a: &Attrs,
    spatial: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
) -> Result<Vec<usize>, String> {
    let n = spatial.len();
    let auto = a.string("auto_pad", "NOTSET");
    match auto.as_str() {
        "NOTSET" => Ok(a.usizes("pads")?.unwrap_or_else(|| vec![0; 2 * n])),
        "VALID" => Ok(vec![0; 2 * n]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut pads = vec![0; 2 * n];
            for i in 0..n {
                let s = strides[i].max(1);
                let out = spatial[i].div_ceil(s);
                let span = dilations[i] * (kernel[i].max(1) - 1) + 1;
                let total = ((out - 1) * s + span).saturating_sub(spatial[i]);
                let (small, big) = (total / 2, total - total / 2);
                (pads[i], pads[n + i]) = if auto == "SAME_UPPER" { (small, big) } else { (big, small) };
            }
            Ok(pads)
        }
        other => Err(format!("unknown auto_pad `{other}`")),
    }
}

fn convert_node(
    node: &NodeProto,
    opset: i64,
    g: &Graph,
    env: &HashMap<String, ValueId>,
) -> Result<(Op, Vec<Option<ValueId>>), String> {
    let a = Attrs(node);
    let c = Ctx { node, g, env };
    let x = || c.req(0);
    let unary = |op: Op| -> Result<(Op, Vec<Option<ValueId>>), String> { Ok((op, vec![Some(c.req(0)?)])) };
    let binary = |op: BinaryOp| -> Result<(Op, Vec<Option<ValueId>>), String> {
        Ok((Op::Binary(op), vec![Some(c.req(0)?), Some(c.req(1)?)]))
    };
    Ok(match node.op_type.as_str() {
        "Conv" => {
            let xs = c.ty(0)?.shape.clone();
            let ws = c.ty(1)?.shape.clone();
            if xs.len() < 3 || ws.len() != xs.len() {
                return Err(format!("input {xs:?} and weight {ws:?} are not N,C,spatial.. and M,C,k.."));
            }
            let sp = xs.len() - 2;
            let kernel = a.usizes("kernel_shape")?.unwrap_or_else(|| ws[2..].to_vec());
            let strides = a.usizes("strides")?.unwrap_or_else(|| vec![1; sp]);
            let dilations = a.usizes("dilations")?.unwrap_or_else(|| vec![1; sp]);
            if kernel.len() != sp || strides.len() != sp || dilations.len() != sp {
                return Err("kernel_shape, strides or dilations do not match the spatial rank".into());
            }
            let pads = resolve_pads(&a, &xs[2..], &kernel, &strides, &dilations)?;
            let group = usize::try_from(a.int("group", 1)).map_err(|_| "negative group".to_string())?;
            let conv = Conv { kernel_shape: kernel, strides, pads, dilations, group };
            (Op::Conv(conv), vec![Some(x()?), Some(c.req(1)?), c.opt(2)])
        }
        "MaxPool" => {
            let xs = c.ty(0)?.shape.clone();
            if xs.len() < 3 {
                return Err(format!("input {xs:?} is not N,C,spatial.."));
            }
            let sp = xs.len() - 2;
            let kernel = a.usizes("kernel_shape")?.ok_or("kernel_shape is required")?;
            let strides = a.usizes("strides")?.unwrap_or_else(|| vec![1; sp]);
            let dilations = a.usizes("dilations")?.unwrap_or_else(|| vec![1; sp]);
            if kernel.len() != sp || strides.len() != sp || dilations.len() != sp {
                return Err("kernel_shape, strides or dilations do not match the spatial rank".into());
            }
            let pads = resolve_pads(&a, &xs[2..], &kernel, &strides, &dilations)?;
            let p = MaxPool { kernel_shape: kernel, strides, pads, dilations, ceil_mode: a.int("ceil_mode", 0) != 0 };
            (Op::MaxPool(p), vec![Some(x()?)])
        }
        "BatchNormalization" => {
            if a.int("training_mode", 0) != 0 {
                return Err("training_mode=1 is not supported (inference graphs only)".into());
            }
            let ins = (0..5).map(|i| c.req(i).map(Some)).collect::<Result<Vec<_>, _>>()?;
            (Op::BatchNorm(BatchNorm { epsilon: a.float("epsilon", 1e-5) }), ins)
        }
        "Gemm" => {
            let gemm = Gemm {
                alpha: a.float("alpha", 1.0),
                beta: a.float("beta", 1.0),
                trans_a: a.int("transA", 0) != 0,
                trans_b: a.int("transB", 0) != 0,
            };
            (Op::Gemm(gemm), vec![Some(x()?), Some(c.req(1)?), c.opt(2)])
        }
        "MatMul" => (Op::MatMul, vec![Some(x()?), Some(c.req(1)?)]),
        "Add" => binary(BinaryOp::Add)?,
        "Sub" => binary(BinaryOp::Sub)?,
        "Mul" => binary(BinaryOp::Mul)?,
        "Div" => binary(BinaryOp::Div)?,
        "Sigmoid" => unary(Op::Unary(UnaryOp::Sigmoid))?,
        "Relu" => unary(Op::Unary(UnaryOp::Relu))?,
        "Tanh" => unary(Op::Unary(UnaryOp::Tanh))?,
        "Identity" => unary(Op::Unary(UnaryOp::Identity))?,
        "HardSwish" => unary(Op::Unary(UnaryOp::HardSwish))?,
        "HardSigmoid" => unary(Op::HardSigmoid { alpha: a.float("alpha", 0.2), beta: a.float("beta", 0.5) })?,
        "GlobalAveragePool" => unary(Op::GlobalAveragePool)?,
        "Clip" => {
            let op = Op::Clip { min: c.scalar(1, "min")?, max: c.scalar(2, "max")? };
            (op, vec![Some(x()?)])
        }
        "ReduceSum" | "ReduceMean" => {
            let kind = if node.op_type == "ReduceSum" { ReduceOp::Sum } else { ReduceOp::Mean };
            let axes_as_input = if kind == ReduceOp::Sum { opset >= 13 } else { opset >= 18 };
            let axes = if axes_as_input { c.ints(1, "axes")? } else { a.ints("axes") };
            let axes = axes.filter(|v| !v.is_empty());
            if axes.is_none() && a.int("noop_with_empty_axes", 0) != 0 {
                return unary(Op::Unary(UnaryOp::Identity));
            }
            (Op::Reduce { op: kind, axes, keepdims: a.int("keepdims", 1) != 0 }, vec![Some(x()?)])
        }
        "Resize" => {
            let xs = c.ty(0)?.shape.clone();
            let mode = match a.string("mode", "nearest").as_str() {
                "nearest" => ResizeMode::Nearest,
                "linear" => ResizeMode::Linear,
                "cubic" => ResizeMode::Cubic,
                m => return Err(format!("unknown mode `{m}`")),
            };
            let coord = a.string("coordinate_transformation_mode", "half_pixel");
            if coord == "tf_crop_and_resize" {
                return Err("coordinate_transformation_mode tf_crop_and_resize is not supported".into());
            }
            if a.int("antialias", 0) != 0 || a.get("axes").is_some() {
                return Err("antialias and axes are not supported".into());
            }
            if a.string("keep_aspect_ratio_policy", "stretch") != "stretch" {
                return Err("keep_aspect_ratio_policy other than stretch is not supported".into());
            }
            let scales = c.floats(2, "scales")?.filter(|s| !s.is_empty());
            let sizes = c.ints(3, "sizes")?.filter(|s| !s.is_empty());
            let sizes: Vec<usize> = match (&sizes, &scales) {
                (Some(sz), _) => sz
                    .iter()
                    .map(|&d| usize::try_from(d).map_err(|_| format!("negative size {d}")))
                    .collect::<Result<_, _>>()?,
                (None, Some(sc)) if sc.len() == xs.len() => {
                    xs.iter().zip(sc).map(|(&d, &s)| (d as f32 * s).floor().max(0.0) as usize).collect()
                }
                _ => return Err("needs constant scales or sizes matching the input rank".into()),
            };
            let r = Resize {
                mode,
                coordinate_transformation_mode: coord,
                nearest_mode: a.string("nearest_mode", "round_prefer_floor"),
                cubic_coeff_a: a.float("cubic_coeff_a", -0.75),
                exclude_outside: a.int("exclude_outside", 0) != 0,
                extrapolation_value: a.float("extrapolation_value", 0.0),
                scales: if sizes_given(&c) { None } else { scales },
                sizes,
            };
            (Op::Resize(r), vec![Some(x()?)])
        }
        "Concat" => {
            let ins = (0..node.input.len()).map(|i| c.req(i).map(Some)).collect::<Result<Vec<_>, _>>()?;
            (Op::Concat { axis: a.get("axis").ok_or("axis is required")?.i }, ins)
        }
        "Gather" => (Op::Gather { axis: a.int("axis", 0) }, vec![Some(x()?), Some(c.req(1)?)]),
        "Unsqueeze" => {
            let axes = if opset >= 13 { c.ints(1, "axes")? } else { a.ints("axes") };
            (Op::Unsqueeze { axes: axes.ok_or("axes are required")? }, vec![Some(x()?)])
        }
        "Slice" => {
            let starts = c.ints(1, "starts")?.ok_or("starts are required")?;
            let ends = c.ints(2, "ends")?.ok_or("ends are required")?;
            let n = starts.len();
            let axes = c.ints(3, "axes")?.unwrap_or_else(|| (0..n as i64).collect());
            let steps = c.ints(4, "steps")?.unwrap_or_else(|| vec![1; n]);
            (Op::Slice(Slice { starts, ends, axes, steps }), vec![Some(x()?)])
        }
        "Shape" => {
            let end = a.get("end").map(|e| e.i);
            (Op::Shape { start: a.int("start", 0), end }, vec![Some(x()?)])
        }
        "Constant" => (Op::Constant(constant_value(&a)?), vec![]),
        "Reshape" => {
            let xt = c.ty(0)?.clone();
            let spec = c.ints(1, "shape")?.ok_or("shape is required")?;
            let shape = resolve_reshape(&xt.shape, &spec, a.int("allowzero", 0) != 0)?;
            (Op::Reshape { shape }, vec![Some(x()?)])
        }
        "Transpose" => {
            let r = c.ty(0)?.rank();
            let perm = a.usizes("perm")?.unwrap_or_else(|| (0..r).rev().collect());
            (Op::Transpose { perm }, vec![Some(x()?)])
        }
        "Flatten" => unary(Op::Flatten { axis: a.int("axis", 1) })?,
        "Softmax" => {
            let r = c.ty(0)?.rank() as i64;
            let axis = a.int("axis", if opset >= 13 { -1 } else { 1 });
            if opset < 13 && (axis + r) % r != r - 1 {
                return Err(format!("opset {opset} Softmax over axis {axis} (not the last) is not supported"));
            }
            unary(Op::Softmax { axis })?
        }
        "Pad" => {
            let r = c.ty(0)?.rank();
            let mode = match a.string("mode", "constant").as_str() {
                "constant" => PadMode::Constant,
                "reflect" => PadMode::Reflect,
                "edge" => PadMode::Edge,
                m => return Err(format!("pad mode `{m}` is not supported")),
            };
            let given = c.ints(1, "pads")?.ok_or("pads are required")?;
            let value = c.scalar(2, "constant_value").or_else(|_| {
                c.ints(2, "constant_value").map(|v| v.and_then(|v| v.first().map(|&x| x as f32)))
            })?;
            let pads = match c.ints(3, "axes")? {
                None => given,
                Some(axes) => {
                    if given.len() != 2 * axes.len() {
                        return Err("pads do not match axes".into());
                    }
                    let mut full = vec![0; 2 * r];
                    for (k, &ax) in axes.iter().enumerate() {
                        let ax = fuse_ir::shape::norm_axis(ax, r)?;
                        full[ax] = given[k];
                        full[r + ax] = given[axes.len() + k];
                    }
                    full
                }
            };
            (Op::Pad(Pad { mode, pads, value: value.unwrap_or(0.0) }), vec![Some(x()?)])
        }
        "Split" => {
            let xt = c.ty(0)?.clone();
            let axis = a.int("axis", 0);
            let ax = fuse_ir::shape::norm_axis(axis, xt.rank())?;
            let given = if opset >= 13 { c.ints(1, "split")? } else { a.ints("split") };
            let n_out = a.get("num_outputs").map(|n| n.i as usize).unwrap_or(node.output.len());
            let split: Vec<usize> = match given {
                Some(s) => s
                    .iter()
                    .map(|&d| usize::try_from(d).map_err(|_| format!("negative split {d}")))
                    .collect::<Result<_, _>>()?,
                None => {
                    if n_out == 0 {
                        return Err("has no outputs".into());
                    }
                    let d = xt.shape[ax];
                    let chunk = d.div_ceil(n_out);
                    (0..n_out).map(|i| chunk.min(d.saturating_sub(i * chunk))).collect()
                }
            };
            (Op::Split { axis, split }, vec![Some(x()?)])
        }
        "LayerNormalization" => {
            let op = Op::LayerNorm { axis: a.int("axis", -1), epsilon: a.float("epsilon", 1e-5) };
            (op, vec![Some(x()?), Some(c.req(1)?), c.opt(2)])
        }
        "Cast" => {
            let to = a.int("to", 0) as i32;
            let to = DType::from_onnx(to).ok_or_else(|| format!("cast to unsupported type {to}"))?;
            unary(Op::Cast { to })?
        }
        other => return Err(format!("unsupported op `{other}`")),
    })
}

fn sizes_given(c: &Ctx) -> bool {
    c.opt(3).is_some_and(|v| c.g.value(v).ty.numel() != Some(0))
}

fn constant_value(a: &Attrs) -> Result<Tensor, String> {
    if let Some(t) = a.get("value") {
        let mut tp = t.t.as_ref().cloned().ok_or("value attribute holds no tensor")?;
        return tensor_from_proto(&mut tp, None);
    }
    if let Some(f) = a.get("value_float") {
        return Tensor::from_f32(vec![], &[f.f]);
    }
    if let Some(f) = a.get("value_floats") {
        return Tensor::from_f32(vec![f.floats.len()], &f.floats);
    }
    if let Some(i) = a.get("value_int") {
        return Tensor::from_i64(vec![], &[i.i]);
    }
    if let Some(i) = a.get("value_ints") {
        return Tensor::from_i64(vec![i.ints.len()], &i.ints);
    }
    let kinds: Vec<String> = a.0.attribute.iter().map(|x| x.name.clone()).collect();
    Err(format!("unsupported Constant attributes {kinds:?}"))
}

/// Resolves a Reshape spec (`0` copies, `-1` infers) to a static shape.
pub fn resolve_reshape(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let numel: usize = input.iter().product();
    let mut out = vec![];
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or("shape copies a dimension the input lacks")?),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(format!("invalid reshape spec {spec:?}")),
        }
    }
    if let Some(i) = infer {
        let rest: usize = out.iter().product();
        if rest == 0 || !numel.is_multiple_of(rest) {
            return Err(format!("cannot reshape {input:?} to {spec:?}"));
        }
        out[i] = numel / rest;
    }
    Ok(out)
}
