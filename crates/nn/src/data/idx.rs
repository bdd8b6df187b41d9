//! IDX files (MNIST, Fashion-MNIST).

use std::path::Path;

use super::{LabeledImages, bad, read_file};
use crate::error::Result;

/// Magic number of an IDX file of unsigned-byte 3-D data (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte 1-D data (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Parses an IDX image file: returns `(count, rows, cols, pixels)`. `path` is for messages.
pub fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let header = |i| {
        be_u32(bytes, i).ok_or_else(|| {
            bad(
                path,
                format!("truncated IDX header ({} bytes)", bytes.len()),
            )
        })
    };
    let magic = header(0)?;
    if magic != IDX_IMAGES_MAGIC {
        return Err(bad(
            path,
            format!(
                "wrong magic number {magic:#010x}, expected {IDX_IMAGES_MAGIC:#010x} (IDX unsigned-byte images); is this a labels file or not an IDX file?"
            ),
        ));
    }
    let (n, rows, cols) = (
        header(4)? as usize,
        header(8)? as usize,
        header(12)? as usize,
    );
    let need = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .and_then(|v| v.checked_add(16));
    if need != Some(bytes.len()) {
        return Err(bad(
            path,
            format!(
                "header says {n} images of {rows}x{cols} ({} bytes) but the file has {} bytes; the file is truncated or corrupt, fetch it again",
                need.map_or_else(|| "too many".to_string(), |v| v.to_string()),
                bytes.len()
            ),
        ));
    }
    Ok((n, rows, cols, bytes[16..].to_vec()))
}

/// Parses an IDX label file, checking every label is below `classes`.
pub fn parse_idx_labels(bytes: &[u8], path: &Path, classes: u8) -> Result<Vec<u8>> {
    let magic = be_u32(bytes, 0).ok_or_else(|| bad(path, "truncated IDX header"))?;
    if magic != IDX_LABELS_MAGIC {
        return Err(bad(
            path,
            format!(
                "wrong magic number {magic:#010x}, expected {IDX_LABELS_MAGIC:#010x} (IDX unsigned-byte labels); is this an images file or not an IDX file?"
            ),
        ));
    }
    let n = be_u32(bytes, 4).ok_or_else(|| bad(path, "truncated IDX header"))? as usize;
    if n.checked_add(8) != Some(bytes.len()) {
        return Err(bad(
            path,
            format!(
                "header says {n} labels but the file has {} bytes after the 8-byte header; the file is truncated or corrupt",
                bytes.len().saturating_sub(8)
            ),
        ));
    }
    let labels = bytes[8..].to_vec();
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(bad(
            path,
            format!("label {l} of item {i} is not a class 0..={}", classes - 1),
        ));
    }
    Ok(labels)
}

/// Reads an IDX images file and its labels file (10 classes).
pub fn read_idx(images: &Path, labels: &Path) -> Result<LabeledImages> {
    let (n, rows, cols, pixels) = parse_idx_images(&read_file(images)?, images)?;
    let l = parse_idx_labels(&read_file(labels)?, labels, 10)?;
    if l.len() != n {
        return Err(bad(
            labels,
            format!(
                "{} labels but {} has {n} images; the files do not belong together",
                l.len(),
                images.display()
            ),
        ));
    }
    LabeledImages::new(1, rows, cols, pixels, l)
}
