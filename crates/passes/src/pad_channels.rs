//! Pads convolutional channel counts to a multiple of a block, so that
//! channel-stacked (grouped) convs keep ONNX Runtime's fast path.
//!
//! ONNX Runtime's CPU provider runs a conv in its blocked layout (NCHWc,
//! blocks of 16 channels with AVX-512, 8 with AVX2) when the channels
//! allow it. For a plain conv (group 1) it pads the output channels itself:
//! a member's 24-channel conv runs blocked as if it had 32. A grouped conv
//! it cannot pad: each group's input and output channels must be a multiple
//! of the block. Three members' 24-channel convs stacked as one conv of
//! group 3 leave the blocked layout (im2col and a GEMM per group, with
//! layout changes around them): EfficientDet-D0 fully grouped ran at 0.92x
//! its members, 1.00x with this pass; MobileNetV3-Small 1.19x, 1.36x.
//!
//! So each member gets the padding the runtime would have made, written
//! out, before fusion:
//! - a group-1 Conv whose output channel count C is not a multiple of the
//!   block gets zero filters and zero biases up to the next multiple Cp,
//!   where the extra channels reach no reader that would need them sliced
//!   off ([`paddable`]: they end in convs, never in a graph output);
//! - a value with padded channels flows on through ops that compute each
//!   channel apart (activations, BatchNorm with neutral parameters, pools,
//!   reductions over other axes, Resize, elementwise arithmetic whose other
//!   operand is padded alike, a per-channel constant padded with 0, or 1
//!   where it divides, or one broadcast over channels), a depthwise Conv
//!   (zero filters, group Cp), and into a group-1 Conv that reads it (zero
//!   input weights for the extra channels);
//! - where a reader cannot take them after all (an elementwise op whose
//!   other operand is an unpadded value of C channels), the padding that
//!   reached it is undone: no Slice is ever added, so members that differ
//!   in a channel count keep node structures that align.
//!
//! The extra channels hold finite values (zeros from the zero filters,
//! then what the activations make of zero), every conv that reads them
//! weights them by zero, and no graph output is padded: the member's
//! outputs stay the same to float rounding.

use std::collections::{HashMap, HashSet};

use fuse_ir::{BinaryOp, Graph, IrError, NodeId, Op, Slice, Tensor, UnaryOp, ValueDef, ValueId};

use crate::util::{is_weight_f32, value_names, weight_f32};

/// The block `fusec fuse` pads to for ONNX output: ONNX Runtime's NCHWc
/// block with AVX-512 (a multiple of AVX2's 8).
pub const NCHWC_BLOCK: usize = 16;

/// The largest block asked for is taken (`--channel-block`, calibration
/// files, Python): past it, padding would only grow the model.
pub const MAX_CHANNEL_BLOCK: usize = 256;

/// What [`pad_channels`] did to one graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PadStats {
    /// Convs given zero filters up to a multiple of the block.
    pub convs: usize,
}

