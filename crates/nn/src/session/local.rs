//! Client and server in one process, for evaluation and profiling: keys once, then any
//! number of images in runs of the plan's images per run, optionally decrypting every layer
//! (client side, outside the timed server work) to compare it with the plaintext reference.
//! The two halves only exchange what would cross a network (evaluation keys, packed
//! ciphertexts).

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::client::Client;
use super::server::{Server, ServerSession};
use crate::error::{NnError, Result};
use crate::exec::LayerStat;
use crate::ir::Graph;
use crate::plan::Plan;
use crate::reference;
use crate::tensor::Tensor;

/// Timings of the phases, in seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Key generation (secret, relinearization, Galois).
    pub keygen_s: f64,
    /// Encryption.
    pub encrypt_s: f64,
    /// Encrypted inference (server side).
    pub eval_s: f64,
    /// Decryption and decoding.
    pub decrypt_s: f64,
}

impl Timings {
    fn add(&mut self, o: &Timings) {
        self.encrypt_s += o.encrypt_s;
        self.eval_s += o.eval_s;
        self.decrypt_s += o.decrypt_s;
    }
}

/// Result of one encrypted run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Output vector (logits) per image.
    pub outputs: Vec<Vec<f64>>,
    /// Per-layer stats of the encrypted run.
    pub layers: Vec<LayerStat>,
    /// Per-layer max |decrypted - reference| over the run's images (when requested).
    pub layer_errors: Option<Vec<f64>>,
    /// Phase timings (keygen is the session's).
    pub timings: Timings,
}

/// Result of many images in as many runs as they need.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AllResult {
    /// Output vector (logits) per image, in order.
    pub outputs: Vec<Vec<f64>>,
    /// Runs made.
    pub runs: usize,
    /// Images per run (the last may hold fewer).
    pub images_per_run: usize,
    /// Per-layer stats of the last run.
    pub layers: Vec<LayerStat>,
    /// Per-layer max error over all runs (when requested).
    pub layer_errors: Option<Vec<f64>>,
    /// Summed timings (keygen once).
    pub timings: Timings,
}

/// A client (secret key) and a server (evaluation keys) of one plan in one process.
#[derive(Debug)]
pub struct LocalSession {
    client: Client,
    server: ServerSession,
    /// Seconds spent generating keys.
    pub keygen_s: f64,
}

impl LocalSession {
    /// Generates the keys for `plan` (exactly its rotations) and sets up the server on
    /// `graph` (which checks the plan against it).
    pub fn new(graph: &Graph, plan: &Plan) -> Result<Self> {
        let model = Server::new(Arc::new(graph.clone()), plan.clone())?;
        let start = Instant::now();
        let client = Client::with_params(plan.clone(), model.params().clone())?;
        let keys = client.evaluation_keys()?;
        let keygen_s = start.elapsed().as_secs_f64();
        let server = model.session(keys)?;
        Ok(Self {
            client,
            server,
            keygen_s,
        })
    }

    /// The client half.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The server half.
    pub fn server(&self) -> &ServerSession {
        &self.server
    }

    /// Runs the graph encrypted on `images` (at most the plan's images per run). With
    /// `compare`, every layer's output is decrypted and compared with the reference.
    pub fn run(&self, images: &[Tensor], compare: bool) -> Result<RunResult> {
        let graph = self.server.server().graph();
        let mut t = Timings {
            keygen_s: self.keygen_s,
            ..Timings::default()
        };
        let start = Instant::now();
        let input = self.client.encrypt(images)?;
        t.encrypt_s = start.elapsed().as_secs_f64();
        let refs: Option<Vec<Vec<Tensor>>> = if compare {
            Some(
                images
                    .iter()
                    .map(|x| reference::run_all(graph, x))
                    .collect::<Result<_>>()?,
            )
        } else {
            None
        };
        let mut errors = vec![0.0f64; graph.nodes().len()];
        let run = self.server.run_observed(input, |ni, part| {
            let Some(refs) = refs.as_ref() else {
                return Ok(());
            };
            let node = graph
                .nodes()
                .get(ni)
                .ok_or_else(|| NnError::InvalidGraph("node index".into()))?;
            let numel: usize = part.shape.iter().product();
            let dec = self.client.decrypt_part(
                node.output,
                numel,
                part.cts,
                part.flats,
                part.mult,
                images.len(),
            )?;
            let e = crate::report::part_error(&dec, refs, node.output);
            if let Some(slot) = errors.get_mut(ni) {
                *slot = slot.max(e);
            }
            Ok(())
        })?;
        t.eval_s = run.eval_s;
        let start = Instant::now();
        let outputs = self.client.decrypt(&run.output)?;
        t.decrypt_s = start.elapsed().as_secs_f64();
        Ok(RunResult {
            outputs,
            layers: run.layers,
            layer_errors: compare.then_some(errors),
            timings: t,
        })
    }

    /// Runs every image of `images`, in runs of the plan's images per run, with one set of
    /// keys (the first run also fills the server's plaintext cache); `progress(done, total)`
    /// after each run.
    pub fn run_all(
        &self,
        images: &[Tensor],
        compare: bool,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<AllResult> {
        let per = self.client.plan().images_per_run().max(1);
        let total = images.len().div_ceil(per);
        let mut all = AllResult {
            outputs: Vec::with_capacity(images.len()),
            runs: 0,
            images_per_run: per,
            layers: Vec::new(),
            layer_errors: compare.then(Vec::new),
            timings: Timings {
                keygen_s: self.keygen_s,
                ..Timings::default()
            },
        };
        for chunk in images.chunks(per) {
            let r = self.run(chunk, compare)?;
            all.timings.add(&r.timings);
            all.outputs.extend(r.outputs);
            if let (Some(acc), Some(e)) = (all.layer_errors.as_mut(), r.layer_errors) {
                if acc.is_empty() {
                    *acc = e;
                } else {
                    for (a, b) in acc.iter_mut().zip(e) {
                        *a = a.max(b);
                    }
                }
            }
            all.layers = r.layers;
            all.runs += 1;
            progress(all.runs, total);
        }
        Ok(all)
    }
}

/// Runs `graph` encrypted on `images` (one run) under `plan` with fresh keys (a one-shot
/// [`LocalSession`]).
pub fn run_once(graph: &Graph, plan: &Plan, images: &[Tensor], compare: bool) -> Result<RunResult> {
    LocalSession::new(graph, plan)?.run(images, compare)
}
