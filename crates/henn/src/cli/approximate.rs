//! `henn approximate`: replaces a model's non-polynomial activations by polynomials (reference
//! fit, uniform degree fitted per layer, or OLA degrees under a cost budget) and writes the
//! approximated ONNX model. The algorithms live in `henn_nn::approx`.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, bail};
use henn_nn::approx::{self, Budget, Method};
use henn_nn::data::{self, DatasetKind};
use henn_nn::{Tensor, onnx, reference, rewrite};

/// Arguments of `henn approximate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX model.
    pub model: PathBuf,
    /// Where to write the approximated ONNX model.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Calibration data: DATASET:N, the first N images of the data set's training split
    /// (e.g. mnist:256).
    #[arg(long)]
    pub calib: Option<Calib>,
    /// The reference papers' fit on [-R, R] (least squares on 1001 evenly spaced points) in
    /// every layer, of --degree D; needs no calibration.
    #[arg(long, requires = "degree", conflicts_with_all = ["uniform", "ola"])]
    pub range: Option<f64>,
    /// Degree for --range.
    #[arg(long)]
    pub degree: Option<usize>,
    /// The same degree D in every layer, each fitted to its layer's input distribution.
    #[arg(long, conflicts_with = "ola")]
    pub uniform: Option<usize>,
    /// OLA: per-layer degrees from --degrees by dynamic programming within --budget.
    #[arg(long, requires = "budget")]
    pub ola: bool,
    /// OLA's budget: a cost in planner units, or uniform:D for the cost of degree D in every
    /// layer (OLA at matched cost).
    #[arg(long)]
    pub budget: Option<BudgetArg>,
    /// OLA's candidate degrees.
    #[arg(long, value_delimiter = ',', default_value = "2,3,4,5,6,7,8")]
    pub degrees: Vec<usize>,
    /// OLA for a network deeper than one modulus chain: L levels left by a bootstrap (9 for
    /// the `boot` preset); each level a polynomial consumes then costs 1/L of a bootstrap of
    /// its ciphertexts in the budget.
    #[arg(long, requires = "ola")]
    pub bootstrap_levels: Option<usize>,
    /// Range factor r >= 1: the fits see the calibration inputs times r (more weight on the
    /// tails, for inputs beyond the calibration range).
    #[arg(long, default_value_t = 1.0)]
    pub range_factor: f64,
    /// Plaintext accuracy of the original and approximated models on the first N test images.
    #[arg(long)]
    pub eval: Option<usize>,
    /// Directory holding the data sets (as fetched by scripts/fetch-data.sh).
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `DATASET:N`.
#[derive(Debug, Clone, Copy)]
pub struct Calib {
    kind: DatasetKind,
    n: usize,
}

impl FromStr for Calib {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (d, n) = s
            .split_once(':')
            .ok_or_else(|| format!("'{s}': expected DATASET:N, e.g. mnist:256"))?;
        let n: usize = n
            .parse()
            .map_err(|_| format!("'{n}' is not a number of images"))?;
        if n == 0 {
            return Err("calibrate on at least one image".into());
        }
        Ok(Calib {
            kind: d.parse()?,
            n,
        })
    }
}

/// `--budget`: a cost or `uniform:D`.
#[derive(Debug, Clone, Copy)]
pub struct BudgetArg(Budget);

impl FromStr for BudgetArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(d) = s.strip_prefix("uniform:") {
            let d: usize = d.parse().map_err(|_| format!("'{d}' is not a degree"))?;
            return Ok(BudgetArg(Budget::UniformDegree(d)));
        }
        let c: f64 = s
            .parse()
            .map_err(|_| format!("'{s}': expected a cost or uniform:D"))?;
        Ok(BudgetArg(Budget::Cost(c)))
    }
}

