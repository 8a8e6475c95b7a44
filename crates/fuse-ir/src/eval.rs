//! Evaluates one op on constant inputs, for constant folding.
//!
//! Covers the ops that exporters leave on weights and shapes (Relu and
//! ReduceSum of BiFPN edge weights, Gather of one weight, the Shape → Slice
//! → Concat size arithmetic of torch.onnx, Constant, Cast, Unsqueeze, ...).
//! The constant masks of shifted-window attention (Swin) too: Range, Mod,
//! ScatterND, Pow, comparisons, Not, Where, Expand.
//! Floats are computed in f32, as a runtime would; bools as 0/1 integers;
//! `None` means "not folded", never an error: the node then simply stays.

use crate::{shape, BinaryOp, DType, Op, ReduceOp, Tensor, TensorType, UnaryOp};
use ndarray::{ArrayD, Axis, IxDyn};

/// Largest result folded; bigger results stay computed at run time.
pub const FOLD_LIMIT: usize = 1 << 20;

#[derive(Clone, Debug)]
enum Val {
    F(ArrayD<f32>),
    I(ArrayD<i64>),
}

fn to_val(t: &Tensor) -> Option<Val> {
    let shape = IxDyn(&t.ty().shape);
    if t.ty().dtype.is_float() {
        ArrayD::from_shape_vec(shape, t.to_f32_vec()?).ok().map(Val::F)
    } else {
        ArrayD::from_shape_vec(shape, t.to_i64_vec()?).ok().map(Val::I)
    }
}

fn to_tensor(v: &Val, dtype: DType) -> Option<Tensor> {
    match (v, dtype) {
        (Val::F(a), DType::F32) => Tensor::from_f32(a.shape().to_vec(), &a.iter().copied().collect::<Vec<_>>()).ok(),
        (Val::I(a), DType::I64) => Tensor::from_i64(a.shape().to_vec(), &a.iter().copied().collect::<Vec<_>>()).ok(),
        (Val::I(a), DType::Bool) => {
            let bytes: Vec<u8> = a.iter().map(|&v| u8::from(v != 0)).collect();
            Tensor::new(TensorType::new(DType::Bool, a.shape().to_vec()), bytes.into()).ok()
        }
        _ => None,
    }
}

