//! Single images (PNG, PGM/PPM) via the `image` crate.

use std::path::Path;

use super::bad;
use crate::error::{NnError, Result};
use crate::tensor::Tensor;

/// Reads an image as a `[1, C, H, W]` tensor for a model whose input shape is `input_shape`
/// (`[1, C, H, W]` or `[C, H, W]`, C = 1 or 3). Colour images are converted to grayscale for
/// 1-channel models. The size must match the model input (no resizing).
pub fn read_image(path: &Path, input_shape: &[usize]) -> Result<Tensor> {
    let (c, h, w) = match input_shape {
        [1, c, h, w] | [c, h, w] => (*c, *h, *w),
        _ => {
            return Err(NnError::InputMismatch {
                path: path.to_path_buf(),
                detail: format!(
                    "the model input {input_shape:?} is not an image (expected [1, C, H, W])"
                ),
            });
        }
    };
    let img = ::image::ImageReader::open(path)
        .map_err(|source| NnError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| NnError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .decode()
        .map_err(|e| bad(path, format!("cannot decode image: {e}")))?;
    if (img.width() as usize, img.height() as usize) != (w, h) {
        return Err(NnError::InputMismatch {
            path: path.to_path_buf(),
            detail: format!(
                "image is {}x{} (WxH) but the model expects {w}x{h}; resize it first",
                img.width(),
                img.height()
            ),
        });
    }
    let data: Vec<f64> = match c {
        1 => img
            .to_luma8()
            .into_raw()
            .into_iter()
            .map(|b| f64::from(b) / 255.0)
            .collect(),
        3 => {
            let rgb = img.to_rgb8().into_raw();
            // HWC -> CHW
            let mut out = vec![0.0; 3 * h * w];
            for (p, px) in rgb.chunks_exact(3).enumerate() {
                for (ch, &b) in px.iter().enumerate() {
                    out[ch * h * w + p] = f64::from(b) / 255.0;
                }
            }
            out
        }
        _ => {
            return Err(NnError::InputMismatch {
                path: path.to_path_buf(),
                detail: format!(
                    "the model expects {c} channels; images give 1 (grayscale) or 3 (RGB)"
                ),
            });
        }
    };
    Tensor::new(vec![1, c, h, w], data)
}
