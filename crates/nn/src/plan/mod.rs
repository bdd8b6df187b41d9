//! Planning: decides, once, everything an encrypted run needs and stores it in a [`Plan`]:
//! the layout plan (where every value lives), the CKKS parameters (chosen for a security
//! level from the depth and the value magnitudes measured under that layout, or user-given
//! and checked), the rotation steps, the output multiplier, and the level, scale and op counts
//! of every layer from the simulated backend. It performs no HE operation.
//!
//! The layout decisions depend on the parameters (slot count, prime size) and the parameters
//! on the layout (depth, magnitudes, slots), so planning iterates: a probe layout on an
//! idealised chain gives a first depth and magnitude, parameters are chosen, the layout is
//! made again for their room, and depth and magnitudes are measured again under it until the
//! parameters hold what the final layout needs.
//!
//! A plan is checked before a server runs it ([`Plan::check`]): the layout, rotations and
//! levels it states must be what this model and these parameters give, or it is refused
//! with [`NnError::PlanMismatch`].

pub mod bootstrap;
mod calibrate;
pub mod params;

use std::sync::Arc;

use henn_ckks::{CkksParams, CkksParamsLiteral, Scale};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use bootstrap::{BootstrapEstimate, bootstrap_estimate, bootstrap_estimate_for};
pub use calibrate::{max_abs, predicted_bits, predicted_layer_errors};
pub use params::{check_params, choose_params, magnitude_bits};

use crate::backend::Counts;
use crate::backend::simulated::{SimCt, Simulated};
use crate::backend::slots::{SlotCt, Slots};
use crate::error::{NnError, Result};
use crate::exec::{self, LayerStat, RunOutput};
use crate::ir::Graph;
use crate::pack::{LayoutKind, LayoutPlan, Packed, Room};
use crate::tensor::Tensor;

/// Levels of the idealised chain used to measure depth before primes exist.
const PROBE_LEVELS: usize = 256;
/// Prime size (bits) of the idealised probe chain.
const PROBE_PRIME_BITS: u32 = 40;
/// Rounds of "choose parameters, lay out again, measure again" before giving up.
const MAX_PLAN_ROUNDS: usize = 4;
/// The plan format this build writes and reads.
pub const PLAN_FORMAT: u32 = 3;

/// How many images one run packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Images {
    /// Exactly this many (as far as the layout packs several).
    Exactly(usize),
    /// As many as the smallest fitting ring holds, at most this many.
    UpTo(usize),
}

/// What the planner aims for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanOptions {
    /// Packing layout.
    pub layout: LayoutKind,
    /// Images per run.
    pub images: Images,
    /// Target precision in bits: the scale is at least this plus 8 bits, and a cheaper plan
    /// with repacked poolings is kept only where its predicted output precision
    /// ([`predicted_bits`]) meets this or is no worse than the plain plan's.
    pub target_precision_bits: u32,
    /// Security level (128, 192 or 256).
    pub security_bits: u32,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            layout: LayoutKind::Batch,
            images: Images::Exactly(1),
            target_precision_bits: 16,
            security_bits: 128,
        }
    }
}

