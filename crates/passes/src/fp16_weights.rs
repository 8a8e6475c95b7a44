//! fp16 weights: every f32 weight of more than [`MIN_ELEMENTS`] elements is
//! stored as f16 and cast back to f32 where it is read.
//!
//! The model file halves; compute stays f32 (runtimes fold the Cast of a
//! constant once, at load), so the only change to the outputs is each
//! weight rounded to f16. Small weights (scalars, BiFPN's per-input
//! factors) stay f32: they would save nothing.

use fuse_ir::{DType, Graph, IrError, Op, Tensor, TensorType, ValueId};

use crate::util::use_counts;

/// Weights with at most this many elements are left f32.
pub const MIN_ELEMENTS: usize = 16;

/// Rewrites the weights; returns how many were converted.
pub fn fp16_weights(g: &mut Graph) -> Result<usize, IrError> {
    let uses = use_counts(g);
    let todo: Vec<(ValueId, String, Tensor)> = g
        .weights()
        .filter(|(id, _, t)| {
            t.ty().dtype == DType::F32
                && t.ty().numel().unwrap_or(0) > MIN_ELEMENTS
                && uses.get(id).copied().unwrap_or(0) > 0
        })
        .map(|(id, v, t)| (id, v.name.clone(), t.clone()))
        .collect();
    for (id, name, t) in &todo {
        let half: Vec<u8> = t.to_f32_lossy().iter().flat_map(|&x| fuse_ir::saturated_f16(x).to_le_bytes()).collect();
        let ty = TensorType::new(DType::F16, t.ty().shape.clone());
        let h = Tensor::new(ty, half.into()).map_err(|m| IrError::Tensor { name: name.clone(), msg: m })?;
        let hv = g.add_weight(format!("{name}.fp16"), h);
        let cast = g.add_node(
            format!("{name}.to_f32"),
            Op::Cast { to: DType::F32 },
            vec![Some(hv)],
            vec![format!("{name}.f32")],
        )?;
        let out = g.node(cast).outputs[0];
        g.replace_uses(*id, out);
    }
    Ok(todo.len())
}
