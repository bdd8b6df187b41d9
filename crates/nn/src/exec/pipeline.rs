//! End-to-end encrypted inference of one batch: keys, encryption, the executor on the
//! encrypted backend, decryption, and optionally the per-layer error against the reference.

use std::sync::Arc;
use std::time::Instant;

use henn_ckks::CkksParams;
use serde::{Deserialize, Serialize};

use super::client::Client;
use super::encrypted::Encrypted;
use super::{LayerStat, run};
use crate::error::{NnError, Result};
use crate::ir::Graph;
use crate::pack::{LayoutKind, batch, channel};
use crate::plan::{Plan, layout_for};
use crate::reference;
use crate::tensor::Tensor;

/// Timings of the phases of one batch, in seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Key generation (secret, relinearization, Galois).
    pub keygen_s: f64,
    /// Encryption of the batch.
    pub encrypt_s: f64,
    /// Encrypted inference (server side).
    pub eval_s: f64,
    /// Decryption and decoding.
    pub decrypt_s: f64,
}

/// Result of one encrypted batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResult {
    /// Output vector (logits) per image.
    pub outputs: Vec<Vec<f64>>,
    /// Per-layer stats of the encrypted run.
    pub layers: Vec<LayerStat>,
    /// Per-layer max |decrypted - reference| over the batch (when requested).
    pub layer_errors: Option<Vec<f64>>,
    /// Phase timings.
    pub timings: Timings,
}

/// Keys made once, then any number of batches (batch packing) or images (channel packing):
/// the client (secret key) and the server backend (evaluation keys, plaintext cache) of one
/// plan. Reusing a session across images keeps key generation and the encoding of weight
/// masks out of the per-image cost.
#[derive(Debug)]
pub struct Session<'a> {
    graph: &'a Graph,
    plan: &'a Plan,
    params: Arc<CkksParams>,
    client: Client,
    backend: Encrypted,
    /// Seconds spent generating keys.
    pub keygen_s: f64,
}

impl<'a> Session<'a> {
    /// Generates the keys for `plan` (exactly its rotations) and sets up the backend.
    pub fn new(graph: &'a Graph, plan: &'a Plan, params: &Arc<CkksParams>) -> Result<Self> {
        plan.check_graph(graph)?;
        let start = Instant::now();
        let client = Client::new(params)?;
        let (rlk, gk) = client.evaluation_keys(plan)?;
        let keygen_s = start.elapsed().as_secs_f64();
        let backend = Encrypted::new(params, rlk, gk);
        backend.check_rotations(&plan.rotations)?;
        Ok(Self {
            graph,
            plan,
            params: params.clone(),
            client,
            backend,
            keygen_s,
        })
    }

    /// The server backend (e.g. for its plaintext-cache size).
    pub fn backend(&self) -> &Encrypted {
        &self.backend
    }

    /// Decrypts ciphertexts `cts` (with multiplier `mult`) of value `value` (a node output,
    /// or the graph output) into one vector per image: per image, the elements of `cts` in
    /// order (batch packing) or the whole value (channel packing, `cts` must be all of it).
    fn decode(
        &self,
        cts: &[henn_ckks::Ciphertext],
        mult: f64,
        value: usize,
        images: usize,
    ) -> Result<Vec<Vec<f64>>> {
        let slots = self.client.decrypt_slots(cts)?;
        match self.plan.layout {
            LayoutKind::Batch => Ok(batch::unpack_outputs(&slots, mult, images)),
            LayoutKind::Channel => Ok(vec![channel::unpack_value(
                self.graph,
                value,
                channel::Room::of_params(&self.params),
                &slots,
                mult,
            )?]),
        }
    }

    /// Runs the graph encrypted on `images` (at most the slot count with batch packing,
    /// exactly one with channel packing). With `compare`, every layer's output is decrypted
    /// (client side, outside the timed server work) and compared with the reference.
    pub fn run(&self, images: &[Tensor], compare: bool) -> Result<BatchResult> {
        let (graph, plan, params) = (self.graph, self.plan, &self.params);
        if images.len() > plan.batch.max(1) && images.len() > params.slots() {
            return Err(NnError::Exec(format!(
                "{} images exceed the {} slots",
                images.len(),
                params.slots()
            )));
        }
        let mut t = Timings {
            keygen_s: self.keygen_s,
            ..Timings::default()
        };
        let start = Instant::now();
        let input = self.client.encrypt(plan, graph.input_shape(), images)?;
        t.encrypt_s = start.elapsed().as_secs_f64();

        let layout = layout_for::<Encrypted>(plan.layout)?;
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
        let mut observe_s = 0.0;
        let start = Instant::now();
        let (out, layers) = run(&self.backend, layout.as_ref(), graph, input, |ni, part| {
            let Some(refs) = refs.as_ref() else {
                return Ok(());
            };
            let t0 = Instant::now();
            let node = graph
                .nodes()
                .get(ni)
                .ok_or_else(|| NnError::InvalidGraph("node index".into()))?;
            let dec = self.decode(part.cts, part.mult, node.output, images.len())?;
            let mut e = 0.0f64;
            for (i, d) in dec.iter().enumerate() {
                if let Some(r) = refs.get(i).and_then(|r| r.get(node.output)) {
                    let want = r.data();
                    match plan.layout {
                        // d[j] is element part.flats[j]
                        LayoutKind::Batch => {
                            for (a, &f) in d.iter().zip(part.flats) {
                                if let Some(b) = want.get(f) {
                                    e = e.max((a - b).abs());
                                }
                            }
                        }
                        LayoutKind::Channel => {
                            for (a, b) in d.iter().zip(want) {
                                e = e.max((a - b).abs());
                            }
                        }
                    }
                }
            }
            if let Some(slot) = errors.get_mut(ni) {
                *slot = slot.max(e);
            }
            observe_s += t0.elapsed().as_secs_f64();
            Ok(())
        })?;
        t.eval_s = start.elapsed().as_secs_f64() - observe_s;

        let start = Instant::now();
        let outputs = self.decode(&out.cts, out.mult, graph.output(), images.len())?;
        t.decrypt_s = start.elapsed().as_secs_f64();
        Ok(BatchResult {
            outputs,
            layers,
            layer_errors: compare.then_some(errors),
            timings: t,
        })
    }
}

/// Runs `graph` encrypted on `images` under `plan` with fresh keys (a one-shot
/// [`Session`]).
pub fn run_batch(
    graph: &Graph,
    plan: &Plan,
    params: &Arc<CkksParams>,
    images: &[Tensor],
    compare: bool,
) -> Result<BatchResult> {
    Session::new(graph, plan, params)?.run(images, compare)
}
