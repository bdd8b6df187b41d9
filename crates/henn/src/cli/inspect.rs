//! `henn inspect`: the imported IR layer by layer.

use std::path::PathBuf;

use anyhow::Context;
use henn_nn::onnx;

/// Arguments of `henn inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX model.
    pub model: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `henn inspect`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let g = onnx::import_file(&args.model)
        .with_context(|| format!("importing {}", args.model.display()))?;
    let shape = |v| format!("{:?}", g.shape(v));
    if args.json {
        let layers: Vec<_> = g
            .nodes()
            .iter()
            .map(|n| {
                serde_json::json!({
                    "name": n.name,
                    "op": n.op.kind(),
                    "detail": n.op.to_string(),
                    "inputs": n.inputs.iter().map(|&v| g.shape(v).to_vec()).collect::<Vec<_>>(),
                    "output": g.shape(n.output),
                    "params": n.op.param_count(),
                    "needs_polynomial_approximation": n.op.needs_polynomial_approximation(),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "model": args.model.display().to_string(),
            "opset": g.opset(),
            "input": g.input_shape(),
            "output": g.output_shape(),
            "layers": layers,
            "total_params": g.param_count(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("model {} (opset {})", args.model.display(), g.opset());
    println!("input {}  output {}", shape(g.input()), shape(g.output()));
    println!(
        "{:>3}  {:<24} {:<62} {:<18} {:<16} {:>9}",
        "#", "name", "op", "input", "output", "params"
    );
    for (i, n) in g.nodes().iter().enumerate() {
        let ins: Vec<String> = n.inputs.iter().map(|&v| shape(v)).collect();
        let flag = if n.op.needs_polynomial_approximation() {
            "  [needs polynomial approximation]"
        } else {
            ""
        };
        println!(
            "{i:>3}  {:<24} {:<62} {:<18} {:<16} {:>9}{flag}",
            n.name,
            n.op.to_string(),
            ins.join(" "),
            shape(n.output),
            n.op.param_count()
        );
    }
    println!("total params: {}", g.param_count());
    Ok(())
}
