//! Stack members: one aligned node group, same in every member, that
//! channel stacking ([`group`](super::group)) does not take, rewritten on a
//! leading member axis ([`Stacking::Members`]: member k's `[B, S, H]` is
//! index k of `[N, B, S, H]`). This is how a transformer's layers stack:
//!
//! | member op | fused op |
//! |---|---|
//! | MatMul by a weight `[K, M]` | one batched MatMul by the weights stacked `[N, 1, .., K, M]`; on 2-D rows `[R, K]`, the rows in parts of at most 512 `[N, P, R/P, K]` |
//! | MatMul of two activations (attention) | unchanged: the member axis is one more batch axis |
//! | Gemm (alpha = beta = 1, no transA) | batched MatMul by `[N, K, M]` (transB applied to the stacked copy), Add of the biases `[N, 1, M]` |
//! | Add/Sub/Mul/Div, comparisons, And, Where | unchanged; a shared operand (the attention mask) broadcasts as it is, per-member constants stack `[N, 1, .., shape]` |
//! | unary ops, Cast, Clip, HardSigmoid, LeakyRelu | unchanged |
//! | Softmax, Concat, Split, Gather, Slice, Unsqueeze, Reduce | the axes shifted past the member axis |
//! | Reshape, Expand, Flatten | the target shape with `N` in front |
//! | Transpose | the member axis stays first |
//! | LayerNormalization | bit-identical scale and bias: unchanged; per member: normalized without affine, then Mul and Add of the stacked `[N, 1, .., H]` scale and bias; over the last axis on 2-D rows `[N·rows, H]` |
//! | Gather from per-member tables (embeddings) by shared indices | the tables stacked `[N, V, H]`, gathered on axis 1 |
//! | Einsum | a member letter in front of every stacked operand's term and of the output's; shared operands keep theirs |
//!
//! Anything else (convolutions and pooling, which are channels' own,
//! GatherND, Shape) returns `false`: the caller runs it per member. With
//! `split_linear` ([`kept_apart`]), linear layers run per member by choice.

use fuse_ir::{DType, Op, Tensor, ValueDef, ValueId};

use super::align::NodeGroup;
use super::layout::{FuseBuilder, Layout, Stacking, WeightForm};
use super::options::FuseOptions;
use crate::util::rows_of;
use crate::PassError;

const STACKING: Stacking = Stacking::Members;

/// A fused node's inputs.
type Inputs = Vec<Option<ValueId>>;

/// Whether `opts` keep the group per member although it could stack: a
/// linear layer under `split_linear` (a MatMul or Gemm by each member's own
/// 2-D weight, an Einsum by each member's own weight, or an Add of
/// per-member constants to a value held per member: a bias after such a
/// product).
pub(crate) fn kept_apart(b: &FuseBuilder, group: &NodeGroup, opts: &FuseOptions) -> Result<bool, PassError> {
    if !opts.split_linear {
        return Ok(false);
    }
    let n0 = b.node(0, group);
    let g0 = b.members[0];
    let own = |slot: usize| own_weight(b, group, slot);
    let rank = |slot: usize| n0.inputs.get(slot).copied().flatten().map_or(0, |v| g0.value(v).ty.rank());
    Ok(match &n0.op {
        Op::MatMul | Op::Gemm(_) => own(1) && rank(1) == 2,
        Op::Einsum { .. } => (0..n0.inputs.len()).any(own),
        Op::Binary(fuse_ir::BinaryOp::Add) => {
            let data = (0..2).find(|&s| !is_weight(b, group, s));
            let weight = (0..2).any(own);
            match data.and_then(|s| n0.inputs[s]) {
                Some(v) if weight => matches!(b.layout(0, v)?, Layout::Own(_)),
                _ => false,
            }
        }
        _ => false,
    })
}

