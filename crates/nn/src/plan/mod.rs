//! Planning: runs a model's layer code on the simulated backend to find its depth, the level
//! and scale after every layer, op counts and the rotation steps it needs, and chooses (or
//! checks) CKKS parameters for 128-bit security. It performs no HE operation.

use std::sync::Arc;

use henn_ckks::params::max_log_qp;
use henn_ckks::{CkksParams, CkksParamsLiteral, Scale, SecretDistribution, SecurityPolicy};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{NnError, Result};
use crate::exec::simulated::{SimCt, Simulated};
use crate::exec::slots::Slots;
use crate::exec::{self, Backend, LayerStat};
use crate::ir::Graph;
use crate::pack::batch::{self, BatchLayout};
use crate::pack::channel::{self, ChannelLayout};
use crate::pack::{Layout, LayoutKind, Packed};
use crate::tensor::{Tensor, numel};

/// Levels of the idealised chain used to measure depth.
const PROBE_LEVELS: usize = 256;
/// Bits of margin above the largest value at the base prime (noise, rounding).
const Q0_MARGIN_BITS: u32 = 8;
/// Largest scale the planner picks.
const MAX_SCALE_BITS: u32 = 45;
/// Prime size the planner prefers: primes below 2^50 run on the IFMA kernels.
const IFMA_PRIME_BITS: u32 = 50;
/// Bits above the minimum scale that the planner keeps when it prefers IFMA-sized primes.
const IFMA_SCALE_MARGIN: u32 = 8;
/// Most special primes the planner adds from unused security budget.
const MAX_SPECIAL_PRIMES: u32 = 3;

/// What the planner aims for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanOptions {
    /// Packing layout.
    pub layout: LayoutKind,
    /// Images per batch (batch layout: slots needed).
    pub batch: usize,
    /// Target precision in bits; the scale is at least this plus 8 bits.
    pub target_precision_bits: u32,
    /// Security level (128, 192 or 256).
    pub security_bits: u32,
    /// Largest absolute slot value in any layer (measure it with [`max_abs_slots`]).
    pub max_abs: f64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            layout: LayoutKind::Batch,
            batch: 1,
            target_precision_bits: 16,
            security_bits: 128,
            max_abs: 1.0,
        }
    }
}

/// A serializable plan: what the client needs to make keys and what the server will do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Model name.
    pub model: String,
    /// SHA-256 of the (simplified) graph.
    pub fingerprint: String,
    /// Packing layout.
    pub layout: LayoutKind,
    /// Images per batch.
    pub batch: usize,
    /// CKKS parameters.
    pub params: CkksParamsLiteral,
    /// Levels the model consumes.
    pub depth: usize,
    /// Rotation steps the plan needs (only those Galois keys are generated).
    pub rotations: Vec<i64>,
    /// Multiplier to apply to the decrypted output.
    pub output_multiplier: f64,
    /// Largest absolute slot value measured (sizes the base prime).
    pub max_abs: f64,
    /// Expected level, scale and op counts per layer (from the simulated backend).
    pub layers: Vec<LayerStat>,
    /// Estimated peak bytes of the ciphertexts alive at once on the server (see
    /// [`simulate_measured`]).
    #[serde(default)]
    pub peak_bytes: u64,
    /// Channel layout: copies of the image the client packs into each input ciphertext, at
    /// stride `slots / input_replicas` (see `pack::channel::input_replicas`); 1 otherwise.
    #[serde(default = "one")]
    pub input_replicas: usize,
}

fn one() -> usize {
    1
}

impl Plan {
    /// The plan as JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| NnError::Plan(format!("cannot serialize the plan: {e}")))
    }
    /// A plan from JSON.
    pub fn from_json(s: &str) -> Result<Plan> {
        serde_json::from_str(s).map_err(|e| NnError::Plan(format!("cannot parse the plan: {e}")))
    }
    /// Checks that a graph is the one the plan was made for.
    pub fn check_graph(&self, graph: &Graph) -> Result<()> {
        let f = fingerprint(graph);
        if f != self.fingerprint {
            return Err(NnError::Plan(format!(
                "the plan was made for model fingerprint {}, this model is {f}",
                self.fingerprint
            )));
        }
        Ok(())
    }
}

