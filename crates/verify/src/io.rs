//! Named tensors in safetensors files (inputs and outputs of `fusec run`),
//! held as f32: float tensors converted, integer and bool tensors (token
//! ids, attention masks) carried exactly as f32 values, which every id
//! below 2^24 is; the runtime feeds each input in the model's own dtype.

use std::path::Path;

use ndarray::ArrayD;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::{Tensors, VerifyError};

/// Largest integer magnitude an f32 holds exactly.
pub const EXACT_INT: i64 = 1 << 24;

/// Reads every tensor of a safetensors file as f32 (f16 and f64 converted;
/// integers and bools as their exact values). Errors name the file and
/// the tensor.
pub fn read_tensors(path: &Path) -> Result<Tensors, VerifyError> {
    let err = |m: String| VerifyError::Input(format!("{}: {m}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    // SAFETY: the map is read-only and dropped before this function returns;
    // a file truncated meanwhile by someone else could fault, as with any mmap.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| err(format!("cannot map: {e}")))?;
    let st = SafeTensors::deserialize(&map).map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
    let mut names: Vec<(usize, String)> =
        st.tensors().into_iter().map(|(n, v)| (v.data().as_ptr() as usize, n)).collect();
    names.sort(); // file order, which is deterministic, not hash order
    let mut out = vec![];
    for (_, name) in names {
        let v = st.tensor(&name).map_err(|e| err(format!("tensor `{name}`: {e}")))?;
        let d = v.data();
        let vals: Vec<f32> = match v.dtype() {
            Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F64 => {
                d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32).collect()
            }
            Dtype::F16 => d.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
            Dtype::I64 | Dtype::I32 | Dtype::BOOL | Dtype::U8 | Dtype::I8 => {
                let ints: Vec<i64> = match v.dtype() {
                    Dtype::I64 => {
                        d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
                    }
                    Dtype::I32 => {
                        d.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64).collect()
                    }
                    Dtype::I8 => d.iter().map(|&b| b as i8 as i64).collect(),
                    _ => d.iter().map(|&b| b as i64).collect(),
                };
                if let Some(bad) = ints.iter().find(|x| x.abs() > EXACT_INT) {
                    return Err(err(format!(
                        "tensor `{name}` holds {bad}, beyond the integers fusec carries exactly (|x| <= 2^24)"
                    )));
                }
                ints.into_iter().map(|x| x as f32).collect()
            }
            other => {
                return Err(err(format!("tensor `{name}` is {other:?}; fusec reads float, integer and bool tensors")));
            }
        };
        let arr = ArrayD::from_shape_vec(v.shape().to_vec(), vals).map_err(|e| err(format!("tensor `{name}`: {e}")))?;
        out.push((name, arr));
    }
    Ok(out)
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if frac == 0 => sign,
        0 => {
            // subnormal: renormalize
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        0x1f => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// Serializes tensors as safetensors bytes, in the given order.
pub fn to_safetensors_bytes(tensors: &Tensors) -> Result<Vec<u8>, VerifyError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, a)| (n.clone(), a.shape().to_vec(), a.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| VerifyError::Runtime(format!("cannot encode outputs: {e}")))?;
    safetensors::serialize(views, None).map_err(|e| VerifyError::Runtime(format!("cannot encode outputs: {e}")))
}