/// The outputs of `op` on constant `inputs` (`None` for an omitted optional
/// input), or `None` when the op or dtype is not folded. `input_types` lets
/// Shape fold on a value that is not constant.
pub fn fold(op: &Op, inputs: &[Option<&Tensor>], input_types: &[Option<&TensorType>]) -> Option<Vec<Tensor>> {
    if let Op::Shape { start, end } = op {
        let ty = input_types.first().copied().flatten()?;
        let r = ty.rank() as i64;
        let clamp = |x: i64| if x < 0 { (x + r).max(0) } else { x.min(r) };
        let (s, e) = (clamp(*start), clamp(end.unwrap_or(r)));
        let dims: Vec<i64> = ty.shape[s as usize..e.max(s) as usize].iter().map(|&d| d as i64).collect();
        return Some(vec![Tensor::from_i64([dims.len()], &dims).ok()?]);
    }
    if let Op::Constant(t) = op {
        return Some(vec![t.clone()]);
    }
    let vals: Vec<Option<Val>> = inputs.iter().map(|t| t.and_then(to_val)).collect();
    if let Op::Range = op {
        return range(&vals).and_then(|v| to_tensor(&v, inputs[0]?.ty().dtype)).map(|t| vec![t]);
    }
    let dtype = inputs.first().copied().flatten()?.ty().dtype;
    if !matches!(dtype, DType::F32 | DType::I64 | DType::Bool) && !matches!(op, Op::Cast { .. }) {
        return None;
    }
    let x = vals.first()?.clone()?;
    let y = || vals.get(1).cloned().flatten();
    let out = match op {
        Op::Unary(u) => match (u, x) {
            (UnaryOp::Identity, v) => v,
            (UnaryOp::Relu, Val::F(a)) => Val::F(a.mapv(|v| v.max(0.0))),
            (UnaryOp::Relu, Val::I(a)) => Val::I(a.mapv(|v| v.max(0))),
            (UnaryOp::Sigmoid, Val::F(a)) => Val::F(a.mapv(|v| 1.0 / (1.0 + (-v).exp()))),
            (UnaryOp::Tanh, Val::F(a)) => Val::F(a.mapv(f32::tanh)),
            (UnaryOp::Sqrt, Val::F(a)) => Val::F(a.mapv(f32::sqrt)),
            (UnaryOp::Ceil, Val::F(a)) => Val::F(a.mapv(f32::ceil)),
            (UnaryOp::Floor, Val::F(a)) => Val::F(a.mapv(f32::floor)),
            (UnaryOp::Sin, Val::F(a)) => Val::F(a.mapv(f32::sin)),
            (UnaryOp::Cos, Val::F(a)) => Val::F(a.mapv(f32::cos)),
            (UnaryOp::Exp, Val::F(a)) => Val::F(a.mapv(f32::exp)),
            (UnaryOp::Log, Val::F(a)) => Val::F(a.mapv(f32::ln)),
            (UnaryOp::Neg, Val::F(a)) => Val::F(a.mapv(|v| -v)),
            (UnaryOp::Neg, Val::I(a)) => Val::I(a.mapv(|v| v.wrapping_neg())),
            (UnaryOp::Abs, Val::F(a)) => Val::F(a.mapv(f32::abs)),
            (UnaryOp::Abs, Val::I(a)) => Val::I(a.mapv(|v| v.wrapping_abs())),
            (UnaryOp::Reciprocal, Val::F(a)) => Val::F(a.mapv(|v| 1.0 / v)),
            _ => return None,
        },
        Op::Binary(b) => {
            let y = vals.get(1)?.clone()?;
            binary(*b, x, y)?
        }
        Op::Reduce { op: r, axes, keepdims } => reduce(*r, x, axes.as_deref(), *keepdims)?,
        Op::Gather { axis } => {
            let Some(Val::I(idx)) = vals.get(1)?.clone() else { return None };
            gather(x, *axis, &idx)?
        }
        Op::Unsqueeze { .. } | Op::Reshape { .. } | Op::Flatten { .. } => {
            // The output shape is what inference computed; only the shape changes.
            return None;
        }
        Op::Concat { axis } => {
            let vs: Option<Vec<Val>> = vals.iter().cloned().collect();
            concat(vs?, *axis)?
        }
        Op::Slice(sl) => slice(x, sl)?,
        Op::Compare(c) => match (x, y()?) {
            (Val::F(a), Val::F(b)) => Val::I(zip2(&a, &b, |p, q| i64::from(c.apply(p, q)))?),
            (Val::I(a), Val::I(b)) => Val::I(zip2(&a, &b, |p, q| i64::from(c.apply(p, q)))?),
            _ => return None,
        },
        Op::Not => match x {
            Val::I(a) => Val::I(a.mapv(|v| i64::from(v == 0))),
            Val::F(_) => return None,
        },
        Op::IsNaN => match x {
            Val::F(a) => Val::I(a.mapv(|v| i64::from(v.is_nan()))),
            Val::I(a) => Val::I(a.mapv(|_| 0)),
        },
        Op::GatherElements { axis } => {
            let Some(Val::I(idx)) = y() else { return None };
            gather_elements(x, *axis, &idx)?
        }
        Op::And => match (x, y()?) {
            (Val::I(a), Val::I(b)) => Val::I(zip2(&a, &b, |p, q| i64::from(p != 0 && q != 0))?),
            _ => return None,
        },
        Op::Where => {
            let Val::I(c) = x else { return None };
            match (y()?, vals.get(2).cloned().flatten()?) {
                (Val::F(a), Val::F(b)) => Val::F(select(&c, &a, &b)?),
                (Val::I(a), Val::I(b)) => Val::I(select(&c, &a, &b)?),
                _ => return None,
            }
        }
        Op::Expand { shape } => match x {
            Val::F(a) => Val::F(expand(&a, shape)?),
            Val::I(a) => Val::I(expand(&a, shape)?),
        },
        Op::Mod { fmod } => match (x, y()?) {
            (Val::I(a), Val::I(b)) => {
                let m = zip2(&a, &b, |p, q| shape::int_mod(p, q, *fmod))?;
                Val::I(
                    m.iter()
                        .copied()
                        .collect::<Option<Vec<i64>>>()
                        .and_then(|v| ArrayD::from_shape_vec(m.raw_dim(), v).ok())?,
                )
            }
            (Val::F(a), Val::F(b)) if *fmod => Val::F(zip2(&a, &b, |p, q| p % q)?),
            _ => return None,
        },
        Op::Pow => match (x, y()?) {
            (Val::F(a), Val::F(b)) => Val::F(zip2(&a, &b, f32::powf)?),
            (Val::F(a), Val::I(b)) => Val::F(zip2(&a, &b, |p, q| p.powf(q as f32))?),
            _ => return None,
        },
        Op::ScatterNd => {
            let Some(Val::I(idx)) = y() else { return None };
            match (x, vals.get(2).cloned().flatten()?) {
                (Val::F(d), Val::F(u)) => Val::F(scatter_nd(d, &idx, &u)?),
                (Val::I(d), Val::I(u)) => Val::I(scatter_nd(d, &idx, &u)?),
                _ => return None,
            }
        }
        Op::Cast { to } => match (x, to) {
            (Val::F(a), DType::F32) => Val::F(a),
            (Val::I(a), DType::I64) => Val::I(a),
            (Val::I(a), DType::Bool) => Val::I(a.mapv(|v| i64::from(v != 0))),
            (Val::F(a), DType::Bool) => Val::I(a.mapv(|v| i64::from(v != 0.0))),
            (Val::I(a), DType::F32) => Val::F(a.mapv(|v| v as f32)),
            (Val::F(a), DType::I64) => Val::I(a.mapv(|v| v as i64)),
            _ => return None,
        },
        Op::Clip { min, max } => match x {
            // ONNX's order: min(max(x, min), max).
            Val::F(a) => Val::F(a.mapv(|v| {
                let v = min.map_or(v, |lo| v.max(lo));
                max.map_or(v, |hi| v.min(hi))
            })),
            Val::I(_) => return None,
        },
        Op::BatchNorm(bn) => {
            let Val::F(a) = x else { return None };
            let p = |i: usize| match vals.get(i).cloned().flatten() {
                Some(Val::F(v)) if v.ndim() == 1 => Some(v),
                _ => None,
            };
            Val::F(batch_norm(a, [p(1)?, p(2)?, p(3)?, p(4)?], bn.epsilon)?)
        }
        Op::Tile { repeats } => match x {
            Val::F(a) => Val::F(tile(&a, repeats)?),
            Val::I(a) => Val::I(tile(&a, repeats)?),
        },
        Op::CumSum { axis, exclusive, reverse } => match x {
            Val::F(a) => Val::F(cumsum(a, *axis, *exclusive, *reverse, 0.0)?),
            Val::I(a) => Val::I(cumsum(a, *axis, *exclusive, *reverse, 0)?),
        },
        Op::Transpose { perm } => match x {
            Val::F(a) => Val::F(a.permuted_axes(IxDyn(perm)).as_standard_layout().to_owned()),
            Val::I(a) => Val::I(a.permuted_axes(IxDyn(perm)).as_standard_layout().to_owned()),
        },
        _ => return None,
    };
    // Bools travel as 0/1 integers: the output is bool where the op makes
    // one or moves the values of a bool input.
    let data = inputs.get(if matches!(op, Op::Where) { 1 } else { 0 }).copied().flatten().map(|t| t.ty().dtype);
    let (n, dt) = match (&out, op) {
        (Val::I(a), Op::Compare(_) | Op::Not | Op::IsNaN | Op::And | Op::Cast { to: DType::Bool }) => {
            (a.len(), DType::Bool)
        }
        (Val::I(a), Op::Cast { .. }) => (a.len(), DType::I64),
        (Val::I(a), _) if data == Some(DType::Bool) => (a.len(), DType::Bool),
        (Val::F(a), _) => (a.len(), DType::F32),
        (Val::I(a), _) => (a.len(), DType::I64),
    };
    if n > FOLD_LIMIT {
        return None;
    }
    Some(vec![to_tensor(&out, dt)?])
}

