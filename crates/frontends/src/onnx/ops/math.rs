//! Elementwise arithmetic and activations, comparisons and logic,
//! reductions, casts.

use fuse_ir::*;

use super::super::attrs::{Attrs, Ctx};
use super::Converted;

/// The ONNX ops this family converts.
pub(super) const OPS: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sigmoid",
    "Relu",
    "Tanh",
    "Identity",
    "HardSwish",
    "HardSigmoid",
    "Clip",
    "ReduceSum",
    "ReduceMean",
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
    "Where",
];

pub(super) fn convert(c: &Ctx, opset: i64) -> Result<Converted, String> {
    let a = Attrs(c.node);
    let x = || c.req(0);
    let unary = |op: Op| -> Result<Converted, String> { Ok((op, vec![Some(c.req(0)?)])) };
    let binary =
        |op: BinaryOp| -> Result<Converted, String> { Ok((Op::Binary(op), vec![Some(c.req(0)?), Some(c.req(1)?)])) };
    let node = c.node;
    Ok(match node.op_type.as_str() {
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
        "Cast" => {
            let to = a.int("to", 0) as i32;
            let to = DType::from_onnx(to).ok_or_else(|| format!("cast to unsupported type {to}"))?;
            unary(Op::Cast { to })?
        }
        "Erf" => unary(Op::Unary(UnaryOp::Erf))?,
        "Sqrt" => unary(Op::Unary(UnaryOp::Sqrt))?,
        "Gelu" => match a.string("approximate", "none").as_str() {
            "none" => unary(Op::Unary(UnaryOp::Gelu))?,
            other => return Err(format!("Gelu with approximate `{other}` is not supported (only the exact form)")),
        },
        "Equal" => (Op::Compare(CompareOp::Equal), vec![Some(x()?), Some(c.req(1)?)]),
        "Greater" => (Op::Compare(CompareOp::Greater), vec![Some(x()?), Some(c.req(1)?)]),
        "GreaterOrEqual" => (Op::Compare(CompareOp::GreaterOrEqual), vec![Some(x()?), Some(c.req(1)?)]),
        "Less" => (Op::Compare(CompareOp::Less), vec![Some(x()?), Some(c.req(1)?)]),
        "LessOrEqual" => (Op::Compare(CompareOp::LessOrEqual), vec![Some(x()?), Some(c.req(1)?)]),
        "And" => (Op::And, vec![Some(x()?), Some(c.req(1)?)]),
        "Where" => (Op::Where, vec![Some(x()?), Some(c.req(1)?), Some(c.req(2)?)]),
        other => return Err(format!("unsupported op `{other}`")),
    })
}
