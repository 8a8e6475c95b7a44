//! Safetensors checkpoints: a memory-mapped, validated view of the tensors.
//!
//! Building a graph from a checkpoint needs an architecture; that is the
//! architecture registry's job. This module only opens and checks the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuse_ir::{Bytes, DType, Tensor, TensorType};
use safetensors::SafeTensors;

use crate::LoadError;

/// One tensor's header entry.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// The dtype as safetensors spells it (`F32`, `I64`, `BF16`, ...).
    pub dtype: String,
    pub shape: Vec<usize>,
    start: usize,
    len: usize,
}

pub struct Checkpoint {
    pub path: PathBuf,
    map: Arc<memmap2::Mmap>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// `__metadata__` of the header, sorted by key.
    pub metadata: Vec<(String, String)>,
}

pub fn open(path: &Path) -> Result<Checkpoint, LoadError> {
    let err = |m: String| LoadError::new(path, m);
    let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    // SAFETY: read-only map of a file we do not write; tensors borrow it
    // through an Arc so the map outlives them.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| err(format!("cannot map: {e}")))?;
    if map.is_empty() {
        return Err(err("empty file, not a safetensors checkpoint".into()));
    }
    let map = Arc::new(map);
    let base = map.as_ptr() as usize;
    let (tensors, metadata) = {
        let st = SafeTensors::deserialize(&map).map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
        let mut tensors: Vec<TensorInfo> = st
            .iter()
            .map(|(name, v)| TensorInfo {
                name: name.to_string(),
                dtype: format!("{:?}", v.dtype()),
                shape: v.shape().to_vec(),
                start: v.data().as_ptr() as usize - base,
                len: v.data().len(),
            })
            .collect();
        tensors.sort_by(|a, b| (a.start, &a.name).cmp(&(b.start, &b.name)));
        let (_, meta) =
            SafeTensors::read_metadata(&map).map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
        let mut metadata: Vec<(String, String)> = meta
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        metadata.sort();
        (tensors, metadata)
    };
    Ok(Checkpoint { path: path.to_path_buf(), map, tensors, metadata })
}

impl Checkpoint {
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensor as IR data, sharing the memory map (no copy).
    pub fn tensor(&self, name: &str) -> Result<Tensor, LoadError> {
        let info = self
            .info(name)
            .ok_or_else(|| LoadError::tensor(&self.path, name, format!("tensor `{name}` is missing")))?;
        let dtype = match info.dtype.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "F64" => DType::F64,
            "I64" => DType::I64,
            "I32" => DType::I32,
            "I8" => DType::I8,
            "U8" => DType::U8,
            "BOOL" => DType::Bool,
            other => {
                return Err(LoadError::tensor(
                    &self.path,
                    name,
                    format!("tensor `{name}` has unsupported dtype {other}"),
                ))
            }
        };
        let bytes = Bytes::Mapped { map: self.map.clone(), start: info.start, len: info.len };
        Tensor::new(TensorType::new(dtype, info.shape.clone()), bytes)
            .map_err(|m| LoadError::tensor(&self.path, name, format!("tensor `{name}`: {m}")))
    }
}
