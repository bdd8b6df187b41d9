//! The slots backend: cleartext slot vectors in the packed layout, exact f64 arithmetic, with
//! the same level and scale bookkeeping (and checks) as the encrypted backend; optionally
//! with CKKS's noise added where the encrypted backend's operations add it ([`Noise`]), to
//! predict the precision of an encrypted run.

use henn_ckks::{CkksParams, Scale, SecretDistribution};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::simulated::{
    check_add, check_drop, check_mul_levels, check_pt_level, check_rescale, check_slots,
};
use super::{Backend, OpCounts, matrix_outputs, matrix_term, scale_of};
use crate::error::{ExecError, Result};

/// A cleartext "ciphertext": the slot values plus level and scale.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotCt {
    /// Slot values (true values, not multiplied by the scale).
    pub v: Vec<f64>,
    /// Level.
    pub level: usize,
    /// Scale.
    pub scale: Scale,
    /// Three parts: a square not yet relinearized (its key switch's noise still to come).
    pub unrelinearized: bool,
    /// A plaintext's encoding error, not yet drawn: its standard deviation in value units (0
    /// without noise, and for every ciphertext). A product draws it, or the sum of a
    /// plaintext matrix's products draws their errors at once (see
    /// [`Slots::mul_plain_matrix`](Backend::mul_plain_matrix)).
    pub pending: f64,
}

/// The slots backend over a modulus chain.
#[derive(Debug)]
pub struct Slots {
    primes: Vec<f64>,
    slots: usize,
    counts: OpCounts,
    noise: Option<Noise>,
}

/// CKKS's noise as it reaches the slots: for each operation that adds error to a ciphertext,
/// the standard deviation of the error of one slot's real part, in units of `1 / scale`
/// (a ciphertext at scale `Δ` gets slot errors of standard deviation `std / Δ`). An error
/// polynomial with independent coefficients of variance `v` puts `N v / 2` on the real part
/// of each slot (the canonical embedding sums `N` coefficients times roots of unity).
///
/// - fresh secret-key encryption: `v = σ² + 1/12` (the error and the encoding's rounding);
/// - rescaling (and the ModDown of key switching): `v = (1 + h) / 12`, the rounding of
///   `c_0 + c_1 s` with a secret of `h` non-zero coefficients;
/// - key switching at level `l`: `v = N σ² / 12 · Σ_d k_d (Q_d / P)² + k_P (1 + h) / 12`:
///   each centred digit `d` of `k_d` primes (uniform below `Q_d`, lifted to `Q ∪ P` by fast
///   base conversion, which sums `k_d` such terms) times the key's error, divided by the
///   special modulus `P` of `k_P` primes, plus the ModDown's rounding (again a fast base
///   conversion, of `k_P` terms).
///
/// - encoding a plaintext: the rounding of its coefficients at its own scale; measured
///   (`tests/noise.rs`), it puts `N / 12` on a slot's real part (`v = 1/6`), twice what
///   independent uniform roundings would.
///   Small against a weight, but a product spreads it over every slot, the garbage slots a
///   layout leaves off its grid (values as large as any) included, and a rotate-and-sum
///   gathers hundreds of those slots into one output.
///
/// Constants are rounded exactly as CKKS rounds them (an integer times the ciphertext).
///
/// With two images per complex slot ([`Noise::paired`]) the encrypted ciphertexts carry a
/// quarter of the scale the slots backend keeps (inputs at a quarter scale, pair products
/// at four times the product of the scales), so every ciphertext error is 4x larger against
/// the values, and a pair product conjugates one operand: half its key-switch error lands
/// on each image of that operand.
#[derive(Debug, Clone, PartialEq)]
pub struct Noise {
    fresh: f64,
    rescale: f64,
    encode: f64,
    key_switch: Vec<f64>,
    pairs: bool,
}

