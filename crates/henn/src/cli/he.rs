//! Shared helpers for the encrypted subcommands (`run`, `eval`, `profile`): embedded sample
//! images and default model, planning, and the per-layer table.

use std::sync::Arc;

use anyhow::{Context, bail};
use henn_ckks::CkksParams;
use henn_nn::pack::LayoutKind;
use henn_nn::plan::{Images, Plan, PlanOptions, make_plan};
use henn_nn::report::LayerRow;
use henn_nn::{Graph, Tensor, rewrite};

/// The default model, embedded so `henn run` works from any directory.
pub const DEFAULT_MODEL: &[u8] = include_bytes!("../../../../models/mnist_cnn3_square.onnx");
/// Name of the default model.
pub const DEFAULT_MODEL_NAME: &str = "mnist_cnn3_square";

/// The first 16 MNIST test images (binary PGM) with their labels.
pub const SAMPLES: [(&[u8], u8); 16] = [
    (
        include_bytes!("../../../../models/samples/mnist_test_0000_label7.pgm"),
        7,
    ),
    (
        include_bytes!("../../../../models/samples/mnist_test_0001_label2.pgm"),
        2,
    ),
    (
        include_bytes!("../../../../models/samples/mnist_test_0002_label1.pgm"),
        1,
    ),
    (
        include_bytes!("../../../../models/samples/mnist_test_0003_label0.pgm"),
        0,
    ),
    (
        include_bytes!("../../../../models/samples/mnist_test_0004_label4.pgm"),
        4,
    ),
    (
        include_bytes!("../../../../models/samples/mnist_test_0005_label1.pgm"),
        1,
    ),
    (
        include_bytes!("../../../../models/samples/mnist_test_0006_label4.pgm"),
        4,
    ),
    (
        include_bytes!("../../../../models/samples/mnist_test_0007_label9.pgm"),
        9,
    ),
    (
        include_bytes!("../../../../models/samples/mnist_test_0008_label5.pgm"),
        5,
    ),
    (
        include_bytes!("../../../../models/samples/mnist_test_0009_label9.pgm"),
        9,
    ),
    (
        include_bytes!("../../../../models/samples/mnist_test_0010_label0.pgm"),
        0,
    ),
    (
        include_bytes!("../../../../models/samples/mnist_test_0011_label6.pgm"),
        6,
    ),
    (
        include_bytes!("../../../../models/samples/mnist_test_0012_label9.pgm"),
        9,
    ),
    (
        include_bytes!("../../../../models/samples/mnist_test_0013_label0.pgm"),
        0,
    ),
    (
        include_bytes!("../../../../models/samples/mnist_test_0014_label1.pgm"),
        1,
    ),
    (
        include_bytes!("../../../../models/samples/mnist_test_0015_label5.pgm"),
        5,
    ),
];

/// Parses a binary PGM (P5, maxval 255) into pixels / 255 with shape `[1, 1, h, w]`.
pub fn parse_pgm(bytes: &[u8]) -> anyhow::Result<Tensor> {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 && i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(std::str::from_utf8(&bytes[start..i])?.to_string());
    }
    i += 1; // the single whitespace after maxval
    if fields.first().map(String::as_str) != Some("P5") || fields.len() < 4 {
        bail!("not a binary PGM (P5) image");
    }
    let w: usize = fields[1].parse()?;
    let h: usize = fields[2].parse()?;
    let data = bytes.get(i..i + w * h).context("PGM image truncated")?;
    Ok(Tensor::new(
        vec![1, 1, h, w],
        data.iter().map(|&b| f64::from(b) / 255.0).collect(),
    )?)
}

/// The embedded sample images and labels.
pub fn samples() -> anyhow::Result<(Vec<Tensor>, Vec<u8>)> {
    let mut imgs = Vec::new();
    let mut labels = Vec::new();
    for (b, l) in SAMPLES {
        imgs.push(parse_pgm(b)?);
        labels.push(l);
    }
    Ok((imgs, labels))
}

/// Imports and simplifies a model from bytes.
pub fn load_model_bytes(bytes: &[u8], name: &str) -> anyhow::Result<Graph> {
    let g = henn_nn::onnx::import_bytes(bytes).with_context(|| format!("importing {name}"))?;
    Ok(rewrite::simplify(&g)?)
}

