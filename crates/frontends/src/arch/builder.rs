//! What every architecture builder does with a checkpoint: read weights
//! (checked for dtype and shape, each remembered as used), add nodes, and
//! at the end refuse a checkpoint with tensors the graph did not read (the
//! structure is then not what the builder thinks it is).

use std::collections::HashSet;

use fuse_ir::{Graph, Op, Tensor, ValueId};

use crate::safetensors::Checkpoint;
use crate::LoadError;

pub(crate) struct GraphBuilder<'a> {
    pub ck: &'a Checkpoint,
    /// The architecture, for messages (`efficientdet_d0`, `bert`).
    pub arch: String,
    pub g: Graph,
    used: HashSet<String>,
}

impl<'a> GraphBuilder<'a> {
    pub fn new(ck: &'a Checkpoint, arch: &str) -> GraphBuilder<'a> {
        let name = ck.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        GraphBuilder { ck, arch: arch.to_string(), g: Graph::new(name), used: HashSet::new() }
    }

    pub fn err(&self, m: String) -> LoadError {
        LoadError::new(&self.ck.path, m)
    }

    pub fn has(&self, name: &str) -> bool {
        self.ck.info(name).is_some()
    }

    /// A weight, checked to be f32 and, when given, of the expected shape.
    pub fn weight(&mut self, name: &str, expect: Option<&[usize]>) -> Result<ValueId, LoadError> {
        let t = self.tensor(name, expect)?;
        Ok(self.g.add_weight(name, t))
    }

    /// A weight's tensor (checked as [`GraphBuilder::weight`] does), for a
    /// builder that rearranges it first.
    pub fn tensor(&mut self, name: &str, expect: Option<&[usize]>) -> Result<Tensor, LoadError> {
        let info = self.ck.info(name).ok_or_else(|| {
            LoadError::tensor(&self.ck.path, name, format!("tensor `{name}` is missing ({})", self.arch))
        })?;
        let err = |m: String| LoadError::tensor(&self.ck.path, name, m);
        if let Some(e) = expect {
            if info.shape != e {
                return Err(err(format!("tensor `{name}` has shape {:?}, expected {e:?}", info.shape)));
            }
        }
        if info.dtype != "F32" {
            return Err(err(format!("tensor `{name}` is {}; fusec builds float32 graphs", info.dtype)));
        }
        let t = self.ck.tensor(name)?;
        self.used.insert(name.to_string());
        Ok(t)
    }

    pub fn shape_of(&self, v: ValueId) -> Vec<usize> {
        self.g.value(v).ty.shape.clone()
    }

    /// A one-output node; its output is named `NAME:0`.
    pub fn node(&mut self, name: &str, op: Op, inputs: Vec<Option<ValueId>>) -> Result<ValueId, LoadError> {
        let id = self
            .g
            .add_node(name, op, inputs, vec![format!("{name}:0")])
            .map_err(|e| LoadError::ir(&self.ck.path, &e))?;
        Ok(self.g.node(id).outputs[0])
    }

    /// Sets the outputs, checks every tensor of the checkpoint was read (but
    /// those `ignored` says carry no weights), validates, and returns the graph.
    pub fn finish(mut self, outputs: Vec<ValueId>, ignored: impl Fn(&str) -> bool) -> Result<Graph, LoadError> {
        self.g.set_outputs(outputs);
        if let Some(t) = self.ck.tensors.iter().find(|t| !self.used.contains(&t.name) && !ignored(&t.name)) {
            return Err(LoadError::tensor(
                &self.ck.path,
                &t.name,
                format!("unexpected tensor `{}` {} {:?} for {}", t.name, t.dtype, t.shape, self.arch),
            ));
        }
        self.g.validate().map_err(|e| LoadError::ir(&self.ck.path, &e))?;
        Ok(self.g)
    }
}
