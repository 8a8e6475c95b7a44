//! The closed set of operators fusec understands.
//!
//! Static parameters that some ONNX opsets pass as inputs (axes, pads,
//! sizes, split, min/max, shape) are attributes here: the IR is static, so
//! the frontend resolves them once and every pass and exporter reads one
//! form. Inputs are only the tensors the op computes on.

use std::fmt::Write;

use crate::{DType, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// The smaller of the two (ONNX Min of two inputs).
    Min,
    /// The larger of the two (ONNX Max of two inputs).
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Sigmoid,
    Relu,
    Tanh,
    Identity,
    HardSwish,
    Erf,
    Sqrt,
    /// Exact GELU, `x · Φ(x)` (ONNX opset 20's `Gelu`, approximate "none").
    Gelu,
    Ceil,
    Floor,
    Sin,
    Cos,
    Exp,
    Log,
    Neg,
    Abs,
    Reciprocal,
}

/// Elementwise comparisons with numpy broadcasting: inputs `a, b` of one
/// dtype, a bool output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Equal,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

impl CompareOp {
    /// The comparison of `p` with `q`.
    pub fn apply<T: PartialOrd>(self, p: T, q: T) -> bool {
        match self {
            CompareOp::Equal => p == q,
            CompareOp::Greater => p > q,
            CompareOp::GreaterOrEqual => p >= q,
            CompareOp::Less => p < q,
            CompareOp::LessOrEqual => p <= q,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Mean,
    /// The square root of the sum of squares.
    L2,
    Max,
    Min,
}

/// Conv: inputs `x, w, [b]`. `pads` is `[begin.., end..]`, auto_pad resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    pub kernel_shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub group: usize,
}

/// A pooling window (MaxPool, AveragePool): input `x`. MaxPool: only the
/// first output (no indices).
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub kernel_shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub ceil_mode: bool,
}

/// BatchNormalization (inference): inputs `x, scale, bias, mean, var`.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    pub epsilon: f32,
}

/// Gemm: inputs `a, b, [c]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    Nearest,
    Linear,
    Cubic,
}

/// Resize: input `x`. `sizes` is the full output shape; `scales`, when the
/// source gave scales, is kept because the coordinate transform uses it.
#[derive(Clone, Debug, PartialEq)]
pub struct Resize {
    pub mode: ResizeMode,
    pub coordinate_transformation_mode: String,
    pub nearest_mode: String,
    pub cubic_coeff_a: f32,
    pub exclude_outside: bool,
    pub extrapolation_value: f32,
    pub scales: Option<Vec<f32>>,
    pub sizes: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
}

/// Pad: input `x`. `pads` is `[begin.., end..]` over every axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Pad {
    pub mode: PadMode,
    pub pads: Vec<i64>,
    pub value: f32,
}

