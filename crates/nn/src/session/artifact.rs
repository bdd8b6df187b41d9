//! Compiled artifacts, as `henn compile` writes them:
//!
//! * `DIR/client/client.json`: what a client needs and nothing more: the plan (CKKS
//!   parameters, layout plan, rotation steps, output map and multiplier; no weights) and the
//!   input preprocessing;
//! * `DIR/server/model.onnx` and `DIR/server/server.json`: the model and the same plan.
//!
//! Both JSON files carry the artifact format version and the plan fingerprint; readers check
//! sizes, versions, that the fingerprint matches the plan's content, and (server) that the
//! model is the one the plan was made for.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{NnError, Result};
use crate::ir::Graph;
use crate::plan::Plan;

/// The artifact format this build writes and reads.
pub const ARTIFACT_FORMAT: u32 = 1;
/// Largest artifact JSON accepted.
const MAX_JSON_BYTES: u64 = 64 << 20;

/// How the client turns an image into the model's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputDescription {
    /// The model's input shape (NCHW, batch 1).
    pub shape: Vec<usize>,
    /// Pixel preprocessing.
    pub pixels: String,
    /// Output values (logits) per image.
    pub outputs: usize,
}

/// The client artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientArtifact {
    /// [`ARTIFACT_FORMAT`].
    pub format: u32,
    /// Model name.
    pub model: String,
    /// The plan's fingerprint.
    pub plan_fingerprint: String,
    /// Input preprocessing.
    pub input: InputDescription,
    /// The plan.
    pub plan: Plan,
}

impl ClientArtifact {
    /// The client artifact of `plan` (what `henn compile` writes and a server hands out).
    pub fn for_plan(plan: &Plan) -> Self {
        ClientArtifact {
            format: ARTIFACT_FORMAT,
            model: plan.model.clone(),
            plan_fingerprint: plan.fingerprint.clone(),
            input: InputDescription {
                shape: plan.layout.input.shape.clone(),
                pixels: "8-bit pixel values / 255, channels first (NCHW)".into(),
                outputs: plan.layout.output.positions.len(),
            },
            plan: plan.clone(),
        }
    }
}

/// The server manifest (`server.json`, beside `model.onnx`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerManifest {
    /// [`ARTIFACT_FORMAT`].
    pub format: u32,
    /// Model name.
    pub model: String,
    /// The plan's fingerprint.
    pub plan_fingerprint: String,
    /// SHA-256 of `model.onnx`.
    pub onnx_sha256: String,
    /// The plan.
    pub plan: Plan,
}

/// A server's model: the simplified graph and its checked plan.
#[derive(Debug)]
pub struct ServerModel {
    /// Model name.
    pub name: String,
    /// The graph (imported and simplified).
    pub graph: Graph,
    /// The plan (checked against the graph by the server that runs it).
    pub plan: Plan,
}