/// Lowers `group` on the member axis; `Ok(false)` when the op cannot be,
/// or when its stacked inputs or outputs would have more than `max_rank`
/// dimensions.
pub(crate) fn lower(b: &mut FuseBuilder, group: &NodeGroup, max_rank: Option<usize>) -> Result<bool, PassError> {
    let n = b.n();
    let n0 = b.node(0, group);
    let g0 = b.members[0];
    let widest = n0.inputs.iter().flatten().chain(&n0.outputs).map(|v| g0.value(*v).ty.rank()).max().unwrap_or(0);
    if max_rank.is_some_and(|m| widest + 1 > m) {
        return Ok(false);
    }
    let name = n0.name.clone();
    let outs: Vec<String> = n0.outputs.iter().map(|o| g0.value(*o).name.clone()).collect();
    let out_ty = g0.value(n0.outputs[0]).ty.clone();
    let rank = out_ty.rank();
    let in_rank = |slot: usize| n0.inputs[slot].map(|v| g0.value(v).ty.rank()).unwrap_or(0);
    let data_only = (0..n0.inputs.len()).all(|s| n0.inputs[s].is_some() && !is_weight(b, group, s));
    let shift = |axes: &[i64]| axes.iter().map(|a| Stacking::member_axis(*a)).collect::<Vec<_>>();
    if matches!(n0.op, Op::MatMul) && linear_in_parts(b, group, max_rank)? {
        return Ok(true);
    }
    let mut op = n0.op.clone();
    let ins: Inputs = match &n0.op {
        op if op.is_elementwise_unary() && data_only => vec![Some(stacked(b, group, 0)?)],
        Op::Softmax { axis } if data_only => {
            op = Op::Softmax { axis: Stacking::member_axis(*axis) };
            vec![Some(stacked(b, group, 0)?)]
        }
        Op::Reduce { op: r, axes: Some(axes), keepdims } if data_only => {
            op = Op::Reduce { op: *r, axes: Some(shift(axes)), keepdims: *keepdims };
            vec![Some(stacked(b, group, 0)?)]
        }
        Op::Slice(sl) if data_only => {
            let mut sl = sl.clone();
            sl.axes = shift(&sl.axes);
            op = Op::Slice(sl);
            vec![Some(stacked(b, group, 0)?)]
        }
        Op::Unsqueeze { axes } if data_only => {
            op = Op::Unsqueeze { axes: shift(axes) };
            vec![Some(stacked(b, group, 0)?)]
        }
        Op::Split { axis, split } if data_only => {
            op = Op::Split { axis: Stacking::member_axis(*axis), split: split.clone() };
            vec![Some(stacked(b, group, 0)?)]
        }
        Op::Reshape { .. } | Op::Flatten { .. } if data_only => {
            op = Op::Reshape { shape: STACKING.stacked_shape(&out_ty.shape, n) };
            vec![Some(stacked(b, group, 0)?)]
        }
        Op::Transpose { perm } if data_only => {
            op = Op::Transpose { perm: std::iter::once(0).chain(perm.iter().map(|p| p + 1)).collect() };
            vec![Some(stacked(b, group, 0)?)]
        }
        Op::Expand { shape } => {
            let Some(x) = operand(b, group, 0, shape.len(), false)? else { return Ok(false) };
            op = Op::Expand { shape: STACKING.stacked_shape(shape, n) };
            vec![Some(x)]
        }
        Op::Concat { axis } => {
            let mut parts = vec![];
            for slot in 0..n0.inputs.len() {
                match operand(b, group, slot, rank, true)? {
                    Some(p) => parts.push(Some(p)),
                    None => return Ok(false),
                }
            }
            op = Op::Concat { axis: Stacking::member_axis(*axis) };
            parts
        }
        Op::Binary(_) | Op::Compare(_) | Op::And | Op::Where => {
            let mut ins = vec![];
            for slot in 0..n0.inputs.len() {
                match operand(b, group, slot, rank, false)? {
                    Some(p) => ins.push(Some(p)),
                    None => return Ok(false),
                }
            }
            ins
        }
        Op::MatMul if in_rank(0) >= 2 && in_rank(1) >= 2 => {
            let (Some(a), Some(w)) = (operand(b, group, 0, rank, false)?, operand(b, group, 1, rank, false)?) else {
                return Ok(false);
            };
            vec![Some(a), Some(w)]
        }
        Op::Einsum { equation } => match einsum(b, group, equation)? {
            Some((eq, ins)) => {
                op = Op::Einsum { equation: eq };
                ins
            }
            None => return Ok(false),
        },
        Op::Gemm(gm) => return gemm(b, group, gm.clone()),
        Op::Gather { axis } => match gather(b, group, *axis)? {
            Some((axis, ins)) => {
                op = Op::Gather { axis };
                ins
            }
            None => return Ok(false),
        },
        Op::LayerNorm { axis, epsilon } => return layer_norm(b, group, *axis, *epsilon),
        _ => return Ok(false),
    };
    let node = b.f.add_node(name, op, ins, outs)?;
    let fo = b.f.node(node).outputs.clone();
    b.set_stacked(group, &fo, STACKING)?;
    Ok(true)
}

