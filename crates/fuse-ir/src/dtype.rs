//! Element types and static tensor types.

use std::fmt;

/// Element type of a tensor. The discriminants are not ONNX codes; use
/// [`DType::onnx_code`] / [`DType::from_onnx`] at the file-format edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
    F64,
    I64,
    I32,
    I8,
    U8,
    Bool,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::F64)
    }

    pub fn is_int(self) -> bool {
        matches!(self, DType::I64 | DType::I32 | DType::I8 | DType::U8)
    }

    /// The `TensorProto.DataType` code.
    pub fn onnx_code(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::U8 => 2,
            DType::I8 => 3,
            DType::I32 => 6,
            DType::I64 => 7,
            DType::Bool => 9,
            DType::F16 => 10,
            DType::F64 => 11,
        }
    }

    pub fn from_onnx(code: i32) -> Option<DType> {
        Some(match code {
            1 => DType::F32,
            2 => DType::U8,
            3 => DType::I8,
            6 => DType::I32,
            7 => DType::I64,
            9 => DType::Bool,
            10 => DType::F16,
            11 => DType::F64,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fully static tensor type: every dimension is known.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// Most elements one tensor may have (2^31: 8 GiB of f32).
pub const MAX_ELEMENTS: usize = 1 << 31;
/// Highest rank a tensor may have.
pub const MAX_RANK: usize = 16;

impl TensorType {
    pub fn new(dtype: DType, shape: impl Into<Vec<usize>>) -> Self {
        TensorType { dtype, shape: shape.into() }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements, or `None` when it overflows `usize`.
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// Size in bytes, or `None` on overflow.
    pub fn byte_len(&self) -> Option<usize> {
        self.numel()?.checked_mul(self.dtype.size())
    }

    /// Rejects absurd types: more than [`MAX_ELEMENTS`] elements or rank
    /// over [`MAX_RANK`]. Every graph input and node output is checked, so
    /// a tiny file cannot declare a tensor that no machine could hold.
    pub fn check_size(&self) -> Result<(), String> {
        if self.rank() > MAX_RANK {
            return Err(format!("rank {} exceeds fusec's limit of {MAX_RANK}", self.rank()));
        }
        match self.numel() {
            Some(n) if n <= MAX_ELEMENTS => Ok(()),
            _ => Err(format!("{self} has more than {MAX_ELEMENTS} elements (fusec's limit per tensor)")),
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// `x` in f16, finite values beyond f16's range saturated to ±65504: an
/// attention mask's `f32::MIN` must stay a large finite negative (-inf
/// times a 0 mask entry is NaN).
pub fn saturated_f16(x: f32) -> half::f16 {
    if x.is_finite() {
        half::f16::from_f32(x.clamp(-65504.0, 65504.0))
    } else {
        half::f16::from_f32(x)
    }
}
