//! Fast RNS basis conversion (the approximate "FastBConv" of Bajard et al. / HPS) and the
//! ModDown step of hybrid key switching.

use std::sync::Arc;

use rayon::prelude::*;

use crate::context::RingContext;
use crate::error::{Result, RingError};
use crate::modulus::ShoupConst;
use crate::poly::{Coeff, Ntt, Poly};
use crate::simd;

/// Precomputed constants converting residues modulo `Q = prod(from)` into residues modulo
/// each prime of `to`. The output is `x + u*Q` for a small `0 <= u < |from|` (not exact).
#[derive(Clone, Debug)]
pub struct BasisConverter {
    ctx: Arc<RingContext>,
    from: Vec<usize>,
    to: Vec<usize>,
    /// `(Q/q_i)^{-1} mod q_i`, per input prime.
    qhat_inv: Vec<ShoupConst>,
    /// `(Q/q_i) mod p_j`, laid out `[j][i]`.
    qhat_mod_p: Vec<u64>,
    /// `(Q/q_i) mod p_j` then `-Q mod p_j`, laid out `[j][i]` (`|from| + 1` per target):
    /// the centred conversion appends the count of terms above `q_i / 2` as one more input.
    qhat_mod_p_centered: Vec<u64>,
    /// Whether every input prime is below 2^52 (IFMA multiplier width).
    inputs_below_2_52: bool,
}

impl BasisConverter {
    /// Precomputes the conversion from primes `from` to primes `to` of `ctx`.
    pub fn new(ctx: &Arc<RingContext>, from: &[usize], to: &[usize]) -> Result<Self> {
        ctx.check_limbs(from)?;
        ctx.check_limbs(to)?;
        if from.len() > 63 || from.is_empty() {
            return Err(RingError::TooManyPrimes { count: from.len() });
        }
        let mut qhat_inv = Vec::with_capacity(from.len());
        for &i in from {
            let qi = ctx.modulus(i)?;
            let mut prod = 1u64;
            for &k in from.iter().filter(|&&k| k != i) {
                prod = qi.mul(prod, ctx.modulus(k)?.value());
            }
            qhat_inv.push(qi.shoup(qi.inv(prod)?));
        }
        let mut qhat_mod_p = Vec::with_capacity(from.len() * to.len());
        for &j in to {
            let pj = ctx.modulus(j)?;
            for &i in from {
                let mut prod = 1u64;
                for &k in from.iter().filter(|&&k| k != i) {
                    prod = pj.mul(prod, ctx.modulus(k)?.value());
                }
                qhat_mod_p.push(prod);
            }
        }
        let mut qhat_mod_p_centered = Vec::with_capacity((from.len() + 1) * to.len());
        for (jj, &j) in to.iter().enumerate() {
            let pj = ctx.modulus(j)?;
            let mut prod = 1u64;
            for &k in from {
                prod = pj.mul(prod, pj.reduce(ctx.modulus(k)?.value()));
            }
            let row = qhat_mod_p
                .get(jj * from.len()..(jj + 1) * from.len())
                .ok_or(RingError::TooManyPrimes { count: from.len() })?;
            qhat_mod_p_centered.extend_from_slice(row);
            qhat_mod_p_centered.push(pj.sub(0, prod));
        }
        let inputs_below_2_52 = from
            .iter()
            .all(|&i| ctx.modulus_unchecked(i).value() < 1 << 52);
        Ok(Self {
            ctx: ctx.clone(),
            from: from.to_vec(),
            to: to.to_vec(),
            qhat_inv,
            qhat_mod_p,
            qhat_mod_p_centered,
            inputs_below_2_52,
        })
    }

    /// Source primes.
    pub fn from_limbs(&self) -> &[usize] {
        &self.from
    }

    /// Target primes.
    pub fn to_limbs(&self) -> &[usize] {
        &self.to
    }

    /// Converts `input` (over `from`, coefficient form) to a new polynomial over `to`.
    pub fn convert(&self, input: &Poly<Coeff>) -> Result<Poly<Coeff>> {
        self.convert_impl(input, false)
    }

    /// Like [`BasisConverter::convert`] but with centred terms: the output is `x + u*Q`
    /// where `x` is the centred representative and `u` is small with mean about zero (the
    /// plain conversion's `u` lies in `[0, |from|)`). Used where the conversion error must be
    /// unbiased: ModDown then rounds `x / P` instead of flooring it by `|from| / 2` on average,
    /// an offset that the secret key spreads into a structured (low-frequency) error.
    pub fn convert_centered(&self, input: &Poly<Coeff>) -> Result<Poly<Coeff>> {
        self.convert_impl(input, true)
    }

