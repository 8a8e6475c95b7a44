//! Static shape inference, one rule per op, plus value inference for small
//! integer tensors (the shape arithmetic exporters such as torch.onnx emit).
//! Errors are plain messages; [`crate::Graph`] adds the node name.

pub use crate::dims::{broadcast, norm_axis};
use crate::op::*;
use crate::value::{known_of, Value, KNOWN_LIMIT};
use crate::{DType, TensorType};

pub type Inferred = (TensorType, Option<Vec<i64>>);

fn input<'a>(ins: &[Option<&'a Value>], i: usize) -> Result<&'a Value, String> {
    ins.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))
}

fn opt<'a>(ins: &[Option<&'a Value>], i: usize) -> Option<&'a Value> {
    ins.get(i).copied().flatten()
}

fn known_small(ty: &TensorType, v: Option<Vec<i64>>) -> Option<Vec<i64>> {
    if (ty.dtype.is_int() || ty.dtype == DType::Bool) && ty.numel().is_some_and(|n| n <= KNOWN_LIMIT) {
        v
    } else {
        None
    }
}

/// Output length of a conv or pool window along one axis.
fn window_out(
    len: usize,
    k: usize,
    stride: usize,
    dil: usize,
    pb: usize,
    pe: usize,
    ceil: bool,
) -> Result<usize, String> {
    if stride == 0 || dil == 0 || k == 0 {
        return Err("kernel, stride and dilation must be positive".into());
    }
    let span = dil * (k - 1) + 1;
    let padded = len + pb + pe;
    if padded < span {
        return Err(format!("window of {span} does not fit in {padded} (input {len} plus padding)"));
    }
    let num = padded - span;
    let mut out = if ceil { num.div_ceil(stride) + 1 } else { num / stride + 1 };
    // A ceil-mode window must start inside the input or its begin padding.
    if ceil && (out - 1) * stride >= len + pb {
        out -= 1;
    }
    Ok(out)
}

fn check_window(what: &str, spatial: usize, k: &[usize], s: &[usize], p: &[usize], d: &[usize]) -> Result<(), String> {
    if k.len() != spatial || s.len() != spatial || d.len() != spatial || p.len() != 2 * spatial {
        return Err(format!(
            "{what} attributes do not match {spatial} spatial axes (kernel {k:?}, strides {s:?}, pads {p:?}, dilations {d:?})"
        ));
    }
    Ok(())
}

