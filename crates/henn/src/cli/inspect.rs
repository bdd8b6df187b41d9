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
    /// Show the graph after the exact rewrites (batch-norm fusion, affine folding, linear
    /// merging, polynomial recognition).
    #[arg(long)]
    pub simplify: bool,
}

/// Runs `henn inspect`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let g = onnx::import_file(&args.model)
        .with_context(|| format!("importing {}", args.model.display()))?;
    let g = if args.simplify {
        henn_nn::rewrite::simplify(&g)?
    } else {
        g
    };
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
    let mut rows = vec![[
        "#".to_string(),
        "name".into(),
        "op".into(),
        "input".into(),
        "output".into(),
        "params".into(),
    ]];
    for (i, n) in g.nodes().iter().enumerate() {
        let ins: Vec<String> = n.inputs.iter().map(|&v| shape(v)).collect();
        let flag = if n.op.needs_polynomial_approximation() {
            " *"
        } else {
            ""
        };
        rows.push([
            i.to_string(),
            n.name.clone(),
            format!("{}{flag}", n.op),
            ins.join(" + "),
            shape(n.output),
            n.op.param_count().to_string(),
        ]);
    }
    let mut w = [0usize; 6];
    for r in &rows {
        for (k, c) in r.iter().enumerate() {
            w[k] = w[k].max(c.chars().count());
        }
    }
    for r in &rows {
        println!(
            "{:>w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:<w4$}  {:>w5$}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4],
            w5 = w[5]
        );
    }
    if g.nodes()
        .iter()
        .any(|n| n.op.needs_polynomial_approximation())
    {
        println!("* needs a polynomial approximation before encrypted evaluation");
    }
    println!("total params: {}", g.param_count());
    Ok(())
}
