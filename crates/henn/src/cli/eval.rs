//! `henn eval`: accuracy of a model on the test split of a data set.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use henn_nn::data::{self, DatasetKind};
use henn_nn::{Graph, onnx, reference};
use rayon::prelude::*;

/// Arguments of `henn eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX model.
    pub model: PathBuf,
    /// Data set: mnist, fashion-mnist or cifar10 (its test split is used).
    #[arg(long)]
    pub dataset: DatasetKind,
    /// Evaluate in plaintext with the f64 reference engine.
    #[arg(long)]
    pub plain: bool,
    /// Evaluate only the first N test images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Directory holding the data sets (as fetched by scripts/fetch-data.sh).
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Packing layout for encrypted evaluation: batch or channel (default batch).
    #[arg(long)]
    pub packing: Option<henn_nn::pack::LayoutKind>,
    /// User-given CKKS parameters.
    #[command(flatten)]
    pub params: super::he::ParamArgs,
}

/// Result of a plaintext evaluation.
#[derive(Debug, Clone, Copy)]
pub struct PlainEval {
    /// Images evaluated.
    pub n: usize,
    /// Correct top-1 predictions.
    pub correct: usize,
}

/// Plaintext top-1 accuracy of `graph` on `set` (parallel over images).
pub fn plain_eval(graph: &Graph, set: &data::LabeledImages) -> anyhow::Result<PlainEval> {
    let correct = AtomicUsize::new(0);
    (0..set.len())
        .into_par_iter()
        .try_for_each(|i| -> anyhow::Result<()> {
            let x = set.image(i).context("image index out of range")?;
            let out = reference::run(graph, &x)
                .with_context(|| format!("running the model on test image {i}"))?;
            if out.argmax().map(|c| c as u8) == set.label(i) {
                correct.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })?;
    Ok(PlainEval {
        n: set.len(),
        correct: correct.into_inner(),
    })
}

/// `test_accuracy` from the model's metadata file `<model>.json`, if there is one and it was
/// measured on `dataset`.
fn recorded_accuracy(model: &Path, dataset: DatasetKind) -> Option<f64> {
    let text = std::fs::read_to_string(model.with_extension("json")).ok()?;
    let meta = serde_json::from_str::<serde_json::Value>(&text).ok()?;
    if meta.get("dataset").and_then(|d| d.as_str()) != Some(dataset.name()) {
        return None;
    }
    meta.get("test_accuracy")?.as_f64()
}

/// Runs `henn eval`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if !args.plain {
        return super::eval_encrypted::run(&args);
    }
    let graph = onnx::import_file(&args.model)
        .with_context(|| format!("importing {}", args.model.display()))?;
    let shape = args.dataset.image_shape();
    if !reference::input_shape_matches(graph.input_shape(), &shape) {
        bail!(
            "model input {:?} does not fit {} images {:?}",
            graph.input_shape(),
            args.dataset,
            shape
        );
    }
    let mut set = data::load_test_split(args.dataset, &args.data_dir)?;
    if let Some(n) = args.limit {
        set = set.truncated(n);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()?;
    let start = Instant::now();
    let r = pool.install(|| plain_eval(&graph, &set))?;
    let secs = start.elapsed().as_secs_f64();
    let acc = if r.n == 0 {
        0.0
    } else {
        r.correct as f64 / r.n as f64
    };
    let recorded = recorded_accuracy(&args.model, args.dataset);
    if args.json {
        let doc = serde_json::json!({
            "model": args.model.display().to_string(),
            "dataset": args.dataset.name(),
            "n": r.n,
            "correct": r.correct,
            "plain_accuracy": acc,
            "recorded_test_accuracy": recorded,
            "seconds": secs,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "{} on {} test ({} images): plain accuracy {:.4} ({}/{}) in {:.2} s",
            args.model.display(),
            args.dataset,
            r.n,
            acc,
            r.correct,
            r.n,
            secs
        );
        if let Some(rec) = recorded {
            println!("recorded test accuracy (model metadata): {rec:.4}");
        }
    }
    Ok(())
}
