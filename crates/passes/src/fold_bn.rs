//! Folds BatchNormalization into the Conv before it.
//!
//! `bn(conv(x, w, b))` = `conv(x, w * s, (b - mean) * s + beta)` with
//! `s = gamma / sqrt(var + eps)` per output channel, computed in f64. Only
//! when the conv's output is read by the BatchNormalization alone and every
//! parameter is a constant f32; other BatchNormalizations stay.

use fuse_ir::{Graph, IrError, Op, Tensor, ValueDef};

use crate::util::{use_counts, weight_f32};

/// Folds every foldable Conv → BatchNormalization pair; returns how many.
pub fn fold_bn(g: &mut Graph) -> Result<usize, IrError> {
    let uses = use_counts(g);
    let mut folded = 0;
    for n in g.topo_order()? {
        let bn = g.node(n);
        let Op::BatchNorm(p) = &bn.op else { continue };
        let eps = p.epsilon as f64;
        let Some(y) = bn.inputs[0] else { continue };
        let ValueDef::Node { node: cn, .. } = g.value(y).def else { continue };
        let conv = g.node(cn);
        let Op::Conv(c) = &conv.op else { continue };
        if uses.get(&y) != Some(&1) {
            continue;
        }
        let params: Option<Vec<Vec<f32>>> =
            (1..5).map(|i| weight_f32(g, bn.inputs.get(i).copied().flatten())).collect();
        let Some(params) = params else { continue };
        let Some(w) = weight_f32(g, conv.inputs[1]) else { continue };
        let wty = g.value(conv.inputs[1].expect("conv weight")).ty.clone();
        let cout = wty.shape[0];
        let b = match conv.inputs.get(2).copied().flatten() {
            Some(bv) => match weight_f32(g, Some(bv)) {
                Some(b) => b,
                None => continue,
            },
            None => vec![0.0; cout],
        };
        let [gamma, beta, mean, var] = [&params[0], &params[1], &params[2], &params[3]];
        if [gamma.len(), beta.len(), mean.len(), var.len(), b.len()].iter().any(|&l| l != cout) {
            continue;
        }
        let per = w.len() / cout;
        let s: Vec<f64> = (0..cout).map(|o| gamma[o] as f64 / (var[o] as f64 + eps).sqrt()).collect();
        let w2: Vec<f32> = w.iter().enumerate().map(|(i, &v)| (v as f64 * s[i / per]) as f32).collect();
        let b2: Vec<f32> = (0..cout).map(|o| ((b[o] as f64 - mean[o] as f64) * s[o] + beta[o] as f64) as f32).collect();
        let (cname, c, x) = (conv.name.clone(), c.clone(), conv.inputs[0]);
        let (bn_out, bn_name) = (bn.outputs[0], g.value(bn.outputs[0]).name.clone());
        let wv = g.add_weight(
            format!("{cname}.weight"),
            Tensor::from_f32(wty.shape.clone(), &w2).map_err(|m| IrError::Tensor { name: cname.clone(), msg: m })?,
        );
        let bv = g.add_weight(
            format!("{cname}.bias"),
            Tensor::from_f32([cout], &b2).map_err(|m| IrError::Tensor { name: cname.clone(), msg: m })?,
        );
        let new = g.add_node(cname, Op::Conv(c), vec![x, Some(wv), Some(bv)], vec![bn_name])?;
        let out = g.node(new).outputs[0];
        g.replace_uses(bn_out, out);
        g.remove_node(n);
        g.remove_node(cn);
        folded += 1;
    }
    Ok(folded)
}
