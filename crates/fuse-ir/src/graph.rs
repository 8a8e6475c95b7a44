//! The graph: nodes in a petgraph `StableDiGraph`, values in an arena.
//!
//! Architecture Invariant: every value is defined exactly once, by a graph
//! input, a weight, or one output slot of one node; for every node input
//! produced by another node there is exactly one dag edge
//! producer -> consumer carrying the consumer's input slot. All edits go
//! through the methods here so the two views never disagree;
//! [`Graph::validate`] checks it.

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::value::{known_of, NodeId, Value, ValueDef, ValueId};
use crate::{shape, IrError, Op, Tensor, TensorType};

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    /// Positional inputs; `None` is an omitted optional input.
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
    /// Nodes with the same id are one member's contiguous block of a fused
    /// graph (`fusec fuse --member-subgraphs`), which the ONNX exporter
    /// writes as a subgraph of its own (a one-step `Scan`): ONNX Runtime
    /// then plans and frees its memory apart from the other members'.
    /// Passes that make new nodes leave it `None`.
    pub subgraph: Option<u32>,
}

/// Claims a name not yet in `used`: `base` itself, else `base_N` for the
/// first free N counting from `first` (writers count from different
/// numbers; each keeps its own so their output stays the same bytes).
pub fn claim_name(used: &mut std::collections::HashSet<String>, base: &str, first: usize) -> String {
    let mut name = base.to_string();
    let mut k = first;
    while !used.insert(name.clone()) {
        name = format!("{base}_{k}");
        k += 1;
    }
    name
}