/// A serializable plan: what the client needs to make keys, pack inputs and read outputs
/// (parameters, layout plan, rotation steps, output multiplier; no weights), and what the
/// server will do. [`Plan::fingerprint`] covers all of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Plan format version ([`PLAN_FORMAT`]).
    pub format: u32,
    /// Model name.
    pub model: String,
    /// SHA-256 of the canonical encoding of the (simplified) graph.
    pub model_fingerprint: String,
    /// CKKS parameters.
    pub params: CkksParamsLiteral,
    /// Where every value lives: input spec, placements, output map.
    pub layout: LayoutPlan,
    /// Levels the model consumes.
    pub depth: usize,
    /// Rotation steps the plan needs (only those Galois keys are generated).
    pub rotations: Vec<i64>,
    /// Per rotation step (same order), the highest level it is used at: its key serves
    /// levels up to there and no higher (smaller keys for rotations deep in the network).
    pub rotation_levels: Vec<usize>,
    /// The highest level of a relinearization (the relinearization key serves up to there).
    pub relin_level: usize,
    /// Multiplier to apply to the decrypted output.
    pub output_multiplier: f64,
    /// Largest absolute slot value measured under the layout (sizes the base prime).
    pub max_abs: f64,
    /// Predicted precision of the outputs in bits (median over the calibration images of
    /// `-log2(max error / max |output|)`, from a slots run with CKKS's noise: see
    /// [`predicted_bits`]); 0 in plans made before it was recorded.
    #[serde(default)]
    pub predicted_bits: f64,
    /// Expected level, scale and op counts per layer (from the simulated backend).
    pub layers: Vec<LayerStat>,
    /// Estimated peak bytes of the ciphertexts alive at once on the server (the simulated
    /// schedule).
    pub peak_bytes: u64,
    /// SHA-256 of everything above (see [`Plan::digest`]).
    pub fingerprint: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Plan {
    /// The layout.
    pub fn kind(&self) -> LayoutKind {
        self.layout.kind
    }

    /// Images one run packs.
    pub fn images_per_run(&self) -> usize {
        self.layout.images_per_run
    }

    /// The rotation keys the plan needs: each step with the highest level its key serves.
    pub fn rotation_keys(&self) -> Vec<(i64, henn_ckks::Level)> {
        self.rotations
            .iter()
            .zip(&self.rotation_levels)
            .map(|(&k, &l)| (k, henn_ckks::Level(l)))
            .collect()
    }

    /// SHA-256 (hex) of the plan with its `fingerprint` field empty (canonical JSON).
    pub fn digest(&self) -> Result<String> {
        let mut p = self.clone();
        p.fingerprint.clear();
        let bytes = serde_json::to_vec(&p)
            .map_err(|e| NnError::Plan(format!("cannot serialize the plan: {e}")))?;
        Ok(hex(&Sha256::digest(&bytes)))
    }

    /// Checks that the fingerprint matches the content (an intact plan).
    pub fn verify_fingerprint(&self) -> Result<()> {
        let d = self.digest()?;
        if d != self.fingerprint {
            return Err(NnError::PlanMismatch {
                what: "plan fingerprint (the plan was edited)".into(),
                stored: self.fingerprint.clone(),
                computed: d,
            });
        }
        Ok(())
    }

    /// The plan as JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| NnError::Plan(format!("cannot serialize the plan: {e}")))
    }

    /// A plan from JSON: the format version must be this build's and the fingerprint must
    /// match the content.
    pub fn from_json(s: &str) -> Result<Plan> {
        let v: serde_json::Value = serde_json::from_str(s)
            .map_err(|e| NnError::Plan(format!("cannot parse the plan: {e}")))?;
        let format = v.get("format").and_then(serde_json::Value::as_u64);
        if format != Some(u64::from(PLAN_FORMAT)) {
            return Err(NnError::Plan(format!(
                "plan format {}, this henn reads format {PLAN_FORMAT}: make the plan again with this version (henn plan)",
                format.map_or_else(|| "unknown (an older henn)".to_string(), |f| f.to_string())
            )));
        }
        let plan: Plan = serde_json::from_value(v)
            .map_err(|e| NnError::Plan(format!("cannot parse the plan: {e}")))?;
        plan.verify_fingerprint()?;
        Ok(plan)
    }

    /// The checked CKKS parameters.
    pub fn ckks_params(&self) -> Result<Arc<CkksParams>> {
        CkksParams::new(self.params.clone())
            .map_err(|e| NnError::Plan(format!("the plan's parameters are rejected: {e}")))
    }

    /// Checks that a graph is the one the plan was made for (its fingerprint).
    pub fn check_graph(&self, graph: &Graph) -> Result<()> {
        let f = fingerprint(graph);
        if f != self.model_fingerprint {
            return Err(NnError::PlanMismatch {
                what: "model fingerprint".into(),
                stored: self.model_fingerprint.clone(),
                computed: f,
            });
        }
        Ok(())
    }

    /// What a server checks before running the plan on `graph`: the plan is intact (its
    /// fingerprint), made for this graph, its parameters valid, and its layout plan, rotation
    /// steps, output multiplier and per-layer levels and scales are exactly what this graph
    /// and these parameters give. Any difference is a [`NnError::PlanMismatch`] naming it.
    /// Returns the parameters.
    pub fn check(&self, graph: &Graph) -> Result<Arc<CkksParams>> {
        self.verify_fingerprint()?;
        self.check_graph(graph)?;
        let params = self.ckks_params()?;
        // the plan says whether its poolings may repack; the rest of the room is the
        // parameters'
        let room = Room::of_params(&params).with_repack(self.layout.room.repack);
        let computed = layout_plan(graph, self.kind(), room, self.layout.images_per_run)?;
        self.layout.check_same(&computed, graph)?;
        let sim = Simulated::for_params(&params).with_complex_pairs(computed.complex_pairs);
        let run = simulate(graph, &computed, &sim, params.default_scale()).map_err(|e| {
            NnError::PlanMismatch {
                what: "a run of the model under the plan's parameters".into(),
                stored: "runs".into(),
                computed: e.to_string(),
            }
        })?;
        let mismatch = |what: &str, a: String, b: String| -> Result<()> {
            if a == b {
                Ok(())
            } else {
                Err(NnError::PlanMismatch {
                    what: what.into(),
                    stored: a,
                    computed: b,
                })
            }
        };
        mismatch(
            "rotation steps",
            format!("{:?}", self.rotations),
            format!("{:?}", sim.rotations()),
        )?;
        mismatch(
            "levels of the rotation keys",
            format!("{:?}", self.rotation_levels),
            format!("{:?}", sim.rotation_levels()),
        )?;
        mismatch(
            "level of the relinearization key",
            self.relin_level.to_string(),
            sim.relin_level().to_string(),
        )?;
        mismatch(
            "output multiplier",
            format!("{:e}", self.output_multiplier),
            format!("{:e}", run.output.mult),
        )?;
        mismatch(
            "number of layers",
            self.layers.len().to_string(),
            run.layers.len().to_string(),
        )?;
        for (a, b) in self.layers.iter().zip(&run.layers) {
            mismatch(
                &format!("level and scale after layer '{}'", a.name),
                format!("{} / 2^{:.6}", a.level, a.log2_scale),
                format!("{} / 2^{:.6}", b.level, b.log2_scale),
            )?;
        }
        Ok(params)
    }
}

