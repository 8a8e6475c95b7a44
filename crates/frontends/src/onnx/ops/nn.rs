//! Neural-network layers: convolution, pooling, normalization, matrix
//! products, softmax.

use fuse_ir::*;

use super::super::attrs::{Attrs, Ctx};
use super::Converted;

/// The ONNX ops this family converts.
pub(super) const OPS: &[&str] = &[
    "Conv",
    "MaxPool",
    "AveragePool",
    "BatchNormalization",
    "Gemm",
    "MatMul",
    "GlobalAveragePool",
    "Softmax",
    "LayerNormalization",
    "InstanceNormalization",
];

pub(super) fn convert(c: &Ctx, opset: i64) -> Result<Converted, String> {
    let a = Attrs(c.node);
    let x = || c.req(0);
    let node = c.node;
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
        "MaxPool" | "AveragePool" => {
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
            let p = Pool { kernel_shape: kernel, strides, pads, dilations, ceil_mode: a.int("ceil_mode", 0) != 0 };
            if node.op_type == "MaxPool" {
                (Op::MaxPool(p), vec![Some(x()?)])
            } else {
                if p.dilations.iter().any(|&d| d != 1) {
                    return Err("AveragePool with dilations is not supported".into());
                }
                let count_include_pad = a.int("count_include_pad", 0) != 0;
                (Op::AveragePool { window: p, count_include_pad }, vec![Some(x()?)])
            }
        }
        "BatchNormalization" => {
            if a.int("training_mode", 0) != 0 {
                return Err("training_mode=1 is not supported (inference graphs only)".into());
            }
            let ins = (0..5).map(|i| c.req(i).map(Some)).collect::<Result<Vec<_>, _>>()?;
            (Op::BatchNorm(BatchNorm { epsilon: a.float("epsilon", 1e-5) }), ins)
        }
        "InstanceNormalization" => {
            let ins = (0..3).map(|i| c.req(i).map(Some)).collect::<Result<Vec<_>, _>>()?;
            (Op::InstanceNorm { epsilon: a.float("epsilon", 1e-5) }, ins)
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
        "MatMul" => c.on_inputs(Op::MatMul, 2)?,
        "GlobalAveragePool" => c.on_inputs(Op::GlobalAveragePool, 1)?,
        "Softmax" => {
            let r = c.ty(0)?.rank() as i64;
            let axis = a.int("axis", if opset >= 13 { -1 } else { 1 });
            if opset < 13 && (axis + r) % r != r - 1 {
                return Err(format!("opset {opset} Softmax over axis {axis} (not the last) is not supported"));
            }
            c.on_inputs(Op::Softmax { axis }, 1)?
        }
        "LayerNormalization" => {
            let op = Op::LayerNorm { axis: a.int("axis", -1), epsilon: a.float("epsilon", 1e-5) };
            (op, vec![Some(x()?), Some(c.req(1)?), c.opt(2)])
        }
        other => return Err(format!("unsupported op `{other}`")),
    })
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
