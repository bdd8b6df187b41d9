//! `henn prune`: L1-norm filter pruning of one convolution of an ONNX model (the algorithm is
//! `henn_nn::onnx::prune`); fine-tuning the pruned model is a training step (python/).

use std::path::PathBuf;

use anyhow::Context;
use henn_nn::onnx;

/// Arguments of `henn prune`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX model.
    pub model: PathBuf,
    /// The convolution to prune (its ONNX node name, as `henn inspect` lists it).
    #[arg(long)]
    pub layer: String,
    /// Fraction of its filters to remove (those of the smallest L1 norm; the count is rounded
    /// down, at least one).
    #[arg(long)]
    pub ratio: f64,
    /// Where to write the pruned ONNX model.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `henn prune`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let before = onnx::import_bytes(&bytes)?.param_count();
    let (out, rep) = onnx::prune::prune_filters(&bytes, &args.layer, args.ratio)?;
    let after = onnx::import_bytes(&out)?.param_count();
    std::fs::write(&args.output, &out)
        .with_context(|| format!("writing {}", args.output.display()))?;
    if args.json {
        let doc = serde_json::json!({
            "model": args.model.display().to_string(), "output": args.output.display().to_string(),
            "layer": rep.layer, "channels": rep.channels, "kept": rep.channels - rep.removed.len(),
            "removed": rep.removed, "l1_norms": rep.l1_norms, "consumers": rep.consumers,
            "initializers_sliced": rep.sliced, "params_before": before, "params_after": after,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{}: {} of {} filters of '{}' removed (smallest L1 norms), {} kept -> {}",
        args.model.display(),
        rep.removed.len(),
        rep.channels,
        rep.layer,
        rep.channels - rep.removed.len(),
        args.output.display()
    );
    println!("removed filters: {:?}", rep.removed);
    println!(
        "matching input channels removed in: {}",
        rep.consumers.join(", ")
    );
    println!("parameters: {before} -> {after}");
    println!("fine-tune the pruned model before use (python/, see python/README.md)");
    Ok(())
}
