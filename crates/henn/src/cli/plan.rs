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
    /// Also list every candidate placement of the layout with its op counts per run and cost
    /// on the simulated backend (the planner takes the cheapest).
    #[arg(long)]
    pub candidates: bool,
    /// For a model deeper than one modulus chain: instead of a plan, the bootstraps it needs
    /// with L levels left by each (9 for the `boot` preset), placed greedily on the simulated
    /// run (the executor does not bootstrap yet).
    #[arg(long, value_name = "L")]
    pub bootstrap_levels: Option<usize>,
    /// Slots of the bootstrapping ring for --bootstrap-levels (32768: the `boot` preset,
    /// N = 2^16).
    #[arg(long, default_value_t = 32768, requires = "bootstrap_levels")]
    pub bootstrap_slots: usize,
    /// User-given CKKS parameters.
    #[command(flatten)]
    pub params: super::he::ParamArgs,
}

/// Runs `henn plan`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let graph = onnx::import_file(&args.model)
        .with_context(|| format!("importing {}", args.model.display()))?;
    let graph = rewrite::simplify(&graph)?;
    if let Some(l) = args.bootstrap_levels {
        let est = henn_nn::plan::bootstrap_estimate_for(
            &graph,
            args.packing,
            l,
            Some(args.bootstrap_slots),
        )?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "model": args.model.display().to_string(),
                    "packing": args.packing.to_string(),
                    "depth": est.depth,
                    "levels_after_bootstrap": est.levels_after,
                    "bootstraps_on_longest_path": est.on_longest_path,
                    "ciphertext_bootstraps": est.ciphertexts,
                    "slots": args.bootstrap_slots,
                    "before": est.before,
                })
            );
        } else {
            println!(
                "{} under {} packing ({} slots): depth {}; with {} levels per bootstrap, {} \
                 bootstraps on the longest path, {} ciphertext bootstraps per run",
                args.model.display(),
                args.packing,
                args.bootstrap_slots,
                est.depth,
                est.levels_after,
                est.on_longest_path,
                est.ciphertexts
            );
            for (node, cts) in &est.before {
                println!("  bootstrap {cts:>4} ciphertexts before {node}");
            }
        }
        return Ok(());
    }
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
        "batch {} images ({} slots), log2(QP) = {}, max |value| {:.3e}, predicted output precision {:.1} bits, {}",
        plan.images_per_run(),
        params.slots(),
        params.log_qp(),
        plan.max_abs,
        plan.predicted_bits,
        he::memory_line(&plan)
    );
    he::print_layer_table(&report::rows(&plan.layers, None));
    if args.candidates {
        print_candidates(&graph, &plan)?;
    }
    Ok(())
}

/// One line per candidate placement: ciphertexts of the largest value, op counts of one run
/// (HMulPlain = plaintext products, HMulConst = scalar products, HSquare = squares and
/// products of ciphertexts, relinearizations, rescales, rotations plain + hoisted), cost.
fn print_candidates(graph: &henn_nn::Graph, plan: &henn_nn::plan::Plan) -> anyhow::Result<()> {
    let cands = henn_nn::plan::candidate_costs(
        graph,
        plan.kind(),
        plan.layout.room,
        plan.images_per_run(),
    )?;
    println!(
        "\ncandidate placements ({} slots), op counts per run on the simulated backend:",
        plan.layout.room.slots
    );
    println!(
        "{:>4} {:>6} {:>9} {:>9} {:>8} {:>7} {:>8} {:>7} {:>9}  lanes per conv output",
        "#", "chosen", "mul_pt", "mul_cst", "square", "relin", "rescale", "rot", "cost"
    );
    for (i, c) in cands.iter().enumerate() {
        let lanes: Vec<String> = graph
            .nodes()
            .iter()
            .filter(|n| matches!(n.op, henn_nn::Op::Conv2d(_)))
            .filter_map(|n| c.layout.values.get(n.output).copied().flatten())
            .map(|p| match p.grid() {
                Some(g) if g.k > 1 => format!("{}x{}", g.c, g.k),
                Some(g) => format!("{}", g.c),
                None => "-".into(),
            })
            .collect();
        let chosen = if c.layout == plan.layout { "*" } else { "" };
        let counts = match &c.cost {
            Ok((n, cost)) if cands.len() > 1 => (*n, *cost),
            Ok(_) => (henn_nn::plan::plan_counts(graph, &c.layout)?, 0.0),
            Err(e) => {
                println!("{i:>4} {chosen:>6} does not run: {e}");
                continue;
            }
        };
        let (n, cost) = counts;
        println!(
            "{i:>4} {chosen:>6} {:>9} {:>9} {:>8} {:>7} {:>8} {:>7} {:>9.0}  {}",
            n.mul_plain,
            n.mul_const,
            n.square + n.mul,
            n.relin,
            n.rescale,
            n.rotate + n.rotate_hoisted,
            cost,
            lanes.join(" ")
        );
    }
    Ok(())
}
