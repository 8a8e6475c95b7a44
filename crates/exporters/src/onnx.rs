//! ONNX exporter: writes a static graph as an opset-17 model, or opset 20
//! when the graph holds an op only that opset has (`Gelu`).
//!
//! Static parameters the IR keeps as attributes (axes, pads, sizes, split,
//! shape, min/max) become small initializers named after their node where
//! opset 17 wants inputs. Names are made unique; graph inputs and outputs
//! keep theirs; node names have `.` replaced by `/` (see `to_model`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use fuse_ir::*;
use onnx_protobuf::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto,
};

pub use crate::onnx_proto::{float_attr, int_attr, ints_attr, string_attr};
use crate::onnx_proto::{tensor_header, tensor_proto, value_info, Names};
use crate::ExportError;

pub const OPSET: i64 = 17;
/// IR version 8 pairs with opset 17; ONNX Runtime 1.32 reads up to 11.
pub const IR_VERSION: i64 = 8;
/// The opset (with its IR version 9) for graphs with ops opset 17 lacks.
pub const OPSET_GELU: i64 = 20;

/// The opset and IR version a graph is written in: 17 unless it needs 20.
fn opset_of(g: &Graph) -> (i64, i64) {
    if g.node_ids().iter().any(|n| g.node(*n).op == Op::Unary(UnaryOp::Gelu)) {
        (OPSET_GELU, 9)
    } else {
        (OPSET, IR_VERSION)
    }
}

/// Serializes the graph to ONNX bytes.
pub fn export(g: &Graph) -> Result<Vec<u8>, ExportError> {
    let mut out = vec![];
    write_to(g, &mut out).map_err(|e| ExportError::Unsupported(format!("encoding failed: {e}")))?;
    Ok(out)
}

/// Writes the graph as ONNX to `path`, atomically, streaming each weight's
/// bytes straight from the graph: memory stays near the graph's own size
/// (no copy of the weights into a protobuf message and then into a buffer).
/// The weights go beside the model ([`WeightsAt::Auto`]) only when the
/// model would pass protobuf's 2 GiB.
pub fn write_file(g: &Graph, path: &Path) -> Result<Written, ExportError> {
    write_file_at(g, path, WeightsAt::Auto)
}

/// Bytes one protobuf message may have: no ONNX reader parses a model file
/// past it, so a bigger model keeps its weights in a file beside it.
pub const PROTOBUF_LIMIT: u64 = i32::MAX as u64;
/// Weights of fewer bytes stay in the model file (torch.onnx's threshold).
const EXTERNAL_MIN: u64 = 1024;
/// Each weight in the file beside starts at a multiple of this (a page,
/// so a runtime can map it).
const EXTERNAL_ALIGN: u64 = 4096;

/// `g` as ONNX bytes when it fits one protobuf message ([`PROTOBUF_LIMIT`]),
/// or `None` when it needs its weights beside it ([`write_file_at`]): the
/// same measure [`write_file`] goes by.
pub fn export_inline(g: &Graph) -> Result<Option<Vec<u8>>, ExportError> {
    let (model, pending) = build(g)?;
    if inline_size(&model, &pending) > PROTOBUF_LIMIT {
        return Ok(None);
    }
    let mut out = vec![];
    stream(model, &pending, &mut out, None).map_err(|e| ExportError::Unsupported(format!("encoding failed: {e}")))?;
    Ok(Some(out))
}

/// Bytes of the model with every weight inside (each weight's bytes and
/// at most 16 bytes of its framing past what `model` holds).
fn inline_size(model: &ModelProto, pending: &[Option<&Tensor>]) -> u64 {
    model.compute_size() + pending.iter().flatten().map(|t| t.storage().len() as u64 + 16).sum::<u64>()
}

/// Where [`write_file_at`] puts the weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightsAt {
    /// In the model file, unless the model would then pass
    /// [`PROTOBUF_LIMIT`]: then beside it.
    #[default]
    Auto,
    /// In `MODEL.data` beside the model (ONNX external data: each weight
    /// of 1 KiB or more at its `offset` and `length`, page-aligned).
    Beside,
}

