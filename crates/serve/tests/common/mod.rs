//! Shared setup of the service tests: a compiled shipped model, MNIST images and their
//! plaintext reference, server configurations, a client session helper.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use henn_ckks::serial::Limits;
use henn_nn::pack::LayoutKind;
use henn_nn::plan::{Images, Plan, PlanOptions, make_plan};
use henn_nn::session::{Client, PackedCiphertexts, artifact};
use henn_nn::{Graph, Tensor, onnx, reference, rewrite};
use henn_serve::client::HttpClient;
use henn_serve::{Config, KeyStoreKind};

pub const MODEL: &str = "mnist_cnn3_square";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The first `n` committed MNIST test images.
pub fn mnist(n: usize) -> Vec<Tensor> {
    let data = repo().join("crates/nn/tests/data");
    let set = henn_nn::data::read_idx(
        &data.join("mnist-t10k-first100-images-idx3-ubyte"),
        &data.join("mnist-t10k-first100-labels-idx1-ubyte"),
    )
    .unwrap();
    (0..n).map(|i| set.image(i).unwrap()).collect()
}

fn graph() -> Graph {
    let bytes = std::fs::read(repo().join(format!("models/{MODEL}.onnx"))).unwrap();
    let mut g = rewrite::simplify(&onnx::import_bytes(&bytes).unwrap()).unwrap();
    g.set_name(MODEL);
    g
}

/// Plaintext top-1 of each image.
pub fn reference_top1(images: &[Tensor]) -> Vec<usize> {
    let g = graph();
    images
        .iter()
        .map(|x| reference::run(&g, x).unwrap().argmax().unwrap())
        .collect()
}

fn compile(dir: &Path, given: Option<henn_ckks::CkksParamsLiteral>) -> Plan {
    let bytes = std::fs::read(repo().join(format!("models/{MODEL}.onnx"))).unwrap();
    let g = graph();
    let opts = PlanOptions {
        layout: LayoutKind::Channel,
        images: Images::Exactly(1),
        ..PlanOptions::default()
    };
    let (plan, _) = make_plan(&g, &opts, &mnist(16), given).unwrap();
    artifact::write_compiled(dir, &bytes, &plan).unwrap();
    plan
}

/// `DIR/server` of the model compiled with channel packing (once per test binary), and a
/// second plan of it with other (also 128-bit) parameters that no server serves.
pub fn compiled() -> &'static (PathBuf, Plan, Plan) {
    static C: OnceLock<(PathBuf, Plan, Plan)> = OnceLock::new();
    C.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("henn-serve-test-{}", std::process::id()));
        let plan = compile(&dir, None);
        let other = henn_ckks::CkksParamsLiteral {
            log_n: 13,
            q_bits: vec![41, 25, 25, 25, 25, 25],
            p_bits: vec![41],
            log_scale: 25.0,
            dnum: None,
            secret: henn_ckks::SecretDistribution::Ternary,
            security: henn_ckks::SecurityPolicy::Enforce { bits: 128 },
        };
        let other = compile(&dir.join("other"), Some(other));
        assert_ne!(plan.fingerprint, other.fingerprint);
        (dir.join("server"), plan, other)
    })
}

/// A memory-store configuration serving the compiled model on a free loopback port.
pub fn config() -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        models: vec![compiled().0.clone()],
        key_store: KeyStoreKind::Memory,
        key_budget_bytes: 2 << 30,
        session_ttl: Duration::from_secs(600),
        max_key_bytes: 96 << 20,
        max_query_bytes: 4 << 20,
        concurrency: 2,
        queue: 16,
        request_timeout: Duration::from_secs(300),
        threads: Some(2),
        plaintext_cache_bytes: 256 << 20,
    }
}

/// A client with fresh keys for the served model's plan (fetched from the server), and its
/// session.
pub fn open(http: &HttpClient) -> (Client, String) {
    let a = http.client_artifact(MODEL).unwrap();
    let client = Client::new(a.plan).unwrap();
    let keys = client.evaluation_keys().unwrap().to_bytes().unwrap();
    let s = http.open_session(&keys).unwrap();
    assert_eq!(s.model, MODEL);
    (client, s.session)
}

/// Encrypted top-1 of one image through the server.
pub fn infer_top1(http: &HttpClient, client: &Client, session: &str, image: &Tensor) -> usize {
    let q = client
        .encrypt_query(std::slice::from_ref(image))
        .unwrap()
        .to_bytes()
        .unwrap();
    let (r, _) = http.infer(session, &q).unwrap();
    let out = PackedCiphertexts::from_bytes(
        client.params(),
        &client.plan().fingerprint,
        &r,
        &Limits::default(),
    )
    .unwrap();
    let logits = client.decrypt(&out).unwrap();
    Tensor::new(vec![logits[0].len()], logits[0].clone())
        .unwrap()
        .argmax()
        .unwrap()
}
