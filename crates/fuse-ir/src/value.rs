//! The ids of nodes and values, and a value: its name, type, definition
//! and, for a small integer one, its contents.

use petgraph::stable_graph::NodeIndex;

use crate::{Tensor, TensorType};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) NodeIndex<u32>);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub(crate) u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl NodeId {
    pub fn index(self) -> usize {
        self.0.index()
    }
}

#[derive(Clone, Debug)]
pub enum ValueDef {
    Input,
    Weight(Tensor),
    Node { node: NodeId, slot: usize },
}

#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    pub ty: TensorType,
    pub def: ValueDef,
    /// The value's contents when they are small integers known before run
    /// time (shape arithmetic); shape inference of Reshape/Resize/... reads it.
    pub known: Option<Vec<i64>>,
}

/// Largest integer tensor whose contents are tracked in [`Value::known`].
pub const KNOWN_LIMIT: usize = 64;

/// The contents of a small integer constant tensor, for [`Value::known`].
pub fn known_of(t: &Tensor) -> Option<Vec<i64>> {
    if (t.ty().dtype.is_int() || t.ty().dtype == crate::DType::Bool) && t.ty().numel()? <= KNOWN_LIMIT {
        t.to_i64_vec()
    } else {
        None
    }
}
