//! Every shipped model (`models/*.onnx`) imports, and on the first 100 MNIST test images
//! (committed under `tests/data/`) the reference engine reproduces the recorded PyTorch
//! logits (`models/fixtures/<name>.logits100.json`) to 1e-4; the rewrites keep the output.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_arguments
)]

use std::path::{Path, PathBuf};

use henn_nn::data::read_idx;
use henn_nn::{onnx, reference, rewrite};

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
    assert_eq!(mnist.len(), 100);
    let mut report = Vec::new();
    for path in &models {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let g = onnx::import_file(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        g.validate().unwrap();
        let simplified = rewrite::simplify(&g).unwrap();
        simplified.validate().unwrap();
        let fixture = repo().join(format!("models/fixtures/{name}.logits100.json"));
        let Ok(text) = std::fs::read_to_string(&fixture) else {
            report.push(format!(
                "{name}: imported ({} nodes), NO FIXTURE",
                g.nodes().len()
            ));
            continue;
        };
        let fx: serde_json::Value = serde_json::from_str(&text).unwrap();
        let dataset = fx["dataset"].as_str().unwrap_or("");
        if dataset != "mnist" {
            report.push(format!("{name}: imported, fixture for {dataset} NOT CHECKED (only MNIST images are committed)"));
            continue;
        }
        let logits = fx["logits"].as_array().unwrap();
        let labels = fx["labels"].as_array().unwrap();
        let mut max_err = 0.0f64;
        let mut max_rewrite_err = 0.0f64;
        let mut agree = 0;
        for (i, (want, label)) in logits.iter().zip(labels).enumerate() {
            assert_eq!(
                label.as_u64().unwrap(),
                u64::from(mnist.label(i).unwrap()),
                "{name}: label {i}"
            );
            let x = mnist.image(i).unwrap();
            let out = reference::run(&g, &x).unwrap();
            let want: Vec<f64> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(out.len(), want.len());
            for (a, b) in out.data().iter().zip(&want) {
                let err = (a - b).abs() / b.abs().max(1.0);
                max_err = max_err.max(err);
                assert!(err <= 1e-4, "{name}: image {i}: logit {a} vs recorded {b}");
            }
            let top = want
                .iter()
                .enumerate()
                .fold(0, |m, (j, v)| if *v > want[m] { j } else { m });
            if out.argmax() == Some(top) {
                agree += 1;
            }
            if i < 10 {
                let s = reference::run(&simplified, &x).unwrap();
                let scale = out.data().iter().fold(1e-12f64, |m, v| m.max(v.abs()));
                max_rewrite_err = max_rewrite_err.max(s.max_abs_diff(&out).unwrap() / scale);
            }
        }
        assert_eq!(
            agree,
            logits.len(),
            "{name}: top-1 differs from the fixture"
        );
        assert!(
            max_rewrite_err <= 1e-9,
            "{name}: simplify changed the output by {max_rewrite_err:e} (relative)"
        );
        report.push(format!(
            "{name}: {} nodes ({} after simplify), fixture max rel err {max_err:.2e}, rewrite rel err {max_rewrite_err:.2e}",
            g.nodes().len(),
            simplified.nodes().len()
        ));
    }
    eprintln!("checked models:\n  {}", report.join("\n  "));
}
