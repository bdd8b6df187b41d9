//! The client/server split as files: `henn compile` (model -> client and server artifacts),
//! `henn keygen` (client: secret key + evaluation keys), `henn encrypt` (client: images ->
//! query), `henn infer` (server: evaluation keys + query -> result), `henn decrypt` (client:
//! result -> logits). Parsing and printing only; the work is in `henn_nn::session`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use henn_ckks::serial::Limits;
use henn_nn::pack::LayoutKind;
use henn_nn::plan::Images;
use henn_nn::session::artifact;
use henn_nn::session::{EvaluationKeys, PackedCiphertexts, Query, Server};
use henn_nn::{data, onnx, rewrite};

use super::he;

/// Arguments of `henn compile`.
#[derive(Debug, clap::Args)]
pub struct CompileArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Packing layout: batch or channel.
    #[arg(long, default_value = "channel")]
    pub packing: LayoutKind,
    /// Images per run for batch packing (default: as many as the smallest ring holds).
    #[arg(long)]
    pub images: Option<usize>,
    /// Calibrate value magnitudes on the first 16 test images of this data set (default: the
    /// embedded MNIST samples, when they fit the model).
    #[arg(long)]
    pub dataset: Option<data::DatasetKind>,
    /// Directory holding the data sets.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// User-given CKKS parameters.
    #[command(flatten)]
    pub params: he::ParamArgs,
    /// Output directory (gets `client/` and `server/`).
    #[arg(short, long)]
    pub out: PathBuf,
}

/// Arguments of `henn keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// The client artifact (`DIR/client` of `henn compile`, or `DIR`).
    pub client: PathBuf,
    /// Key directory to write (secret.key, eval.keys, client.json).
    #[arg(short, long)]
    pub out: PathBuf,
}

/// Arguments of `henn encrypt`.
#[derive(Debug, clap::Args)]
pub struct EncryptArgs {
    /// The key directory of `henn keygen`.
    pub keys: PathBuf,
    /// Images (PNG, PGM, .npy) of the model's input size; at most the plan's images per run.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// The query file to write.
    #[arg(short, long)]
    pub out: PathBuf,
}

/// Arguments of `henn infer`.
#[derive(Debug, clap::Args)]
pub struct InferArgs {
    /// The server artifact (`DIR/server` of `henn compile`, or `DIR`).
    pub server: PathBuf,
    /// The client's evaluation-key bundle (`KEYS/eval.keys`); a secret key is refused.
    #[arg(long)]
    pub eval_keys: PathBuf,
    /// The query of `henn encrypt`.
    pub query: PathBuf,
    /// The result file to write.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Arguments of `henn decrypt`.
#[derive(Debug, clap::Args)]
pub struct DecryptArgs {
    /// The key directory of `henn keygen`.
    pub keys: PathBuf,
    /// The result of `henn infer`.
    pub result: PathBuf,
    /// Add Gaussian noise of standard deviation 2^BITS to the decryption (noise flooding,
    /// IND-CPA-D): for results that will be shared with the server or others.
    #[arg(long)]
    pub flood: Option<u32>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / f64::from(1u32 << 20))
}

fn read_limited(path: &PathBuf, limit: usize) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > limit as u64 {
        bail!(
            "{} is {len} bytes, more than the limit of {limit}",
            path.display()
        );
    }
    Ok(std::fs::read(path)?)
}

/// Runs `henn compile`.
pub fn compile(args: CompileArgs) -> anyhow::Result<()> {
    let onnx_bytes = read_limited(&args.model, onnx::MAX_MODEL_BYTES as usize)?;
    let mut graph = rewrite::simplify(
        &onnx::import_bytes(&onnx_bytes)
            .with_context(|| format!("importing {}", args.model.display()))?,
    )?;
    if let Some(stem) = args.model.file_stem() {
        graph.set_name(stem.to_string_lossy());
    }
    let calib = he::calibration_images(graph.input_shape(), args.dataset, &args.data_dir)?;
    let images = match args.images {
        Some(n) => Images::Exactly(n),
        None => Images::UpTo(usize::MAX),
    };
    let spin = he::spinner("planning (depth, magnitudes under the layout, parameters)");
    let (plan, params) = he::plan(&graph, args.packing, images, &calib, args.params.literal()?)?;
    spin.finish_and_clear();
    let (client, server) = artifact::write_compiled(&args.out, &onnx_bytes, &plan)?;
    println!("{}", he::plan_header(&args.model, &plan));
    println!(
        "{} images per run ({} slots), plan fingerprint {}",
        plan.images_per_run(),
        params.slots(),
        plan.fingerprint
    );
    let out_level = plan.layers.last().map_or(0, |l| l.level);
    println!(
        "wire sizes: evaluation keys {}, query {}, result {}",
        mib(henn_nn::session::wire::evaluation_keys_size(&params, &plan)? as u64),
        mib(henn_nn::session::wire::query_size(&params, plan.layout.input.ciphertexts) as u64),
        mib(
            henn_nn::session::wire::packed_size(&params, out_level, plan.layout.output.ciphertexts)
                as u64
        )
    );
    println!(
        "client artifact (plan only, no weights): {}",
        client.display()
    );
    println!(
        "server artifact (model + plan):          {}",
        server.display()
    );
    Ok(())
}

