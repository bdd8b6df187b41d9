//! CKKS parameters for a model: chosen for a security level from its depth, slot needs and
//! value magnitudes, or user-given and checked with an explanation of what does not fit.

use henn_ckks::params::max_log_qp;
use henn_ckks::{CkksParams, CkksParamsLiteral, Scale, SecretDistribution, SecurityPolicy};

use super::simulate;
use crate::backend::simulated::Simulated;
use crate::error::{NnError, Result};
use crate::ir::Graph;
use crate::pack::LayoutPlan;

/// Bits of margin above the largest value at the base prime (noise, rounding).
pub const Q0_MARGIN_BITS: u32 = 8;
/// Largest scale the planner picks.
const MAX_SCALE_BITS: u32 = 45;
/// Bits above the minimum scale that the planner keeps when it prefers IFMA-sized primes.
const IFMA_SCALE_MARGIN: u32 = 8;
/// Most special primes the planner adds from unused security budget.
const MAX_SPECIAL_PRIMES: u32 = 3;

/// Prime size the planner prefers: primes below this many bits run on the IFMA kernels of
/// `henn-ring` (its `IFMA_MODULUS_LIMIT`).
pub fn ifma_prime_bits() -> u32 {
    henn_ring::simd::IFMA_MODULUS_LIMIT.trailing_zeros()
}

/// Bits for values up to `max_abs` (at least 1) plus a sign bit.
pub fn magnitude_bits(max_abs: f64) -> u32 {
    let m = max_abs.max(1.0);
    m.log2().ceil() as u32 + 1
}

/// Chooses CKKS parameters: the smallest N (with N/2 >= `min_slots`) whose security bound
/// holds a base prime with room for values up to `max_abs`, `depth` scale-sized primes and a
/// special prime as large as the largest data prime (more special primes, up to three and up
/// to half the data primes, where the security bound leaves room); the largest scale (up to
/// 2^45) that fits with every prime below the IFMA limit if that scale is at least 8 bits
/// above the minimum, otherwise the largest that fits with primes up to 60 bits.
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
        let candidates = [(ifma_prime_bits(), lo + IFMA_SCALE_MARGIN), (60, lo)]
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
    if s_min + head > 60 {
        return Err(NnError::Plan(format!(
            "values up to {max_abs:.3e} at a scale of 2^{s_min} ({target_precision_bits}-bit precision) need a base prime of {} bits, above the 60 a prime may have; calibrate on inputs like the model's data (values beyond a polynomial's fitted interval grow fast) or lower the target precision",
            s_min + head
        )));
    }
    let q0 = (s_min + head).min(60);
    let need = q0 + d * s_min + q0;
    Err(NnError::Plan(format!(
        "model needs depth D = {depth}, which needs log2(QP) = {q0} (base prime) + {depth} x {s_min} (scale for {target_precision_bits}-bit precision) + {q0} (special prime) = {need} bits > {} at N = 2^16 for {security_bits}-bit security (and N/2 >= {min_slots} slots); reduce the depth (lower-degree polynomial activations, fewer layers) or the target precision",
        max_log_qp(16, security_bits).unwrap_or(0)
    )))
}

/// Checks user-given parameters against a model's needs (depth, `min_slots` slots, values up
/// to `max_abs`) and explains what does not fit; `layout` is the layout plan made for those
/// parameters when there is one (it decides whether a chain one level short still fits).
pub fn check_params(
    graph: &Graph,
    layout: Option<&LayoutPlan>,
    lit: &CkksParamsLiteral,
    depth: usize,
    min_slots: usize,
    max_abs: f64,
) -> Result<()> {
    let levels = lit.q_bits.len().saturating_sub(1);
    let mut problems = Vec::new();
    // one level short is fine when the last linear layer can run at level 0 without a
    // rescale (see `Backend::level0_const_scale`): the simulation with the given chain says
    if levels < depth && !layout.is_some_and(|l| fits_chain(graph, l, lit, max_abs)) {
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
            "the layout needs {min_slots} slots but N = 2^{} has {slots}",
            lit.log_n
        ));
    }
    let head = magnitude_bits(max_abs);
    if let Some(&q0) = lit.q_bits.first()
        && (q0 as f64) < lit.log_scale + head as f64 + 2.0
    {
        problems.push(format!(
            "the base prime ({q0} bits) leaves no room for values up to {max_abs:.3e} at scale 2^{}: use at least {} bits",
            lit.log_scale,
            (lit.log_scale as u32) + head + Q0_MARGIN_BITS
        ));
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
fn fits_chain(graph: &Graph, layout: &LayoutPlan, lit: &CkksParamsLiteral, max_abs: f64) -> bool {
    let sim = Simulated::with_bits(&lit.q_bits, layout.room.slots)
        .with_complex_pairs(layout.complex_pairs);
    let scale = Scale::from_log2(lit.log_scale);
    match simulate(graph, layout, &sim, scale) {
        Ok(run) => run.output.cts.first().is_some_and(|c| {
            let q0 = lit.q_bits.first().copied().unwrap_or(0) as f64;
            c.scale.log2() + magnitude_bits(max_abs) as f64 + 1.0 < q0
        }),
        Err(_) => false,
    }
}