/// SHA-256 (hex) of a graph's canonical encoding (ops, weights, shapes, names).
pub fn fingerprint(graph: &Graph) -> String {
    hex(&Sha256::digest(graph.canonical_bytes()))
}

/// The idealised chain `[60, 40 x 256]` used before primes exist.
fn probe_chain() -> Vec<f64> {
    let mut q = vec![60f64.exp2()];
    q.extend(std::iter::repeat_n(
        f64::from(PROBE_PRIME_BITS).exp2(),
        PROBE_LEVELS,
    ));
    q
}

/// The layout plan of `graph` under layout `kind` for `room` and `images` images per run:
/// of the layout's candidates ([`crate::pack::LayoutRules::candidates`]), the one of least
/// [`plan_cost`] on the simulated backend (the first on ties). Deterministic: a server
/// recomputes it to check a stored plan.
pub fn layout_plan(
    graph: &Graph,
    kind: LayoutKind,
    room: Room,
    images: usize,
) -> Result<LayoutPlan> {
    let mut best: Option<(f64, LayoutPlan)> = None;
    for c in candidate_costs(graph, kind, room, images)? {
        if let Ok((_, cost)) = c.cost
            && best.as_ref().is_none_or(|(b, _)| cost < *b)
        {
            best = Some((cost, c.layout));
        }
    }
    best.map(|(_, c)| c)
        .ok_or_else(|| NnError::Plan(format!("no placement of the {kind} layout runs")))
}