/// Runs `henn approximate`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let method = match (args.range, args.uniform, args.ola) {
        (Some(range), None, false) => Method::Reference {
            range,
            degree: args.degree.context("--range needs --degree")?,
        },
        (None, Some(degree), false) => Method::Uniform { degree },
        (None, None, true) => Method::Ola {
            degrees: args.degrees.clone(),
            budget: args.budget.context("--ola needs --budget")?.0,
            bootstrap_levels: args.bootstrap_levels,
        },
        _ => bail!("choose one method: --range R --degree D, --uniform D or --ola --budget B"),
    };
    let bytes =
        std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let graph = onnx::import_file(&args.model)
        .with_context(|| format!("importing {}", args.model.display()))?;
    let (calib, labels): (Vec<Tensor>, Vec<Option<usize>>) = match args.calib {
        Some(c) => {
            let set = data::load_train_split(c.kind, &args.data_dir, c.n)?;
            let mut xs = Vec::with_capacity(set.len());
            let mut ls = Vec::with_capacity(set.len());
            for i in 0..set.len() {
                xs.push(set.image(i).context("calibration image")?);
                ls.push(set.label(i).map(usize::from));
            }
            (xs, ls)
        }
        None => (Vec::new(), Vec::new()),
    };
    let spin = super::he::spinner("fitting the activations");
    let (approximated, choices) =
        approx::approximate(&graph, &calib, &labels, &method, args.range_factor)?;
    spin.finish_and_clear();
    let reps = approx::onnx_replacements(&graph, &choices)?;
    let out = onnx::edit::replace_with_polynomials(&bytes, &reps)?;
    // what is written must import and compute what the approximated graph computes
    let check = rewrite::simplify(&onnx::import_bytes(&out)?)?;
    if let Some(x) = calib.first() {
        let (a, b) = (
            reference::run(&approximated, x)?,
            reference::run(&check, x)?,
        );
        let scale = a.data().iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        let err = a
            .data()
            .iter()
            .zip(b.data())
            .fold(0.0f64, |m, (u, v)| m.max((u - v).abs()));
        if err > 1e-4 * scale {
            let top = choices.iter().map(|c| c.fit.degree).max().unwrap_or(0);
            bail!(
                "the written model differs from the approximated graph by {err:e} (largest \
                 output {scale:e}, highest degree {top}): the float32 Chebyshev coefficients \
                 of the file do not hold these fits; choose lower degrees (--uniform, \
                 --degrees) or a smaller range factor"
            );
        }
    }
    std::fs::write(&args.output, &out)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let accuracy = match (args.eval, args.calib) {
        (Some(n), Some(c)) => {
            let set = data::load_test_split(c.kind, &args.data_dir)?.truncated(n);
            let before = super::eval::plain_eval(&graph, &set)?;
            let after = super::eval::plain_eval(&approximated, &set)?;
            let frac = |k: usize| k as f64 / before.n.max(1) as f64;
            Some((before.n, frac(before.correct), frac(after.correct)))
        }
        (Some(_), None) => bail!("--eval needs --calib to know the data set"),
        _ => None,
    };
    let total_cost: f64 = choices.iter().map(|c| c.cost).sum();
    if args.json {
        let layers: Vec<_> = choices
            .iter()
            .map(|c| {
                serde_json::json!({
                    "node": c.node, "activation": format!("{:?}", c.fit.activation),
                    "degree": c.fit.degree, "interval": [c.fit.interval.0, c.fit.interval.1],
                    "coeffs": c.fit.coeffs, "fit_rms_error": c.fit.rms_error,
                    "calib_rms_error": if c.calib_rms.is_nan() { None } else { Some(c.calib_rms) },
                    "influence": c.influence, "cost": c.cost, "depth": c.depth,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "model": args.model.display().to_string(), "output": args.output.display().to_string(),
            "method": format!("{method:?}"), "range_factor": args.range_factor,
            "calibration_images": calib.len(), "layers": layers, "total_cost": total_cost,
            "max_depth": choices.iter().map(|c| c.depth).max(),
            "eval": accuracy.map(|(n, a, b)| serde_json::json!({"images": n, "original": a, "approximated": b})),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{} -> {} ({method:?}, range factor {}, {} calibration images)",
        args.model.display(),
        args.output.display(),
        args.range_factor,
        calib.len()
    );
    println!(
        "{:<28} {:<8} {:>6} {:>22} {:>11} {:>11} {:>10} {:>10}",
        "layer", "act", "degree", "interval", "fit rms", "calib rms", "influence", "cost"
    );
    for c in &choices {
        println!(
            "{:<28} {:<8} {:>6} {:>22} {:>11.3e} {:>11.3e} {:>10} {:>10.1}",
            c.node,
            format!("{:?}", c.fit.activation),
            c.fit.degree,
            format!("[{:.3}, {:.3}]", c.fit.interval.0, c.fit.interval.1),
            c.fit.rms_error,
            c.calib_rms,
            c.influence.map_or("-".into(), |a| format!("{a:.3e}")),
            c.cost
        );
    }
    println!(
        "total cost {total_cost:.1} (planner units), deepest polynomial {} levels",
        choices.iter().map(|c| c.depth).max().unwrap_or(0)
    );
    if let Some((n, a, b)) = accuracy {
        println!("plaintext accuracy on {n} test images: original {a:.4}, approximated {b:.4}");
    }
    Ok(())
}
