//! The protobuf pieces the ONNX writers here make: value infos, tensors
//! (with or without their bytes), attributes, and fresh value names.

use std::collections::{HashMap, HashSet};

use fuse_ir::{Graph, Tensor, TensorType, ValueId};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{
    tensor_shape_proto, type_proto, AttributeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Value names of one exported graph: each value's, made unique, and
/// fresh ones for what the exporter adds.
#[derive(Default)]
pub(crate) struct Names {
    of: HashMap<ValueId, String>,
    used: HashSet<String>,
}

impl Names {
    pub(crate) fn fresh(&mut self, base: &str) -> String {
        let base = if base.is_empty() { "t" } else { base };
        fuse_ir::claim_name(&mut self.used, base, 1)
    }
    pub(crate) fn of(&mut self, g: &Graph, v: ValueId) -> String {
        if let Some(n) = self.of.get(&v) {
            return n.clone();
        }
        let n = self.fresh(&g.value(v).name);
        self.of.insert(v, n.clone());
        n
    }
}

pub(crate) fn value_info(name: &str, ty: &TensorType) -> ValueInfoProto {
    let dims = ty
        .shape
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
            ..Default::default()
        })
        .collect();
    let tt = type_proto::Tensor {
        elem_type: ty.dtype.onnx_code(),
        shape: Some(TensorShapeProto { dim: dims, ..Default::default() }).into(),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.into(),
        type_: Some(TypeProto { value: Some(type_proto::Value::TensorType(tt)), ..Default::default() }).into(),
        ..Default::default()
    }
}

/// A TensorProto without its data.
pub(crate) fn tensor_header(name: &str, t: &Tensor) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: t.ty().shape.iter().map(|&d| d as i64).collect(),
        data_type: t.ty().dtype.onnx_code(),
        ..Default::default()
    }
}

/// A `TensorProto` with raw little-endian data. The bytes are copied here:
/// the protobuf message owns its buffer.
pub(crate) fn tensor_proto(name: &str, t: &Tensor) -> TensorProto {
    TensorProto { raw_data: t.bytes().to_vec(), ..tensor_header(name, t) }
}

pub fn ints_attr(name: &str, v: impl IntoIterator<Item = i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INTS.into(),
        ints: v.into_iter().collect(),
        ..Default::default()
    }
}

pub fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), type_: AttributeType::INT.into(), i: v, ..Default::default() }
}

pub fn float_attr(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), type_: AttributeType::FLOAT.into(), f: v, ..Default::default() }
}

pub fn string_attr(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::STRING.into(),
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}
