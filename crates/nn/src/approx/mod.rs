//! Post-training approximation: polynomials in place of non-polynomial activations, so that a
//! trained network runs under CKKS without retraining.
//!
//! * [`fit_grid`] and [`fit_uniform`]: the least-squares polynomial of a degree on an interval,
//!   discrete on evenly spaced points (the reference papers' fixed-range ReLU/Swish table, e.g.
//!   relu-rg5-deg2 = 0.09x^2 + 0.5x + 0.47, is this on 1001 points) or continuous under the
//!   uniform weight (composite Gauss-Legendre quadrature with a breakpoint at ReLU's kink);
//!   both solved in the Chebyshev basis by QR, then converted to powers of x.
//! * [`fit_samples`]: distribution-aware fits (OLA): least squares against the empirical input
//!   distribution of one activation layer, optionally widened by a range factor `r` (the fit
//!   sees the samples times `r`) so the polynomial stays close on the tails.
//! * [`allocate`]: dynamic programming over per-layer options (degree, cost, weighted error):
//!   the allocation of least total weighted error whose total cost fits a budget.
//! * [`influence`]: each activation layer's weight in the loss, `A_i = E[sum_j (dL/da_ij)^2]`,
//!   estimated with the forward pass only: iid noise of variance `s^2` added to the layer's
//!   outputs changes the loss by `dL` with `E[dL^2] ~= s^2 sum_j (dL/da_ij)^2` to first order,
//!   so `A_i ~= mean(dL^2) / s^2` (a perturbation estimate instead of a backward pass).
//! * [`activation_inputs`] captures the inputs of every activation on calibration images, and
//!   [`replace_activations`] rewrites a graph with the chosen polynomials.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::{NnError, Result};
use crate::ir::poly::{chebyshev_eval, chebyshev_to_power, clenshaw, polynomial_op, power_in_x};
use crate::ir::{Activation, Graph, Op};
use crate::reference::{self, activation};
use crate::tensor::Tensor;

/// Highest degree a fit may have. Fits are made, kept, written and (above degree
/// [`POWER_MAX_DEGREE`](crate::ir::poly::POWER_MAX_DEGREE)) evaluated as Chebyshev series, so the limit is one of cost: a
/// degree-63 polynomial takes 6 levels and about 20 ciphertext products per element.
pub const MAX_FIT_DEGREE: usize = 63;

fn approx_err(msg: impl Into<String>) -> NnError {
    NnError::Approx(msg.into())
}

/// A polynomial fit of an activation.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// The function approximated.
    pub activation: Activation,
    /// The interval the fit is made on.
    pub interval: (f64, f64),
    /// Degree.
    pub degree: usize,
    /// Coefficients in powers of x, lowest first (what [`Op::Polynomial`] takes; they lose
    /// digits in f64 at high degree, where [`Fit::eval`] and [`Fit::op`] use the Chebyshev
    /// series).
    pub coeffs: Vec<f64>,
    /// The same polynomial as a Chebyshev series in `t = (x - mid) / half` over `interval`
    /// (well-conditioned at any degree: what the ONNX file stores).
    pub chebyshev: Vec<f64>,
    /// Root-mean-square error under the fit's weight (uniform on the interval, or the
    /// calibration samples).
    pub rms_error: f64,
    /// Largest absolute error on the interval (sampled at 4001 points).
    pub max_error: f64,
}

impl Fit {
    /// The fitted polynomial at `x` (Clenshaw on the Chebyshev series: exact to rounding at
    /// any degree).
    pub fn eval(&self, x: f64) -> f64 {
        chebyshev_eval(&self.chebyshev, self.interval.0, self.interval.1, x)
    }

    /// The IR op of the fit, as the importer builds it from the written ONNX file
    /// ([`polynomial_op`]: powers of x up to degree [`POWER_MAX_DEGREE`](crate::ir::poly::POWER_MAX_DEGREE), the Chebyshev
    /// series above).
    pub fn op(&self) -> Op {
        polynomial_op(&self.chebyshev, self.interval.0, self.interval.1)
    }
}

