//! Input data: IDX (MNIST, Fashion-MNIST), CIFAR-10 binary, single images (PNG, PGM) and
//! `.npy` arrays. Pixels become f64 as `byte / 255`.

mod cifar;
mod idx;
mod image;
mod npy;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use cifar::{CIFAR10_RECORD_BYTES, parse_cifar10, read_cifar10};
pub use idx::{IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, parse_idx_images, parse_idx_labels, read_idx};
pub use image::read_image;
pub use npy::read_npy;

use crate::error::{NnError, Result};
use crate::tensor::Tensor;

/// A set of labelled images of equal size, stored as bytes (CHW per image).
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledImages {
    channels: usize,
    height: usize,
    width: usize,
    pixels: Vec<u8>,
    labels: Vec<u8>,
}

impl LabeledImages {
    /// Builds a set; `pixels` holds `labels.len()` images of `channels * height * width` bytes.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        pixels: Vec<u8>,
        labels: Vec<u8>,
    ) -> Result<Self> {
        if Some(pixels.len())
            != channels
                .checked_mul(height)
                .and_then(|v| v.checked_mul(width))
                .and_then(|v| v.checked_mul(labels.len()))
        {
            return Err(NnError::InvalidGraph(format!(
                "{} pixel bytes do not hold {} images of {channels}x{height}x{width}",
                pixels.len(),
                labels.len()
            )));
        }
        Ok(Self {
            channels,
            height,
            width,
            pixels,
            labels,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image shape `[1, C, H, W]`.
    pub fn image_shape(&self) -> [usize; 4] {
        [1, self.channels, self.height, self.width]
    }

    /// Image `i` as a `[1, C, H, W]` tensor with values `byte / 255`.
    pub fn image(&self, i: usize) -> Option<Tensor> {
        let n = self.channels * self.height * self.width;
        let bytes = self.pixels.get(i * n..(i + 1) * n)?;
        Tensor::new(
            self.image_shape().to_vec(),
            bytes.iter().map(|&b| f64::from(b) / 255.0).collect(),
        )
        .ok()
    }

    /// Raw bytes of image `i`.
    pub fn image_bytes(&self, i: usize) -> Option<&[u8]> {
        let n = self.channels * self.height * self.width;
        self.pixels.get(i * n..(i + 1) * n)
    }

    /// Label of image `i`.
    pub fn label(&self, i: usize) -> Option<u8> {
        self.labels.get(i).copied()
    }

    /// All labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The first `n` images (all if fewer).
    pub fn truncated(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        self.pixels
            .truncate(n * self.channels * self.height * self.width);
        self.labels.truncate(n);
        self
    }
}

/// The data sets henn knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// MNIST digits, 1x28x28.
    Mnist,
    /// Fashion-MNIST, 1x28x28.
    FashionMnist,
    /// CIFAR-10, 3x32x32.
    Cifar10,
}

impl DatasetKind {
    /// All kinds.
    pub const ALL: [DatasetKind; 3] = [
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Cifar10,
    ];

    /// The name used on the command line and as the directory under `data/`.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Cifar10 => "cifar10",
        }
    }

    /// Input shape `[1, C, H, W]` of one image.
    pub fn image_shape(self) -> [usize; 4] {
        match self {
            DatasetKind::Cifar10 => [1, 3, 32, 32],
            _ => [1, 1, 28, 28],
        }
    }

    /// Files of the test split, relative to the data directory.
    pub fn test_files(self) -> Vec<PathBuf> {
        let d = PathBuf::from(self.name());
        match self {
            DatasetKind::Cifar10 => vec![d.join("test_batch.bin")],
            _ => vec![
                d.join("t10k-images-idx3-ubyte"),
                d.join("t10k-labels-idx1-ubyte"),
            ],
        }
    }
}

impl DatasetKind {
    /// Files of the training split, relative to the data directory (CIFAR-10: its five
    /// batches).
    pub fn train_files(self) -> Vec<PathBuf> {
        let d = PathBuf::from(self.name());
        match self {
            DatasetKind::Cifar10 => (1..=5)
                .map(|i| d.join(format!("data_batch_{i}.bin")))
                .collect(),
            _ => vec![
                d.join("train-images-idx3-ubyte"),
                d.join("train-labels-idx1-ubyte"),
            ],
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown data set '{s}'; known: mnist, fashion-mnist, cifar10"))
    }
}

/// Loads the test split of a data set from `data_dir` (usually `data/`), e.g.
/// `data/mnist/t10k-images-idx3-ubyte`. A missing file gives [`NnError::DataMissing`], whose
/// message says to run `scripts/fetch-data.sh`.
pub fn load_test_split(kind: DatasetKind, data_dir: &Path) -> Result<LabeledImages> {
    load_files(kind, data_dir, kind.test_files())
}

/// Loads the first `limit` images of the training split (calibration data that the test
/// split's figures do not see). A missing file gives [`NnError::DataMissing`].
pub fn load_train_split(kind: DatasetKind, data_dir: &Path, limit: usize) -> Result<LabeledImages> {
    // CIFAR-10: the first batch holds 10,000 images, enough for any calibration
    let mut files = kind.train_files();
    if kind == DatasetKind::Cifar10 {
        files.truncate(1);
    }
    Ok(load_files(kind, data_dir, files)?.truncated(limit))
}

/// One CIFAR-10 batch file, or IDX images and labels, under `data_dir`.
fn load_files(kind: DatasetKind, data_dir: &Path, files: Vec<PathBuf>) -> Result<LabeledImages> {
    let files: Vec<PathBuf> = files.into_iter().map(|f| data_dir.join(f)).collect();
    for f in &files {
        if !f.exists() {
            return Err(NnError::DataMissing { path: f.clone() });
        }
    }
    match (kind, files.as_slice()) {
        (DatasetKind::Cifar10, [f]) => read_cifar10(f),
        (_, [images, labels]) => read_idx(images, labels),
        _ => Err(NnError::InvalidGraph(
            "unexpected data set file list".into(),
        )),
    }
}

/// Reads one model input from a file: `.npy` arrays, otherwise an image (PNG, PGM, ...).
/// `input_shape` is the model's input shape (`[1, C, H, W]` for images).
pub fn read_input(path: &Path, input_shape: &[usize]) -> Result<Tensor> {
    let is_npy = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if is_npy {
        read_npy(path, input_shape)
    } else {
        read_image(path, input_shape)
    }
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| NnError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn bad(path: &Path, detail: impl Into<String>) -> NnError {
    NnError::BadData {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}
