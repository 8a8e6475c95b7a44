//! Elementwise arithmetic and activations, comparisons and logic,
//! reductions, running sums, casts.

use fuse_ir::*;

use super::super::attrs::{Attrs, Ctx};
use super::Converted;

/// The ONNX ops this family converts.
pub(super) const OPS: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Min",
    "Max",
    "Sigmoid",
    "Relu",
    "Tanh",
    "Identity",
    "HardSwish",
    "HardSigmoid",
    "LeakyRelu",
    "Clip",
    "ReduceSum",
    "ReduceMean",
    "ReduceL2",
    "ReduceMax",
    "ReduceMin",
    "Cast",
    "Erf",
    "Sqrt",
    "Gelu",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "And",
    "Not",
    "IsNaN",
    "Where",
    "Mod",
    "Pow",
    "Ceil",
    "Floor",
    "Sin",
    "Cos",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Reciprocal",
    "CumSum",
];

pub(super) fn convert(c: &Ctx, opset: i64) -> Result<Converted, String> {
    let a = Attrs(c.node);
    let x = || c.req(0);
    let node = c.node;
    Ok(match node.op_type.as_str() {
        "Add" => c.on_inputs(Op::Binary(BinaryOp::Add), 2)?,
        "Sub" => c.on_inputs(Op::Binary(BinaryOp::Sub), 2)?,
        "Mul" => c.on_inputs(Op::Binary(BinaryOp::Mul), 2)?,
        "Div" => c.on_inputs(Op::Binary(BinaryOp::Div), 2)?,
        // Variadic in ONNX; torch exports two operands.
        "Min" | "Max" if node.input.len() != 2 => {
            return Err(format!("{} of {} inputs is not supported (two are)", node.op_type, node.input.len()))
        }
        "Min" => c.on_inputs(Op::Binary(BinaryOp::Min), 2)?,
        "Max" => c.on_inputs(Op::Binary(BinaryOp::Max), 2)?,
        "Sigmoid" => c.on_inputs(Op::Unary(UnaryOp::Sigmoid), 1)?,
        "Relu" => c.on_inputs(Op::Unary(UnaryOp::Relu), 1)?,
        "Tanh" => c.on_inputs(Op::Unary(UnaryOp::Tanh), 1)?,
        "Identity" => c.on_inputs(Op::Unary(UnaryOp::Identity), 1)?,
        "HardSwish" => c.on_inputs(Op::Unary(UnaryOp::HardSwish), 1)?,
        "LeakyRelu" => c.on_inputs(Op::LeakyRelu { alpha: a.float("alpha", 0.01) }, 1)?,
        "HardSigmoid" => {
            c.on_inputs(Op::HardSigmoid { alpha: a.float("alpha", 0.2), beta: a.float("beta", 0.5) }, 1)?
        }
        "Clip" => {
            let op = Op::Clip { min: c.scalar(1, "min")?, max: c.scalar(2, "max")? };
            (op, vec![Some(x()?)])
        }
        "ReduceSum" | "ReduceMean" | "ReduceL2" | "ReduceMax" | "ReduceMin" => {
            let kind = match node.op_type.as_str() {
                "ReduceSum" => ReduceOp::Sum,
                "ReduceMean" => ReduceOp::Mean,
                "ReduceMax" => ReduceOp::Max,
                "ReduceMin" => ReduceOp::Min,
                _ => ReduceOp::L2,
            };
            let axes_as_input = if kind == ReduceOp::Sum { opset >= 13 } else { opset >= 18 };
            let axes = if axes_as_input { c.ints(1, "axes")? } else { a.ints("axes") };
            let axes = axes.filter(|v| !v.is_empty());
            if axes.is_none() && a.int("noop_with_empty_axes", 0) != 0 {
                return c.on_inputs(Op::Unary(UnaryOp::Identity), 1);
            }
            (Op::Reduce { op: kind, axes, keepdims: a.int("keepdims", 1) != 0 }, vec![Some(x()?)])
        }
        "Cast" => {
            let to = a.int("to", 0) as i32;
            let to = DType::from_onnx(to).ok_or_else(|| format!("cast to unsupported type {to}"))?;
            c.on_inputs(Op::Cast { to }, 1)?
        }
        "Erf" => c.on_inputs(Op::Unary(UnaryOp::Erf), 1)?,
        "Sqrt" => c.on_inputs(Op::Unary(UnaryOp::Sqrt), 1)?,
        "Gelu" => match a.string("approximate", "none").as_str() {
            "none" => c.on_inputs(Op::Unary(UnaryOp::Gelu), 1)?,
            other => return Err(format!("Gelu with approximate `{other}` is not supported (only the exact form)")),
        },
        "Equal" => c.on_inputs(Op::Compare(CompareOp::Equal), 2)?,
        "Greater" => c.on_inputs(Op::Compare(CompareOp::Greater), 2)?,
        "GreaterOrEqual" => c.on_inputs(Op::Compare(CompareOp::GreaterOrEqual), 2)?,
        "Less" => c.on_inputs(Op::Compare(CompareOp::Less), 2)?,
        "LessOrEqual" => c.on_inputs(Op::Compare(CompareOp::LessOrEqual), 2)?,
        "And" => c.on_inputs(Op::And, 2)?,
        "Not" => c.on_inputs(Op::Not, 1)?,
        "IsNaN" => c.on_inputs(Op::IsNaN, 1)?,
        "Mod" => c.on_inputs(Op::Mod { fmod: a.int("fmod", 0) != 0 }, 2)?,
        "Pow" => c.on_inputs(Op::Pow, 2)?,
        "Ceil" => c.on_inputs(Op::Unary(UnaryOp::Ceil), 1)?,
        "Floor" => c.on_inputs(Op::Unary(UnaryOp::Floor), 1)?,
        "Sin" => c.on_inputs(Op::Unary(UnaryOp::Sin), 1)?,
        "Cos" => c.on_inputs(Op::Unary(UnaryOp::Cos), 1)?,
        "Exp" => c.on_inputs(Op::Unary(UnaryOp::Exp), 1)?,
        "Log" => c.on_inputs(Op::Unary(UnaryOp::Log), 1)?,
        "Neg" => c.on_inputs(Op::Unary(UnaryOp::Neg), 1)?,
        "Abs" => c.on_inputs(Op::Unary(UnaryOp::Abs), 1)?,
        "Reciprocal" => c.on_inputs(Op::Unary(UnaryOp::Reciprocal), 1)?,
        "CumSum" => {
            let axis = match c.ints(1, "axis")?.as_deref() {
                Some([axis]) => *axis,
                _ => return Err("CumSum needs a scalar axis".into()),
            };
            let op = Op::CumSum { axis, exclusive: a.int("exclusive", 0) != 0, reverse: a.int("reverse", 0) != 0 };
            (op, vec![Some(x()?)])
        }
        "Where" => c.on_inputs(Op::Where, 3)?,
        other => return Err(format!("unsupported op `{other}`")),
    })
}