/// 8-point Gauss-Legendre nodes and weights on [-1, 1].
const GL8: [(f64, f64); 8] = [
    (-0.960_289_856_497_536_3, 0.101_228_536_290_376_26),
    (-0.796_666_477_413_626_7, 0.222_381_034_453_374_47),
    (-0.525_532_409_916_329, 0.313_706_645_877_887_3),
    (-0.183_434_642_495_649_8, 0.362_683_783_378_362),
    (0.183_434_642_495_649_8, 0.362_683_783_378_362),
    (0.525_532_409_916_329, 0.313_706_645_877_887_3),
    (0.796_666_477_413_626_7, 0.222_381_034_453_374_47),
    (0.960_289_856_497_536_3, 0.101_228_536_290_376_26),
];

/// Panels of the composite quadrature on each side of the breakpoint.
const PANELS: usize = 256;

/// Weighted least squares in the Chebyshev basis: `points` are `(t in [-1, 1], weight, f)`;
/// returns the Chebyshev coefficients `c_0..c_d` minimizing `sum w (f - sum c_k T_k(t))^2`
/// (Householder QR of the weighted design matrix: no normal equations).
fn chebyshev_lsq(points: &[(f64, f64, f64)], degree: usize) -> Result<Vec<f64>> {
    let m = points.len();
    let n = degree + 1;
    if m < n {
        return Err(approx_err(format!(
            "{m} points cannot determine a degree-{degree} polynomial"
        )));
    }
    // column-major design matrix and right-hand side, rows scaled by sqrt(weight)
    let mut a = vec![0.0; m * n];
    let mut b = vec![0.0; m];
    for (i, &(t, w, f)) in points.iter().enumerate() {
        let sw = w.max(0.0).sqrt();
        let (mut t0, mut t1) = (1.0, t);
        for k in 0..n {
            let tk = match k {
                0 => 1.0,
                1 => t,
                _ => {
                    let t2 = 2.0 * t * t1 - t0;
                    t0 = t1;
                    t1 = t2;
                    t2
                }
            };
            a[k * m + i] = sw * tk;
        }
        b[i] = sw * f;
    }
    // Householder QR, applied to b as we go
    for k in 0..n {
        let col = &mut a[k * m..(k + 1) * m];
        let norm = col[k..].iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Err(approx_err(format!(
                "the data cannot determine a degree-{degree} polynomial (too few distinct points)"
            )));
        }
        let alpha = if col[k] > 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = col[k..].to_vec();
        v[0] -= alpha;
        let vv: f64 = v.iter().map(|x| x * x).sum();
        if vv > 0.0 {
            for j in k..n {
                let cj = &mut a[j * m + k..(j + 1) * m];
                let s: f64 = cj.iter().zip(&v).map(|(x, y)| x * y).sum::<f64>() * 2.0 / vv;
                for (x, y) in cj.iter_mut().zip(&v) {
                    *x -= s * y;
                }
            }
            let bk = &mut b[k..];
            let s: f64 = bk.iter().zip(&v).map(|(x, y)| x * y).sum::<f64>() * 2.0 / vv;
            for (x, y) in bk.iter_mut().zip(&v) {
                *x -= s * y;
            }
        }
    }
    // back substitution R c = Q^T b
    let mut c = vec![0.0; n];
    for k in (0..n).rev() {
        let mut s = b[k];
        for j in k + 1..n {
            s -= a[j * m + k] * c[j];
        }
        let r = a[k * m + k];
        if r.abs() < 1e-300 {
            return Err(approx_err("singular least-squares system"));
        }
        c[k] = s / r;
    }
    Ok(c)
}

fn check_degree(degree: usize) -> Result<()> {
    if degree == 0 || degree > MAX_FIT_DEGREE {
        return Err(approx_err(format!(
            "degree {degree} is outside 1..={MAX_FIT_DEGREE}; use a degree the polynomial circuits evaluate"
        )));
    }
    Ok(())
}

fn max_error_on(a: Activation, cheb: &[f64], (lo, hi): (f64, f64)) -> f64 {
    (0..=4000)
        .map(|i| {
            let x = lo + (hi - lo) * i as f64 / 4000.0;
            (activation(a, x) - chebyshev_eval(cheb, lo, hi, x)).abs()
        })
        .fold(0.0, f64::max)
}

