//! ONNX tensors: `TensorProto` to IR tensors, and the constants behind
//! values (weights, Constant nodes).

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

/// The constant tensor behind a value: a weight or a Constant node's output.
pub fn const_tensor(g: &Graph, v: ValueId) -> Option<Tensor> {
    match &g.value(v).def {
        ValueDef::Weight(t) => Some(t.clone()),
        ValueDef::Node { node, .. } => match &g.node(*node).op {
            Op::Constant(t) => Some(t.clone()),
            _ => None,
        },
        ValueDef::Input => None,
    }
}
