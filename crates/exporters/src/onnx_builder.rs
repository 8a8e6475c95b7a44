//! A small ONNX model builder for fixtures and tests: write a model in a
//! few lines, in any opset, without Python.

use fuse_ir::{DType, TensorType};
use onnx_protobuf::{AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto};

use crate::onnx_proto::ints_attr;
pub use crate::onnx_proto::{float_attr as attr_float, int_attr as attr_int, string_attr as attr_str};

fn value_info(name: &str, dtype: DType, shape: &[i64]) -> onnx_protobuf::ValueInfoProto {
    crate::onnx_proto::value_info(name, &TensorType::new(dtype, shape.iter().map(|&d| d as usize).collect::<Vec<_>>()))
}

pub struct OnnxBuilder {
    opset: i64,
    graph: GraphProto,
}

impl OnnxBuilder {
    pub fn new(opset: i64) -> OnnxBuilder {
        OnnxBuilder { opset, graph: GraphProto { name: "fixture".into(), ..Default::default() } }
    }

    pub fn input(mut self, name: &str, shape: &[i64]) -> Self {
        self.graph.input.push(value_info(name, DType::F32, shape));
        self
    }

    /// An input of another dtype.
    pub fn input_typed(mut self, name: &str, dtype: DType, shape: &[i64]) -> Self {
        self.graph.input.push(value_info(name, dtype, shape));
        self
    }

    pub fn output(mut self, name: &str, shape: &[i64]) -> Self {
        self.graph.output.push(value_info(name, DType::F32, shape));
        self
    }

    pub fn init_f32(mut self, name: &str, shape: &[i64], data: &[f32]) -> Self {
        self.graph.initializer.push(TensorProto {
            name: name.into(),
            dims: shape.to_vec(),
            data_type: DType::F32.onnx_code(),
            raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        });
        self
    }

    /// An f32 initializer of `shape` whose bytes live in another file:
    /// `(key, value)` pairs as `external_data` (`location`, `offset`,
    /// `length`), `data_location` EXTERNAL.
    pub fn init_external(mut self, name: &str, shape: &[i64], external: &[(&str, &str)]) -> Self {
        self.graph.initializer.push(TensorProto {
            name: name.into(),
            dims: shape.to_vec(),
            data_type: DType::F32.onnx_code(),
            data_location: onnx_protobuf::tensor_proto::DataLocation::EXTERNAL.into(),
            external_data: external
                .iter()
                .map(|(k, v)| onnx_protobuf::StringStringEntryProto {
                    key: k.to_string(),
                    value: v.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        self
    }

    /// An f32 initializer of `shape` with exactly `raw` as its bytes, right
    /// or wrong (for tests of files that lie about sizes).
    pub fn init_raw(mut self, name: &str, shape: &[i64], raw: &[u8]) -> Self {
        self.graph.initializer.push(TensorProto {
            name: name.into(),
            dims: shape.to_vec(),
            data_type: DType::F32.onnx_code(),
            raw_data: raw.to_vec(),
            ..Default::default()
        });
        self
    }

    pub fn init_i64(self, name: &str, data: &[i64]) -> Self {
        self.init_i64_shaped(name, &[data.len() as i64], data)
    }

    /// An i64 initializer of `shape`.
    pub fn init_i64_shaped(mut self, name: &str, shape: &[i64], data: &[i64]) -> Self {
        self.graph.initializer.push(TensorProto {
            name: name.into(),
            dims: shape.to_vec(),
            data_type: DType::I64.onnx_code(),
            int64_data: data.to_vec(),
            ..Default::default()
        });
        self
    }

    /// A 0-D i64 initializer (CumSum's axis).
    pub fn init_i64_scalar(mut self, name: &str, v: i64) -> Self {
        self.graph.initializer.push(TensorProto {
            name: name.into(),
            data_type: DType::I64.onnx_code(),
            int64_data: vec![v],
            ..Default::default()
        });
        self
    }

    /// A node named `{op}_{index}`.
    pub fn node(self, op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> Self {
        let name = format!("{op}_{}", self.graph.node.len());
        self.node_named(&name, op, inputs, outputs, attrs)
    }

    pub fn node_named(
        mut self,
        name: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Self {
        self.graph.node.push(NodeProto {
            name: name.into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        });
        self
    }

    pub fn build(self) -> Vec<u8> {
        let mut m = ModelProto { ir_version: 8, producer_name: "fusec-fixture".into(), ..Default::default() };
        m.opset_import.push(OperatorSetIdProto { domain: String::new(), version: self.opset, ..Default::default() });
        m.graph = Some(self.graph).into();
        m.write_to_bytes().expect("a built model serializes")
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    ints_attr(name, v.iter().copied())
}
