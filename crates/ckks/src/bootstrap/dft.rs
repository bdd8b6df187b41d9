//! The homomorphic special FFT: the encoder's transform between the slots and the packed
//! coefficients `u_k = c_k + i c_{k+n}`, factorised into radix-2 butterfly stages and
//! collapsed into a given number of levels (each level one sparse matrix of about
//! `2^(r+1) - 1` diagonals for `r` merged stages). The bit reversal of the FFT is omitted on
//! both sides: CoeffToSlot leaves the coefficients in bit-reversed order, EvalMod works slot by
//! slot, and SlotToCoeff takes them in that order.

use crate::circuits::LinearTransform;
use crate::encoding::Complex;
use crate::error::Result;

/// `5^j mod 2N` for `j < n`.
fn rot_group(ring_n: usize, n: usize) -> Vec<usize> {
    let m = 2 * ring_n;
    let mut g = 1usize;
    (0..n)
        .map(|_| {
            let v = g;
            g = g * 5 % m;
            v
        })
        .collect()
}

fn ksi(k: usize, m: usize) -> Complex {
    Complex::from_angle(2.0 * std::f64::consts::PI * k as f64 / m as f64)
}

/// One butterfly stage of half-length `len/2` on an `n`-periodic vector of `slots` slots:
/// the decoding direction (`inverse = false`, slots from coefficients) or the encoding one
/// (without the final `1/n`).
fn stage(ring_n: usize, slots: usize, n: usize, len: usize, inverse: bool) -> LinearTransform {
    let m = 2 * ring_n;
    let lenh = len / 2;
    let lenq = 4 * len;
    let gap = m / lenq;
    let rg = rot_group(ring_n, lenh.max(1));
    let one = Complex::new(1.0, 0.0);
    let mut t = LinearTransform::zero(slots);
    for p in 0..slots {
        let pp = p % len;
        let j = pp % lenh;
        let r = rg.get(j).copied().unwrap_or(1) % lenq;
        debug_assert!(n.is_multiple_of(len));
        if inverse {
            let w = ksi((lenq - r) * gap, m);
            if pp < lenh {
                t.add_entry(p, p, one);
                t.add_entry(p, p + lenh, one);
            } else {
                t.add_entry(p, p - lenh, w);
                t.add_entry(p, p, w.scale(-1.0));
            }
        } else {
            let w = ksi(r * gap, m);
            if pp < lenh {
                t.add_entry(p, p, one);
                t.add_entry(p, p + lenh, w);
            } else {
                t.add_entry(p, p - lenh, one);
                t.add_entry(p, p, w.scale(-1.0));
            }
        }
    }
    t
}

/// Splits `count` stages into `groups` contiguous groups (later groups take the remainder).
fn group_sizes(count: usize, groups: usize) -> Vec<usize> {
    let g = groups.clamp(1, count.max(1));
    let base = count / g;
    let extra = count % g;
    (0..g).map(|i| base + usize::from(i >= g - extra)).collect()
}

fn collapse(stages: Vec<LinearTransform>, groups: usize) -> Result<Vec<LinearTransform>> {
    let sizes = group_sizes(stages.len(), groups);
    let mut it = stages.into_iter();
    let mut out = Vec::with_capacity(sizes.len());
    for s in sizes {
        let mut acc: Option<LinearTransform> = None;
        for _ in 0..s {
            if let Some(st) = it.next() {
                acc = Some(match acc {
                    None => st,
                    Some(a) => st.compose(&a)?,
                });
            }
        }
        if let Some(a) = acc {
            out.push(a);
        }
    }
    Ok(out)
}

/// CoeffToSlot for `n` slots: `levels` matrices (apply in order) mapping the slots of an
/// `n`-periodic vector to `n * u` in bit-reversed order (unnormalised inverse special FFT).
pub(crate) fn coeff_to_slot(
    ring_n: usize,
    n: usize,
    levels: usize,
) -> Result<Vec<LinearTransform>> {
    let slots = ring_n / 2;
    let mut stages = Vec::new();
    let mut len = n;
    while len >= 2 {
        stages.push(stage(ring_n, slots, n, len, true));
        len /= 2;
    }
    collapse(stages, levels)
}

/// SlotToCoeff for `n` slots: `levels` matrices (apply in order) mapping `u` in bit-reversed
/// order to the slots (special FFT).
pub(crate) fn slot_to_coeff(
    ring_n: usize,
    n: usize,
    levels: usize,
) -> Result<Vec<LinearTransform>> {
    let slots = ring_n / 2;
    let mut stages = Vec::new();
    let mut len = 2;
    while len <= n {
        stages.push(stage(ring_n, slots, n, len, false));
        len *= 2;
    }
    collapse(stages, levels)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::encoding::Encoder;
    use crate::params::{CkksParams, CkksParamsLiteral, SecretDistribution, SecurityPolicy};
    use crate::types::{Level, Scale};

    fn params() -> Arc<CkksParams> {
        CkksParams::new(CkksParamsLiteral {
            log_n: 10,
            q_bits: vec![60],
            p_bits: vec![],
            log_scale: 30.0,
            dnum: None,
            secret: SecretDistribution::Ternary,
            security: SecurityPolicy::InsecureAllowed {
                reason: "TEST_INSECURE dft unit test".into(),
            },
        })
        .unwrap()
    }

    fn bitrev(v: &[Complex]) -> Vec<Complex> {
        let n = v.len();
        let bits = n.trailing_zeros();
        (0..n)
            .map(|i| v[i.reverse_bits() >> (usize::BITS - bits)])
            .collect()
    }

    #[test]
    fn factorisation_matches_the_encoder() {
        let p = params();
        let enc = Encoder::new(&p);
        let ring_n = p.n();
        let slots = p.slots();
        let z: Vec<Complex> = (0..slots)
            .map(|j| Complex::new((j as f64 * 0.37).sin(), (j as f64 * 0.11).cos()))
            .collect();
        // encoder's coefficients: u_k = c_k + i c_{k + N/2}
        let pt = enc
            .encode_complex(&z, Level(0), Scale::from_log2(40.0))
            .unwrap();
        let coeffs = crate::encoding::crt_centered_f64(&pt.poly().clone().intt()).unwrap();
        let s = 2f64.powi(40);
        let u: Vec<Complex> = (0..slots)
            .map(|k| Complex::new(coeffs[k] / s, coeffs[k + slots] / s))
            .collect();
        for levels in [1, 2, 3] {
            let cts = coeff_to_slot(ring_n, slots, levels).unwrap();
            assert_eq!(cts.len(), levels);
            let mut v = z.clone();
            for m in &cts {
                v = m.apply(&v);
            }
            let want = bitrev(&u);
            for (a, b) in v.iter().zip(&want) {
                assert!(
                    (a.scale(1.0 / slots as f64) - *b).abs() < 1e-6,
                    "{a:?} {b:?}"
                );
            }
            let stc = slot_to_coeff(ring_n, slots, levels).unwrap();
            let mut w = bitrev(&u);
            for m in &stc {
                w = m.apply(&w);
            }
            for (a, b) in w.iter().zip(&z) {
                assert!((*a - *b).abs() < 1e-6);
            }
        }
    }
}