/// What [`write_file_at`] wrote.
#[derive(Clone, Debug)]
pub struct Written {
    /// Bytes of the model file.
    pub bytes: u64,
    /// The weights' file and its bytes, when they went beside the model.
    pub data: Option<(PathBuf, u64)>,
}

/// The file beside `model` that holds its weights: `MODEL.data`
/// (`super.onnx.data`).
pub fn data_file_of(model: &Path) -> PathBuf {
    let mut name = model.file_name().unwrap_or_default().to_os_string();
    name.push(".data");
    model.with_file_name(name)
}

/// [`write_file`] with the weights where `at` says; both files atomically
/// (the weights' file renamed into place first).
pub fn write_file_at(g: &Graph, path: &Path, at: WeightsAt) -> Result<Written, ExportError> {
    let (model, pending) = build(g)?;
    if at == WeightsAt::Auto && inline_size(&model, &pending) <= PROTOBUF_LIMIT {
        let stale = weights_beside(path);
        let bytes = crate::write_atomic_with(path, |w| stream(model, &pending, w, None))?;
        // The weights' file of the model this one replaced goes with it.
        if let Some(old) = stale {
            let _ = std::fs::remove_file(old);
        }
        return Ok(Written { bytes, data: None });
    }
    let data = data_file_of(path);
    // The model names the file beside it by a UTF-8 string.
    let location = data.file_name().and_then(|n| n.to_str()).map(str::to_string).ok_or_else(|| ExportError::Io {
        path: path.to_path_buf(),
        msg: "the weights go beside this model (past 2 GiB), which names them by a UTF-8 file name: name the output in UTF-8".into(),
    })?;
    let mut data_bytes = 0;
    let bytes = crate::write_atomic_pair(path, &data, |w, d| {
        let mut ext = External { w: d, location, offset: 0 };
        let n = stream(model, &pending, w, Some(&mut ext))?;
        data_bytes = ext.offset;
        Ok(n)
    })?;
    Ok(Written { bytes, data: Some((data, data_bytes)) })
}

/// The weights' file of the model now at `path`, when it keeps its
/// weights beside it in [`data_file_of`]`(path)` (as fusec writes one past
/// 2 GiB): read from the model, which is small then.
fn weights_beside(path: &Path) -> Option<PathBuf> {
    let data = data_file_of(path);
    if !data.is_file() || std::fs::metadata(path).ok()?.len() > 64 << 20 {
        return None;
    }
    let old = ModelProto::parse_from_bytes(&std::fs::read(path).ok()?).ok()?;
    let name = data.file_name()?.to_str()?;
    let names_it = |tp: &TensorProto| tp.external_data.iter().any(|e| e.key == "location" && e.value == name);
    old.graph.initializer.iter().any(names_it).then_some(data)
}

/// The weights' file being written: where the next weight goes.
struct External<'a> {
    w: &'a mut dyn std::io::Write,
    location: String,
    offset: u64,
}

impl External<'_> {
    /// Marks `tp` as stored at the next aligned offset for `len` bytes and
    /// pads the file to it; the caller then writes the bytes.
    fn place(&mut self, tp: &mut TensorProto, len: u64) -> std::io::Result<()> {
        let start = self.offset.div_ceil(EXTERNAL_ALIGN) * EXTERNAL_ALIGN;
        self.w.write_all(&vec![0u8; (start - self.offset) as usize])?;
        self.offset = start + len;
        tp.data_location = onnx_protobuf::tensor_proto::DataLocation::EXTERNAL.into();
        let entry = |k: &str, v: String| StringStringEntryProto { key: k.into(), value: v, ..Default::default() };
        tp.external_data = vec![
            entry("location", self.location.clone()),
            entry("offset", start.to_string()),
            entry("length", len.to_string()),
        ];
        Ok(())
    }

    /// Moves the bytes of every weight of 1 KiB or more in `gp`'s
    /// subgraphs (member subgraphs carry theirs inside) to the file.
    fn take_subgraph_weights(&mut self, gp: &mut GraphProto) -> std::io::Result<()> {
        for node in &mut gp.node {
            for a in &mut node.attribute {
                let bodies = a.g.as_mut().into_iter().chain(a.graphs.iter_mut());
                for body in bodies {
                    for tp in &mut body.initializer {
                        let len = tp.raw_data.len() as u64;
                        if len >= EXTERNAL_MIN {
                            self.place(tp, len)?;
                            self.w.write_all(&std::mem::take(&mut tp.raw_data))?;
                        }
                    }
                    self.take_subgraph_weights(body)?;
                }
            }
        }
        Ok(())
    }
}