/// The most rows a part of a stacked linear layer's rows may hold
/// ([`row_parts`]).
const MAX_PART_ROWS: usize = 512;

/// The most parts [`row_parts`] cuts rows into.
const MAX_PARTS: usize = 64;

/// How many parts a stacked linear layer's `rows` (each member's) are cut
/// into ([`linear_in_parts`]): the fewest, at least two, that divide them
/// evenly with at most [`MAX_PART_ROWS`] rows each (128 rows: 2 parts;
/// 1024: 2; 4096: 8; 6304 = 32 x 197: 16), else the fewest that divide
/// them, never more than [`MAX_PARTS`]. `None` when none divides them
/// (ViT's 197 rows at batch 1). Measured side by
/// side, stacked on rows, ONNX Runtime 1.32 CPU, 2 threads (README,
/// "Rows"): MiniLM-L6 x3 at batch 8 (1024 rows) 2 parts 1.15x/1.19x the
/// members, 4 parts 1.15x/1.17x, 8 parts 1.12x/1.16x; at batch 32 (4096
/// rows) 2 parts 1.07x, 8 parts 1.14x/1.13x, 32 parts 1.15x/1.14x;
/// ViT-Tiny x3 at batch 32 (6304 rows) 2 parts 0.86x, 8 parts 0.92x/0.90x,
/// 16 parts 0.92x, 32 parts 0.94x/0.93x; at batch 8 (1576 rows) 2, 4 and
/// 8 parts within 0.01x of each other.
fn row_parts(rows: usize) -> Option<usize> {
    let divides = |p: &usize| rows.is_multiple_of(*p);
    let parts = || (2..=MAX_PARTS.min(rows)).filter(divides);
    parts().find(|p| rows / p <= MAX_PART_ROWS).or_else(|| parts().next())
}

/// A linear layer on 2-D rows (`[R, K]` by each member's own `[K, M]`,
/// the members' rows from [`crate::flatten_rows`]), its rows cut into
/// [`row_parts`] `P`: `[N, P, R/P, K]` by the weights stacked `[N, 1, K, M]`,
/// then reshaped to `[N, R, M]`. ONNX Runtime's CPU provider (MLAS) shares
/// a batched product among its threads by batch item: three members'
/// products on two threads run one thread's two after the other's one.
/// Parts keep two threads busy (MiniLM-L6 x3 stacked, 2 threads, side by
/// side: batch 8 0.93x -> 1.21x the members in halves, batch 1 0.86x ->
/// 0.93x), and products of at most 512 rows run faster than longer ones
/// ([`row_parts`]). `Ok(false)`: not such a layer (or rows no cut divides).
fn linear_in_parts(b: &mut FuseBuilder, group: &NodeGroup, max_rank: Option<usize>) -> Result<bool, PassError> {
    let n0 = b.node(0, group);
    let g0 = b.members[0];
    let (Some(x), Some(w)) = (n0.inputs[0], n0.inputs[1]) else { return Ok(false) };
    let (xs, ws) = (g0.value(x).ty.shape.clone(), g0.value(w).ty.shape.clone());
    if xs.len() != 2 || ws.len() != 2 || is_weight(b, group, 0) || !own_weight(b, group, 1) {
        return Ok(false);
    }
    let Some(row_parts) = row_parts(xs[0]) else { return Ok(false) };
    if max_rank.is_some_and(|m| m < 4) {
        return Ok(false);
    }
    let Some(w) = b.stacked_weight(group, 1, WeightForm::Members { rank: 3, transposed: false }) else {
        return Ok(false);
    };
    // Stacked `[N, R, K]`, or one shared `[R, K]` (a frozen trunk's).
    let Some(a) = operand(b, group, 0, 2, false)? else { return Ok(false) };
    let name = n0.name.clone();
    let out = g0.value(n0.outputs[0]).name.clone();
    let mut parts = b.f.value(a).ty.shape.clone();
    let r = parts.len() - 2;
    parts.splice(r..r + 1, [row_parts, xs[0] / row_parts]);
    let a = b.add(format!("{name}::parts"), Op::Reshape { shape: parts }, vec![a])?;
    let m = b.add(format!("{name}::on_parts"), Op::MatMul, vec![a, w])?;
    let shape = vec![b.n(), xs[0], ws[1]];
    let fo = b.f.add_node(name, Op::Reshape { shape }, vec![Some(m)], vec![out])?;
    let fo = b.f.node(fo).outputs.clone();
    b.set_stacked(group, &fo, STACKING)?;
    Ok(true)
}