/// A candidate placement with its simulated op counts and [`counts_cost`] (or why it does
/// not run).
#[derive(Debug)]
pub struct Candidate {
    /// The placement.
    pub layout: LayoutPlan,
    /// Op counts of one run on the simulated backend and their cost.
    pub cost: Result<(Counts, f64)>,
}

/// Every candidate placement of `kind` for `graph` in `room`, in the layout's order, with its
/// simulated op counts and cost: what [`layout_plan`] chooses from.
pub fn candidate_costs(
    graph: &Graph,
    kind: LayoutKind,
    room: Room,
    images: usize,
) -> Result<Vec<Candidate>> {
    let cands = kind.rules().candidates(graph, room, images)?;
    if cands.is_empty() {
        return Err(NnError::Plan(format!(
            "the {kind} layout offers no placement"
        )));
    }
    let single = cands.len() == 1;
    Ok(cands
        .into_iter()
        .map(|layout| {
            // a single candidate needs no simulation here (the planner simulates the plan)
            let cost = if single {
                Ok((Counts::default(), 0.0))
            } else {
                plan_counts(graph, &layout).map(|c| (c, counts_cost(&c)))
            };
            Candidate { layout, cost }
        })
        .collect())
}

/// Relative cost of each counted operation, in plain rotations (a key switch), from the
/// per-operation timings at N = 2^13 (`henn bench ckks --preset small`, docs/BENCHMARKS.md):
/// a hoisted rotation ~0.7, a product with relinearization ~1.1, a rescale ~0.14, a plaintext
/// product ~0.07, a constant product ~0.025, an addition ~0.017, and a plaintext request
/// 0.02 (the encrypted backend caches encodings across images; a cold encoding is ~0.2).
pub fn counts_cost(c: &Counts) -> f64 {
    c.rotate as f64
        + 0.7 * c.rotate_hoisted as f64
        + 1.1 * (c.mul + c.square) as f64
        + 0.14 * c.rescale as f64
        + 0.07 * c.mul_plain as f64
        + 0.025 * c.mul_const as f64
        + 0.017 * c.add as f64
        + 0.02 * c.encode as f64
}

/// The op counts of one run of `graph` under `layout` on the simulated backend.
pub fn plan_counts(graph: &Graph, layout: &LayoutPlan) -> Result<Counts> {
    let sim =
        Simulated::new(probe_chain(), layout.room.slots).with_complex_pairs(layout.complex_pairs);
    simulate(
        graph,
        layout,
        &sim,
        Scale::from_log2(f64::from(PROBE_PRIME_BITS)),
    )?;
    Ok(crate::backend::Backend::counts(&sim).snapshot())
}

/// The cost of one run of `graph` under `layout` on the simulated backend (the op counts of
/// the layer code weighted by [`counts_cost`]).
pub fn plan_cost(graph: &Graph, layout: &LayoutPlan) -> Result<f64> {
    Ok(counts_cost(&plan_counts(graph, layout)?))
}

/// Runs the layer code on a simulated backend under `layout` (input at the scale the layout
/// encodes inputs at for the default `scale`, [`LayoutPlan::input_scale`]), with the
/// executor's peak ciphertext memory: the same schedule (row streaming included) on
/// ciphertexts of the simulated levels, `2 x N x (level + 1)` words each; a node's inputs and
/// outputs are alive together, temporaries inside a layer (rotations, accumulators) come on
/// top.
pub fn simulate(
    graph: &Graph,
    layout: &LayoutPlan,
    sim: &Simulated,
    scale: Scale,
) -> Result<RunOutput<SimCt>> {
    let input = Packed {
        shape: graph.input_shape().to_vec(),
        cts: vec![sim.input(layout.input_scale(scale)); layout.input.ciphertexts],
        mult: 1.0,
    };
    exec::run_measured(sim, layout, graph, input, |_, _| Ok(()))
}

