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
    argument, dimension, tensor_value, value, value_type, Argument, DataType, Dimension, NamedValueType,
    TensorType as MilTensorType, TensorValue, Value as MilValue, ValueType,
};
use fuse_ir::{
    shape, BinaryOp, CompareOp, DType, Graph, LstmDirection, Node, NodeId, Op, PadMode, ReduceOp, ResizeMode, UnaryOp,
    ValueDef, ValueId,
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
    Bools(Vec<bool>, Vec<usize>),
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

pub fn lower<W: Write + Seek>(g: &Graph, precision: Precision, blobs: &mut BlobWriter<W>) -> Res<Lowered> {
    let mut l = Lowering { g, precision, blobs, ops: vec![], defined: HashMap::new(), used: HashSet::new() };
    let mut inputs = vec![];
    let mut fn_inputs = vec![];
    for &v in g.inputs() {
        let val = g.value(v);
        if val.ty.rank() > MAX_RANK {
            return Err(ExportError::Unmapped(format!(
                "input `{}` is {}: Core ML tensors have at most {MAX_RANK} dimensions",
                val.name, val.ty
            )));
        }
        // Float inputs are fp32 at the interface; integer ones (token ids,
        // masks) int32, as Core ML takes them (values beyond int32 are the
        // caller's to avoid, as coremltools does).
        let dt = match val.ty.dtype {
            DType::F32 => DataType::Float32,
            DType::I64 | DType::I32 => DataType::Int32,
            _ => {
                return Err(ExportError::Unmapped(format!(
                    "input `{}` is {}: Core ML inputs here are f32 or integers",
                    val.name, val.ty
                )))
            }
        };
        let name = l.ident(&val.name);
        fn_inputs.push(NamedValueType { name: name.clone(), r#type: Some(tensor_type(dt, &val.ty.shape)) });
        inputs.push((name.clone(), val.name.clone(), val.ty.clone()));
        let inner = match precision {
            Precision::F16 if dt == DataType::Float32 => {
                l.cast(&name, &format!("{name}_to_fp16"), "fp16", &val.ty.shape)?
            }
            _ => name,
        };
        l.defined.insert(v, inner);
    }
    // The interface names are taken first so no inner value can claim them.
    let out_names: Vec<String> = g.outputs().iter().map(|&v| l.ident(&g.value(v).name)).collect();
    let mut wanted: HashMap<ValueId, String> = HashMap::new();
    if precision == Precision::F32 {
        for (&v, name) in g.outputs().iter().zip(&out_names) {
            wanted.entry(v).or_insert_with(|| name.clone());
        }
    }
    let order = g.topo_order().map_err(|e| ExportError::Unsupported(e.to_string()))?;
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
                    l.op("identity", name, vec![("x", vec![inner])], vec![(name.clone(), ty)]);
                }
            }
        }
        outputs.push((name.clone(), val.name.clone(), val.ty.clone()));
    }
    let block = wire::Block { outputs: out_names, operations: l.ops };
    let function = wire::Function {
        inputs: fn_inputs,
        opset: OPSET.into(),
        block_specializations: BTreeMap::from([(OPSET.to_string(), block)]),
    };
    Ok(Lowered { function, inputs, outputs })
}

/// The most dimensions a Core ML tensor may have.
pub const MAX_RANK: usize = 5;

/// A 1-D list of ints: MIL's shape, perm, axes and reps parameters.
fn list(v: Vec<i32>) -> Imm {
    let n = v.len();
    Imm::Ints(v, vec![n])
}

/// Sizes or axes as a [`list`].
fn dims(v: &[usize]) -> Imm {
    list(v.iter().map(|&d| d as i32).collect())
}

/// A chain of shape steps from a value of shape `dims` (an einsum's
/// lowered form): each step MIL's op type, its parameters and the shape it
/// gives; a step that would change nothing is not added.
struct ShapeSteps {
    steps: Vec<ShapeStep>,
    dims: Vec<usize>,
}

/// MIL's op type, its parameters, the shape it gives.
type ShapeStep = (&'static str, Vec<(&'static str, Imm)>, Vec<usize>);

impl ShapeSteps {
    fn new(dims: &[usize]) -> ShapeSteps {
        ShapeSteps { steps: vec![], dims: dims.to_vec() }
    }

    fn push(&mut self, ty: &'static str, params: Vec<(&'static str, Imm)>, next: Vec<usize>) {
        self.dims = next.clone();
        self.steps.push((ty, params, next));
    }

    /// Summed over `axes`, which are dropped.
    fn sum(mut self, axes: &[usize]) -> ShapeSteps {
        if !axes.is_empty() {
            let next = self.dims.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect();
            self.push("reduce_sum", vec![("axes", dims(axes)), ("keep_dims", Imm::Bool(false))], next);
        }
        self
    }

    fn transpose(mut self, perm: &[usize]) -> ShapeSteps {
        if perm.iter().enumerate().any(|(i, &p)| i != p) {
            let next = perm.iter().map(|&p| self.dims[p]).collect();
            self.push("transpose", vec![("perm", dims(perm))], next);
        }
        self
    }

    fn reshape(mut self, shape: &[usize]) -> ShapeSteps {
        if self.dims != shape {
            self.push("reshape", vec![("shape", dims(shape))], shape.to_vec());
        }
        self
    }
}