/// The LayerNormalization of the stacked `ins[0]` (with `ins`' scale and
/// bias), node `node` writing `value` in the stacked shape: over the last
/// axis as 2-D rows between two Reshapes ([`layer_norm`] says why).
fn normalized(
    b: &mut FuseBuilder,
    mut ins: Vec<Option<ValueId>>,
    axis: i64,
    epsilon: f32,
    last: bool,
    node: String,
    value: String,
) -> Result<fuse_ir::NodeId, PassError> {
    if !last {
        let ln = Op::LayerNorm { axis: Stacking::member_axis(axis), epsilon };
        return Ok(b.f.add_node(node, ln, ins, vec![value])?);
    }
    let x = ins[0].expect("layer norm input");
    let shape = b.f.value(x).ty.shape.clone();
    ins[0] = Some(b.add(format!("{node}::rows"), Op::Reshape { shape: rows_of(&shape) }, vec![x])?);
    let l = b.f.add_node(
        format!("{node}::on_rows"),
        Op::LayerNorm { axis: -1, epsilon },
        ins,
        vec![format!("{node}::on_rows")],
    )?;
    let l = b.f.node(l).outputs[0];
    Ok(b.f.add_node(node, Op::Reshape { shape }, vec![Some(l)], vec![value])?)
}

/// Member k's value in input `slot` of the group, for every member.
fn per_member(b: &FuseBuilder, group: &NodeGroup, slot: usize) -> Option<Vec<ValueId>> {
    (0..b.n()).map(|k| b.node(k, group).inputs[slot]).collect()
}

/// The member-axis stacked form of the group's data input `slot`.
fn stacked(b: &mut FuseBuilder, group: &NodeGroup, slot: usize) -> Result<ValueId, PassError> {
    let x = per_member(b, group, slot).ok_or_else(|| PassError::Internal("a missing data input".into()))?;
    b.stacked(&x, STACKING)
}

/// Whether input `slot` of the group is a weight (a missing slot is not).
fn is_weight(b: &FuseBuilder, group: &NodeGroup, slot: usize) -> bool {
    let g0 = b.members[0];
    b.node(0, group).inputs.get(slot).copied().flatten().is_some_and(|v| matches!(g0.value(v).def, ValueDef::Weight(_)))
}

/// The fused value every member reads in data input `slot`, when it is one
/// shared value (graph inputs, layers computed once).
fn shared_input(b: &FuseBuilder, group: &NodeGroup, slot: usize) -> Result<Option<ValueId>, PassError> {
    let Some(vals) = per_member(b, group, slot) else { return Ok(None) };
    let layouts: Vec<Layout> = (0..b.n()).map(|k| b.layout(k, vals[k])).collect::<Result<_, _>>()?;
    Ok(match layouts[0] {
        Layout::Shared(f) if layouts.iter().all(|l| *l == layouts[0]) => Some(f),
        _ => None,
    })
}