/// One run of `graph` under `layout` on the simulated backend over the idealised probe chain.
fn probe_run(graph: &Graph, layout: &LayoutPlan) -> Result<RunOutput<SimCt>> {
    let sim =
        Simulated::new(probe_chain(), layout.room.slots).with_complex_pairs(layout.complex_pairs);
    simulate(
        graph,
        layout,
        &sim,
        Scale::from_log2(f64::from(PROBE_PRIME_BITS)),
    )
}

/// Levels `graph` consumes under `layout`, on the idealised probe chain.
pub fn depth_under(graph: &Graph, layout: &LayoutPlan) -> Result<usize> {
    let run = probe_run(graph, layout)?;
    let lvl = run.output.cts.first().map_or(PROBE_LEVELS, |c| c.level);
    Ok(PROBE_LEVELS - lvl)
}

/// The probe room of a layout: the smallest power-of-two slot count it needs for `images`,
/// primes of [`PROBE_PRIME_BITS`].
fn probe_room(graph: &Graph, kind: LayoutKind, images: usize) -> Result<Room> {
    let slots = kind
        .rules()
        .required_slots(graph, images)?
        .next_power_of_two();
    Ok(Room::of_chain(slots, &probe_chain()))
}

/// Levels the model consumes under a layout (one image per run, the probe room).
pub fn depth(graph: &Graph, kind: LayoutKind) -> Result<usize> {
    kind.rules().check_supported(graph)?;
    let room = probe_room(graph, kind, 1)?;
    depth_under(graph, &layout_plan(graph, kind, room, 1)?)
}

/// The packed input of one run of `images` under `layout` on the slots backend `be`
/// (cleartext "ciphertexts" at the top level and `scale`).
pub fn slots_input(
    be: &Slots,
    layout: &LayoutPlan,
    graph: &Graph,
    images: &[Tensor],
    scale: Scale,
) -> Result<Packed<SlotCt>> {
    let cts = layout
        .pack_inputs(images)?
        .iter()
        .map(|v| be.input(v, scale))
        .collect::<Result<Vec<_>>>()?;
    Ok(Packed {
        shape: graph.input_shape().to_vec(),
        cts,
        mult: 1.0,
    })
}

/// Runs `graph` on `images` (one run) on a slots backend over `primes` with `slots` slots
/// under layout `kind` (input at `scale`); returns the outputs (one per image) and the
/// per-layer stats. A cleartext check of the layout's layer code.
pub fn run_slots(
    graph: &Graph,
    kind: LayoutKind,
    images: &[Tensor],
    primes: Vec<f64>,
    scale: Scale,
    slots: usize,
) -> Result<(Vec<Vec<f64>>, Vec<LayerStat>)> {
    let rules = kind.rules();
    rules.check_supported(graph)?;
    let room = Room::of_chain(slots, &primes);
    let layout = layout_plan(graph, kind, room, images.len())?;
    let be = Slots::new(primes, layout.value_slots());
    let input = slots_input(&be, &layout, graph, images, scale)?;
    let (out, stats) = exec::run(&be, &layout, graph, input, |_, _| Ok(()))?;
    let decoded: Vec<Vec<f64>> = out.cts.iter().map(|c| c.v.clone()).collect();
    Ok((
        layout.unpack_outputs(&decoded, out.mult, images.len())?,
        stats,
    ))
}

