//! CIFAR-10 binary batches.

use std::path::Path;

use super::{LabeledImages, bad, read_file};
use crate::error::Result;

/// Bytes per CIFAR-10 record: 1 label byte, then 1024 R, 1024 G, 1024 B bytes.
pub const CIFAR10_RECORD_BYTES: usize = 3073;

/// Parses a CIFAR-10 binary batch. `path` is for messages.
pub fn parse_cifar10(bytes: &[u8], path: &Path) -> Result<LabeledImages> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(CIFAR10_RECORD_BYTES) {
        return Err(bad(
            path,
            format!(
                "{} bytes is not a positive multiple of the {CIFAR10_RECORD_BYTES}-byte CIFAR-10 record; the file is truncated or not a CIFAR-10 binary batch",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / CIFAR10_RECORD_BYTES;
    let mut labels = Vec::with_capacity(n);
    let mut pixels = Vec::with_capacity(n * (CIFAR10_RECORD_BYTES - 1));
    for (i, rec) in bytes.chunks_exact(CIFAR10_RECORD_BYTES).enumerate() {
        if rec[0] > 9 {
            return Err(bad(
                path,
                format!("record {i} has label {}, not a class 0..=9", rec[0]),
            ));
        }
        labels.push(rec[0]);
        pixels.extend_from_slice(&rec[1..]);
    }
    LabeledImages::new(3, 32, 32, pixels, labels)
}

/// Reads a CIFAR-10 binary batch file.
pub fn read_cifar10(path: &Path) -> Result<LabeledImages> {
    parse_cifar10(&read_file(path)?, path)
}
