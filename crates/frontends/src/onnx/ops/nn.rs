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
    "Einsum",
    "GlobalAveragePool",
    "Softmax",
    "LayerNormalization",
    "InstanceNormalization",
    "LSTM",
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
                return normalize_constant(c, a.float("epsilon", 1e-5)).map(|t| (Op::Constant(t), vec![]));
            }
            let ins = (0..5).map(|i| c.req(i).map(Some)).collect::<Result<Vec<_>, _>>()?;
            (Op::BatchNorm(BatchNorm { epsilon: a.float("epsilon", 1e-5) }), ins)
        }
        "InstanceNormalization" => {
            let ins = (0..3).map(|i| c.req(i).map(Some)).collect::<Result<Vec<_>, _>>()?;
            (Op::InstanceNorm { epsilon: a.float("epsilon", 1e-5) }, ins)
        }
        "LSTM" => {
            let direction = match a.string("direction", "forward").as_str() {
                "forward" => LstmDirection::Forward,
                "reverse" => LstmDirection::Reverse,
                "bidirectional" => LstmDirection::Bidirectional,
                d => return Err(format!("direction `{d}` is not forward, reverse or bidirectional")),
            };
            let hidden_size = usize::try_from(a.int("hidden_size", 0))
                .ok()
                .filter(|&h| h > 0)
                .ok_or("hidden_size is required and must be positive")?;
            // The default activations (Sigmoid, Tanh, Tanh) only, as torch
            // exports them.
            let acts: Vec<String> = a
                .get("activations")
                .map(|p| p.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
                .unwrap_or_default();
            let default = ["Sigmoid", "Tanh", "Tanh"];
            if !acts.is_empty() && !acts.chunks(3).all(|c| c == default) {
                return Err(format!("activations {acts:?} are not supported (only Sigmoid, Tanh, Tanh)"));
            }
            for unsupported in ["clip", "activation_alpha", "activation_beta"] {
                if a.get(unsupported).is_some() {
                    return Err(format!("attribute `{unsupported}` is not supported"));
                }
            }
            if a.int("input_forget", 0) != 0 || a.int("layout", 0) != 0 {
                return Err("input_forget and layout other than 0 are not supported".into());
            }
            let ins = (0..8).map(|i| c.opt(i)).collect();
            (Op::Lstm { hidden_size, direction }, ins)
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
        "Einsum" => {
            let equation = a.get("equation").ok_or("attribute `equation` is required")?;
            let eq = einsum::Equation::parse(&String::from_utf8_lossy(&equation.s))?;
            if eq.inputs.len() != node.input.len() {
                return Err(format!(
                    "equation `{}` has {} operands, the node {} inputs",
                    eq.text(),
                    eq.inputs.len(),
                    node.input.len()
                ));
            }
            c.on_inputs(Op::Einsum { equation: eq.text() }, node.input.len())?
        }
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

/// The largest constant a training-mode BatchNormalization is computed on
/// (elements): NFNet's weight standardization normalizes each conv's weight.
const TRAINING_BN_ELEMENTS: usize = 1 << 26;

/// BatchNormalization with `training_mode=1` on a constant input, as torch
/// exports weight standardization (NFNet's `ScaledStdConv2d`:
/// `batch_norm(weight.reshape(1, out, -1), training=True)`): each channel
/// normalized by its own mean and (population) variance over every other
/// axis, then scaled and shifted, computed here once (in f64, rounded to
/// f32). On run-time data it would need the batch's statistics at
/// inference, which a static fused model does not compute: an error.
fn normalize_constant(c: &Ctx, epsilon: f32) -> Result<Tensor, String> {
    let konst = |i: usize| -> Result<Tensor, String> {
        let v = c.req(i)?;
        super::super::tensor::const_tensor_up_to(c.g, v, TRAINING_BN_ELEMENTS).ok_or_else(|| {
            format!(
                "training_mode=1 on `{}`, which is not a constant, is not supported (inference graphs only)",
                c.g.value(v).name
            )
        })
    };
    let x = konst(0)?;
    let (scale, bias) = (konst(1)?, konst(2)?);
    let shape = x.ty().shape.clone();
    let (Some(xs), Some(sc), Some(bs)) = (x.to_f32_vec(), scale.to_f32_vec(), bias.to_f32_vec()) else {
        return Err("training_mode=1 needs float inputs".into());
    };
    if shape.len() < 2 || sc.len() != shape[1] || bs.len() != shape[1] {
        return Err(format!("training_mode=1: input {shape:?} with scale and bias of {} and {}", sc.len(), bs.len()));
    }
    let ch = shape[1];
    let inner: usize = shape[2..].iter().product();
    let index = |i: usize| (i / inner) % ch;
    let count = (xs.len() / ch) as f64;
    let (mut sum, mut sq) = (vec![0f64; ch], vec![0f64; ch]);
    for (i, &v) in xs.iter().enumerate() {
        sum[index(i)] += v as f64;
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
    for (i, &v) in xs.iter().enumerate() {
        let d = v as f64 - mean[index(i)];
        sq[index(i)] += d * d;
    }
    let inv: Vec<f64> = sq.iter().map(|s| 1.0 / (s / count + epsilon as f64).sqrt()).collect();
    let out: Vec<f32> = xs
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let k = index(i);
            ((v as f64 - mean[k]) * inv[k] * sc[k] as f64 + bs[k] as f64) as f32
        })
        .collect();
    Tensor::from_f32(shape, &out)
}
