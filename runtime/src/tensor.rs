//! Host tensors as safetensors stores them: a dtype, a shape, little-endian bytes.
//!
//! [`Tensor`] is the unit the binder reads and the writer produces. Decoding turns any supported
//! dtype into `f64` (floats: f64, f32, bf16, f16), `i128` (every integer type, exactly) or `bool`;
//! encoding goes the other way, so tests can build files in every dtype.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::RuntimeError;

/// One tensor: dtype, row-major shape, raw little-endian bytes (`bytes.len() == numel * size`).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// The decoded values of a tensor, by dtype family.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    Float(Vec<f64>),
    Int(Vec<i128>),
    Bool(Vec<bool>),
}

/// A named set of tensors (a safetensors file), sorted by name.
pub type Tensors = BTreeMap<String, Tensor>;

/// Short lowercase name of a dtype, as numpy/torch users write it.
pub fn dtype_name(d: Dtype) -> String {
    match d {
        Dtype::BOOL => "bool".into(),
        Dtype::U8 => "u8".into(),
        Dtype::I8 => "i8".into(),
        Dtype::I16 => "i16".into(),
        Dtype::U16 => "u16".into(),
        Dtype::I32 => "i32".into(),
        Dtype::U32 => "u32".into(),
        Dtype::I64 => "i64".into(),
        Dtype::U64 => "u64".into(),
        Dtype::F16 => "f16".into(),
        Dtype::BF16 => "bf16".into(),
        Dtype::F32 => "f32".into(),
        Dtype::F64 => "f64".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Is `d` one of the floating-point dtypes the runtime reads?
pub fn is_float(d: Dtype) -> bool {
    matches!(d, Dtype::F64 | Dtype::F32 | Dtype::BF16 | Dtype::F16)
}

/// Is `d` an integer dtype (signed or unsigned, any width)?
pub fn is_int(d: Dtype) -> bool {
    matches!(
        d,
        Dtype::U8
            | Dtype::I8
            | Dtype::I16
            | Dtype::U16
            | Dtype::I32
            | Dtype::U32
            | Dtype::I64
            | Dtype::U64
    )
}

fn chunks<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    b.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

impl Tensor {
    /// Number of elements (product of the shape; 1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Decodes the bytes. `None` for dtypes the runtime does not read (f8, complex, ...).
    pub fn values(&self) -> Option<Values> {
        let b = &self.bytes[..];
        if b.len() * 8 != self.numel() * self.dtype.bitsize() {
            return None;
        }
        Some(match self.dtype {
            Dtype::F64 => Values::Float(chunks::<8>(b).map(f64::from_le_bytes).collect()),
            Dtype::F32 => Values::Float(
                chunks::<4>(b)
                    .map(|c| f64::from(f32::from_le_bytes(c)))
                    .collect(),
            ),
            Dtype::BF16 => Values::Float(
                chunks::<2>(b)
                    .map(|c| half::bf16::from_le_bytes(c).to_f64())
                    .collect(),
            ),
            Dtype::F16 => Values::Float(
                chunks::<2>(b)
                    .map(|c| half::f16::from_le_bytes(c).to_f64())
                    .collect(),
            ),
            Dtype::BOOL => Values::Bool(b.iter().map(|&x| x != 0).collect()),
            Dtype::U8 => Values::Int(b.iter().map(|&x| i128::from(x)).collect()),
            Dtype::I8 => Values::Int(b.iter().map(|&x| i128::from(x as i8)).collect()),
            Dtype::I16 => Values::Int(
                chunks::<2>(b)
                    .map(|c| i16::from_le_bytes(c).into())
                    .collect(),
            ),
            Dtype::U16 => Values::Int(
                chunks::<2>(b)
                    .map(|c| u16::from_le_bytes(c).into())
                    .collect(),
            ),
            Dtype::I32 => Values::Int(
                chunks::<4>(b)
                    .map(|c| i32::from_le_bytes(c).into())
                    .collect(),
            ),
            Dtype::U32 => Values::Int(
                chunks::<4>(b)
                    .map(|c| u32::from_le_bytes(c).into())
                    .collect(),
            ),
            Dtype::I64 => Values::Int(
                chunks::<8>(b)
                    .map(|c| i64::from_le_bytes(c).into())
                    .collect(),
            ),
            Dtype::U64 => Values::Int(
                chunks::<8>(b)
                    .map(|c| u64::from_le_bytes(c).into())
                    .collect(),
            ),
            _ => return None,
        })
    }

    /// Encodes `values` in `dtype` (floats rounded to the dtype; integers truncated toward zero;
    /// bool: nonzero → true). Errors if `values.len()` does not match the shape.
    pub fn from_f64(dtype: Dtype, shape: &[usize], values: &[f64]) -> Result<Tensor, RuntimeError> {
        let n: usize = shape.iter().product();
        if n != values.len() {
            return Err(RuntimeError::Unsupported(format!(
                "tensor of shape {shape:?} needs {n} values, got {}",
                values.len()
            )));
        }
        let mut bytes = Vec::with_capacity(n * 8);
        for &v in values {
            match dtype {
                Dtype::F64 => bytes.extend(v.to_le_bytes()),
                Dtype::F32 => bytes.extend((v as f32).to_le_bytes()),
                Dtype::BF16 => bytes.extend(half::bf16::from_f64(v).to_le_bytes()),
                Dtype::F16 => bytes.extend(half::f16::from_f64(v).to_le_bytes()),
                Dtype::BOOL => bytes.push(u8::from(v != 0.0)),
                Dtype::U8 => bytes.push(v as u8),
                Dtype::I8 => bytes.push(v as i8 as u8),
                Dtype::I16 => bytes.extend((v as i16).to_le_bytes()),
                Dtype::U16 => bytes.extend((v as u16).to_le_bytes()),
                Dtype::I32 => bytes.extend((v as i32).to_le_bytes()),
                Dtype::U32 => bytes.extend((v as u32).to_le_bytes()),
                Dtype::I64 => bytes.extend((v as i64).to_le_bytes()),
                Dtype::U64 => bytes.extend((v as u64).to_le_bytes()),
                other => {
                    return Err(RuntimeError::Unsupported(format!(
                        "cannot encode dtype {}",
                        dtype_name(other)
                    )))
                }
            }
        }
        Ok(Tensor {
            dtype,
            shape: shape.to_vec(),
            bytes,
        })
    }
}

/// Parses a safetensors buffer (copying each tensor).
pub fn read_bytes(bytes: &[u8], what: &str) -> Result<Tensors, RuntimeError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| RuntimeError::BadFile {
        path: what.to_string(),
        message: e.to_string(),
    })?;
    Ok(st
        .iter()
        .map(|(name, v)| {
            (
                name.to_string(),
                Tensor {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    bytes: v.data().to_vec(),
                },
            )
        })
        .collect())
}

/// Reads a safetensors file.
pub fn read_file(path: &Path) -> Result<Tensors, RuntimeError> {
    let bytes = std::fs::read(path).map_err(|e| RuntimeError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    read_bytes(&bytes, &path.display().to_string())
}

/// Serializes tensors to safetensors bytes.
pub fn to_bytes(tensors: &Tensors) -> Result<Vec<u8>, RuntimeError> {
    let views = tensors
        .iter()
        .map(|(k, t)| {
            safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| RuntimeError::BadFile {
                    path: format!("tensor `{k}`"),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, None).map_err(|e| RuntimeError::BadFile {
        path: "<output>".into(),
        message: e.to_string(),
    })
}

/// Writes tensors to a safetensors file.
pub fn write_file(path: &Path, tensors: &Tensors) -> Result<(), RuntimeError> {
    let bytes = to_bytes(tensors)?;
    std::fs::write(path, bytes).map_err(|e| RuntimeError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}
