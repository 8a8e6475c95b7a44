//! ONNX nodes to IR ops, one file per op family (as tract's
//! `onnx/src/ops/{nn,math,array}`): each family lists the ops it converts
//! ([`nn::OPS`], ...) and converts them, reading attributes and static
//! inputs through [`Ctx`](super::attrs::Ctx).

mod array;
mod math;
mod nn;

use std::collections::HashMap;

use fuse_ir::{Graph, Op, ValueId};
use onnx_protobuf::NodeProto;

use super::attrs::Ctx;

pub use array::resolve_reshape;

/// An IR op and its inputs (`None` for an absent optional input).
pub(super) type Converted = (Op, Vec<Option<ValueId>>);

type Family = (&'static [&'static str], fn(&Ctx, i64) -> Result<Converted, String>);

const FAMILIES: [Family; 3] = [(nn::OPS, nn::convert), (math::OPS, math::convert), (array::OPS, array::convert)];

/// Whether an op of the default domain converts.
pub(super) fn is_supported(op_type: &str) -> bool {
    FAMILIES.iter().any(|(ops, _)| ops.contains(&op_type))
}

pub(super) fn convert_node(
    node: &NodeProto,
    opset: i64,
    g: &Graph,
    env: &HashMap<String, ValueId>,
) -> Result<Converted, String> {
    let c = Ctx { node, g, env };
    match FAMILIES.iter().find(|(ops, _)| ops.contains(&node.op_type.as_str())) {
        Some((_, convert)) => convert(&c, opset),
        None => Err(format!("unsupported op `{}`", node.op_type)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_op_is_in_two_families() {
        let mut all: Vec<&str> = super::FAMILIES.iter().flat_map(|(ops, _)| ops.iter().copied()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
