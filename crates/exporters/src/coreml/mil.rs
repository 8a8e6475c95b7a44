//! Lowering of a fuse-ir graph to a MIL program (Core ML 5 opset, iOS 15).
//!
//! One IR node becomes one MIL operation (two for HardSwish and Gemm with a
//! bias); static parameters become `const` operations, as coremltools
//! writes them. Float weights of more than [`IMMEDIATE_LIMIT`] elements go
//! to `weight.bin`; the rest are immediate values. With
//! [`Precision::F16`] every float tensor inside the program is fp16: the
//! inputs are cast from fp32 on entry and the outputs back to fp32 on exit,
//! so the model's interface is the same in both precisions.
//!
//! MIL names are identifiers (`[A-Za-z_][A-Za-z0-9_]*`; Core ML rejects
//! others), so every name is sanitized: `coco/class_out_0` becomes
//! `coco_class_out_0`. [`Lowered::renamed`] lists the interface names that
//! changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Seek, Write};

use coreml_proto::proto::mil_spec::{
    argument, dimension, tensor_value, value, value_type, Argument, DataType, Dimension,
    NamedValueType, TensorType as MilTensorType, TensorValue, Value as MilValue, ValueType,
};
use fuse_ir::{
    shape, BinaryOp, DType, Graph, NodeId, Op, PadMode, ReduceOp, ResizeMode, UnaryOp, ValueDef,
    ValueId,
};

use super::blob::{BlobType, BlobWriter};
use super::wire;
use super::Precision;
use crate::ExportError;

/// Float weights with at most this many elements are written inline.
pub const IMMEDIATE_LIMIT: usize = 10;

pub const OPSET: &str = "CoreML5";

/// The program's one function, with its interface.
pub struct Lowered {
    pub function: wire::Function,
    /// (MIL name, IR name, IR type) of each input and output.
    pub inputs: Vec<(String, String, fuse_ir::TensorType)>,
    pub outputs: Vec<(String, String, fuse_ir::TensorType)>,
}

impl Lowered {
    /// Interface names that sanitizing changed: (IR name, MIL name).
    pub fn renamed(&self) -> Vec<(String, String)> {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .filter(|(mil, ir, _)| mil != ir)
            .map(|(mil, ir, _)| (ir.clone(), mil.clone()))
            .collect()
    }
}

/// An immediate constant.
enum Imm {
    Ints(Vec<i32>, Vec<usize>),
    Int(i32),
    Float(f32),
    Bool(bool),
    Str(String),
}

struct Lowering<'g, W: Write + Seek> {
    g: &'g Graph,
    precision: Precision,
    blobs: &'g mut BlobWriter<W>,
    ops: Vec<wire::Operation>,
    /// MIL name of each IR value already defined in the program.
    defined: HashMap<ValueId, String>,
    used: HashSet<String>,
}

type Res<T> = Result<T, ExportError>;

