//! AVX2 + FMA negacyclic NTT for primes below 2^50 on CPUs without AVX-512: the butterflies
//! of the portable kernel computed in double precision, four lanes at a time.
//!
//! Values (lazy, below `4q < 2^52`) are exact in an `f64`. A product `y w` (up to 2^102) is
//! split exactly by one FMA into `hi + lo` (`hi` the rounded product, `lo = fma(y, w, -hi)`).
//! The quotient estimate `floor(y (w / q))` is within one of `floor(y w / q)` (the relative
//! error of two roundings, times a value below 2^52, is below 1), so
//! `r = fma(-qt, q, hi) + lo` (both steps exact: integers below 2^52 in magnitude) lies in
//! `[-q, 2q)`; adding `q` where negative gives Harvey's lazy product in `[0, 2q)`. The
//! stages whose butterfly span is below the vector width (2 and 1) shuffle two vectors into
//! the butterflies' two sides (128-bit halves for span 2, even and odd lanes for span 1)
//! with their factors stored in lane order (the portable scalar loop below n = 16); the
//! results are fully reduced at the end, so they equal the portable kernel's bit for bit.

use core::arch::x86_64::*;

use super::NttTable;

/// Largest modulus (exclusive) of this kernel: lazy values below `4q <= 2^52` convert
/// exactly between `u64` and `f64`.
pub const FMA_MODULUS_LIMIT: u64 = 1 << 50;

/// The twiddle factors as doubles: value and `value / q`, forward and inverse; and those of
/// the two stages with butterfly spans 2 and 1 in the lane order of their shuffled vectors
/// (span 2: each factor twice; span 1: factors `i, i + 2, i + 1, i + 3` per four).
#[derive(Clone, Debug)]
pub(crate) struct FmaNttTables {
    roots: Vec<f64>,
    roots_q: Vec<f64>,
    inv_roots: Vec<f64>,
    inv_roots_q: Vec<f64>,
    /// Span 2 then span 1, forward: `(value, value / q)` per lane.
    fwd_short: [(Vec<f64>, Vec<f64>); 2],
    /// Span 1 then span 2, inverse.
    inv_short: [(Vec<f64>, Vec<f64>); 2],
}

/// Smallest degree of the vectorized short stages (two blocks of four per vector pair).
const SHORT_MIN_N: usize = 16;

/// The factors of the span-2 and span-1 stages in lane order (see [`FmaNttTables`]), from
/// the stage's factors `w[k]` (`k` over the blocks or pairs).
fn short_tables(w2: &[f64], w1: &[f64]) -> [Vec<f64>; 2] {
    let span2 = w2.iter().flat_map(|&v| [v, v]).collect();
    let span1 = w1
        .chunks(4)
        .flat_map(|c| match c {
            [a, b, c, d] => vec![*a, *c, *b, *d],
            _ => c.to_vec(),
        })
        .collect();
    [span2, span1]
}

/// 2^52 as a double: `bits(2^52) | x` is the double `2^52 + x` for `x < 2^52`.
const TWO52: f64 = 4_503_599_627_370_496.0;

impl FmaNttTables {
    /// Tables for `t`, or `None` when the prime is too large or the CPU lacks AVX2 or FMA.
    pub(crate) fn new(t: &NttTable) -> Option<Self> {
        let q = t.modulus.value();
        if q >= FMA_MODULUS_LIMIT
            || !std::is_x86_feature_detected!("avx2")
            || !std::is_x86_feature_detected!("fma")
        {
            return None;
        }
        let qf = q as f64;
        let v = |c: &[crate::modulus::ShoupConst]| -> (Vec<f64>, Vec<f64>) {
            c.iter()
                .map(|w| (w.value as f64, w.value as f64 / qf))
                .unzip()
        };
        let (roots, roots_q) = v(&t.roots);
        let (inv_roots, inv_roots_q) = v(&t.inv_roots);
        let n = t.n;
        let (mut fwd_short, mut inv_short) = Default::default();
        if n >= SHORT_MIN_N {
            // forward: span 2 uses factors n/4.., span 1 uses n/2..; inverse: span 1 uses
            // n/2.., span 2 uses n/4..
            let [a, b] = short_tables(&roots[n / 4..n / 2], &roots[n / 2..n]);
            let [aq, bq] = short_tables(&roots_q[n / 4..n / 2], &roots_q[n / 2..n]);
            fwd_short = [(a, aq), (b, bq)];
            let [a, b] = short_tables(&inv_roots[n / 4..n / 2], &inv_roots[n / 2..n]);
            let [aq, bq] = short_tables(&inv_roots_q[n / 4..n / 2], &inv_roots_q[n / 2..n]);
            inv_short = [(b, bq), (a, aq)];
        }
        Some(Self {
            roots,
            roots_q,
            inv_roots,
            inv_roots_q,
            fwd_short,
            inv_short,
        })
    }
}

