//! `henn profile`: the per-layer table (time and share, op counts, level and scale, error
//! against the plaintext reference) for one encrypted batch.

use std::path::PathBuf;

use anyhow::Context;
use henn_nn::pack::LayoutKind;
use henn_nn::plan::Images;
use henn_nn::session::LocalSession;
use henn_nn::{Tensor, onnx, reference, report, rewrite};

use super::he;

/// Arguments of `henn profile`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX model.
    pub model: PathBuf,
    /// Packing layout: batch (one batch of the 16 samples) or channel (one image).
    #[arg(long, default_value = "batch")]
    pub packing: LayoutKind,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Run the batch this many times with the same keys and report the last run (warm
    /// caches: encoded weight plaintexts, allocator pages), as `henn eval` measures.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    /// Images in the batch (batch packing): the samples repeated; more than the slots packs
    /// two per complex slot. Default: the 16 samples.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub images: Option<u64>,
    /// Profile on the first 16 test images of this data set (mnist, fashion-mnist,
    /// cifar10), which also calibrate the parameters; default: the embedded MNIST samples
    /// when they fit the model, else fixed pseudo-random images in [0, 1] (whose activations
    /// can be far larger than real ones, and so the chosen primes).
    #[arg(long)]
    pub dataset: Option<henn_nn::data::DatasetKind>,
    /// Directory holding the data sets (as fetched by scripts/fetch-data.sh).
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// User-given CKKS parameters.
    #[command(flatten)]
    pub params: super::he::ParamArgs,
}

/// Inputs for profiling: the embedded MNIST samples when they fit, else fixed pseudo-random
/// images in [0, 1].
fn inputs(shape: &[usize]) -> anyhow::Result<Vec<Tensor>> {
    let (s, _) = he::samples()?;
    if s.first()
        .is_some_and(|x| reference::input_shape_matches(shape, x.shape()))
    {
        return Ok(s);
    }
    let n: usize = shape.iter().product();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..16)
        .map(|_| {
            let v = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 11) as f64 / (1u64 << 53) as f64
                })
                .collect();
            Ok(Tensor::new(shape.to_vec(), v)?)
        })
        .collect()
}

/// Runs `henn profile`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let graph = onnx::import_file(&args.model)
        .with_context(|| format!("importing {}", args.model.display()))?;
    let graph = rewrite::simplify(&graph)?;
    let samples = match args.dataset {
        Some(_) => he::calibration_images(graph.input_shape(), args.dataset, &args.data_dir)?,
        None => inputs(graph.input_shape())?,
    };
    let images: Vec<Tensor> = match args.images {
        Some(n) => samples.iter().cycle().take(n as usize).cloned().collect(),
        None => samples.clone(),
    };
    // per-layer errors against the reference for small batches (decrypting every layer of a
    // full batch would cost more than the run)
    let compare = images.len() <= samples.len();
    let pool = he::pool(args.threads)?;
    let threads = pool.current_num_threads();
    let (plan, r, run_on, predicted) = pool.install(|| -> anyhow::Result<_> {
        let (plan, params) = he::plan(
            &graph,
            args.packing,
            Images::Exactly(images.len()),
            &samples,
            args.params.literal()?,
        )?;
        // one run: as many images as the layout packs (the others only calibrate)
        let run_on = &images[..plan.images_per_run().min(images.len())];
        let session = LocalSession::new(&graph, &plan)?;
        let mut r = session.run(run_on, compare)?;
        for _ in 1..args.repeat {
            r = session.run(run_on, compare)?;
        }
        // the errors CKKS's noise model predicts, beside the measured ones
        let predicted = if compare {
            Some(henn_nn::plan::predicted_layer_errors(
                &graph,
                &plan.layout,
                &params,
                run_on,
            )?)
        } else {
            None
        };
        Ok((plan, r, run_on, predicted))
    })?;
    let images = run_on;
    let rows = report::rows(&r.layers, r.layer_errors.as_deref());
    let rows = match &predicted {
        Some(p) => report::with_predicted(rows, p),
        None => rows,
    };
    if args.json {
        let doc = serde_json::json!({
            "model": args.model.display().to_string(), "packing": args.packing.name(), "threads": threads,
            "images": images.len(), "repeat": args.repeat, "params": plan.params, "depth": plan.depth, "rotations": plan.rotations,
            "timings": r.timings, "layers": rows, "total": report::total_counts(&r.layers),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{} with {} packing, run {} of {} ({} images{}), {threads} threads",
        args.model.display(),
        args.packing,
        args.repeat,
        args.repeat,
        images.len(),
        args.dataset
            .map(|d| format!(" of the {d} test set"))
            .unwrap_or_default()
    );
    println!("parameters: {}", he::params_line(&plan));
    he::print_layer_table(&rows);
    let t = &r.timings;
    println!(
        "total: encrypted inference {:.3} s; keys {:.2} s, encrypt {:.2} s, decrypt {:.3} s",
        t.eval_s, t.keygen_s, t.encrypt_s, t.decrypt_s
    );
    Ok(())
}