pub fn lower<W: Write + Seek>(
    g: &Graph,
    precision: Precision,
    blobs: &mut BlobWriter<W>,
) -> Res<Lowered> {
    let mut l = Lowering {
        g,
        precision,
        blobs,
        ops: vec![],
        defined: HashMap::new(),
        used: HashSet::new(),
    };
    let mut inputs = vec![];
    let mut fn_inputs = vec![];
    for &v in g.inputs() {
        let val = g.value(v);
        if val.ty.dtype != DType::F32 {
            return Err(ExportError::Unmapped(format!(
                "input `{}` is {}: Core ML inputs here are f32",
                val.name, val.ty
            )));
        }
        let name = l.ident(&val.name);
        fn_inputs.push(NamedValueType {
            name: name.clone(),
            r#type: Some(tensor_type(DataType::Float32, &val.ty.shape)),
        });
        inputs.push((name.clone(), val.name.clone(), val.ty.clone()));
        let inner = match precision {
            Precision::F32 => name,
            Precision::F16 => l.cast(&name, &format!("{name}_to_fp16"), "fp16", &val.ty.shape)?,
        };
        l.defined.insert(v, inner);
    }
    // The interface names are taken first so no inner value can claim them.
    let out_names: Vec<String> = g
        .outputs()
        .iter()
        .map(|&v| l.ident(&g.value(v).name))
        .collect();
    let mut wanted: HashMap<ValueId, String> = HashMap::new();
    if precision == Precision::F32 {
        for (&v, name) in g.outputs().iter().zip(&out_names) {
            wanted.entry(v).or_insert_with(|| name.clone());
        }
    }
    let order = g
        .topo_order()
        .map_err(|e| ExportError::Unsupported(e.to_string()))?;
    for id in order {
        l.node(id, &wanted)?;
    }
    let mut outputs = vec![];
    for (&v, name) in g.outputs().iter().zip(&out_names) {
        let val = g.value(v);
        let inner = l.arg(v)?;
        if inner != *name {
            match precision {
                Precision::F16 if val.ty.dtype.is_float() => {
                    l.cast(&inner, name, "fp32", &val.ty.shape)?;
                }
                _ => {
                    let ty = l.value_type(v);
                    l.op(
                        "identity",
                        name,
                        vec![("x", vec![inner])],
                        vec![(name.clone(), ty)],
                    );
                }
            }
        }
        outputs.push((name.clone(), val.name.clone(), val.ty.clone()));
    }
    let block = wire::Block {
        outputs: out_names,
        operations: l.ops,
    };
    let function = wire::Function {
        inputs: fn_inputs,
        opset: OPSET.into(),
        block_specializations: BTreeMap::from([(OPSET.to_string(), block)]),
    };
    Ok(Lowered {
        function,
        inputs,
        outputs,
    })
}