impl Noise {
    /// The noise of CKKS parameters `params` (error σ of `henn_ring::sample`).
    pub fn for_params(params: &CkksParams) -> Self {
        let n = params.n() as f64;
        let sigma2 = henn_ring::sample::GAUSSIAN_SIGMA.powi(2);
        let h = match params.literal().secret {
            SecretDistribution::Ternary => 2.0 * n / 3.0,
            SecretDistribution::SparseTernary { hamming_weight } => hamming_weight as f64,
        };
        let slot = |v: f64| (n * v / 2.0).sqrt();
        let round = (1.0 + h) / 12.0;
        let log_p: f64 = params.p().iter().map(|&p| (p as f64).log2()).sum();
        let specials = params.p().len().max(1) as f64;
        let alpha = params.alpha().max(1);
        let log_q: Vec<f64> = params.q().iter().map(|&q| (q as f64).log2()).collect();
        let key_switch = (0..log_q.len())
            .map(|l| {
                // a digit of k primes, lifted by fast base conversion, has k times the
                // variance of one uniform below its modulus
                let digits: f64 = log_q[..=l]
                    .chunks(alpha)
                    .map(|d| d.len() as f64 * (2.0 * (d.iter().sum::<f64>() - log_p)).exp2())
                    .sum();
                slot(n * sigma2 / 12.0 * digits + specials * round)
            })
            .collect();
        Self {
            fresh: slot(sigma2 + 1.0 / 12.0),
            rescale: slot(round),
            encode: slot(1.0 / 6.0),
            key_switch,
            pairs: false,
        }
    }

    /// The noise of a run with two images per complex slot (see above).
    pub fn paired(self) -> Self {
        Self {
            fresh: 4.0 * self.fresh,
            rescale: 4.0 * self.rescale,
            key_switch: self.key_switch.iter().map(|k| 4.0 * k).collect(),
            pairs: true,
            ..self
        }
    }

    /// Slot error (times the scale) of a fresh encryption.
    pub fn fresh(&self) -> f64 {
        self.fresh
    }

    /// Slot error (times the scale) of a rescale.
    pub fn rescale(&self) -> f64 {
        self.rescale
    }

    /// Slot error (times the scale) of a plaintext's encoding.
    pub fn encode(&self) -> f64 {
        self.encode
    }

    /// Slot error (times the scale) of a key switch at `level`.
    pub fn key_switch(&self, level: usize) -> f64 {
        self.key_switch
            .get(level)
            .or(self.key_switch.last())
            .copied()
            .unwrap_or(0.0)
    }
}

/// Adds independent Gaussian errors of standard deviation `std` to `v`, drawn from a
/// generator seeded by the values themselves and `tag` (the same operation on the same
/// values gets the same errors however the executor's threads interleave, so a prediction is
/// reproducible).
fn add_noise(v: &mut [f64], std: f64, tag: u64) {
    if std == 0.0 || v.is_empty() {
        return;
    }
    draw_noise(v, tag, |_| std);
}

/// [`add_noise`] with standard deviation `std(k)` in slot `k`.
fn draw_noise(v: &mut [f64], tag: u64, std: impl Fn(usize) -> f64) {
    // four interleaved hash chains (one chain's multiply latency bounded the hash of a
    // vector), then the ziggurat (one uniform and a table lookup for most samples: planning
    // adds noise to every slot of every operation, and Box-Muller's logarithm, sine and
    // cosine were a quarter of a CIFAR CNN's plan) on the fast xoshiro generator (a
    // simulation's noise, not a secret: ChaCha8's refills were a tenth of a plan)
    let mix = |h: u64, x: f64| {
        (h ^ x.to_bits())
            .wrapping_mul(0x100_0000_01b3)
            .rotate_left(29)
    };
    let mut hs = [0x9e37_79b9_7f4a_7c15 ^ tag, 1, 2, 3];
    let mut quads = v.chunks_exact(4);
    for q in &mut quads {
        for (h, &x) in hs.iter_mut().zip(q) {
            *h = mix(*h, x);
        }
    }
    for (h, &x) in hs.iter_mut().zip(quads.remainder()) {
        *h = mix(*h, x);
    }
    let seed = hs.iter().fold(0u64, |a, &h| mix(a, f64::from_bits(h)));
    let mut rng = SmallRng::seed_from_u64(seed);
    for (k, x) in v.iter_mut().enumerate() {
        let z: f64 = rng.sample(StandardNormal);
        *x += z * std(k);
    }
}

/// A plaintext's values with its pending encoding error drawn (as
/// [`add_noise`] on the values, seeded by them and the level).
fn drawn(pt: &SlotCt) -> std::borrow::Cow<'_, [f64]> {
    if pt.pending == 0.0 {
        return std::borrow::Cow::Borrowed(&pt.v);
    }
    let mut v = pt.v.clone();
    add_noise(&mut v, pt.pending, at_level(TAG_ENCODE, pt.level));
    std::borrow::Cow::Owned(v)
}

/// The seed tag of operation `tag` at `level`.
fn at_level(tag: u64, level: usize) -> u64 {
    tag.wrapping_add((level as u64) << 8)
}

