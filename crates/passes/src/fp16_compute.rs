//! fp16 compute: the whole graph computes in f16 (for GPUs, where f16
//! runs on tensor cores), with the model's interface unchanged: each f32
//! input is cast to f16 where it enters, each output back to f32 where it
//! leaves, under its own name.
//!
//! Every f32 weight and constant becomes f16 (finite values saturated to
//! f16's range), every `Cast` to f32 casts
//! to f16, and every node's output types are inferred again in dataflow
//! order, so the change follows the data through every op. Outputs move by
//! f16 rounding throughout (`fusec verify`'s fp16 tolerance, 1e-2).

use fuse_ir::{saturated_f16, DType, Graph, IrError, Op, Tensor, TensorType, ValueDef, ValueId};

/// Rewrites `g` to compute in f16; returns how many values changed type.
pub fn fp16_compute(g: &mut Graph) -> Result<usize, IrError> {
    let f32_outputs: Vec<bool> = g.outputs().iter().map(|&o| g.value(o).ty.dtype == DType::F32).collect();
    let to_f16 = |name: &str, t: &Tensor| -> Result<Tensor, IrError> {
        let half: Vec<u8> = t.to_f32_lossy().iter().flat_map(|&x| saturated_f16(x).to_le_bytes()).collect();
        Tensor::new(TensorType::new(DType::F16, t.ty().shape.clone()), half.into())
            .map_err(|m| IrError::Tensor { name: name.to_string(), msg: m })
    };
    // Inputs: a Cast to f16 where each f32 input enters.
    for i in g.inputs().to_vec() {
        if g.value(i).ty.dtype != DType::F32 {
            continue;
        }
        let name = g.value(i).name.clone();
        let cast = g.add_node(
            format!("{name}.to_f16"),
            Op::Cast { to: DType::F16 },
            vec![Some(i)],
            vec![format!("{name}.f16")],
        )?;
        let half = g.node(cast).outputs[0];
        g.replace_uses(i, half);
        g.set_input(cast, 0, Some(i));
    }
    // Weights: f32 ones stored as f16.
    let weights: Vec<(ValueId, String, Tensor)> = g
        .weights()
        .filter(|(id, _, t)| t.ty().dtype == DType::F32 && !g.users(*id).is_empty())
        .map(|(id, v, t)| (id, v.name.clone(), t.clone()))
        .collect();
    for (id, name, t) in &weights {
        let h = g.add_weight(format!("{name}.fp16"), to_f16(name, t)?);
        g.replace_uses(*id, h);
    }
    // Nodes, in dataflow order: constants and casts to f16, then every
    // output type inferred again from the (now f16) inputs.
    let mut changed = weights.len();
    for n in g.topo_order()? {
        let node = g.node(n).clone();
        match &node.op {
            Op::Constant(t) if t.ty().dtype == DType::F32 => {
                g.node_mut(n).op = Op::Constant(to_f16(&node.name, t)?);
            }
            Op::Cast { to: DType::F32 } => {
                g.node_mut(n).op = Op::Cast { to: DType::F16 };
            }
            _ => {}
        }
        let op = g.node(n).op.clone();
        let ins: Vec<Option<&fuse_ir::Value>> = node.inputs.iter().map(|v| v.map(|v| g.value(v))).collect();
        let inferred = fuse_ir::shape::infer(&op, &ins).map_err(|msg| IrError::Node {
            node: node.name.clone(),
            op: op.name(),
            msg,
        })?;
        for ((ty, _), o) in inferred.into_iter().zip(&node.outputs) {
            if g.value(*o).ty != ty {
                g.value_mut(*o).ty = ty;
                changed += 1;
            }
        }
    }
    // Outputs: back to f32 (those that were), under the names the model had.
    let mut outputs = g.outputs().to_vec();
    for (o, was) in outputs.iter_mut().zip(&f32_outputs) {
        if !was || g.value(*o).ty.dtype != DType::F16 || !matches!(g.value(*o).def, ValueDef::Node { .. }) {
            continue;
        }
        let name = g.value(*o).name.clone();
        g.value_mut(*o).name = format!("{name}.f16");
        let cast = g.add_node(format!("{name}.to_f32_out"), Op::Cast { to: DType::F32 }, vec![Some(*o)], vec![name])?;
        *o = g.node(cast).outputs[0];
    }
    g.set_outputs(outputs);
    Ok(changed)
}