/// The fit of `degree` on weighted points `(t, weight, f)` (`t` in [-1, 1] mapping onto
/// `[lo, hi]`): least squares in the Chebyshev basis, powers of x, the RMS error under the
/// points' weights (or on `samples` when given) and the largest error on the interval.
fn solve(
    a: Activation,
    pts: &[(f64, f64, f64)],
    (lo, hi): (f64, f64),
    degree: usize,
    samples: Option<&[f64]>,
) -> Result<Fit> {
    let (mid, half) = ((lo + hi) / 2.0, (hi - lo) / 2.0);
    let cheb = chebyshev_lsq(pts, degree)?;
    let coeffs = power_in_x(&chebyshev_to_power(&cheb), mid, half);
    let rms_error = match samples {
        Some(s) => mse_of(a, &cheb, (lo, hi), s).sqrt(),
        None => pts
            .iter()
            .map(|&(t, w, f)| w * (f - clenshaw(&cheb, t)).powi(2))
            .sum::<f64>()
            .sqrt(),
    };
    let max_error = max_error_on(a, &cheb, (lo, hi));
    Ok(Fit {
        activation: a,
        interval: (lo, hi),
        degree,
        coeffs,
        chebyshev: cheb,
        rms_error,
        max_error,
    })
}

/// The least-squares polynomial of `degree` for activation `a` on `[lo, hi]` under the uniform
/// weight (continuous: composite Gauss-Legendre quadrature with a breakpoint at 0).
pub fn fit_uniform(a: Activation, lo: f64, hi: f64, degree: usize) -> Result<Fit> {
    check_degree(degree)?;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(approx_err(format!(
            "the interval [{lo}, {hi}] is empty or not finite"
        )));
    }
    let (mid, half) = ((lo + hi) / 2.0, (hi - lo) / 2.0);
    // breakpoints: the ends and 0 where it is inside (ReLU's kink)
    let mut breaks = vec![lo];
    if lo < 0.0 && hi > 0.0 {
        breaks.push(0.0);
    }
    breaks.push(hi);
    let mut pts = Vec::with_capacity(breaks.len() * PANELS * GL8.len());
    for w in breaks.windows(2) {
        let h = (w[1] - w[0]) / PANELS as f64;
        for p in 0..PANELS {
            let a0 = w[0] + h * p as f64;
            for &(node, weight) in &GL8 {
                let x = a0 + h * (node + 1.0) / 2.0;
                pts.push((
                    (x - mid) / half,
                    weight * h / 2.0 / (hi - lo),
                    activation(a, x),
                ));
            }
        }
    }
    solve(a, &pts, (lo, hi), degree, None)
}

/// The discrete least-squares polynomial of `degree` for activation `a` on `points` evenly
/// spaced points of `[lo, hi]` (ends included): how the reference papers made their table
/// (`numpy.polyfit` on `linspace(lo, hi, 1001)` reproduces it to the printed digits; the
/// continuous fit of [`fit_uniform`] differs in the fourth decimal).
pub fn fit_grid(a: Activation, lo: f64, hi: f64, degree: usize, points: usize) -> Result<Fit> {
    check_degree(degree)?;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(approx_err(format!(
            "the interval [{lo}, {hi}] is empty or not finite"
        )));
    }
    if points <= degree {
        return Err(approx_err(format!(
            "{points} points cannot determine a degree-{degree} polynomial"
        )));
    }
    let (mid, half) = ((lo + hi) / 2.0, (hi - lo) / 2.0);
    let w = 1.0 / points as f64;
    let pts: Vec<(f64, f64, f64)> = (0..points)
        .map(|i| {
            let x = lo + (hi - lo) * i as f64 / (points - 1) as f64;
            ((x - mid) / half, w, activation(a, x))
        })
        .collect();
    solve(a, &pts, (lo, hi), degree, None)
}

/// Points of the reference papers' fits ([`fit_grid`]).
pub const REFERENCE_GRID_POINTS: usize = 1001;

/// Largest number of samples a distribution-aware fit uses (an even subsample beyond).
pub const MAX_FIT_SAMPLES: usize = 65_536;