/// Pads `g`'s conv channel counts to multiples of `block` as the module
/// says. A graph with nothing to pad is left as it is.
pub fn pad_channels(g: &mut Graph, block: usize) -> Result<PadStats, IrError> {
    if block < 2 {
        return Ok(PadStats::default());
    }
    let outputs: HashSet<ValueId> = g.outputs().iter().copied().collect();
    let order = g.topo_order()?;
    // `paddable` reads each op kind; whether a reader really takes padded
    // channels can depend on its other operands (an unpadded value of as
    // many channels beside them). The rebuild finds out: where it had to
    // slice padded channels back, those values are excluded and the graph
    // rebuilt from the original. The graph kept has no Slice added, so a
    // member's node structure stays its own whatever its channel counts.
    let names = value_names(g);
    let mut excluded = HashSet::new();
    loop {
        let ok = paddable(g, &order, &outputs, &excluded);
        let sources: HashSet<NodeId> = order.iter().copied().filter(|&n| is_source(g, n, block, &ok)).collect();
        if sources.is_empty() {
            return Ok(PadStats::default());
        }
        let mut r = Rebuild {
            old: g,
            new: Graph::new(g.name.clone()),
            ok,
            map: HashMap::new(),
            padded: HashMap::new(),
            unpadded: HashMap::new(),
            names: names.clone(),
            stats: PadStats::default(),
        };
        r.new.metadata = g.metadata.clone();
        for &i in g.inputs() {
            let v = g.value(i);
            let id = r.new.add_input(v.name.clone(), v.ty.clone());
            r.map.insert(i, id);
        }
        for &n in &order {
            r.node(n, sources.contains(&n), block, &outputs)?;
        }
        let outs: Vec<ValueId> = g.outputs().iter().map(|&o| r.plain(o)).collect::<Result<_, _>>()?;
        if r.unpadded.is_empty() {
            r.new.set_outputs(outs);
            let stats = r.stats;
            *g = r.new;
            return Ok(stats);
        }
        excluded.extend(r.unpadded.keys().copied());
    }
}

/// A group-1 Conv with f32 weights and a bias (if any) of f32 whose
/// output's channel count is not a multiple of `block` and can be padded.
fn is_source(g: &Graph, n: NodeId, block: usize, paddable: &HashSet<ValueId>) -> bool {
    let node = g.node(n);
    let Op::Conv(c) = &node.op else { return false };
    let out = node.outputs[0];
    c.group == 1
        && !g.value(out).ty.shape[1].is_multiple_of(block)
        && paddable.contains(&out)
        && is_weight_f32(g, node.inputs[1])
        && node.inputs.get(2).copied().flatten().is_none_or(|b| is_weight_f32(g, Some(b)))
}

/// The 4-D values that can carry extra channels without any reader
/// needing them sliced off, as far as the readers' ops tell: not a graph
/// output nor `excluded`, and every reader a Conv that reads it as its
/// input (group 1; or depthwise, its output paddable too) or an op
/// computing each channel apart ([`welcomes`]) whose output, of as many
/// channels, is paddable too. Found from the last node back, so a reader's
/// output is decided before its input.
fn paddable(g: &Graph, order: &[NodeId], outputs: &HashSet<ValueId>, excluded: &HashSet<ValueId>) -> HashSet<ValueId> {
    let mut ok = HashSet::new();
    for &n in order.iter().rev() {
        for &v in &g.node(n).outputs {
            let shape = &g.value(v).ty.shape;
            if shape.len() != 4 || outputs.contains(&v) || excluded.contains(&v) {
                continue;
            }
            let users = g.users(v);
            let reads = |&(u, slot): &(NodeId, usize)| {
                let node = g.node(u);
                // One output, of as many channels (a 1-channel map
                // broadcast over a wider operand is not padded).
                let out_ok = node.outputs.len() == 1
                    && ok.contains(&node.outputs[0])
                    && g.value(node.outputs[0]).ty.shape[1] == shape[1];
                match &node.op {
                    Op::Conv(c) => {
                        slot == 0
                            && is_weight_f32(g, node.inputs[1])
                            && (c.group == 1 || is_depthwise(g, node, shape[1]) && out_ok)
                    }
                    _ => welcomes(&node.op, slot) && out_ok,
                }
            };
            if !users.is_empty() && users.iter().all(reads) {
                ok.insert(v);
            }
        }
    }
    ok
}

/// Whether an op that is not a Conv computes each channel of input `slot`
/// apart (so extra channels pass through it), with finite values.
fn welcomes(op: &Op, slot: usize) -> bool {
    match op {
        Op::BatchNorm(_) => slot == 0,
        Op::Binary(BinaryOp::Div) => slot == 0,
        Op::Binary(_) | Op::HardSigmoid { .. } | Op::LeakyRelu { .. } | Op::Clip { .. } => true,
        Op::Unary(op) => finite(*op),
        Op::Reduce { axes: Some(axes), keepdims: true, .. } => !axes.iter().any(|&a| a == 1 || a == -3),
        Op::MaxPool(_) | Op::AveragePool { .. } | Op::GlobalAveragePool | Op::Resize(_) => true,
        _ => false,
    }
}