/// Reshapes a folded result to a shape computed by inference (Unsqueeze,
/// Reshape, Flatten keep the data and change only the type).
pub fn reshape(t: &Tensor, ty: &TensorType) -> Option<Tensor> {
    if t.ty().dtype != ty.dtype || t.ty().numel() != ty.numel() {
        return None;
    }
    Tensor::new(ty.clone(), t.storage().clone()).ok()
}

fn bin<
    T: Copy
        + PartialOrd
        + std::ops::Add<Output = T>
        + std::ops::Sub<Output = T>
        + std::ops::Mul<Output = T>
        + std::ops::Div<Output = T>,
>(
    b: BinaryOp,
    x: &ArrayD<T>,
    y: &ArrayD<T>,
) -> Option<ArrayD<T>> {
    zip2(x, y, |p, q| match b {
        BinaryOp::Add => p + q,
        BinaryOp::Sub => p - q,
        BinaryOp::Mul => p * q,
        BinaryOp::Div => p / q,
        // A NaN on either side is the result (as ONNX Runtime computes).
        #[allow(clippy::eq_op)]
        BinaryOp::Min => {
            if q != q || q < p {
                q
            } else {
                p
            }
        }
        #[allow(clippy::eq_op)]
        BinaryOp::Max => {
            if q != q || q > p {
                q
            } else {
                p
            }
        }
    })
}

