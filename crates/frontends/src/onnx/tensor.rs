//! ONNX tensors: `TensorProto` to IR tensors, and the constants behind
//! values (weights, Constant nodes, small values computed from them).

use std::collections::HashMap;

use fuse_ir::*;
use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::TensorProto;

use super::external::ExternalData;

/// Converts a `TensorProto`, moving its raw bytes out rather than copying
/// (external data is mapped through `ext`; without it, refused).
pub fn tensor_from_proto(tp: &mut TensorProto, ext: Option<&mut ExternalData>) -> Result<Tensor, String> {
    let dtype = DType::from_onnx(tp.data_type).ok_or_else(|| format!("unsupported data type {}", tp.data_type))?;
    let external = tp.data_location.enum_value() == Ok(DataLocation::EXTERNAL) || !tp.external_data.is_empty();
    let mut shape = vec![];
    for &d in &tp.dims {
        if d < 0 {
            return Err(format!("negative dimension {d}"));
        }
        shape.push(d as usize);
    }
    let ty = TensorType::new(dtype, shape);
    let n = ty.numel().ok_or_else(|| format!("{ty} has too many elements"))?;
    ty.check_size()?;
    if external {
        let ext = ext.ok_or("external data is read only for initializers of a model loaded from its file")?;
        let want = ty.byte_len().ok_or_else(|| format!("{ty} has too many elements"))?;
        return Tensor::new(ty, ext.read(tp, want)?);
    }
    let bytes: Vec<u8> = if !tp.raw_data.is_empty() {
        std::mem::take(&mut tp.raw_data)
    } else {
        let (got, b): (usize, Vec<u8>) = match dtype {
            DType::F32 => (tp.float_data.len(), tp.float_data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            DType::F64 => (tp.double_data.len(), tp.double_data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            DType::I64 => (tp.int64_data.len(), tp.int64_data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            DType::I32 => (tp.int32_data.len(), tp.int32_data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            DType::F16 => (tp.int32_data.len(), tp.int32_data.iter().flat_map(|&x| (x as u16).to_le_bytes()).collect()),
            DType::I8 | DType::U8 | DType::Bool => {
                (tp.int32_data.len(), tp.int32_data.iter().map(|&x| x as u8).collect())
            }
        };
        if got != n {
            return Err(format!("{ty} needs {n} values but the tensor holds {got}"));
        }
        b
    };
    Tensor::new(ty, bytes.into())
}

/// The constant tensor behind a value: a weight, a Constant node's output,
/// or a small value computed from constants alone (timm's "same" padding
/// computes a Pad's pads from float constants through Ceil, Clip and Cast:
/// a static parameter the import must know). Such nodes stay in the graph;
/// canonicalize folds them later.
pub fn const_tensor(g: &Graph, v: ValueId) -> Option<Tensor> {
    const_tensor_up_to(g, v, CONST_ELEMENTS)
}

/// [`const_tensor`] for values of up to `max_elements` elements.
pub fn const_tensor_up_to(g: &Graph, v: ValueId, max_elements: usize) -> Option<Tensor> {
    computed(g, v, 0, max_elements, &mut HashMap::new())
}

/// How deep [`const_tensor`] follows a chain of nodes back to constants.
const CONST_DEPTH: usize = 32;
/// The largest value [`const_tensor`] computes (elements).
const CONST_ELEMENTS: usize = 4096;

/// `v`'s value if constants alone make it; `memo` keeps each value's
/// answer, so a value read by many nodes is computed once.
fn computed(
    g: &Graph,
    v: ValueId,
    depth: usize,
    max_elements: usize,
    memo: &mut HashMap<ValueId, Option<Tensor>>,
) -> Option<Tensor> {
    let (node, slot) = match &g.value(v).def {
        ValueDef::Weight(t) => return Some(t.clone()),
        ValueDef::Input => return None,
        ValueDef::Node { node, slot } => (g.node(*node), *slot),
    };
    if let Op::Constant(t) = &node.op {
        return Some(t.clone());
    }
    if depth >= CONST_DEPTH || g.value(v).ty.numel().is_none_or(|n| n > max_elements) {
        return None;
    }
    if let Some(known) = memo.get(&v) {
        return known.clone();
    }
    let tys: Vec<_> = node.inputs.iter().map(|i| i.map(|i| &g.value(i).ty)).collect();
    // Shape reads its input's type only; every other op needs values.
    let mut ins: Vec<Option<Tensor>> = vec![];
    for i in &node.inputs {
        let t = match i {
            Some(i) if !matches!(node.op, Op::Shape { .. }) => match computed(g, *i, depth + 1, max_elements, memo) {
                Some(t) => Some(t),
                None => {
                    memo.insert(v, None);
                    return None;
                }
            },
            _ => None,
        };
        ins.push(t);
    }
    let refs: Vec<Option<&Tensor>> = ins.iter().map(|t| t.as_ref()).collect();
    let out = match &node.op {
        Op::Unsqueeze { .. } | Op::Reshape { .. } | Op::Flatten { .. } => {
            refs.first().copied().flatten().and_then(|t| fuse_ir::eval::reshape(t, &g.value(v).ty))
        }
        op => fuse_ir::eval::fold(op, &refs, &tys).and_then(|o| o.into_iter().nth(slot)),
    }
    .filter(|t| *t.ty() == g.value(v).ty);
    memo.insert(v, out.clone());
    out
}
