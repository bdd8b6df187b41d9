//! `.npy` arrays via the `npyz` crate.

use std::path::Path;

use super::{bad, read_file};
use crate::error::{NnError, Result};
use crate::reference::input_shape_matches;
use crate::tensor::Tensor;

/// Reads a float32 or float64 `.npy` array (C order) whose shape matches `input_shape` up to
/// leading size-1 axes; returns it reshaped to `input_shape`.
pub fn read_npy(path: &Path, input_shape: &[usize]) -> Result<Tensor> {
    let bytes = read_file(path)?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .map_err(|e| bad(path, format!("not a valid .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(bad(
            path,
            "Fortran-order arrays are not supported; save with np.ascontiguousarray",
        ));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if !input_shape_matches(input_shape, &shape) {
        return Err(NnError::InputMismatch {
            path: path.to_path_buf(),
            detail: format!("array shape {shape:?} does not match the model input {input_shape:?}"),
        });
    }
    let dtype = npy.dtype();
    let descr = dtype.descr();
    let data: Vec<f64> = match descr.trim_matches('\'') {
        "<f4" => npy
            .into_vec::<f32>()
            .map_err(|e| bad(path, format!("cannot read float32 data: {e}")))?
            .into_iter()
            .map(f64::from)
            .collect(),
        "<f8" => npy
            .into_vec::<f64>()
            .map_err(|e| bad(path, format!("cannot read float64 data: {e}")))?,
        other => {
            return Err(bad(
                path,
                format!("dtype {other} is not supported; save the array as float32"),
            ));
        }
    };
    if data.len() != shape.iter().product::<usize>() {
        return Err(bad(path, "array data is truncated"));
    }
    Tensor::new(input_shape.to_vec(), data)
}