/// Makes a plan for `graph`: checks support, decides the layout, measures depth and value
/// magnitudes (on `calib`) under it, chooses parameters (or checks `given`), and simulates
/// with the real primes for per-layer expectations, rotations and peak memory.
pub fn make_plan(
    graph: &Graph,
    opts: &PlanOptions,
    calib: &[Tensor],
    given: Option<CkksParamsLiteral>,
) -> Result<(Plan, Arc<CkksParams>)> {
    let rules = opts.layout.rules();
    rules.check_supported(graph)?;
    match opts.images {
        Images::Exactly(n) => plan_for(graph, opts, n.max(1), calib, given),
        Images::UpTo(n) => {
            let (p1, params1) = plan_for(graph, opts, 1, calib, given.clone())?;
            let images = rules.images_per_run(n.max(1), params1.slots());
            if images <= 1 {
                return Ok((p1, params1));
            }
            plan_for(graph, opts, images, calib, given)
        }
    }
}

/// Parameters (literal and checked), layout, depth and magnitude bound, settled.
type Settled = (CkksParamsLiteral, Arc<CkksParams>, LayoutPlan, usize, f64);

/// Parameters, layout, depth and magnitudes that hold each other: parameters chosen for
/// `depth` and values up to `mag` with at least `min_slots` slots, the layout made again for
/// their room, depth and magnitudes measured again under it, until they settle.
#[allow(clippy::too_many_arguments)]
fn settle(
    graph: &Graph,
    opts: &PlanOptions,
    images: usize,
    calib: &[Tensor],
    min_slots: usize,
    mut depth: usize,
    mut mag: f64,
    repack: bool,
) -> Result<Settled> {
    let kind = opts.layout;
    let mut round = 0;
    // a settled plan whose layout needs fewer levels than its parameters have (the probe's
    // room can need more: e.g. more poolings to repack): tried once more with that depth
    let mut fallback: Option<Settled> = None;
    loop {
        let attempt = (|| -> Result<(Settled, usize, f64)> {
            let lit = choose_params(
                depth,
                opts.target_precision_bits,
                min_slots,
                opts.security_bits,
                mag,
            )?;
            let params = CkksParams::new(lit.clone())
                .map_err(|e| NnError::Plan(format!("parameters rejected: {e}")))?;
            let layout = layout_plan(
                graph,
                kind,
                Room::of_params(&params).with_repack(repack),
                images,
            )?;
            // the layout for the real room may differ from the probe's (replicas,
            // multiplexing): measure again under it, with the real primes
            let primes: Vec<f64> = params.q().iter().map(|&q| q as f64).collect();
            let d = depth_under(graph, &layout)?;
            let m = max_abs(graph, &layout, &primes, params.default_scale(), calib)?;
            Ok(((lit, params, layout, depth, m.max(mag)), d, m))
        })();
        let (done, d, m) = match attempt {
            Ok(a) => a,
            // a failed retry with less depth: the plan that had settled
            Err(e) => return fallback.ok_or(e),
        };
        if d <= depth && magnitude_bits(m) <= magnitude_bits(mag) {
            if d < depth && fallback.is_none() {
                fallback = Some(done);
                depth = d;
                continue;
            }
            return Ok(done);
        }
        if let Some(f) = fallback {
            return Ok(f);
        }
        round += 1;
        if round >= MAX_PLAN_ROUNDS {
            return Err(NnError::Plan(format!(
                "the parameters do not settle: after {round} rounds the layout for the chosen parameters still needs depth {d} and values up to {m:.3e} (parameters chosen for depth {depth}, values up to {mag:.3e})"
            )));
        }
        depth = depth.max(d);
        mag = mag.max(m);
    }
}

/// The cost of one run under `layout` with `params`: the simulated op counts weighted by
/// [`counts_cost`] (measured at one ring degree), times the ring degree and the number of
/// primes, which every operation's work grows with.
fn ring_cost(graph: &Graph, layout: &LayoutPlan, params: &CkksParams) -> Result<f64> {
    Ok(counts_cost(&plan_counts(graph, layout)?)
        * params.n() as f64
        * (params.max_level().0 + 1) as f64)
}