    fn convert_impl(&self, input: &Poly<Coeff>, centered: bool) -> Result<Poly<Coeff>> {
        if input.limbs() != self.from.as_slice() || !Arc::ptr_eq(input.context(), &self.ctx) {
            return Err(RingError::BasisMismatch {
                lhs: input.limbs().to_vec(),
                rhs: self.from.clone(),
            });
        }
        let n = self.ctx.n();
        let l_in = self.from.len();
        if let [from] = self.from[..] {
            // one source prime q (Q = q, Q/q = 1): the value itself, or its centred
            // representative, reduced modulo each target prime; the general formula's result
            let ctx = &self.ctx;
            let q = ctx.modulus_unchecked(from).value();
            let mut out = Poly::<Coeff>::zero(&self.ctx, &self.to)?;
            let src = input.data();
            out.data_mut()
                .par_chunks_mut(n)
                .zip(self.to.par_iter())
                .for_each(|(dst, &j)| {
                    let p = ctx.modulus_unchecked(j);
                    if centered {
                        simd::reduce_centered_into(dst, src, q, p);
                    } else {
                        for (d, &x) in dst.iter_mut().zip(src) {
                            *d = p.reduce(x);
                        }
                    }
                });
            return Ok(out);
        }
        // t_i = x_i * (Q/q_i)^{-1} mod q_i
        let mut t = Vec::with_capacity(n * (l_in + 1));
        t.resize(n * l_in, 0u64);
        let ctx = &self.ctx;
        t.par_chunks_mut(n)
            .zip(input.data().par_chunks(n))
            .zip(self.from.par_iter().zip(self.qhat_inv.par_iter()))
            .for_each(|((dst, src), (&i, &w))| {
                dst.copy_from_slice(src);
                simd::mul_shoup_assign(dst, w, ctx.modulus_unchecked(i));
            });
        // centred: terms t_i > q_i / 2 stand for t_i - q_i, i.e. subtract Q once per such
        // term: their count joins the sum as one more input, with the constant -Q mod p_j
        let (width, table) = if centered {
            let mut count = vec![0u64; n];
            for (limb, &i) in t.chunks(n).zip(&self.from) {
                let half = ctx.modulus_unchecked(i).value() / 2;
                for (c, &x) in count.iter_mut().zip(limb) {
                    *c += u64::from(x > half);
                }
            }
            t.extend_from_slice(&count);
            (l_in + 1, &self.qhat_mod_p_centered)
        } else {
            (l_in, &self.qhat_mod_p)
        };
        let mut out = Poly::<Coeff>::zero(&self.ctx, &self.to)?;
        let t = &t;
        out.data_mut()
            .par_chunks_mut(n)
            .zip(self.to.par_iter())
            .zip(table.par_chunks(width))
            .for_each(|((dst, &j), consts)| {
                let p = ctx.modulus_unchecked(j);
                #[cfg(target_arch = "x86_64")]
                if self.inputs_below_2_52 && simd::ifma_usable(p) {
                    // SAFETY: IFMA support was checked by `ifma_usable`; inputs are < 2^52 (the
                    // count is at most |from| < 64) and p < 2^50; `t` holds consts.len()
                    // limbs of n values.
                    unsafe { ifma_convert::convert_limb(dst, t, consts, n, p) };
                    return;
                }
                convert_limb(dst, t, consts, n, |acc| p.reduce_u128(acc));
            });
        Ok(out)
    }
}

#[inline]
#[allow(
    clippy::indexing_slicing,
    reason = "t has consts.len() limbs of n values"
)]
fn convert_limb(
    dst: &mut [u64],
    t: &[u64],
    consts: &[u64],
    n: usize,
    reduce: impl Fn(u128) -> u64,
) {
    // Process in blocks so the accumulators stay in cache while streaming the input limbs.
    const BLOCK: usize = 256;
    let mut acc = [0u128; BLOCK];
    for start in (0..n).step_by(BLOCK) {
        let len = BLOCK.min(n - start);
        acc[..len].iter_mut().for_each(|a| *a = 0);
        for (i, &c) in consts.iter().enumerate() {
            let src = &t[i * n + start..i * n + start + len];
            for (a, &x) in acc[..len].iter_mut().zip(src) {
                *a += u128::from(x) * u128::from(c);
            }
        }
        for (d, &a) in dst[start..start + len].iter_mut().zip(&acc[..len]) {
            *d = reduce(a);
        }
    }
}

/// The ModDown step of hybrid key switching: maps `x` over `Q_l ∪ P` (NTT form) to
/// `(x - FastBConv_P->Q(x mod P)) * P^{-1}` over `Q_l`, i.e. approximately `x / P`, with the
/// centred conversion so that the rounding error has mean about zero.
#[derive(Clone, Debug)]
pub struct ModDown {
    q: Vec<usize>,
    p: Vec<usize>,
    conv: BasisConverter,
    /// `P^{-1} mod q_i`.
    p_inv: Vec<ShoupConst>,
}