/// Slice: input `x`, every parameter resolved and as long as `axes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    pub axes: Vec<i64>,
    pub steps: Vec<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Conv(Conv),
    BatchNorm(BatchNorm),
    Gemm(Gemm),
    /// MatMul: inputs `a, b` with numpy broadcasting.
    MatMul,
    /// Einsum over its inputs, `equation` in the explicit form
    /// ([`crate::einsum::Equation::text`]: no spaces, `->` and the output
    /// spelled out).
    Einsum {
        equation: String,
    },
    /// Elementwise with numpy broadcasting: inputs `a, b`.
    Binary(BinaryOp),
    Unary(UnaryOp),
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// `x` where positive, else `alpha · x`.
    LeakyRelu {
        alpha: f32,
    },
    Clip {
        min: Option<f32>,
        max: Option<f32>,
    },
    /// `axes: None` reduces every axis.
    Reduce {
        op: ReduceOp,
        axes: Option<Vec<i64>>,
        keepdims: bool,
    },
    MaxPool(Pool),
    /// AveragePool; `count_include_pad`: padding counts in the divisor.
    AveragePool {
        window: Pool,
        count_include_pad: bool,
    },
    GlobalAveragePool,
    Resize(Resize),
    Concat {
        axis: i64,
    },
    /// Gather: inputs `data, indices`.
    Gather {
        axis: i64,
    },
    Unsqueeze {
        axes: Vec<i64>,
    },
    Slice(Slice),
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Constant(Tensor),
    /// Reshape to a resolved static shape.
    Reshape {
        shape: Vec<usize>,
    },
    Transpose {
        perm: Vec<usize>,
    },
    Flatten {
        axis: i64,
    },
    Softmax {
        axis: i64,
    },
    Pad(Pad),
    Split {
        axis: i64,
        split: Vec<usize>,
    },
    /// LayerNormalization: inputs `x, scale, [bias]`.
    LayerNorm {
        axis: i64,
        epsilon: f32,
    },
    Cast {
        to: DType,
    },
    Compare(CompareOp),
    /// Logical and of two bool tensors, broadcast.
    And,
    /// Where: inputs `condition` (bool), `x`, `y`, broadcast together.
    Where,
    /// Expand: input `x` broadcast with the static `shape`.
    Expand {
        shape: Vec<usize>,
    },
    /// GatherND: inputs `data`, `indices` (i64).
    GatherNd {
        batch_dims: usize,
    },
    /// Logical not of a bool tensor.
    Not,
    /// IsNaN: a bool tensor, true where the float input is NaN.
    IsNaN,
    /// GatherElements: inputs `data`, `indices` (i64, the rank of `data`);
    /// the output has the indices' shape, `data` read along `axis` at each.
    GatherElements {
        axis: i64,
    },
    /// Mod of two tensors of one dtype, broadcast: the sign of the divisor
    /// (Python's `%`), or of the dividend with `fmod` (C's `fmod`).
    Mod {
        fmod: bool,
    },
    /// Pow: `x ^ y`, broadcast; the output has `x`'s dtype.
    Pow,
    /// Range: scalar inputs `start, limit, delta` of one dtype; the length
    /// follows from their values, which must be known before run time.
    Range,
    /// ScatterND (no reduction): inputs `data`, `indices` (i64), `updates`.
    ScatterNd,
    /// Tile: input `x` repeated `repeats[i]` times along axis `i`.
    Tile {
        repeats: Vec<usize>,
    },
    /// CumSum: input `x`, summed along the static `axis`.
    CumSum {
        axis: i64,
        exclusive: bool,
        reverse: bool,
    },
    /// InstanceNormalization: inputs `x, scale, bias` (`[C]` each); each
    /// channel of each sample normalized over the spatial axes.
    InstanceNorm {
        epsilon: f32,
    },
    /// LSTM (ONNX layout 0, the default activations, no clip or coupled
    /// gates): inputs `x [seq, batch, in], w [dirs, 4·hidden, in],
    /// r [dirs, 4·hidden, hidden], [b], [sequence_lens], [initial_h],
    /// [initial_c], [p]`; one output, `y [seq, dirs, batch, hidden]`
    /// (the last states `Y_h`, `Y_c` are not read).
    Lstm {
        hidden_size: usize,
        direction: LstmDirection,
    },
}

/// Which way an LSTM runs over the sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LstmDirection {
    Forward,
    Reverse,
    Bidirectional,
}

impl LstmDirection {
    /// The ONNX attribute value.
    pub fn name(self) -> &'static str {
        match self {
            LstmDirection::Forward => "forward",
            LstmDirection::Reverse => "reverse",
            LstmDirection::Bidirectional => "bidirectional",
        }
    }
    pub fn count(self) -> usize {
        if self == LstmDirection::Bidirectional {
            2
        } else {
            1
        }
    }
}

impl Op {
    /// One input, each element mapped alone: a unary op, HardSigmoid,
    /// LeakyRelu, Clip, Cast or IsNaN.
    pub fn is_elementwise_unary(&self) -> bool {
        matches!(
            self,
            Op::Unary(_)
                | Op::HardSigmoid { .. }
                | Op::LeakyRelu { .. }
                | Op::Clip { .. }
                | Op::Cast { .. }
                | Op::IsNaN
        )
    }