/// `u64 -> f64` in place for values below 2^52.
#[inline(always)]
fn to_f64(a: &mut [u64]) {
    for x in a.iter_mut() {
        *x = (f64::from_bits(*x | TWO52.to_bits()) - TWO52).to_bits();
    }
}

/// `f64 -> u64` in place for non-negative integers below 2^52.
#[inline(always)]
fn to_u64(a: &mut [u64]) {
    for x in a.iter_mut() {
        *x = (f64::from_bits(*x) + TWO52).to_bits() & ((1u64 << 52) - 1);
    }
}

/// Lazy `y w mod q` in `[0, 2q)` for `y < 4q`, four lanes (see the module docs).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn mul_lazy(y: __m256d, w: __m256d, wq: __m256d, q: __m256d) -> __m256d {
    let hi = _mm256_mul_pd(y, w);
    let lo = _mm256_fmsub_pd(y, w, hi);
    let qt = _mm256_floor_pd(_mm256_mul_pd(y, wq));
    let r = _mm256_add_pd(_mm256_fnmadd_pd(qt, q, hi), lo);
    let neg = _mm256_cmp_pd::<_CMP_LT_OQ>(r, _mm256_setzero_pd());
    _mm256_add_pd(r, _mm256_and_pd(neg, q))
}

/// `x - m` where `x >= m`, four lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn sub_if_ge(x: __m256d, m: __m256d) -> __m256d {
    let ge = _mm256_cmp_pd::<_CMP_GE_OQ>(x, m);
    _mm256_sub_pd(x, _mm256_and_pd(ge, m))
}

impl NttTable {
    /// The forward kernel on AVX2 + FMA (q < 2^50), whichever kernel the table dispatches to
    /// (tables made on the fly where another kernel runs). Exposed for testing; `None` where
    /// the CPU or the prime does not allow it.
    pub fn forward_fma(&self, a: &mut [u64]) -> Option<()> {
        self.with_fma_tables(|t| {
            // SAFETY: `fma` tables exist only where AVX2 and FMA were detected.
            unsafe { self.forward_fma_inner(t, a) }
        })
    }

    /// The inverse kernel on AVX2 + FMA (q < 2^50), see [`NttTable::forward_fma`].
    pub fn inverse_fma(&self, a: &mut [u64]) -> Option<()> {
        self.with_fma_tables(|t| {
            // SAFETY: `fma` tables exist only where AVX2 and FMA were detected.
            unsafe { self.inverse_fma_inner(t, a) }
        })
    }

    /// `f` on the table's FMA tables, or on ones made now; `None` where none can be made.
    fn with_fma_tables(&self, f: impl FnOnce(&FmaNttTables)) -> Option<()> {
        match &self.fma {
            Some(t) => f(t),
            None => f(&FmaNttTables::new(self)?),
        }
        Some(())
    }