fn plan_for(
    graph: &Graph,
    opts: &PlanOptions,
    images: usize,
    calib: &[Tensor],
    given: Option<CkksParamsLiteral>,
) -> Result<(Plan, Arc<CkksParams>)> {
    let kind = opts.layout;
    let rules = kind.rules();
    let images = rules.images_per_run(images, usize::MAX);
    let min_slots = rules.required_slots(graph, images)?;
    let parse = |lit: &CkksParamsLiteral| {
        CkksParams::new(lit.clone()).map_err(|e| NnError::Plan(format!("parameters rejected: {e}")))
    };
    let chosen: (Settled, Option<f64>) = match given {
        Some(lit) => {
            // the user's parameters: the layout for their room, then depth and magnitudes
            // under it, checked with an explanation
            let slots = 1usize << lit.log_n.saturating_sub(1);
            // the user's prime sizes, as many levels as the probe chain (a chain too short
            // is explained by check_params, not by running out of levels here)
            let q0 = lit.q_bits.first().copied().unwrap_or(PROBE_PRIME_BITS);
            let q1 = lit.q_bits.get(1).copied().unwrap_or(q0);
            let primes: Vec<f64> = std::iter::once(q0)
                .chain(std::iter::repeat_n(q1, PROBE_LEVELS))
                .map(|b| f64::from(b).exp2())
                .collect();
            let layout = if slots >= min_slots {
                layout_plan(graph, kind, Room::of_chain(slots, &primes), images).ok()
            } else {
                None
            };
            let (depth, max_abs) = match &layout {
                Some(l) => (
                    depth_under(graph, l)?,
                    max_abs(graph, l, &primes, Scale::from_log2(lit.log_scale), calib)?,
                ),
                None => (depth(graph, kind)?, 0.0),
            };
            check_params(graph, layout.as_ref(), &lit, depth, min_slots, max_abs)?;
            let params = parse(&lit)?;
            let room = Room::of_params(&params);
            let layout = layout_plan(graph, kind, room, images)?;
            // repacked poolings where the user's chain has their levels and they cost less
            let repacked = layout_plan(graph, kind, room.with_repack(true), images)
                .ok()
                .filter(|l| l.values != layout.values)
                .and_then(|l| {
                    let d = depth_under(graph, &l).ok()?;
                    let m = calibrate::max_abs(
                        graph,
                        &l,
                        &primes,
                        Scale::from_log2(lit.log_scale),
                        calib,
                    )
                    .ok()?;
                    check_params(graph, Some(&l), &lit, d, min_slots, m).ok()?;
                    let cheaper = plan_cost(graph, &l).ok()? < plan_cost(graph, &layout).ok()?;
                    cheaper.then_some((l, d, m))
                });
            let plain = (lit.clone(), params.clone(), layout, depth, max_abs);
            match repacked {
                Some((l, d, m)) => {
                    let r = (lit, params, l, d, m);
                    keep_precise(graph, opts, calib, r, plain)?
                }
                None => (plain, None),
            }
        }
        None => {
            let plain = plan_auto(graph, opts, images, calib, min_slots, false)?;
            // repacked poolings (one more level each): planned in full where the layout
            // differs, kept where the parameters they need make a run cheaper
            let room = probe_room(graph, kind, images)?;
            let plain_values = layout_plan(graph, kind, room, images)?.values;
            let differs = layout_plan(graph, kind, room.with_repack(true), images)
                .is_ok_and(|l| l.values != plain_values);
            let repacked = if differs {
                plan_auto(graph, opts, images, calib, min_slots, true).ok()
            } else {
                None
            };
            match repacked {
                Some(r)
                    if ring_cost(graph, &r.2, &r.1)? < ring_cost(graph, &plain.2, &plain.1)? =>
                {
                    keep_precise(graph, opts, calib, r, plain)?
                }
                _ => (plain, None),
            }
        }
    };
    let ((lit, params, layout, depth, max_abs), bits) = chosen;
    let predicted_bits = match bits {
        Some(b) => b,
        None => predicted_bits(graph, &layout, &params, calib)?,
    };
    let sim = Simulated::for_params(&params).with_complex_pairs(layout.complex_pairs);
    let run = simulate(graph, &layout, &sim, params.default_scale())?;
    let mut plan = Plan {
        format: PLAN_FORMAT,
        model: graph.name().to_string(),
        model_fingerprint: fingerprint(graph),
        params: lit,
        layout,
        depth,
        rotations: sim.rotations(),
        rotation_levels: sim.rotation_levels(),
        relin_level: sim.relin_level(),
        output_multiplier: run.output.mult,
        max_abs,
        predicted_bits: (predicted_bits * 10.0).round() / 10.0,
        layers: run.layers,
        peak_bytes: run.peak_bytes,
        fingerprint: String::new(),
    };
    plan.fingerprint = plan.digest()?;
    Ok((plan, params))
}