/// Whether input `slot` of the group is a weight of each member's own (not
/// bit-identical across the members).
fn own_weight(b: &FuseBuilder, group: &NodeGroup, slot: usize) -> bool {
    is_weight(b, group, slot) && !same_weights(b, group, slot)
}

/// Whether the members' weights in `slot` are bit-identical.
fn same_weights(b: &FuseBuilder, group: &NodeGroup, slot: usize) -> bool {
    let Some(vals) = per_member(b, group, slot) else { return false };
    let t = |k: usize| match &b.members[k].value(vals[k]).def {
        ValueDef::Weight(t) => Some(t),
        _ => None,
    };
    t(0).is_some() && (1..b.n()).all(|k| t(k) == t(0))
}

/// Input `slot` of an op that broadcasts its operands (numpy-style, from
/// the right) to a member output of rank `rank`: a value shared by every
/// member as it is (it broadcasts over the member axis), bit-identical
/// weights as they are, and anything else stacked on the member axis with
/// ones up to `rank` (`[N, 1, .., shape]`). `full`: every operand must be
/// stacked (a Concat does not broadcast). `None` when it cannot be.
fn operand(
    b: &mut FuseBuilder,
    group: &NodeGroup,
    slot: usize,
    rank: usize,
    full: bool,
) -> Result<Option<ValueId>, PassError> {
    let Some(vals) = per_member(b, group, slot) else { return Ok(None) };
    let g0 = b.members[0];
    let ty = g0.value(vals[0]).ty.clone();
    if ty.rank() > rank {
        return Ok(None);
    }
    if is_weight(b, group, slot) {
        if !full && same_weights(b, group, slot) {
            return Ok(Some(b.weight(0, vals[0], true)));
        }
        return Ok(b.stacked_weight(group, slot, WeightForm::Members { rank, transposed: false }));
    }
    if !full {
        if let Some(f) = shared_input(b, group, slot)? {
            return Ok(Some(f));
        }
    }
    let s = b.stacked(&vals, STACKING)?;
    if ty.rank() == rank {
        return Ok(Some(s));
    }
    let shape: Vec<usize> =
        [b.n()].into_iter().chain(std::iter::repeat_n(1, rank - ty.rank())).chain(ty.shape.iter().copied()).collect();
    let vname = format!("{}::rank{rank}", b.f.value(s).name);
    b.add(vname, Op::Reshape { shape }, vec![s]).map(Some)
}

/// Gather: from per-member tables by shared indices (an embedding) on the
/// stacked tables; from a stacked value by shared or bit-identical indices;
/// from one table by stacked indices (on axis 0). The fused axis and
/// inputs, or `None`.
fn gather(b: &mut FuseBuilder, group: &NodeGroup, axis: i64) -> Result<Option<(i64, Inputs)>, PassError> {
    let n0 = b.node(0, group);
    let g0 = b.members[0];
    let (Some(d0), Some(i0)) = (n0.inputs[0], n0.inputs[1]) else { return Ok(None) };
    let (data_weight, idx_weight) = (is_weight(b, group, 0), is_weight(b, group, 1));
    // Every member reads the same indices: one weight, or one shared value.
    let idx_shared = if idx_weight { same_weights(b, group, 1) } else { shared_input(b, group, 1)?.is_some() };
    if data_weight && same_weights(b, group, 0) {
        // One table, indices per member: gathering `[N, ...]` indices on axis 0 is `[N, ..., H]`.
        if axis != 0 || idx_weight {
            return Ok(None);
        }
        let table = b.weight(0, d0, true);
        return Ok(Some((0, vec![Some(table), Some(stacked(b, group, 1)?)])));
    }
    if !idx_shared {
        return Ok(None);
    }
    let rank = g0.value(d0).ty.rank();
    let data = if data_weight {
        match b.stacked_weight(group, 0, WeightForm::Members { rank, transposed: false }) {
            Some(w) => w,
            None => return Ok(None),
        }
    } else {
        stacked(b, group, 0)?
    };
    let idx = if idx_weight { b.weight(0, i0, true) } else { b.member_value(0, i0)? };
    Ok(Some((Stacking::member_axis(axis), vec![Some(data), Some(idx)])))
}

