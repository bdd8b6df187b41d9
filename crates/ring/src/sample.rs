//! Samplers. Every sampler takes the caller's cryptographically secure RNG; none creates or
//! seeds one.

use std::sync::Arc;

use rand::{CryptoRng, RngCore};

use crate::context::RingContext;
use crate::error::{Result, RingError};
use crate::poly::{Ntt, Poly};

/// Standard deviation of the RLWE error distribution (HomomorphicEncryption.org standard).
pub const GAUSSIAN_SIGMA: f64 = 3.2;
/// Tail bound of the discrete Gaussian, in standard deviations.
pub const GAUSSIAN_TAIL: f64 = 6.0;

/// Uniform residue in `[0, q)` by rejection sampling.
#[inline]
fn uniform_below<R: RngCore + ?Sized>(q: u64, rng: &mut R) -> u64 {
    let mask = u64::MAX >> q.leading_zeros();
    loop {
        let x = rng.next_u64() & mask;
        if x < q {
            return x;
        }
    }
}

/// A uniformly random polynomial modulo each prime, directly in NTT form (the NTT is a
/// bijection, so this has the same distribution as sampling coefficients).
pub fn uniform_ntt<R: RngCore + CryptoRng + ?Sized>(
    ctx: &Arc<RingContext>,
    limbs: &[usize],
    rng: &mut R,
) -> Result<Poly<Ntt>> {
    let mut p = Poly::<Ntt>::zero(ctx, limbs)?;
    let n = ctx.n();
    for (k, &i) in limbs.iter().enumerate() {
        let q = ctx.modulus(i)?.value();
        let limb = p
            .data_mut()
            .get_mut(k * n..(k + 1) * n)
            .ok_or(RingError::LengthMismatch {
                expected: n * limbs.len(),
                got: k * n,
            })?;
        for x in limb.iter_mut() {
            *x = uniform_below(q, rng);
        }
    }
    Ok(p)
}

/// Uniform ternary coefficients in {-1, 0, 1}.
pub fn ternary<R: RngCore + CryptoRng + ?Sized>(n: usize, rng: &mut R) -> Vec<i64> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut word = rng.next_u64();
        for _ in 0..32 {
            if out.len() == n {
                break;
            }
            let v = word & 3;
            word >>= 2;
            if v < 3 {
                out.push(v as i64 - 1);
            }
        }
    }
    out
}

/// Sparse ternary coefficients: exactly `h` non-zero entries, each ±1 uniformly, at
/// uniformly random distinct positions.
pub fn sparse_ternary<R: RngCore + CryptoRng + ?Sized>(
    n: usize,
    h: usize,
    rng: &mut R,
) -> Result<Vec<i64>> {
    if h > n {
        return Err(RingError::LengthMismatch {
            expected: n,
            got: h,
        });
    }
    let mut idx: Vec<usize> = (0..n).collect();
    let mut out = vec![0i64; n];
    // Partial Fisher-Yates: the first h entries become a uniform h-subset.
    for k in 0..h {
        let j = k + uniform_below((n - k) as u64, rng) as usize;
        idx.swap(k, j);
        let sign = if rng.next_u32() & 1 == 0 { 1 } else { -1 };
        if let Some(slot) = idx.get(k).and_then(|&pos| out.get_mut(pos)) {
            *slot = sign;
        }
    }
    Ok(out)
}

/// Discrete Gaussian coefficients with standard deviation `sigma`, rejecting values beyond
/// `GAUSSIAN_TAIL * sigma` (rounded continuous Gaussian via Box-Muller on 53-bit uniforms).
pub fn gaussian<R: RngCore + CryptoRng + ?Sized>(n: usize, sigma: f64, rng: &mut R) -> Vec<i64> {
    let bound = (GAUSSIAN_TAIL * sigma).floor();
    let unit = |rng: &mut R| ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (u1, u2) = (unit(rng), unit(rng));
        let r = sigma * (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        for v in [r * theta.cos(), r * theta.sin()] {
            let v = v.round();
            if v.abs() <= bound && out.len() < n {
                out.push(v as i64);
            }
        }
    }
    out
}
