//! ONNX external data: tensor bytes kept in files beside the model
//! (`torch.onnx.export(..., external_data=True)`), memory-mapped, and only
//! from regular files inside the model's directory.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use fuse_ir::Bytes;
use onnx_protobuf::TensorProto;

/// Files external tensor data may be read from: regular files inside one
/// directory (after resolving symlinks), each mapped once.
pub struct ExternalData {
    dir: PathBuf,
    maps: HashMap<PathBuf, Arc<memmap2::Mmap>>,
}

impl ExternalData {
    pub fn new(dir: &Path) -> Result<ExternalData, String> {
        let dir = dir.canonicalize().map_err(|e| format!("cannot resolve the model's directory: {e}"))?;
        Ok(ExternalData { dir, maps: HashMap::new() })
    }

    /// The bytes of one external tensor: `location` (relative, inside the
    /// directory), `offset` and `length` from the tensor's `external_data`.
    pub(super) fn read(&mut self, tp: &TensorProto, want: usize) -> Result<Bytes, String> {
        let mut location = None;
        let (mut offset, mut length) = (0usize, None);
        for kv in &tp.external_data {
            let num = || {
                kv.value
                    .parse::<usize>()
                    .map_err(|_| format!("external data {} `{}` is not a byte count", kv.key, kv.value))
            };
            match kv.key.as_str() {
                "location" => location = Some(kv.value.clone()),
                "offset" => offset = num()?,
                "length" => length = Some(num()?),
                _ => {}
            }
        }
        let location = location.ok_or("external data without a location")?;
        let rel = Path::new(&location);
        if location.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(format!(
                "external data location `{location}` must be a relative path inside the model's directory (no `..`, no absolute path)"
            ));
        }
        let path = self.dir.join(rel).canonicalize().map_err(|e| format!("external data file `{location}`: {e}"))?;
        if !path.starts_with(&self.dir) {
            return Err(format!("external data file `{location}` resolves outside the model's directory"));
        }
        let map = match self.maps.get(&path) {
            Some(m) => m.clone(),
            None => {
                let file = std::fs::File::open(&path).map_err(|e| format!("external data file `{location}`: {e}"))?;
                if !file.metadata().map_err(|e| format!("external data file `{location}`: {e}"))?.is_file() {
                    return Err(format!("external data `{location}` is not a regular file"));
                }
                // SAFETY: read-only map of a file fusec does not write; the
                // tensors keep the Arc, so the map outlives them.
                let map = Arc::new(
                    unsafe { memmap2::Mmap::map(&file) }
                        .map_err(|e| format!("external data file `{location}`: {e}"))?,
                );
                self.maps.insert(path.clone(), map.clone());
                map
            }
        };
        let length = length.unwrap_or(want);
        if length != want {
            return Err(format!("external data declares {length} bytes but the tensor needs {want}"));
        }
        match offset.checked_add(length) {
            Some(end) if end <= map.len() => Ok(Bytes::Mapped { map, start: offset, len: length }),
            _ => Err(format!(
                "external data `{location}` holds {} bytes, fewer than offset {offset} + length {length}",
                map.len()
            )),
        }
    }
}