/// Runs `henn keygen`.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let a = artifact::read_client(&args.client)?;
    let spin = he::spinner("generating keys");
    let start = Instant::now();
    let files = artifact::write_key_dir(&args.out, &a)?;
    spin.finish_and_clear();
    println!(
        "keys for {} (plan {}) in {:.2} s:",
        a.model,
        &a.plan_fingerprint[..16],
        start.elapsed().as_secs_f64()
    );
    println!(
        "  {}  secret key (mode 0600; never share it)",
        files.secret.display()
    );
    println!(
        "  {}  evaluation keys for the server: relinearization + {} rotation keys, {}",
        files.eval.display(),
        a.plan.rotations.len(),
        mib(files.eval_bytes)
    );
    Ok(())
}

/// Runs `henn encrypt`.
pub fn encrypt(args: EncryptArgs) -> anyhow::Result<()> {
    let (a, client) = artifact::read_key_dir(&args.keys)?;
    let images = args
        .images
        .iter()
        .map(|p| data::read_input(p, &a.input.shape))
        .collect::<Result<Vec<_>, _>>()?;
    if images.len() > a.plan.images_per_run() {
        bail!(
            "{} images, but the plan packs at most {} per query: encrypt them in several queries",
            images.len(),
            a.plan.images_per_run()
        );
    }
    let q = client.encrypt_query(&images)?.to_bytes()?;
    std::fs::write(&args.out, &q).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{} image(s) encrypted into {} ({})",
        images.len(),
        args.out.display(),
        mib(q.len() as u64)
    );
    Ok(())
}

/// Runs `henn infer`.
pub fn infer(args: InferArgs) -> anyhow::Result<()> {
    let pool = he::pool(args.threads)?;
    let model = artifact::read_server(&args.server)?;
    let server = Server::new(Arc::new(model.graph), model.plan)?;
    let (params, fp) = (server.params().clone(), server.plan().fingerprint.clone());
    let limits = Limits::default();
    let keys = read_limited(&args.eval_keys, limits.max_bytes)?;
    let keys = EvaluationKeys::from_bytes(&params, &fp, &keys, &limits)
        .with_context(|| format!("reading {}", args.eval_keys.display()))?;
    let session = server.session(keys)?;
    let query = read_limited(&args.query, limits.max_bytes)?;
    let query = Query::read(&params, &fp, &query, &limits)
        .with_context(|| format!("reading {}", args.query.display()))?;
    let spin = he::spinner("encrypted inference");
    let run = pool.install(|| session.run(query))?;
    spin.finish_and_clear();
    let out = run.output.to_bytes()?;
    std::fs::write(&args.out, &out).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{}: encrypted inference of {} image(s) in {:.3} s; result {} ({})",
        model.name,
        run.output.images,
        run.eval_s,
        args.out.display(),
        mib(out.len() as u64)
    );
    Ok(())
}

/// Runs `henn decrypt`.
pub fn decrypt(args: DecryptArgs) -> anyhow::Result<()> {
    let (a, client) = artifact::read_key_dir(&args.keys)?;
    let limits = Limits::default();
    let bytes = read_limited(&args.result, limits.max_bytes)?;
    let out = PackedCiphertexts::from_bytes(client.params(), &a.plan_fingerprint, &bytes, &limits)
        .with_context(|| format!("reading {}", args.result.display()))?;
    let logits = match args.flood {
        Some(bits) => client.decrypt_flooded(&out, bits)?,
        None => client.decrypt(&out)?,
    };
    he::print_predictions(&a.model, "encrypted", &logits, None, args.json)
}