/// User-given CKKS parameters (all four flags together), instead of the planner's choice.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ParamArgs {
    /// log2 of the ring degree N (with --q-bits, --p-bits, --log-scale).
    #[arg(long, requires_all = ["q_bits", "p_bits", "log_scale"])]
    pub log_n: Option<u32>,
    /// Data primes in bits, q0 first: e.g. 60,35x8 (x repeats).
    #[arg(long, requires = "log_n")]
    pub q_bits: Option<String>,
    /// Special primes in bits, e.g. 60.
    #[arg(long, requires = "log_n")]
    pub p_bits: Option<String>,
    /// log2 of the scale, e.g. 35.
    #[arg(long, requires = "log_n")]
    pub log_scale: Option<f64>,
}

fn parse_bits(s: &str) -> anyhow::Result<Vec<u32>> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (b, n) = match part.split_once(['x', 'X']) {
            Some((b, n)) => (b, n.parse::<usize>().context("repeat count after x")?),
            None => (part, 1),
        };
        let b: u32 = b
            .parse()
            .with_context(|| format!("prime size '{b}' is not a number of bits"))?;
        v.extend(std::iter::repeat_n(b, n));
    }
    if v.is_empty() {
        bail!("empty list of prime sizes");
    }
    Ok(v)
}

impl ParamArgs {
    /// The literal, when given (checked for 128-bit security by the planner).
    pub fn literal(&self) -> anyhow::Result<Option<henn_ckks::CkksParamsLiteral>> {
        let (Some(log_n), Some(q), Some(p), Some(scale)) =
            (self.log_n, &self.q_bits, &self.p_bits, self.log_scale)
        else {
            return Ok(None);
        };
        Ok(Some(henn_ckks::CkksParamsLiteral {
            log_n,
            q_bits: parse_bits(q)?,
            p_bits: parse_bits(p)?,
            log_scale: scale,
            dnum: None,
            secret: henn_ckks::SecretDistribution::Ternary,
            security: henn_ckks::SecurityPolicy::Enforce { bits: 128 },
        }))
    }
}

/// Physical memory in bytes (Linux `/proc/meminfo`), if known.
fn mem_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The plan's estimated peak ciphertext memory, in GiB, and a warning on stderr when it
/// exceeds this machine's memory (the run would swap or be killed).
pub fn memory_line(plan: &Plan) -> String {
    let gib = plan.peak_bytes as f64 / f64::from(1u32 << 30);
    if let Some(total) = mem_total()
        && plan.peak_bytes > total
    {
        eprintln!(
            "warning: this plan keeps about {gib:.1} GiB of ciphertexts alive at its peak, more than the {:.1} GiB of memory here; expect heavy swapping or an out-of-memory kill (channel packing needs far less)",
            total as f64 / f64::from(1u32 << 30)
        );
    }
    format!("peak ciphertext memory ~{gib:.2} GiB")
}

/// Plans `graph` under `layout` for `images` images per run, measuring value magnitudes on
/// `calib` under the layout that will run, with user-given parameters when there are some.
pub fn plan(
    graph: &Graph,
    layout: LayoutKind,
    images: Images,
    calib: &[Tensor],
    given: Option<henn_ckks::CkksParamsLiteral>,
) -> anyhow::Result<(Plan, Arc<CkksParams>)> {
    let opts = PlanOptions {
        layout,
        images,
        ..PlanOptions::default()
    };
    make_plan(graph, &opts, calib, given).context("planning")
}

/// `MODEL with P packing: <parameters>`.
pub fn plan_header(model: &std::path::Path, plan: &Plan) -> String {
    format!(
        "{} with {} packing: {}",
        model.display(),
        plan.kind(),
        params_line(plan)
    )
}

/// One-line description of the parameters.
pub fn params_line(p: &Plan) -> String {
    format!(
        "N = 2^{}, q = {:?} bits, p = {:?} bits, scale 2^{}, depth {}, {} rotation keys",
        p.params.log_n,
        p.params.q_bits,
        p.params.p_bits,
        p.params.log_scale,
        p.depth,
        p.rotations.len()
    )
}