    #[allow(
        clippy::indexing_slicing,
        reason = "indices bounded by n = a.len() by construction"
    )]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward_fma_inner(&self, tf: &FmaNttTables, a: &mut [u64]) {
        let n = self.n;
        let a = &mut a[..n];
        let q = self.modulus.value();
        to_f64(a);
        let qv = _mm256_set1_pd(q as f64);
        let two_q = _mm256_set1_pd(2.0 * q as f64);
        let p = a.as_mut_ptr().cast::<f64>();
        let mut t = n;
        let mut m = 1;
        while m < n && t >= 8 {
            t >>= 1;
            for i in 0..m {
                let w = _mm256_set1_pd(tf.roots[m + i]);
                let wq = _mm256_set1_pd(tf.roots_q[m + i]);
                let base = 2 * i * t;
                let mut j = 0;
                while j < t {
                    // SAFETY: base + t + j + 3 < base + 2t <= n (t >= 4, a multiple of 4).
                    let (px, py) = unsafe { (p.add(base + j), p.add(base + t + j)) };
                    // SAFETY: in bounds as above; unaligned loads.
                    let (x, y) = unsafe { (_mm256_loadu_pd(px), _mm256_loadu_pd(py)) };
                    let u = sub_if_ge(x, two_q);
                    let v = mul_lazy(y, w, wq, qv);
                    let (x, y) = (
                        _mm256_add_pd(u, v),
                        _mm256_sub_pd(_mm256_add_pd(u, two_q), v),
                    );
                    // SAFETY: in bounds as above; unaligned stores.
                    unsafe {
                        _mm256_storeu_pd(px, x);
                        _mm256_storeu_pd(py, y);
                    }
                    j += 4;
                }
            }
            m <<= 1;
        }
        if n < SHORT_MIN_N {
            to_u64(a);
            // the last stages (butterfly spans below 4): the portable butterflies
            self.forward_stages(a, m, t);
            super::reduce_from_4q(a, q);
            return;
        }
        let q1 = qv;
        // span 2: blocks i, i + 1 of four as x = [a0 a1 b0 b1], y = [a2 a3 b2 b3]
        let (w2, w2q) = (&tf.fwd_short[0].0, &tf.fwd_short[0].1);
        for i in (0..n / 4).step_by(2) {
            // SAFETY: 4i + 7 < n (i + 1 < n / 4); the factor tables hold n / 2 entries.
            unsafe {
                let p0 = p.add(4 * i);
                let (v0, v1) = (_mm256_loadu_pd(p0), _mm256_loadu_pd(p0.add(4)));
                let x = _mm256_permute2f128_pd::<0x20>(v0, v1);
                let y = _mm256_permute2f128_pd::<0x31>(v0, v1);
                let w = _mm256_loadu_pd(w2.as_ptr().add(2 * i));
                let wq = _mm256_loadu_pd(w2q.as_ptr().add(2 * i));
                let u = sub_if_ge(x, two_q);
                let v = mul_lazy(y, w, wq, qv);
                let (x, y) = (
                    _mm256_add_pd(u, v),
                    _mm256_sub_pd(_mm256_add_pd(u, two_q), v),
                );
                _mm256_storeu_pd(p0, _mm256_permute2f128_pd::<0x20>(x, y));
                _mm256_storeu_pd(p0.add(4), _mm256_permute2f128_pd::<0x31>(x, y));
            }
        }
        // span 1: pairs i..i + 4 as x = [a0 a4 a2 a6], y = [a1 a5 a3 a7]; the results fully
        // reduced from [0, 4q)
        let (w1, w1q) = (&tf.fwd_short[1].0, &tf.fwd_short[1].1);
        for i in (0..n / 2).step_by(4) {
            // SAFETY: 2i + 7 < n (i + 3 < n / 2); the factor tables hold n / 2 entries.
            unsafe {
                let p0 = p.add(2 * i);
                let (v0, v1) = (_mm256_loadu_pd(p0), _mm256_loadu_pd(p0.add(4)));
                let x = _mm256_unpacklo_pd(v0, v1);
                let y = _mm256_unpackhi_pd(v0, v1);
                let w = _mm256_loadu_pd(w1.as_ptr().add(i));
                let wq = _mm256_loadu_pd(w1q.as_ptr().add(i));
                let u = sub_if_ge(x, two_q);
                let v = mul_lazy(y, w, wq, qv);
                let x = sub_if_ge(sub_if_ge(_mm256_add_pd(u, v), two_q), q1);
                let y = _mm256_sub_pd(_mm256_add_pd(u, two_q), v);
                let y = sub_if_ge(sub_if_ge(y, two_q), q1);
                _mm256_storeu_pd(p0, _mm256_unpacklo_pd(x, y));
                _mm256_storeu_pd(p0.add(4), _mm256_unpackhi_pd(x, y));
            }
        }
        to_u64(a);
    }

    #[allow(
        clippy::indexing_slicing,
        reason = "indices bounded by n = a.len() by construction"
    )]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn inverse_fma_inner(&self, tf: &FmaNttTables, a: &mut [u64]) {
        let n = self.n;
        let a = &mut a[..n];
        let q = self.modulus.value();
        let qv = _mm256_set1_pd(q as f64);
        let two_q = _mm256_set1_pd(2.0 * q as f64);
        if n < SHORT_MIN_N {
            // the first stages (butterfly spans below 4): the portable butterflies
            self.inverse_stages(a, 1, 4);
            to_f64(a);
        } else {
            to_f64(a);
            let p = a.as_mut_ptr().cast::<f64>();
            // span 1 (pairs, shuffled as in the forward kernel), then span 2 (blocks)
            let (w1, w1q) = (&tf.inv_short[0].0, &tf.inv_short[0].1);
            for i in (0..n / 2).step_by(4) {
                // SAFETY: 2i + 7 < n; the factor tables hold n / 2 entries.
                unsafe {
                    let p0 = p.add(2 * i);
                    let (v0, v1) = (_mm256_loadu_pd(p0), _mm256_loadu_pd(p0.add(4)));
                    let (u, v) = (_mm256_unpacklo_pd(v0, v1), _mm256_unpackhi_pd(v0, v1));
                    let w = _mm256_loadu_pd(w1.as_ptr().add(i));
                    let wq = _mm256_loadu_pd(w1q.as_ptr().add(i));
                    let x = sub_if_ge(_mm256_add_pd(u, v), two_q);
                    let y = mul_lazy(_mm256_sub_pd(_mm256_add_pd(u, two_q), v), w, wq, qv);
                    _mm256_storeu_pd(p0, _mm256_unpacklo_pd(x, y));
                    _mm256_storeu_pd(p0.add(4), _mm256_unpackhi_pd(x, y));
                }
            }
            let (w2, w2q) = (&tf.inv_short[1].0, &tf.inv_short[1].1);
            for i in (0..n / 4).step_by(2) {
                // SAFETY: 4i + 7 < n; the factor tables hold n / 2 entries.
                unsafe {
                    let p0 = p.add(4 * i);
                    let (v0, v1) = (_mm256_loadu_pd(p0), _mm256_loadu_pd(p0.add(4)));
                    let u = _mm256_permute2f128_pd::<0x20>(v0, v1);
                    let v = _mm256_permute2f128_pd::<0x31>(v0, v1);
                    let w = _mm256_loadu_pd(w2.as_ptr().add(2 * i));
                    let wq = _mm256_loadu_pd(w2q.as_ptr().add(2 * i));
                    let x = sub_if_ge(_mm256_add_pd(u, v), two_q);
                    let y = mul_lazy(_mm256_sub_pd(_mm256_add_pd(u, two_q), v), w, wq, qv);
                    _mm256_storeu_pd(p0, _mm256_permute2f128_pd::<0x20>(x, y));
                    _mm256_storeu_pd(p0.add(4), _mm256_permute2f128_pd::<0x31>(x, y));
                }
            }
        }
        let mut t = 4;
        let mut h = n / 8;
        let p = a.as_mut_ptr().cast::<f64>();
        while h >= 1 {
            for i in 0..h {
                let w = _mm256_set1_pd(tf.inv_roots[h + i]);
                let wq = _mm256_set1_pd(tf.inv_roots_q[h + i]);
                let base = 2 * i * t;
                let mut j = 0;
                while j < t {
                    // SAFETY: base + t + j + 3 < base + 2t <= n (t >= 4, a multiple of 4).
                    let (px, py) = unsafe { (p.add(base + j), p.add(base + t + j)) };
                    // SAFETY: in bounds as above; unaligned loads.
                    let (u, v) = unsafe { (_mm256_loadu_pd(px), _mm256_loadu_pd(py)) };
                    let x = sub_if_ge(_mm256_add_pd(u, v), two_q);
                    let y = mul_lazy(_mm256_sub_pd(_mm256_add_pd(u, two_q), v), w, wq, qv);
                    // SAFETY: in bounds as above; unaligned stores.
                    unsafe {
                        _mm256_storeu_pd(px, x);
                        _mm256_storeu_pd(py, y);
                    }
                    j += 4;
                }
            }
            t <<= 1;
            h >>= 1;
        }
        if n < SHORT_MIN_N {
            to_u64(a);
            for x in a.iter_mut() {
                *x = self.modulus.mul_shoup(*x, self.n_inv);
            }
            return;
        }
        // times 1/n, fully reduced, still in doubles
        let ni = self.n_inv.value as f64;
        let (w, wq) = (_mm256_set1_pd(ni), _mm256_set1_pd(ni / q as f64));
        for j in (0..n).step_by(4) {
            // SAFETY: j + 3 < n (n a multiple of 4: n >= 16 here).
            unsafe {
                let px = p.add(j);
                let x = mul_lazy(_mm256_loadu_pd(px), w, wq, qv);
                _mm256_storeu_pd(px, sub_if_ge(x, qv));
            }
        }
        to_u64(a);
    }
}