fn binary(b: BinaryOp, x: Val, y: Val) -> Option<Val> {
    match (x, y) {
        (Val::F(x), Val::F(y)) => bin(b, &x, &y).map(Val::F),
        (Val::I(x), Val::I(y)) => {
            if b == BinaryOp::Div && y.iter().any(|&v| v == 0) {
                return None;
            }
            bin(b, &x, &y).map(Val::I)
        }
        _ => None,
    }
}

/// `f` over `x` and `y` broadcast together.
fn zip2<A: Clone, B: Clone, O>(x: &ArrayD<A>, y: &ArrayD<B>, f: impl Fn(A, B) -> O) -> Option<ArrayD<O>> {
    let shape = shape::broadcast(x.shape(), y.shape()).ok()?;
    let (xb, yb) = (x.broadcast(IxDyn(&shape))?, y.broadcast(IxDyn(&shape))?);
    Some(ndarray::Zip::from(&xb).and(&yb).map_collect(|p, q| f(p.clone(), q.clone())))
}

/// Where: `a` where `c` is non-zero, else `b`, broadcast together.
fn select<T: Clone>(c: &ArrayD<i64>, a: &ArrayD<T>, b: &ArrayD<T>) -> Option<ArrayD<T>> {
    let shape = shape::broadcast(&shape::broadcast(c.shape(), a.shape()).ok()?, b.shape()).ok()?;
    let (cb, ab, bb) = (c.broadcast(IxDyn(&shape))?, a.broadcast(IxDyn(&shape))?, b.broadcast(IxDyn(&shape))?);
    Some(ndarray::Zip::from(&cb).and(&ab).and(&bb).map_collect(|c, p, q| if *c != 0 { p.clone() } else { q.clone() }))
}

fn expand<T: Clone>(a: &ArrayD<T>, to: &[usize]) -> Option<ArrayD<T>> {
    let shape = shape::broadcast(a.shape(), to).ok()?;
    Some(a.broadcast(IxDyn(&shape))?.to_owned())
}

/// Range(start, limit, delta) of scalar constants.
fn range(vals: &[Option<Val>]) -> Option<Val> {
    let scalar = |i: usize| vals.get(i).cloned().flatten();
    match (scalar(0)?, scalar(1)?, scalar(2)?) {
        (Val::I(s), Val::I(l), Val::I(d)) => {
            let (s, l, d) = (*s.first()?, *l.first()?, *d.first()?);
            let n = shape::range_len(s, l, d).ok()?;
            (n <= FOLD_LIMIT).then(|| Val::I(ArrayD::from_shape_fn(IxDyn(&[n]), |i| s + i[0] as i64 * d)))
        }
        (Val::F(s), Val::F(l), Val::F(d)) => {
            let (s, l, d) = (*s.first()?, *l.first()?, *d.first()?);
            let n = ((l - s) / d).ceil();
            (d != 0.0 && n.is_finite() && n <= FOLD_LIMIT as f32).then(|| {
                let n = n.max(0.0) as usize;
                Val::F(ArrayD::from_shape_fn(IxDyn(&[n]), |i| s + i[0] as f32 * d))
            })
        }
        _ => None,
    }
}