/// Einsum: the equation with a member letter in front of every stacked
/// operand and of the output (`byhwc,hkc->byhwk` on a stacked activation
/// and per-member tables: `abyhwc,ahkc->abyhwk`); an operand every member
/// shares (a value computed once, bit-identical weights) keeps its term
/// and broadcasts. The fused equation and inputs, or `None`.
fn einsum(b: &mut FuseBuilder, group: &NodeGroup, equation: &str) -> Result<Option<(String, Inputs)>, PassError> {
    let n0 = b.node(0, group);
    let g0 = b.members[0];
    let ranks: Vec<Option<usize>> = n0.inputs.iter().map(|v| v.map(|v| g0.value(v).ty.rank())).collect();
    let mut ins = vec![];
    let mut lead = vec![];
    for (slot, rank) in ranks.into_iter().enumerate() {
        // Each operand at its own rank: stacked ones gain the member axis.
        let Some(rank) = rank else { return Ok(None) };
        let Some(x) = operand(b, group, slot, rank, false)? else { return Ok(None) };
        ins.push(Some(x));
        lead.push(b.f.value(x).ty.rank() > rank);
    }
    if !lead.contains(&true) {
        return Ok(None);
    }
    let eq = fuse_ir::einsum::Equation::parse(equation).map_err(PassError::Internal)?;
    Ok(eq.with_leading(&lead).map(|e| (e.text(), ins)))
}

/// Gemm `A·B + C` (alpha = beta = 1, A not transposed, 2-D A and B):
/// one batched MatMul of the stacked A `[N, M, K]` by the stacked B `[N,
/// K, P]` (each member's B transposed when `transB`), plus the stacked C.
fn gemm(b: &mut FuseBuilder, group: &NodeGroup, gm: fuse_ir::Gemm) -> Result<bool, PassError> {
    let n0 = b.node(0, group);
    let g0 = b.members[0];
    let weight = |slot: usize| is_weight(b, group, slot);
    let has_c = n0.inputs.get(2).copied().flatten().is_some();
    if gm.alpha != 1.0 || gm.beta != 1.0 || gm.trans_a || weight(0) || !weight(1) || (has_c && !weight(2)) {
        return Ok(false);
    }
    let Some(w) = b.stacked_weight(group, 1, WeightForm::Members { rank: 2, transposed: gm.trans_b }) else {
        return Ok(false);
    };
    let c = if has_c {
        match b.stacked_weight(group, 2, WeightForm::Members { rank: 2, transposed: false }) {
            Some(c) => Some(c),
            None => return Ok(false),
        }
    } else {
        None
    };
    // A shared A ([M, K], a frozen trunk's output) broadcasts over the stacked B.
    let Some(a) = operand(b, group, 0, 2, false)? else { return Ok(false) };
    let name = n0.name.clone();
    let out = g0.value(n0.outputs[0]).name.clone();
    let fo = match c {
        None => b.f.add_node(name, Op::MatMul, vec![Some(a), Some(w)], vec![out])?,
        Some(c) => {
            let m = b.add(format!("{name}::matmul"), Op::MatMul, vec![a, w])?;
            b.f.add_node(name, Op::Binary(fuse_ir::BinaryOp::Add), vec![Some(m), Some(c)], vec![out])?
        }
    };
    let fo = b.f.node(fo).outputs.clone();
    b.set_stacked(group, &fo, STACKING)?;
    Ok(true)
}