/// Tags of the operations that add noise (seeds of [`add_noise`]).
const TAG_FRESH: u64 = 1;
const TAG_RESCALE: u64 = 2;
const TAG_ROTATE: u64 = 3;
const TAG_RELIN: u64 = 4;
const TAG_ENCODE: u64 = 5;
const TAG_CONJUGATE: u64 = 6;

/// The constant a CKKS constant product really applies: `round(c * scale) / scale`.
fn quantize(c: f64, scale: Scale) -> f64 {
    (c * scale.value()).round() / scale.value()
}

impl Slots {
    /// A slots backend with data primes `primes` and `slots` slots.
    pub fn new(primes: Vec<f64>, slots: usize) -> Self {
        Self {
            primes,
            slots,
            counts: OpCounts::default(),
            noise: None,
        }
    }

    /// The same backend adding CKKS's noise (`noise`) where the encrypted backend's
    /// operations add it: fresh inputs, plaintext encodings, rescales, rotations and
    /// relinearizations.
    pub fn with_noise(self, noise: Noise) -> Self {
        Self {
            noise: Some(noise),
            ..self
        }
    }

    /// The operand a pair product conjugates: with paired noise, half a key switch's error
    /// on each image (the same values otherwise).
    fn conjugated<'a>(&self, a: &'a SlotCt) -> std::borrow::Cow<'a, SlotCt> {
        match &self.noise {
            Some(n) if n.pairs => {
                let mut c = a.clone();
                let std = 0.5 * n.key_switch(a.level) / a.scale.value();
                add_noise(&mut c.v, std, at_level(TAG_CONJUGATE, a.level));
                std::borrow::Cow::Owned(c)
            }
            _ => std::borrow::Cow::Borrowed(a),
        }
    }

    fn noisy(&self, a: &mut SlotCt, std: impl Fn(&Noise) -> f64, tag: u64) {
        if let Some(n) = &self.noise {
            let s = std(n) / a.scale.value();
            add_noise(&mut a.v, s, at_level(tag, a.level));
        }
    }

    /// Idealised primes `2^bits`.
    pub fn with_bits(q_bits: &[u32], slots: usize) -> Self {
        Self::new(q_bits.iter().map(|&b| (b as f64).exp2()).collect(), slots)
    }

    /// The primes of real CKKS parameters (slot count chosen by the caller, e.g. the batch).
    pub fn for_params(params: &henn_ckks::CkksParams, slots: usize) -> Self {
        Self::new(params.q().iter().map(|&q| q as f64).collect(), slots)
    }

    /// A fresh input at the top level (values padded with zeros to the slot count).
    pub fn input(&self, values: &[f64], scale: Scale) -> Result<SlotCt> {
        check_slots(values.len(), self.slots)?;
        let mut v = values.to_vec();
        v.resize(self.slots, 0.0);
        let mut ct = SlotCt {
            v,
            level: self.primes.len().saturating_sub(1),
            scale,
            unrelinearized: false,
            pending: 0.0,
        };
        self.noisy(&mut ct, Noise::fresh, TAG_FRESH);
        Ok(ct)
    }
}

impl Backend for Slots {
    type Ct = SlotCt;

