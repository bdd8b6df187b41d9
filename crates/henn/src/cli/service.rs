//! `henn serve` (the HTTP inference service) and `henn client` (its client: keys, session,
//! encryption, inference, decryption). Parsing and printing only; the service is
//! `henn_serve`, the cryptography `henn_nn::session`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use henn_ckks::serial::Limits;
use henn_nn::data;
use henn_nn::session::artifact;
use henn_nn::session::{Client, PackedCiphertexts};
use henn_serve::client::HttpClient;
use henn_serve::{Config, KeyStoreKind};

use super::he;

/// Arguments of `henn serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Server artifacts (`henn compile ... -o DIR` wrote `DIR/server`), one per model.
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// Where sessions live: `memory` (this process) or `redis://host:port/db` (shared by
    /// replicas).
    #[arg(long, default_value = "memory")]
    pub key_store: String,
    /// MiB of evaluation keys held in memory (least recently used sessions are evicted).
    #[arg(long, default_value_t = 4096)]
    pub key_budget_mib: usize,
    /// Seconds a session lives after its last use.
    #[arg(long, default_value_t = 3600)]
    pub session_ttl: u64,
    /// Largest evaluation-key upload, MiB.
    #[arg(long, default_value_t = 1024)]
    pub max_key_mib: usize,
    /// Largest query, MiB.
    #[arg(long, default_value_t = 256)]
    pub max_query_mib: usize,
    /// Inferences (and key uploads being read) at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Requests waiting for a turn beyond which the server answers 503 + Retry-After.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Request timeout, seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// MiB of encoded weight plaintexts cached per model.
    #[arg(long, default_value_t = 512)]
    pub plaintext_cache_mib: usize,
}

/// Arguments of `henn client`.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub server: String,
    /// The model's name (GET /v1/models lists them).
    #[arg(long)]
    pub model: String,
    /// Images (PNG, PGM, .npy) of the model's input size.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Reuse a key directory of `henn keygen` (made for this model's plan) instead of making
    /// fresh keys.
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// Accept a plan whose parameters are below 128-bit security.
    #[arg(long)]
    pub allow_insecure: bool,
    /// Keep the session open (print its id) instead of deleting it at the end.
    #[arg(long)]
    pub keep_session: bool,
    /// Add Gaussian noise of standard deviation 2^BITS to the decryption (noise flooding).
    #[arg(long)]
    pub flood: Option<u32>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

const MIB: usize = 1 << 20;

/// Runs `henn serve`.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let key_store = if args.key_store == "memory" {
        KeyStoreKind::Memory
    } else if args.key_store.starts_with("redis://") || args.key_store.starts_with("rediss://") {
        KeyStoreKind::Redis(args.key_store.clone())
    } else {
        bail!(
            "--key-store: 'memory' or a redis:// URL, not '{}'",
            args.key_store
        );
    };
    let config = Config {
        addr: args.addr,
        models: args.models,
        key_store,
        key_budget_bytes: args.key_budget_mib * MIB,
        session_ttl: Duration::from_secs(args.session_ttl),
        max_key_bytes: args.max_key_mib * MIB,
        max_query_bytes: args.max_query_mib * MIB,
        concurrency: args.concurrency,
        queue: args.queue,
        request_timeout: Duration::from_secs(args.timeout),
        threads: args.threads,
        plaintext_cache_bytes: args.plaintext_cache_mib * MIB,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    eprintln!(
        "henn serve: listening on http://{} (Ctrl-C stops)",
        config.addr
    );
    rt.block_on(henn_serve::serve(config, async {
        let _ = tokio::signal::ctrl_c().await;
    }))?;
    Ok(())
}