/// ScatterND without reduction: `data` with the slices `idx` names replaced
/// by `updates`, later updates winning.
fn scatter_nd<T: Clone>(mut data: ArrayD<T>, idx: &ArrayD<i64>, updates: &ArrayD<T>) -> Option<ArrayD<T>> {
    let k = *idx.shape().last()?;
    let rank = data.ndim();
    if k > rank {
        return None;
    }
    let tuples = idx.len() / k.max(1);
    let slice: usize = data.shape()[k..].iter().product();
    let idx: Vec<i64> = idx.iter().copied().collect();
    let upd: Vec<T> = updates.iter().cloned().collect();
    if upd.len() != tuples * slice {
        return None;
    }
    let dims = data.shape().to_vec();
    let flat = data.as_slice_mut()?;
    for t in 0..tuples {
        let mut off = 0usize;
        for (j, &d) in dims[..k].iter().enumerate() {
            let i = idx[t * k + j];
            let i = if i < 0 { i + d as i64 } else { i };
            if !(0..d as i64).contains(&i) {
                return None;
            }
            off = off * d + i as usize;
        }
        let start = off * slice;
        flat[start..start + slice].clone_from_slice(&upd[t * slice..(t + 1) * slice]);
    }
    Some(data)
}

/// Inference BatchNormalization over channel axis 1: `(x - mean) /
/// sqrt(var + eps) * scale + bias` (torch's dynamo exporter standardizes
/// NFNet's conv weights this way, the statistics from ReduceMean).
fn batch_norm(mut a: ArrayD<f32>, [scale, bias, mean, var]: [ArrayD<f32>; 4], eps: f32) -> Option<ArrayD<f32>> {
    let c = *a.shape().get(1)?;
    if [&scale, &bias, &mean, &var].iter().any(|p| p.len() != c) {
        return None;
    }
    for (k, mut lane) in a.axis_iter_mut(Axis(1)).enumerate() {
        let inv = 1.0 / (var[k] + eps).sqrt();
        lane.mapv_inplace(|v| (v - mean[k]) * inv * scale[k] + bias[k]);
    }
    Some(a)
}

/// `a` repeated `repeats[i]` times along axis `i`.
fn tile<T: Clone>(a: &ArrayD<T>, repeats: &[usize]) -> Option<ArrayD<T>> {
    if repeats.len() != a.ndim() {
        return None;
    }
    let mut out = a.clone();
    for (ax, &r) in repeats.iter().enumerate() {
        let views: Vec<_> = (0..r).map(|_| out.view()).collect();
        out = ndarray::concatenate(Axis(ax), &views).ok()?;
    }
    Some(out)
}

/// Running sums along `axis` (ONNX CumSum), in index order.
fn cumsum<T: Copy + std::ops::Add<Output = T>>(
    mut a: ArrayD<T>,
    axis: i64,
    exclusive: bool,
    reverse: bool,
    zero: T,
) -> Option<ArrayD<T>> {
    let ax = shape::norm_axis(axis, a.ndim()).ok()?;
    for mut lane in a.lanes_mut(Axis(ax)) {
        let n = lane.len();
        let mut acc = zero;
        for k in 0..n {
            let i = if reverse { n - 1 - k } else { k };
            let v = lane[i];
            if exclusive {
                lane[i] = acc;
                acc = acc + v;
            } else {
                acc = acc + v;
                lane[i] = acc;
            }
        }
    }
    Some(a)
}

fn reduce(r: ReduceOp, x: Val, axes: Option<&[i64]>, keepdims: bool) -> Option<Val> {
    let Val::F(mut a) = x else { return None };
    if r == ReduceOp::L2 {
        a.mapv_inplace(|v| v * v);
    }
    let rank = a.ndim();
    let mut axes: Vec<usize> = match axes {
        None => (0..rank).collect(),
        Some(ax) => ax.iter().map(|&v| shape::norm_axis(v, rank).ok()).collect::<Option<_>>()?,
    };
    axes.sort_unstable();
    axes.dedup();
    let mut out = a;
    for &ax in axes.iter().rev() {
        let n = out.shape()[ax] as f32;
        out = match r {
            // A NaN anywhere gives NaN, as numpy and runtimes do.
            ReduceOp::Max => {
                out.fold_axis(Axis(ax), f32::NEG_INFINITY, |&acc, &v| if v > acc || v.is_nan() { v } else { acc })
            }
            ReduceOp::Min => {
                out.fold_axis(Axis(ax), f32::INFINITY, |&acc, &v| if v < acc || v.is_nan() { v } else { acc })
            }
            // Sum in index order, as a runtime's reference kernel does.
            ReduceOp::Mean => out.fold_axis(Axis(ax), 0.0f32, |acc, v| acc + v).mapv(|v| v / n),
            ReduceOp::Sum | ReduceOp::L2 => out.fold_axis(Axis(ax), 0.0f32, |acc, v| acc + v),
        };
        if keepdims {
            out = out.insert_axis(Axis(ax));
        }
    }
    if r == ReduceOp::L2 {
        out.mapv_inplace(f32::sqrt);
    }
    Some(Val::F(out))
}