/// Protobuf wire format: a varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes of `v` as a varint: 7 bits each.
fn varint_len(v: u64) -> u64 {
    (64 - u64::from(v.max(1).leading_zeros())).div_ceil(7)
}

/// Writes the model: ModelProto's other fields, then the `graph` field
/// (7) with its nodes and inputs, then each initializer (GraphProto field
/// 5) whose `raw_data` (TensorProto field 9) is copied from the tensor as
/// it is written. Lengths are computed up front, so the bytes are exactly
/// those of a normal protobuf encoding with fields in another order, which
/// the format allows.
pub fn write_to(g: &Graph, w: &mut dyn std::io::Write) -> std::io::Result<u64> {
    let (model, pending) = build(g).map_err(|e| std::io::Error::other(e.to_string()))?;
    stream(model, &pending, w, None)
}

/// Writes the model to `w`; with `ext`, each weight of 1 KiB or more to
/// the weights' file instead, the model saying where.
fn stream(
    mut model: ModelProto,
    pending: &[Option<&Tensor>],
    w: &mut dyn std::io::Write,
    mut ext: Option<&mut External>,
) -> std::io::Result<u64> {
    let enc = |e: protobuf::Error| std::io::Error::other(format!("protobuf encoding failed: {e}"));
    let mut gp = model.graph.take().unwrap_or_default();
    if let Some(x) = ext.as_deref_mut() {
        x.take_subgraph_weights(&mut gp)?;
    }
    let mut inits = std::mem::take(&mut gp.initializer);
    let head = model.write_to_bytes().map_err(enc)?;
    let body = gp.write_to_bytes().map_err(enc)?;
    let mut parts: Vec<(Vec<u8>, Option<&Tensor>)> = vec![];
    let mut graph_len = body.len() as u64;
    for (tp, t) in inits.iter_mut().zip(pending) {
        let mut b = vec![0x2a]; // field 5, length-delimited
        let mut t = *t;
        if let (Some(x), Some(tensor)) = (ext.as_deref_mut(), t) {
            let len = tensor.storage().len() as u64;
            if len >= EXTERNAL_MIN {
                x.place(tp, len)?;
                for piece in tensor.storage().pieces() {
                    x.w.write_all(piece)?;
                }
                t = None;
            }
        }
        let tp_bytes = tp.write_to_bytes().map_err(enc)?;
        let raw = t.map(|t| t.storage().len() as u64);
        let tp_len = tp_bytes.len() as u64 + raw.map(|n| 1 + varint_len(n) + n).unwrap_or(0);
        varint(tp_len, &mut b);
        b.extend_from_slice(&tp_bytes);
        if let Some(n) = raw {
            b.push(0x4a); // field 9, length-delimited
            varint(n, &mut b);
        }
        graph_len += b.len() as u64 + raw.unwrap_or(0);
        parts.push((b, t));
    }
    let mut written = 0u64;
    let mut put = |w: &mut dyn std::io::Write, b: &[u8]| -> std::io::Result<()> {
        written += b.len() as u64;
        w.write_all(b)
    };
    put(w, &head)?;
    let mut gh = vec![0x3a]; // field 7, length-delimited
    varint(graph_len, &mut gh);
    put(w, &gh)?;
    put(w, &body)?;
    for (b, t) in parts {
        put(w, &b)?;
        if let Some(t) = t {
            // Stacked weights are written piece by piece, never joined.
            for piece in t.storage().pieces() {
                put(w, piece)?;
            }
        }
    }
    Ok(written)
}