impl<W: Write + Seek> Lowering<'_, W> {
    /// A fresh identifier made from `raw`.
    fn ident(&mut self, raw: &str) -> String {
        let mut s: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            s.insert(0, '_');
        }
        let mut name = s.clone();
        let mut i = 0;
        while !self.used.insert(name.clone()) {
            name = format!("{s}_{i}");
            i += 1;
        }
        name
    }

    fn float(&self) -> DataType {
        match self.precision {
            Precision::F32 => DataType::Float32,
            Precision::F16 => DataType::Float16,
        }
    }

    fn mil_dtype(&self, d: DType) -> DataType {
        match d {
            DType::F32 | DType::F16 | DType::F64 => self.float(),
            DType::I64 | DType::I32 | DType::I8 | DType::U8 => DataType::Int32,
            DType::Bool => DataType::Bool,
        }
    }

    fn value_type(&self, v: ValueId) -> ValueType {
        let ty = &self.g.value(v).ty;
        tensor_type(self.mil_dtype(ty.dtype), &ty.shape)
    }

    /// The MIL name of `v`, emitting a `const` for a weight on first use.
    fn arg(&mut self, v: ValueId) -> Res<String> {
        if let Some(n) = self.defined.get(&v) {
            return Ok(n.clone());
        }
        let val = self.g.value(v);
        let ValueDef::Weight(t) = &val.def else {
            return Err(ExportError::Unsupported(format!(
                "value `{}` is used before it is defined",
                val.name
            )));
        };
        let name = self.ident(&val.name);
        let shape = t.ty().shape.clone();
        let value = if t.ty().dtype.is_float() {
            let data = t.to_f32_lossy();
            if data.len() > IMMEDIATE_LIMIT {
                let (ty, bytes) = match self.precision {
                    Precision::F32 => (
                        BlobType::F32,
                        data.iter()
                            .flat_map(|x| x.to_le_bytes())
                            .collect::<Vec<u8>>(),
                    ),
                    Precision::F16 => (BlobType::F16, f16_bytes(&data)),
                };
                let offset = self.blobs.add(ty, &bytes).map_err(|e| ExportError::Io {
                    path: "weight.bin".into(),
                    msg: format!("writing weight `{}`: {e}", val.name),
                })?;
                MilValue {
                    doc_string: String::new(),
                    r#type: Some(tensor_type(self.float(), &shape)),
                    value: Some(value::Value::BlobFileValue(value::BlobFileValue {
                        file_name: "@model_path/weights/weight.bin".into(),
                        offset,
                    })),
                }
            } else {
                self.float_tensor(&data, &shape)
            }
        } else {
            let ints = t.to_i64_vec().ok_or_else(|| {
                ExportError::Unmapped(format!("weight `{}` is {}", val.name, t.ty()))
            })?;
            let ints = ints
                .iter()
                .map(|&x| i32::try_from(x))
                .collect::<Result<Vec<i32>, _>>()
                .map_err(|_| {
                    ExportError::Unmapped(format!(
                        "weight `{}` holds values outside int32",
                        val.name
                    ))
                })?;
            imm_value(Imm::Ints(ints, shape), self.float())
        };
        self.push_const(&name, value);
        self.defined.insert(v, name.clone());
        Ok(name)
    }

    fn float_tensor(&self, data: &[f32], shape: &[usize]) -> MilValue {
        let tv = match self.precision {
            Precision::F32 => tensor_value::Value::Floats(tensor_value::RepeatedFloats {
                values: data.to_vec(),
            }),
            Precision::F16 => tensor_value::Value::Bytes(tensor_value::RepeatedBytes {
                values: f16_bytes(data),
            }),
        };
        immediate(tensor_type(self.float(), shape), tv)
    }

    fn push_const(&mut self, name: &str, val: MilValue) {
        let ty = val.r#type.clone();
        let mut attributes = BTreeMap::new();
        attributes.insert("name".to_string(), str_value(name));
        attributes.insert("val".to_string(), val);
        self.ops.push(wire::Operation {
            r#type: "const".into(),
            inputs: BTreeMap::new(),
            outputs: vec![NamedValueType {
                name: name.into(),
                r#type: ty,
            }],
            attributes,
        });
    }

    /// A `const` named after `op` and `param`; returns its name.
    fn imm(&mut self, op: &str, param: &str, v: Imm) -> String {
        let name = self.ident(&format!("{op}_{param}"));
        self.push_const(&name, imm_value(v, self.float()));
        name
    }

    fn op(
        &mut self,
        ty: &str,
        name: &str,
        inputs: Vec<(&str, Vec<String>)>,
        outputs: Vec<(String, ValueType)>,
    ) {
        let inputs = inputs
            .into_iter()
            .map(|(k, names)| {
                let arguments = names
                    .into_iter()
                    .map(|n| argument::Binding {
                        binding: Some(argument::binding::Binding::Name(n)),
                    })
                    .collect();
                (k.to_string(), Argument { arguments })
            })
            .collect();
        let outputs = outputs
            .into_iter()
            .map(|(n, t)| NamedValueType {
                name: n,
                r#type: Some(t),
            })
            .collect();
        self.ops.push(wire::Operation {
            r#type: ty.into(),
            inputs,
            outputs,
            attributes: BTreeMap::from([("name".to_string(), str_value(name))]),
        });
    }

    fn cast(&mut self, x: &str, out: &str, dtype: &str, shape: &[usize]) -> Res<String> {
        let out = if self.used.contains(out) {
            out.to_string()
        } else {
            self.ident(out)
        };
        let d = self.imm(&out, "dtype", Imm::Str(dtype.into()));
        let dt = if dtype == "fp16" {
            DataType::Float16
        } else {
            DataType::Float32
        };
        self.op(
            "cast",
            &out,
            vec![("x", vec![x.into()]), ("dtype", vec![d])],
            vec![(out.clone(), tensor_type(dt, shape))],
        );
        Ok(out)
    }

    fn node(&mut self, id: NodeId, wanted: &HashMap<ValueId, String>) -> Res<()> {
        let g = self.g;
        let node = g.node(id);
        let fail = |msg: String| {
            ExportError::Unmapped(format!("node `{}` ({}): {msg}", node.name, node.op.name()))
        };
        // Output names: the interface name for a graph output, else the value's.
        let mut outs = vec![];
        for &o in &node.outputs {
            let name = match wanted.get(&o) {
                Some(n) => n.clone(),
                None => self.ident(&g.value(o).name),
            };
            outs.push((name, self.value_type(o)));
        }
        let out_names: Vec<String> = outs.iter().map(|(name, _)| name.clone()).collect();
        let n = out_names[0].clone();
        let input = |i: usize| node.inputs.get(i).copied().flatten();
        let mut x = vec![];
        for v in node.inputs.iter().flatten() {
            x.push(self.arg(*v)?);
        }
        let in_shape = |i: usize| {
            input(i)
                .map(|v| g.value(v).ty.shape.clone())
                .unwrap_or_default()
        };
        let ints = |v: &[usize]| v.iter().map(|&x| x as i32).collect::<Vec<i32>>();
        let list = |v: Vec<i32>| {
            let n = v.len();
            Imm::Ints(v, vec![n])
        };
        match &node.op {
            Op::Conv(c) => {
                let k = c.kernel_shape.len();
                let pad: Vec<i32> = (0..k)
                    .flat_map(|i| [c.pads[i] as i32, c.pads[i + k] as i32])
                    .collect();
                let mut ins = vec![("x", vec![x[0].clone()]), ("weight", vec![x[1].clone()])];
                if let Some(b) = input(2) {
                    ins.push(("bias", vec![self.arg(b)?]));
                }
                ins.push((
                    "strides",
                    vec![self.imm(&n, "strides", list(ints(&c.strides)))],
                ));
                ins.push((
                    "pad_type",
                    vec![self.imm(&n, "pad_type", Imm::Str("custom".into()))],
                ));
                ins.push(("pad", vec![self.imm(&n, "pad", list(pad))]));
                ins.push((
                    "dilations",
                    vec![self.imm(&n, "dilations", list(ints(&c.dilations)))],
                ));
                ins.push((
                    "groups",
                    vec![self.imm(&n, "groups", Imm::Int(c.group as i32))],
                ));
                self.op("conv", &n, ins, outs);
            }
            Op::BatchNorm(b) => {
                let eps = self.imm(&n, "epsilon", Imm::Float(b.epsilon));
                let ins = vec![
                    ("x", vec![x[0].clone()]),
                    ("gamma", vec![x[1].clone()]),
                    ("beta", vec![x[2].clone()]),
                    ("mean", vec![x[3].clone()]),
                    ("variance", vec![x[4].clone()]),
                    ("epsilon", vec![eps]),
                ];
                self.op("batch_norm", &n, ins, outs);
            }
            Op::Binary(b) => {
                let ty = match b {
                    BinaryOp::Add => "add",
                    BinaryOp::Sub => "sub",
                    BinaryOp::Mul => "mul",
                    BinaryOp::Div => "real_div",
                };
                self.op(
                    ty,
                    &n,
                    vec![("x", vec![x[0].clone()]), ("y", vec![x[1].clone()])],
                    outs,
                );
            }
            Op::Unary(UnaryOp::HardSwish) => {
                let (alpha, beta) = (
                    self.imm(&n, "alpha", Imm::Float(1.0 / 6.0)),
                    self.imm(&n, "beta", Imm::Float(0.5)),
                );
                let gate = self.ident(&format!("{n}_gate"));
                let gate_ty = outs[0].1.clone();
                self.op(
                    "sigmoid_hard",
                    &gate,
                    vec![
                        ("x", vec![x[0].clone()]),
                        ("alpha", vec![alpha]),
                        ("beta", vec![beta]),
                    ],
                    vec![(gate.clone(), gate_ty)],
                );
                self.op(
                    "mul",
                    &n,
                    vec![("x", vec![x[0].clone()]), ("y", vec![gate])],
                    outs,
                );
            }
            Op::Unary(u) => {
                let ty = match u {
                    UnaryOp::Sigmoid => "sigmoid",
                    UnaryOp::Relu => "relu",
                    UnaryOp::Tanh => "tanh",
                    UnaryOp::Identity => "identity",
                    UnaryOp::HardSwish => unreachable!("lowered above"),
                };
                self.op(ty, &n, vec![("x", vec![x[0].clone()])], outs);
            }
            Op::HardSigmoid { alpha, beta } => {
                let (a, b) = (
                    self.imm(&n, "alpha", Imm::Float(*alpha)),
                    self.imm(&n, "beta", Imm::Float(*beta)),
                );
                self.op(
                    "sigmoid_hard",
                    &n,
                    vec![
                        ("x", vec![x[0].clone()]),
                        ("alpha", vec![a]),
                        ("beta", vec![b]),
                    ],
                    outs,
                );
            }
            Op::Clip { min, max } => {
                let big = match self.precision {
                    Precision::F32 => f32::MAX,
                    Precision::F16 => 65504.0,
                };
                let a = self.imm(&n, "alpha", Imm::Float(min.unwrap_or(-big).max(-big)));
                let b = self.imm(&n, "beta", Imm::Float(max.unwrap_or(big).min(big)));
                self.op(
                    "clip",
                    &n,
                    vec![
                        ("x", vec![x[0].clone()]),
                        ("alpha", vec![a]),
                        ("beta", vec![b]),
                    ],
                    outs,
                );
            }
            Op::Reduce { op, axes, keepdims } => {
                let rank = in_shape(0).len() as i32;
                let axes: Vec<i32> = match axes {
                    Some(a) => a.iter().map(|&a| a as i32).collect(),
                    None => (0..rank).collect(),
                };
                let ty = match op {
                    ReduceOp::Sum => "reduce_sum",
                    ReduceOp::Mean => "reduce_mean",
                };
                let a = self.imm(&n, "axes", list(axes));
                let k = self.imm(&n, "keep_dims", Imm::Bool(*keepdims));
                self.op(
                    ty,
                    &n,
                    vec![
                        ("x", vec![x[0].clone()]),
                        ("axes", vec![a]),
                        ("keep_dims", vec![k]),
                    ],
                    outs,
                );
            }
            Op::GlobalAveragePool => {
                let rank = in_shape(0).len() as i32;
                let a = self.imm(&n, "axes", list((2..rank).collect()));
                let k = self.imm(&n, "keep_dims", Imm::Bool(true));
                self.op(
                    "reduce_mean",
                    &n,
                    vec![
                        ("x", vec![x[0].clone()]),
                        ("axes", vec![a]),
                        ("keep_dims", vec![k]),
                    ],
                    outs,
                );
            }
            Op::MaxPool(p) => {
                if p.dilations.iter().any(|&d| d != 1) {
                    return Err(fail("MIL max_pool has no dilations".into()));
                }
                let k = p.kernel_shape.len();
                let pad: Vec<i32> = (0..k)
                    .flat_map(|i| [p.pads[i] as i32, p.pads[i + k] as i32])
                    .collect();
                let ins = vec![
                    ("x", vec![x[0].clone()]),
                    (
                        "kernel_sizes",
                        vec![self.imm(&n, "kernel_sizes", list(ints(&p.kernel_shape)))],
                    ),
                    (
                        "strides",
                        vec![self.imm(&n, "strides", list(ints(&p.strides)))],
                    ),
                    (
                        "pad_type",
                        vec![self.imm(&n, "pad_type", Imm::Str("custom".into()))],
                    ),
                    ("pad", vec![self.imm(&n, "pad", list(pad))]),
                    (
                        "ceil_mode",
                        vec![self.imm(&n, "ceil_mode", Imm::Bool(p.ceil_mode))],
                    ),
                ];
                self.op("max_pool", &n, ins, outs);
            }
            Op::Resize(r) => {
                let s = in_shape(0);
                let coord = r.coordinate_transformation_mode.as_str();
                let nearest = r.nearest_mode.as_str();
                let floor_like = (coord == "asymmetric" && nearest == "floor")
                    || (matches!(coord, "half_pixel" | "pytorch_half_pixel")
                        && matches!(nearest, "round_prefer_floor" | "round_prefer_ceil"));
                if r.mode != ResizeMode::Nearest || !floor_like {
                    return Err(fail(format!(
                        "only nearest upsampling maps to MIL upsample_nearest_neighbor (got mode {:?}, {coord}, {nearest})",
                        r.mode
                    )));
                }
                let factor = |i: usize| -> Option<i32> {
                    (s[i] > 0 && r.sizes[i] % s[i] == 0 && r.sizes[i] >= s[i])
                        .then(|| (r.sizes[i] / s[i]) as i32)
                };
                let (fh, fw) = match (s.len(), factor(2), factor(3)) {
                    (4, Some(h), Some(w)) if r.sizes[0] == s[0] && r.sizes[1] == s[1] => (h, w),
                    _ => {
                        return Err(fail(format!(
                            "resize {s:?} -> {:?} is not an integer upsampling of H and W",
                            r.sizes
                        )))
                    }
                };
                let h = self.imm(&n, "scale_factor_height", Imm::Int(fh));
                let w = self.imm(&n, "scale_factor_width", Imm::Int(fw));
                self.op(
                    "upsample_nearest_neighbor",
                    &n,
                    vec![
                        ("x", vec![x[0].clone()]),
                        ("scale_factor_height", vec![h]),
                        ("scale_factor_width", vec![w]),
                    ],
                    outs,
                );
            }
            Op::Concat { axis } => {
                let a = self.imm(&n, "axis", Imm::Int(*axis as i32));
                let i = self.imm(&n, "interleave", Imm::Bool(false));
                self.op(
                    "concat",
                    &n,
                    vec![
                        ("values", x.clone()),
                        ("axis", vec![a]),
                        ("interleave", vec![i]),
                    ],
                    outs,
                );
            }
            Op::Split { axis, split } => {
                let s = self.imm(&n, "split_sizes", list(ints(split)));
                let a = self.imm(&n, "axis", Imm::Int(*axis as i32));
                self.op(
                    "split",
                    &n,
                    vec![
                        ("x", vec![x[0].clone()]),
                        ("split_sizes", vec![s]),
                        ("axis", vec![a]),
                    ],
                    outs,
                );
            }
            Op::Reshape { shape } => {
                let s = self.imm(&n, "shape", list(ints(shape)));
                self.op(
                    "reshape",
                    &n,
                    vec![("x", vec![x[0].clone()]), ("shape", vec![s])],
                    outs,
                );
            }
            Op::Flatten { .. } => {
                let out = &g.value(node.outputs[0]).ty.shape;
                let s = self.imm(&n, "shape", list(ints(out)));
                self.op(
                    "reshape",
                    &n,
                    vec![("x", vec![x[0].clone()]), ("shape", vec![s])],
                    outs,
                );
            }
            Op::Transpose { perm } => {
                let p = self.imm(&n, "perm", list(ints(perm)));
                self.op(
                    "transpose",
                    &n,
                    vec![("x", vec![x[0].clone()]), ("perm", vec![p])],
                    outs,
                );
            }
            Op::Unsqueeze { axes } => {
                let a = self.imm(&n, "axes", list(axes.iter().map(|&a| a as i32).collect()));
                self.op(
                    "expand_dims",
                    &n,
                    vec![("x", vec![x[0].clone()]), ("axes", vec![a])],
                    outs,
                );
            }
            Op::Softmax { axis } => {
                let a = self.imm(&n, "axis", Imm::Int(*axis as i32));
                self.op(
                    "softmax",
                    &n,
                    vec![("x", vec![x[0].clone()]), ("axis", vec![a])],
                    outs,
                );
            }
            Op::Slice(sl) => {
                let s = in_shape(0);
                let mut begin: Vec<i32> = vec![0; s.len()];
                let mut end: Vec<i32> = s.iter().map(|&d| d as i32).collect();
                let mut stride: Vec<i32> = vec![1; s.len()];
                for i in 0..sl.axes.len() {
                    let axis = shape::norm_axis(sl.axes[i], s.len()).map_err(fail)?;
                    if sl.steps[i] < 0 {
                        return Err(fail("negative slice steps are not mapped to MIL".into()));
                    }
                    let (b, e, _) =
                        shape::slice_range(s[axis] as i64, sl.starts[i], sl.ends[i], sl.steps[i])
                            .map_err(fail)?;
                    begin[axis] = b as i32;
                    end[axis] = e.max(b) as i32;
                    stride[axis] = sl.steps[i] as i32;
                }
                let ins = vec![
                    ("x", vec![x[0].clone()]),
                    ("begin", vec![self.imm(&n, "begin", list(begin))]),
                    ("end", vec![self.imm(&n, "end", list(end))]),
                    ("stride", vec![self.imm(&n, "stride", list(stride))]),
                ];
                self.op("slice_by_index", &n, ins, outs);
            }
            Op::Pad(p) => {
                if p.pads.iter().any(|&v| v < 0) {
                    return Err(fail(
                        "negative pads (cropping) are not mapped to MIL".into(),
                    ));
                }
                let r = p.pads.len() / 2;
                let pad: Vec<i32> = (0..r)
                    .flat_map(|i| [p.pads[i] as i32, p.pads[i + r] as i32])
                    .collect();
                let mode = match p.mode {
                    PadMode::Constant => "constant",
                    PadMode::Reflect => "reflect",
                    PadMode::Edge => "replicate",
                };
                let ins = vec![
                    ("x", vec![x[0].clone()]),
                    ("pad", vec![self.imm(&n, "pad", list(pad))]),
                    ("mode", vec![self.imm(&n, "mode", Imm::Str(mode.into()))]),
                    (
                        "constant_val",
                        vec![self.imm(&n, "constant_val", Imm::Float(p.value))],
                    ),
                ];
                self.op("pad", &n, ins, outs);
            }
            Op::Gather { axis } => {
                let a = self.imm(&n, "axis", Imm::Int(*axis as i32));
                self.op(
                    "gather",
                    &n,
                    vec![
                        ("x", vec![x[0].clone()]),
                        ("indices", vec![x[1].clone()]),
                        ("axis", vec![a]),
                    ],
                    outs,
                );
            }
            Op::MatMul => {
                let tx = self.imm(&n, "transpose_x", Imm::Bool(false));
                let ty = self.imm(&n, "transpose_y", Imm::Bool(false));
                let ins = vec![
                    ("x", vec![x[0].clone()]),
                    ("y", vec![x[1].clone()]),
                    ("transpose_x", vec![tx]),
                    ("transpose_y", vec![ty]),
                ];
                self.op("matmul", &n, ins, outs);
            }
            Op::Gemm(gm) => {
                if gm.alpha != 1.0 || (input(2).is_some() && gm.beta != 1.0) {
                    return Err(fail(
                        "Gemm with alpha or beta other than 1 is not mapped to MIL".into(),
                    ));
                }
                let tx = self.imm(&n, "transpose_x", Imm::Bool(gm.trans_a));
                let ty = self.imm(&n, "transpose_y", Imm::Bool(gm.trans_b));
                let ins = vec![
                    ("x", vec![x[0].clone()]),
                    ("y", vec![x[1].clone()]),
                    ("transpose_x", vec![tx]),
                    ("transpose_y", vec![ty]),
                ];
                if let Some(c) = input(2) {
                    let mm = self.ident(&format!("{n}_matmul"));
                    let mm_ty = outs[0].1.clone();
                    self.op("matmul", &mm, ins, vec![(mm.clone(), mm_ty)]);
                    let c = self.arg(c)?;
                    self.op("add", &n, vec![("x", vec![mm]), ("y", vec![c])], outs);
                } else {
                    self.op("matmul", &n, ins, outs);
                }
            }
            Op::LayerNorm { axis, epsilon } => {
                let rank = in_shape(0).len();
                let first = shape::norm_axis(*axis, rank).map_err(fail)?;
                let a = self.imm(&n, "axes", list((first as i32..rank as i32).collect()));
                let eps = self.imm(&n, "epsilon", Imm::Float(*epsilon));
                let mut ins = vec![
                    ("x", vec![x[0].clone()]),
                    ("axes", vec![a]),
                    ("gamma", vec![x[1].clone()]),
                ];
                if let Some(b) = input(2) {
                    ins.push(("beta", vec![self.arg(b)?]));
                }
                ins.push(("epsilon", vec![eps]));
                self.op("layer_norm", &n, ins, outs);
            }
            Op::Cast { to } => {
                let dtype = match self.mil_dtype(*to) {
                    DataType::Float16 => "fp16",
                    DataType::Float32 => "fp32",
                    DataType::Int32 => "int32",
                    _ => "bool",
                };
                let d = self.imm(&n, "dtype", Imm::Str(dtype.into()));
                self.op(
                    "cast",
                    &n,
                    vec![("x", vec![x[0].clone()]), ("dtype", vec![d])],
                    outs,
                );
            }
            Op::Constant(_) | Op::Shape { .. } => {
                return Err(fail(
                    "no MIL mapping: canonicalize folds it before export".into(),
                ));
            }
        }
        for (&o, name) in node.outputs.iter().zip(out_names) {
            self.defined.insert(o, name);
        }
        Ok(())
    }
}