/// Runs `henn client`.
pub fn client(args: ClientArgs) -> anyhow::Result<()> {
    let http = HttpClient::new(&args.server);
    let a = http
        .client_artifact(&args.model)
        .with_context(|| format!("fetching the plan of '{}'", args.model))?;
    if a.plan.fingerprint != a.plan_fingerprint || a.plan.verify_fingerprint().is_err() {
        bail!("the server's plan for '{}' is not intact", args.model);
    }
    if !args.allow_insecure
        && !matches!(a.plan.params.security, henn_ckks::SecurityPolicy::Enforce { bits } if bits >= 128)
    {
        bail!(
            "the server's plan for '{}' uses parameters below 128-bit security; pass --allow-insecure to accept them",
            args.model
        );
    }
    let images = args
        .images
        .iter()
        .map(|p| data::read_input(p, &a.input.shape))
        .collect::<Result<Vec<_>, _>>()?;
    let names: Vec<String> = args
        .images
        .iter()
        .map(|p| p.display().to_string())
        .collect();

    let t = Instant::now();
    let spin = he::spinner("keys");
    let (client, bundle) = match &args.keys {
        Some(dir) => {
            let (ka, client) = artifact::read_key_dir(dir)?;
            if ka.plan_fingerprint != a.plan_fingerprint {
                bail!(
                    "the keys in {} are for plan {}, the server's '{}' is {}: make keys for it (henn keygen)",
                    dir.display(),
                    ka.plan_fingerprint,
                    args.model,
                    a.plan_fingerprint
                );
            }
            let bundle = std::fs::read(dir.join(artifact::key_dir::EVAL))?;
            (client, bundle)
        }
        None => {
            let client = Client::new(a.plan.clone())?;
            let bundle = client.evaluation_keys()?.to_bytes()?;
            (client, bundle)
        }
    };
    let keygen_s = t.elapsed().as_secs_f64();
    spin.set_message(format!(
        "uploading {:.1} MiB of evaluation keys",
        bundle.len() as f64 / MIB as f64
    ));
    let t = Instant::now();
    let session = http.open_session(&bundle)?;
    let upload_s = t.elapsed().as_secs_f64();
    spin.set_message("encrypted inference");

    let (mut encrypt_s, mut infer_s, mut decrypt_s, mut server_s) = (0.0, 0.0, 0.0, 0.0);
    let (mut query_bytes, mut result_bytes) = (0usize, 0usize);
    let mut logits = Vec::with_capacity(images.len());
    for chunk in images.chunks(a.plan.images_per_run().max(1)) {
        let t = Instant::now();
        let q = client.encrypt_query(chunk)?.to_bytes()?;
        encrypt_s += t.elapsed().as_secs_f64();
        query_bytes += q.len();
        let t = Instant::now();
        let (r, eval_s) = http.infer(&session.session, &q)?;
        infer_s += t.elapsed().as_secs_f64();
        server_s += eval_s;
        result_bytes += r.len();
        let t = Instant::now();
        let out = PackedCiphertexts::from_bytes(
            client.params(),
            &a.plan_fingerprint,
            &r,
            &Limits::default(),
        )?;
        logits.extend(match args.flood {
            Some(bits) => client.decrypt_flooded(&out, bits)?,
            None => client.decrypt(&out)?,
        });
        decrypt_s += t.elapsed().as_secs_f64();
    }
    spin.finish_and_clear();
    if !args.keep_session {
        http.close_session(&session.session)?;
    }
    if args.json {
        let mut doc = he::predictions_json(&args.model, "encrypted", &logits, Some(&names));
        doc["server"] = serde_json::json!(http.base());
        doc["session"] = serde_json::json!(if args.keep_session {
            Some(&session.session)
        } else {
            None
        });
        doc["timings"] = serde_json::json!({
            "keygen_s": keygen_s, "upload_keys_s": upload_s, "encrypt_s": encrypt_s,
            "infer_round_trip_s": infer_s, "server_eval_s": server_s, "decrypt_s": decrypt_s,
        });
        doc["bytes"] = serde_json::json!({
            "evaluation_keys": bundle.len(), "queries": query_bytes, "results": result_bytes,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    he::print_predictions(&args.model, "encrypted", &logits, Some(&names), false)?;
    let mib = |b: usize| b as f64 / MIB as f64;
    println!(
        "keys {keygen_s:.2} s ({:.2} MiB uploaded in {upload_s:.2} s), encrypt {encrypt_s:.3} s ({:.2} MiB), inference round trip {infer_s:.3} s (server {server_s:.3} s), decrypt {decrypt_s:.3} s ({:.2} MiB)",
        mib(bundle.len()),
        mib(query_bytes),
        mib(result_bytes)
    );
    if args.keep_session {
        println!("session {} kept open", session.session);
    }
    Ok(())
}
