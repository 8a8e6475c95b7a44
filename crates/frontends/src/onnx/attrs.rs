//! What an ONNX node says: its attributes ([`Attrs`]) and its inputs
//! ([`Ctx`]), including inputs that must be static (axes, shapes, sizes).

use std::collections::HashMap;

use fuse_ir::*;
use onnx_protobuf::{AttributeProto, NodeProto};

use super::tensor::const_tensor;

/// Attribute lookup for one node.
pub(super) struct Attrs<'a>(pub(super) &'a NodeProto);

impl<'a> Attrs<'a> {
    pub(super) fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }
    pub(super) fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map(|a| a.i).unwrap_or(default)
    }
    pub(super) fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map(|a| a.f).unwrap_or(default)
    }
    pub(super) fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    pub(super) fn string(&self, name: &str, default: &str) -> String {
        self.get(name).map(|a| String::from_utf8_lossy(&a.s).into_owned()).unwrap_or_else(|| default.into())
    }
    pub(super) fn usizes(&self, name: &str) -> Result<Option<Vec<usize>>, String> {
        self.ints(name)
            .map(|v| {
                v.iter()
                    .map(|&x| usize::try_from(x).map_err(|_| format!("attribute `{name}` has negative value {x}")))
                    .collect()
            })
            .transpose()
    }
}

pub(super) struct Ctx<'a> {
    pub(super) node: &'a NodeProto,
    pub(super) g: &'a Graph,
    pub(super) env: &'a HashMap<String, ValueId>,
}

impl Ctx<'_> {
    /// Input `i`, `None` when absent or empty.
    pub(super) fn opt(&self, i: usize) -> Option<ValueId> {
        self.node.input.get(i).filter(|s| !s.is_empty()).and_then(|s| self.env.get(s).copied())
    }
    pub(super) fn req(&self, i: usize) -> Result<ValueId, String> {
        self.opt(i).ok_or_else(|| format!("required input {i} is missing"))
    }
    /// `op` on the node's first `n` inputs, each required (the form of every
    /// elementwise, comparison and matrix-product op).
    pub(super) fn on_inputs(&self, op: Op, n: usize) -> Result<(Op, Vec<Option<ValueId>>), String> {
        Ok((op, (0..n).map(|i| self.req(i).map(Some)).collect::<Result<_, _>>()?))
    }
    pub(super) fn ty(&self, i: usize) -> Result<&TensorType, String> {
        Ok(&self.g.value(self.req(i)?).ty)
    }
    /// Integer contents of input `i`, which must be known statically.
    pub(super) fn ints(&self, i: usize, what: &str) -> Result<Option<Vec<i64>>, String> {
        let Some(v) = self.opt(i) else { return Ok(None) };
        let val = self.g.value(v);
        if let Some(k) = &val.known {
            return Ok(Some(k.clone()));
        }
        if let Some(t) = const_tensor(self.g, v) {
            if let Some(k) = t.to_i64_vec() {
                return Ok(Some(k));
            }
        }
        Err(format!("{what} (`{}`) must be a constant: fusec builds static graphs", val.name))
    }
    /// Input `i` as static sizes (a shape, repeats, split lengths): `None`
    /// when absent, an error naming `what` when it is negative.
    pub(super) fn usizes(&self, i: usize, what: &str) -> Result<Option<Vec<usize>>, String> {
        let Some(v) = self.ints(i, what)? else { return Ok(None) };
        v.iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("{what} {v:?} has a negative value {d}")))
            .collect::<Result<_, _>>()
            .map(Some)
    }
    /// As [`Ctx::usizes`], and an error when the input is absent.
    pub(super) fn required_usizes(&self, i: usize, what: &str) -> Result<Vec<usize>, String> {
        self.usizes(i, what)?.ok_or_else(|| format!("{what} is required"))
    }
    pub(super) fn floats(&self, i: usize, what: &str) -> Result<Option<Vec<f32>>, String> {
        let Some(v) = self.opt(i) else { return Ok(None) };
        match const_tensor(self.g, v).and_then(|t| t.to_f32_vec()) {
            Some(f) => Ok(Some(f)),
            None => Err(format!("{what} (`{}`) must be a float constant", self.g.value(v).name)),
        }
    }
    pub(super) fn scalar(&self, i: usize, what: &str) -> Result<Option<f32>, String> {
        match self.floats(i, what)? {
            None => Ok(None),
            Some(v) if v.len() == 1 => Ok(Some(v[0])),
            Some(v) => Err(format!("{what} must be a scalar, got {} values", v.len())),
        }
    }
}
