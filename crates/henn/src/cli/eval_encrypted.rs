//! `henn eval` without `--plain`: encrypted inference over a data set's test split, compared
//! with the plaintext reference (accuracy, agreement of top-1, latency, throughput).

use std::time::Instant;

use anyhow::{Context, bail};
use henn_nn::data;
use henn_nn::pack::LayoutKind;
use henn_nn::plan::Images;
use henn_nn::session::LocalSession;
use henn_nn::{Tensor, onnx, reference, rewrite};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::eval::Args;
use super::he;

fn top1(v: &[f64]) -> Option<usize> {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

/// Runs the encrypted evaluation.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let packing = args.packing.unwrap_or(LayoutKind::Batch);
    let graph = onnx::import_file(&args.model)
        .with_context(|| format!("importing {}", args.model.display()))?;
    let graph = rewrite::simplify(&graph)?;
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
    let n = set.len();
    if n == 0 {
        bail!("no test images");
    }
    let images: Vec<Tensor> = (0..n)
        .map(|i| set.image(i).context("image index out of range"))
        .collect::<anyhow::Result<_>>()?;
    let pool = he::pool(args.threads)?;
    let threads = pool.current_num_threads();
    let plain_logits: Vec<Vec<f64>> = pool.install(|| {
        images
            .par_iter()
            .map(|x| reference::run(&graph, x).map(|o| o.into_data()))
            .collect::<Result<_, _>>()
    })?;
    let plain: Vec<Option<usize>> = plain_logits.iter().map(|o| top1(o)).collect();
    let calib = &images[..n.min(16)];
    let (plan, params) = pool.install(|| {
        he::plan(
            &graph,
            packing,
            Images::UpTo(n),
            calib,
            args.params.literal()?,
        )
    })?;
    let memory = he::memory_line(&plan);
    let batch = plan.images_per_run().max(1);
    let batches = n.div_ceil(batch);
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(batches as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} batches {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("encrypted inference ({batch} images per batch)"));
    let start = Instant::now();
    // one set of keys for the whole run (the first image also fills the plaintext cache)
    let r = pool.install(|| -> anyhow::Result<_> {
        let session = LocalSession::new(&graph, &plan)?;
        Ok(session.run_all(&images, false, |done, _| bar.set_position(done as u64))?)
    })?;
    bar.finish_and_clear();
    let enc: Vec<Option<usize>> = r.outputs.iter().map(|o| top1(o)).collect();
    let eval_s = r.timings.eval_s;
    let client_s = r.timings.keygen_s + r.timings.encrypt_s + r.timings.decrypt_s;
    let wall = start.elapsed().as_secs_f64();
    let labels = set.labels();
    let frac = |k: usize| k as f64 / n as f64;
    let plain_correct = plain
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == Some(**l as usize))
        .count();
    let enc_correct = enc
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == Some(**l as usize))
        .count();
    let agree = enc.iter().zip(&plain).filter(|(a, b)| a == b).count();
    // precision of the encrypted logits: -log2(max |enc - plain| / max |plain|) per image
    let mut bits: Vec<f64> = r
        .outputs
        .iter()
        .zip(&plain_logits)
        .map(|(e, p)| henn_nn::report::logit_bits(e, p))
        .collect();
    bits.sort_by(f64::total_cmp);
    let bits_min = bits.first().copied().unwrap_or(0.0);
    let bits_median = bits.get(bits.len() / 2).copied().unwrap_or(0.0);
    let latency_batch = eval_s / batches as f64;
    let throughput = n as f64 / eval_s * 3600.0;
    // a layout that packs several images per run can fill every value slot of this plan
    // with one (two per complex slot when the plan pairs them, at the paired latency)
    let capacity = packing
        .rules()
        .images_per_run(usize::MAX, params.slots())
        .min(plan.layout.value_slots());
    let full_throughput = (capacity > 1).then(|| capacity as f64 / latency_batch * 3600.0);
    if args.json {
        let doc = serde_json::json!({
            "model": args.model.display().to_string(), "dataset": args.dataset.name(), "packing": packing.name(),
            "n": n, "plain_accuracy": frac(plain_correct), "encrypted_accuracy": frac(enc_correct), "agreement": frac(agree),
            "logit_bits_min": bits_min, "logit_bits_median": bits_median, "predicted_logit_bits": plan.predicted_bits,
            "latency_s_per_image": eval_s / n as f64, "latency_s_per_batch": latency_batch, "batch_size": batch, "batches": batches,
            "throughput_images_per_hour": throughput, "throughput_full_batch_images_per_hour": full_throughput,
            "client_s": client_s, "wall_s": wall, "threads": threads, "params": plan.params, "depth": plan.depth, "peak_ciphertext_bytes": plan.peak_bytes,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{} on {} test ({n} images), encrypted with {packing} packing, {threads} threads",
        args.model.display(),
        args.dataset
    );
    println!(
        "parameters: {} ({} slots), {memory}",
        he::params_line(&plan),
        params.slots()
    );
    println!(
        "plain accuracy      {:.4} ({plain_correct}/{n})",
        frac(plain_correct)
    );
    println!(
        "encrypted accuracy  {:.4} ({enc_correct}/{n})",
        frac(enc_correct)
    );
    println!("agreement (top-1)   {:.4} ({agree}/{n})", frac(agree));
    println!(
        "logit precision     {bits_min:.1} bits min, {bits_median:.1} median (-log2 of the largest error relative to the largest plaintext logit; the plan predicted {:.1})",
        plan.predicted_bits
    );
    match full_throughput {
        Some(full) => println!(
            "latency {latency_batch:.2} s per batch of up to {batch} images ({batches} batches); throughput {throughput:.0} images/hour ({full:.0} images/hour with full {capacity}-image batches)"
        ),
        None => println!(
            "latency {:.3} s per image ({n} images); throughput {throughput:.0} images/hour",
            eval_s / n as f64
        ),
    }
    println!("client side (keys, encryption, decryption): {client_s:.2} s; wall {wall:.2} s");
    Ok(())
}