#[derive(Clone, Default)]
pub struct Graph {
    pub name: String,
    /// Free-form key/values carried to the exported model's metadata.
    pub metadata: Vec<(String, String)>,
    dag: StableDiGraph<Node, usize>,
    values: Vec<Value>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), ..Default::default() }
    }

    fn push_value(&mut self, v: Value) -> ValueId {
        self.values.push(v);
        ValueId((self.values.len() - 1) as u32)
    }

    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        let id = self.push_value(Value { name: name.into(), ty, def: ValueDef::Input, known: None });
        self.inputs.push(id);
        id
    }

    pub fn add_weight(&mut self, name: impl Into<String>, t: Tensor) -> ValueId {
        let known = known_of(&t);
        self.push_value(Value { name: name.into(), ty: t.ty().clone(), def: ValueDef::Weight(t), known })
    }

    /// Adds a node after its inputs, inferring its output types. Fails,
    /// naming the node, when the inputs do not fit the op.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        output_names: Vec<String>,
    ) -> Result<NodeId, IrError> {
        let name = name.into();
        let err = |msg: String| IrError::Node { node: name.clone(), op: op.name(), msg };
        for v in inputs.iter().flatten() {
            if v.index() >= self.values.len() {
                return Err(err(format!("input value %{} does not exist", v.index())));
            }
        }
        let in_vals: Vec<Option<&Value>> = inputs.iter().map(|v| v.map(|v| &self.values[v.index()])).collect();
        let inferred = shape::infer(&op, &in_vals).map_err(err)?;
        for (ty, _) in &inferred {
            ty.check_size().map_err(|m| err(format!("output {m}")))?;
        }
        if inferred.len() != output_names.len() {
            return Err(err(format!("has {} outputs but {} were named", inferred.len(), output_names.len())));
        }
        // An empty float activation (a conv with 0 output channels, ...)
        // computes nothing and breaks per-channel arithmetic downstream.
        // Constants may be empty (ONNX writes empty `roi`/`scales` inputs).
        if !matches!(op, Op::Constant(_)) {
            for ((ty, _), oname) in inferred.iter().zip(&output_names) {
                if ty.dtype.is_float() && ty.shape.contains(&0) {
                    return Err(IrError::Tensor {
                        name: oname.clone(),
                        msg: format!(
                            "output of node `{name}` ({}) is {ty}, with a zero-sized dimension: fusec needs non-empty tensors",
                            op.name()
                        ),
                    });
                }
            }
        }
        let node = self.dag.add_node(Node { name, op, inputs: inputs.clone(), outputs: vec![], subgraph: None });
        let id = NodeId(node);
        let mut outs = Vec::with_capacity(inferred.len());
        for (slot, ((ty, known), oname)) in inferred.into_iter().zip(output_names).enumerate() {
            outs.push(self.push_value(Value { name: oname, ty, def: ValueDef::Node { node: id, slot }, known }));
        }
        self.dag[node].outputs = outs;
        for (slot, v) in inputs.iter().enumerate() {
            if let Some(v) = v {
                if let ValueDef::Node { node: p, .. } = self.values[v.index()].def {
                    self.dag.add_edge(p.0, node, slot);
                }
            }
        }
        Ok(id)
    }

    /// Removes a node. Its output values stay in the arena, undefined uses
    /// are caught by [`Graph::validate`]; callers remove users first.
    pub fn remove_node(&mut self, id: NodeId) -> Option<Node> {
        self.dag.remove_node(id.0)
    }

    /// Points input `slot` of `node` at `value`, keeping the dag in sync.
    pub fn set_input(&mut self, node: NodeId, slot: usize, value: Option<ValueId>) {
        let old: Vec<_> = self
            .dag
            .edges_directed(node.0, Direction::Incoming)
            .filter(|e| *e.weight() == slot)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.dag.remove_edge(e);
        }
        self.dag[node.0].inputs[slot] = value;
        if let Some(v) = value {
            if let ValueDef::Node { node: p, .. } = self.values[v.index()].def {
                self.dag.add_edge(p.0, node.0, slot);
            }
        }
    }

    /// Replaces every use of `old` (node inputs and graph outputs) by `new`.
    pub fn replace_uses(&mut self, old: ValueId, new: ValueId) {
        for (node, slot) in self.users(old) {
            self.set_input(node, slot, Some(new));
        }
        for o in self.outputs.iter_mut().filter(|o| **o == old) {
            *o = new;
        }
    }

    /// Nodes reading `value`, with the input slot, in node then slot order.
    /// A node's output is found from the dag's edges out of its producer
    /// (one per reading input); other values (inputs, weights, an output
    /// whose producer is gone) by a scan of every node.
    pub fn users(&self, value: ValueId) -> Vec<(NodeId, usize)> {
        if let ValueDef::Node { node, .. } = self.values[value.index()].def {
            if self.dag.contains_node(node.0) && self.dag[node.0].outputs.contains(&value) {
                let mut out: Vec<(NodeId, usize)> = self
                    .dag
                    .edges_directed(node.0, Direction::Outgoing)
                    .filter(|e| self.dag[e.target()].inputs[*e.weight()] == Some(value))
                    .map(|e| (NodeId(e.target()), *e.weight()))
                    .collect();
                out.sort();
                return out;
            }
        }
        let mut out = vec![];
        for n in self.dag.node_indices() {
            for (slot, v) in self.dag[n].inputs.iter().enumerate() {
                if *v == Some(value) {
                    out.push((NodeId(n), slot));
                }
            }
        }
        out
    }

    pub fn set_outputs(&mut self, outputs: Vec<ValueId>) {
        self.outputs = outputs;
    }

    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.index()]
    }

    pub fn value_mut(&mut self, id: ValueId) -> &mut Value {
        &mut self.values[id.index()]
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.dag[id.0]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.dag[id.0]
    }

    pub fn node_count(&self) -> usize {
        self.dag.node_count()
    }

    /// Node ids in insertion order (not necessarily topological).
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.dag.node_indices().map(NodeId).collect()
    }

    /// All weights, in arena order, whether used or not.
    pub fn weights(&self) -> impl Iterator<Item = (ValueId, &Value, &Tensor)> {
        self.values.iter().enumerate().filter_map(|(i, v)| match &v.def {
            ValueDef::Weight(t) => Some((ValueId(i as u32), v, t)),
            _ => None,
        })
    }

    /// Nodes in a deterministic topological order: among ready nodes, the
    /// one inserted first goes first, so a graph built in order keeps it.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, IrError> {
        let mut indeg: std::collections::HashMap<NodeIndex, usize> =
            self.dag.node_indices().map(|n| (n, self.dag.edges_directed(n, Direction::Incoming).count())).collect();
        let mut ready: std::collections::BTreeSet<NodeIndex> =
            indeg.iter().filter(|(_, d)| **d == 0).map(|(n, _)| *n).collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(n) = ready.pop_first() {
            order.push(NodeId(n));
            for e in self.dag.edges_directed(n, Direction::Outgoing) {
                let d = indeg.get_mut(&e.target()).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.insert(e.target());
                }
            }
        }
        if order.len() != self.dag.node_count() {
            let stuck = indeg.iter().filter(|(_, d)| **d > 0).map(|(n, _)| *n).min();
            let node = stuck.map(|n| self.dag[n].name.clone()).unwrap_or_default();
            return Err(IrError::Cycle { node });
        }
        Ok(order)
    }

    /// Checks the invariants: defined values, dag edges matching inputs,
    /// no cycle, output types equal to what inference gives today.
    pub fn validate(&self) -> Result<(), IrError> {
        let defined = |v: ValueId| -> bool {
            match self.values.get(v.index()).map(|v| &v.def) {
                Some(ValueDef::Node { node, .. }) => self.dag.contains_node(node.0),
                Some(_) => true,
                None => false,
            }
        };
        for n in self.dag.node_indices() {
            let node = &self.dag[n];
            let err = |msg: String| IrError::Node { node: node.name.clone(), op: node.op.name(), msg };
            for (slot, v) in node.inputs.iter().enumerate() {
                let Some(v) = *v else { continue };
                if !defined(v) {
                    return Err(err(format!("input {slot} reads a value that no longer exists")));
                }
                let edges = self.dag.edges_directed(n, Direction::Incoming).filter(|e| *e.weight() == slot).count();
                let want = usize::from(matches!(self.values[v.index()].def, ValueDef::Node { .. }));
                if edges != want {
                    return Err(err(format!("input {slot} has {edges} dag edges, expected {want}")));
                }
            }
            let in_vals: Vec<Option<&Value>> = node.inputs.iter().map(|v| v.map(|v| &self.values[v.index()])).collect();
            let inferred = shape::infer(&node.op, &in_vals).map_err(err)?;
            for ((ty, _), o) in inferred.iter().zip(&node.outputs) {
                if *ty != self.values[o.index()].ty {
                    return Err(err(format!("output type is {} but inference gives {ty}", self.values[o.index()].ty)));
                }
            }
        }
        for o in &self.outputs {
            if !defined(*o) {
                return Err(IrError::Invalid(format!("graph output %{} is not defined", o.index())));
            }
        }
        self.topo_order()?;
        Ok(())
    }
}
