//! Data readers: valid files parse, corrupt ones give named errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_arguments
)]

use std::path::{Path, PathBuf};

use henn_nn::NnError;
use henn_nn::data::{
    self, DatasetKind, parse_cifar10, parse_idx_images, parse_idx_labels, read_idx, read_image,
    read_npy,
};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("henn-nn-data-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn idx_images(n: u32, r: u32, c: u32, fill: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0x803u32, n, r, c] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend((0..fill).map(|i| (i % 256) as u8));
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = 0x801u32.to_be_bytes().to_vec();
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

fn bad_data(r: Result<impl std::fmt::Debug, NnError>, needle: &str) {
    match r {
        Err(e @ NnError::BadData { .. }) => assert!(
            e.to_string().contains(needle),
            "message '{e}' lacks '{needle}'"
        ),
        other => panic!("expected BadData containing '{needle}', got {other:?}"),
    }
}

#[test]
fn idx_valid_and_corrupt() {
    let p = Path::new("x");
    let (n, r, c, px) = parse_idx_images(&idx_images(2, 3, 4, 24), p).unwrap();
    assert_eq!((n, r, c, px.len()), (2, 3, 4, 24));
    bad_data(parse_idx_images(&idx_images(2, 3, 4, 23), p), "truncated");
    bad_data(parse_idx_images(&idx_images(2, 3, 4, 25), p), "truncated");
    bad_data(parse_idx_images(&idx_labels(&[1, 2]), p), "magic");
    bad_data(parse_idx_images(&[0, 0, 8], p), "header");
    bad_data(
        parse_idx_images(&idx_images(u32::MAX, u32::MAX, u32::MAX, 0), p),
        "truncated",
    );
    assert_eq!(
        parse_idx_labels(&idx_labels(&[1, 9, 0]), p, 10).unwrap(),
        vec![1, 9, 0]
    );
    bad_data(parse_idx_labels(&idx_labels(&[1, 10]), p, 10), "label 10");
    bad_data(parse_idx_labels(&idx_images(1, 1, 1, 1), p, 10), "magic");
    let mut short = idx_labels(&[1, 2, 3]);
    short.pop();
    bad_data(parse_idx_labels(&short, p, 10), "truncated");

    // Count mismatch between images and labels.
    let (ip, lp) = (tmp("img"), tmp("lab"));
    std::fs::write(&ip, idx_images(2, 2, 2, 8)).unwrap();
    std::fs::write(&lp, idx_labels(&[3])).unwrap();
    bad_data(read_idx(&ip, &lp), "do not belong together");
    std::fs::write(&lp, idx_labels(&[3, 4])).unwrap();
    let set = read_idx(&ip, &lp).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.image_shape(), [1, 1, 2, 2]);
    let img = set.image(1).unwrap();
    assert_eq!(
        img.data(),
        &[4.0 / 255.0, 5.0 / 255.0, 6.0 / 255.0, 7.0 / 255.0]
    );
    assert!(set.image(2).is_none());
}

#[test]
fn cifar_valid_and_corrupt() {
    let p = Path::new("c");
    let mut rec = vec![7u8];
    rec.extend((0..3072).map(|i| (i / 1024) as u8 * 100));
    let mut two = rec.clone();
    two.extend_from_slice(&rec);
    let set = parse_cifar10(&two, p).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.labels(), &[7, 7]);
    let t = set.image(0).unwrap();
    assert_eq!(t.shape(), &[1, 3, 32, 32]);
    assert_eq!(t.data()[0], 0.0);
    assert_eq!(t.data()[1024], 100.0 / 255.0);
    assert_eq!(t.data()[3071], 200.0 / 255.0);
    bad_data(parse_cifar10(&two[..3073 + 100], p), "multiple");
    bad_data(parse_cifar10(&[], p), "multiple");
    let mut bad_label = rec.clone();
    bad_label[0] = 10;
    bad_data(parse_cifar10(&bad_label, p), "label 10");
}