/// Between a cheaper plan with repacked poolings and the plain one: the repacked plan where
/// its predicted precision ([`predicted_bits`]) meets the target or is no worse than the
/// plain plan's, otherwise the plain one (the repacked chain's smaller primes can cost more
/// bits than the target allows). Returns the choice with its predicted bits.
fn keep_precise(
    graph: &Graph,
    opts: &PlanOptions,
    calib: &[Tensor],
    repacked: Settled,
    plain: Settled,
) -> Result<(Settled, Option<f64>)> {
    let r = predicted_bits(graph, &repacked.2, &repacked.1, calib)?;
    if r >= f64::from(opts.target_precision_bits) {
        return Ok((repacked, Some(r)));
    }
    let p = predicted_bits(graph, &plain.2, &plain.1, calib)?;
    Ok(if r >= p {
        (repacked, Some(r))
    } else {
        (plain, Some(p))
    })
}

/// The parameters and layout chosen automatically for `images` per run (no repacking, or
/// repacked poolings where the layout can: `repack`): probe the layout for an idealised room,
/// its depth and magnitudes, settle parameters for them, then the next ring degree by cost.
fn plan_auto(
    graph: &Graph,
    opts: &PlanOptions,
    images: usize,
    calib: &[Tensor],
    min_slots: usize,
    repack: bool,
) -> Result<Settled> {
    let kind = opts.layout;
    let scale0 = Scale::from_log2(f64::from(PROBE_PRIME_BITS));
    let probe = layout_plan(
        graph,
        kind,
        probe_room(graph, kind, images)?.with_repack(repack),
        images,
    )?;
    let depth = depth_under(graph, &probe)?;
    let mag = max_abs(graph, &probe, &probe_chain(), scale0, calib)?;
    let first = settle(graph, opts, images, calib, min_slots, depth, mag, repack)?;
    // the ring degree by cost: the next ring up has twice the slots, which can mean
    // fewer ciphertexts and rotations (and no complex pairs); its layout is costed on
    // the simulated backend first, and planned in full only when that promises less
    let here = ring_cost(graph, &first.2, &first.1)?;
    let up_room = Room {
        slots: 2 * first.1.slots(),
        ..Room::of_params(&first.1).with_repack(repack)
    };
    let up = match layout_plan(graph, kind, up_room, images) {
        Ok(l) if (first.1.n() as u64) < (1 << 16) => {
            let d = depth_under(graph, &l)?;
            let est = counts_cost(&plan_counts(graph, &l)?)
                * (2 * first.1.n()) as f64
                * (d.max(first.3) + 1) as f64;
            if est < here {
                let m = max_abs(graph, &l, &probe_chain(), scale0, calib)?;
                settle(
                    graph,
                    opts,
                    images,
                    calib,
                    up_room.slots,
                    d.max(depth),
                    m,
                    repack,
                )
                .ok()
                .filter(|u| u.1.n() > first.1.n())
            } else {
                None
            }
        }
        _ => None,
    };
    Ok(match up {
        Some(u) if ring_cost(graph, &u.2, &u.1)? < here => u,
        _ => first,
    })
}
