//! Element-wise modular kernels on slices, the inner loops of every pointwise operation:
//! AVX-512 IFMA (52-bit multiply-add) for moduli below 2^50 and AVX-512F for additions;
//! without AVX-512, products in AVX2 + FMA doubles below 2^50 and additions in AVX2 integer
//! lanes (module `fma`); chosen at run time, with portable scalar fallbacks giving identical
//! results.
//!
//! IFMA Barrett multiplication (q < 2^50, `N = bits(q)`, `mu = floor(2^(2N) / q)`): for
//! `x = a*b < 2^(2N)` split as `hi*2^52 + lo`, `c1 = floor(x / 2^(N-1)) < 2^(N+1)`,
//! `e = floor(c1 * mu / 2^(N+1))` is `floor(x/q)` minus at most 2, so `x - e*q < 3q < 2^52`
//! is exact in the low 52 bits, and two conditional subtractions finish.

use crate::modulus::{Modulus, ShoupConst};

/// Largest modulus (exclusive) handled by the IFMA kernels.
pub const IFMA_MODULUS_LIMIT: u64 = 1 << 50;

/// Whether the IFMA kernels run for modulus `m` on this CPU.
#[inline]
pub fn ifma_usable(m: &Modulus) -> bool {
    ifma_ok(m)
}

#[inline]
fn ifma_ok(m: &Modulus) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        m.value() < IFMA_MODULUS_LIMIT
            && std::is_x86_feature_detected!("avx512ifma")
            && std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = m;
        false
    }
}

/// AVX-512F and DQ (64-bit lane products), for the kernels of moduli too large for IFMA.
#[inline]
fn avx512dq_ok() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512dq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[inline]
fn avx512_ok() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX2 + FMA (the double-precision kernels of [`fma`]) for a modulus below 2^50: the
/// element-wise kernels of CPUs without AVX-512 (IFMA, where present, comes first).
#[inline]
fn fma_ok(m: &Modulus) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        m.value() < fma::MODULUS_LIMIT
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = m;
        false
    }
}

/// Test support: whether a test of SIMD code needing CPU features `what` can run
/// (`available`). When they are missing it says so and returns `false` (the test is skipped),
/// unless `HENN_REQUIRE_AVX512=1` is set, where it panics: CI sets it on CPUs that have the
/// features, so that a runner without them cannot pass these tests without checking anything.
#[doc(hidden)]
pub fn simd_test_can_run(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    let required = std::env::var("HENN_REQUIRE_AVX512").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "HENN_REQUIRE_AVX512=1 but this CPU lacks {what}: the SIMD test cannot check anything"
    );
    eprintln!(
        "note: {what} not available, skipping a SIMD test (set HENN_REQUIRE_AVX512=1 to fail instead)"
    );
    false
}

