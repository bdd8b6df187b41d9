//! `henn predict`: logits and top-1 class for single inputs (images or .npy arrays).

use std::path::PathBuf;

use anyhow::{Context, bail};
use henn_nn::{data, onnx, reference};

/// Arguments of `henn predict`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX model.
    pub model: PathBuf,
    /// Inputs: image files (PNG, PGM, ...) of the model's input size, or .npy float arrays.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Evaluate in plaintext with the f64 reference engine.
    #[arg(long)]
    pub plain: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `henn predict`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if !args.plain {
        bail!(
            "encrypted prediction is not available yet; pass --plain for the plaintext reference"
        );
    }
    let graph = onnx::import_file(&args.model)
        .with_context(|| format!("importing {}", args.model.display()))?;
    let mut results = Vec::new();
    for path in &args.inputs {
        let input = data::read_input(path, graph.input_shape())?;
        let out = reference::run(&graph, &input)
            .with_context(|| format!("running the model on {}", path.display()))?;
        let top1 = out.argmax();
        if args.json {
            results.push(serde_json::json!({
                "input": path.display().to_string(),
                "logits": out.data(),
                "top1": top1,
            }));
        } else {
            let logits: Vec<String> = out.data().iter().map(|v| format!("{v:.4}")).collect();
            match top1 {
                Some(c) => println!(
                    "{}: top1 {c}  logits [{}]",
                    path.display(),
                    logits.join(", ")
                ),
                None => println!("{}: no output", path.display()),
            }
        }
    }
    if args.json {
        let doc = serde_json::json!({
            "model": args.model.display().to_string(),
            "mode": "plain",
            "predictions": results,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}