/// The least-squares polynomial of `degree` for activation `a` against the empirical
/// distribution of `samples` (the inputs of one activation layer on calibration data), each
/// sample widened by the range factor `r >= 1` (the fit sees `r x`: more weight on the tails,
/// OLA's scaled distribution). The interval is the widened samples' range; `rms_error` is the
/// root-mean-square error on the samples themselves (not widened).
pub fn fit_samples(a: Activation, samples: &[f64], r: f64, degree: usize) -> Result<Fit> {
    check_degree(degree)?;
    if !(r.is_finite() && r >= 1.0) {
        return Err(approx_err(format!("range factor {r} must be >= 1")));
    }
    let finite: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.len() != samples.len() {
        return Err(approx_err("calibration samples contain NaN or infinity"));
    }
    let step = finite.len().div_ceil(MAX_FIT_SAMPLES).max(1);
    let xs: Vec<f64> = finite.iter().step_by(step).map(|v| v * r).collect();
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if xs.len() <= degree || lo >= hi {
        return Err(approx_err(format!(
            "{} calibration samples spanning [{lo}, {hi}] cannot determine a degree-{degree} fit; calibrate on more images",
            xs.len()
        )));
    }
    let (mid, half) = ((lo + hi) / 2.0, (hi - lo) / 2.0);
    let w = 1.0 / xs.len() as f64;
    let pts: Vec<(f64, f64, f64)> = xs
        .iter()
        .map(|&x| ((x - mid) / half, w, activation(a, x)))
        .collect();
    solve(a, &pts, (lo, hi), degree, Some(&finite))
}

/// Mean squared error of `coeffs` against activation `a` on `samples`.
pub fn mse_on(a: Activation, coeffs: &[f64], samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples
        .iter()
        .map(|&x| (activation(a, x) - reference::horner(coeffs, x)).powi(2))
        .sum::<f64>()
        / samples.len() as f64
}

/// Mean squared error of the Chebyshev series `cheb` on `[lo, hi]` against activation `a` on
/// `samples`.
fn mse_of(a: Activation, cheb: &[f64], (lo, hi): (f64, f64), samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples
        .iter()
        .map(|&x| (activation(a, x) - chebyshev_eval(cheb, lo, hi, x)).powi(2))
        .sum::<f64>()
        / samples.len() as f64
}

/// One option of one layer for [`allocate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerOption {
    /// Degree (or any label the caller maps back).
    pub degree: usize,
    /// Cost in integer units.
    pub cost: u64,
    /// Weighted error (influence x mean squared fit error).
    pub error: f64,
}

/// Largest cost budget [`allocate`] takes (its table has `layers x (budget + 1)` entries).
pub const MAX_BUDGET: u64 = 1 << 22;

/// Dynamic programming (OLA's Algorithm 1): per layer, one option, minimizing the total error
/// subject to total cost <= `budget`. Returns the chosen option index per layer. `O(layers x
/// budget x options)`.
pub fn allocate(options: &[Vec<LayerOption>], budget: u64) -> Result<Vec<usize>> {
    if budget > MAX_BUDGET {
        return Err(approx_err(format!(
            "budget {budget} is above {MAX_BUDGET} cost units: use coarser units"
        )));
    }
    let k = budget as usize + 1;
    // best[k]: least error of the layers so far with total cost exactly <= k
    let mut best = vec![0.0f64; k];
    let mut choice: Vec<Vec<u32>> = Vec::with_capacity(options.len());
    for (l, opts) in options.iter().enumerate() {
        if opts.is_empty() {
            return Err(approx_err(format!("layer {l} has no options")));
        }
        let mut next = vec![f64::INFINITY; k];
        let mut pick = vec![u32::MAX; k];
        for (c, slot) in next.iter_mut().enumerate() {
            for (o, opt) in opts.iter().enumerate() {
                let Some(rest) = (c as u64).checked_sub(opt.cost) else {
                    continue;
                };
                let e = best[rest as usize] + opt.error;
                if e < *slot {
                    *slot = e;
                    pick[c] = o as u32;
                }
            }
        }
        best = next;
        choice.push(pick);
    }
    if !best.last().is_some_and(|e| e.is_finite()) {
        let least: u64 = options
            .iter()
            .map(|o| o.iter().map(|x| x.cost).min().unwrap_or(0))
            .sum();
        return Err(approx_err(format!(
            "budget {budget} is below the cheapest allocation ({least})"
        )));
    }
    // walk back from the full budget
    let mut c = budget;
    let mut out = vec![0usize; options.len()];
    for l in (0..options.len()).rev() {
        let o = choice[l][c as usize] as usize;
        out[l] = o;
        c -= options[l][o].cost;
    }
    Ok(out)
}

/// The nodes with a non-polynomial activation, in graph order: `(node index, activation)`.
pub fn activation_nodes(g: &Graph) -> Vec<(usize, Activation)> {
    g.nodes()
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match n.op {
            Op::Activation(a) => Some((i, a)),
            _ => None,
        })
        .collect()
}