fn gather_elements(x: Val, axis: i64, idx: &ArrayD<i64>) -> Option<Val> {
    fn go<T: Copy>(a: ArrayD<T>, axis: i64, idx: &ArrayD<i64>) -> Option<ArrayD<T>> {
        let ax = shape::norm_axis(axis, a.ndim()).ok()?;
        let data: Vec<T> = a.as_standard_layout().iter().copied().collect();
        let ids: Vec<i64> = idx.as_standard_layout().iter().copied().collect();
        let out = shape::gather_elements(&data, a.shape(), &ids, idx.shape(), ax)?;
        ArrayD::from_shape_vec(IxDyn(idx.shape()), out).ok()
    }
    match x {
        Val::F(a) => go(a, axis, idx).map(Val::F),
        Val::I(a) => go(a, axis, idx).map(Val::I),
    }
}

fn gather(x: Val, axis: i64, idx: &ArrayD<i64>) -> Option<Val> {
    fn go<T: Clone>(a: ArrayD<T>, axis: i64, idx: &ArrayD<i64>) -> Option<ArrayD<T>> {
        let ax = shape::norm_axis(axis, a.ndim()).ok()?;
        let n = a.shape()[ax] as i64;
        let flat: Vec<usize> = idx
            .iter()
            .map(|&i| {
                let i = if i < 0 { i + n } else { i };
                (0..n).contains(&i).then_some(i as usize)
            })
            .collect::<Option<_>>()?;
        let picked = a.select(Axis(ax), &flat);
        // Replace the gathered axis by the index tensor's shape.
        let mut shape: Vec<usize> = a.shape()[..ax].to_vec();
        shape.extend_from_slice(idx.shape());
        shape.extend_from_slice(&a.shape()[ax + 1..]);
        let data: Vec<T> = picked.as_standard_layout().iter().cloned().collect();
        ArrayD::from_shape_vec(IxDyn(&shape), data).ok()
    }
    match x {
        Val::F(a) => go(a, axis, idx).map(Val::F),
        Val::I(a) => go(a, axis, idx).map(Val::I),
    }
}

fn concat(vs: Vec<Val>, axis: i64) -> Option<Val> {
    let rank = match vs.first()? {
        Val::F(a) => a.ndim(),
        Val::I(a) => a.ndim(),
    };
    let ax = Axis(shape::norm_axis(axis, rank).ok()?);
    if vs.iter().all(|v| matches!(v, Val::F(_))) {
        let views: Vec<_> = vs.iter().map(|v| if let Val::F(a) = v { a.view() } else { unreachable!() }).collect();
        ndarray::concatenate(ax, &views).ok().map(Val::F)
    } else if vs.iter().all(|v| matches!(v, Val::I(_))) {
        let views: Vec<_> = vs.iter().map(|v| if let Val::I(a) = v { a.view() } else { unreachable!() }).collect();
        ndarray::concatenate(ax, &views).ok().map(Val::I)
    } else {
        None
    }
}

fn slice(x: Val, sl: &crate::Slice) -> Option<Val> {
    fn go<T: Clone>(mut a: ArrayD<T>, sl: &crate::Slice) -> Option<ArrayD<T>> {
        for (i, &axis) in sl.axes.iter().enumerate() {
            let ax = shape::norm_axis(axis, a.ndim()).ok()?;
            let dim = a.shape()[ax] as i64;
            let (start, _end, len) = shape::slice_range(dim, sl.starts[i], sl.ends[i], sl.steps[i]).ok()?;
            let step = sl.steps[i] as isize;
            let idx: Vec<usize> = (0..len as i64).map(|k| (start + k * step as i64) as usize).collect();
            a = a.select(Axis(ax), &idx);
        }
        Some(a)
    }
    match x {
        Val::F(a) => go(a, sl).map(Val::F),
        Val::I(a) => go(a, sl).map(Val::I),
    }
}