impl ModDown {
    /// Precomputes ModDown from `q ∪ p` to `q`.
    pub fn new(ctx: &Arc<RingContext>, q: &[usize], p: &[usize]) -> Result<Self> {
        let conv = BasisConverter::new(ctx, p, q)?;
        let mut p_inv = Vec::with_capacity(q.len());
        for &i in q {
            let qi = ctx.modulus(i)?;
            let mut prod = 1u64;
            for &j in p {
                prod = qi.mul(prod, ctx.modulus(j)?.value());
            }
            p_inv.push(qi.shoup(qi.inv(prod)?));
        }
        Ok(Self {
            q: q.to_vec(),
            p: p.to_vec(),
            conv,
            p_inv,
        })
    }

    /// Applies ModDown; `x` must be over exactly `q ++ p` in that order.
    pub fn apply(&self, mut x: Poly<Ntt>) -> Result<Poly<Ntt>> {
        let expected: Vec<usize> = self.q.iter().chain(&self.p).copied().collect();
        if x.limbs() != expected.as_slice() {
            return Err(RingError::BasisMismatch {
                lhs: x.limbs().to_vec(),
                rhs: expected,
            });
        }
        let xp = x.select_limbs(&self.p)?.intt();
        x.truncate_limbs(self.q.len())?;
        let conv = self.conv.convert_centered(&xp)?.ntt();
        let ctx = x.context().clone();
        let n = ctx.n();
        x.data_mut()
            .par_chunks_mut(n)
            .zip(conv.data().par_chunks(n))
            .zip(self.q.par_iter().zip(self.p_inv.par_iter()))
            .for_each(|((a, c), (&i, &w))| {
                let m = ctx.modulus_unchecked(i);
                simd::sub_mul_shoup_assign(a, c, w, m);
            });
        Ok(x)
    }
}

#[cfg(target_arch = "x86_64")]
mod ifma_convert {
    use core::arch::x86_64::*;

    use crate::modulus::Modulus;

    const MASK52: u64 = (1 << 52) - 1;

    /// `dst[k] = sum_i t[i][k] * consts[i] mod p` with 104-bit lane accumulators
    /// (`madd52lo/hi`), then `(hi * 2^52 + lo) mod p` via two 52-bit Shoup products.
    /// Requires `t < 2^52`, `consts < p < 2^50`, fewer than 2^11 terms.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn convert_limb(
        dst: &mut [u64],
        t: &[u64],
        consts: &[u64],
        n: usize,
        p: &Modulus,
    ) {
        let q = p.value();
        let r52 = ((1u128 << 52) % u128::from(q)) as u64;
        let shoup52 = |w: u64| ((u128::from(w) << 52) / u128::from(q)) as u64;
        let (w_r, w_r52) = (
            _mm512_set1_epi64(r52 as i64),
            _mm512_set1_epi64(shoup52(r52) as i64),
        );
        let (w_1, w_152) = (_mm512_set1_epi64(1), _mm512_set1_epi64(shoup52(1) as i64));
        let vq = _mm512_set1_epi64(q as i64);
        let mask = _mm512_set1_epi64(MASK52 as i64);
        let zero = _mm512_setzero_si512();
        let cs: Vec<__m512i> = consts
            .iter()
            .map(|&c| _mm512_set1_epi64(c as i64))
            .collect();
        let shoup = |x: __m512i, w: __m512i, w52: __m512i| {
            let hi = _mm512_madd52hi_epu64(zero, x, w52);
            let r = _mm512_sub_epi64(
                _mm512_madd52lo_epu64(zero, x, w),
                _mm512_madd52lo_epu64(zero, hi, vq),
            );
            _mm512_and_si512(r, mask)
        };
        let chunks = n / 8;
        for k in 0..chunks {
            let (mut lo, mut hi) = (zero, zero);
            for (i, &c) in cs.iter().enumerate() {
                // SAFETY: t has consts.len() limbs of n values; k*8+8 <= n.
                let x = unsafe { _mm512_loadu_si512(t.as_ptr().add(i * n + k * 8).cast()) };
                lo = _mm512_madd52lo_epu64(lo, x, c);
                hi = _mm512_madd52hi_epu64(hi, x, c);
            }
            let hi = _mm512_add_epi64(hi, _mm512_srli_epi64::<52>(lo));
            let lo = _mm512_and_si512(lo, mask);
            // hi, lo < 2^52: each Shoup product is in [0, 2p); the sum is in [0, 4p).
            let r = _mm512_add_epi64(shoup(hi, w_r, w_r52), shoup(lo, w_1, w_152));
            let r = _mm512_min_epu64(r, _mm512_sub_epi64(r, _mm512_add_epi64(vq, vq)));
            let r = _mm512_min_epu64(r, _mm512_sub_epi64(r, vq));
            // SAFETY: k*8+8 <= n == dst.len().
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().add(k * 8).cast(), r) };
        }
        for k in chunks * 8..n {
            let mut acc = 0u128;
            for (i, &c) in consts.iter().enumerate() {
                acc += u128::from(t[i * n + k]) * u128::from(c);
            }
            dst[k] = p.reduce_u128(acc);
        }
    }
}
