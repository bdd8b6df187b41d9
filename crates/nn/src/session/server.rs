//! The server side: a [`Server`] holds the model and a plan it has checked against it (one per
//! model); a [`ServerSession`] adds one client's evaluation keys (never a secret key) and runs
//! the graph on that client's packed ciphertexts, one run or many.
//!
//! Keys and ciphertexts a server receives must be read with [`Server::params`]: the ring
//! context they are built on is the server's.

use std::sync::Arc;
use std::time::Instant;

use henn_ckks::{Ciphertext, CkksParams};

use super::wire::{EvaluationKeys, PackedCiphertexts};
use crate::backend::encrypted::{DEFAULT_PT_CACHE_BYTES, Encrypted, PlaintextCache};
use crate::error::{ExecError, NnError, Result};
use crate::exec::{self, LayerStat, Observed};
use crate::ir::Graph;
use crate::pack::Packed;
use crate::plan::Plan;

/// A model with a checked plan.
#[derive(Debug)]
pub struct Server {
    graph: Arc<Graph>,
    plan: Plan,
    params: Arc<CkksParams>,
    cache: Arc<PlaintextCache>,
}

/// One encrypted run on the server.
#[derive(Debug)]
pub struct ServerRun {
    /// The encrypted output.
    pub output: PackedCiphertexts,
    /// Per-layer stats of the run.
    pub layers: Vec<LayerStat>,
    /// Wall time of the run in seconds (observer time excluded).
    pub eval_s: f64,
}

impl Server {
    /// A server for `plan` on `graph`. The plan is checked against the graph first
    /// ([`Plan::check`]: intact, this model, layout, parameters, rotations, levels); a plan
    /// that differs from what this model gives is refused with [`NnError::PlanMismatch`].
    pub fn new(graph: Arc<Graph>, plan: Plan) -> Result<Arc<Self>> {
        Self::with_cache_budget(graph, plan, DEFAULT_PT_CACHE_BYTES)
    }

    /// [`Server::new`] with a plaintext-cache budget (bytes of encoded weight masks kept for
    /// all sessions of this model; 0 disables the cache).
    pub fn with_cache_budget(graph: Arc<Graph>, plan: Plan, budget: usize) -> Result<Arc<Self>> {
        let params = plan.check(&graph)?;
        Ok(Arc::new(Self {
            graph,
            plan,
            params,
            cache: Arc::new(PlaintextCache::new(budget)),
        }))
    }

    /// Bytes of encoded plaintexts cached for this model.
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The parameters: read received keys and ciphertexts with these.
    pub fn params(&self) -> &Arc<CkksParams> {
        &self.params
    }

    /// A session for one client's evaluation keys: they must be made for this plan, cover
    /// its rotations, and belong to [`Server::params`].
    pub fn session(self: &Arc<Self>, keys: EvaluationKeys) -> Result<ServerSession> {
        if keys.plan_fingerprint != self.plan.fingerprint {
            return Err(NnError::PlanMismatch {
                what: "plan fingerprint of the evaluation keys".into(),
                stored: keys.plan_fingerprint,
                computed: self.plan.fingerprint.clone(),
            });
        }
        if !keys.relin.belongs_to(&self.params) || !keys.galois.belong_to(&self.params) {
            return Err(ExecError::Input(
                "the evaluation keys were not read or made with this server's parameters (Server::params)".into(),
            )
            .into());
        }
        let backend =
            Encrypted::with_cache(&self.params, keys.relin, keys.galois, self.cache.clone())
                .with_complex_pairs(self.plan.layout.complex_pairs);
        backend.check_keys(&self.plan.rotation_keys(), self.plan.relin_level)?;
        Ok(ServerSession {
            server: self.clone(),
            backend,
        })
    }
}

/// A server with one client's evaluation keys.
#[derive(Debug)]
pub struct ServerSession {
    server: Arc<Server>,
    backend: Encrypted,
}

impl ServerSession {
    /// The server.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// The encrypted backend (e.g. for its plaintext-cache size).
    pub fn backend(&self) -> &Encrypted {
        &self.backend
    }

    /// Runs the graph on one run's packed input.
    pub fn run(&self, input: PackedCiphertexts) -> Result<ServerRun> {
        self.run_observed(input, |_, _| Ok(()))
    }

    /// Runs the graph on several runs' inputs, one after the other.
    pub fn run_many(&self, inputs: Vec<PackedCiphertexts>) -> Result<Vec<ServerRun>> {
        inputs.into_iter().map(|x| self.run(x)).collect()
    }

    /// Checks a run's input against the plan: its fingerprint, image count, multiplier,
    /// and fresh ciphertexts (top level, the plan's input scale) of the server's parameters.
    fn check_input(&self, input: &PackedCiphertexts) -> Result<()> {
        let (plan, params) = (&self.server.plan, &self.server.params);
        if input.plan_fingerprint != plan.fingerprint {
            return Err(NnError::PlanMismatch {
                what: "plan fingerprint of the input".into(),
                stored: input.plan_fingerprint.clone(),
                computed: plan.fingerprint.clone(),
            });
        }
        if input.images == 0 || input.images > plan.layout.images_per_run {
            return Err(ExecError::Input(format!(
                "{} images in one run; the plan packs 1 to {}",
                input.images, plan.layout.images_per_run
            ))
            .into());
        }
        if input.mult != 1.0 {
            return Err(ExecError::Input(format!(
                "an input carries multiplier {}, expected 1",
                input.mult
            ))
            .into());
        }
        let top = params.max_level();
        let scale = plan.layout.input_scale(params.default_scale());
        if let Some(c) = input
            .cts
            .iter()
            .find(|c| c.level() != top || !c.scale().matches(scale) || c.params_id() != params.id())
        {
            return Err(ExecError::Input(format!(
                "an input ciphertext at level {} and scale 2^{:.3}; fresh ones of this plan are at level {} and 2^{:.3}",
                c.level().0,
                c.scale().log2(),
                top.0,
                scale.log2()
            ))
            .into());
        }
        Ok(())
    }

    /// [`ServerSession::run`], with `observe` seeing each layer's output (node index,
    /// ciphertexts) right after it is computed; its time is not counted in `eval_s`.
    pub fn run_observed(
        &self,
        input: PackedCiphertexts,
        mut observe: impl FnMut(usize, Observed<'_, Ciphertext>) -> Result<()>,
    ) -> Result<ServerRun> {
        self.check_input(&input)?;
        let (graph, plan) = (&self.server.graph, &self.server.plan);
        let images = input.images;
        let packed = Packed {
            shape: graph.input_shape().to_vec(),
            cts: input.cts,
            mult: 1.0,
        };
        let mut observe_s = 0.0;
        let start = Instant::now();
        let (out, layers) = exec::run(&self.backend, &plan.layout, graph, packed, |ni, part| {
            let t0 = Instant::now();
            let r = observe(ni, part);
            observe_s += t0.elapsed().as_secs_f64();
            r
        })?;
        let eval_s = start.elapsed().as_secs_f64() - observe_s;
        Ok(ServerRun {
            output: PackedCiphertexts {
                plan_fingerprint: plan.fingerprint.clone(),
                images,
                mult: out.mult,
                cts: out.cts,
            },
            layers,
            eval_s,
        })
    }
}