/// Unary ops finite wherever their input is (what extra channels go through).
fn finite(op: UnaryOp) -> bool {
    use UnaryOp::*;
    matches!(op, Sigmoid | Relu | Tanh | Identity | HardSwish | Erf | Gelu | Ceil | Floor | Sin | Cos | Neg | Abs)
}

/// A depthwise conv over `c` channels: group c, one filter per channel.
fn is_depthwise(g: &Graph, node: &fuse_ir::Node, c: usize) -> bool {
    let Op::Conv(conv) = &node.op else { return false };
    let w = &g.value(node.inputs[1].expect("conv weight")).ty.shape;
    conv.group == c && w.len() >= 2 && w[0] == c && w[1] == 1
}

/// `t` (f32, of `shape`) padded along `axis` to `len` with `fill`;
/// `shape` becomes the padded shape.
fn pad_axis(t: &[f32], shape: &mut [usize], axis: usize, len: usize, fill: f32) -> Vec<f32> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let (old, mut out) = (shape[axis], Vec::with_capacity(outer * len * inner));
    for o in 0..outer {
        out.extend_from_slice(&t[o * old * inner..(o + 1) * old * inner]);
        out.extend(std::iter::repeat_n(fill, (len - old) * inner));
    }
    shape[axis] = len;
    out
}

struct Rebuild<'a> {
    old: &'a Graph,
    /// The values that may be padded ([`paddable`]).
    ok: HashSet<ValueId>,
    new: Graph,
    /// Old value → new value (padded where `padded` says).
    map: HashMap<ValueId, ValueId>,
    /// Old values whose new value has padded channels: (C, Cp).
    padded: HashMap<ValueId, (usize, usize)>,
    /// Old padded values read back unpadded: the Slice's output.
    unpadded: HashMap<ValueId, ValueId>,
    names: HashSet<String>,
    stats: PadStats,
}