/// The inputs of every non-polynomial activation over `images` (plaintext reference), keyed
/// by node index; at most `max_per_layer` values per layer (an even subsample).
pub fn activation_inputs(
    g: &Graph,
    images: &[Tensor],
    max_per_layer: usize,
) -> Result<HashMap<usize, Vec<f64>>> {
    let nodes = activation_nodes(g);
    let mut out: HashMap<usize, Vec<f64>> = nodes.iter().map(|&(i, _)| (i, Vec::new())).collect();
    for x in images {
        let vals = reference::run_all(g, x)?;
        for &(i, _) in &nodes {
            let v = &vals[g.nodes()[i].inputs[0]];
            if let Some(s) = out.get_mut(&i) {
                s.extend_from_slice(v.data());
            }
        }
    }
    for s in out.values_mut() {
        if s.len() > max_per_layer {
            let step = s.len().div_ceil(max_per_layer);
            *s = s.iter().step_by(step).copied().collect();
        }
    }
    Ok(out)
}

/// Cross-entropy of `logits` against class `label`.
fn cross_entropy(logits: &[f64], label: usize) -> f64 {
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + logits.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    lse - logits.get(label).copied().unwrap_or(m)
}

/// Runs `g` on `x` with `noise` added to the output of node `at` (if any).
fn run_perturbed(g: &Graph, x: &Tensor, at: Option<(usize, &[f64])>) -> Result<Tensor> {
    let mut vals: Vec<Option<Tensor>> = vec![None; g.values().len()];
    vals[g.input()] = Some(x.clone().reshape(g.input_shape().to_vec())?);
    for (i, node) in g.nodes().iter().enumerate() {
        let ins: Vec<&Tensor> = node
            .inputs
            .iter()
            .map(|&v| {
                vals[v].as_ref().ok_or_else(|| {
                    NnError::InvalidGraph(format!("value {v} used before it is computed"))
                })
            })
            .collect::<Result<_>>()?;
        let mut out = reference::eval_op(&node.op, &ins)?;
        if let Some((n, noise)) = at
            && n == i
        {
            let data: Vec<f64> = out
                .data()
                .iter()
                .zip(noise.iter().chain(std::iter::repeat(&0.0)))
                .map(|(v, e)| v + e)
                .collect();
            out = Tensor::new(out.shape().to_vec(), data)?;
        }
        vals[node.output] = Some(out);
    }
    vals[g.output()]
        .take()
        .ok_or_else(|| NnError::InvalidGraph("output not computed".into()))
}

/// Each activation layer's influence on the loss, `A_i = mean over images of sum_j
/// (dL/da_ij)^2` with `L` the cross-entropy against `labels` (the plaintext prediction where
/// a label is `None`), estimated with forward passes only: `A_i ~= mean(dL^2) / sigma^2` for
/// iid Gaussian noise of standard deviation `sigma` on the layer's outputs (`draws` noise
/// draws per image, seeded). Keyed by node index.
pub fn influence(
    g: &Graph,
    images: &[Tensor],
    labels: &[Option<usize>],
    sigma: f64,
    draws: usize,
    seed: u64,
) -> Result<HashMap<usize, f64>> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(approx_err(format!("noise level {sigma} must be positive")));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let nodes = activation_nodes(g);
    let mut sums: HashMap<usize, f64> = nodes.iter().map(|&(i, _)| (i, 0.0)).collect();
    let mut count = 0usize;
    for (k, x) in images.iter().enumerate() {
        let base = run_perturbed(g, x, None)?;
        let label = labels
            .get(k)
            .copied()
            .flatten()
            .or_else(|| base.argmax())
            .unwrap_or(0);
        let l0 = cross_entropy(base.data(), label);
        for &(i, _) in &nodes {
            let n = numel_of(g, g.nodes()[i].output);
            for _ in 0..draws.max(1) {
                let noise: Vec<f64> = (0..n).map(|_| sigma * gaussian(&mut rng)).collect();
                let out = run_perturbed(g, x, Some((i, &noise)))?;
                let d = cross_entropy(out.data(), label) - l0;
                if let Some(s) = sums.get_mut(&i) {
                    *s += d * d;
                }
            }
        }
        count += draws.max(1);
    }
    let denom = (count.max(1) as f64) * sigma * sigma;
    Ok(sums.into_iter().map(|(i, s)| (i, s / denom)).collect())
}