/// `a[i] = a[i] * b[i] mod q` (inputs reduced).
pub fn mul_assign(a: &mut [u64], b: &[u64], m: &Modulus) {
    #[cfg(target_arch = "x86_64")]
    if ifma_ok(m) {
        // SAFETY: the required CPU features were detected just above.
        unsafe { x86::mul_assign(a, b, m) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if fma_ok(m) {
        // SAFETY: AVX2 and FMA were detected just above; q < 2^50.
        unsafe { fma::mul_assign(a, b, m) };
        return;
    }
    for (x, &y) in a.iter_mut().zip(b) {
        *x = m.mul(*x, y);
    }
}

/// `acc[i] = acc[i] + a[i] * b[i] mod q` (inputs reduced).
pub fn mul_add_assign(acc: &mut [u64], a: &[u64], b: &[u64], m: &Modulus) {
    #[cfg(target_arch = "x86_64")]
    if ifma_ok(m) {
        // SAFETY: the required CPU features were detected just above.
        unsafe { x86::mul_add_assign(acc, a, b, m) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if fma_ok(m) {
        // SAFETY: AVX2 and FMA were detected just above; q < 2^50.
        unsafe { fma::mul_add_assign(acc, a, b, m) };
        return;
    }
    for ((d, &x), &y) in acc.iter_mut().zip(a).zip(b) {
        *d = m.reduce_u128(u128::from(x) * u128::from(y) + u128::from(*d));
    }
}

/// `a[i] = a[i] * w mod q` for a constant `w` (inputs reduced).
pub fn mul_shoup_assign(a: &mut [u64], w: ShoupConst, m: &Modulus) {
    #[cfg(target_arch = "x86_64")]
    if ifma_ok(m) {
        // SAFETY: the required CPU features were detected just above.
        unsafe { x86::mul_shoup_assign(a, w, m) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if fma_ok(m) {
        // SAFETY: AVX2 and FMA were detected just above; q < 2^50.
        unsafe { fma::mul_const_assign(a, w.value, m) };
        return;
    }
    for x in a.iter_mut() {
        *x = m.mul_shoup(*x, w);
    }
}

/// `a[i] = a[i] + b[i] mod q` (inputs reduced).
pub fn add_assign(a: &mut [u64], b: &[u64], m: &Modulus) {
    #[cfg(target_arch = "x86_64")]
    if avx512_ok() {
        // SAFETY: AVX-512F was detected just above.
        unsafe { x86::add_assign(a, b, m.value()) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && m.value() < 1 << 62 {
        // SAFETY: AVX2 was detected just above; q < 2^62.
        unsafe { fma::add_assign(a, b, m) };
        return;
    }
    for (x, &y) in a.iter_mut().zip(b) {
        *x = m.add(*x, y);
    }
}

/// `a[i] = a[i] - b[i] mod q` (inputs reduced).
pub fn sub_assign(a: &mut [u64], b: &[u64], m: &Modulus) {
    #[cfg(target_arch = "x86_64")]
    if avx512_ok() {
        // SAFETY: AVX-512F was detected just above.
        unsafe { x86::sub_assign(a, b, m.value()) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && m.value() < 1 << 62 {
        // SAFETY: AVX2 was detected just above; q < 2^62.
        unsafe { fma::sub_assign(a, b, m) };
        return;
    }
    for (x, &y) in a.iter_mut().zip(b) {
        *x = m.sub(*x, y);
    }
}

/// `acc[i] = acc[i] + x[i] * w mod q` for a constant `w` (inputs reduced): the
/// multiply-accumulate of a linear combination with scalar weights, without a temporary.
pub fn mul_shoup_add_assign(acc: &mut [u64], x: &[u64], w: ShoupConst, m: &Modulus) {
    #[cfg(target_arch = "x86_64")]
    if ifma_ok(m) {
        // SAFETY: the required CPU features were detected just above.
        unsafe { x86::mul_shoup_add_assign(acc, x, w, m) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx512dq_ok() {
        // SAFETY: AVX-512F and DQ were detected just above.
        unsafe { x86::mul_shoup_add_assign_64(acc, x, w, m) };
        return;
    }
    for (d, &v) in acc.iter_mut().zip(x) {
        *d = m.add(*d, m.mul_shoup(v, w));
    }
}

/// `accs[o][i] = accs[o][i] + sum_k w[o * K + k] * xs[k][i] mod q` (`K = xs.len()`, every
/// slice of `accs` and `xs` the same length, inputs reduced): the inner kernel of a matrix of
/// scalar constants times a vector of residue slices. With IFMA (`q < 2^50`), products are
/// accumulated unreduced as 52-bit halves (see [`lazy_terms`]) in registers for 4 outputs x
/// 16 coefficients at a time and reduced once per chunk of terms; otherwise one Shoup
/// multiply-add per term. A zero weight
/// costs nothing on the portable path and the same as any other weight on the IFMA one.
pub fn matrix_mul_add_assign(
    accs: &mut [&mut [u64]],
    xs: &[&[u64]],
    w: &[ShoupConst],
    m: &Modulus,
) {
    let k = xs.len();
    debug_assert_eq!(
        w.len(),
        accs.len() * k,
        "matrix_mul_add_assign: weight count"
    );
    #[cfg(target_arch = "x86_64")]
    if ifma_ok(m) && lazy_terms(m) >= 4 {
        let len = accs
            .iter()
            .map(|a| a.len())
            .chain(xs.iter().map(|x| x.len()))
            .min();
        let len = len.unwrap_or(0);
        let body = len - len % 16;
        if body > 0 {
            // SAFETY: the required CPU features were detected just above; every slice holds
            // at least `body` elements.
            unsafe { x86::matrix_mul_add_assign_lazy(accs, xs, w, m, body) };
        }
        for (o, acc) in accs.iter_mut().enumerate() {
            for (kk, x) in xs.iter().enumerate() {
                let wc = w[o * k + kk];
                for (d, &v) in acc[body..len].iter_mut().zip(&x[body..len]) {
                    *d = m.add(*d, m.mul_shoup(v, wc));
                }
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx512dq_ok() {
        for (o, acc) in accs.iter_mut().enumerate() {
            for (kk, x) in xs.iter().enumerate() {
                let wc = w[o * k + kk];
                if wc.value != 0 {
                    mul_shoup_add_assign(acc, x, wc, m);
                }
            }
        }
        return;
    }
    portable::matrix_mul_add_assign_lazy(accs, xs, w, m);
}

/// How many products `x w` (`x, w < q`) the IFMA matrix kernel sums before one reduction:
/// the high halves `floor(x w / 2^52)` must sum below `2^52 - 2^12` (carries of the low
/// halves included) and the low halves below `2^64`: at most 4095, at least 15 for
/// `q < 2^50`.
pub fn lazy_terms(m: &Modulus) -> usize {
    let q = u128::from(m.value());
    let max_hi = (((q - 1) * (q - 1)) >> 52).max(1);
    (((1u128 << 52) - (1 << 12)) / max_hi).min(4095) as usize
}

/// `a[i] = (a[i] - b[i]) * w mod q` in one pass (inputs reduced).
pub fn sub_mul_shoup_assign(a: &mut [u64], b: &[u64], w: ShoupConst, m: &Modulus) {
    #[cfg(target_arch = "x86_64")]
    if ifma_ok(m) {
        // SAFETY: the required CPU features were detected just above.
        unsafe { x86::sub_mul_shoup_assign(a, b, w, m) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if fma_ok(m) {
        // SAFETY: AVX2 and FMA were detected just above; q < 2^50.
        unsafe { fma::sub_mul_const_assign(a, b, w.value, m) };
        return;
    }
    for (x, &y) in a.iter_mut().zip(b) {
        *x = m.mul_shoup(m.sub(*x, y), w);
    }
}

/// `dst[i] = (src[i] mod q) - c mod q` for `src[i] < 2q` and `c < q`.
pub fn reduce_once_sub(dst: &mut [u64], src: &[u64], c: u64, m: &Modulus) {
    #[cfg(target_arch = "x86_64")]
    if avx512_ok() {
        // SAFETY: AVX-512F was detected just above.
        unsafe { x86::reduce_once_sub(dst, src, c, m.value()) };
        return;
    }
    let q = m.value();
    for (d, &x) in dst.iter_mut().zip(src) {
        let x = if x >= q { x - q } else { x };
        *d = if x >= c { x - c } else { x + q - c };
    }
}

/// Two dot products over the same inputs, reduced once per coefficient:
/// `out0[k] = sum_j x_j[k] * b_j[k] mod q` and `out1[k] = sum_j x_j[k] * a_j[k] mod q`
/// (the inner product of a key-switching decomposition with both halves of a key).
/// All inputs reduced; at most 63 terms.
pub fn dot_product_2(
    out0: &mut [u64],
    out1: &mut [u64],
    x: &[&[u64]],
    b: &[&[u64]],
    a: &[&[u64]],
    m: &Modulus,
) {
    let terms = x.len().min(b.len()).min(a.len()).min(63);
    #[cfg(target_arch = "x86_64")]
    // IFMA lanes: hi accumulates < terms * 2^48 and must stay below 2^52 for the final
    // Shoup reduction, so at most 15 terms (key switching uses dnum <= ~10).
    if ifma_ok(m) && terms <= 15 {
        // SAFETY: the required CPU features were detected just above.
        unsafe { x86::dot_product_2(out0, out1, &x[..terms], &b[..terms], &a[..terms], m) };
        return;
    }
    portable::dot_product_2(out0, out1, &x[..terms], &b[..terms], &a[..terms], m);
}

/// `acc[k] = acc[k] + sum_j x_j[k] * y_j[k] mod q` (all inputs reduced): products summed
/// without reduction in chunks of [`lazy_terms`] terms (IFMA low and high halves, the
/// accumulators of a block of coefficients in the L1 cache while the terms stream through),
/// one reduction per chunk. The sum of many plaintext products of a multiplexed convolution.
pub fn dot_product_add_assign(acc: &mut [u64], x: &[&[u64]], y: &[&[u64]], m: &Modulus) {
    let terms = x.len().min(y.len());
    #[cfg(target_arch = "x86_64")]
    if ifma_ok(m) {
        let kc = lazy_terms(m).max(1);
        for (xc, yc) in x[..terms].chunks(kc).zip(y[..terms].chunks(kc)) {
            // SAFETY: the required CPU features were detected just above; at most
            // `lazy_terms` terms per call.
            unsafe { x86::dot_product_add_assign(acc, xc, yc, m) };
        }
        return;
    }
    portable::dot_product_add_assign(acc, &x[..terms], &y[..terms], m);
}

/// `accs[p][k] += sum_j y_j[k] * xs[p]_j[k] mod q` for every `p` (all inputs reduced): the
/// dot products of several polynomials (a ciphertext's parts) with the same terms `y`
/// (plaintexts), so that each block of `y` is read from memory once for all of them. As
/// [`dot_product_add_assign`] per `p`.
pub fn dot_products_add_assign(
    accs: &mut [&mut [u64]],
    y: &[&[u64]],
    xs: &[&[&[u64]]],
    m: &Modulus,
) {
    #[cfg(target_arch = "x86_64")]
    if ifma_ok(m) {
        for (acc, x) in accs.iter_mut().zip(xs) {
            dot_product_add_assign(acc, x, y, m);
        }
        return;
    }
    portable::dot_products_add_assign(accs, y, xs, m);
}

/// `dst[k] = centred(src[k]) mod p`, where `centred(x)` is `x - q` for `x > q / 2` and `x`
/// otherwise (`src` reduced modulo `q`): a centred conversion from one prime to another. In
/// double precision on AVX2 + FMA for `q, p < 2^50` (a floor quotient within one, corrected),
/// with Barrett reductions otherwise; the same result either way.
pub fn reduce_centered_into(dst: &mut [u64], src: &[u64], q: u64, p: &Modulus) {
    let len = dst.len().min(src.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if q < 1 << 50
        && p.value() < 1 << 50
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
    {
        done = len - len % 4;
        // SAFETY: AVX2 and FMA were detected just above; both moduli below 2^50.
        unsafe { fma_reduce_centered(&mut dst[..done], &src[..done], q, p.value()) };
    }
    let half = q / 2;
    for (d, &x) in dst[done..len].iter_mut().zip(&src[done..len]) {
        let v = if x > half {
            x as i64 - q as i64
        } else {
            x as i64
        };
        *d = p.reduce_i64(v);
    }
}

/// [`reduce_centered_into`] four lanes at a time in doubles (lengths a multiple of 4).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_reduce_centered(dst: &mut [u64], src: &[u64], q: u64, p: u64) {
    use core::arch::x86_64::*;
    let (qf, pf) = (_mm256_set1_pd(q as f64), _mm256_set1_pd(p as f64));
    let half = _mm256_set1_pd((q / 2) as f64);
    let p_inv = _mm256_set1_pd(1.0 / p as f64);
    let zero = _mm256_setzero_pd();
    for (d, x) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
        // SAFETY: four words each; AVX2 and FMA enabled here.
        unsafe {
            let xf = fma::to_f64(fma::load(x));
            // centred value, |v| < 2^49
            let v = _mm256_sub_pd(xf, _mm256_and_pd(_mm256_cmp_pd::<_CMP_GT_OQ>(xf, half), qf));
            // v - floor(v / p) p, exact (|result| < 2^51), in [-p, 2p): one correction each way
            let qt = _mm256_floor_pd(_mm256_mul_pd(v, p_inv));
            let r = _mm256_fnmadd_pd(qt, pf, v);
            let r = _mm256_add_pd(r, _mm256_and_pd(_mm256_cmp_pd::<_CMP_LT_OQ>(r, zero), pf));
            let r = _mm256_sub_pd(r, _mm256_and_pd(_mm256_cmp_pd::<_CMP_GE_OQ>(r, pf), pf));
            fma::store(d, fma::to_u64(r));
        }
    }
}

/// Element-wise kernels on AVX2 (+ FMA) for CPUs without AVX-512, four lanes at a time, the
/// results equal to the scalar ones (fewer than four trailing words: the scalar code).
///
/// A product modulo `q < 2^50` in doubles, as in the AVX2 + FMA NTT: the operands (below
/// 2^50) are exact, `hi = x y` rounded and `lo = fma(x, y, -hi)` split the product exactly,
/// `t = floor(hi (1 / q))` is within one of `floor(x y / q)` (its relative error, a few
/// 2^-53, times a quotient below 2^50, is below one half), so `fma(-t, q, hi)` (an integer
/// below 2^52 in magnitude: exact) plus `lo` is `x y - t q` exactly, in `[-q, 2q)`, and one
/// correction each way reduces it. Additions are 64-bit integer lanes (`q < 2^62`).
#[cfg(target_arch = "x86_64")]
mod fma {
    use core::arch::x86_64::*;

    use crate::modulus::Modulus;

    /// Largest modulus (exclusive) of the product kernels.
    pub(super) const MODULUS_LIMIT: u64 = 1 << 50;

    /// 2^52 as a double: its bits | x is the double 2^52 + x for x < 2^52.
    const TWO52: f64 = 4_503_599_627_370_496.0;

    /// The constants of one modulus in four lanes.
    #[derive(Clone, Copy)]
    struct Lanes {
        q: __m256d,
        q_inv: __m256d,
        zero: __m256d,
    }

    impl Lanes {
        #[inline(always)]
        fn new(q: u64) -> Self {
            // SAFETY (of the intrinsics): AVX is implied by the callers' AVX2.
            unsafe {
                Self {
                    q: _mm256_set1_pd(q as f64),
                    q_inv: _mm256_set1_pd(1.0 / q as f64),
                    zero: _mm256_setzero_pd(),
                }
            }
        }
    }

    /// Words below 2^52 to doubles (exact).
    #[inline(always)]
    pub(super) unsafe fn to_f64(x: __m256i) -> __m256d {
        // SAFETY: AVX2 is enabled in every caller.
        unsafe {
            let two52 = _mm256_set1_pd(TWO52);
            _mm256_sub_pd(
                _mm256_castsi256_pd(_mm256_or_si256(x, _mm256_castpd_si256(two52))),
                two52,
            )
        }
    }

    /// Non-negative integral doubles below 2^52 to words.
    #[inline(always)]
    pub(super) unsafe fn to_u64(x: __m256d) -> __m256i {
        // SAFETY: AVX2 is enabled in every caller.
        unsafe {
            _mm256_and_si256(
                _mm256_castpd_si256(_mm256_add_pd(x, _mm256_set1_pd(TWO52))),
                _mm256_set1_epi64x((1 << 52) - 1),
            )
        }
    }

    /// `r` in `[-q, 2q)` to `[0, q)`.
    #[inline(always)]
    unsafe fn correct(r: __m256d, l: Lanes) -> __m256d {
        // SAFETY: AVX2 is enabled in every caller.
        unsafe {
            let r = _mm256_add_pd(
                r,
                _mm256_and_pd(_mm256_cmp_pd::<_CMP_LT_OQ>(r, l.zero), l.q),
            );
            _mm256_sub_pd(r, _mm256_and_pd(_mm256_cmp_pd::<_CMP_GE_OQ>(r, l.q), l.q))
        }
    }

    /// `x y mod q` for `x, y < q < 2^50` (doubles holding integers), in `[0, q)`.
    #[inline(always)]
    unsafe fn mul_mod(x: __m256d, y: __m256d, l: Lanes) -> __m256d {
        // SAFETY: AVX2 and FMA are enabled in every caller.
        unsafe {
            let hi = _mm256_mul_pd(x, y);
            let lo = _mm256_fmsub_pd(x, y, hi);
            let t = _mm256_floor_pd(_mm256_mul_pd(hi, l.q_inv));
            correct(_mm256_add_pd(_mm256_fnmadd_pd(t, l.q, hi), lo), l)
        }
    }

    #[inline(always)]
    pub(super) unsafe fn load(s: &[u64]) -> __m256i {
        debug_assert!(s.len() >= 4);
        // SAFETY: four words (callers pass chunks of four).
        unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
    }

    #[inline(always)]
    pub(super) unsafe fn store(d: &mut [u64], v: __m256i) {
        debug_assert!(d.len() >= 4);
        // SAFETY: four words (callers pass chunks of four).
        unsafe { _mm256_storeu_si256(d.as_mut_ptr().cast(), v) }
    }

    /// `a = a b mod q`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn mul_assign(a: &mut [u64], b: &[u64], m: &Modulus) {
        let len = a.len().min(b.len());
        let done = len - len % 4;
        let l = Lanes::new(m.value());
        for (x, y) in a[..done].chunks_exact_mut(4).zip(b[..done].chunks_exact(4)) {
            // SAFETY: chunks of four; AVX2 and FMA enabled here.
            unsafe {
                let r = mul_mod(to_f64(load(x)), to_f64(load(y)), l);
                store(x, to_u64(r));
            }
        }
        super::portable::mul_assign(&mut a[done..len], &b[done..len], m);
    }

    /// `acc = acc + a b mod q`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn mul_add_assign(acc: &mut [u64], a: &[u64], b: &[u64], m: &Modulus) {
        let len = acc.len().min(a.len()).min(b.len());
        let done = len - len % 4;
        let l = Lanes::new(m.value());
        for ((d, x), y) in acc[..done]
            .chunks_exact_mut(4)
            .zip(a[..done].chunks_exact(4))
            .zip(b[..done].chunks_exact(4))
        {
            // SAFETY: chunks of four; AVX2 and FMA enabled here.
            unsafe {
                let p = mul_mod(to_f64(load(x)), to_f64(load(y)), l);
                let s = _mm256_add_pd(p, to_f64(load(d)));
                let s = _mm256_sub_pd(s, _mm256_and_pd(_mm256_cmp_pd::<_CMP_GE_OQ>(s, l.q), l.q));
                store(d, to_u64(s));
            }
        }
        super::portable::mul_add_assign(&mut acc[done..len], &a[done..len], &b[done..len], m);
    }

    /// `a = a w mod q` for a constant `w < q`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn mul_const_assign(a: &mut [u64], w: u64, m: &Modulus) {
        let len = a.len();
        let done = len - len % 4;
        let l = Lanes::new(m.value());
        let wf = _mm256_set1_pd(w as f64);
        for x in a[..done].chunks_exact_mut(4) {
            // SAFETY: chunks of four; AVX2 and FMA enabled here.
            unsafe { store(x, to_u64(mul_mod(to_f64(load(x)), wf, l))) };
        }
        for x in &mut a[done..] {
            *x = m.mul(*x, w);
        }
    }

    /// `a = (a - b) w mod q` for a constant `w < q`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sub_mul_const_assign(a: &mut [u64], b: &[u64], w: u64, m: &Modulus) {
        let len = a.len().min(b.len());
        let done = len - len % 4;
        let l = Lanes::new(m.value());
        let wf = _mm256_set1_pd(w as f64);
        for (x, y) in a[..done].chunks_exact_mut(4).zip(b[..done].chunks_exact(4)) {
            // SAFETY: chunks of four; AVX2 and FMA enabled here.
            unsafe {
                let d = _mm256_sub_pd(to_f64(load(x)), to_f64(load(y)));
                let d = _mm256_add_pd(
                    d,
                    _mm256_and_pd(_mm256_cmp_pd::<_CMP_LT_OQ>(d, l.zero), l.q),
                );
                store(x, to_u64(mul_mod(d, wf, l)));
            }
        }
        for (x, &y) in a[done..len].iter_mut().zip(&b[done..len]) {
            *x = m.mul(m.sub(*x, y), w);
        }
    }

    /// `a = a + b mod q` (`q < 2^62`).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn add_assign(a: &mut [u64], b: &[u64], m: &Modulus) {
        let len = a.len().min(b.len());
        let done = len - len % 4;
        let q = _mm256_set1_epi64x(m.value() as i64);
        let q1 = _mm256_set1_epi64x(m.value() as i64 - 1);
        for (x, y) in a[..done].chunks_exact_mut(4).zip(b[..done].chunks_exact(4)) {
            // SAFETY: chunks of four; AVX2 enabled here.
            unsafe {
                let s = _mm256_add_epi64(load(x), load(y));
                // s >= q (signed compare: s < 2^63) subtracts q
                let ge = _mm256_cmpgt_epi64(s, q1);
                store(x, _mm256_sub_epi64(s, _mm256_and_si256(ge, q)));
            }
        }
        for (x, &y) in a[done..len].iter_mut().zip(&b[done..len]) {
            *x = m.add(*x, y);
        }
    }

    /// `a = a - b mod q` (`q < 2^62`).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn sub_assign(a: &mut [u64], b: &[u64], m: &Modulus) {
        let len = a.len().min(b.len());
        let done = len - len % 4;
        let q = _mm256_set1_epi64x(m.value() as i64);
        for (x, y) in a[..done].chunks_exact_mut(4).zip(b[..done].chunks_exact(4)) {
            // SAFETY: chunks of four; AVX2 enabled here.
            unsafe {
                let (xv, yv) = (load(x), load(y));
                // y > x (signed compare: both below 2^62) adds q
                let lt = _mm256_cmpgt_epi64(yv, xv);
                let d = _mm256_sub_epi64(xv, yv);
                store(x, _mm256_add_epi64(d, _mm256_and_si256(lt, q)));
            }
        }
        for (x, &y) in a[done..len].iter_mut().zip(&b[done..len]) {
            *x = m.sub(*x, y);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use crate::modulus::{Modulus, ShoupConst};

    const MASK52: u64 = (1 << 52) - 1;

    struct Barrett {
        q: __m512i,
        mu: __m512i,
        sh_c1_lo: __m128i,
        sh_c1_hi: __m128i,
        sh_e_lo: __m128i,
        sh_e_hi: __m128i,
        mask: __m512i,
        zero: __m512i,
    }

    impl Barrett {
        #[inline]
        #[target_feature(enable = "avx512f,avx512ifma")]
        fn new(m: &Modulus) -> Self {
            let q = m.value();
            let n = u64::from(m.bits());
            let mu = ((1u128 << (2 * n)) / u128::from(q)) as u64;
            Self {
                q: _mm512_set1_epi64(q as i64),
                mu: _mm512_set1_epi64(mu as i64),
                sh_c1_lo: _mm_cvtsi64_si128((n - 1) as i64),
                sh_c1_hi: _mm_cvtsi64_si128((53 - n) as i64),
                sh_e_lo: _mm_cvtsi64_si128((n + 1) as i64),
                sh_e_hi: _mm_cvtsi64_si128((51 - n) as i64),
                mask: _mm512_set1_epi64(MASK52 as i64),
                zero: _mm512_setzero_si512(),
            }
        }

        /// `a * b mod q` for `a, b < q < 2^50`, fully reduced.
        #[inline]
        #[target_feature(enable = "avx512f,avx512ifma")]
        fn mul(&self, a: __m512i, b: __m512i) -> __m512i {
            let lo = _mm512_madd52lo_epu64(self.zero, a, b);
            let hi = _mm512_madd52hi_epu64(self.zero, a, b);
            let c1 = _mm512_or_si512(
                _mm512_srl_epi64(lo, self.sh_c1_lo),
                _mm512_sll_epi64(hi, self.sh_c1_hi),
            );
            let dlo = _mm512_madd52lo_epu64(self.zero, c1, self.mu);
            let dhi = _mm512_madd52hi_epu64(self.zero, c1, self.mu);
            let e = _mm512_or_si512(
                _mm512_srl_epi64(dlo, self.sh_e_lo),
                _mm512_sll_epi64(dhi, self.sh_e_hi),
            );
            let r = _mm512_and_si512(
                _mm512_sub_epi64(lo, _mm512_madd52lo_epu64(self.zero, e, self.q)),
                self.mask,
            );
            let r = _mm512_min_epu64(r, _mm512_sub_epi64(r, self.q));
            _mm512_min_epu64(r, _mm512_sub_epi64(r, self.q))
        }
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn mul_assign(a: &mut [u64], b: &[u64], m: &Modulus) {
        let br = Barrett::new(m);
        let len = a.len().min(b.len());
        let chunks = len / 8;
        for i in 0..chunks {
            // SAFETY: i*8+8 <= len <= both slice lengths.
            unsafe {
                let pa = a.as_mut_ptr().add(i * 8);
                let x = _mm512_loadu_si512(pa.cast());
                let y = _mm512_loadu_si512(b.as_ptr().add(i * 8).cast());
                _mm512_storeu_si512(pa.cast(), br.mul(x, y));
            }
        }
        for (x, &y) in a[chunks * 8..len].iter_mut().zip(&b[chunks * 8..len]) {
            *x = m.mul(*x, y);
        }
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn mul_add_assign(acc: &mut [u64], a: &[u64], b: &[u64], m: &Modulus) {
        let br = Barrett::new(m);
        let len = acc.len().min(a.len()).min(b.len());
        let chunks = len / 8;
        for i in 0..chunks {
            // SAFETY: i*8+8 <= len <= all slice lengths.
            unsafe {
                let pd = acc.as_mut_ptr().add(i * 8);
                let d = _mm512_loadu_si512(pd.cast());
                let x = _mm512_loadu_si512(a.as_ptr().add(i * 8).cast());
                let y = _mm512_loadu_si512(b.as_ptr().add(i * 8).cast());
                let s = _mm512_add_epi64(d, br.mul(x, y));
                let s = _mm512_min_epu64(s, _mm512_sub_epi64(s, br.q));
                _mm512_storeu_si512(pd.cast(), s);
            }
        }
        for ((d, &x), &y) in acc[chunks * 8..len]
            .iter_mut()
            .zip(&a[chunks * 8..len])
            .zip(&b[chunks * 8..len])
        {
            *d = m.reduce_u128(u128::from(x) * u128::from(y) + u128::from(*d));
        }
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn mul_shoup_assign(a: &mut [u64], w: ShoupConst, m: &Modulus) {
        let q = m.value();
        // floor(w 2^52 / q) = floor(floor(w 2^64 / q) / 2^12): no division per call
        let w52 = w.quotient >> 12;
        let vq = _mm512_set1_epi64(q as i64);
        let vw = _mm512_set1_epi64(w.value as i64);
        let vw52 = _mm512_set1_epi64(w52 as i64);
        let mask = _mm512_set1_epi64(MASK52 as i64);
        let zero = _mm512_setzero_si512();
        let chunks = a.len() / 8;
        for i in 0..chunks {
            // SAFETY: i*8+8 <= a.len().
            unsafe {
                let pa = a.as_mut_ptr().add(i * 8);
                let x = _mm512_loadu_si512(pa.cast());
                let hi = _mm512_madd52hi_epu64(zero, x, vw52);
                let r = _mm512_sub_epi64(
                    _mm512_madd52lo_epu64(zero, x, vw),
                    _mm512_madd52lo_epu64(zero, hi, vq),
                );
                let r = _mm512_and_si512(r, mask);
                _mm512_storeu_si512(pa.cast(), _mm512_min_epu64(r, _mm512_sub_epi64(r, vq)));
            }
        }
        for x in a[chunks * 8..].iter_mut() {
            *x = m.mul_shoup(*x, w);
        }
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn dot_product_2(
        out0: &mut [u64],
        out1: &mut [u64],
        x: &[&[u64]],
        b: &[&[u64]],
        a: &[&[u64]],
        m: &Modulus,
    ) {
        let q = m.value();
        let len = out0.len().min(out1.len()).min(
            x.iter()
                .chain(b)
                .chain(a)
                .map(|s| s.len())
                .min()
                .unwrap_or(0),
        );
        let r52 = ((1u128 << 52) % u128::from(q)) as u64;
        let shoup52 = |w: u64| ((u128::from(w) << 52) / u128::from(q)) as u64;
        let (w_r, w_r52) = (
            _mm512_set1_epi64(r52 as i64),
            _mm512_set1_epi64(shoup52(r52) as i64),
        );
        let (w_1, w_152) = (_mm512_set1_epi64(1), _mm512_set1_epi64(shoup52(1) as i64));
        let vq = _mm512_set1_epi64(q as i64);
        let v2q = _mm512_set1_epi64((2 * q) as i64);
        let mask = _mm512_set1_epi64(MASK52 as i64);
        let zero = _mm512_setzero_si512();
        // (hi * 2^52 + lo) mod q for lo < 2^64 (carries folded into hi first), hi < 2^52.
        let reduce = |lo: __m512i, hi: __m512i| {
            let hi = _mm512_add_epi64(hi, _mm512_srli_epi64::<52>(lo));
            let lo = _mm512_and_si512(lo, mask);
            let s1 = _mm512_madd52hi_epu64(zero, hi, w_r52);
            let r1 = _mm512_sub_epi64(
                _mm512_madd52lo_epu64(zero, hi, w_r),
                _mm512_madd52lo_epu64(zero, s1, vq),
            );
            let s2 = _mm512_madd52hi_epu64(zero, lo, w_152);
            let r2 = _mm512_sub_epi64(
                _mm512_madd52lo_epu64(zero, lo, w_1),
                _mm512_madd52lo_epu64(zero, s2, vq),
            );
            let r = _mm512_add_epi64(_mm512_and_si512(r1, mask), _mm512_and_si512(r2, mask));
            let r = _mm512_min_epu64(r, _mm512_sub_epi64(r, v2q));
            _mm512_min_epu64(r, _mm512_sub_epi64(r, vq))
        };
        let chunks = len / 8;
        for k in 0..chunks {
            let (mut lo0, mut hi0, mut lo1, mut hi1) = (zero, zero, zero, zero);
            for ((xj, bj), aj) in x.iter().zip(b).zip(a) {
                // SAFETY: k*8+8 <= len <= every slice length.
                unsafe {
                    let xv = _mm512_loadu_si512(xj.as_ptr().add(k * 8).cast());
                    let bv = _mm512_loadu_si512(bj.as_ptr().add(k * 8).cast());
                    let av = _mm512_loadu_si512(aj.as_ptr().add(k * 8).cast());
                    lo0 = _mm512_madd52lo_epu64(lo0, xv, bv);
                    hi0 = _mm512_madd52hi_epu64(hi0, xv, bv);
                    lo1 = _mm512_madd52lo_epu64(lo1, xv, av);
                    hi1 = _mm512_madd52hi_epu64(hi1, xv, av);
                }
            }
            // SAFETY: k*8+8 <= len <= out lengths.
            unsafe {
                _mm512_storeu_si512(out0.as_mut_ptr().add(k * 8).cast(), reduce(lo0, hi0));
                _mm512_storeu_si512(out1.as_mut_ptr().add(k * 8).cast(), reduce(lo1, hi1));
            }
        }
        for k in chunks * 8..len {
            let (mut s0, mut s1) = (0u128, 0u128);
            for ((xj, bj), aj) in x.iter().zip(b).zip(a) {
                s0 += u128::from(xj[k]) * u128::from(bj[k]);
                s1 += u128::from(xj[k]) * u128::from(aj[k]);
            }
            out0[k] = m.reduce_u128(s0);
            out1[k] = m.reduce_u128(s1);
        }
    }

    /// IFMA body of [`super::dot_product_add_assign`] for at most [`super::lazy_terms`]
    /// terms: per block of 512 coefficients, the low and high halves of every product are
    /// summed in L1-resident accumulators, then reduced once and added to `acc`.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn dot_product_add_assign(
        acc: &mut [u64],
        x: &[&[u64]],
        y: &[&[u64]],
        m: &Modulus,
    ) {
        const BLOCK: usize = 64; // vectors of 8 coefficients
        let q = m.value();
        let len = x
            .iter()
            .chain(y)
            .map(|s| s.len())
            .min()
            .unwrap_or(0)
            .min(acc.len());
        let r52 = ((1u128 << 52) % u128::from(q)) as u64;
        let shoup52 = |w: u64| ((u128::from(w) << 52) / u128::from(q)) as u64;
        let (w_r, w_r52) = (
            _mm512_set1_epi64(r52 as i64),
            _mm512_set1_epi64(shoup52(r52) as i64),
        );
        let (w_1, w_152) = (_mm512_set1_epi64(1), _mm512_set1_epi64(shoup52(1) as i64));
        let vq = _mm512_set1_epi64(q as i64);
        let v2q = _mm512_set1_epi64((2 * q) as i64);
        let mask = _mm512_set1_epi64(MASK52 as i64);
        let zero = _mm512_setzero_si512();
        // (hi * 2^52 + lo) mod q for lo < 2^64 (carries folded into hi first), hi < 2^52.
        let reduce = |lo: __m512i, hi: __m512i| {
            let hi = _mm512_add_epi64(hi, _mm512_srli_epi64::<52>(lo));
            let lo = _mm512_and_si512(lo, mask);
            let s1 = _mm512_madd52hi_epu64(zero, hi, w_r52);
            let r1 = _mm512_sub_epi64(
                _mm512_madd52lo_epu64(zero, hi, w_r),
                _mm512_madd52lo_epu64(zero, s1, vq),
            );
            let s2 = _mm512_madd52hi_epu64(zero, lo, w_152);
            let r2 = _mm512_sub_epi64(
                _mm512_madd52lo_epu64(zero, lo, w_1),
                _mm512_madd52lo_epu64(zero, s2, vq),
            );
            let r = _mm512_add_epi64(_mm512_and_si512(r1, mask), _mm512_and_si512(r2, mask));
            let r = _mm512_min_epu64(r, _mm512_sub_epi64(r, v2q));
            _mm512_min_epu64(r, _mm512_sub_epi64(r, vq))
        };
        let vecs = len / 8;
        let mut lo = [zero; BLOCK];
        let mut hi = [zero; BLOCK];
        let mut start = 0;
        while start < vecs {
            let nb = BLOCK.min(vecs - start);
            lo[..nb].fill(zero);
            hi[..nb].fill(zero);
            for (xj, yj) in x.iter().zip(y) {
                for v in 0..nb {
                    // SAFETY: (start + v) * 8 + 8 <= len <= every slice length.
                    unsafe {
                        let o = (start + v) * 8;
                        let xv = _mm512_loadu_si512(xj.as_ptr().add(o).cast());
                        let yv = _mm512_loadu_si512(yj.as_ptr().add(o).cast());
                        lo[v] = _mm512_madd52lo_epu64(lo[v], xv, yv);
                        hi[v] = _mm512_madd52hi_epu64(hi[v], xv, yv);
                    }
                }
            }
            for v in 0..nb {
                // SAFETY: (start + v) * 8 + 8 <= len <= acc.len().
                unsafe {
                    let pd = acc.as_mut_ptr().add((start + v) * 8);
                    let d = _mm512_loadu_si512(pd.cast());
                    let s = _mm512_add_epi64(d, reduce(lo[v], hi[v]));
                    _mm512_storeu_si512(pd.cast(), _mm512_min_epu64(s, _mm512_sub_epi64(s, vq)));
                }
            }
            start += nb;
        }
        for k in vecs * 8..len {
            let mut sum = u128::from(acc[k]);
            for (xj, yj) in x.iter().zip(y) {
                sum += u128::from(xj[k]) * u128::from(yj[k]);
            }
            acc[k] = m.reduce_u128(sum);
        }
    }

    /// The IFMA body of [`super::matrix_mul_add_assign`] over the first `len` elements
    /// (`len` a multiple of 16). Each product `x w` (both `< q < 2^50`) is accumulated as
    /// its low and high 52-bit halves by two IFMA instructions, with no reduction; after a
    /// chunk of [`super::lazy_terms`] terms the sum `H 2^52 + L` is reduced once:
    /// `(H + floor(L / 2^52)) (2^52 mod q)` by a Shoup product plus `L mod 2^52` by a Shoup
    /// step with `floor(2^52 / q)`, then added to the output.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn matrix_mul_add_assign_lazy(
        accs: &mut [&mut [u64]],
        xs: &[&[u64]],
        w: &[ShoupConst],
        m: &Modulus,
        len: usize,
    ) {
        let k = xs.len();
        let n_out = accs.len();
        let kc = super::lazy_terms(m).max(1);
        let q = m.value();
        let c = (1u128 << 52) % u128::from(q);
        let c52 = ((c << 52) / u128::from(q)) as u64;
        let xp: Vec<*const u64> = xs.iter().map(|x| x.as_ptr()).collect();
        let ap: Vec<*mut u64> = accs.iter_mut().map(|a| a.as_mut_ptr()).collect();
        let wv: Vec<u64> = w.iter().map(|c| c.value).collect();
        let cx = Lazy {
            q: _mm512_set1_epi64(q as i64),
            two_q: _mm512_set1_epi64((2 * q) as i64),
            c: _mm512_set1_epi64(c as i64),
            c52: _mm512_set1_epi64(c52 as i64),
            one52: _mm512_set1_epi64(((1u64 << 52) / q) as i64),
            mask: _mm512_set1_epi64(MASK52 as i64),
            zero: _mm512_setzero_si512(),
        };
        for k0 in (0..k).step_by(kc) {
            let k1 = (k0 + kc).min(k);
            for p in (0..len).step_by(16) {
                let mut o = 0;
                while o < n_out {
                    let left = n_out - o;
                    // SAFETY: p + 16 <= len and every pointer addresses at least len elements.
                    unsafe {
                        if left >= 4 {
                            lazy_block::<4>(&cx, &xp, &ap, &wv, k, o, k0..k1, p);
                            o += 4;
                        } else if left >= 2 {
                            lazy_block::<2>(&cx, &xp, &ap, &wv, k, o, k0..k1, p);
                            o += 2;
                        } else {
                            lazy_block::<1>(&cx, &xp, &ap, &wv, k, o, k0..k1, p);
                            o += 1;
                        }
                    }
                }
            }
        }
    }

    struct Lazy {
        q: __m512i,
        two_q: __m512i,
        /// `2^52 mod q` and its Shoup quotient `floor(c 2^52 / q)`.
        c: __m512i,
        c52: __m512i,
        /// `floor(2^52 / q)`.
        one52: __m512i,
        mask: __m512i,
        zero: __m512i,
    }

    /// Outputs `o..o+OB`, coefficients `p..p+16`, terms `ks`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn lazy_block<const OB: usize>(
        cx: &Lazy,
        xp: &[*const u64],
        ap: &[*mut u64],
        wv: &[u64],
        k: usize,
        o: usize,
        ks: std::ops::Range<usize>,
        p: usize,
    ) {
        let mut lo = [[cx.zero; 2]; OB];
        let mut hi = [[cx.zero; 2]; OB];
        for kk in ks {
            // SAFETY: the caller guarantees p + 16 <= the length of every input.
            let (x0, x1) = unsafe {
                let px = xp[kk].add(p);
                (
                    _mm512_loadu_si512(px.cast()),
                    _mm512_loadu_si512(px.add(8).cast()),
                )
            };
            for u in 0..OB {
                let vw = _mm512_set1_epi64(wv[(o + u) * k + kk] as i64);
                lo[u][0] = _mm512_madd52lo_epu64(lo[u][0], x0, vw);
                lo[u][1] = _mm512_madd52lo_epu64(lo[u][1], x1, vw);
                hi[u][0] = _mm512_madd52hi_epu64(hi[u][0], x0, vw);
                hi[u][1] = _mm512_madd52hi_epu64(hi[u][1], x1, vw);
            }
        }
        for u in 0..OB {
            for v in 0..2 {
                // sum = t 2^52 + l0 with t = H + (L >> 52) < 2^52 and l0 < 2^52
                let t = _mm512_add_epi64(hi[u][v], _mm512_srli_epi64::<52>(lo[u][v]));
                let l0 = _mm512_and_si512(lo[u][v], cx.mask);
                // t (2^52 mod q) mod q in [0, 2q) (Shoup)
                let h = _mm512_madd52hi_epu64(cx.zero, t, cx.c52);
                let r1 = _mm512_and_si512(
                    _mm512_sub_epi64(
                        _mm512_madd52lo_epu64(cx.zero, t, cx.c),
                        _mm512_madd52lo_epu64(cx.zero, h, cx.q),
                    ),
                    cx.mask,
                );
                // l0 mod q in [0, 2q)
                let h2 = _mm512_madd52hi_epu64(cx.zero, l0, cx.one52);
                let r2 = _mm512_sub_epi64(l0, _mm512_madd52lo_epu64(cx.zero, h2, cx.q));
                let s = _mm512_add_epi64(r1, r2);
                let s = _mm512_min_epu64(s, _mm512_sub_epi64(s, cx.two_q));
                let s = _mm512_min_epu64(s, _mm512_sub_epi64(s, cx.q));
                // SAFETY: as above for the outputs.
                unsafe {
                    let pd = ap[o + u].add(p + 8 * v);
                    let y = _mm512_add_epi64(_mm512_loadu_si512(pd.cast()), s);
                    _mm512_storeu_si512(pd.cast(), _mm512_min_epu64(y, _mm512_sub_epi64(y, cx.q)));
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn mul_shoup_add_assign(
        acc: &mut [u64],
        x: &[u64],
        w: ShoupConst,
        m: &Modulus,
    ) {
        let q = m.value();
        // floor(w 2^52 / q) = floor(floor(w 2^64 / q) / 2^12): no division per call
        let w52 = w.quotient >> 12;
        let vq = _mm512_set1_epi64(q as i64);
        let vw = _mm512_set1_epi64(w.value as i64);
        let vw52 = _mm512_set1_epi64(w52 as i64);
        let mask = _mm512_set1_epi64(MASK52 as i64);
        let zero = _mm512_setzero_si512();
        let len = acc.len().min(x.len());
        let chunks = len / 8;
        for i in 0..chunks {
            // SAFETY: i*8+8 <= len.
            unsafe {
                let pd = acc.as_mut_ptr().add(i * 8);
                let xv = _mm512_loadu_si512(x.as_ptr().add(i * 8).cast());
                let hi = _mm512_madd52hi_epu64(zero, xv, vw52);
                let r = _mm512_sub_epi64(
                    _mm512_madd52lo_epu64(zero, xv, vw),
                    _mm512_madd52lo_epu64(zero, hi, vq),
                );
                let r = _mm512_and_si512(r, mask);
                let r = _mm512_min_epu64(r, _mm512_sub_epi64(r, vq));
                let s = _mm512_add_epi64(_mm512_loadu_si512(pd.cast()), r);
                _mm512_storeu_si512(pd.cast(), _mm512_min_epu64(s, _mm512_sub_epi64(s, vq)));
            }
        }
        for (d, &v) in acc[chunks * 8..len].iter_mut().zip(&x[chunks * 8..len]) {
            *d = m.add(*d, m.mul_shoup(v, w));
        }
    }

    /// `acc = acc + x * w mod q` for any modulus (`q < 2^61`): Shoup's product with the
    /// high half of `x * floor(w 2^64 / q)` from four 32 x 32-bit lane products, the low
    /// halves from 64-bit lane products (AVX-512DQ).
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn mul_shoup_add_assign_64(
        acc: &mut [u64],
        x: &[u64],
        w: ShoupConst,
        m: &Modulus,
    ) {
        let q = m.value();
        let vq = _mm512_set1_epi64(q as i64);
        let vw = _mm512_set1_epi64(w.value as i64);
        let wq_lo = _mm512_set1_epi64(w.quotient as i64);
        let wq_hi = _mm512_set1_epi64((w.quotient >> 32) as i64);
        let lo32 = _mm512_set1_epi64(0xffff_ffff);
        let len = acc.len().min(x.len());
        let chunks = len / 8;
        for i in 0..chunks {
            // SAFETY: i*8+8 <= len.
            unsafe {
                let pd = acc.as_mut_ptr().add(i * 8);
                let xv = _mm512_loadu_si512(x.as_ptr().add(i * 8).cast());
                let x_hi = _mm512_srli_epi64::<32>(xv);
                // floor(x * wq / 2^64) from the four 32-bit partial products
                let ll = _mm512_mul_epu32(xv, wq_lo);
                let lh = _mm512_mul_epu32(xv, wq_hi);
                let hl = _mm512_mul_epu32(x_hi, wq_lo);
                let hh = _mm512_mul_epu32(x_hi, wq_hi);
                let mid = _mm512_add_epi64(
                    _mm512_add_epi64(_mm512_srli_epi64::<32>(ll), _mm512_and_si512(lh, lo32)),
                    _mm512_and_si512(hl, lo32),
                );
                let hi = _mm512_add_epi64(
                    _mm512_add_epi64(hh, _mm512_srli_epi64::<32>(lh)),
                    _mm512_add_epi64(_mm512_srli_epi64::<32>(hl), _mm512_srli_epi64::<32>(mid)),
                );
                // x w - hi q (mod 2^64) lies in [0, 2q)
                let r = _mm512_sub_epi64(_mm512_mullo_epi64(xv, vw), _mm512_mullo_epi64(hi, vq));
                let r = _mm512_min_epu64(r, _mm512_sub_epi64(r, vq));
                let s = _mm512_add_epi64(_mm512_loadu_si512(pd.cast()), r);
                _mm512_storeu_si512(pd.cast(), _mm512_min_epu64(s, _mm512_sub_epi64(s, vq)));
            }
        }
        for (d, &v) in acc[chunks * 8..len].iter_mut().zip(&x[chunks * 8..len]) {
            *d = m.add(*d, m.mul_shoup(v, w));
        }
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn sub_mul_shoup_assign(
        a: &mut [u64],
        b: &[u64],
        w: ShoupConst,
        m: &Modulus,
    ) {
        let q = m.value();
        // floor(w 2^52 / q) = floor(floor(w 2^64 / q) / 2^12): no division per call
        let w52 = w.quotient >> 12;
        let vq = _mm512_set1_epi64(q as i64);
        let vw = _mm512_set1_epi64(w.value as i64);
        let vw52 = _mm512_set1_epi64(w52 as i64);
        let mask = _mm512_set1_epi64(MASK52 as i64);
        let zero = _mm512_setzero_si512();
        let len = a.len().min(b.len());
        let chunks = len / 8;
        for i in 0..chunks {
            // SAFETY: i*8+8 <= len.
            unsafe {
                let pa = a.as_mut_ptr().add(i * 8);
                // x - y + q in [0, 2q) < 2^52: Shoup accepts it directly.
                let x = _mm512_add_epi64(
                    _mm512_sub_epi64(
                        _mm512_loadu_si512(pa.cast()),
                        _mm512_loadu_si512(b.as_ptr().add(i * 8).cast()),
                    ),
                    vq,
                );
                let hi = _mm512_madd52hi_epu64(zero, x, vw52);
                let r = _mm512_sub_epi64(
                    _mm512_madd52lo_epu64(zero, x, vw),
                    _mm512_madd52lo_epu64(zero, hi, vq),
                );
                let r = _mm512_and_si512(r, mask);
                _mm512_storeu_si512(pa.cast(), _mm512_min_epu64(r, _mm512_sub_epi64(r, vq)));
            }
        }
        for (x, &y) in a[chunks * 8..len].iter_mut().zip(&b[chunks * 8..len]) {
            *x = m.mul_shoup(m.sub(*x, y), w);
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn reduce_once_sub(dst: &mut [u64], src: &[u64], c: u64, q: u64) {
        let vq = _mm512_set1_epi64(q as i64);
        let vqc = _mm512_set1_epi64((q - c) as i64);
        let len = dst.len().min(src.len());
        let chunks = len / 8;
        for i in 0..chunks {
            // SAFETY: i*8+8 <= len.
            unsafe {
                let x = _mm512_loadu_si512(src.as_ptr().add(i * 8).cast());
                let x = _mm512_min_epu64(x, _mm512_sub_epi64(x, vq));
                let d = _mm512_add_epi64(x, vqc);
                _mm512_storeu_si512(
                    dst.as_mut_ptr().add(i * 8).cast(),
                    _mm512_min_epu64(d, _mm512_sub_epi64(d, vq)),
                );
            }
        }
        for (d, &x) in dst[chunks * 8..len].iter_mut().zip(&src[chunks * 8..len]) {
            let x = if x >= q { x - q } else { x };
            *d = if x >= c { x - c } else { x + q - c };
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn add_assign(a: &mut [u64], b: &[u64], q: u64) {
        let vq = _mm512_set1_epi64(q as i64);
        let len = a.len().min(b.len());
        let chunks = len / 8;
        for i in 0..chunks {
            // SAFETY: i*8+8 <= len.
            unsafe {
                let pa = a.as_mut_ptr().add(i * 8);
                let s = _mm512_add_epi64(
                    _mm512_loadu_si512(pa.cast()),
                    _mm512_loadu_si512(b.as_ptr().add(i * 8).cast()),
                );
                _mm512_storeu_si512(pa.cast(), _mm512_min_epu64(s, _mm512_sub_epi64(s, vq)));
            }
        }
        for (x, &y) in a[chunks * 8..len].iter_mut().zip(&b[chunks * 8..len]) {
            let s = *x + y;
            *x = if s >= q { s - q } else { s };
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sub_assign(a: &mut [u64], b: &[u64], q: u64) {
        let vq = _mm512_set1_epi64(q as i64);
        let len = a.len().min(b.len());
        let chunks = len / 8;
        for i in 0..chunks {
            // SAFETY: i*8+8 <= len.
            unsafe {
                let pa = a.as_mut_ptr().add(i * 8);
                let d = _mm512_add_epi64(
                    _mm512_sub_epi64(
                        _mm512_loadu_si512(pa.cast()),
                        _mm512_loadu_si512(b.as_ptr().add(i * 8).cast()),
                    ),
                    vq,
                );
                _mm512_storeu_si512(pa.cast(), _mm512_min_epu64(d, _mm512_sub_epi64(d, vq)));
            }
        }
        for (x, &y) in a[chunks * 8..len].iter_mut().zip(&b[chunks * 8..len]) {
            *x = if *x >= y { *x - y } else { *x + q - y };
        }
    }
}

/// Portable reference versions, exposed for tests that compare them with the vector paths.
pub mod portable {
    use crate::modulus::{Modulus, ShoupConst};

    /// Coefficients per block of [`matrix_mul_add_assign_lazy`] (its sums stay in L1).
    const LAZY_BLOCK: usize = 64;

    /// The matrix kernel of `super::matrix_mul_add_assign` without AVX-512, with lazy
    /// reduction: per block of coefficients and per output, the products of its terms are
    /// summed unreduced and reduced once per chunk of terms that fits: in `u64` when
    /// `q < 2^32` (32 x 32-bit products, vectorized where AVX2 is detected), in `u128`
    /// otherwise. The same result as one Shoup multiply-add per term, with one reduction per
    /// coefficient instead of one per product.
    pub fn matrix_mul_add_assign_lazy(
        accs: &mut [&mut [u64]],
        xs: &[&[u64]],
        w: &[ShoupConst],
        m: &Modulus,
    ) {
        let q = m.value();
        let len = accs
            .iter()
            .map(|a| a.len())
            .chain(xs.iter().map(|x| x.len()))
            .min()
            .unwrap_or(0);
        if q < 1 << 32 {
            // q + kc (q - 1)^2 <= 2^64 - 1
            let sq = ((q - 1) * (q - 1)).max(1);
            let kc = ((u64::MAX - q) / sq).clamp(1, 1 << 20);
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 was detected just above.
                unsafe { lazy_u64_avx2(accs, xs, w, m, len, kc) };
                return;
            }
            if kc < SPLIT_BELOW {
                lazy::<Split32>(accs, xs, w, m, len, SPLIT_TERMS);
            } else {
                lazy::<u64>(accs, xs, w, m, len, kc as usize);
            }
        } else {
            let q = u128::from(q);
            let sq = ((q - 1) * (q - 1)).max(1);
            let kc = ((u128::MAX - q) / sq).clamp(1, 1 << 20) as usize;
            lazy::<u128>(accs, xs, w, m, len, kc);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn lazy_u64_avx2(
        accs: &mut [&mut [u64]],
        xs: &[&[u64]],
        w: &[ShoupConst],
        m: &Modulus,
        len: usize,
        kc: u64,
    ) {
        if kc < SPLIT_BELOW {
            lazy::<Split32>(accs, xs, w, m, len, SPLIT_TERMS);
        } else {
            lazy::<u64>(accs, xs, w, m, len, kc as usize);
        }
    }

    /// An unreduced sum of products: `u64` for `q < 2^32` (32 x 32-bit products, which
    /// AVX2 vectorizes), `u128` otherwise.
    trait LazySum: Copy + Default {
        fn of(x: u64) -> Self;
        /// `self + x w` (`x, w < q`).
        fn mul_add(self, x: u64, w: u64) -> Self;
        fn reduce(self, m: &Modulus) -> u64;
        /// The value of a reduced sum.
        fn low(self) -> u64;
    }

    impl LazySum for u64 {
        #[inline(always)]
        fn of(x: u64) -> Self {
            x
        }
        #[inline(always)]
        fn mul_add(self, x: u64, w: u64) -> Self {
            // both factors below q < 2^32: a 32 x 32-bit product
            self + u64::from(x as u32) * u64::from(w as u32)
        }
        #[inline(always)]
        fn reduce(self, m: &Modulus) -> u64 {
            m.reduce(self)
        }
        #[inline(always)]
        fn low(self) -> u64 {
            self
        }
    }

    /// A sum of 32 x 32-bit products kept as the sums of their low and high 32-bit halves
    /// (`lo + hi 2^32`), for primes just below 2^32 where a plain `u64` sum holds a single
    /// product: up to 2^31 terms between reductions, each one vectorizable multiply, mask,
    /// shift and two additions.
    #[derive(Clone, Copy, Default)]
    struct Split32 {
        lo: u64,
        hi: u64,
    }

    impl LazySum for Split32 {
        #[inline(always)]
        fn of(x: u64) -> Self {
            Self { lo: x, hi: 0 }
        }
        #[inline(always)]
        fn mul_add(self, x: u64, w: u64) -> Self {
            let p = u64::from(x as u32) * u64::from(w as u32);
            Self {
                lo: self.lo + (p & 0xffff_ffff),
                hi: self.hi + (p >> 32),
            }
        }
        #[inline(always)]
        fn reduce(self, m: &Modulus) -> u64 {
            m.reduce_u128((u128::from(self.hi) << 32) + u128::from(self.lo))
        }
        #[inline(always)]
        fn low(self) -> u64 {
            self.lo
        }
    }

    /// Terms between reductions of a plain `u64` sum below which [`Split32`] sums instead.
    const SPLIT_BELOW: u64 = 16;
    /// Terms between reductions of a [`Split32`] sum (each half below `q + kc 2^32 < 2^64`).
    const SPLIT_TERMS: usize = 1 << 20;

    impl LazySum for u128 {
        #[inline(always)]
        fn of(x: u64) -> Self {
            u128::from(x)
        }
        #[inline(always)]
        fn mul_add(self, x: u64, w: u64) -> Self {
            self + u128::from(x) * u128::from(w)
        }
        #[inline(always)]
        fn reduce(self, m: &Modulus) -> u64 {
            m.reduce_u128(self)
        }
        #[inline(always)]
        fn low(self) -> u64 {
            self as u64
        }
    }

    /// Per block of coefficients and per output, sums of at most `kc` products after the
    /// accumulator, one reduction per coefficient and chunk.
    #[inline(always)]
    fn lazy<S: LazySum>(
        accs: &mut [&mut [u64]],
        xs: &[&[u64]],
        w: &[ShoupConst],
        m: &Modulus,
        len: usize,
        kc: usize,
    ) {
        let k = xs.len();
        let mut sums = [S::default(); LAZY_BLOCK];
        for start in (0..len).step_by(LAZY_BLOCK) {
            let end = (start + LAZY_BLOCK).min(len);
            for (o, acc) in accs.iter_mut().enumerate() {
                let a = &mut acc[start..end];
                let s = &mut sums[..end - start];
                for (d, &v) in s.iter_mut().zip(a.iter()) {
                    *d = S::of(v);
                }
                let ws = &w[o * k..(o + 1) * k];
                for (xc, wc) in xs.chunks(kc).zip(ws.chunks(kc)) {
                    for (x, wv) in xc.iter().zip(wc) {
                        if wv.value == 0 {
                            continue;
                        }
                        for (d, &v) in s.iter_mut().zip(&x[start..end]) {
                            *d = d.mul_add(v, wv.value);
                        }
                    }
                    for d in s.iter_mut() {
                        *d = S::of(d.reduce(m));
                    }
                }
                for (o, &d) in a.iter_mut().zip(s.iter()) {
                    *o = d.low();
                }
            }
        }
    }

    /// Scalar `a = a * b mod q`.
    pub fn mul_assign(a: &mut [u64], b: &[u64], m: &Modulus) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x = m.mul(*x, y);
        }
    }
    /// Scalar `acc = acc + a * b mod q`.
    pub fn mul_add_assign(acc: &mut [u64], a: &[u64], b: &[u64], m: &Modulus) {
        for ((d, &x), &y) in acc.iter_mut().zip(a).zip(b) {
            *d = m.reduce_u128(u128::from(x) * u128::from(y) + u128::from(*d));
        }
    }
    /// Scalar two-output dot product `out0 = sum_j x_j b_j`, `out1 = sum_j x_j a_j` (mod q,
    /// inputs reduced) with lazy sums (see [`dots`]).
    pub fn dot_product_2(
        out0: &mut [u64],
        out1: &mut [u64],
        x: &[&[u64]],
        b: &[&[u64]],
        a: &[&[u64]],
        m: &Modulus,
    ) {
        let len = x
            .iter()
            .chain(b)
            .chain(a)
            .map(|s| s.len())
            .min()
            .unwrap_or(usize::MAX)
            .min(out0.len())
            .min(out1.len());
        let terms = x.len().min(b.len()).min(a.len());
        let mut outs = [out0, out1];
        run_dots(
            &mut outs,
            false,
            &x[..terms],
            &[&b[..terms], &a[..terms]],
            m,
            len,
        );
    }

    /// Scalar `acc = acc + sum_j x_j y_j mod q` (inputs reduced) with lazy sums (see
    /// [`dots`]).
    pub fn dot_product_add_assign(acc: &mut [u64], x: &[&[u64]], y: &[&[u64]], m: &Modulus) {
        let len = x
            .iter()
            .chain(y)
            .map(|s| s.len())
            .min()
            .unwrap_or(usize::MAX)
            .min(acc.len());
        let terms = x.len().min(y.len());
        let mut outs = [acc];
        run_dots(&mut outs, true, &x[..terms], &[&y[..terms]], m, len);
    }

    /// Scalar [`super::dot_products_add_assign`] with lazy sums (see [`dots`]).
    pub fn dot_products_add_assign(
        accs: &mut [&mut [u64]],
        y: &[&[u64]],
        xs: &[&[&[u64]]],
        m: &Modulus,
    ) {
        let outs = accs.len().min(xs.len());
        let terms = xs[..outs]
            .iter()
            .map(|x| x.len())
            .min()
            .unwrap_or(0)
            .min(y.len());
        let len = y[..terms]
            .iter()
            .chain(xs[..outs].iter().flat_map(|x| x[..terms].iter()))
            .map(|s| s.len())
            .chain(accs[..outs].iter().map(|a| a.len()))
            .min()
            .unwrap_or(0);
        let ys: Vec<&[&[u64]]> = xs[..outs].iter().map(|x| &x[..terms]).collect();
        run_dots(&mut accs[..outs], true, &y[..terms], &ys, m, len);
    }

    /// [`dots`] in `u64` for `q < 2^32` and `u128` above; where AVX2 is detected, the
    /// sums by 32-bit halves of [`dots_halves_avx2`] for every `q < 2^50` except small ones
    /// whose plain `u64` sums take many terms (vectorized too).
    fn run_dots(
        outs: &mut [&mut [u64]],
        add: bool,
        x: &[&[u64]],
        ys: &[&[&[u64]]],
        m: &Modulus,
        len: usize,
    ) {
        let q = m.value();
        if q < 1 << 32 {
            let sq = ((q - 1) * (q - 1)).max(1);
            let kc = ((u64::MAX - q) / sq).clamp(1, 1 << 20);
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 was detected just above.
                unsafe { dots_u64_avx2(outs, add, x, ys, m, len, kc) };
                return;
            }
            if kc < SPLIT_BELOW {
                dots::<Split32>(outs, add, x, ys, m, len, SPLIT_TERMS);
            } else {
                dots::<u64>(outs, add, x, ys, m, len, kc as usize);
            }
        } else {
            #[cfg(target_arch = "x86_64")]
            if q < 1 << 50 && std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 was detected just above; q < 2^50.
                unsafe { dots_halves_avx2::<true>(outs, add, x, ys, m, len) };
                return;
            }
            let q = u128::from(q);
            let sq = ((q - 1) * (q - 1)).max(1);
            let kc = ((u128::MAX - q) / sq).clamp(1, 1 << 20) as usize;
            dots::<u128>(outs, add, x, ys, m, len, kc);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn dots_u64_avx2(
        outs: &mut [&mut [u64]],
        add: bool,
        x: &[&[u64]],
        ys: &[&[&[u64]]],
        m: &Modulus,
        len: usize,
        kc: u64,
    ) {
        if kc < SPLIT_BELOW {
            // SAFETY: AVX2 is enabled for this function.
            unsafe { dots_halves_avx2::<false>(outs, add, x, ys, m, len) };
        } else {
            dots::<u64>(outs, add, x, ys, m, len, kc as usize);
        }
    }

    /// Terms between reductions of [`dots_halves_avx2`] for `q < 2^50`: its middle sums
    /// grow by less than `2^32 + 2^51` per term.
    const WIDE_TERMS: usize = 1 << 12;

    /// [`dots`] for `q < 2^50` in AVX2 registers, by 32-bit halves: with `x = x1 2^32 + x0`
    /// and `y = y1 2^32 + y0` (`x1, y1 < 2^18`), `x y = a + b 2^32 + c 2^64` where
    /// `a = low half of x0 y0`, `b = high half of x0 y0 + x0 y1 + x1 y0`, `c = x1 y1`: four
    /// 32 x 32-bit vector products per four terms, summed in three `u64` accumulators per
    /// coefficient, reduced once per coefficient and chunk of terms. Without `WIDE`
    /// (`q < 2^32`: `x1 = y1 = 0`) one product and two sums, [`SPLIT_TERMS`] terms per
    /// chunk. Per output and block of 64 coefficients, the sums stay in L1 while each term's
    /// block streams through (fewer than 64 left: [`dots`] in `u128`). Slices as in [`dots`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn dots_halves_avx2<const WIDE: bool>(
        outs: &mut [&mut [u64]],
        add: bool,
        x: &[&[u64]],
        ys: &[&[&[u64]]],
        m: &Modulus,
        len: usize,
    ) {
        use core::arch::x86_64::*;
        // coefficients per block: the sums (3 x 512 bytes) stay in L1 while each term's
        // block streams through as one contiguous run, which the prefetcher follows
        const G: usize = 64;
        const V: usize = G / 4;
        let per_chunk = if WIDE { WIDE_TERMS } else { SPLIT_TERMS };
        let mask = _mm256_set1_epi64x(0xffff_ffff);
        let full = len - len % G;
        for (out, y) in outs.iter_mut().zip(ys) {
            let terms = x.len().min(y.len());
            for c in (0..full).step_by(G) {
                for (chunk, j0) in (0..terms.max(1)).step_by(per_chunk).enumerate() {
                    let j1 = (j0 + per_chunk).min(terms);
                    let o = &mut out[c..c + G];
                    let zero = _mm256_setzero_si256();
                    let (mut a, mut b, mut cc) = ([zero; V], [zero; V], [zero; V]);
                    if add || chunk > 0 {
                        for (k, v) in a.iter_mut().enumerate() {
                            // SAFETY: `o` holds G words, V vectors of four.
                            *v = unsafe { _mm256_loadu_si256(o[4 * k..].as_ptr().cast()) };
                        }
                    }
                    for (xj, yj) in x[j0..j1].iter().zip(&y[j0..j1]) {
                        let (xj, yj) = (&xj[c..c + G], &yj[c..c + G]);
                        for k in 0..V {
                            // SAFETY: `xj`, `yj` hold G words each.
                            let (xv, yv) = unsafe {
                                (
                                    _mm256_loadu_si256(xj[4 * k..].as_ptr().cast()),
                                    _mm256_loadu_si256(yj[4 * k..].as_ptr().cast()),
                                )
                            };
                            let p = _mm256_mul_epu32(xv, yv);
                            a[k] = _mm256_add_epi64(a[k], _mm256_and_si256(p, mask));
                            b[k] = _mm256_add_epi64(b[k], _mm256_srli_epi64::<32>(p));
                            if WIDE {
                                let (x1, y1) =
                                    (_mm256_srli_epi64::<32>(xv), _mm256_srli_epi64::<32>(yv));
                                let mid = _mm256_add_epi64(
                                    _mm256_mul_epu32(xv, y1),
                                    _mm256_mul_epu32(x1, yv),
                                );
                                b[k] = _mm256_add_epi64(b[k], mid);
                                cc[k] = _mm256_add_epi64(cc[k], _mm256_mul_epu32(x1, y1));
                            }
                        }
                    }
                    let (mut la, mut lb, mut lc) = ([0u64; G], [0u64; G], [0u64; G]);
                    for k in 0..V {
                        // SAFETY: the arrays hold G words each.
                        unsafe {
                            _mm256_storeu_si256(la[4 * k..].as_mut_ptr().cast(), a[k]);
                            _mm256_storeu_si256(lb[4 * k..].as_mut_ptr().cast(), b[k]);
                            _mm256_storeu_si256(lc[4 * k..].as_mut_ptr().cast(), cc[k]);
                        }
                    }
                    for (i, d) in o.iter_mut().enumerate() {
                        *d = m.reduce_u128(
                            u128::from(la[i])
                                + (u128::from(lb[i]) << 32)
                                + (u128::from(lc[i]) << 64),
                        );
                    }
                }
            }
        }
        if full < len {
            // the last coefficients (fewer than a block): the u128 sums of `dots`
            fn tail<'a>(v: &[&'a [u64]], from: usize, to: usize) -> Vec<&'a [u64]> {
                v.iter().map(|s| &s[from..to]).collect()
            }
            let xt = tail(x, full, len);
            let yt: Vec<Vec<&[u64]>> = ys.iter().map(|y| tail(y, full, len)).collect();
            let yr: Vec<&[&[u64]]> = yt.iter().map(|v| v.as_slice()).collect();
            let mut ot: Vec<&mut [u64]> = outs.iter_mut().map(|o| &mut o[full..len]).collect();
            // below 2^100 per product: a u128 sum holds 2^20 of them
            dots::<u128>(&mut ot, add, &xt, &yr, m, len - full, 1 << 20);
        }
    }

    /// Per block of coefficients and per output `o`: `outs[o] (+)= sum_j x_j ys[o]_j`, the
    /// products summed unreduced in `S` and reduced once per coefficient and chunk of `kc`
    /// terms (the sums of a block stay in L1 while the terms stream through). The same
    /// result as one modular multiply-add per term.
    #[inline(always)]
    fn dots<S: LazySum>(
        outs: &mut [&mut [u64]],
        add: bool,
        x: &[&[u64]],
        ys: &[&[&[u64]]],
        m: &Modulus,
        len: usize,
        kc: usize,
    ) {
        let mut sums = [S::default(); LAZY_BLOCK];
        for start in (0..len).step_by(LAZY_BLOCK) {
            let end = (start + LAZY_BLOCK).min(len);
            for (out, y) in outs.iter_mut().zip(ys) {
                let o = &mut out[start..end];
                let s = &mut sums[..end - start];
                for (d, &v) in s.iter_mut().zip(o.iter()) {
                    *d = if add { S::of(v) } else { S::default() };
                }
                for (xc, yc) in x.chunks(kc).zip(y.chunks(kc)) {
                    for (xj, yj) in xc.iter().zip(yc.iter()) {
                        for ((d, &u), &v) in s.iter_mut().zip(&xj[start..end]).zip(&yj[start..end])
                        {
                            *d = d.mul_add(u, v);
                        }
                    }
                    for d in s.iter_mut() {
                        *d = S::of(d.reduce(m));
                    }
                }
                for (o, &d) in o.iter_mut().zip(s.iter()) {
                    *o = d.low();
                }
            }
        }
    }
    /// Scalar `a = a * w mod q`.
    pub fn mul_shoup_assign(a: &mut [u64], w: ShoupConst, m: &Modulus) {
        for x in a.iter_mut() {
            *x = m.mul_shoup(*x, w);
        }
    }
}
