//! Decoding of ONNX `TensorProto`s (initializers, constants) into f64 tensors.

use onnx_protobuf::TensorProto;
use onnx_protobuf::tensor_proto::DataLocation;

use crate::error::{NnError, Result};
use crate::tensor::Tensor;

const FLOAT: i32 = 1;
const INT32: i32 = 6;
const INT64: i32 = 7;
const DOUBLE: i32 = 11;

fn bad(name: &str, detail: impl Into<String>) -> NnError {
    NnError::BadTensor {
        name: name.to_string(),
        detail: detail.into(),
    }
}

/// Decodes a tensor of type float32, float64, int32 or int64 (stored as `raw_data`
/// little-endian or in the typed repeated fields) into f64.
pub fn decode_tensor(t: &TensorProto) -> Result<Tensor> {
    let name = t.name.as_str();
    if t.data_location.value() == DataLocation::EXTERNAL as i32 || !t.external_data.is_empty() {
        return Err(bad(
            name,
            "stored as external data; re-export the model with all weights inside the .onnx file",
        ));
    }
    if t.segment.is_some() {
        return Err(bad(name, "segmented tensors are not supported"));
    }
    let mut shape = Vec::with_capacity(t.dims.len());
    let mut count: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| bad(name, format!("negative dimension {d}")))?;
        count = count
            .checked_mul(d)
            .ok_or_else(|| bad(name, "dimensions overflow"))?;
        shape.push(d);
    }
    let elem_size = match t.data_type {
        FLOAT | INT32 => 4,
        INT64 | DOUBLE => 8,
        other => {
            return Err(bad(
                name,
                format!(
                    "unsupported data type {other}; supported: float32 (1), int32 (6), int64 (7), float64 (11)"
                ),
            ));
        }
    };
    let data: Vec<f64> = if !t.raw_data.is_empty() {
        let raw = &t.raw_data;
        if Some(raw.len()) != count.checked_mul(elem_size) {
            return Err(bad(
                name,
                format!(
                    "raw_data has {} bytes but shape {shape:?} of {}-byte elements needs {}",
                    raw.len(),
                    elem_size,
                    count.saturating_mul(elem_size)
                ),
            ));
        }
        match t.data_type {
            FLOAT => raw
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            INT32 => raw
                .chunks_exact(4)
                .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            INT64 => raw
                .chunks_exact(8)
                .map(|c| {
                    i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64
                })
                .collect(),
            _ => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        }
    } else {
        match t.data_type {
            FLOAT => t.float_data.iter().map(|&v| f64::from(v)).collect(),
            INT32 => t.int32_data.iter().map(|&v| f64::from(v)).collect(),
            INT64 => t.int64_data.iter().map(|&v| v as f64).collect(),
            _ => t.double_data.clone(),
        }
    };
    if data.len() != count {
        return Err(bad(
            name,
            format!(
                "has {} elements but shape {shape:?} needs {count}",
                data.len()
            ),
        ));
    }
    Tensor::new(shape, data)
}

/// Encodes an f32 tensor as a `TensorProto` with `raw_data` (handy for building test models).
pub fn float_tensor_proto(name: &str, shape: &[usize], values: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = shape.iter().map(|&d| d as i64).collect();
    t.data_type = FLOAT;
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

/// Encodes an int64 tensor as a `TensorProto` using the `int64_data` field.
pub fn int64_tensor_proto(name: &str, shape: &[usize], values: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = shape.iter().map(|&d| d as i64).collect();
    t.data_type = INT64;
    t.int64_data = values.to_vec();
    t
}