fn bad(path: &Path, detail: impl Into<String>) -> NnError {
    NnError::BadArtifact {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NnError + '_ {
    move |source| NnError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.len() > MAX_JSON_BYTES {
        return Err(bad(
            path,
            format!("{} bytes, more than {MAX_JSON_BYTES}", meta.len()),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(path, format!("not JSON: {e}")))?;
    let format = v.get("format").and_then(serde_json::Value::as_u64);
    if format != Some(u64::from(ARTIFACT_FORMAT)) {
        return Err(bad(
            path,
            format!(
                "artifact format {format:?}, this henn reads {ARTIFACT_FORMAT}: compile the model again (henn compile)"
            ),
        ));
    }
    serde_json::from_value(v).map_err(|e| bad(path, e.to_string()))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| bad(path, e.to_string()))?;
    std::fs::write(path, text).map_err(io(path))
}

/// Checks the fingerprint fields of an artifact against its plan.
fn check_plan(path: &Path, fp: &str, plan: &Plan) -> Result<()> {
    plan.verify_fingerprint()?;
    if fp != plan.fingerprint {
        return Err(bad(
            path,
            format!(
                "plan_fingerprint {fp} is not the plan's ({})",
                plan.fingerprint
            ),
        ));
    }
    Ok(())
}

/// Writes `DIR/client` and `DIR/server` for a model (its ONNX bytes) and its plan.
pub fn write_compiled(dir: &Path, onnx: &[u8], plan: &Plan) -> Result<(PathBuf, PathBuf)> {
    let client = dir.join("client");
    let server = dir.join("server");
    for d in [&client, &server] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    write_json(&client.join("client.json"), &ClientArtifact::for_plan(plan))?;
    let onnx_path = server.join("model.onnx");
    std::fs::write(&onnx_path, onnx).map_err(io(&onnx_path))?;
    write_json(
        &server.join("server.json"),
        &ServerManifest {
            format: ARTIFACT_FORMAT,
            model: plan.model.clone(),
            plan_fingerprint: plan.fingerprint.clone(),
            onnx_sha256: hex(&Sha256::digest(onnx)),
            plan: plan.clone(),
        },
    )?;
    Ok((client, server))
}

/// `dir/name` when `dir` holds it, else `dir/sub/name` (a compile directory, its part, or a
/// key directory).
fn locate(dir: &Path, sub: &str, name: &str) -> PathBuf {
    let direct = dir.join(name);
    if direct.is_file() {
        direct
    } else {
        dir.join(sub).join(name)
    }
}

/// Reads a client artifact (`DIR/client` or `DIR`).
pub fn read_client(dir: &Path) -> Result<ClientArtifact> {
    let path = locate(dir, "client", "client.json");
    let a: ClientArtifact = read_json(&path)?;
    check_plan(&path, &a.plan_fingerprint, &a.plan)?;
    Ok(a)
}

/// Reads a server artifact (`DIR/server` or `DIR`): the model (its SHA-256 checked against
/// the manifest), imported and simplified, with the plan, whose model fingerprint must be
/// this graph's. The full check of the plan against the graph is `Plan::check` (done by
/// `Server::new`).
pub fn read_server(dir: &Path) -> Result<ServerModel> {
    let path = locate(dir, "server", "server.json");
    let m: ServerManifest = read_json(&path)?;
    check_plan(&path, &m.plan_fingerprint, &m.plan)?;
    let onnx_path = path.with_file_name("model.onnx");
    let meta = std::fs::metadata(&onnx_path).map_err(io(&onnx_path))?;
    if meta.len() > crate::onnx::MAX_MODEL_BYTES {
        return Err(bad(&onnx_path, "model file too large"));
    }
    let bytes = std::fs::read(&onnx_path).map_err(io(&onnx_path))?;
    let sha = hex(&Sha256::digest(&bytes));
    if sha != m.onnx_sha256 {
        return Err(bad(
            &onnx_path,
            format!(
                "SHA-256 {sha} is not the manifest's {}: the model changed since it was compiled",
                m.onnx_sha256
            ),
        ));
    }
    let mut graph = crate::rewrite::simplify(&crate::onnx::import_bytes(&bytes)?)?;
    graph.set_name(m.model.clone());
    m.plan.check_graph(&graph)?;
    Ok(ServerModel {
        name: m.model,
        graph,
        plan: m.plan,
    })
}

/// File names of a key directory (`henn keygen -o KEYS`).
pub mod key_dir {
    /// The secret key (mode 0600; never leaves the client).
    pub const SECRET: &str = "secret.key";
    /// The evaluation-key bundle (what a server gets).
    pub const EVAL: &str = "eval.keys";
    /// A copy of the client artifact the keys belong to.
    pub const CLIENT: &str = "client.json";
}

/// What [`write_key_dir`] wrote.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// The secret key file.
    pub secret: PathBuf,
    /// The evaluation-key bundle.
    pub eval: PathBuf,
    /// Bytes of the evaluation-key bundle.
    pub eval_bytes: u64,
}

/// Makes a key directory for a client artifact: a fresh secret key, the evaluation-key bundle
/// of exactly the plan's rotations, and a copy of the artifact.
pub fn write_key_dir(dir: &Path, artifact: &ClientArtifact) -> Result<KeyFiles> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let client = super::Client::new(artifact.plan.clone())?;
    let secret = dir.join(key_dir::SECRET);
    client.secret_file().write(&secret)?;
    let bundle = client.evaluation_keys()?.to_bytes()?;
    let eval = dir.join(key_dir::EVAL);
    std::fs::write(&eval, &bundle).map_err(io(&eval))?;
    write_json(&dir.join(key_dir::CLIENT), artifact)?;
    Ok(KeyFiles {
        secret,
        eval,
        eval_bytes: bundle.len() as u64,
    })
}

/// The client artifact and client (secret key loaded) of a key directory.
pub fn read_key_dir(dir: &Path) -> Result<(ClientArtifact, super::Client)> {
    let artifact = read_client(dir)?;
    let secret =
        super::SecretKeyFile::read(&dir.join(key_dir::SECRET), &artifact.plan_fingerprint)?;
    let client = super::Client::from_secret(artifact.plan.clone(), secret)?;
    Ok((artifact, client))
}