pub fn tensor_type(dt: DataType, shape: &[usize]) -> ValueType {
    let dimensions = shape
        .iter()
        .map(|&d| Dimension {
            dimension: Some(dimension::Dimension::Constant(
                dimension::ConstantDimension { size: d as u64 },
            )),
        })
        .collect();
    ValueType {
        r#type: Some(value_type::Type::TensorType(MilTensorType {
            data_type: dt as i32,
            rank: shape.len() as i64,
            dimensions,
            attributes: Default::default(),
        })),
    }
}

fn immediate(ty: ValueType, tv: tensor_value::Value) -> MilValue {
    MilValue {
        doc_string: String::new(),
        r#type: Some(ty),
        value: Some(value::Value::ImmediateValue(value::ImmediateValue {
            value: Some(value::immediate_value::Value::Tensor(TensorValue {
                value: Some(tv),
            })),
        })),
    }
}

fn imm_value(v: Imm, float: DataType) -> MilValue {
    match v {
        Imm::Ints(values, shape) => immediate(
            tensor_type(DataType::Int32, &shape),
            tensor_value::Value::Ints(tensor_value::RepeatedInts { values }),
        ),
        Imm::Int(x) => immediate(
            tensor_type(DataType::Int32, &[]),
            tensor_value::Value::Ints(tensor_value::RepeatedInts { values: vec![x] }),
        ),
        Imm::Float(x) => match float {
            DataType::Float16 => immediate(
                tensor_type(DataType::Float16, &[]),
                tensor_value::Value::Bytes(tensor_value::RepeatedBytes {
                    values: f16_bytes(&[x]),
                }),
            ),
            _ => immediate(
                tensor_type(DataType::Float32, &[]),
                tensor_value::Value::Floats(tensor_value::RepeatedFloats { values: vec![x] }),
            ),
        },
        Imm::Bool(b) => immediate(
            tensor_type(DataType::Bool, &[]),
            tensor_value::Value::Bools(tensor_value::RepeatedBools { values: vec![b] }),
        ),
        Imm::Str(s) => str_value(&s),
    }
}

fn str_value(s: &str) -> MilValue {
    immediate(
        tensor_type(DataType::String, &[]),
        tensor_value::Value::Strings(tensor_value::RepeatedStrings {
            values: vec![s.to_string()],
        }),
    )
}

fn f16_bytes(data: &[f32]) -> Vec<u8> {
    data.iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect()
}