/// A standard normal sample (Box-Muller).
fn gaussian(rng: &mut ChaCha20Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn numel_of(g: &Graph, v: usize) -> usize {
    g.shape(v).iter().product()
}

/// `g` with the activation of every node in `polys` (by node index) replaced by the
/// polynomial (powers of x, lowest first); other nodes unchanged.
pub fn replace_activations(g: &Graph, polys: &HashMap<usize, Vec<f64>>) -> Result<Graph> {
    let ops: HashMap<usize, Op> = polys
        .iter()
        .map(|(&i, c)| (i, Op::Polynomial { coeffs: c.clone() }))
        .collect();
    replace_activations_with(g, &ops)
}

/// `g` with the activation of every node in `ops` (by node index) replaced by the given
/// polynomial op ([`Op::Polynomial`] or [`Op::Chebyshev`]); other nodes unchanged.
pub fn replace_activations_with(g: &Graph, ops: &HashMap<usize, Op>) -> Result<Graph> {
    if let Some((_, op)) = ops
        .iter()
        .find(|(_, op)| !matches!(op, Op::Polynomial { .. } | Op::Chebyshev { .. }))
    {
        return Err(approx_err(format!(
            "{} is not a polynomial to replace an activation with",
            op.kind()
        )));
    }
    let mut out = g.empty_like();
    let mut map: HashMap<usize, usize> = HashMap::new();
    map.insert(g.input(), out.input());
    for (i, n) in g.nodes().iter().enumerate() {
        let inputs = n
            .inputs
            .iter()
            .map(|v| {
                map.get(v).copied().ok_or_else(|| {
                    NnError::InvalidGraph(format!("node '{}' input missing", n.name))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let op = match (ops.get(&i), &n.op) {
            (Some(p), Op::Activation(_)) => p.clone(),
            (Some(_), other) => {
                return Err(approx_err(format!(
                    "node '{}' is {}, not a non-polynomial activation",
                    n.name,
                    other.kind()
                )));
            }
            (None, op) => op.clone(),
        };
        let name = g
            .value(n.output)
            .map(|v| v.name.clone())
            .unwrap_or_else(|| format!("{}_out", n.name));
        let v = out.add_node(n.name.clone(), op, inputs, name)?;
        map.insert(n.output, v);
    }
    let o = map
        .get(&g.output())
        .copied()
        .ok_or_else(|| NnError::InvalidGraph("output missing".into()))?;
    out.set_output(o)?;
    Ok(out)
}

/// How [`approximate`] chooses each layer's polynomial.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// The reference papers' fit on `[-range, range]` (discrete, [`fit_grid`]) for every layer;
    /// no calibration data needed.
    Reference {
        /// Half-width of the interval.
        range: f64,
        /// Degree.
        degree: usize,
    },
    /// The same degree in every layer, each fitted to its layer's input distribution.
    Uniform {
        /// Degree.
        degree: usize,
    },
    /// OLA: per-layer degrees from `degrees` chosen by [`allocate`] to minimize the sum of
    /// influence x mean squared fit error within the cost `budget` (costs on a grid of
    /// budget / 20,000, so within one grid unit per layer of it).
    Ola {
        /// Candidate degrees.
        degrees: Vec<usize>,
        /// Total cost allowed.
        budget: Budget,
        /// For a network deeper than one modulus chain: the levels a bootstrap leaves. Each
        /// level a polynomial consumes then also costs `1 / L` of a bootstrap of its
        /// ciphertexts ([`crate::plan::bootstrap::BOOTSTRAP_COST`]), the amortized share of
        /// the bootstraps its depth implies.
        bootstrap_levels: Option<usize>,
    },
}

/// A cost budget for [`Method::Ola`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// In planner cost units ([`crate::plan::counts_cost`] of the polynomial layers).
    Cost(f64),
    /// The cost of the same degree in every layer (OLA at matched cost).
    UniformDegree(usize),
}

/// What [`approximate`] did to one activation layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerChoice {
    /// Node name.
    pub node: String,
    /// Node index in the graph.
    pub index: usize,
    /// The fit (degree, interval, coefficients, errors).
    pub fit: Fit,
    /// Root-mean-square error on the layer's calibration inputs (NaN without calibration).
    pub calib_rms: f64,
    /// Influence `A_i` (OLA only).
    pub influence: Option<f64>,
    /// Planner cost of the layer's polynomial (elements x cost per element).
    pub cost: f64,
    /// Multiplicative depth of the layer's polynomial.
    pub depth: usize,
}

/// Depth and cost per element of a degree-`d` polynomial as the layer code evaluates it: a
/// one-element graph with a full degree-`d` polynomial planned and run on the simulated
/// backend ([`crate::plan::plan_counts`], [`crate::plan::counts_cost`]).
pub fn degree_cost(degree: usize) -> Result<(usize, f64)> {
    use crate::pack::{LayoutKind, Room};
    let mut g = Graph::new("poly", "x", vec![1, 1]);
    let coeffs: Vec<f64> = (0..=degree).map(|k| 1.0 / (k + 1) as f64).collect();
    // the form the importer gives a fit of this degree; a Chebyshev series on [-1, 1], as
    // after its change of interval is folded into the layer before it
    let op = polynomial_op(&coeffs, -1.0, 1.0);
    let y = g.add_node("p", op, vec![g.input()], "y")?;
    g.set_output(y)?;
    let depth = crate::plan::depth(&g, LayoutKind::Batch)?;
    let primes: Vec<f64> = std::iter::repeat_n(40f64.exp2(), depth + 2).collect();
    let layout = crate::plan::layout_plan(&g, LayoutKind::Batch, Room::of_chain(1024, &primes), 1)?;
    let counts = crate::plan::plan_counts(&g, &layout)?;
    Ok((depth, crate::plan::counts_cost(&counts)))
}

/// Grid points of the DP's cost axis.
const COST_STEPS: f64 = 20_000.0;

/// Replaces every non-polynomial activation of `g` by a polynomial chosen by `method`:
/// `calib` are calibration inputs (with `labels` for the influence; `None` = the plaintext
/// prediction), `range_factor` widens the calibration distribution (OLA's `r`). Returns the
/// new graph and one [`LayerChoice`] per replaced layer.
pub fn approximate(
    g: &Graph,
    calib: &[Tensor],
    labels: &[Option<usize>],
    method: &Method,
    range_factor: f64,
) -> Result<(Graph, Vec<LayerChoice>)> {
    let nodes = activation_nodes(g);
    if nodes.is_empty() {
        return Err(approx_err(
            "the model has no non-polynomial activation to approximate",
        ));
    }
    let needs_calib = !matches!(method, Method::Reference { .. });
    if needs_calib && calib.is_empty() {
        return Err(approx_err(
            "this method fits each layer to its input distribution: give calibration images",
        ));
    }
    let inputs = if calib.is_empty() {
        HashMap::new()
    } else {
        activation_inputs(g, calib, MAX_FIT_SAMPLES)?
    };
    let elements = |i: usize| numel_of(g, g.nodes()[i].inputs[0]) as f64;
    let mut cost_cache: HashMap<usize, (usize, f64)> = HashMap::new();
    let mut cost_of = |d: usize| -> Result<(usize, f64)> {
        if let Some(c) = cost_cache.get(&d) {
            return Ok(*c);
        }
        let c = degree_cost(d)?;
        cost_cache.insert(d, c);
        Ok(c)
    };
    let fit_layer = |i: usize, a: Activation, d: usize| -> Result<Fit> {
        match method {
            Method::Reference { range, .. } => {
                fit_grid(a, -range, *range, d, REFERENCE_GRID_POINTS)
            }
            _ => fit_samples(a, &inputs[&i], range_factor, d),
        }
    };
    let calib_rms = |i: usize, fit: &Fit, a: Activation| {
        inputs.get(&i).map_or(f64::NAN, |s| {
            mse_of(a, &fit.chebyshev, fit.interval, s).sqrt()
        })
    };
    let mut choices = Vec::with_capacity(nodes.len());
    match method {
        Method::Reference { degree, .. } | Method::Uniform { degree } => {
            let (depth, per) = cost_of(*degree)?;
            for &(i, a) in &nodes {
                let fit = fit_layer(i, a, *degree)?;
                choices.push(LayerChoice {
                    node: g.nodes()[i].name.clone(),
                    index: i,
                    calib_rms: calib_rms(i, &fit, a),
                    fit,
                    influence: None,
                    cost: per * elements(i),
                    depth,
                });
            }
        }
        Method::Ola {
            degrees,
            budget,
            bootstrap_levels,
        } => {
            if *bootstrap_levels == Some(0) {
                return Err(approx_err("a bootstrap must leave at least one level"));
            }
            let boot = |depth: usize| {
                bootstrap_levels.map_or(0.0, |l| {
                    depth as f64 / l as f64 * crate::plan::bootstrap::BOOTSTRAP_COST
                })
            };
            if degrees.is_empty() {
                return Err(approx_err("OLA needs candidate degrees"));
            }
            let infl = influence(g, calib, labels, 1e-3, 2, 0x01a)?;
            // per layer and degree: fit, weighted error, cost
            let mut table: Vec<Vec<(Fit, f64, f64, usize)>> = Vec::with_capacity(nodes.len());
            for &(i, a) in &nodes {
                let mut row = Vec::with_capacity(degrees.len());
                for &d in degrees {
                    let fit = fit_layer(i, a, d)?;
                    let (depth, per) = cost_of(d)?;
                    let per = per + boot(depth);
                    let err = infl[&i] * fit.rms_error * fit.rms_error;
                    row.push((fit, err, per * elements(i), depth));
                }
                table.push(row);
            }
            let budget = match *budget {
                Budget::Cost(c) => c,
                Budget::UniformDegree(d) => {
                    let (depth, per) = cost_of(d)?;
                    let per = per + boot(depth);
                    nodes.iter().map(|&(i, _)| per * elements(i)).sum()
                }
            };
            if !(budget.is_finite() && budget > 0.0) {
                return Err(approx_err(format!("budget {budget} must be positive")));
            }
            let unit = budget / COST_STEPS;
            let opts: Vec<Vec<LayerOption>> = table
                .iter()
                .map(|row| {
                    row.iter()
                        .zip(degrees)
                        .map(|((_, err, cost, _), &d)| LayerOption {
                            degree: d,
                            // nearest unit; the budget gets one unit of slack per layer
                            // so that a matched uniform allocation always fits
                            cost: (cost / unit).round().max(0.0) as u64,
                            error: *err,
                        })
                        .collect()
                })
                .collect();
            let least: f64 = table
                .iter()
                .map(|row| row.iter().map(|r| r.2).fold(f64::INFINITY, f64::min))
                .sum();
            if least > budget * (1.0 + 1e-9) {
                return Err(approx_err(format!(
                    "budget {budget:.1} is below the cheapest allocation of these degrees ({least:.1}); raise it or add lower degrees"
                )));
            }
            let pick = allocate(&opts, COST_STEPS as u64 + nodes.len() as u64)?;
            for ((&(i, a), row), p) in nodes.iter().zip(table).zip(pick) {
                let (fit, _, cost, depth) = row
                    .into_iter()
                    .nth(p)
                    .ok_or_else(|| approx_err("option out of range"))?;
                choices.push(LayerChoice {
                    node: g.nodes()[i].name.clone(),
                    index: i,
                    calib_rms: calib_rms(i, &fit, a),
                    fit,
                    influence: infl.get(&i).copied(),
                    cost,
                    depth,
                });
            }
        }
    }
    let ops: HashMap<usize, Op> = choices.iter().map(|c| (c.index, c.fit.op())).collect();
    Ok((replace_activations_with(g, &ops)?, choices))
}

/// The ONNX edits that put `choices` into the model `g` was imported from: each activation's
/// input and output tensor names (the importer keeps ONNX tensor names) and its polynomial.
pub fn onnx_replacements(
    g: &Graph,
    choices: &[LayerChoice],
) -> Result<Vec<crate::onnx::edit::PolyReplacement>> {
    choices
        .iter()
        .map(|c| {
            let n = g
                .nodes()
                .get(c.index)
                .ok_or_else(|| approx_err(format!("node {} out of range", c.index)))?;
            let name = |v: usize| {
                g.value(v)
                    .map(|x| x.name.clone())
                    .ok_or_else(|| approx_err(format!("value {v} of '{}' missing", n.name)))
            };
            Ok(crate::onnx::edit::PolyReplacement {
                input: name(n.inputs[0])?,
                output: name(n.output)?,
                coeffs: c.fit.chebyshev.clone(),
                interval: c.fit.interval,
            })
        })
        .collect()
}
