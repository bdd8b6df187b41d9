//! Every shipped model (`models/*.onnx`) imports and has a fixture; on the first 100 test
//! images of its data set (MNIST and the JPEG-derived CIFAR-10 test batch, both committed
//! under `tests/data/`) the reference engine reproduces the recorded PyTorch logits
//! (`models/fixtures/<name>.logits100.json`) to 13 bits relative to the largest logit (PyTorch
//! computes in f32), with the same top-1; the rewrites keep the output to 30 bits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_arguments
)]

mod kit;

use std::path::{Path, PathBuf};

use henn_nn::data::{read_cifar10, read_idx};
use henn_nn::{onnx, reference, rewrite};
use kit::{assert_bits, relative_bits};

/// Precision of the f64 reference against PyTorch's f32 logits.
const FIXTURE_BITS: f64 = 13.0;
/// Precision of the simplified graph against the imported one (exact rewrites; f64 rounding).
const REWRITE_BITS: f64 = 30.0;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn models() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("models"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "onnx"));
    v.sort();
    v
}

#[test]
fn shipped_models_import_and_match_fixtures() {
    let models = models();
    assert!(!models.is_empty(), "no models/*.onnx found");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mnist = read_idx(
        &data.join("mnist-t10k-first100-images-idx3-ubyte"),
        &data.join("mnist-t10k-first100-labels-idx1-ubyte"),
    )
    .unwrap();
    let cifar = read_cifar10(&data.join("cifar10-jpeg-test-first100.bin")).unwrap();
    assert_eq!((mnist.len(), cifar.len()), (100, 100));
    let mut report = Vec::new();
    for path in &models {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let g = onnx::import_file(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        g.validate().unwrap();
        let simplified = rewrite::simplify(&g).unwrap();
        simplified.validate().unwrap();
        let fixture = repo().join(format!("models/fixtures/{name}.logits100.json"));
        let text = std::fs::read_to_string(&fixture).unwrap_or_else(|e| {
            panic!(
                "{name}: fixture {} missing ({e}); every shipped model needs one (python/export writes it)",
                fixture.display()
            )
        });
        let fx: serde_json::Value = serde_json::from_str(&text).unwrap();
        let set = match fx["dataset"].as_str().unwrap_or("") {
            "mnist" => &mnist,
            "cifar10-jpeg" => &cifar,
            other => {
                panic!("{name}: fixture for data set '{other}', which has no committed images")
            }
        };
        let logits = fx["logits"].as_array().unwrap();
        let labels = fx["labels"].as_array().unwrap();
        assert_eq!(logits.len(), 100, "{name}: fixture of 100 images");
        let mut worst = f64::INFINITY;
        let mut worst_rewrite = f64::INFINITY;
        let mut agree = 0;
        for (i, (want, label)) in logits.iter().zip(labels).enumerate() {
            assert_eq!(
                label.as_u64().unwrap(),
                u64::from(set.label(i).unwrap()),
                "{name}: label {i}"
            );
            let x = set.image(i).unwrap();
            let out = reference::run(&g, &x).unwrap();
            let want: Vec<f64> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let bits = assert_bits(
                &format!("{name} image {i}"),
                out.data(),
                &want,
                FIXTURE_BITS,
            );
            worst = worst.min(bits);
            let top = want
                .iter()
                .enumerate()
                .fold(0, |m, (j, v)| if *v > want[m] { j } else { m });
            if out.argmax() == Some(top) {
                agree += 1;
            }
            if i < 10 {
                let s = reference::run(&simplified, &x).unwrap();
                worst_rewrite = worst_rewrite.min(relative_bits(s.data(), out.data()));
            }
        }
        assert_eq!(
            agree,
            logits.len(),
            "{name}: top-1 differs from the fixture"
        );
        assert!(
            worst_rewrite >= REWRITE_BITS,
            "{name}: simplify changed the output: {worst_rewrite:.1} bits"
        );
        report.push(format!(
            "{name}: {} nodes ({} after simplify), fixture {worst:.1} bits, rewrite {worst_rewrite:.1} bits",
            g.nodes().len(),
            simplified.nodes().len()
        ));
    }
    eprintln!("checked models:\n  {}", report.join("\n  "));
}