/// The model as a protobuf message, weights included.
pub fn to_model(g: &Graph) -> Result<ModelProto, ExportError> {
    let (mut model, pending) = build(g)?;
    if let Some(gp) = model.graph.as_mut() {
        for (tp, t) in gp.initializer.iter_mut().zip(pending) {
            if let Some(t) = t {
                tp.raw_data = t.bytes().to_vec();
            }
        }
    }
    Ok(model)
}

/// The model with the graph's weights left out of their initializers: the
/// second vector, parallel to the initializers, holds the tensor whose
/// bytes belong in each one's `raw_data` (`None` for the exporter's own
/// small parameters, which are complete).
fn build(g: &Graph) -> Result<(ModelProto, Vec<Option<&Tensor>>), ExportError> {
    g.validate().map_err(|e| ExportError::Unsupported(format!("invalid graph: {e}")))?;
    let order = g.topo_order().map_err(|e| ExportError::Unsupported(e.to_string()))?;
    let (opset, ir_version) = opset_of(g);
    let mut names = Names::default();
    let mut gp = GraphProto { name: g.name.clone(), ..Default::default() };
    // Inputs and outputs claim their names first so they stay exact.
    for &i in g.inputs() {
        let n = names.of(g, i);
        gp.input.push(value_info(&n, &g.value(i).ty));
    }
    for &o in g.outputs() {
        if !matches!(g.value(o).def, ValueDef::Input) {
            names.of(g, o);
        }
    }
    let mut emitted_weights = HashSet::new();
    let mut pending: Vec<(usize, &Tensor)> = vec![];
    // Per node written, its `Node::subgraph`; the type of each value a
    // node writes (for a subgraph's outputs).
    let mut blocks: Vec<Option<u32>> = vec![];
    let mut types: HashMap<String, TensorType> = HashMap::new();
    for nid in order {
        let node = g.node(nid);
        let mut inputs = vec![];
        for v in &node.inputs {
            match v {
                None => inputs.push(String::new()),
                Some(v) => {
                    let n = names.of(g, *v);
                    if let ValueDef::Weight(t) = &g.value(*v).def {
                        if emitted_weights.insert(*v) {
                            gp.initializer.push(tensor_header(&n, t));
                            pending.push((gp.initializer.len() - 1, t));
                        }
                    }
                    inputs.push(n);
                }
            }
        }
        let outputs: Vec<String> = node.outputs.iter().map(|o| names.of(g, *o)).collect();
        // tract expands some ops into nodes named `{node}.{suffix}`; with no
        // `.` in our node names, those can never collide with a node of ours.
        let node_name = names.fresh(&node.name.replace('.', "/"));
        let mut np = NodeProto { name: node_name.clone(), output: outputs, ..Default::default() };
        for (o, n) in node.outputs.iter().zip(&np.output) {
            types.insert(n.clone(), g.value(*o).ty.clone());
        }
        lower(g, node, &mut np, inputs, &mut gp, &mut names, opset)?;
        gp.node.push(np);
        blocks.push(node.subgraph);
    }
    for &o in g.outputs() {
        let n = names.of(g, o);
        if let ValueDef::Weight(t) = &g.value(o).def {
            if emitted_weights.insert(o) {
                gp.initializer.push(tensor_header(&n, t));
                pending.push((gp.initializer.len() - 1, t));
            }
        }
        gp.output.push(value_info(&n, &g.value(o).ty));
    }
    let mut model = ModelProto {
        ir_version,
        producer_name: "fusec".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    model.opset_import.push(OperatorSetIdProto { domain: String::new(), version: opset, ..Default::default() });
    for (k, v) in &g.metadata {
        model.metadata_props.push(StringStringEntryProto { key: k.clone(), value: v.clone(), ..Default::default() });
    }
    let mut weights: HashMap<String, &Tensor> =
        pending.into_iter().map(|(i, t)| (gp.initializer[i].name.clone(), t)).collect();
    crate::onnx_subgraphs::wrap(&mut gp, &blocks, &types, &mut weights, &mut names);
    let by_init: Vec<Option<&Tensor>> = gp.initializer.iter().map(|t| weights.get(&t.name).copied()).collect();
    model.graph = Some(gp).into();
    Ok((model, by_init))
}

fn us(v: &[usize]) -> impl Iterator<Item = i64> + '_ {
    v.iter().map(|&x| x as i64)
}