#[test]
fn missing_dataset_says_to_fetch() {
    let dir = tmp("nodata");
    match data::load_test_split(DatasetKind::FashionMnist, &dir) {
        Err(e @ NnError::DataMissing { .. }) => {
            assert!(e.to_string().contains("scripts/fetch-data.sh"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        "cifar10".parse::<DatasetKind>().unwrap(),
        DatasetKind::Cifar10
    );
    assert!("imagenet".parse::<DatasetKind>().is_err());
}

#[test]
fn images_png_and_pgm() {
    // An 8x6 gray gradient as PGM (binary P5) and as PNG.
    let (w, h) = (8u32, 6u32);
    let pixels: Vec<u8> = (0..w * h).map(|i| (i * 5) as u8).collect();
    let pgm = tmp("g.pgm");
    let mut bytes = format!("P5\n{w} {h}\n255\n").into_bytes();
    bytes.extend_from_slice(&pixels);
    std::fs::write(&pgm, &bytes).unwrap();
    let t = read_image(&pgm, &[1, 1, 6, 8]).unwrap();
    assert_eq!(t.shape(), &[1, 1, 6, 8]);
    assert_eq!(t.data()[9], 45.0 / 255.0);
    match read_image(&pgm, &[1, 1, 28, 28]) {
        Err(e @ NnError::InputMismatch { .. }) => assert!(e.to_string().contains("8x6"), "{e}"),
        other => panic!("{other:?}"),
    }
    // RGB PNG to a 3-channel model (CHW) and to a 1-channel model (grayscale).
    let png = tmp("c.png");
    let rgb: Vec<u8> = (0..w * h).flat_map(|i| [i as u8, 100, 200]).collect();
    image::save_buffer(&png, &rgb, w, h, image::ExtendedColorType::Rgb8).unwrap();
    let t = read_image(&png, &[1, 3, 6, 8]).unwrap();
    assert_eq!(t.data()[3], 3.0 / 255.0);
    assert_eq!(t.data()[48 + 3], 100.0 / 255.0);
    assert_eq!(t.data()[96 + 3], 200.0 / 255.0);
    let g = read_image(&png, &[1, 1, 6, 8]).unwrap();
    assert_eq!(g.shape(), &[1, 1, 6, 8]);
    // Garbage is a named error.
    let junk = tmp("junk.png");
    std::fs::write(&junk, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    assert!(matches!(
        read_image(&junk, &[1, 1, 6, 8]),
        Err(NnError::BadData { .. })
    ));
}

#[test]
fn npy_arrays() {
    let p = tmp("a.npy");
    let v: Vec<f32> = (0..12).map(|i| i as f32 / 2.0).collect();
    let mut buf = Vec::new();
    {
        use npyz::WriterBuilder;
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&[1, 3, 4])
            .writer(&mut buf)
            .begin_nd()
            .unwrap();
        w.extend(v.iter().copied()).unwrap();
        w.finish().unwrap();
    }
    std::fs::write(&p, &buf).unwrap();
    let t = read_npy(&p, &[1, 1, 3, 4]).unwrap();
    assert_eq!(t.shape(), &[1, 1, 3, 4]);
    assert_eq!(t.data()[5], 2.5);
    assert!(matches!(
        read_npy(&p, &[1, 1, 4, 3]),
        Err(NnError::InputMismatch { .. })
    ));
    std::fs::write(&p, &buf[..buf.len() - 5]).unwrap();
    assert!(matches!(
        read_npy(&p, &[1, 1, 3, 4]),
        Err(NnError::BadData { .. })
    ));
    std::fs::write(&p, b"garbage").unwrap();
    assert!(matches!(
        read_npy(&p, &[1, 1, 3, 4]),
        Err(NnError::BadData { .. })
    ));
    // read_input dispatches on the extension.
    let q = tmp("b.npy");
    std::fs::write(&q, &buf).unwrap();
    assert_eq!(data::read_input(&q, &[1, 1, 3, 4]).unwrap().len(), 12);
}

#[test]
fn committed_mnist_sample_matches_pgm_samples() {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"));
    let set = read_idx(
        &d.join("tests/data/mnist-t10k-first100-images-idx3-ubyte"),
        &d.join("tests/data/mnist-t10k-first100-labels-idx1-ubyte"),
    )
    .unwrap();
    assert_eq!(&set.labels()[..4], &[7, 2, 1, 0]);
    let pgm = d.join("../../models/samples/mnist_test_0000_label7.pgm");
    if pgm.exists() {
        let t = read_image(&pgm, &[1, 1, 28, 28]).unwrap();
        assert_eq!(t, set.image(0).unwrap());
    }
}
