//! `henn run`: the whole pipeline on the embedded sample images with the embedded default
//! model: keys, encryption, encrypted inference (batch packing: slot i = image i),
//! decryption, and a table of predictions, labels and timings. No download needed.

use henn_nn::exec::pipeline;
use henn_nn::pack::LayoutKind;
use henn_nn::reference;

use super::he;

/// Arguments of `henn run`.
#[derive(Debug, clap::Args)]
pub struct Args {
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
    let (plan, params, r) = pool.install(|| -> anyhow::Result<_> {
        let (plan, params) = he::plan(&graph, LayoutKind::Batch, images.len(), &images)?;
        let r = pipeline::run_batch(&graph, &plan, &params, &images, false)?;
        Ok((plan, params, r))
    })?;
    let plain: Vec<Option<usize>> = images
        .iter()
        .map(|x| reference::run(&graph, x).map(|o| o.argmax()))
        .collect::<Result<_, _>>()?;
    let enc: Vec<Option<usize>> = r
        .outputs
        .iter()
        .map(|o| {
            o.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
        })
        .collect();
    let t = &r.timings;
    if args.json {
        let rows: Vec<_> = (0..images.len())
            .map(|i| serde_json::json!({"image": i, "label": labels[i], "plain_top1": plain[i], "encrypted_top1": enc[i], "logits": r.outputs[i]}))
            .collect();
        let doc = serde_json::json!({
            "model": he::DEFAULT_MODEL_NAME, "packing": "batch", "threads": threads,
            "params": plan.params, "depth": plan.depth, "timings": t, "predictions": rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "henn run: {} on {} embedded MNIST test images, encrypted with CKKS (batch packing, slot i = image i)",
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
    println!(
        "timings ({threads} threads): keys {:.2} s, encrypt {:.2} s, encrypted inference {:.2} s (one batch), decrypt {:.3} s",
        t.keygen_s, t.encrypt_s, t.eval_s, t.decrypt_s
    );
    Ok(())
}