impl Rebuild<'_> {
    /// The new value of old value `v`, padded or not (weights copied on
    /// first use).
    fn get(&mut self, v: ValueId) -> ValueId {
        if let Some(&id) = self.map.get(&v) {
            return id;
        }
        let value = self.old.value(v);
        let ValueDef::Weight(t) = &value.def else { unreachable!("values are made before they are read") };
        let id = self.new.add_weight(value.name.clone(), t.clone());
        self.map.insert(v, id);
        id
    }

    /// The new value of `v` with its own channel count: a Slice of the
    /// padded one where it is padded.
    fn plain(&mut self, v: ValueId) -> Result<ValueId, IrError> {
        let Some(&(c, _)) = self.padded.get(&v) else { return Ok(self.get(v)) };
        if let Some(&s) = self.unpadded.get(&v) {
            return Ok(s);
        }
        let name = fuse_ir::claim_name(&mut self.names, &format!("{}_unpadded", self.old.value(v).name), 1);
        let op = Op::Slice(Slice { starts: vec![0], ends: vec![c as i64], axes: vec![1], steps: vec![1] });
        let x = self.get(v);
        let n = self.new.add_node(name.clone(), op, vec![Some(x)], vec![name])?;
        let s = self.new.node(n).outputs[0];
        self.unpadded.insert(v, s);
        Ok(s)
    }

    /// A new f32 weight named after old value `of`.
    fn weight(&mut self, of: ValueId, shape: Vec<usize>, data: &[f32]) -> Result<ValueId, IrError> {
        let base = format!("{}_padded", self.old.value(of).name);
        let t = Tensor::from_f32(shape, data).map_err(|msg| IrError::Tensor { name: base.clone(), msg })?;
        let name = fuse_ir::claim_name(&mut self.names, &base, 1);
        Ok(self.new.add_weight(name, t))
    }

    /// Copies node `n` into the new graph, padded where it can be.
    fn node(&mut self, n: NodeId, source: bool, block: usize, outputs: &HashSet<ValueId>) -> Result<(), IrError> {
        let node = self.old.node(n);
        // A Conv may read padded channels whatever its output is (it pads
        // that only as a source); other ops pass them on to their output.
        let passes_on = node.outputs.len() == 1 && !outputs.contains(&node.outputs[0]);
        let padded_form =
            if passes_on || matches!(node.op, Op::Conv(_)) { self.padded_form(n, source, block)? } else { None };
        let (op, inputs, pad) = match padded_form {
            Some(form) => form,
            None => {
                let inputs =
                    node.inputs.iter().map(|v| v.map(|v| self.plain(v)).transpose()).collect::<Result<_, _>>()?;
                (node.op.clone(), inputs, None)
            }
        };
        let names = node.outputs.iter().map(|&o| self.old.value(o).name.clone()).collect();
        let id = self.new.add_node(node.name.clone(), op, inputs, names)?;
        for (&o, &new) in node.outputs.iter().zip(&self.new.node(id).outputs.clone()) {
            self.map.insert(o, new);
        }
        if let Some(p) = pad {
            self.padded.insert(node.outputs[0], p);
        }
        Ok(())
    }

    /// Node `n`'s op and new inputs when it reads or makes padded channels,
    /// with its output's (C, Cp); `None` where it is copied as it is (its
    /// padded inputs sliced back, which [`pad_channels`] then undoes).
    #[allow(clippy::type_complexity)]
    fn padded_form(
        &mut self,
        n: NodeId,
        source: bool,
        block: usize,
    ) -> Result<Option<(Op, Vec<Option<ValueId>>, Option<(usize, usize)>)>, IrError> {
        let old = self.old;
        let node = old.node(n);
        if let Op::Conv(conv) = &node.op {
            return self.conv(n, conv, source, block);
        }
        let pads: Vec<(usize, usize)> =
            node.inputs.iter().flatten().filter_map(|v| self.padded.get(v).copied()).collect();
        let Some(&(c, cp)) = pads.first() else { return Ok(None) };
        if pads.iter().any(|&p| p != (c, cp)) || !self.ok.contains(&node.outputs[0]) {
            return Ok(None);
        }
        let op = match &node.op {
            Op::BatchNorm(_) => {
                // scale 1, bias 0, mean 0, var 1: the extra channels stay finite.
                let mut inputs = vec![Some(self.get(node.inputs[0].expect("x")))];
                for (i, fill) in [(1, 1.0), (2, 0.0), (3, 0.0), (4, 1.0)] {
                    let Some(p) = node.inputs.get(i).copied().flatten() else { return Ok(None) };
                    let Some(t) = weight_f32(old, Some(p)) else { return Ok(None) };
                    if t.len() != c {
                        return Ok(None);
                    }
                    let mut shape = vec![c];
                    let t = pad_axis(&t, &mut shape, 0, cp, fill);
                    inputs.push(Some(self.weight(p, shape, &t)?));
                }
                return Ok(Some((node.op.clone(), inputs, Some((c, cp)))));
            }
            Op::Binary(bop) => {
                let rank = old.value(node.outputs[0]).ty.shape.len();
                let mut inputs = vec![];
                for (slot, v) in node.inputs.iter().enumerate() {
                    let v = v.expect("binary operand");
                    if self.padded.contains_key(&v) {
                        if *bop == BinaryOp::Div && slot == 1 {
                            return Ok(None);
                        }
                        inputs.push(Some(self.get(v)));
                        continue;
                    }
                    let shape = &old.value(v).ty.shape;
                    let axis = (1 + shape.len()).checked_sub(rank);
                    match axis.map(|a| shape[a]) {
                        None | Some(1) => inputs.push(Some(self.get(v))),
                        Some(d) if d == c => {
                            let Some(t) = weight_f32(old, Some(v)) else { return Ok(None) };
                            let fill = if *bop == BinaryOp::Div { 1.0 } else { 0.0 };
                            let mut shape = shape.clone();
                            let t = pad_axis(&t, &mut shape, axis.expect("matched"), cp, fill);
                            inputs.push(Some(self.weight(v, shape, &t)?));
                        }
                        Some(_) => return Ok(None),
                    }
                }
                return Ok(Some((node.op.clone(), inputs, Some((c, cp)))));
            }
            Op::Resize(r) if r.sizes.len() == 4 && r.sizes[1] == c => {
                let mut r = r.clone();
                r.sizes[1] = cp;
                Op::Resize(r)
            }
            Op::Resize(_) => return Ok(None),
            // The other ops `paddable` lets pass: one channel at a time.
            op if welcomes(op, 0) => op.clone(),
            _ => return Ok(None),
        };
        let x = node.inputs[0].expect("first input");
        if !self.padded.contains_key(&x) || node.inputs.iter().flatten().count() != 1 {
            return Ok(None);
        }
        Ok(Some((op, vec![Some(self.get(x))], Some((c, cp)))))
    }

    /// A Conv reading padded channels (zero input weights, or a depthwise
    /// conv padded alike) and/or making them (a source: zero filters).
    #[allow(clippy::type_complexity)]
    fn conv(
        &mut self,
        n: NodeId,
        conv: &fuse_ir::Conv,
        source: bool,
        block: usize,
    ) -> Result<Option<(Op, Vec<Option<ValueId>>, Option<(usize, usize)>)>, IrError> {
        let old = self.old;
        let node = old.node(n);
        let (x, w, b) = (node.inputs[0].expect("x"), node.inputs[1].expect("w"), node.inputs.get(2).copied().flatten());
        let input_pad = self.padded.get(&x).copied();
        let depthwise = input_pad
            .filter(|&(c, _)| conv.group != 1 && is_depthwise(old, node, c) && self.ok.contains(&node.outputs[0]));
        let reads = input_pad.is_some() && (conv.group == 1 || depthwise.is_some());
        if !reads && !source {
            return Ok(None);
        }
        let Some(mut wt) = weight_f32(old, Some(w)) else { return Ok(None) };
        let mut bt = match b {
            Some(b) => match weight_f32(old, Some(b)) {
                Some(t) => Some(t),
                None => return Ok(None),
            },
            None => None,
        };
        let mut wshape = old.value(w).ty.shape.clone();
        let mut conv = conv.clone();
        let mut out_pad = None;
        let xv = if reads { self.get(x) } else { self.plain(x)? };
        if let (true, Some((_, cp))) = (conv.group == 1, input_pad) {
            wt = pad_axis(&wt, &mut wshape, 1, cp, 0.0);
        }
        if let Some((c, cp)) = depthwise {
            wt = pad_axis(&wt, &mut wshape, 0, cp, 0.0);
            bt = bt.map(|b| pad_vec(&b, cp));
            conv.group = cp;
            out_pad = Some((c, cp));
        }
        if source {
            let (c, cp) = (wshape[0], wshape[0].div_ceil(block) * block);
            wt = pad_axis(&wt, &mut wshape, 0, cp, 0.0);
            bt = bt.map(|b| pad_vec(&b, cp));
            out_pad = Some((c, cp));
            self.stats.convs += 1;
        }
        let mut inputs = vec![Some(xv), Some(self.weight(w, wshape, &wt)?)];
        if let (Some(b), Some(bt)) = (b, bt) {
            inputs.push(Some(self.weight(b, vec![bt.len()], &bt)?));
        } else if node.inputs.len() > 2 {
            inputs.push(None);
        }
        Ok(Some((Op::Conv(conv), inputs, out_pad)))
    }
}

/// A bias padded with zeros to `len`.
fn pad_vec(b: &[f32], len: usize) -> Vec<f32> {
    let mut v = b.to_vec();
    v.resize(len, 0.0);
    v
}
