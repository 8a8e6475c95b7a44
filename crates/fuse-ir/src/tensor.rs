//! Constant tensor data (weights). Bytes are owned (moved out of a parsed
//! protobuf, never copied), a window into a memory-mapped file, or other
//! bytes laid end to end (members' weights stacked by fusion: written out
//! piece by piece, never copied to be written).

use std::fmt;
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

use crate::{DType, TensorType};

/// Where a tensor's bytes live. Cloning is cheap: every variant is shared.
#[derive(Clone)]
pub enum Bytes {
    Owned(Arc<Vec<u8>>),
    Mapped {
        map: Arc<memmap2::Mmap>,
        start: usize,
        len: usize,
    },
    /// `parts` end to end. [`Bytes::pieces`] reads them as they are (the
    /// exporter streams them); [`Bytes::as_slice`] concatenates them once,
    /// on first use, into `joined`.
    Concat {
        parts: Arc<Vec<Bytes>>,
        joined: Arc<OnceLock<Vec<u8>>>,
    },
}

impl Bytes {
    /// `parts` end to end, without copying them.
    pub fn concat(parts: Vec<Bytes>) -> Bytes {
        Bytes::Concat { parts: Arc::new(parts), joined: Arc::new(OnceLock::new()) }
    }

    /// The bytes as one slice (concatenating a [`Bytes::Concat`] once).
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v.as_slice(),
            Bytes::Mapped { map, start, len } => &map[*start..*start + *len],
            Bytes::Concat { parts, joined } => {
                joined.get_or_init(|| parts.iter().flat_map(|p| p.pieces()).flatten().copied().collect())
            }
        }
    }

    /// The bytes as contiguous pieces, in order, without concatenating.
    pub fn pieces(&self) -> Vec<&[u8]> {
        match self {
            Bytes::Concat { parts, joined } => match joined.get() {
                Some(j) => vec![j.as_slice()],
                None => parts.iter().flat_map(|p| p.pieces()).collect(),
            },
            _ => vec![self.as_slice()],
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Bytes::Owned(v) => v.len(),
            Bytes::Mapped { len, .. } => *len,
            Bytes::Concat { parts, .. } => parts.iter().map(Bytes::len).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes::Owned(Arc::new(v))
    }
}

/// A constant tensor: static type plus little-endian bytes.
///
/// Architecture Invariant: `bytes.len() == ty.byte_len()`, checked by
/// [`Tensor::new`], the only constructor.
#[derive(Clone)]
pub struct Tensor {
    ty: TensorType,
    bytes: Bytes,
}

impl Tensor {
    /// Fails with a message when the byte count does not match the type.
    pub fn new(ty: TensorType, bytes: Bytes) -> Result<Tensor, String> {
        let want = ty.byte_len().ok_or_else(|| format!("{ty} has more elements than fit in memory"))?;
        let got = bytes.len();
        if got != want {
            return Err(format!("{ty} needs {want} bytes but {got} were given"));
        }
        Ok(Tensor { ty, bytes })
    }

    pub fn from_f32(shape: impl Into<Vec<usize>>, data: &[f32]) -> Result<Tensor, String> {
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        Tensor::new(TensorType::new(DType::F32, shape), bytes.into())
    }

    pub fn from_i64(shape: impl Into<Vec<usize>>, data: &[i64]) -> Result<Tensor, String> {
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        Tensor::new(TensorType::new(DType::I64, shape), bytes.into())
    }

    pub fn ty(&self) -> &TensorType {
        &self.ty
    }

    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    pub fn storage(&self) -> &Bytes {
        &self.bytes
    }

    /// Values as i64, for integer tensors.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        let b = self.bytes();
        Some(match self.ty.dtype {
            DType::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect(),
            DType::I32 => {
                b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64).collect()
            }
            DType::I8 => b.iter().map(|&x| x as i8 as i64).collect(),
            DType::U8 | DType::Bool => b.iter().map(|&x| x as i64).collect(),
            _ => return None,
        })
    }

    /// Values as f32 (converting f16/f64), for float tensors.
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        let b = self.bytes();
        Some(match self.ty.dtype {
            DType::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4]))).collect(),
            DType::F16 => {
                b.chunks_exact(2).map(|c| half::f16::from_le_bytes(c.try_into().unwrap_or([0; 2])).to_f32()).collect()
            }
            DType::F64 => {
                b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32).collect()
            }
            _ => return None,
        })
    }

    /// Values as f32 whatever the dtype (integers converted).
    pub fn to_f32_lossy(&self) -> Vec<f32> {
        self.to_f32_vec()
            .or_else(|| self.to_i64_vec().map(|v| v.into_iter().map(|x| x as f32).collect()))
            .unwrap_or_default()
    }

    /// Short content hash (first 8 hex digits of sha256) for the text form.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for piece in self.bytes.pieces() {
            h.update(piece);
        }
        let h = h.finalize();
        h.iter().take(4).map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({} #{})", self.ty, self.digest())
    }
}

/// Two tensors are equal when type and bytes are (bit-identical weights).
impl PartialEq for Tensor {
    fn eq(&self, other: &Self) -> bool {
        self.ty == other.ty && self.bytes() == other.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concatenated bytes read as the bytes laid end to end: the same
    /// length, slice, digest and equality as one owned buffer, and their
    /// pieces are the parts themselves until something asks for one slice.
    #[test]
    fn concatenated_bytes_are_their_parts_end_to_end() {
        let (a, b): (Vec<u8>, Vec<u8>) = ((0..12).collect(), (12..20).collect());
        let parts = Bytes::concat(vec![Bytes::from(a.clone()), Bytes::concat(vec![Bytes::from(b.clone())])]);
        assert_eq!(parts.len(), 20);
        assert_eq!(parts.pieces(), vec![&a[..], &b[..]], "not joined to be read");
        let ty = TensorType::new(DType::F32, vec![5]);
        let joined = Tensor::new(ty.clone(), Bytes::from([a, b].concat())).unwrap();
        let stacked = Tensor::new(ty, parts.clone()).unwrap();
        assert_eq!(stacked.digest(), joined.digest());
        assert!(stacked == joined);
        assert_eq!(stacked.bytes(), joined.bytes());
        assert_eq!(stacked.storage().pieces().len(), 1, "joined once, then read as one");
        assert!(Tensor::new(TensorType::new(DType::F32, vec![4]), parts).is_err(), "20 bytes are not 4 floats");
    }
}
