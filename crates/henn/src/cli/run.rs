//! `henn run`: the whole pipeline on the embedded sample images with the embedded default
//! model: keys, encryption, encrypted inference (batch packing: slot i = image i, one batch;
//! channel packing: one ciphertext per channel, image by image with one set of keys),
//! decryption, and a table of predictions, labels and timings. No download needed.

use henn_nn::pack::LayoutKind;
use henn_nn::plan::Images;
use henn_nn::reference;
use henn_nn::session::LocalSession;

use super::he;

/// Arguments of `henn run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Packing layout: batch (all samples in one batch) or channel (one image at a time).
    #[arg(long, default_value = "batch")]
    pub packing: LayoutKind,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `henn run`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let graph = he::load_model_bytes(he::DEFAULT_MODEL, he::DEFAULT_MODEL_NAME)?;
    let (images, labels) = he::samples()?;
    let pool = he::pool(args.threads)?;
    let threads = pool.current_num_threads();
    let packing = args.packing;
    let (plan, params, outputs, t) = pool.install(|| -> anyhow::Result<_> {
        let (plan, params) = he::plan(
            &graph,
            packing,
            Images::Exactly(images.len()),
            &images,
            None,
        )?;
        let session = LocalSession::new(&graph, &plan)?;
        let r = session.run_all(&images, false, |_, _| {})?;
        Ok((plan, params, r.outputs, r.timings))
    })?;
    let plain: Vec<Option<usize>> = images
        .iter()
        .map(|x| reference::run(&graph, x).map(|o| o.argmax()))
        .collect::<Result<_, _>>()?;
    let enc: Vec<Option<usize>> = outputs
        .iter()
        .map(|o| {
            o.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
        })
        .collect();
    let t = &t;
    if args.json {
        let rows: Vec<_> = (0..images.len())
            .map(|i| serde_json::json!({"image": i, "label": labels[i], "plain_top1": plain[i], "encrypted_top1": enc[i], "logits": outputs[i]}))
            .collect();
        let doc = serde_json::json!({
            "model": he::DEFAULT_MODEL_NAME, "packing": packing.name(), "threads": threads,
            "params": plan.params, "depth": plan.depth, "timings": t, "predictions": rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let how = packing.describe();
    println!(
        "henn run: {} on {} embedded MNIST test images, encrypted with CKKS ({how})",
        he::DEFAULT_MODEL_NAME,
        images.len()
    );
    println!(
        "parameters: {} ({} slots, 128-bit security)",
        he::params_line(&plan),
        params.slots()
    );
    println!();
    println!(
        "{:>5} {:>5} {:>10} {:>10} {:>6}",
        "image", "label", "plaintext", "encrypted", "match"
    );
    let mut correct = 0;
    let mut agree = 0;
    for i in 0..images.len() {
        let ok = plain[i] == enc[i];
        agree += usize::from(ok);
        correct += usize::from(enc[i] == Some(labels[i] as usize));
        let show = |v: Option<usize>| v.map_or_else(|| "-".into(), |c| c.to_string());
        println!(
            "{:>5} {:>5} {:>10} {:>10} {:>6}",
            i,
            labels[i],
            show(plain[i]),
            show(enc[i]),
            if ok { "yes" } else { "NO" }
        );
    }
    println!();
    println!(
        "encrypted accuracy {correct}/{}, encrypted top-1 = plaintext top-1 for {agree}/{}",
        images.len(),
        images.len()
    );
    let what = if plan.images_per_run() > 1 {
        format!(
            "{} run(s) of up to {} images",
            images.len().div_ceil(plan.images_per_run()),
            plan.images_per_run()
        )
    } else {
        format!("{:.3} s per image", t.eval_s / images.len().max(1) as f64)
    };
    println!(
        "timings ({threads} threads): keys {:.2} s, encrypt {:.2} s, encrypted inference {:.2} s ({what}), decrypt {:.3} s",
        t.keygen_s, t.encrypt_s, t.eval_s, t.decrypt_s
    );
    Ok(())
}