/// Renders the per-layer table.
pub fn print_layer_table(rows: &[LayerRow]) {
    println!(
        "{:<28} {:<13} {:>9} {:>6} {:>8} {:>7} {:>6} {:>6} {:>6} {:>7} {:>5} {:>5} {:>8} {:>5} {:>7} {:>9} {:>9}",
        "layer",
        "op",
        "time s",
        "share",
        "mul_cst",
        "mul_pt",
        "mul",
        "square",
        "relin",
        "rescale",
        "rot",
        "rot_h",
        "add",
        "level",
        "log2 Δ",
        "max err",
        "predicted"
    );
    for r in rows {
        let c = &r.counts;
        let err = r
            .max_abs_error
            .map_or_else(|| "-".to_string(), |e| format!("{e:.2e}"));
        let predicted = r
            .predicted_error
            .map_or_else(|| "-".to_string(), |e| format!("{e:.2e}"));
        let name: String = r.name.chars().take(28).collect();
        println!(
            "{:<28} {:<13} {:>9.3} {:>5.1}% {:>8} {:>7} {:>6} {:>6} {:>6} {:>7} {:>5} {:>5} {:>8} {:>5} {:>7.2} {:>9} {:>9}",
            name,
            r.op,
            r.time_s,
            100.0 * r.share,
            c.mul_const,
            c.mul_plain,
            c.mul,
            c.square,
            c.relin,
            c.rescale,
            c.rotate,
            c.rotate_hoisted,
            c.add,
            r.level,
            r.log2_scale,
            err,
            predicted
        );
    }
}

/// Builds a rayon pool with `threads` workers (0 or none: all cores).
pub fn pool(threads: Option<usize>) -> anyhow::Result<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()?)
}

/// Calibration images for planning: the first 16 test images of `dataset` when given, else
/// the embedded MNIST samples when they fit the model's input, else an error asking for a
/// data set.
pub fn calibration_images(
    shape: &[usize],
    dataset: Option<henn_nn::data::DatasetKind>,
    data_dir: &std::path::Path,
) -> anyhow::Result<Vec<Tensor>> {
    if let Some(kind) = dataset {
        let set = henn_nn::data::load_test_split(kind, data_dir)?.truncated(16);
        return (0..set.len())
            .map(|i| set.image(i).context("calibration image"))
            .collect();
    }
    let (s, _) = samples()?;
    if s.first()
        .is_some_and(|x| henn_nn::reference::input_shape_matches(shape, x.shape()))
    {
        return Ok(s);
    }
    bail!(
        "the model's input {shape:?} is not MNIST-sized: pass --dataset (e.g. cifar10) to calibrate value magnitudes on real images"
    )
}

/// A spinner on stderr for work of unknown length (hidden when stderr is not a terminal).
pub fn spinner(msg: &str) -> indicatif::ProgressBar {
    let p = indicatif::ProgressBar::new_spinner();
    p.set_message(msg.to_string());
    p.enable_steady_tick(std::time::Duration::from_millis(120));
    p
}

/// Prints logits and top-1 per image, or the `henn predict --json` document.
pub fn print_predictions(
    model: &str,
    mode: &str,
    logits: &[Vec<f64>],
    inputs: Option<&[String]>,
    json: bool,
) -> anyhow::Result<()> {
    let top1 = |v: &[f64]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
    };
    let name = |i: usize| {
        inputs
            .and_then(|n| n.get(i).cloned())
            .unwrap_or_else(|| format!("image {i}"))
    };
    if json {
        let doc = predictions_json(model, mode, logits, inputs);
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    for (i, l) in logits.iter().enumerate() {
        let v: Vec<String> = l.iter().map(|x| format!("{x:.4}")).collect();
        match top1(l) {
            Some(c) => println!("{}: top1 {c}  logits [{}]", name(i), v.join(", ")),
            None => println!("{}: no output", name(i)),
        }
    }
    Ok(())
}

/// The `henn predict --json` document: model, mode and per input its logits and top-1.
pub fn predictions_json(
    model: &str,
    mode: &str,
    logits: &[Vec<f64>],
    inputs: Option<&[String]>,
) -> serde_json::Value {
    let preds: Vec<_> = logits
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let top1 = l
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i);
            let name = inputs
                .and_then(|n| n.get(i).cloned())
                .unwrap_or_else(|| format!("image {i}"));
            serde_json::json!({"input": name, "logits": l, "top1": top1})
        })
        .collect();
    serde_json::json!({"model": model, "mode": mode, "predictions": preds})
}