impl<W: Write + Seek> Lowering<'_, W> {
    /// A fresh identifier made from `raw`.
    fn ident(&mut self, raw: &str) -> String {
        let mut s: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
        if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            s.insert(0, '_');
        }
        fuse_ir::claim_name(&mut self.used, &s, 0)
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
            return Err(ExportError::Unsupported(format!("value `{}` is used before it is defined", val.name)));
        };
        let name = self.ident(&val.name);
        let shape = t.ty().shape.clone();
        let value = if t.ty().dtype.is_float() {
            self.float_value(&val.name, &t.to_f32_lossy(), &shape, self.float())?
        } else {
            let ints =
                t.to_i64_vec().ok_or_else(|| ExportError::Unmapped(format!("weight `{}` is {}", val.name, t.ty())))?;
            let ints = ints
                .iter()
                .map(|&x| i32::try_from(x))
                .collect::<Result<Vec<i32>, _>>()
                .map_err(|_| ExportError::Unmapped(format!("weight `{}` holds values outside int32", val.name)))?;
            if t.ty().dtype == DType::Bool {
                imm_value(Imm::Bools(ints.iter().map(|&i| i != 0).collect(), shape), self.float())
            } else {
                imm_value(Imm::Ints(ints, shape), self.float())
            }
        };
        self.push_const(&name, value);
        self.defined.insert(v, name.clone());
        Ok(name)
    }

    /// A float constant's value as `dt` (fp32 or fp16): in `weight.bin`
    /// beyond [`IMMEDIATE_LIMIT`] elements, else immediate. `what` names it
    /// in an error.
    fn float_value(&mut self, what: &str, data: &[f32], shape: &[usize], dt: DataType) -> Res<MilValue> {
        let f16 = dt == DataType::Float16;
        if data.len() <= IMMEDIATE_LIMIT {
            let tv = if f16 {
                tensor_value::Value::Bytes(tensor_value::RepeatedBytes { values: f16_bytes(data) })
            } else {
                tensor_value::Value::Floats(tensor_value::RepeatedFloats { values: data.to_vec() })
            };
            return Ok(immediate(tensor_type(dt, shape), tv));
        }
        let (ty, bytes) = if f16 {
            (BlobType::F16, f16_bytes(data))
        } else {
            (BlobType::F32, data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
        };
        let offset = self
            .blobs
            .add(ty, &bytes)
            .map_err(|e| ExportError::Io { path: "weight.bin".into(), msg: format!("writing weight `{what}`: {e}") })?;
        Ok(MilValue {
            doc_string: String::new(),
            r#type: Some(tensor_type(dt, shape)),
            value: Some(value::Value::BlobFileValue(value::BlobFileValue {
                file_name: "@model_path/weights/weight.bin".into(),
                offset,
            })),
        })
    }

    /// A new fp32 `const` named after `name`; returns its MIL name.
    fn const_f32(&mut self, name: &str, data: &[f32], shape: &[usize]) -> Res<String> {
        let name = self.ident(name);
        let value = self.float_value(&name, data, shape, DataType::Float32)?;
        self.push_const(&name, value);
        Ok(name)
    }

    fn push_const(&mut self, name: &str, val: MilValue) {
        let ty = val.r#type.clone();
        let mut attributes = BTreeMap::new();
        attributes.insert("name".to_string(), str_value(name));
        attributes.insert("val".to_string(), val);
        self.ops.push(wire::Operation {
            r#type: "const".into(),
            inputs: BTreeMap::new(),
            outputs: vec![NamedValueType { name: name.into(), r#type: ty }],
            attributes,
        });
    }

    /// A `const` named after `op` and `param`; returns its name.
    fn imm(&mut self, op: &str, param: &str, v: Imm) -> String {
        let name = self.ident(&format!("{op}_{param}"));
        self.push_const(&name, imm_value(v, self.float()));
        name
    }

    fn op(&mut self, ty: &str, name: &str, inputs: Vec<(&str, Vec<String>)>, outputs: Vec<(String, ValueType)>) {
        let inputs = inputs
            .into_iter()
            .map(|(k, names)| {
                let arguments = names
                    .into_iter()
                    .map(|n| argument::Binding { binding: Some(argument::binding::Binding::Name(n)) })
                    .collect();
                (k.to_string(), Argument { arguments })
            })
            .collect();
        let outputs = outputs.into_iter().map(|(n, t)| NamedValueType { name: n, r#type: Some(t) }).collect();
        self.ops.push(wire::Operation {
            r#type: ty.into(),
            inputs,
            outputs,
            attributes: BTreeMap::from([("name".to_string(), str_value(name))]),
        });
    }

    /// `op` with constant parameters: each becomes a `const` named after
    /// the op and the parameter, and is read under the parameter's name.
    fn op_params(
        &mut self,
        ty: &str,
        name: &str,
        mut inputs: Vec<(&str, Vec<String>)>,
        params: Vec<(&'static str, Imm)>,
        outputs: Vec<(String, ValueType)>,
    ) {
        for (param, value) in params {
            let c = self.imm(name, param, value);
            inputs.push((param, vec![c]));
        }
        self.op(ty, name, inputs, outputs);
    }

    fn cast(&mut self, x: &str, out: &str, dtype: &str, shape: &[usize]) -> Res<String> {
        let out = if self.used.contains(out) { out.to_string() } else { self.ident(out) };
        let dt = if dtype == "fp16" { DataType::Float16 } else { DataType::Float32 };
        self.op_params(
            "cast",
            &out,
            vec![("x", vec![x.into()])],
            vec![("dtype", Imm::Str(dtype.into()))],
            vec![(out.clone(), tensor_type(dt, shape))],
        );
        Ok(out)
    }

    fn node(&mut self, id: NodeId, wanted: &HashMap<ValueId, String>) -> Res<()> {
        let g = self.g;
        let node = g.node(id);
        let fail = |msg: String| ExportError::Unmapped(format!("node `{}` ({}): {msg}", node.name, node.op.name()));
        if let Some(o) = node.outputs.iter().find(|&&o| g.value(o).ty.rank() > MAX_RANK) {
            let v = g.value(*o);
            return Err(fail(format!(
                "output `{}` is {}: Core ML tensors have at most {MAX_RANK} dimensions",
                v.name, v.ty
            )));
        }
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
        if let Op::Lstm { hidden_size, direction } = node.op {
            self.lstm(node, hidden_size, direction, outs)?;
            return self.define(node, out_names);
        }
        let input = |i: usize| node.inputs.get(i).copied().flatten();
        let mut x = vec![];
        for v in node.inputs.iter().flatten() {
            x.push(self.arg(*v)?);
        }
        let in_shape = |i: usize| input(i).map(|v| g.value(v).ty.shape.clone()).unwrap_or_default();
        let ints = |v: &[usize]| v.iter().map(|&x| x as i32).collect::<Vec<i32>>();
        let x0 = || vec![("x", vec![x[0].clone()])];
        let xy = || vec![("x", vec![x[0].clone()]), ("y", vec![x[1].clone()])];
        match &node.op {
            Op::Conv(c) => {
                let mut ins = vec![("x", vec![x[0].clone()]), ("weight", vec![x[1].clone()])];
                if let Some(b) = x.get(2) {
                    ins.push(("bias", vec![b.clone()]));
                }
                let params = vec![
                    ("strides", list(ints(&c.strides))),
                    ("pad_type", Imm::Str("custom".into())),
                    ("pad", list(begin_end(&ints(&c.pads)))),
                    ("dilations", list(ints(&c.dilations))),
                    ("groups", Imm::Int(c.group as i32)),
                ];
                self.op_params("conv", &n, ins, params, outs);
            }
            Op::BatchNorm(b) => {
                let ins = vec![
                    ("x", vec![x[0].clone()]),
                    ("gamma", vec![x[1].clone()]),
                    ("beta", vec![x[2].clone()]),
                    ("mean", vec![x[3].clone()]),
                    ("variance", vec![x[4].clone()]),
                ];
                self.op_params("batch_norm", &n, ins, vec![("epsilon", Imm::Float(b.epsilon))], outs);
            }
            Op::Binary(b) => {
                let ty = match b {
                    BinaryOp::Add => "add",
                    BinaryOp::Sub => "sub",
                    BinaryOp::Mul => "mul",
                    BinaryOp::Div => "real_div",
                    BinaryOp::Min => "minimum",
                    BinaryOp::Max => "maximum",
                };
                self.op(ty, &n, xy(), outs);
            }
            Op::Unary(UnaryOp::HardSwish) => {
                let gate = self.ident(&format!("{n}_gate"));
                let gate_ty = outs[0].1.clone();
                let params = vec![("alpha", Imm::Float(1.0 / 6.0)), ("beta", Imm::Float(0.5))];
                self.op_params("sigmoid_hard", &gate, x0(), params, vec![(gate.clone(), gate_ty)]);
                self.op("mul", &n, vec![("x", vec![x[0].clone()]), ("y", vec![gate])], outs);
            }
            Op::Unary(u) => {
                let ty = match u {
                    UnaryOp::Sigmoid => "sigmoid",
                    UnaryOp::Relu => "relu",
                    UnaryOp::Tanh => "tanh",
                    UnaryOp::Identity => "identity",
                    UnaryOp::Erf => "erf",
                    UnaryOp::Sqrt => "sqrt",
                    UnaryOp::Ceil => "ceil",
                    UnaryOp::Floor => "floor",
                    UnaryOp::Sin => "sin",
                    UnaryOp::Cos => "cos",
                    UnaryOp::Exp => "exp",
                    UnaryOp::Log => "log",
                    UnaryOp::Abs => "abs",
                    UnaryOp::Reciprocal => "inverse",
                    UnaryOp::Neg => {
                        let minus = self.imm(&n, "y", Imm::Float(-1.0));
                        self.op("mul", &n, vec![("x", vec![x[0].clone()]), ("y", vec![minus])], outs);
                        return self.define(node, out_names);
                    }
                    UnaryOp::Gelu => {
                        self.op_params("gelu", &n, x0(), vec![("mode", Imm::Str("EXACT".into()))], outs);
                        return self.define(node, out_names);
                    }
                    UnaryOp::HardSwish => unreachable!("lowered above"),
                };
                self.op(ty, &n, x0(), outs);
            }
            Op::Compare(cmp) => {
                let ty = match cmp {
                    CompareOp::Equal => "equal",
                    CompareOp::Greater => "greater",
                    CompareOp::GreaterOrEqual => "greater_equal",
                    CompareOp::Less => "less",
                    CompareOp::LessOrEqual => "less_equal",
                };
                self.op(ty, &n, xy(), outs);
            }
            Op::And => self.op("logical_and", &n, xy(), outs),
            Op::Where => {
                // MIL's select takes its output shape from `a` and `b`
                // alone: where `cond` is larger, `a` is broadcast first.
                let out_shape = g.value(node.outputs[0]).ty.shape.clone();
                let (sa, sb) = (in_shape(1), in_shape(2));
                let mut a = x[1].clone();
                if broadcast(&sa, &sb) != out_shape {
                    let dt = self.mil_dtype(g.value(input(1).expect("input")).ty.dtype);
                    a = self.broadcast_to(&format!("{n}_a"), a, sa, &out_shape, dt, None);
                }
                let ins = vec![("cond", vec![x[0].clone()]), ("a", vec![a]), ("b", vec![x[2].clone()])];
                self.op("select", &n, ins, outs);
            }
            // Broadcasting to a static shape.
            Op::Expand { .. } => {
                let out_shape = g.value(node.outputs[0]).ty.shape.clone();
                let dt = self.mil_dtype(g.value(input(0).expect("input")).ty.dtype);
                self.broadcast_to(&n, x[0].clone(), in_shape(0), &out_shape, dt, Some(outs));
            }
            Op::GatherNd { batch_dims } => {
                if *batch_dims != 0 {
                    return Err(fail(format!(
                        "batch_dims {batch_dims} is not mapped to MIL (iOS 15 gather_nd has none)"
                    )));
                }
                self.gather("gather_nd", node, &x, vec![], outs);
            }
            Op::LeakyRelu { alpha } => {
                self.op_params("leaky_relu", &n, x0(), vec![("alpha", Imm::Float(*alpha))], outs);
            }
            Op::HardSigmoid { alpha, beta } => {
                let params = vec![("alpha", Imm::Float(*alpha)), ("beta", Imm::Float(*beta))];
                self.op_params("sigmoid_hard", &n, x0(), params, outs);
            }
            Op::Clip { min, max } => {
                let big = match self.precision {
                    Precision::F32 => f32::MAX,
                    Precision::F16 => 65504.0,
                };
                let params = vec![
                    ("alpha", Imm::Float(min.unwrap_or(-big).max(-big))),
                    ("beta", Imm::Float(max.unwrap_or(big).min(big))),
                ];
                self.op_params("clip", &n, x0(), params, outs);
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
                    ReduceOp::L2 => "reduce_l2_norm",
                    ReduceOp::Max => "reduce_max",
                    ReduceOp::Min => "reduce_min",
                };
                let params = vec![("axes", list(axes)), ("keep_dims", Imm::Bool(*keepdims))];
                self.op_params(ty, &n, x0(), params, outs);
            }
            Op::InstanceNorm { epsilon } => {
                let ins = vec![("x", vec![x[0].clone()]), ("gamma", vec![x[1].clone()]), ("beta", vec![x[2].clone()])];
                self.op_params("instance_norm", &n, ins, vec![("epsilon", Imm::Float(*epsilon))], outs);
            }
            Op::Tile { repeats } => {
                self.op_params("tile", &n, x0(), vec![("reps", list(ints(repeats)))], outs);
            }
            Op::CumSum { axis, exclusive, reverse } => {
                let params = vec![
                    ("axis", Imm::Int(*axis as i32)),
                    ("exclusive", Imm::Bool(*exclusive)),
                    ("reverse", Imm::Bool(*reverse)),
                ];
                self.op_params("cumsum", &n, x0(), params, outs);
            }
            Op::GlobalAveragePool => {
                let rank = in_shape(0).len() as i32;
                let params = vec![("axes", list((2..rank).collect())), ("keep_dims", Imm::Bool(true))];
                self.op_params("reduce_mean", &n, x0(), params, outs);
            }
            Op::MaxPool(p) => {
                if p.dilations.iter().any(|&d| d != 1) {
                    return Err(fail("MIL max_pool has no dilations".into()));
                }
                let params = vec![
                    ("kernel_sizes", list(ints(&p.kernel_shape))),
                    ("strides", list(ints(&p.strides))),
                    ("pad_type", Imm::Str("custom".into())),
                    ("pad", list(begin_end(&ints(&p.pads)))),
                    ("ceil_mode", Imm::Bool(p.ceil_mode)),
                ];
                self.op_params("max_pool", &n, x0(), params, outs);
            }
            Op::AveragePool { window: p, count_include_pad } => {
                let params = vec![
                    ("kernel_sizes", list(ints(&p.kernel_shape))),
                    ("strides", list(ints(&p.strides))),
                    ("pad_type", Imm::Str("custom".into())),
                    ("pad", list(begin_end(&ints(&p.pads)))),
                    ("exclude_padding_from_average", Imm::Bool(!count_include_pad)),
                    ("ceil_mode", Imm::Bool(p.ceil_mode)),
                ];
                self.op_params("avg_pool", &n, x0(), params, outs);
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
                    (s[i] > 0 && r.sizes[i] % s[i] == 0 && r.sizes[i] >= s[i]).then(|| (r.sizes[i] / s[i]) as i32)
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
                let params = vec![("scale_factor_height", Imm::Int(fh)), ("scale_factor_width", Imm::Int(fw))];
                self.op_params("upsample_nearest_neighbor", &n, x0(), params, outs);
            }
            Op::Concat { axis } => {
                let params = vec![("axis", Imm::Int(*axis as i32)), ("interleave", Imm::Bool(false))];
                self.op_params("concat", &n, vec![("values", x.clone())], params, outs);
            }
            Op::Split { axis, split } => {
                let params = vec![("split_sizes", list(ints(split))), ("axis", Imm::Int(*axis as i32))];
                self.op_params("split", &n, x0(), params, outs);
            }
            // Both reshape to their (static) output shape.
            Op::Reshape { .. } | Op::Flatten { .. } => {
                let shape = list(ints(&g.value(node.outputs[0]).ty.shape));
                self.op_params("reshape", &n, x0(), vec![("shape", shape)], outs);
            }
            Op::Transpose { perm } => {
                self.op_params("transpose", &n, x0(), vec![("perm", list(ints(perm)))], outs);
            }
            Op::Unsqueeze { axes } => {
                let axes = list(axes.iter().map(|&a| a as i32).collect());
                self.op_params("expand_dims", &n, x0(), vec![("axes", axes)], outs);
            }
            Op::Softmax { axis } => {
                self.op_params("softmax", &n, x0(), vec![("axis", Imm::Int(*axis as i32))], outs);
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
                        shape::slice_range(s[axis] as i64, sl.starts[i], sl.ends[i], sl.steps[i]).map_err(fail)?;
                    begin[axis] = b as i32;
                    end[axis] = e.max(b) as i32;
                    stride[axis] = sl.steps[i] as i32;
                }
                let params = vec![("begin", list(begin)), ("end", list(end)), ("stride", list(stride))];
                self.op_params("slice_by_index", &n, x0(), params, outs);
            }
            Op::Pad(p) => {
                if p.pads.iter().any(|&v| v < 0) {
                    return Err(fail("negative pads (cropping) are not mapped to MIL".into()));
                }
                let mode = match p.mode {
                    PadMode::Constant => "constant",
                    PadMode::Reflect => "reflect",
                    PadMode::Edge => "replicate",
                };
                let pads: Vec<i32> = p.pads.iter().map(|&v| v as i32).collect();
                let params = vec![
                    ("pad", list(begin_end(&pads))),
                    ("mode", Imm::Str(mode.into())),
                    ("constant_val", Imm::Float(p.value)),
                ];
                self.op_params("pad", &n, x0(), params, outs);
            }
            Op::Gather { axis } => {
                self.gather("gather", node, &x, vec![("axis", Imm::Int(*axis as i32))], outs);
            }
            Op::GatherElements { axis } => {
                // MIL's gather_along_axis wants the indices as large as
                // the data off the axis (ONNX allows them smaller).
                let (data, idx) = (in_shape(0), in_shape(1));
                let ax = fuse_ir::shape::norm_axis(*axis, data.len()).map_err(fail)?;
                if (0..data.len()).any(|d| d != ax && data[d] != idx[d]) {
                    return Err(fail(format!(
                        "indices {idx:?} smaller than the data {data:?} off axis {axis} are not mapped to MIL (gather_along_axis)"
                    )));
                }
                self.gather("gather_along_axis", node, &x, vec![("axis", Imm::Int(*axis as i32))], outs);
            }
            // MIL has no isnan: NaN is the one value not equal to itself.
            Op::IsNaN => self.op("not_equal", &n, vec![("x", vec![x[0].clone()]), ("y", vec![x[0].clone()])], outs),
            Op::MatMul | Op::Gemm(_) => {
                let (trans_a, trans_b) = match &node.op {
                    Op::Gemm(gm) => {
                        if gm.alpha != 1.0 || (x.len() > 2 && gm.beta != 1.0) {
                            return Err(fail("Gemm with alpha or beta other than 1 is not mapped to MIL".into()));
                        }
                        (gm.trans_a, gm.trans_b)
                    }
                    _ => (false, false),
                };
                let params = vec![("transpose_x", Imm::Bool(trans_a)), ("transpose_y", Imm::Bool(trans_b))];
                match x.get(2) {
                    // Gemm's bias: an add after the matmul.
                    Some(c) => {
                        let mm = self.ident(&format!("{n}_matmul"));
                        let mm_ty = outs[0].1.clone();
                        self.op_params("matmul", &mm, xy(), params, vec![(mm.clone(), mm_ty)]);
                        self.op("add", &n, vec![("x", vec![mm]), ("y", vec![c.clone()])], outs);
                    }
                    None => self.op_params("matmul", &n, xy(), params, outs),
                }
            }
            Op::LayerNorm { axis, epsilon } => {
                let rank = in_shape(0).len();
                let first = shape::norm_axis(*axis, rank).map_err(fail)?;
                let mut ins = vec![("x", vec![x[0].clone()]), ("gamma", vec![x[1].clone()])];
                if let Some(b) = x.get(2) {
                    ins.push(("beta", vec![b.clone()]));
                }
                let params =
                    vec![("axes", list((first as i32..rank as i32).collect())), ("epsilon", Imm::Float(*epsilon))];
                self.op_params("layer_norm", &n, ins, params, outs);
            }
            Op::Cast { to } => {
                let dtype = match self.mil_dtype(*to) {
                    DataType::Float16 => "fp16",
                    DataType::Float32 => "fp32",
                    DataType::Int32 => "int32",
                    _ => "bool",
                };
                self.op_params("cast", &n, x0(), vec![("dtype", Imm::Str(dtype.into()))], outs);
            }
            Op::Constant(_) | Op::Shape { .. } => {
                return Err(fail("no MIL mapping: canonicalize folds it before export".into()));
            }
            Op::Einsum { equation } => {
                let shapes: Vec<Vec<usize>> =
                    node.inputs.iter().flatten().map(|v| g.value(*v).ty.shape.clone()).collect();
                let shapes: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
                let plan = fuse_ir::einsum::Equation::parse(equation).and_then(|e| e.lowered(&shapes)).map_err(fail)?;
                let all_summed = plan.operands.iter().zip(&shapes).any(|(o, s)| o.sum_axes.len() == s.len());
                if plan.reshape.is_empty() || all_summed {
                    return Err(fail(
                        "an einsum summing an operand or the result to a scalar is not mapped to MIL".into(),
                    ));
                }
                self.einsum(&n, &plan, &x, &shapes, outs);
            }
            // MViTv2's relative positions written into the attention.
            Op::ScatterNd if g.value(input(0).expect("input")).ty.dtype != DType::Bool => {
                let mut ins = vec![("data", vec![x[0].clone()]), ("updates", vec![x[2].clone()])];
                let mut params = vec![("mode", Imm::Str("update".into()))];
                // Constant indices counted from the end (ONNX allows them;
                // MIL's scatter_nd does not say) are written from the start.
                let idx = g.value(input(1).expect("indices"));
                match (&idx.def, in_shape(0)) {
                    (fuse_ir::ValueDef::Weight(t), data)
                        if t.to_i64_vec().is_some_and(|v| v.iter().any(|&i| i < 0)) =>
                    {
                        // Each index tuple is a position in data's first dimensions.
                        let depth = t.ty().shape.last().copied().unwrap_or(1).max(1);
                        let v = t.to_i64_vec().unwrap_or_default();
                        let fixed: Vec<i32> = v
                            .chunks(depth)
                            .flat_map(|tuple| {
                                tuple.iter().zip(&data).map(|(&i, &d)| if i < 0 { i + d as i64 } else { i })
                            })
                            .map(|i| i as i32)
                            .collect();
                        params.push(("indices", Imm::Ints(fixed, t.ty().shape.clone())));
                    }
                    _ => ins.push(("indices", vec![x[1].clone()])),
                }
                self.op_params("scatter_nd", &n, ins, params, outs);
            }
            // On constants canonicalize folds them (Swin's attention masks);
            // on run-time data only the ONNX export carries them (and a
            // ScatterND of bools).
            Op::Not => self.op("logical_not", &n, x0(), outs),
            Op::Pow => {
                // MIL's pow takes one dtype: an integer exponent becomes a float.
                let mut y = x[1].clone();
                let (tx, ty) =
                    (g.value(input(0).expect("base")).ty.dtype, g.value(input(1).expect("exponent")).ty.dtype);
                if self.mil_dtype(tx) != self.mil_dtype(ty) {
                    let dtype = if self.mil_dtype(tx) == DataType::Float16 { "fp16" } else { "fp32" };
                    y = self.cast(&y, &format!("{n}_exponent"), dtype, &in_shape(1))?;
                }
                self.op("pow", &n, vec![("x", vec![x[0].clone()]), ("y", vec![y])], outs)
            }
            Op::Mod { .. } | Op::Range | Op::ScatterNd => {
                return Err(fail("no MIL mapping yet on run-time values (export ONNX instead)".into()));
            }
            Op::Lstm { .. } => unreachable!("lowered above"),
        }
        self.define(node, out_names)
    }

    /// An einsum as its lowered form ([`fuse_ir::einsum::Lowered`]: MIL's
    /// own `einsum` takes two equations only): per operand a `reduce_sum`,
    /// a `transpose` and a `reshape`, a batched `matmul` of two, then a
    /// `reshape` and a `transpose`; a step that changes nothing is left
    /// out, and the last step is the node's output.
    fn einsum(
        &mut self,
        n: &str,
        plan: &fuse_ir::einsum::Lowered,
        x: &[String],
        shapes: &[&[usize]],
        outs: Vec<(String, ValueType)>,
    ) {
        let last = outs.into_iter().next().expect("an output");
        let prepared = |k: usize| {
            let o = &plan.operands[k];
            ShapeSteps::new(shapes[k]).sum(&o.sum_axes).transpose(&o.perm).reshape(&o.shape)
        };
        if plan.operands.len() == 1 {
            // One operand: its steps are the whole einsum (the output's
            // letters in its own order).
            self.shape_steps(n, x[0].clone(), prepared(0), Some(last));
            return;
        }
        let a = self.shape_steps(n, x[0].clone(), prepared(0), None);
        let b = self.shape_steps(n, x[1].clone(), prepared(1), None);
        let mm_shape = [plan.operands[0].shape[0], plan.operands[0].shape[1], plan.operands[1].shape[2]];
        let post = ShapeSteps::new(&mm_shape).reshape(&plan.reshape).transpose(&plan.perm);
        let params = vec![("transpose_x", Imm::Bool(false)), ("transpose_y", Imm::Bool(false))];
        let ins = vec![("x", vec![a]), ("y", vec![b])];
        if post.steps.is_empty() {
            let name = last.0.clone();
            self.op_params("matmul", &name, ins, params, vec![last]);
            return;
        }
        let mm = self.ident(&format!("{n}_matmul"));
        self.op_params("matmul", &mm, ins, params, vec![(mm.clone(), tensor_type(self.float(), &mm_shape))]);
        self.shape_steps(n, mm, post, Some(last));
    }

    /// Emits `chain` from the value `x`, each step named after `n` and
    /// typed by the shape it gives, the last named and typed `last` when
    /// given (an `identity` when there is no step). Returns the result.
    fn shape_steps(&mut self, n: &str, x: String, chain: ShapeSteps, last: Option<(String, ValueType)>) -> String {
        let count = chain.steps.len();
        if count == 0 {
            if let Some((name, ty)) = last {
                self.op("identity", &name, vec![("x", vec![x])], vec![(name.clone(), ty)]);
                return name;
            }
        }
        let mut cur = x;
        for (i, (ty, params, next)) in chain.steps.into_iter().enumerate() {
            let (name, out_ty) = match &last {
                Some((name, t)) if i + 1 == count => (name.clone(), t.clone()),
                _ => (self.ident(&format!("{n}_{ty}")), tensor_type(self.float(), &next)),
            };
            self.op_params(ty, &name, vec![("x", vec![cur])], params, vec![(name.clone(), out_ty)]);
            cur = name;
        }
        cur
    }

    /// An LSTM (torch's form) as MIL's `lstm`, whose weights are constants
    /// in another order: ONNX stacks the gates input, output, forget, cell,
    /// MIL input, forget, output, cell (peepholes: ONNX input, output,
    /// forget; MIL input, forget, output), and MIL takes one bias, the sum
    /// of ONNX's two. Its states are `[batch, dirs·hidden]` (forward
    /// first), its output `[seq, batch, dirs·hidden]`, made ONNX's `[seq,
    /// dirs, batch, hidden]` by a reshape (and, for two directions, a
    /// transpose). MIL's iOS 15 `lstm` computes in fp32 only: in an fp16
    /// program its run-time inputs are cast up and its output down.
    fn lstm(&mut self, node: &Node, h: usize, direction: LstmDirection, outs: Vec<(String, ValueType)>) -> Res<()> {
        let g = self.g;
        let fail = |msg: String| ExportError::Unmapped(format!("node `{}` ({}): {msg}", node.name, node.op.name()));
        if direction == LstmDirection::Reverse {
            return Err(fail("direction reverse is not mapped to MIL (forward and bidirectional are)".into()));
        }
        let input = |i: usize| node.inputs.get(i).copied().flatten();
        let x_in = input(0).ok_or_else(|| fail("input 0 (X) is missing".into()))?;
        let [seq, batch, inp] = g.value(x_in).ty.shape[..] else {
            return Err(fail(format!("input is {}; expected [sequence, batch, input]", g.value(x_in).ty)));
        };
        // A constant input's values; `None` when it is absent.
        let constant = |i: usize, what: &str| -> Res<Option<Vec<f32>>> {
            let Some(v) = input(i) else { return Ok(None) };
            match &g.value(v).def {
                ValueDef::Weight(t) => Ok(Some(t.to_f32_lossy())),
                _ => Err(fail(format!(
                    "{what} `{}` is computed at run time; MIL's lstm takes constant weights and no sequence lengths",
                    g.value(v).name
                ))),
            }
        };
        if let Some(lens) = constant(4, "sequence_lens")? {
            if lens.iter().any(|&l| l != seq as f32) {
                return Err(fail(format!(
                    "sequence_lens {lens:?} other than the sequence length ({seq}) are not mapped to MIL"
                )));
            }
        }
        let dirs = direction.count();
        let w = constant(1, "W")?.ok_or_else(|| fail("input 1 (W) is missing".into()))?;
        let r = constant(2, "R")?.ok_or_else(|| fail("input 2 (R) is missing".into()))?;
        let b = constant(3, "B")?;
        let p = constant(7, "P")?;
        let n = outs[0].0.clone();
        let f32_ty = |shape: &[usize]| tensor_type(DataType::Float32, shape);
        let mut x = self.arg(x_in)?;
        if self.precision == Precision::F16 {
            let up = self.ident(&format!("{n}_x_fp32"));
            x = self.cast(&x, &up, "fp32", &g.value(x_in).ty.shape)?;
        }
        let mut ins: Vec<(&str, Vec<String>)> = vec![("x", vec![x])];
        // Initial states: [dirs, batch, hidden] -> [batch, dirs·hidden].
        for (i, key) in [(5, "initial_h"), (6, "initial_c")] {
            let state_shape = [batch, dirs * h];
            let state = match input(i) {
                None => self.const_f32(&format!("{n}_{key}"), &vec![0.0; batch * dirs * h], &state_shape)?,
                Some(v) => match &g.value(v).def {
                    ValueDef::Weight(t) => {
                        let d = t.to_f32_lossy();
                        let mut out = Vec::with_capacity(d.len());
                        for bi in 0..batch {
                            for di in 0..dirs {
                                out.extend_from_slice(&d[(di * batch + bi) * h..][..h]);
                            }
                        }
                        self.const_f32(&format!("{n}_{key}"), &out, &state_shape)?
                    }
                    _ => {
                        let mut s = self.arg(v)?;
                        if self.precision == Precision::F16 {
                            let up = self.ident(&format!("{n}_{key}_fp32"));
                            s = self.cast(&s, &up, "fp32", &[dirs, batch, h])?;
                        }
                        let t = self.ident(&format!("{n}_{key}_t"));
                        let perm = dims(&[1, 0, 2]);
                        let t_ty = f32_ty(&[batch, dirs, h]);
                        self.op_params(
                            "transpose",
                            &t,
                            vec![("x", vec![s])],
                            vec![("perm", perm)],
                            vec![(t.clone(), t_ty)],
                        );
                        let flat = self.ident(&format!("{n}_{key}"));
                        let shape = dims(&state_shape);
                        let ins = vec![("x", vec![t])];
                        self.op_params(
                            "reshape",
                            &flat,
                            ins,
                            vec![("shape", shape)],
                            vec![(flat.clone(), f32_ty(&state_shape))],
                        );
                        flat
                    }
                },
            };
            ins.push((key, vec![state]));
        }
        // Rows of `block` rows each, taken in `order`.
        let gates = |data: &[f32], block: usize, order: &[usize]| -> Vec<f32> {
            order.iter().flat_map(|&k| data[k * block..(k + 1) * block].iter().copied()).collect()
        };
        const IFOC: [usize; 4] = [0, 2, 1, 3];
        for d in 0..dirs {
            let back = if d == 0 { "" } else { "_back" };
            let wd = &w[d * 4 * h * inp..(d + 1) * 4 * h * inp];
            let rd = &r[d * 4 * h * h..(d + 1) * 4 * h * h];
            let wn = self.const_f32(&format!("{n}_weight_ih{back}"), &gates(wd, h * inp, &IFOC), &[4 * h, inp])?;
            let rn = self.const_f32(&format!("{n}_weight_hh{back}"), &gates(rd, h * h, &IFOC), &[4 * h, h])?;
            ins.push((if d == 0 { "weight_ih" } else { "weight_ih_back" }, vec![wn]));
            ins.push((if d == 0 { "weight_hh" } else { "weight_hh_back" }, vec![rn]));
            if let Some(b) = &b {
                let bd = &b[d * 8 * h..(d + 1) * 8 * h];
                let sum: Vec<f32> = (0..4 * h).map(|j| bd[j] + bd[4 * h + j]).collect();
                let bn = self.const_f32(&format!("{n}_bias{back}"), &gates(&sum, h, &IFOC), &[4 * h])?;
                ins.push((if d == 0 { "bias" } else { "bias_back" }, vec![bn]));
            }
            if let Some(p) = &p {
                let pd = &p[d * 3 * h..(d + 1) * 3 * h];
                let pn = self.const_f32(&format!("{n}_peephole{back}"), &gates(pd, h, &[0, 2, 1]), &[3 * h])?;
                ins.push((if d == 0 { "peephole" } else { "peephole_back" }, vec![pn]));
            }
        }
        let y = self.ident(&format!("{n}_sequence"));
        let (hn, cn) = (self.ident(&format!("{n}_h")), self.ident(&format!("{n}_c")));
        let params = vec![
            ("direction", Imm::Str(direction.name().into())),
            ("output_sequence", Imm::Bool(true)),
            ("recurrent_activation", Imm::Str("sigmoid".into())),
            ("cell_activation", Imm::Str("tanh".into())),
            ("activation", Imm::Str("tanh".into())),
        ];
        let lstm_outs = vec![
            (y.clone(), f32_ty(&[seq, batch, dirs * h])),
            (hn, f32_ty(&[batch, dirs * h])),
            (cn, f32_ty(&[batch, dirs * h])),
        ];
        let op_name = self.ident(&format!("{n}_lstm"));
        self.op_params("lstm", &op_name, ins, params, lstm_outs);
        // [seq, batch, dirs·hidden] -> [seq, dirs, batch, hidden].
        let f16 = self.precision == Precision::F16;
        let last = if f16 { self.ident(&format!("{n}_fp32")) } else { n.clone() };
        let last_outs = vec![(last.clone(), f32_ty(&[seq, dirs, batch, h]))];
        if dirs == 1 {
            self.op_params(
                "reshape",
                &last,
                vec![("x", vec![y])],
                vec![("shape", dims(&[seq, 1, batch, h]))],
                last_outs,
            );
        } else {
            let split = self.ident(&format!("{n}_dirs"));
            let split_outs = vec![(split.clone(), f32_ty(&[seq, batch, dirs, h]))];
            let shape = dims(&[seq, batch, dirs, h]);
            self.op_params("reshape", &split, vec![("x", vec![y])], vec![("shape", shape)], split_outs);
            let perm = dims(&[0, 2, 1, 3]);
            self.op_params("transpose", &last, vec![("x", vec![split])], vec![("perm", perm)], last_outs);
        }
        if f16 {
            self.cast(&last, &n, "fp16", &[seq, dirs, batch, h])?;
        }
        Ok(())
    }

    /// `node`'s gather (`ty`: `gather` or `gather_nd`) of `x[0]` by `x[1]`,
    /// with constant `params`. MIL gathers numbers only: a bool tensor goes
    /// through int32 and back.
    fn gather(
        &mut self,
        ty: &str,
        node: &fuse_ir::Node,
        x: &[String],
        params: Vec<(&'static str, Imm)>,
        outs: Vec<(String, ValueType)>,
    ) {
        let g = self.g;
        let n = outs[0].0.clone();
        let src = &g.value(node.inputs[0].expect("a gather has its input")).ty;
        let out_shape = &g.value(node.outputs[0]).ty.shape;
        if src.dtype != DType::Bool {
            self.op_params(ty, &n, vec![("x", vec![x[0].clone()]), ("indices", vec![x[1].clone()])], params, outs);
            return;
        }
        let as_int = self.ident(&format!("{n}_int"));
        let to_int = vec![("dtype", Imm::Str("int32".into()))];
        let int_ty = tensor_type(DataType::Int32, &src.shape);
        self.op_params("cast", &as_int, vec![("x", vec![x[0].clone()])], to_int, vec![(as_int.clone(), int_ty)]);
        let got = self.ident(&format!("{n}_gathered"));
        let got_ty = tensor_type(DataType::Int32, out_shape);
        let ins = vec![("x", vec![as_int]), ("indices", vec![x[1].clone()])];
        self.op_params(ty, &got, ins, params, vec![(got.clone(), got_ty)]);
        let to_bool = vec![("dtype", Imm::Str("bool".into()))];
        self.op_params("cast", &n, vec![("x", vec![got])], to_bool, outs);
    }

    /// `x` (of shape `src`) broadcast to `out_shape` with `tile` (a
    /// lower-rank `x` first reshaped with leading 1s, as ONNX aligns shapes
    /// from the right); named `out`'s name when given, else a fresh name
    /// after `base`. Returns the name.
    fn broadcast_to(
        &mut self,
        base: &str,
        x: String,
        mut src: Vec<usize>,
        out_shape: &[usize],
        dt: DataType,
        out: Option<Vec<(String, ValueType)>>,
    ) -> String {
        let mut xin = x;
        if src.len() < out_shape.len() {
            let mut padded = vec![1usize; out_shape.len() - src.len()];
            padded.extend(&src);
            let r = self.ident(&format!("{base}_rank"));
            let shape = dims(&padded);
            let ty = tensor_type(dt, &padded);
            self.op_params("reshape", &r, vec![("x", vec![xin])], vec![("shape", shape)], vec![(r.clone(), ty)]);
            xin = r;
            src = padded;
        }
        let reps: Vec<i32> = src.iter().zip(out_shape).map(|(&a, &b)| (b / a.max(1)) as i32).collect();
        let outs = out.unwrap_or_else(|| {
            let name = self.ident(base);
            vec![(name, tensor_type(dt, out_shape))]
        });
        let name = outs[0].0.clone();
        self.op_params("tile", &name, vec![("x", vec![xin])], vec![("reps", list(reps))], outs);
        name
    }

    /// Records the MIL names of a lowered node's outputs.
    fn define(&mut self, node: &Node, out_names: Vec<String>) -> Result<(), ExportError> {
        for (&o, name) in node.outputs.iter().zip(out_names) {
            self.defined.insert(o, name);
        }
        Ok(())
    }
}

/// ONNX pads `[begin.., end..]` as MIL orders them: `[begin0, end0, begin1, end1, ..]`.
fn begin_end(pads: &[i32]) -> Vec<i32> {
    let r = pads.len() / 2;
    (0..r).flat_map(|i| [pads[i], pads[i + r]]).collect()
}

pub fn tensor_type(dt: DataType, shape: &[usize]) -> ValueType {
    let dimensions = shape
        .iter()
        .map(|&d| Dimension {
            dimension: Some(dimension::Dimension::Constant(dimension::ConstantDimension { size: d as u64 })),
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
            value: Some(value::immediate_value::Value::Tensor(TensorValue { value: Some(tv) })),
        })),
    }
}

fn imm_value(v: Imm, float: DataType) -> MilValue {
    match v {
        Imm::Ints(values, shape) => immediate(
            tensor_type(DataType::Int32, &shape),
            tensor_value::Value::Ints(tensor_value::RepeatedInts { values }),
        ),
        Imm::Bools(values, shape) => immediate(
            tensor_type(DataType::Bool, &shape),
            tensor_value::Value::Bools(tensor_value::RepeatedBools { values }),
        ),
        Imm::Int(x) => immediate(
            tensor_type(DataType::Int32, &[]),
            tensor_value::Value::Ints(tensor_value::RepeatedInts { values: vec![x] }),
        ),
        Imm::Float(x) => match float {
            DataType::Float16 => immediate(
                tensor_type(DataType::Float16, &[]),
                tensor_value::Value::Bytes(tensor_value::RepeatedBytes { values: f16_bytes(&[x]) }),
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

/// Two static shapes broadcast together (ONNX rules, aligned from the right).
fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let n = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i + s.len() >= n { s[i + s.len() - n] } else { 1 };
    (0..n).map(|i| at(a, i).max(at(b, i))).collect()
}

fn str_value(s: &str) -> MilValue {
    immediate(
        tensor_type(DataType::String, &[]),
        tensor_value::Value::Strings(tensor_value::RepeatedStrings { values: vec![s.to_string()] }),
    )
}

fn f16_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|&x| fuse_ir::saturated_f16(x).to_le_bytes()).collect()
}