/// SHA-256 (hex) of a graph's full description (ops, weights, shapes).
pub fn fingerprint(graph: &Graph) -> String {
    let mut h = Sha256::new();
    h.update(format!("{:?}", graph.nodes()).as_bytes());
    h.update(format!("{:?}", graph.values()).as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The layout object for a kind.
pub fn layout_for<B: Backend>(kind: LayoutKind) -> Result<Box<dyn Layout<B>>> {
    match kind {
        LayoutKind::Batch => Ok(Box::new(BatchLayout)),
        LayoutKind::Channel => Ok(Box::new(ChannelLayout)),
    }
}

/// Checks that every node is supported by the layout.
pub fn check_supported(graph: &Graph, kind: LayoutKind) -> Result<()> {
    match kind {
        LayoutKind::Batch => batch::check_supported(graph),
        LayoutKind::Channel => channel::check_supported(graph),
    }
}

fn probe_chain() -> Vec<u32> {
    let mut q = vec![60];
    q.extend(std::iter::repeat_n(40, PROBE_LEVELS));
    q
}

/// Number of ciphertexts of the packed input for a layout.
fn input_cts(graph: &Graph, kind: LayoutKind) -> usize {
    match kind {
        LayoutKind::Batch => numel(graph.input_shape()),
        LayoutKind::Channel => match graph.input_shape() {
            [_, c, _, _] => *c,
            _ => 1,
        },
    }
}

/// Slots a layout needs: the batch size (batch), the largest image grid (channel).
fn min_slots(graph: &Graph, kind: LayoutKind, batch: usize) -> Result<usize> {
    match kind {
        LayoutKind::Batch => Ok(batch),
        LayoutKind::Channel => channel::required_slots(graph),
    }
}

/// Runs the layer code on a simulated backend and returns the per-layer stats and the
/// simulated output.
pub fn simulate(
    graph: &Graph,
    kind: LayoutKind,
    sim: &Simulated,
    scale: Scale,
) -> Result<(Packed<SimCt>, Vec<LayerStat>)> {
    let r = simulate_measured(graph, kind, sim, scale)?;
    Ok((r.output, r.layers))
}

/// [`simulate`] with the executor's peak ciphertext memory: the same schedule (row
/// streaming included) on ciphertexts of the simulated levels, `2 x N x (level + 1)` words
/// each; a node's inputs and outputs are alive together, temporaries inside a layer
/// (rotations, accumulators) come on top.
pub fn simulate_measured(
    graph: &Graph,
    kind: LayoutKind,
    sim: &Simulated,
    scale: Scale,
) -> Result<exec::RunOutput<SimCt>> {
    check_supported(graph, kind)?;
    let layout = layout_for::<Simulated>(kind)?;
    let input = Packed {
        shape: graph.input_shape().to_vec(),
        cts: vec![sim.input(scale); input_cts(graph, kind)],
        mult: 1.0,
    };
    exec::run_measured(sim, layout.as_ref(), graph, input, |_, _| Ok(()))
}

/// Levels the model consumes under a layout (output level counted from the top).
pub fn depth(graph: &Graph, kind: LayoutKind) -> Result<usize> {
    let slots = min_slots(graph, kind, 1)?.next_power_of_two();
    let sim = Simulated::with_bits(&probe_chain(), slots);
    let (out, _) = simulate(graph, kind, &sim, Scale::from_log2(40.0))?;
    let lvl = out.cts.first().map_or(PROBE_LEVELS, |c| c.level);
    Ok(PROBE_LEVELS - lvl)
}

/// The largest absolute slot value over all layers for `images` (batch layout, exact
/// arithmetic), used to size the base prime.
pub fn max_abs_slots(graph: &Graph, images: &[Tensor]) -> Result<f64> {
    let slots = Slots::with_bits(&probe_chain(), images.len().max(1));
    let layout = BatchLayout;
    let vectors = batch::pack_inputs(images)?;
    let scale = Scale::from_log2(40.0);
    let cts = vectors
        .iter()
        .map(|v| slots.input(v, scale))
        .collect::<Result<Vec<_>>>()?;
    let mut max = vectors.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    let input = Packed {
        shape: graph.input_shape().to_vec(),
        cts,
        mult: 1.0,
    };
    exec::run(&slots, &layout, graph, input, |_, p| {
        for c in p.cts {
            for v in &c.v {
                max = max.max(v.abs());
            }
        }
        Ok(())
    })?;
    Ok(max)
}

fn magnitude_bits(max_abs: f64) -> u32 {
    let m = max_abs.max(1.0);
    m.log2().ceil() as u32 + 1
}

/// Chooses CKKS parameters: the smallest N (with N/2 >= `min_slots`) whose security bound
/// holds a base prime with room for values up to `max_abs`, `depth` scale-sized primes and a
/// special prime as large as the largest data prime (more special primes, up to three and up
/// to half the data primes, where the security bound leaves room); the largest scale (up to 2^45) that fits
/// with every prime below 2^50 (IFMA arithmetic) if that scale is at least 8 bits above the
/// minimum, otherwise the largest that fits with primes up to 60 bits.
pub fn choose_params(
    depth: usize,
    target_precision_bits: u32,
    min_slots: usize,
    security_bits: u32,
    max_abs: f64,
) -> Result<CkksParamsLiteral> {
    let s_min = target_precision_bits + 8;
    let head = magnitude_bits(max_abs) + Q0_MARGIN_BITS;
    let d = depth as u32;
    for log_n in 12u32..=16 {
        if (1usize << (log_n - 1)) < min_slots {
            continue;
        }
        let Some(bound) = max_log_qp(log_n, security_bits) else {
            return Err(NnError::Plan(format!(
                "no security table entry for {security_bits}-bit security"
            )));
        };
        let lo = s_min.max(log_n + 2);
        // primes below 2^50 first (the AVX-512 IFMA kernels take them, a larger base or
        // special prime runs on 64-bit lanes), as long as the scale keeps IFMA_SCALE_MARGIN
        // bits above the minimum; then primes up to 60 bits with the largest scale
        let candidates = [(IFMA_PRIME_BITS, lo + IFMA_SCALE_MARGIN), (60, lo)]
            .into_iter()
            .flat_map(|(cap, s_lo)| (s_lo..=MAX_SCALE_BITS).rev().map(move |s| (cap, s)));
        for (cap, s) in candidates {
            let q0 = (s + head).max(log_n + 2);
            if q0 > cap {
                continue;
            }
            let p = q0.max(s);
            let total = q0 + d * s + p;
            if total <= bound {
                // security budget left over buys more special primes: key-switching digits
                // of several primes, so fewer digits (smaller keys, fewer NTTs and products
                // per key switch), up to half the data primes
                let extra = ((bound - total) / p)
                    .min(MAX_SPECIAL_PRIMES - 1)
                    .min(d.div_ceil(2).saturating_sub(1));
                return Ok(CkksParamsLiteral {
                    log_n,
                    q_bits: std::iter::once(q0)
                        .chain(std::iter::repeat_n(s, depth))
                        .collect(),
                    p_bits: vec![p; 1 + extra as usize],
                    log_scale: s as f64,
                    dnum: None,
                    secret: SecretDistribution::Ternary,
                    security: SecurityPolicy::Enforce {
                        bits: security_bits,
                    },
                });
            }
        }
    }
    let q0 = (s_min + head).min(60);
    let need = q0 + d * s_min + q0;
    Err(NnError::Plan(format!(
        "model needs depth D = {depth}, which needs log2(QP) = {q0} (base prime) + {depth} x {s_min} (scale for {target_precision_bits}-bit precision) + {q0} (special prime) = {need} bits > {} at N = 2^16 for {security_bits}-bit security (and N/2 >= {min_slots} slots); reduce the depth (lower-degree polynomial activations, fewer layers) or the target precision",
        max_log_qp(16, security_bits).unwrap_or(0)
    )))
}

/// Checks user-given parameters against a model's needs and explains what does not fit.
pub fn check_params(
    graph: &Graph,
    layout: LayoutKind,
    lit: &CkksParamsLiteral,
    depth: usize,
    min_slots: usize,
    max_abs: f64,
) -> Result<()> {
    let levels = lit.q_bits.len().saturating_sub(1);
    let mut problems = Vec::new();
    // one level short is fine when the last linear layer can run at level 0 without a
    // rescale (see `Backend::level0_const_scale`): the simulation with the given chain says
    if levels < depth && !fits_chain(graph, layout, lit, max_abs) {
        problems.push(format!(
            "the model needs depth {depth} but the parameters have {levels} levels ({} data primes); add {} primes of {} bits",
            lit.q_bits.len(),
            depth - levels,
            lit.log_scale
        ));
    }
    let slots = 1usize << lit.log_n.saturating_sub(1);
    if slots < min_slots {
        problems.push(format!(
            "the batch needs {min_slots} slots but N = 2^{} has {slots}",
            lit.log_n
        ));
    }
    let head = magnitude_bits(max_abs);
    if let Some(&q0) = lit.q_bits.first()
        && (q0 as f64) < lit.log_scale + head as f64 + 2.0
    {
        {
            problems.push(format!(
                "the base prime ({q0} bits) leaves no room for values up to {max_abs:.3e} at scale 2^{}: use at least {} bits",
                lit.log_scale,
                (lit.log_scale as u32) + head + Q0_MARGIN_BITS
            ));
        }
    }
    if let Err(e) = CkksParams::new(lit.clone()) {
        problems.push(e.to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(NnError::Plan(format!(
            "the given parameters do not fit: {}",
            problems.join("; ")
        )))
    }
}

/// Whether `graph` runs to the end on the chain of `lit` (simulated, idealised primes) with
/// its output, up to `max_abs`, below half the base prime.
fn fits_chain(graph: &Graph, layout: LayoutKind, lit: &CkksParamsLiteral, max_abs: f64) -> bool {
    let Ok(slots) = min_slots(graph, layout, 1) else {
        return false;
    };
    let sim = Simulated::with_bits(&lit.q_bits, slots.next_power_of_two());
    let scale = Scale::from_log2(lit.log_scale);
    match simulate(graph, layout, &sim, scale) {
        Ok((out, _)) => out.cts.first().is_some_and(|c| {
            let q0 = lit.q_bits.first().copied().unwrap_or(0) as f64;
            c.scale.log2() + magnitude_bits(max_abs) as f64 + 1.0 < q0
        }),
        Err(_) => false,
    }
}

/// Makes a plan: checks support, measures the depth, chooses parameters (or checks the given
/// ones), then simulates with the real primes for per-layer expectations.
pub fn make_plan(
    graph: &Graph,
    opts: &PlanOptions,
    given: Option<CkksParamsLiteral>,
) -> Result<(Plan, Arc<CkksParams>)> {
    check_supported(graph, opts.layout)?;
    let depth = depth(graph, opts.layout)?;
    let slots_needed = min_slots(graph, opts.layout, opts.batch)?;
    let lit = match given {
        Some(lit) => {
            check_params(graph, opts.layout, &lit, depth, slots_needed, opts.max_abs)?;
            lit
        }
        None => choose_params(
            depth,
            opts.target_precision_bits,
            slots_needed,
            opts.security_bits,
            opts.max_abs,
        )?,
    };
    let params = CkksParams::new(lit.clone())
        .map_err(|e| NnError::Plan(format!("parameters rejected: {e}")))?;
    let sim = Simulated::for_params(&params);
    let run = simulate_measured(graph, opts.layout, &sim, params.default_scale())?;
    let (out, layers) = (run.output, run.layers);
    let plan = Plan {
        model: graph.name().to_string(),
        fingerprint: fingerprint(graph),
        layout: opts.layout,
        batch: opts.batch,
        params: lit,
        depth,
        rotations: sim.rotations(),
        output_multiplier: out.mult,
        max_abs: opts.max_abs,
        peak_bytes: run.peak_bytes,
        input_replicas: match opts.layout {
            LayoutKind::Channel => {
                channel::input_replicas(graph, channel::Room::of_params(&params))?
            }
            LayoutKind::Batch => 1,
        },
        layers,
    };
    Ok((plan, params))
}