/// Adds an initializer for a static parameter and returns its name.
fn param(gp: &mut GraphProto, names: &mut Names, node: &str, what: &str, t: Tensor) -> String {
    let n = names.fresh(&format!("{node}::{what}"));
    gp.initializer.push(tensor_proto(&n, &t));
    n
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_i64(vec![v.len()], v).expect("length matches")
}

/// A scalar of the given float dtype (Clip bounds, Pad value must match x).
fn scalar_like(dtype: DType, x: f32) -> Result<Tensor, String> {
    match dtype {
        DType::F32 => Tensor::from_f32(vec![], &[x]),
        DType::F16 => {
            Tensor::new(TensorType::new(DType::F16, vec![]), half::f16::from_f32(x).to_le_bytes().to_vec().into())
        }
        DType::F64 => Tensor::new(TensorType::new(DType::F64, vec![]), (x as f64).to_le_bytes().to_vec().into()),
        d => Err(format!("no {d} scalar")),
    }
}

fn lower(
    g: &Graph,
    node: &Node,
    np: &mut NodeProto,
    mut inputs: Vec<String>,
    gp: &mut GraphProto,
    names: &mut Names,
    opset: i64,
) -> Result<(), ExportError> {
    let nn = np.name.clone();
    let unsupported = |m: String| ExportError::Unsupported(format!("node `{}` ({}): {m}", node.name, node.op.name()));
    let x_dtype = node.inputs.first().copied().flatten().map(|v| g.value(v).ty.dtype).unwrap_or(DType::F32);
    np.op_type = node.op.name().into();
    let at = &mut np.attribute;
    match &node.op {
        Op::Conv(c) => {
            at.push(ints_attr("kernel_shape", us(&c.kernel_shape)));
            at.push(ints_attr("strides", us(&c.strides)));
            at.push(ints_attr("pads", us(&c.pads)));
            at.push(ints_attr("dilations", us(&c.dilations)));
            at.push(int_attr("group", c.group as i64));
        }
        Op::MaxPool(p) => {
            at.push(ints_attr("kernel_shape", us(&p.kernel_shape)));
            at.push(ints_attr("strides", us(&p.strides)));
            at.push(ints_attr("pads", us(&p.pads)));
            at.push(ints_attr("dilations", us(&p.dilations)));
            at.push(int_attr("ceil_mode", p.ceil_mode as i64));
        }
        Op::AveragePool { window: p, count_include_pad } => {
            // No dilations: AveragePool has them from opset 19 only.
            at.push(ints_attr("kernel_shape", us(&p.kernel_shape)));
            at.push(ints_attr("strides", us(&p.strides)));
            at.push(ints_attr("pads", us(&p.pads)));
            at.push(int_attr("ceil_mode", p.ceil_mode as i64));
            at.push(int_attr("count_include_pad", *count_include_pad as i64));
        }
        Op::BatchNorm(b) => at.push(float_attr("epsilon", b.epsilon)),
        Op::Gemm(gm) => {
            at.push(float_attr("alpha", gm.alpha));
            at.push(float_attr("beta", gm.beta));
            at.push(int_attr("transA", gm.trans_a as i64));
            at.push(int_attr("transB", gm.trans_b as i64));
        }
        Op::MatMul | Op::Binary(_) | Op::Unary(_) | Op::GlobalAveragePool => {}
        Op::Mod { fmod } => at.push(int_attr("fmod", *fmod as i64)),
        Op::LeakyRelu { alpha } => at.push(float_attr("alpha", *alpha)),
        Op::HardSigmoid { alpha, beta } => {
            at.push(float_attr("alpha", *alpha));
            at.push(float_attr("beta", *beta));
        }
        Op::Clip { min, max } => {
            for (what, v) in [("min", min), ("max", max)] {
                let name = match v {
                    Some(v) => param(gp, names, &nn, what, scalar_like(x_dtype, *v).map_err(unsupported)?),
                    None => String::new(),
                };
                inputs.push(name);
            }
        }
        Op::Reduce { op, axes, keepdims } => {
            at.push(int_attr("keepdims", *keepdims as i64));
            if let Some(axes) = axes {
                // ReduceSum takes its axes as an input (opset 13), the others from opset 18.
                if *op == ReduceOp::Sum || opset >= 18 {
                    inputs.push(param(gp, names, &nn, "axes", i64s(axes)));
                } else {
                    np.attribute.push(ints_attr("axes", axes.iter().copied()));
                }
            }
        }
        Op::Resize(r) => {
            at.push(string_attr("mode", &format!("{:?}", r.mode).to_lowercase()));
            at.push(string_attr("coordinate_transformation_mode", &r.coordinate_transformation_mode));
            at.push(string_attr("nearest_mode", &r.nearest_mode));
            at.push(float_attr("cubic_coeff_a", r.cubic_coeff_a));
            at.push(int_attr("exclude_outside", r.exclude_outside as i64));
            at.push(float_attr("extrapolation_value", r.extrapolation_value));
            inputs.push(String::new()); // roi
            match &r.scales {
                Some(s) => {
                    let t = Tensor::from_f32(vec![s.len()], s).map_err(unsupported)?;
                    inputs.push(param(gp, names, &nn, "scales", t));
                }
                None => {
                    inputs.push(String::new());
                    let sizes: Vec<i64> = us(&r.sizes).collect();
                    inputs.push(param(gp, names, &nn, "sizes", i64s(&sizes)));
                }
            }
        }
        Op::Concat { axis }
        | Op::Gather { axis }
        | Op::GatherElements { axis }
        | Op::Flatten { axis }
        | Op::Softmax { axis } => at.push(int_attr("axis", *axis)),
        Op::Unsqueeze { axes } => inputs.push(param(gp, names, &nn, "axes", i64s(axes))),
        Op::Slice(s) => {
            inputs.push(param(gp, names, &nn, "starts", i64s(&s.starts)));
            inputs.push(param(gp, names, &nn, "ends", i64s(&s.ends)));
            inputs.push(param(gp, names, &nn, "axes", i64s(&s.axes)));
            inputs.push(param(gp, names, &nn, "steps", i64s(&s.steps)));
        }
        Op::Shape { start, end } => {
            at.push(int_attr("start", *start));
            if let Some(e) = end {
                at.push(int_attr("end", *e));
            }
        }
        Op::Constant(t) => {
            at.push(AttributeProto {
                name: "value".into(),
                type_: AttributeType::TENSOR.into(),
                t: Some(tensor_proto("", t)).into(),
                ..Default::default()
            });
        }
        Op::Reshape { shape } => {
            let s: Vec<i64> = us(shape).collect();
            inputs.push(param(gp, names, &nn, "shape", i64s(&s)));
        }
        Op::Transpose { perm } => at.push(ints_attr("perm", us(perm))),
        Op::Pad(p) => {
            at.push(string_attr("mode", &format!("{:?}", p.mode).to_lowercase()));
            inputs.push(param(gp, names, &nn, "pads", i64s(&p.pads)));
            if p.mode == PadMode::Constant && x_dtype.is_float() {
                inputs.push(param(gp, names, &nn, "value", scalar_like(x_dtype, p.value).map_err(unsupported)?));
            }
        }
        Op::Split { axis, split } => {
            at.push(int_attr("axis", *axis));
            let s: Vec<i64> = us(split).collect();
            inputs.push(param(gp, names, &nn, "split", i64s(&s)));
        }
        Op::LayerNorm { axis, epsilon } => {
            at.push(int_attr("axis", *axis));
            at.push(float_attr("epsilon", *epsilon));
        }
        Op::Cast { to } => at.push(int_attr("to", to.onnx_code() as i64)),
        Op::Compare(_) | Op::And | Op::Where | Op::Not | Op::IsNaN | Op::Pow | Op::Range | Op::ScatterNd => {}
        Op::Tile { repeats } => {
            let r: Vec<i64> = us(repeats).collect();
            inputs.push(param(gp, names, &nn, "repeats", i64s(&r)));
        }
        Op::CumSum { axis, exclusive, reverse } => {
            let t = Tensor::from_i64(vec![], &[*axis]).map_err(unsupported)?;
            inputs.push(param(gp, names, &nn, "axis", t));
            at.push(int_attr("exclusive", *exclusive as i64));
            at.push(int_attr("reverse", *reverse as i64));
        }
        Op::Einsum { equation } => at.push(string_attr("equation", equation)),
        Op::InstanceNorm { epsilon } => at.push(float_attr("epsilon", *epsilon)),
        Op::Lstm { hidden_size, direction } => {
            at.push(int_attr("hidden_size", *hidden_size as i64));
            at.push(string_attr("direction", direction.name()));
        }
        Op::Expand { shape } => {
            let s: Vec<i64> = us(shape).collect();
            inputs.push(param(gp, names, &nn, "shape", i64s(&s)));
        }
        Op::GatherNd { batch_dims } => at.push(int_attr("batch_dims", *batch_dims as i64)),
    }
    // Omitted optional inputs at the end are dropped, not written as "":
    // some readers (tract) count them.
    while inputs.last().is_some_and(|s| s.is_empty()) {
        inputs.pop();
    }
    np.input = inputs;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streamed bytes parse back to the same message `to_model` builds.
    #[test]
    fn streamed_bytes_parse_to_the_built_message() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", TensorType::new(DType::F32, [1, 2, 4, 4]));
        let w = g.add_weight("w", Tensor::from_f32([3, 2, 1, 1], &[0.5, -1.0, 2.0, 0.25, 1.5, -0.75]).unwrap());
        let big: Vec<f32> = (0..300).map(|i| i as f32).collect();
        let b = g.add_weight("b", Tensor::from_f32([300], &big).unwrap());
        let conv = Op::Conv(Conv {
            kernel_shape: vec![1, 1],
            strides: vec![1, 1],
            pads: vec![0; 4],
            dilations: vec![1, 1],
            group: 1,
        });
        let c = g.add_node("c", conv, vec![Some(x), Some(w), None], vec!["y".into()]).unwrap();
        let y = g.node(c).outputs[0];
        let r = g
            .add_node(
                "r",
                Op::Reduce { op: ReduceOp::Sum, axes: Some(vec![1]), keepdims: true },
                vec![Some(y)],
                vec!["z".into()],
            )
            .unwrap();
        let z = g.node(r).outputs[0];
        g.set_outputs(vec![z, b]);
        g.metadata.push(("k".into(), "v".into()));
        let bytes = export(&g).unwrap();
        let parsed = ModelProto::parse_from_bytes(&bytes).unwrap();
        assert_eq!(parsed, to_model(&g).unwrap());
        assert_eq!(parsed.graph.initializer.iter().find(|t| t.name == "b").unwrap().raw_data.len(), 1200);
        // A model this small fits inline: the same bytes, and its measure
        // bounds them from above by at most 16 bytes a weight.
        assert_eq!(export_inline(&g).unwrap(), Some(bytes.clone()));
        let (model, pending) = build(&g).unwrap();
        let size = inline_size(&model, &pending);
        assert!(size >= bytes.len() as u64 && size <= bytes.len() as u64 + 16 * 2, "{size} for {}", bytes.len());
    }
}
