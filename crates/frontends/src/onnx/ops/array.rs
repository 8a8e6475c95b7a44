//! Shapes and data movement: reshape, transpose, slice, concat, split,
//! gather, pad, resize, and the static shape arithmetic around them.

use fuse_ir::*;

use super::super::attrs::{Attrs, Ctx};
use super::super::tensor::tensor_from_proto;
use super::Converted;

/// The ONNX ops this family converts.
pub(super) const OPS: &[&str] = &[
    "Squeeze",
    "Expand",
    "ConstantOfShape",
    "EyeLike",
    "GatherND",
    "GatherElements",
    "ScatterND",
    "Range",
    "Resize",
    "Concat",
    "Gather",
    "Unsqueeze",
    "Slice",
    "Shape",
    "Constant",
    "Reshape",
    "Transpose",
    "Flatten",
    "Pad",
    "Split",
    "Tile",
];

pub(super) fn convert(c: &Ctx, opset: i64) -> Result<Converted, String> {
    let a = Attrs(c.node);
    let x = || c.req(0);
    let node = c.node;
    Ok(match node.op_type.as_str() {
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
            let sizes = c.usizes(3, "sizes")?.filter(|s| !s.is_empty());
            let sizes: Vec<usize> = match (sizes, &scales) {
                (Some(sz), _) => sz,
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
                scales: if sizes_given(c) { None } else { scales },
                sizes,
            };
            (Op::Resize(r), vec![Some(x()?)])
        }
        "Concat" => {
            let ins = (0..node.input.len()).map(|i| c.req(i).map(Some)).collect::<Result<Vec<_>, _>>()?;
            (Op::Concat { axis: a.get("axis").ok_or("axis is required")?.i }, ins)
        }
        "Gather" => c.on_inputs(Op::Gather { axis: a.int("axis", 0) }, 2)?,
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
        "Flatten" => c.on_inputs(Op::Flatten { axis: a.int("axis", 1) }, 1)?,
        "Pad" => {
            let r = c.ty(0)?.rank();
            let mode = match a.string("mode", "constant").as_str() {
                "constant" => PadMode::Constant,
                "reflect" => PadMode::Reflect,
                "edge" => PadMode::Edge,
                m => return Err(format!("pad mode `{m}` is not supported")),
            };
            let given = c.ints(1, "pads")?.ok_or("pads are required")?;
            let value = c
                .scalar(2, "constant_value")
                .or_else(|_| c.ints(2, "constant_value").map(|v| v.and_then(|v| v.first().map(|&x| x as f32))))?;
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
            let given = if opset >= 13 { c.usizes(1, "split")? } else { a.usizes("split")? };
            let n_out = a.get("num_outputs").map(|n| n.i as usize).unwrap_or(node.output.len());
            let split: Vec<usize> = match given {
                Some(s) => s,
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
        "Squeeze" => {
            let xs = c.ty(0)?.shape.clone();
            let axes = if opset >= 13 { c.ints(1, "axes")? } else { a.ints("axes") };
            let drop: Vec<usize> = match axes {
                Some(ax) => ax.iter().map(|&v| fuse_ir::shape::norm_axis(v, xs.len())).collect::<Result<_, _>>()?,
                None => (0..xs.len()).filter(|&i| xs[i] == 1).collect(),
            };
            if let Some(&bad) = drop.iter().find(|&&i| xs[i] != 1) {
                return Err(format!("cannot squeeze axis {bad} of {xs:?}: its size is not 1"));
            }
            let shape = xs.iter().enumerate().filter(|(i, _)| !drop.contains(i)).map(|(_, &d)| d).collect();
            (Op::Reshape { shape }, vec![Some(x()?)])
        }
        "Tile" => {
            let repeats = c.required_usizes(1, "repeats")?;
            (Op::Tile { repeats }, vec![Some(x()?)])
        }
        "Expand" => {
            let shape = c.required_usizes(1, "shape")?;
            (Op::Expand { shape }, vec![Some(x()?)])
        }
        "ConstantOfShape" => {
            let shape = c.required_usizes(0, "shape")?;
            (Op::Constant(constant_of_shape(&a, shape)?), vec![])
        }
        // Depends on its input's (static) shape only: a constant.
        "EyeLike" => {
            let ty = c.ty(0)?;
            let dtype = match a.get("dtype") {
                Some(d) => DType::from_onnx(d.i as i32).ok_or_else(|| format!("dtype {} is not supported", d.i))?,
                None => ty.dtype,
            };
            (Op::Constant(eye_like(&ty.shape, dtype, a.int("k", 0))?), vec![])
        }
        "ScatterND" => match a.string("reduction", "none").as_str() {
            "none" => c.on_inputs(Op::ScatterNd, 3)?,
            other => return Err(format!("ScatterND with reduction `{other}` is not supported")),
        },
        "Range" => c.on_inputs(Op::Range, 3)?,
        "GatherND" => {
            let batch_dims = usize::try_from(a.int("batch_dims", 0)).map_err(|_| "negative batch_dims".to_string())?;
            c.on_inputs(Op::GatherNd { batch_dims }, 2)?
        }
        "GatherElements" => c.on_inputs(Op::GatherElements { axis: a.int("axis", 0) }, 2)?,
        other => return Err(format!("unsupported op `{other}`")),
    })
}

fn sizes_given(c: &Ctx) -> bool {
    c.opt(3).is_some_and(|v| c.g.value(v).ty.numel() != Some(0))
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

/// Largest tensor ConstantOfShape may make (it is stored in the model).
const CONSTANT_OF_SHAPE_LIMIT: usize = 1 << 20;

/// ConstantOfShape on a static shape: the filled tensor itself (its
/// `value` attribute, a one-element tensor, or f32 zero).
fn constant_of_shape(a: &Attrs, shape: Vec<usize>) -> Result<Tensor, String> {
    let value = match a.get("value").and_then(|v| v.t.as_ref()) {
        Some(t) => {
            let mut t = t.clone();
            tensor_from_proto(&mut t, None)?
        }
        None => Tensor::from_f32(vec![1], &[0.0])?,
    };
    if value.ty().numel() != Some(1) {
        return Err(format!("value must hold one element, not {}", value.ty()));
    }
    let ty = TensorType::new(value.ty().dtype, shape);
    let n =
        ty.numel().filter(|&n| n <= CONSTANT_OF_SHAPE_LIMIT).ok_or_else(|| format!("{ty} is too large a constant"))?;
    let bytes: Vec<u8> = value.bytes().repeat(n);
    Tensor::new(ty, bytes.into())
}

/// EyeLike's output: ones on diagonal `k` (above the main one when
/// positive) of a `[rows, cols]` tensor, zeros elsewhere.
fn eye_like(shape: &[usize], dtype: DType, k: i64) -> Result<Tensor, String> {
    let [rows, cols] = shape[..] else { return Err(format!("input is {shape:?}; EyeLike takes a 2-D tensor")) };
    let one: Vec<u8> = match dtype {
        DType::F32 => 1f32.to_le_bytes().to_vec(),
        DType::F16 => 0x3c00u16.to_le_bytes().to_vec(),
        DType::F64 => 1f64.to_le_bytes().to_vec(),
        DType::I64 => 1i64.to_le_bytes().to_vec(),
        DType::I32 => 1i32.to_le_bytes().to_vec(),
        DType::I8 | DType::U8 | DType::Bool => vec![1],
    };
    let ty = TensorType::new(dtype, vec![rows, cols]);
    let n =
        ty.numel().filter(|&n| n <= CONSTANT_OF_SHAPE_LIMIT).ok_or_else(|| format!("{ty} is too large a constant"))?;
    let mut bytes = vec![0u8; n * one.len()];
    for r in 0..rows {
        let c = r as i64 + k;
        if (0..cols as i64).contains(&c) {
            let at = (r * cols + c as usize) * one.len();
            bytes[at..at + one.len()].copy_from_slice(&one);
        }
    }
    Tensor::new(ty, bytes.into())
}

/// A Constant node's value, from whichever `value*` attribute it has.
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