pub fn infer(op: &Op, ins: &[Option<&Value>]) -> Result<Vec<Inferred>, String> {
    let same = |v: &Value| -> Vec<Inferred> { vec![(v.ty.clone(), None)] };
    let float_in = |i: usize| -> Result<&Value, String> {
        let v = input(ins, i)?;
        if !v.ty.dtype.is_float() {
            return Err(format!("input {i} `{}` is {} but must be a float tensor", v.name, v.ty));
        }
        Ok(v)
    };
    Ok(match op {
        Op::Conv(c) => {
            let x = float_in(0)?;
            let w = float_in(1)?;
            let (xs, ws) = (&x.ty.shape, &w.ty.shape);
            if xs.len() < 3 || ws.len() != xs.len() {
                return Err(format!("input is {} and weight {}; expected N,C,spatial.. and M,C/group,k..", x.ty, w.ty));
            }
            let sp = xs.len() - 2;
            check_window("conv", sp, &c.kernel_shape, &c.strides, &c.pads, &c.dilations)?;
            if c.kernel_shape != ws[2..] {
                return Err(format!("kernel_shape {:?} differs from weight {}", c.kernel_shape, w.ty));
            }
            if c.group == 0 || xs[1] != ws[1] * c.group || ws[0] % c.group != 0 {
                return Err(format!("input {} and weight {} do not fit group={}", x.ty, w.ty, c.group));
            }
            if let Some(b) = opt(ins, 2) {
                if b.ty.shape != [ws[0]] {
                    return Err(format!("bias `{}` is {} but must be [{}]", b.name, b.ty, ws[0]));
                }
            }
            let mut out = vec![xs[0], ws[0]];
            for i in 0..sp {
                out.push(window_out(
                    xs[2 + i],
                    c.kernel_shape[i],
                    c.strides[i],
                    c.dilations[i],
                    c.pads[i],
                    c.pads[sp + i],
                    false,
                )?);
            }
            vec![(TensorType::new(x.ty.dtype, out), None)]
        }
        Op::MaxPool(p) | Op::AveragePool { window: p, .. } => {
            let x = float_in(0)?;
            let xs = &x.ty.shape;
            if xs.len() < 3 {
                return Err(format!("input is {}; expected N,C,spatial..", x.ty));
            }
            let sp = xs.len() - 2;
            check_window("pool", sp, &p.kernel_shape, &p.strides, &p.pads, &p.dilations)?;
            let mut out = xs[..2].to_vec();
            for i in 0..sp {
                out.push(window_out(
                    xs[2 + i],
                    p.kernel_shape[i],
                    p.strides[i],
                    p.dilations[i],
                    p.pads[i],
                    p.pads[sp + i],
                    p.ceil_mode,
                )?);
            }
            vec![(TensorType::new(x.ty.dtype, out), None)]
        }
        Op::BatchNorm(_) => {
            let x = float_in(0)?;
            if x.ty.rank() < 2 {
                return Err(format!("input is {}; expected N,C,..", x.ty));
            }
            per_channel(ins, 1..5, x.ty.shape[1])?;
            same(x)
        }
        Op::Gemm(g) => {
            let a = float_in(0)?;
            let b = float_in(1)?;
            if a.ty.rank() != 2 || b.ty.rank() != 2 {
                return Err(format!("Gemm needs 2-D inputs, got {} and {}", a.ty, b.ty));
            }
            let (m, k) = if g.trans_a { (a.ty.shape[1], a.ty.shape[0]) } else { (a.ty.shape[0], a.ty.shape[1]) };
            let (k2, n) = if g.trans_b { (b.ty.shape[1], b.ty.shape[0]) } else { (b.ty.shape[0], b.ty.shape[1]) };
            if k != k2 {
                return Err(format!("inner dimensions differ: {} and {}", a.ty, b.ty));
            }
            if let Some(c) = opt(ins, 2) {
                let bc = broadcast(&c.ty.shape, &[m, n])?;
                if bc != [m, n] {
                    return Err(format!("C {} does not broadcast to [{m},{n}]", c.ty));
                }
            }
            vec![(TensorType::new(a.ty.dtype, vec![m, n]), None)]
        }
        Op::MatMul => {
            let a = float_in(0)?;
            let b = float_in(1)?;
            let (mut sa, mut sb) = (a.ty.shape.clone(), b.ty.shape.clone());
            if sa.is_empty() || sb.is_empty() {
                return Err("MatMul inputs must have rank at least 1".into());
            }
            let (va, vb) = (sa.len() == 1, sb.len() == 1);
            if va {
                sa.insert(0, 1);
            }
            if vb {
                sb.push(1);
            }
            let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
            let (k2, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
            if k != k2 {
                return Err(format!("inner dimensions differ: {} and {}", a.ty, b.ty));
            }
            let mut out = broadcast(&sa[..sa.len() - 2], &sb[..sb.len() - 2])?;
            if !va {
                out.push(m);
            }
            if !vb {
                out.push(n);
            }
            vec![(TensorType::new(a.ty.dtype, out), None)]
        }
        Op::Einsum { equation } => {
            let eq = crate::einsum::Equation::parse(equation)?;
            let vals = (0..ins.len()).map(float_in).collect::<Result<Vec<_>, _>>()?;
            if vals.is_empty() {
                return Err("Einsum has no inputs".into());
            }
            if let Some(v) = vals.iter().find(|v| v.ty.dtype != vals[0].ty.dtype) {
                return Err(format!("operands differ in type: {} and {}", vals[0].ty, v.ty));
            }
            let shapes: Vec<&[usize]> = vals.iter().map(|v| v.ty.shape.as_slice()).collect();
            vec![(TensorType::new(vals[0].ty.dtype, eq.output_shape(&shapes)?), None)]
        }
        Op::Binary(kind) => {
            let a = input(ins, 0)?;
            let b = input(ins, 1)?;
            if a.ty.dtype != b.ty.dtype {
                return Err(format!("operands differ in type: {} and {}", a.ty, b.ty));
            }
            let shape = broadcast(&a.ty.shape, &b.ty.shape)?;
            let ty = TensorType::new(a.ty.dtype, shape);
            let known = match (&a.known, &b.known) {
                (Some(x), Some(y)) if x.len() == y.len() || x.len() == 1 || y.len() == 1 => {
                    let n = x.len().max(y.len());
                    let at = |v: &Vec<i64>, i: usize| if v.len() == 1 { v[0] } else { v[i] };
                    (0..n)
                        .map(|i| {
                            let (p, q) = (at(x, i), at(y, i));
                            match kind {
                                BinaryOp::Add => p.checked_add(q),
                                BinaryOp::Sub => p.checked_sub(q),
                                BinaryOp::Mul => p.checked_mul(q),
                                BinaryOp::Div => p.checked_div(q),
                                BinaryOp::Min => Some(p.min(q)),
                                BinaryOp::Max => Some(p.max(q)),
                            }
                        })
                        .collect::<Option<Vec<i64>>>()
                }
                _ => None,
            };
            let known = known_small(&ty, known);
            vec![(ty, known)]
        }
        Op::Unary(UnaryOp::Identity) => {
            let x = input(ins, 0)?;
            vec![(x.ty.clone(), x.known.clone())]
        }
        // On integers too (shape arithmetic: `-x.size(1)`), values followed.
        Op::Unary(u @ (UnaryOp::Neg | UnaryOp::Abs)) if input(ins, 0)?.ty.dtype.is_int() => {
            let x = input(ins, 0)?;
            let neg = *u == UnaryOp::Neg;
            let known =
                elementwise_known(&x.ty, &[x], |v| Some(if neg { v[0].checked_neg()? } else { v[0].checked_abs()? }));
            vec![(x.ty.clone(), known)]
        }
        Op::Unary(_) | Op::HardSigmoid { .. } | Op::LeakyRelu { .. } | Op::Softmax { .. } => {
            let x = float_in(0)?;
            if let Op::Softmax { axis } = op {
                norm_axis(*axis, x.ty.rank())?;
            }
            same(x)
        }
        Op::Clip { .. } => same(input(ins, 0)?),
        Op::Reduce { axes, keepdims, .. } => {
            let x = float_in(0)?;
            let r = x.ty.rank();
            let axes: Vec<usize> = match axes {
                Some(a) => a.iter().map(|&a| norm_axis(a, r)).collect::<Result<_, _>>()?,
                None => (0..r).collect(),
            };
            let mut out = vec![];
            for (i, &d) in x.ty.shape.iter().enumerate() {
                if axes.contains(&i) {
                    if *keepdims {
                        out.push(1);
                    }
                } else {
                    out.push(d);
                }
            }
            vec![(TensorType::new(x.ty.dtype, out), None)]
        }
        Op::GlobalAveragePool => {
            let x = float_in(0)?;
            if x.ty.rank() < 3 {
                return Err(format!("input is {}; expected N,C,spatial..", x.ty));
            }
            let mut out = x.ty.shape[..2].to_vec();
            out.extend(std::iter::repeat_n(1, x.ty.rank() - 2));
            vec![(TensorType::new(x.ty.dtype, out), None)]
        }
        Op::Resize(r) => {
            let x = float_in(0)?;
            if r.sizes.len() != x.ty.rank() {
                return Err(format!("sizes {:?} do not match input {}", r.sizes, x.ty));
            }
            if let Some(s) = &r.scales {
                if s.len() != x.ty.rank() {
                    return Err(format!("scales {s:?} do not match input {}", x.ty));
                }
            }
            vec![(TensorType::new(x.ty.dtype, r.sizes.clone()), None)]
        }
        Op::Concat { axis } => {
            let first = input(ins, 0)?;
            let r = first.ty.rank();
            let ax = norm_axis(*axis, r)?;
            let mut out = first.ty.shape.clone();
            out[ax] = 0;
            let mut known = Some(vec![]);
            for i in 0..ins.len() {
                let v = input(ins, i)?;
                if v.ty.dtype != first.ty.dtype || v.ty.rank() != r {
                    return Err(format!("input {i} is {} but input 0 is {}", v.ty, first.ty));
                }
                for d in 0..r {
                    if d != ax && v.ty.shape[d] != first.ty.shape[d] {
                        return Err(format!("input {i} is {} but input 0 is {}", v.ty, first.ty));
                    }
                }
                out[ax] += v.ty.shape[ax];
                known = match (known, &v.known) {
                    (Some(mut k), Some(vk)) if r == 1 => {
                        k.extend(vk);
                        Some(k)
                    }
                    _ => None,
                };
            }
            let ty = TensorType::new(first.ty.dtype, out);
            let known = known_small(&ty, known);
            vec![(ty, known)]
        }
        Op::Gather { axis } => {
            let data = input(ins, 0)?;
            let idx = input(ins, 1)?;
            if !matches!(idx.ty.dtype, DType::I64 | DType::I32) {
                return Err(format!("indices `{}` are {} but must be i64 or i32", idx.name, idx.ty));
            }
            let ax = norm_axis(*axis, data.ty.rank())?;
            let dim = data.ty.shape[ax] as i64;
            if let Some(k) = &idx.known {
                if let Some(bad) = k.iter().find(|&&i| i < -dim || i >= dim) {
                    return Err(format!("index {bad} is out of range for axis of size {dim}"));
                }
            }
            let mut out = data.ty.shape[..ax].to_vec();
            out.extend(&idx.ty.shape);
            out.extend(&data.ty.shape[ax + 1..]);
            let ty = TensorType::new(data.ty.dtype, out);
            let known = match (&data.known, &idx.known) {
                (Some(d), Some(k)) if data.ty.rank() == 1 => {
                    Some(k.iter().map(|&i| d[if i < 0 { (i + dim) as usize } else { i as usize }]).collect())
                }
                _ => None,
            };
            let known = known_small(&ty, known);
            vec![(ty, known)]
        }
        Op::Unsqueeze { axes } => {
            let x = input(ins, 0)?;
            let r = x.ty.rank() + axes.len();
            let mut ax: Vec<usize> = axes.iter().map(|&a| norm_axis(a, r)).collect::<Result<_, _>>()?;
            ax.sort();
            if ax.windows(2).any(|w| w[0] == w[1]) {
                return Err(format!("axes {axes:?} repeat"));
            }
            let mut src = x.ty.shape.iter();
            let out: Vec<usize> = (0..r).map(|i| if ax.contains(&i) { 1 } else { *src.next().unwrap_or(&1) }).collect();
            vec![(TensorType::new(x.ty.dtype, out), x.known.clone())]
        }
        Op::Slice(s) => {
            let x = input(ins, 0)?;
            let n = s.axes.len();
            if s.starts.len() != n || s.ends.len() != n || s.steps.len() != n {
                return Err("starts, ends, axes and steps differ in length".into());
            }
            let mut out = x.ty.shape.clone();
            let mut ranges = vec![];
            for i in 0..n {
                let ax = norm_axis(s.axes[i], x.ty.rank())?;
                let (start, end, len) = slice_range(out[ax] as i64, s.starts[i], s.ends[i], s.steps[i])?;
                out[ax] = len;
                ranges.push((ax, start, end, s.steps[i]));
            }
            let ty = TensorType::new(x.ty.dtype, out);
            let known = x.known.as_ref().and_then(|k| slice_known(k, &x.ty.shape, &ty.shape, &ranges));
            let known = known_small(&ty, known);
            vec![(ty, known)]
        }
        Op::Shape { start, end } => {
            let x = input(ins, 0)?;
            let r = x.ty.rank() as i64;
            let clamp = |v: i64| if v < 0 { (v + r).clamp(0, r) } else { v.clamp(0, r) } as usize;
            let (a, b) = (clamp(*start), clamp(end.unwrap_or(r)));
            let dims: Vec<i64> = if a < b { x.ty.shape[a..b].iter().map(|&d| d as i64).collect() } else { vec![] };
            let ty = TensorType::new(DType::I64, vec![dims.len()]);
            let known = known_small(&ty, Some(dims));
            vec![(ty, known)]
        }
        Op::Constant(t) => vec![(t.ty().clone(), known_of(t))],
        Op::Reshape { shape } => {
            let x = input(ins, 0)?;
            let want = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if want != x.ty.numel() {
                return Err(format!("cannot reshape {} to {shape:?}", x.ty));
            }
            let ty = TensorType::new(x.ty.dtype, shape.clone());
            let known = known_small(&ty, x.known.clone());
            vec![(ty, known)]
        }
        Op::Transpose { perm } => {
            let x = input(ins, 0)?;
            let mut sorted = perm.clone();
            sorted.sort();
            if sorted != (0..x.ty.rank()).collect::<Vec<_>>() {
                return Err(format!("perm {perm:?} is not a permutation of the axes of {}", x.ty));
            }
            let ty = TensorType::new(x.ty.dtype, perm.iter().map(|&p| x.ty.shape[p]).collect::<Vec<_>>());
            let known = x.known.as_ref().map(|k| transpose_known(k, &x.ty.shape, perm));
            vec![(ty.clone(), known_small(&ty, known))]
        }
        Op::Flatten { axis } => {
            let x = input(ins, 0)?;
            let r = x.ty.rank() as i64;
            if *axis < -r || *axis > r {
                return Err(format!("axis {axis} is out of range for rank {r}"));
            }
            let ax = if *axis < 0 { axis + r } else { *axis } as usize;
            let a: usize = x.ty.shape[..ax].iter().product();
            let b: usize = x.ty.shape[ax..].iter().product();
            vec![(TensorType::new(x.ty.dtype, vec![a, b]), None)]
        }
        Op::Pad(p) => {
            let x = input(ins, 0)?;
            let r = x.ty.rank();
            if p.pads.len() != 2 * r {
                return Err(format!("pads {:?} do not match rank {r}", p.pads));
            }
            let mut out = vec![];
            for i in 0..r {
                let d = x.ty.shape[i] as i64 + p.pads[i] + p.pads[r + i];
                if d < 0 {
                    return Err(format!("pads {:?} remove more than axis {i} holds", p.pads));
                }
                out.push(d as usize);
            }
            vec![(TensorType::new(x.ty.dtype, out), None)]
        }
        Op::Split { axis, split } => {
            let x = input(ins, 0)?;
            let ax = norm_axis(*axis, x.ty.rank())?;
            if split.iter().sum::<usize>() != x.ty.shape[ax] {
                return Err(format!("split {split:?} does not add up to axis {ax} of {}", x.ty));
            }
            split
                .iter()
                .map(|&s| {
                    let mut sh = x.ty.shape.clone();
                    sh[ax] = s;
                    (TensorType::new(x.ty.dtype, sh), None)
                })
                .collect()
        }
        Op::LayerNorm { axis, .. } => {
            let x = float_in(0)?;
            let ax = norm_axis(*axis, x.ty.rank())?;
            let norm_shape = &x.ty.shape[ax..];
            for i in 1..3 {
                if let Some(p) = opt(ins, i) {
                    if broadcast(&p.ty.shape, norm_shape)? != norm_shape {
                        return Err(format!("`{}` {} does not broadcast to {norm_shape:?}", p.name, p.ty));
                    }
                }
            }
            same(x)
        }
        Op::Compare(cmp) => {
            let (a, b) = (input(ins, 0)?, input(ins, 1)?);
            if a.ty.dtype != b.ty.dtype {
                return Err(format!("operands differ in type: {} and {}", a.ty, b.ty));
            }
            let ty = TensorType::new(DType::Bool, broadcast(&a.ty.shape, &b.ty.shape)?);
            let known = elementwise_known(&ty, &[a, b], |v| Some(i64::from(cmp.apply(v[0], v[1]))));
            vec![(ty, known)]
        }
        Op::And => {
            let (a, b) = (input(ins, 0)?, input(ins, 1)?);
            if a.ty.dtype != DType::Bool || b.ty.dtype != DType::Bool {
                return Err(format!("operands must be bool, got {} and {}", a.ty, b.ty));
            }
            let ty = TensorType::new(DType::Bool, broadcast(&a.ty.shape, &b.ty.shape)?);
            let known = elementwise_known(&ty, &[a, b], |v| Some(i64::from(v[0] != 0 && v[1] != 0)));
            vec![(ty, known)]
        }
        Op::Where => {
            let (c, x, y) = (input(ins, 0)?, input(ins, 1)?, input(ins, 2)?);
            if c.ty.dtype != DType::Bool {
                return Err(format!("condition `{}` is {} but must be bool", c.name, c.ty));
            }
            if x.ty.dtype != y.ty.dtype {
                return Err(format!("branches differ in type: {} and {}", x.ty, y.ty));
            }
            let shape = broadcast(&broadcast(&c.ty.shape, &x.ty.shape)?, &y.ty.shape)?;
            let ty = TensorType::new(x.ty.dtype, shape);
            let known = elementwise_known(&ty, &[c, x, y], |v| Some(if v[0] != 0 { v[1] } else { v[2] }));
            vec![(ty, known)]
        }
        Op::Expand { shape } => {
            let x = input(ins, 0)?;
            let ty = TensorType::new(x.ty.dtype, broadcast(&x.ty.shape, shape)?);
            let known = elementwise_known(&ty, &[x], |v| Some(v[0]));
            vec![(ty, known)]
        }
        Op::GatherNd { batch_dims } => {
            let (data, idx) = (input(ins, 0)?, input(ins, 1)?);
            if idx.ty.dtype != DType::I64 {
                return Err(format!("indices `{}` are {} but must be i64", idx.name, idx.ty));
            }
            let (q, r, b) = (idx.ty.rank(), data.ty.rank(), *batch_dims);
            let k = *idx.ty.shape.last().ok_or("indices must have rank 1 or more")?;
            if q < 1 || b >= q || b + k > r || idx.ty.shape[..b] != data.ty.shape[..b] {
                return Err(format!("indices {} do not fit data {} with batch_dims {b}", idx.ty, data.ty));
            }
            let mut out = idx.ty.shape[..q - 1].to_vec();
            out.extend_from_slice(&data.ty.shape[b + k..]);
            vec![(TensorType::new(data.ty.dtype, out), None)]
        }
        Op::Not => {
            let x = input(ins, 0)?;
            if x.ty.dtype != DType::Bool {
                return Err(format!("operand must be bool, got {}", x.ty));
            }
            vec![(x.ty.clone(), elementwise_known(&x.ty, &[x], |v| Some(i64::from(v[0] == 0))))]
        }
        Op::IsNaN => {
            let x = input(ins, 0)?;
            if !x.ty.dtype.is_float() {
                return Err(format!("operand must be a float tensor, got {}", x.ty));
            }
            vec![(TensorType::new(DType::Bool, x.ty.shape.clone()), None)]
        }
        Op::GatherElements { axis } => {
            let data = input(ins, 0)?;
            let idx = input(ins, 1)?;
            if !matches!(idx.ty.dtype, DType::I64 | DType::I32) {
                return Err(format!("indices `{}` are {} but must be i64 or i32", idx.name, idx.ty));
            }
            let r = data.ty.rank();
            let ax = norm_axis(*axis, r)?;
            let fits = |d: usize| d == ax || idx.ty.shape[d] <= data.ty.shape[d];
            if idx.ty.rank() != r || !(0..r).all(fits) {
                return Err(format!("indices {} do not fit data {} along axis {axis}", idx.ty, data.ty));
            }
            let dim = data.ty.shape[ax] as i64;
            if let Some(bad) = idx.known.iter().flatten().find(|&&i| i < -dim || i >= dim) {
                return Err(format!("index {bad} is out of range for axis of size {dim}"));
            }
            let ty = TensorType::new(data.ty.dtype, idx.ty.shape.clone());
            let known = match (&data.known, &idx.known) {
                (Some(d), Some(k)) => gather_elements(d, &data.ty.shape, k, &idx.ty.shape, ax),
                _ => None,
            };
            let known = known_small(&ty, known);
            vec![(ty, known)]
        }
        Op::Mod { fmod } => {
            let (a, b) = (input(ins, 0)?, input(ins, 1)?);
            if a.ty.dtype != b.ty.dtype {
                return Err(format!("operands differ in type: {} and {}", a.ty, b.ty));
            }
            if a.ty.dtype.is_float() && !fmod {
                return Err(format!("Mod of {} needs fmod=1", a.ty));
            }
            let ty = TensorType::new(a.ty.dtype, broadcast(&a.ty.shape, &b.ty.shape)?);
            let known = elementwise_known(&ty, &[a, b], |v| int_mod(v[0], v[1], *fmod));
            vec![(ty, known)]
        }
        Op::Pow => {
            let (a, b) = (input(ins, 0)?, input(ins, 1)?);
            if !a.ty.dtype.is_float() {
                return Err(format!("Pow of {} is not supported (float bases only)", a.ty));
            }
            vec![(TensorType::new(a.ty.dtype, broadcast(&a.ty.shape, &b.ty.shape)?), None)]
        }
        Op::Range => {
            let vs = [input(ins, 0)?, input(ins, 1)?, input(ins, 2)?];
            if vs.iter().any(|v| v.ty.dtype != vs[0].ty.dtype || v.ty.numel() != Some(1)) {
                return Err(format!(
                    "start, limit and delta must be scalars of one type, got {}, {}, {}",
                    vs[0].ty, vs[1].ty, vs[2].ty
                ));
            }
            let known: Option<Vec<i64>> =
                vs.iter().map(|v| v.known.as_ref().and_then(|k| k.first().copied())).collect();
            let Some([start, limit, delta]) = known.as_deref().map(|k| [k[0], k[1], k[2]]) else {
                return Err(
                    "start, limit and delta must be integers known before run time (constants or shape arithmetic)"
                        .into(),
                );
            };
            let n = range_len(start, limit, delta)?;
            let ty = TensorType::new(vs[0].ty.dtype, vec![n]);
            let known = known_small(&ty, Some((0..n as i64).map(|i| start + i * delta).collect()));
            vec![(ty, known)]
        }
        Op::ScatterNd => {
            let (data, idx, upd) = (input(ins, 0)?, input(ins, 1)?, input(ins, 2)?);
            if idx.ty.dtype != DType::I64 {
                return Err(format!("indices `{}` are {} but must be i64", idx.name, idx.ty));
            }
            let k = *idx.ty.shape.last().ok_or("indices must have rank 1 or more")?;
            let mut want = idx.ty.shape[..idx.ty.rank() - 1].to_vec();
            want.extend_from_slice(data.ty.shape.get(k..).ok_or("indices index more axes than data has")?);
            if upd.ty.dtype != data.ty.dtype || upd.ty.shape != want {
                return Err(format!("updates {} do not fit data {} and indices {}", upd.ty, data.ty, idx.ty));
            }
            vec![(data.ty.clone(), None)]
        }
        Op::Tile { repeats } => {
            let x = input(ins, 0)?;
            if repeats.len() != x.ty.rank() {
                return Err(format!("{} repeats for input {}", repeats.len(), x.ty));
            }
            let shape: Vec<usize> = x.ty.shape.iter().zip(repeats).map(|(d, r)| d * r).collect();
            vec![(TensorType::new(x.ty.dtype, shape), None)]
        }
        Op::CumSum { axis, .. } => {
            let x = input(ins, 0)?;
            norm_axis(*axis, x.ty.rank())?;
            same(x)
        }
        Op::InstanceNorm { .. } => {
            let x = float_in(0)?;
            if x.ty.rank() < 3 {
                return Err(format!("input is {}; expected N,C,spatial..", x.ty));
            }
            per_channel(ins, 1..3, x.ty.shape[1])?;
            same(x)
        }
        Op::Lstm { hidden_size, direction } => {
            let x = float_in(0)?;
            let (h, dirs) = (*hidden_size, direction.count());
            if h == 0 {
                return Err("hidden_size is 0".into());
            }
            if h.checked_mul(8).is_none() {
                return Err(format!("hidden_size {h} is too large"));
            }
            let [seq, batch, inp] = x.ty.shape[..] else {
                return Err(format!("input is {}; expected [sequence, batch, input]", x.ty));
            };
            let want: [(usize, &str, Vec<usize>); 6] = [
                (1, "W", vec![dirs, 4 * h, inp]),
                (2, "R", vec![dirs, 4 * h, h]),
                (3, "B", vec![dirs, 8 * h]),
                (5, "initial_h", vec![dirs, batch, h]),
                (6, "initial_c", vec![dirs, batch, h]),
                (7, "P", vec![dirs, 3 * h]),
            ];
            for (i, what, shape) in want {
                match opt(ins, i) {
                    None if i <= 2 => return Err(format!("input {i} ({what}) is missing")),
                    Some(v) if v.ty.shape != shape || v.ty.dtype != x.ty.dtype => {
                        return Err(format!("{what} `{}` is {}; expected {:?} {shape:?}", v.name, v.ty, x.ty.dtype))
                    }
                    _ => {}
                }
            }
            if let Some(v) = opt(ins, 4) {
                if v.ty.shape != [batch] || !v.ty.dtype.is_int() {
                    return Err(format!("sequence_lens `{}` is {}; expected an integer [{batch}]", v.name, v.ty));
                }
            }
            vec![(TensorType::new(x.ty.dtype, vec![seq, dirs, batch, h]), None)]
        }
        Op::Cast { to } => {
            let x = input(ins, 0)?;
            let ty = TensorType::new(*to, x.ty.shape.clone());
            let known = if x.ty.dtype.is_int() { known_small(&ty, x.known.clone()) } else { None };
            vec![(ty, known)]
        }
    })
}

/// Inputs `slots` are per-channel parameters: `[channels]` each.
fn per_channel(ins: &[Option<&Value>], slots: std::ops::Range<usize>, channels: usize) -> Result<(), String> {
    for i in slots {
        let p = input(ins, i)?;
        if p.ty.shape != [channels] {
            return Err(format!("parameter `{}` is {} but must be [{channels}]", p.name, p.ty));
        }
    }
    Ok(())
}

/// GatherElements on flat row-major values: at each position of `idx`
/// (of `idx_shape`), `data` (of `data_shape`) at that position with the
/// index along `axis` replaced by the index read there (negative counts
/// from the end). None when an index is out of range.
pub fn gather_elements<T: Copy>(
    data: &[T],
    data_shape: &[usize],
    idx: &[i64],
    idx_shape: &[usize],
    axis: usize,
) -> Option<Vec<T>> {
    let strides = strides_of(data_shape);
    let dim = data_shape[axis] as i64;
    let mut out = Vec::with_capacity(idx.len());
    let mut k = 0;
    each_index(idx_shape, |at| {
        let i = *idx.get(k)?;
        k += 1;
        let i = if i < 0 { i + dim } else { i };
        if !(0..dim).contains(&i) {
            return None;
        }
        let off: usize = at
            .iter()
            .zip(&strides)
            .enumerate()
            .map(|(d, (&p, &s))| if d == axis { i as usize * s } else { p * s })
            .sum();
        out.push(*data.get(off)?);
        Some(())
    })?;
    Some(out)
}

/// Row-major strides of `shape` (elements).
fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Calls `f` with every multi-index of `shape`, row-major; stops at, and
/// gives, the first `None`.
fn each_index(shape: &[usize], mut f: impl FnMut(&[usize]) -> Option<()>) -> Option<()> {
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..shape.iter().product::<usize>() {
        f(&idx)?;
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Some(())
}

/// The known values of a slice of `values` (row-major, of `shape`) to
/// `out` by `ranges` (axis, start, end, step).
fn slice_known(values: &[i64], shape: &[usize], out: &[usize], ranges: &[(usize, i64, i64, i64)]) -> Option<Vec<i64>> {
    let n: usize = out.iter().product();
    if n > KNOWN_LIMIT {
        return None;
    }
    let strides = strides_of(shape);
    let mut vals = Vec::with_capacity(n);
    each_index(out, |idx| {
        let mut off = 0usize;
        for (d, &i) in idx.iter().enumerate() {
            let i = match ranges.iter().find(|(ax, ..)| *ax == d) {
                Some(&(_, start, _, step)) => usize::try_from(start + i as i64 * step).ok()?,
                None => i,
            };
            off += i * strides[d];
        }
        vals.push(*values.get(off)?);
        Some(())
    })?;
    Some(vals)
}

/// `values` (row-major, of `shape`) with their axes permuted by `perm`.
fn transpose_known(values: &[i64], shape: &[usize], perm: &[usize]) -> Vec<i64> {
    let strides = strides_of(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let mut out = Vec::with_capacity(out_shape.iter().product());
    each_index(&out_shape, |idx| {
        out.push(values[idx.iter().zip(perm).map(|(i, &p)| i * strides[p]).sum::<usize>()]);
        Some(())
    });
    out
}

/// Integer Mod: the sign of the divisor (Python's `%`), or with `fmod` of
/// the dividend; `None` for a zero divisor.
pub fn int_mod(p: i64, q: i64, fmod: bool) -> Option<i64> {
    let r = p.checked_rem(q)?;
    Some(if !fmod && r != 0 && (r < 0) != (q < 0) { r + q } else { r })
}

/// The length of ONNX Range(start, limit, delta): max(ceil((limit - start) / delta), 0).
pub fn range_len(start: i64, limit: i64, delta: i64) -> Result<usize, String> {
    if delta == 0 {
        return Err("delta is 0".into());
    }
    let (span, step) = (limit as i128 - start as i128, delta as i128);
    let n = if (span > 0) == (step > 0) && span != 0 { (span.abs() + step.abs() - 1) / step.abs() } else { 0 };
    usize::try_from(n).map_err(|_| format!("Range({start}, {limit}, {delta}) is too long"))
}

/// The known values of an elementwise op's output, when every input's are
/// known: `f` maps one element of each input (broadcast) to the output's.
fn elementwise_known(out: &TensorType, ins: &[&Value], f: impl Fn(&[i64]) -> Option<i64>) -> Option<Vec<i64>> {
    let n = out.numel().filter(|&n| n <= KNOWN_LIMIT)?;
    let knowns: Vec<&Vec<i64>> = ins.iter().map(|v| v.known.as_ref()).collect::<Option<_>>()?;
    let r = out.rank();
    // Strides of each input broadcast to the output shape.
    let strides: Vec<Vec<usize>> = ins
        .iter()
        .map(|v| {
            let sh = &v.ty.shape;
            let mut st = vec![0; r];
            for (i, (&d, s)) in sh.iter().zip(strides_of(sh)).enumerate() {
                st[r - sh.len() + i] = if d == 1 { 0 } else { s };
            }
            st
        })
        .collect();
    let mut out_vals = Vec::with_capacity(n);
    let mut args = vec![0i64; ins.len()];
    each_index(&out.shape, |idx| {
        for (j, k) in knowns.iter().enumerate() {
            let off: usize = idx.iter().zip(&strides[j]).map(|(i, s)| i * s).sum();
            args[j] = *k.get(off)?;
        }
        out_vals.push(f(&args)?);
        Some(())
    })?;
    known_small(out, Some(out_vals))
}

/// Resolves one Slice axis as ONNX does: clamped start and end, and the
/// resulting length.
pub fn slice_range(dim: i64, start: i64, end: i64, step: i64) -> Result<(i64, i64, usize), String> {
    if step == 0 {
        return Err("slice step is 0".into());
    }
    let fix = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    let (s, e) = (fix(start), fix(end));
    let (s, e) =
        if step > 0 { (s.clamp(0, dim), e.clamp(0, dim)) } else { (s.clamp(0, dim - 1), e.clamp(-1, dim - 1)) };
    let len = if step > 0 {
        if e > s {
            (e - s + step - 1) / step
        } else {
            0
        }
    } else if s > e {
        (s - e + (-step) - 1) / (-step)
    } else {
        0
    };
    Ok((s, e, len as usize))
}