    fn name(&self) -> &'static str {
        "slots"
    }
    fn slots(&self) -> usize {
        self.slots
    }
    fn counts(&self) -> &OpCounts {
        &self.counts
    }
    fn prime(&self, level: usize) -> Result<f64> {
        self.primes
            .get(level)
            .copied()
            .ok_or_else(|| ExecError::NoPrime(level).into())
    }
    fn level(&self, a: &SlotCt) -> usize {
        a.level
    }
    fn scale(&self, a: &SlotCt) -> Scale {
        a.scale
    }
    fn add_assign(&self, a: &mut SlotCt, b: &SlotCt) -> Result<()> {
        check_add((a.level, a.scale), (b.level, b.scale))?;
        OpCounts::bump(&self.counts.add, 1);
        a.v.iter_mut().zip(&b.v).for_each(|(x, y)| *x += y);
        a.unrelinearized |= b.unrelinearized;
        Ok(())
    }
    fn sub_assign(&self, a: &mut SlotCt, b: &SlotCt) -> Result<()> {
        check_add((a.level, a.scale), (b.level, b.scale))?;
        OpCounts::bump(&self.counts.add, 1);
        a.v.iter_mut().zip(&b.v).for_each(|(x, y)| *x -= y);
        a.unrelinearized |= b.unrelinearized;
        Ok(())
    }
    fn neg_assign(&self, a: &mut SlotCt) -> Result<()> {
        a.v.iter_mut().for_each(|x| *x = -*x);
        Ok(())
    }
    fn add_const_assign(&self, a: &mut SlotCt, c: f64) -> Result<()> {
        OpCounts::bump(&self.counts.add, 1);
        a.v.iter_mut().for_each(|x| *x += c);
        Ok(())
    }
    fn mul_const_assign(&self, a: &mut SlotCt, c: f64, const_scale: Scale) -> Result<()> {
        OpCounts::bump(&self.counts.mul_const, 1);
        let c = quantize(c, const_scale);
        a.v.iter_mut().for_each(|x| *x *= c);
        a.scale = scale_of(a.scale.value() * const_scale.value())?;
        Ok(())
    }
    fn mul_const_add_assign(
        &self,
        acc: &mut SlotCt,
        x: &SlotCt,
        c: f64,
        const_scale: Scale,
    ) -> Result<()> {
        OpCounts::bump(&self.counts.mul_const, 1);
        let s = scale_of(x.scale.value() * const_scale.value())?;
        check_add((acc.level, acc.scale), (x.level, s))?;
        OpCounts::bump(&self.counts.add, 1);
        let c = quantize(c, const_scale);
        acc.v.iter_mut().zip(&x.v).for_each(|(a, b)| *a += c * b);
        Ok(())
    }
    type Pt = SlotCt;
    fn encode(&self, v: &[f64], level: usize, scale: Scale) -> Result<SlotCt> {
        check_slots(v.len(), self.slots)?;
        OpCounts::bump(&self.counts.encode, 1);
        let mut v = v.to_vec();
        v.resize(self.slots, 0.0);
        // the encoding error is drawn by the product that uses the plaintext
        let pending = self
            .noise
            .as_ref()
            .map_or(0.0, |n| n.encode() / scale.value());
        Ok(SlotCt {
            v,
            level,
            scale,
            unrelinearized: false,
            pending,
        })
    }
    fn mul_plain_assign(&self, a: &mut SlotCt, pt: &SlotCt) -> Result<()> {
        check_pt_level(a.level, pt.level)?;
        OpCounts::bump(&self.counts.mul_plain, 1);
        let p = drawn(pt);
        for (x, p) in a.v.iter_mut().zip(p.iter()) {
            *x *= p;
        }
        a.scale = scale_of(a.scale.value() * pt.scale.value())?;
        Ok(())
    }
    fn mul_plain_add_assign(&self, acc: &mut SlotCt, x: &SlotCt, pt: &SlotCt) -> Result<()> {
        check_pt_level(x.level, pt.level)?;
        OpCounts::bump(&self.counts.mul_plain, 1);
        OpCounts::bump(&self.counts.add, 1);
        let s = scale_of(x.scale.value() * pt.scale.value())?;
        check_add((acc.level, acc.scale), (x.level, s))?;
        let p = drawn(pt);
        for ((a, v), p) in acc.v.iter_mut().zip(&x.v).zip(p.iter()) {
            *a += v * p;
        }
        Ok(())
    }
    /// The products exactly, and their plaintexts' encoding errors drawn once per output
    /// from their sum's distribution: `sum_j x_j (w_j + e_j)` with independent `e_j ~ N(0,
    /// s_j^2)` errs by `N(0, sum_j x_j^2 s_j^2)` in every slot. Drawing one Gaussian per
    /// slot and product (and hashing every plaintext for its seed) was most of a plan's
    /// precision prediction; the counts are [`Backend::mul_plain_matrix`]'s.
    fn mul_plain_matrix(
        &self,
        xs: &[&SlotCt],
        terms: &[(usize, usize, &SlotCt)],
        n_out: usize,
    ) -> Result<Vec<SlotCt>> {
        // per output: the exact sum and the variance of its encoding errors
        let mut accs: Vec<Option<(SlotCt, Vec<f64>)>> = vec![None; n_out];
        for &(o, i, pt) in terms {
            let (x, acc) = matrix_term(xs, &mut accs, o, i)?;
            check_pt_level(x.level, pt.level)?;
            OpCounts::bump(&self.counts.mul_plain, 1);
            let s = scale_of(x.scale.value() * pt.scale.value())?;
            let s2 = pt.pending * pt.pending;
            match acc {
                None => {
                    let v = x.v.iter().zip(&pt.v).map(|(a, b)| a * b).collect();
                    let var = x.v.iter().map(|a| a * a * s2).collect();
                    let c = SlotCt {
                        v,
                        level: x.level,
                        scale: s,
                        unrelinearized: x.unrelinearized,
                        pending: 0.0,
                    };
                    *acc = Some((c, var));
                }
                Some((c, var)) => {
                    OpCounts::bump(&self.counts.add, 1);
                    check_add((c.level, c.scale), (x.level, s))?;
                    for (((a, d), v), p) in c.v.iter_mut().zip(var.iter_mut()).zip(&x.v).zip(&pt.v)
                    {
                        *a += v * p;
                        *d += v * v * s2;
                    }
                }
            }
        }
        Ok(matrix_outputs(accs)?
            .into_iter()
            .map(|(mut c, var)| {
                if var.iter().any(|&d| d > 0.0) {
                    draw_noise(&mut c.v, at_level(TAG_ENCODE, c.level), |k| var[k].sqrt());
                }
                c
            })
            .collect())
    }
    fn mul_relin(&self, a: &SlotCt, b: &SlotCt) -> Result<SlotCt> {
        check_mul_levels(a.level, b.level)?;
        OpCounts::bump(&self.counts.mul, 1);
        OpCounts::bump(&self.counts.relin, 1);
        let a = self.conjugated(a);
        let mut c = SlotCt {
            v: a.v.iter().zip(&b.v).map(|(x, y)| x * y).collect(),
            level: a.level,
            scale: scale_of(a.scale.value() * b.scale.value())?,
            unrelinearized: false,
            pending: 0.0,
        };
        self.noisy(&mut c, |n| n.key_switch(a.level), TAG_RELIN);
        Ok(c)
    }
    fn square_relin(&self, a: &SlotCt) -> Result<SlotCt> {
        let mut c = self.square(a)?;
        self.relinearize_assign(&mut c)?;
        Ok(c)
    }
    fn square(&self, a: &SlotCt) -> Result<SlotCt> {
        OpCounts::bump(&self.counts.square, 1);
        let c = self.conjugated(a);
        Ok(SlotCt {
            v: a.v.iter().zip(&c.v).map(|(x, y)| x * y).collect(),
            level: a.level,
            scale: scale_of(a.scale.value() * a.scale.value())?,
            unrelinearized: true,
            pending: 0.0,
        })
    }
    fn relinearize_assign(&self, a: &mut SlotCt) -> Result<()> {
        if !a.unrelinearized {
            return Ok(());
        }
        OpCounts::bump(&self.counts.relin, 1);
        a.unrelinearized = false;
        let level = a.level;
        self.noisy(a, |n| n.key_switch(level), TAG_RELIN);
        Ok(())
    }
    fn unrelinearized(&self, a: &SlotCt) -> bool {
        a.unrelinearized
    }
    fn rescale_assign(&self, a: &mut SlotCt) -> Result<()> {
        check_rescale(a.level)?;
        let q = self.prime(a.level)?;
        OpCounts::bump(&self.counts.rescale, 1);
        a.level -= 1;
        a.scale = scale_of(a.scale.value() / q)?;
        self.noisy(a, Noise::rescale, TAG_RESCALE);
        Ok(())
    }
    fn drop_level_to_assign(&self, a: &mut SlotCt, level: usize) -> Result<()> {
        check_drop(a.level, level)?;
        a.level = level;
        Ok(())
    }
    fn rotate(&self, a: &SlotCt, k: i64) -> Result<SlotCt> {
        OpCounts::bump(&self.counts.rotate, 1);
        let mut r = rotated(a, k);
        if k != 0 {
            self.noisy(&mut r, |n| n.key_switch(a.level), TAG_ROTATE);
        }
        Ok(r)
    }
    fn rotate_hoisted(&self, a: &SlotCt, ks: &[i64]) -> Result<Vec<SlotCt>> {
        OpCounts::bump(&self.counts.rotate_hoisted, ks.len() as u64);
        Ok(ks
            .iter()
            .map(|&k| {
                let mut r = rotated(a, k);
                // a rotation by 0 is the input itself (no key switch)
                if k != 0 {
                    self.noisy(&mut r, |n| n.key_switch(a.level), TAG_ROTATE);
                }
                r
            })
            .collect())
    }
}

