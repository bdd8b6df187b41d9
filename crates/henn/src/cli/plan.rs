//! `henn plan`: the execution plan of a model under a packing layout (depth, CKKS parameters
//! chosen for 128-bit security, rotation keys, per-layer levels and scales), as JSON for the
//! client, who needs it to make keys.

use std::path::PathBuf;

use anyhow::Context;
use henn_nn::pack::LayoutKind;
use henn_nn::plan::Images;
use henn_nn::{onnx, report, rewrite};

use super::he;

/// Arguments of `henn plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX model.
    pub model: PathBuf,
    /// Packing layout: batch or channel.
    #[arg(long, default_value = "batch")]
    pub packing: LayoutKind,
    /// Images per batch (default: as many as the smallest fitting N holds).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Print the full plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// User-given CKKS parameters.
    #[command(flatten)]
    pub params: super::he::ParamArgs,
}

/// Runs `henn plan`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let graph = onnx::import_file(&args.model)
        .with_context(|| format!("importing {}", args.model.display()))?;
    let graph = rewrite::simplify(&graph)?;
    let (calib, _) = he::samples()?;
    let calib = if calib
        .first()
        .is_some_and(|x| henn_nn::reference::input_shape_matches(graph.input_shape(), x.shape()))
    {
        calib
    } else {
        vec![henn_nn::Tensor::new(
            graph.input_shape().to_vec(),
            vec![1.0; graph.input_shape().iter().product()],
        )?]
    };
    let images = match args.batch {
        Some(b) => Images::Exactly(b),
        None => Images::UpTo(usize::MAX),
    };
    let (plan, params) = he::plan(&graph, args.packing, images, &calib, args.params.literal()?)?;
    if args.json {
        println!("{}", plan.to_json()?);
        return Ok(());
    }
    println!("{}", he::plan_header(&args.model, &plan));
    println!(
        "batch {} images ({} slots), log2(QP) = {}, max |value| {:.3e}, {}",
        plan.images_per_run(),
        params.slots(),
        params.log_qp(),
        plan.max_abs,
        he::memory_line(&plan)
    );
    he::print_layer_table(&report::rows(&plan.layers, None));
    Ok(())
}