/// LayerNormalization: with bit-identical scale and bias, one
/// LayerNormalization on the stacked value; with each member's own, over
/// the last axis only, normalized without affine (scale 1, no bias), then
/// multiplied by the stacked scales and shifted by the stacked biases.
///
/// Over the last axis, the stacked value is normalized as 2-D rows
/// `[N·rows, H]`, a Reshape on each side: ONNX Runtime fuses an Add and a
/// LayerNormalization of 3-D tensors (the residual sum before it, when the
/// members' layers run on 2-D rows, [`crate::flatten_rows`]) into its
/// SkipLayerNormalization, which measured 3x slower than the two ops apart
/// on its CPU provider (README, "Rows").
fn layer_norm(b: &mut FuseBuilder, group: &NodeGroup, axis: i64, epsilon: f32) -> Result<bool, PassError> {
    let n0 = b.node(0, group);
    let g0 = b.members[0];
    let weight = |slot: usize| is_weight(b, group, slot);
    let has_bias = n0.inputs.get(2).copied().flatten().is_some();
    if weight(0) || !weight(1) || (has_bias && !weight(2)) {
        return Ok(false);
    }
    let name = n0.name.clone();
    let x_ty = g0.value(n0.inputs[0].expect("layer norm input")).ty.clone();
    let out = g0.value(n0.outputs[0]).name.clone();
    let rank = x_ty.rank();
    let last = fuse_ir::shape::norm_axis(axis, rank).is_ok_and(|a| a + 1 == rank);
    let same = same_weights(b, group, 1) && (!has_bias || same_weights(b, group, 2));
    let scale_ty = &g0.value(n0.inputs[1].expect("scale")).ty;
    if !same && (!last || scale_ty.rank() != 1 || x_ty.dtype != DType::F32) {
        return Ok(false);
    }
    // The affine part: shared (inside the LayerNormalization) or stacked.
    let affine = if same {
        None
    } else {
        let form = WeightForm::Members { rank, transposed: false };
        let Some(scale) = b.stacked_weight(group, 1, form) else { return Ok(false) };
        let bias = match has_bias {
            true => match b.stacked_weight(group, 2, form) {
                Some(bias) => Some(bias),
                None => return Ok(false),
            },
            false => None,
        };
        Some((scale, bias))
    };
    // The LayerNormalization's own scale and bias: the shared ones, or ones
    // (the stacked affine follows it).
    let (ln_scale, ln_bias) = match affine {
        None => {
            let scale = b.weight(0, n0.inputs[1].expect("scale"), true);
            (scale, has_bias.then(|| b.weight(0, n0.inputs[2].expect("bias"), true)))
        }
        Some(_) => {
            let h = x_ty.shape[rank - 1];
            let ones = b.f.add_weight(
                format!("{name}::ones"),
                Tensor::from_f32(vec![h], &vec![1.0; h]).map_err(PassError::Internal)?,
            );
            (ones, None)
        }
    };
    let x = stacked(b, group, 0)?;
    let mut ins = vec![Some(x), Some(ln_scale)];
    ins.extend(ln_bias.map(Some));
    let fo = match affine {
        None => normalized(b, ins, axis, epsilon, last, name, out)?,
        Some((scale, bias)) => {
            let node = format!("{name}::normalized");
            let l = normalized(b, ins, axis, epsilon, last, node.clone(), node)?;
            let l = b.f.node(l).outputs[0];
            let mul = Op::Binary(fuse_ir::BinaryOp::Mul);
            match bias {
                None => b.f.add_node(name, mul, vec![Some(l), Some(scale)], vec![out])?,
                Some(bias) => {
                    let s = b.add(format!("{name}::scaled"), mul, vec![l, scale])?;
                    b.f.add_node(name, Op::Binary(fuse_ir::BinaryOp::Add), vec![Some(s), Some(bias)], vec![out])?
                }
            }
        }
    };
    let fo = b.f.node(fo).outputs.clone();
    b.set_stacked(group, &fo, STACKING)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::row_parts;

    #[test]
    fn row_parts_are_the_fewest_even_cut_of_at_most_512_rows() {
        // MiniLM at batch 1, 8 and 32 (seq 128); ViT-Tiny at batch 8 and 32 (197 tokens).
        assert_eq!(row_parts(128), Some(2));
        assert_eq!(row_parts(1024), Some(2));
        assert_eq!(row_parts(4096), Some(8));
        assert_eq!(row_parts(8 * 197), Some(4));
        assert_eq!(row_parts(32 * 197), Some(16));
        // No cut of at most 512 rows within 64 parts: the fewest that divide.
        assert_eq!(row_parts(2 * 1009), Some(2));
        assert_eq!(row_parts(4), Some(2));
        // Nothing divides a prime count of rows (ViT at batch 1), nor one row.
        assert_eq!(row_parts(197), None);
        assert_eq!(row_parts(1), None);
    }
}