fn rotated(a: &SlotCt, k: i64) -> SlotCt {
    let n = a.v.len();
    let mut r = a.clone();
    if n > 0 {
        let s = k.rem_euclid(n as i64) as usize;
        r.v.rotate_left(s);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random values in `[-1, 1)`.
    fn pseudo(i: usize, j: usize) -> f64 {
        let h = ((i * 131 + j) as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let h = (h ^ (h >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    fn spread(z: &[f64]) -> (f64, f64) {
        let n = z.len() as f64;
        let mean = z.iter().sum::<f64>() / n;
        let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    /// A plaintext matrix's products draw their plaintexts' encoding errors once per output
    /// from the sum's distribution; the errors have the spread of errors drawn per product
    /// (`sum_j x_j^2 s^2` in every slot), the values and counts are the same, and without
    /// noise the two are equal.
    #[test]
    fn matrix_products_draw_the_encoding_errors_of_their_sum() {
        let slots = 4096;
        let scale = Scale::new(2f64.powi(20)).unwrap();
        let s = 1e-3;
        let noise = Noise {
            fresh: 0.0,
            rescale: 0.0,
            encode: s * scale.value(),
            key_switch: vec![0.0],
            pairs: false,
        };
        let primes = vec![2f64.powi(30); 2];
        let noisy = Slots::new(primes.clone(), slots).with_noise(noise);
        let quiet = Slots::new(primes, slots);
        let xs: Vec<SlotCt> = (0..6)
            .map(|j| SlotCt {
                v: (0..slots).map(|i| pseudo(i, j)).collect(),
                level: 1,
                scale,
                unrelinearized: false,
                pending: 0.0,
            })
            .collect();
        let xr: Vec<&SlotCt> = xs.iter().collect();
        let ws: Vec<Vec<f64>> = (0..6)
            .map(|j| (0..slots).map(|i| pseudo(i, j + 100)).collect())
            .collect();
        let (fast, slow, exact) = {
            let pts: Vec<SlotCt> = ws
                .iter()
                .map(|w| noisy.encode(w, 1, scale).unwrap())
                .collect();
            let qpts: Vec<SlotCt> = ws
                .iter()
                .map(|w| quiet.encode(w, 1, scale).unwrap())
                .collect();
            // output 0: all six products; output 1: the first three
            let plan: Vec<(usize, usize)> = (0..6)
                .map(|j| (0, j))
                .chain((0..3).map(|j| (1, j)))
                .collect();
            let terms: Vec<(usize, usize, &SlotCt)> =
                plan.iter().map(|&(o, j)| (o, j, &pts[j])).collect();
            let qterms: Vec<(usize, usize, &SlotCt)> =
                plan.iter().map(|&(o, j)| (o, j, &qpts[j])).collect();
            let fast = noisy.mul_plain_matrix(&xr, &terms, 2).unwrap();
            let counted = (
                noisy.counts().snapshot().mul_plain,
                noisy.counts().snapshot().add,
            );
            let mut slow = vec![None, None];
            for &(o, j, pt) in &terms {
                noisy.accumulate_pt(&mut slow[o], xr[j], pt).unwrap();
            }
            let slow: Vec<SlotCt> = slow.into_iter().map(Option::unwrap).collect();
            let after = noisy.counts().snapshot();
            assert_eq!((after.mul_plain, after.add), (2 * counted.0, 2 * counted.1));
            assert_eq!(counted, (9, 7));
            let exact = quiet.mul_plain_matrix(&xr, &qterms, 2).unwrap();
            let mut by_product = vec![None, None];
            for &(o, j, pt) in &qterms {
                quiet.accumulate_pt(&mut by_product[o], xr[j], pt).unwrap();
            }
            for (e, p) in exact.iter().zip(by_product) {
                assert_eq!(Some(e), p.as_ref());
            }
            (fast, slow, exact)
        };
        for (o, n) in [(0usize, 6usize), (1, 3)] {
            for (what, got) in [("matrix", &fast[o]), ("per product", &slow[o])] {
                assert_eq!((got.level, got.scale), (exact[o].level, exact[o].scale));
                let z: Vec<f64> = (0..slots)
                    .map(|i| {
                        let var: f64 = (0..n).map(|j| (xs[j].v[i] * s).powi(2)).sum();
                        (got.v[i] - exact[o].v[i]) / var.sqrt()
                    })
                    .collect();
                let (mean, std) = spread(&z);
                assert!(
                    mean.abs() < 0.05 && (std - 1.0).abs() < 0.06,
                    "output {o}, {what}: standardized error mean {mean:.3}, std {std:.3}"
                );
            }
        }
    }
}