    /// The ONNX operator type this op corresponds to.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::BatchNorm(_) => "BatchNormalization",
            Op::Gemm(_) => "Gemm",
            Op::MatMul => "MatMul",
            Op::Einsum { .. } => "Einsum",
            Op::Binary(BinaryOp::Add) => "Add",
            Op::Binary(BinaryOp::Sub) => "Sub",
            Op::Binary(BinaryOp::Mul) => "Mul",
            Op::Binary(BinaryOp::Div) => "Div",
            Op::Binary(BinaryOp::Min) => "Min",
            Op::Binary(BinaryOp::Max) => "Max",
            Op::Unary(UnaryOp::Sigmoid) => "Sigmoid",
            Op::Unary(UnaryOp::Relu) => "Relu",
            Op::Unary(UnaryOp::Tanh) => "Tanh",
            Op::Unary(UnaryOp::Identity) => "Identity",
            Op::Unary(UnaryOp::HardSwish) => "HardSwish",
            Op::Unary(UnaryOp::Erf) => "Erf",
            Op::Unary(UnaryOp::Sqrt) => "Sqrt",
            Op::Unary(UnaryOp::Gelu) => "Gelu",
            Op::Unary(UnaryOp::Ceil) => "Ceil",
            Op::Unary(UnaryOp::Floor) => "Floor",
            Op::Unary(UnaryOp::Sin) => "Sin",
            Op::Unary(UnaryOp::Cos) => "Cos",
            Op::Unary(UnaryOp::Exp) => "Exp",
            Op::Unary(UnaryOp::Log) => "Log",
            Op::Unary(UnaryOp::Neg) => "Neg",
            Op::Unary(UnaryOp::Abs) => "Abs",
            Op::Unary(UnaryOp::Reciprocal) => "Reciprocal",
            Op::Tile { .. } => "Tile",
            Op::CumSum { .. } => "CumSum",
            Op::InstanceNorm { .. } => "InstanceNormalization",
            Op::Lstm { .. } => "LSTM",
            Op::Compare(CompareOp::Equal) => "Equal",
            Op::Compare(CompareOp::Greater) => "Greater",
            Op::Compare(CompareOp::GreaterOrEqual) => "GreaterOrEqual",
            Op::Compare(CompareOp::Less) => "Less",
            Op::Compare(CompareOp::LessOrEqual) => "LessOrEqual",
            Op::And => "And",
            Op::Where => "Where",
            Op::Expand { .. } => "Expand",
            Op::GatherNd { .. } => "GatherND",
            Op::Not => "Not",
            Op::IsNaN => "IsNaN",
            Op::GatherElements { .. } => "GatherElements",
            Op::Mod { .. } => "Mod",
            Op::Pow => "Pow",
            Op::Range => "Range",
            Op::ScatterNd => "ScatterND",
            Op::HardSigmoid { .. } => "HardSigmoid",
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::Clip { .. } => "Clip",
            Op::Reduce { op: ReduceOp::Sum, .. } => "ReduceSum",
            Op::Reduce { op: ReduceOp::Mean, .. } => "ReduceMean",
            Op::Reduce { op: ReduceOp::L2, .. } => "ReduceL2",
            Op::Reduce { op: ReduceOp::Max, .. } => "ReduceMax",
            Op::Reduce { op: ReduceOp::Min, .. } => "ReduceMin",
            Op::MaxPool(_) => "MaxPool",
            Op::AveragePool { .. } => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::Resize(_) => "Resize",
            Op::Concat { .. } => "Concat",
            Op::Gather { .. } => "Gather",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Slice(_) => "Slice",
            Op::Shape { .. } => "Shape",
            Op::Constant(_) => "Constant",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Flatten { .. } => "Flatten",
            Op::Softmax { .. } => "Softmax",
            Op::Pad(_) => "Pad",
            Op::Split { .. } => "Split",
            Op::LayerNorm { .. } => "LayerNormalization",
            Op::Cast { .. } => "Cast",
        }
    }

    /// Attributes in a fixed order, for the text form (`{k=v, ...}`), empty
    /// when the op has none.
    pub fn attrs_text(&self) -> String {
        let mut s = String::new();
        let mut kv = |k: &str, v: String| {
            if !s.is_empty() {
                s.push_str(", ");
            }
            let _ = write!(s, "{k}={v}");
        };
        match self {
            Op::Conv(c) => {
                kv("kernel", list(&c.kernel_shape));
                kv("strides", list(&c.strides));
                kv("pads", list(&c.pads));
                kv("dilations", list(&c.dilations));
                kv("group", c.group.to_string());
            }
            Op::MaxPool(p) | Op::AveragePool { window: p, .. } => {
                kv("kernel", list(&p.kernel_shape));
                kv("strides", list(&p.strides));
                kv("pads", list(&p.pads));
                kv("dilations", list(&p.dilations));
                kv("ceil", p.ceil_mode.to_string());
                if let Op::AveragePool { count_include_pad, .. } = self {
                    kv("count_include_pad", count_include_pad.to_string());
                }
            }
            Op::BatchNorm(b) => kv("eps", fmt_f32(b.epsilon)),
            Op::Gemm(g) => {
                kv("alpha", fmt_f32(g.alpha));
                kv("beta", fmt_f32(g.beta));
                kv("trans_a", g.trans_a.to_string());
                kv("trans_b", g.trans_b.to_string());
            }
            Op::HardSigmoid { alpha, beta } => {
                kv("alpha", fmt_f32(*alpha));
                kv("beta", fmt_f32(*beta));
            }
            Op::LeakyRelu { alpha } => kv("alpha", fmt_f32(*alpha)),
            Op::Clip { min, max } => {
                kv("min", min.map(fmt_f32).unwrap_or_else(|| "-".into()));
                kv("max", max.map(fmt_f32).unwrap_or_else(|| "-".into()));
            }
            Op::Reduce { axes, keepdims, .. } => {
                kv("axes", axes.as_ref().map(|a| list(a)).unwrap_or_else(|| "all".into()));
                kv("keepdims", keepdims.to_string());
            }
            Op::Resize(r) => {
                kv("mode", format!("{:?}", r.mode).to_lowercase());
                kv("coord", r.coordinate_transformation_mode.clone());
                kv("nearest", r.nearest_mode.clone());
                if r.mode == ResizeMode::Cubic {
                    kv("cubic_a", fmt_f32(r.cubic_coeff_a));
                    kv("exclude_outside", r.exclude_outside.to_string());
                }
                if let Some(sc) = &r.scales {
                    kv("scales", format!("[{}]", sc.iter().map(|x| fmt_f32(*x)).collect::<Vec<_>>().join(",")));
                }
                kv("sizes", list(&r.sizes));
            }
            Op::Concat { axis } | Op::Gather { axis } | Op::Flatten { axis } | Op::Softmax { axis } => {
                kv("axis", axis.to_string())
            }
            Op::Unsqueeze { axes } => kv("axes", list(axes)),
            Op::Slice(sl) => {
                kv("starts", list(&sl.starts));
                kv("ends", list(&sl.ends));
                kv("axes", list(&sl.axes));
                kv("steps", list(&sl.steps));
            }
            Op::Shape { start, end } => {
                kv("start", start.to_string());
                if let Some(e) = end {
                    kv("end", e.to_string());
                }
            }
            Op::Constant(t) => kv("value", format!("{} #{}", t.ty(), t.digest())),
            Op::Reshape { shape } => kv("shape", list(shape)),
            Op::Mod { fmod } => kv("fmod", fmod.to_string()),
            Op::Transpose { perm } => kv("perm", list(perm)),
            Op::Pad(p) => {
                kv("mode", format!("{:?}", p.mode).to_lowercase());
                kv("pads", list(&p.pads));
                kv("value", fmt_f32(p.value));
            }
            Op::Split { axis, split } => {
                kv("axis", axis.to_string());
                kv("split", list(split));
            }
            Op::LayerNorm { axis, epsilon } => {
                kv("axis", axis.to_string());
                kv("eps", fmt_f32(*epsilon));
            }
            Op::Cast { to } => kv("to", to.name().to_string()),
            Op::Expand { shape } => kv("shape", list(shape)),
            Op::GatherNd { batch_dims } => kv("batch_dims", batch_dims.to_string()),
            Op::GatherElements { axis } => kv("axis", axis.to_string()),
            Op::Tile { repeats } => kv("repeats", list(repeats)),
            Op::CumSum { axis, exclusive, reverse } => {
                kv("axis", axis.to_string());
                kv("exclusive", exclusive.to_string());
                kv("reverse", reverse.to_string());
            }
            Op::InstanceNorm { epsilon } => kv("eps", fmt_f32(*epsilon)),
            Op::Einsum { equation } => kv("equation", equation.clone()),
            Op::Lstm { hidden_size, direction } => {
                kv("hidden", hidden_size.to_string());
                kv("direction", direction.name().to_string());
            }
            Op::MatMul
            | Op::Binary(_)
            | Op::Unary(_)
            | Op::GlobalAveragePool
            | Op::Compare(_)
            | Op::And
            | Op::Where
            | Op::Not
            | Op::IsNaN
            | Op::Pow
            | Op::Range
            | Op::ScatterNd => {}
        }
        s
    }
}

fn list<T: ToString>(v: &[T]) -> String {
    format!("[{}]", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","))
}

/// Shortest text that reads back as the same f32.
pub fn fmt_f32(x: f32) -> String {
    format!("{x:?}")
}
