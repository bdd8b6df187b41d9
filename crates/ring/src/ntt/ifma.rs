//! AVX-512 IFMA NTT for moduli below 2^50.
//!
//! Negacyclic NTT of one RNS limb using the AVX-512 IFMA instructions
//! (`vpmadd52luq` / `vpmadd52huq`), selected at run time.
//!
//! Convention (identical to the portable path, bit for bit):
//! * forward: input coefficients in `[0, q)` in standard order, output
//!   `A[i] = sum_j a[j] * psi^((2*brv(i)+1)*j) mod q` (bit-reversed evaluation
//!   order), fully reduced in `[0, q)`;
//! * inverse: the exact inverse map, output coefficients in `[0, q)`.
//!
//! Arithmetic: Harvey lazy butterflies with 52-bit Shoup multiplication. For
//! `w < q < 2^50` and `w' = floor(w * 2^52 / q)`, `y < 2^52`:
//! `hi = floor(w' * y / 2^52)`, `r = (w*y - hi*q) mod 2^52` lies in `[0, 2q)`.
//! * Forward: by default values live in `[0, 4q)` between stages (`4q < 2^52` is why
//!   `q < 2^50` is required). When `(2 log2(n) + 4) q < 2^52` (q below about 2^46.8 for
//!   n = 2^17) no intermediate reduction is done at all: values grow by at most 2q per
//!   stage and are reduced once at the end.
//! * Inverse: values entering a stage are below a bound `b` (a multiple of q, `2b <= 2^52`,
//!   initially 2q); sums are left unreduced (the bound doubles) while that still fits,
//!   then reduced at the largest fitting bound. The last stage is fused with `n^{-1}`.
//! * In the unreduced (lazy) parts, products are not masked to 52 bits: the IFMA
//!   multipliers read only bits 0..52 of their operands and additions stay right modulo
//!   2^52, so the high bits are cleared only where a comparison needs the true value.
//!
//! Structure: stages with butterfly distance `t >= 16` run two or three per memory pass
//! (radix-4 / radix-8 style, 8-lane loops with broadcast roots); the last four forward
//! stages (first four inverse stages), `t = 8, 4, 2, 1`, run in registers on 16-element
//! blocks (two blocks interleaved) with 128-bit / 64-bit shuffles, reading their roots
//! from the same compact bit-reversed root table. No allocation in the transforms.
//!
//! Input ranges: the contract is `a[i] < q`; the forward also accepts `a[i] < 4q` and the
//! inverse `a[i] < 2q` (tested), both still return fully reduced results.

#[cfg(target_arch = "x86_64")]
pub(crate) use imp::IfmaNttTables;
#[cfg(not(target_arch = "x86_64"))]
pub(crate) use stub::IfmaNttTables;

/// Whether the running CPU supports AVX-512F and AVX-512 IFMA (probed once, cached);
/// always false on targets other than x86_64.
pub(crate) fn is_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        imp::detect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Scalar helpers shared by the table construction (not hot).
#[cfg(target_arch = "x86_64")]
mod scalar {
    pub(super) fn mul_mod(a: u64, b: u64, q: u64) -> u64 {
        ((u128::from(a) * u128::from(b)) % u128::from(q)) as u64
    }

    pub(super) fn pow_mod(mut base: u64, mut e: u64, q: u64) -> u64 {
        let mut r = 1 % q;
        base %= q;
        while e > 0 {
            if e & 1 == 1 {
                r = mul_mod(r, base, q);
            }
            base = mul_mod(base, base, q);
            e >>= 1;
        }
        r
    }

    /// `floor(w * 2^52 / q)` for `w < q < 2^50`.
    pub(super) fn shoup52(w: u64, q: u64) -> u64 {
        ((u128::from(w) << 52) / u128::from(q)) as u64
    }

    pub(super) fn bit_reverse(x: usize, bits: u32) -> usize {
        if bits == 0 {
            0
        } else {
            x.reverse_bits() >> (usize::BITS - bits)
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::is_available;
    use super::scalar::{bit_reverse, mul_mod, pow_mod, shoup52};
    use core::arch::x86_64::{
        __m512i, _mm512_add_epi64, _mm512_and_si512, _mm512_loadu_si512, _mm512_madd52hi_epu64,
        _mm512_madd52lo_epu64, _mm512_min_epu64, _mm512_permutex2var_epi64,
        _mm512_permutexvar_epi64, _mm512_set_epi64, _mm512_set1_epi64, _mm512_setzero_si512,
        _mm512_shuffle_i64x2, _mm512_storeu_si512, _mm512_sub_epi64, _mm512_unpackhi_epi64,
        _mm512_unpacklo_epi64,
    };
    use std::sync::atomic::{AtomicU8, Ordering};

    const MASK52: u64 = (1u64 << 52) - 1;

    /// 0 = not yet probed, 1 = unavailable, 2 = available.
    static IFMA_STATE: AtomicU8 = AtomicU8::new(0);

    /// Cached run-time detection of avx512f + avx512ifma.
    pub(super) fn detect() -> bool {
        match IFMA_STATE.load(Ordering::Relaxed) {
            2 => true,
            1 => false,
            _ => {
                let ok = std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512ifma");
                IFMA_STATE.store(if ok { 2 } else { 1 }, Ordering::Relaxed);
                ok
            }
        }
    }

    /// Precomputed tables for the IFMA NTT of one limb.
    #[derive(Debug, Clone)]
    pub(crate) struct IfmaNttTables {
        n: usize,
        q: u64,
        /// `psi^brv(k)` for `k in 0..n` (index 0 unused, set to 1).
        fwd: Vec<u64>,
        /// 52-bit Shoup factors of `fwd`.
        fwd_shoup: Vec<u64>,
        /// `psi^(-brv(k))` for `k in 0..n` (index 0 unused, set to 1).
        inv: Vec<u64>,
        /// 52-bit Shoup factors of `inv`.
        inv_shoup: Vec<u64>,
        /// `n^{-1} mod q` and its Shoup factor.
        n_inv: u64,
        n_inv_shoup: u64,
        /// `psi^(-brv(1)) * n^{-1} mod q` (last inverse stage, fused) and its Shoup factor.
        n_inv_w: u64,
        n_inv_w_shoup: u64,
        /// `floor(2^52 / q)`: Shoup factor of 1, for the final reduction of the lazy forward.
        one_shoup: u64,
        /// `(2 log n + 4) q < 2^52`: the forward transform may skip all intermediate
        /// reductions (inputs below 4q grow by at most 2q per stage).
        pub(super) lazy_fwd: bool,
    }

    impl IfmaNttTables {
        /// `q < 2^50`, `q ≡ 1 mod 2n`, `psi` a primitive 2n-th root of unity
        /// mod q; `n` a power of two `>= 16`. Returns `None` if any of these
        /// fail or IFMA is unavailable.
        pub(crate) fn new(n: usize, q: u64, psi: u64) -> Option<Self> {
            if !is_available() || !n.is_power_of_two() || n < 16 || !(3..1u64 << 50).contains(&q) {
                return None;
            }
            let two_n = 2 * n as u64;
            if q % two_n != 1 || psi == 0 || psi >= q {
                return None;
            }
            // psi^n == -1 makes psi a primitive 2n-th root (its order divides 2n, not n).
            if pow_mod(psi, n as u64, q) != q - 1 {
                return None;
            }
            let bits = n.trailing_zeros();
            let psi_inv = pow_mod(psi, q - 2, q);
            // Powers psi^k, psi^-k for k in 0..n.
            let mut pw = vec![1u64; n];
            let mut pw_inv = vec![1u64; n];
            for k in 1..n {
                pw[k] = mul_mod(pw[k - 1], psi, q);
                pw_inv[k] = mul_mod(pw_inv[k - 1], psi_inv, q);
            }
            let mut fwd = vec![1u64; n];
            let mut inv = vec![1u64; n];
            for k in 0..n {
                let e = bit_reverse(k, bits);
                fwd[k] = pw[e];
                inv[k] = pw_inv[e];
            }
            let fwd_shoup = fwd.iter().map(|&w| shoup52(w, q)).collect();
            let inv_shoup = inv.iter().map(|&w| shoup52(w, q)).collect();
            let n_inv = pow_mod(n as u64 % q, q - 2, q);
            let n_inv_w = mul_mod(n_inv, inv[1], q);
            Some(Self {
                n,
                q,
                fwd,
                fwd_shoup,
                inv,
                inv_shoup,
                n_inv,
                n_inv_shoup: shoup52(n_inv, q),
                n_inv_w,
                n_inv_w_shoup: shoup52(n_inv_w, q),
                one_shoup: shoup52(1, q),
                lazy_fwd: (2 * u128::from(bits) + 4) * u128::from(q) < 1u128 << 52,
            })
        }

        /// Forward NTT in place; output fully reduced in `[0, q)`.
        ///
        /// Contract: `a.len() == n` (checked; a mismatch leaves `a` untouched and
        /// trips a debug assertion) and every `a[i] < q` (inputs up to `4q` are
        /// tolerated and still give the correct residues).
        pub(crate) fn forward(&self, a: &mut [u64]) {
            debug_assert_eq!(a.len(), self.n, "IFMA NTT: wrong length");
            if a.len() != self.n {
                return;
            }
            // SAFETY: `self` can only be built by `new`, which checked that the CPU
            // supports avx512f and avx512ifma; `a.len() == n` was checked above.
            unsafe {
                if self.lazy_fwd {
                    forward_kernel::<true>(self, a);
                } else {
                    forward_kernel::<false>(self, a);
                }
            }
        }

        /// Inverse NTT in place; output fully reduced in `[0, q)`.
        ///
        /// Contract: `a.len() == n` (checked as in [`Self::forward`]) and every
        /// `a[i] < q` (inputs up to `2q` are tolerated).
        pub(crate) fn inverse(&self, a: &mut [u64]) {
            debug_assert_eq!(a.len(), self.n, "IFMA NTT: wrong length");
            if a.len() != self.n {
                return;
            }
            // SAFETY: as in `forward`.
            unsafe { inverse_kernel(self, a) }
        }
    }

    /// Constants broadcast once per transform.
    #[derive(Clone, Copy)]
    struct Consts {
        q: __m512i,
        q2: __m512i,
        neg_q: __m512i,
        mask: __m512i,
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn consts(q: u64) -> Consts {
        Consts {
            q: _mm512_set1_epi64(q as i64),
            q2: _mm512_set1_epi64((2 * q) as i64),
            neg_q: _mm512_set1_epi64(((1u64 << 52) - q) as i64),
            mask: _mm512_set1_epi64(MASK52 as i64),
        }
    }

    /// `w * y mod q` in `[0, 2q)` for `y < 2^52`, `w < q < 2^50`, `wp = floor(w 2^52 / q)`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn mul_shoup(y: __m512i, w: __m512i, wp: __m512i, c: Consts) -> __m512i {
        let zero = _mm512_setzero_si512();
        let hi = _mm512_madd52hi_epu64(zero, wp, y);
        let lo = _mm512_madd52lo_epu64(zero, w, y);
        // lo + (hi * (2^52 - q) mod 2^52) == w*y - hi*q (mod 2^52).
        let r = _mm512_madd52lo_epu64(lo, hi, c.neg_q);
        _mm512_and_si512(r, c.mask)
    }

    /// [`mul_shoup`] without the final masking: the result is `w * y mod q` in `[0, 2q)`
    /// plus possibly `2^52` ("dirty" above bit 51). The IFMA multipliers read only bits
    /// 0..52 of their operands, and additions keep values right modulo 2^52, so dirty
    /// values are fine wherever they only feed multiplications, additions and
    /// subtractions whose true result lies in `[0, 2^52)`; they must be masked with
    /// `c.mask` before any comparison (reduction).
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn mul_shoup_dirty(y: __m512i, w: __m512i, wp: __m512i, c: Consts) -> __m512i {
        let zero = _mm512_setzero_si512();
        let hi = _mm512_madd52hi_epu64(zero, wp, y);
        let lo = _mm512_madd52lo_epu64(zero, w, y);
        _mm512_madd52lo_epu64(lo, hi, c.neg_q)
    }

    /// Maps `[0, 2m)` to `[0, m)` (unsigned min trick: `x - m` wraps when `x < m`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn reduce_once(x: __m512i, m: __m512i) -> __m512i {
        _mm512_min_epu64(x, _mm512_sub_epi64(x, m))
    }

    /// `x mod q` in `[0, q)` for `x < 2^52`, with `one_p = floor(2^52 / q)`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn reduce_below_2_52(x: __m512i, one_p: __m512i, c: Consts) -> __m512i {
        // hi = floor(x * one_p / 2^52) <= x / q, so hi * q <= x < 2^52 is exact in the
        // low 52-bit product and x - hi * q lies in [0, 2q) (Shoup's bound).
        let hi = _mm512_madd52hi_epu64(_mm512_setzero_si512(), one_p, x);
        let r = _mm512_sub_epi64(x, _mm512_madd52lo_epu64(_mm512_setzero_si512(), hi, c.q));
        reduce_once(r, c.q)
    }

    /// Cooley-Tukey lazy butterfly. Without `LAZY`: inputs in `[0, 4q)`, outputs in
    /// `[0, 4q)`. With `LAZY`: no reduction of `x`; inputs below `B`, outputs below
    /// `B + 2q` (the caller guarantees every bound stays below 2^52), and inputs and
    /// outputs may be dirty (see [`mul_shoup_dirty`]).
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn ct<const LAZY: bool>(
        x: __m512i,
        y: __m512i,
        w: __m512i,
        wp: __m512i,
        c: Consts,
    ) -> (__m512i, __m512i) {
        // Lazy: no comparisons until the final (masked) reduction, so values may be dirty.
        let (x, t) = if LAZY {
            (x, mul_shoup_dirty(y, w, wp, c))
        } else {
            (reduce_once(x, c.q2), mul_shoup(y, w, wp, c))
        };
        (
            _mm512_add_epi64(x, t),
            _mm512_sub_epi64(_mm512_add_epi64(x, c.q2), t),
        )
    }

    /// Gentleman-Sande lazy butterfly at input bound `b` (a multiple of q with
    /// `2q <= b` and `2b <= 2^52`, broadcast): inputs below `b`; the difference output
    /// is in `[0, 2q)`; the sum output is below `2b` with `LAZY`, else reduced below `b`.
    /// Inputs and outputs may be dirty (see [`mul_shoup_dirty`]): the sum is masked
    /// before it is reduced.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn gs<const LAZY: bool>(
        x: __m512i,
        y: __m512i,
        w: __m512i,
        wp: __m512i,
        b: __m512i,
        c: Consts,
    ) -> (__m512i, __m512i) {
        let s = _mm512_add_epi64(x, y);
        let s = if LAZY {
            s
        } else {
            reduce_once(_mm512_and_si512(s, c.mask), b)
        };
        let d = _mm512_sub_epi64(_mm512_add_epi64(x, b), y);
        (s, mul_shoup_dirty(d, w, wp, c))
    }

    /// Bounds of three consecutive inverse stages starting at bound `b`: `b, 2b, 4b` when
    /// the sums are left unreduced (`LAZY`), else `b` throughout.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn stage_bounds<const LAZY: bool>(b: u64) -> (__m512i, __m512i, __m512i) {
        let b1 = _mm512_set1_epi64(b as i64);
        if LAZY {
            (
                b1,
                _mm512_set1_epi64((2 * b) as i64),
                _mm512_set1_epi64((4 * b) as i64),
            )
        } else {
            (b1, b1, b1)
        }
    }

    /// Index vector, lanes given low to high (`_mm512_set_epi64` takes them high to low).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn idx(l: [i64; 8]) -> __m512i {
        _mm512_set_epi64(l[7], l[6], l[5], l[4], l[3], l[2], l[1], l[0])
    }

    /// Broadcasts table entry `k` of a root table and of its Shoup table.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn bc2(w: &[u64], wp: &[u64], k: usize) -> (__m512i, __m512i) {
        (
            _mm512_set1_epi64(w[k] as i64),
            _mm512_set1_epi64(wp[k] as i64),
        )
    }

    /// How many `t >= 16` stages the next memory pass handles (`rem` left).
    #[inline]
    fn pass_width(rem: u32) -> u32 {
        match rem {
            0..=2 => rem,
            4 => 2,
            _ => 3,
        }
    }

    /// Forward stage `(m, t)`, `t >= 8`, one pass.
    ///
    /// # Safety
    /// avx512f + avx512ifma available; `p` valid for reads and writes of `2 m t` u64s.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn fwd_pass2<const LAZY: bool>(
        tb: &IfmaNttTables,
        p: *mut u64,
        m: usize,
        t: usize,
        c: Consts,
    ) {
        let (r, rp) = (&tb.fwd[..], &tb.fwd_shoup[..]);
        for i in 0..m {
            let (w, wp) = bc2(r, rp, m + i);
            let base = 2 * i * t;
            let mut j = base;
            while j < base + t {
                // SAFETY: j + t + 8 <= base + 2t <= 2mt.
                unsafe {
                    let px = p.add(j);
                    let py = p.add(j + t);
                    let (x, y) = ct::<LAZY>(
                        _mm512_loadu_si512(px.cast()),
                        _mm512_loadu_si512(py.cast()),
                        w,
                        wp,
                        c,
                    );
                    _mm512_storeu_si512(px.cast(), x);
                    _mm512_storeu_si512(py.cast(), y);
                }
                j += 8;
            }
        }
    }

    /// Forward stages `(m, t)`, `(2m, t/2)` in one pass, `t >= 16`.
    ///
    /// # Safety
    /// As [`fwd_pass2`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn fwd_pass4<const LAZY: bool>(
        tb: &IfmaNttTables,
        p: *mut u64,
        m: usize,
        t: usize,
        c: Consts,
    ) {
        let (r, rp) = (&tb.fwd[..], &tb.fwd_shoup[..]);
        let h = t / 2;
        for i in 0..m {
            let (w1, w1p) = bc2(r, rp, m + i);
            let (w2, w2p) = bc2(r, rp, 2 * m + 2 * i);
            let (w3, w3p) = bc2(r, rp, 2 * m + 2 * i + 1);
            let base = 2 * i * t;
            let mut j = base;
            while j < base + h {
                // SAFETY: j + 3h + 8 <= base + 4h = base + 2t <= 2mt.
                unsafe {
                    let mut x = [_mm512_setzero_si512(); 4];
                    for (k, xk) in x.iter_mut().enumerate() {
                        *xk = _mm512_loadu_si512(p.add(j + k * h).cast());
                    }
                    (x[0], x[2]) = ct::<LAZY>(x[0], x[2], w1, w1p, c);
                    (x[1], x[3]) = ct::<LAZY>(x[1], x[3], w1, w1p, c);
                    (x[0], x[1]) = ct::<LAZY>(x[0], x[1], w2, w2p, c);
                    (x[2], x[3]) = ct::<LAZY>(x[2], x[3], w3, w3p, c);
                    for (k, xk) in x.iter().enumerate() {
                        _mm512_storeu_si512(p.add(j + k * h).cast(), *xk);
                    }
                }
                j += 8;
            }
        }
    }

    /// Forward stages `(m, t)`, `(2m, t/2)`, `(4m, t/4)` in one pass, `t >= 32`.
    ///
    /// # Safety
    /// As [`fwd_pass2`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn fwd_pass8<const LAZY: bool>(
        tb: &IfmaNttTables,
        p: *mut u64,
        m: usize,
        t: usize,
        c: Consts,
    ) {
        let (r, rp) = (&tb.fwd[..], &tb.fwd_shoup[..]);
        let h = t / 4;
        for i in 0..m {
            let (w1, w1p) = bc2(r, rp, m + i);
            let (w2, w2p) = bc2(r, rp, 2 * m + 2 * i);
            let (w3, w3p) = bc2(r, rp, 2 * m + 2 * i + 1);
            let (w4, w4p) = bc2(r, rp, 4 * m + 4 * i);
            let (w5, w5p) = bc2(r, rp, 4 * m + 4 * i + 1);
            let (w6, w6p) = bc2(r, rp, 4 * m + 4 * i + 2);
            let (w7, w7p) = bc2(r, rp, 4 * m + 4 * i + 3);
            let base = 2 * i * t;
            let mut j = base;
            while j < base + h {
                // SAFETY: j + 7h + 8 <= base + 8h = base + 2t <= 2mt.
                unsafe {
                    let mut x = [_mm512_setzero_si512(); 8];
                    for (k, xk) in x.iter_mut().enumerate() {
                        *xk = _mm512_loadu_si512(p.add(j + k * h).cast());
                    }
                    (x[0], x[4]) = ct::<LAZY>(x[0], x[4], w1, w1p, c);
                    (x[1], x[5]) = ct::<LAZY>(x[1], x[5], w1, w1p, c);
                    (x[2], x[6]) = ct::<LAZY>(x[2], x[6], w1, w1p, c);
                    (x[3], x[7]) = ct::<LAZY>(x[3], x[7], w1, w1p, c);
                    (x[0], x[2]) = ct::<LAZY>(x[0], x[2], w2, w2p, c);
                    (x[1], x[3]) = ct::<LAZY>(x[1], x[3], w2, w2p, c);
                    (x[4], x[6]) = ct::<LAZY>(x[4], x[6], w3, w3p, c);
                    (x[5], x[7]) = ct::<LAZY>(x[5], x[7], w3, w3p, c);
                    (x[0], x[1]) = ct::<LAZY>(x[0], x[1], w4, w4p, c);
                    (x[2], x[3]) = ct::<LAZY>(x[2], x[3], w5, w5p, c);
                    (x[4], x[5]) = ct::<LAZY>(x[4], x[5], w6, w6p, c);
                    (x[6], x[7]) = ct::<LAZY>(x[6], x[7], w7, w7p, c);
                    for (k, xk) in x.iter().enumerate() {
                        _mm512_storeu_si512(p.add(j + k * h).cast(), *xk);
                    }
                }
                j += 8;
            }
        }
    }

    /// # Safety
    /// The CPU supports avx512f + avx512ifma, `a.len() == tb.n`, `tb` built by `new`.
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn forward_kernel<const LAZY: bool>(tb: &IfmaNttTables, a: &mut [u64]) {
        let n = tb.n;
        let c = consts(tb.q);
        let p = a.as_mut_ptr();

        // Stages with t >= 16, two or three per memory pass.
        let mut m = 1usize;
        let mut t = n / 2;
        let mut rem = n.trailing_zeros() - 4;
        while rem > 0 {
            let k = pass_width(rem);
            // SAFETY: p is valid for n = 2mt u64s; the CPU features are guaranteed by the caller.
            unsafe {
                match k {
                    3 => fwd_pass8::<LAZY>(tb, p, m, t, c),
                    2 => fwd_pass4::<LAZY>(tb, p, m, t, c),
                    _ => fwd_pass2::<LAZY>(tb, p, m, t, c),
                }
            }
            m <<= k;
            t >>= k;
            rem -= k;
        }
        debug_assert_eq!((m, t), (n / 16, 8));

        // Last four stages (t = 8, 4, 2, 1) on 16-element blocks, in registers; two
        // blocks per iteration so that their dependency chains interleave.
        let k = FwdShuffles::new();
        let nb = n / 8;
        let mut b = 0usize;
        while b + 4 <= nb {
            // SAFETY: blocks b .. b + 4 lie within n (8 (b + 4) <= n).
            unsafe { fwd_last4::<2, LAZY>(tb, p, b, &k, c) };
            b += 4;
        }
        if b < nb {
            // SAFETY: blocks b, b + 1 lie within n.
            unsafe { fwd_last4::<1, LAZY>(tb, p, b, &k, c) };
        }
    }

    /// Index vectors of the forward in-register stages.
    struct FwdShuffles {
        bcast4: __m512i,
        bcast2: __m512i,
        pair_lo: __m512i,
        pair_hi: __m512i,
        out_lo: __m512i,
        out_hi: __m512i,
    }

    impl FwdShuffles {
        #[inline]
        #[target_feature(enable = "avx512f,avx512ifma")]
        fn new() -> Self {
            Self {
                bcast4: idx([0, 0, 0, 0, 1, 1, 1, 1]),
                bcast2: idx([0, 0, 1, 1, 2, 2, 3, 3]),
                pair_lo: idx([0, 1, 8, 9, 4, 5, 12, 13]),
                pair_hi: idx([2, 3, 10, 11, 6, 7, 14, 15]),
                out_lo: idx([0, 8, 1, 9, 2, 10, 3, 11]),
                out_hi: idx([4, 12, 5, 13, 6, 14, 7, 15]),
            }
        }
    }

    /// Last four forward stages (t = 8, 4, 2, 1) of `U` consecutive 16-element blocks
    /// starting at 8-element block `b` (even), plus the final reduction to `[0, q)`.
    ///
    /// # Safety
    /// avx512f + avx512ifma available; `p` valid for `tb.n` u64s; `8 (b + 2U) <= tb.n`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn fwd_last4<const U: usize, const LAZY: bool>(
        tb: &IfmaNttTables,
        p: *mut u64,
        b: usize,
        k: &FwdShuffles,
        c: Consts,
    ) {
        let nb = tb.n / 8;
        let roots = tb.fwd.as_ptr();
        let roots_p = tb.fwd_shoup.as_ptr();
        let zero = _mm512_setzero_si512();
        let mut x = [zero; U];
        let mut y = [zero; U];
        // SAFETY (all pointer reads and writes below): for block bb = b + 2u < nb:
        // data 8 bb + 16 <= n; root reads: nb/2 + bb/2 < n/8, and the 8-lane loads end at
        // nb + bb + 8 <= n/4 + 6, 2nb + 2bb + 8 <= n/2 + 4, 4nb + 4bb + 8 <= n.
        unsafe {
            // t = 8: one root fwd[nb/2 + bb/2] per 16-element block.
            for u in 0..U {
                let bb = b + 2 * u;
                let v0 = _mm512_loadu_si512(p.add(8 * bb).cast());
                let v1 = _mm512_loadu_si512(p.add(8 * bb + 8).cast());
                let w = _mm512_set1_epi64(*roots.add(nb / 2 + bb / 2) as i64);
                let wp = _mm512_set1_epi64(*roots_p.add(nb / 2 + bb / 2) as i64);
                (x[u], y[u]) = ct::<LAZY>(v0, v1, w, wp, c);
            }
            // t = 4: roots fwd[nb + bb], fwd[nb + bb + 1];
            // x = [v0.0..4, v1.0..4], y = [v0.4..8, v1.4..8] (128-bit chunks).
            for u in 0..U {
                let bb = b + 2 * u;
                let r = _mm512_loadu_si512(roots.add(nb + bb).cast());
                let rp = _mm512_loadu_si512(roots_p.add(nb + bb).cast());
                let w = _mm512_permutexvar_epi64(k.bcast4, r);
                let wp = _mm512_permutexvar_epi64(k.bcast4, rp);
                let x1 = _mm512_shuffle_i64x2::<0b01_00_01_00>(x[u], y[u]);
                let y1 = _mm512_shuffle_i64x2::<0b11_10_11_10>(x[u], y[u]);
                (x[u], y[u]) = ct::<LAZY>(x1, y1, w, wp, c);
            }
            // t = 2: roots fwd[2nb + 2bb .. 2nb + 2bb + 4].
            for u in 0..U {
                let bb = b + 2 * u;
                let r = _mm512_loadu_si512(roots.add(2 * nb + 2 * bb).cast());
                let rp = _mm512_loadu_si512(roots_p.add(2 * nb + 2 * bb).cast());
                let w = _mm512_permutexvar_epi64(k.bcast2, r);
                let wp = _mm512_permutexvar_epi64(k.bcast2, rp);
                let x2 = _mm512_permutex2var_epi64(x[u], k.pair_lo, y[u]);
                let y2 = _mm512_permutex2var_epi64(x[u], k.pair_hi, y[u]);
                (x[u], y[u]) = ct::<LAZY>(x2, y2, w, wp, c);
            }
            // t = 1: roots fwd[4nb + 4bb .. 4nb + 4bb + 8].
            for u in 0..U {
                let bb = b + 2 * u;
                let w = _mm512_loadu_si512(roots.add(4 * nb + 4 * bb).cast());
                let wp = _mm512_loadu_si512(roots_p.add(4 * nb + 4 * bb).cast());
                let x3 = _mm512_unpacklo_epi64(x[u], y[u]);
                let y3 = _mm512_unpackhi_epi64(x[u], y[u]);
                (x[u], y[u]) = ct::<LAZY>(x3, y3, w, wp, c);
            }
            // Full reduction to [0, q), then back to standard lane order.
            for u in 0..U {
                let bb = b + 2 * u;
                let (xr, yr) = if LAZY {
                    // Values below (2 log n + 4) q < 2^52.
                    let one_p = _mm512_set1_epi64(tb.one_shoup as i64);
                    (
                        reduce_below_2_52(_mm512_and_si512(x[u], c.mask), one_p, c),
                        reduce_below_2_52(_mm512_and_si512(y[u], c.mask), one_p, c),
                    )
                } else {
                    // [0, 4q) -> [0, q).
                    (
                        reduce_once(reduce_once(x[u], c.q2), c.q),
                        reduce_once(reduce_once(y[u], c.q2), c.q),
                    )
                };
                let o0 = _mm512_permutex2var_epi64(xr, k.out_lo, yr);
                let o1 = _mm512_permutex2var_epi64(xr, k.out_hi, yr);
                _mm512_storeu_si512(p.add(8 * bb).cast(), o0);
                _mm512_storeu_si512(p.add(8 * bb + 8).cast(), o1);
            }
        }
    }

    /// Inverse stage `(m, t)`, `t >= 8`, one pass.
    ///
    /// # Safety
    /// avx512f + avx512ifma available; `p` valid for reads and writes of `2 m t` u64s.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn inv_pass2<const LAZY: bool>(
        tb: &IfmaNttTables,
        p: *mut u64,
        m: usize,
        t: usize,
        b: u64,
        c: Consts,
    ) {
        let b1 = _mm512_set1_epi64(b as i64);
        let (r, rp) = (&tb.inv[..], &tb.inv_shoup[..]);
        for i in 0..m {
            let (w, wp) = bc2(r, rp, m + i);
            let base = 2 * i * t;
            let mut j = base;
            while j < base + t {
                // SAFETY: j + t + 8 <= base + 2t <= 2mt.
                unsafe {
                    let px = p.add(j);
                    let py = p.add(j + t);
                    let (x, y) = gs::<LAZY>(
                        _mm512_loadu_si512(px.cast()),
                        _mm512_loadu_si512(py.cast()),
                        w,
                        wp,
                        b1,
                        c,
                    );
                    _mm512_storeu_si512(px.cast(), x);
                    _mm512_storeu_si512(py.cast(), y);
                }
                j += 8;
            }
        }
    }

    /// Inverse stages `(m, t)`, `(m/2, 2t)` in one pass; `m >= 2` even, `t >= 8`.
    ///
    /// # Safety
    /// As [`inv_pass2`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn inv_pass4<const LAZY: bool>(
        tb: &IfmaNttTables,
        p: *mut u64,
        m: usize,
        t: usize,
        b: u64,
        c: Consts,
    ) {
        let (b1, b2, _) = stage_bounds::<LAZY>(b);
        let (r, rp) = (&tb.inv[..], &tb.inv_shoup[..]);
        for i in 0..m / 2 {
            let (w1, w1p) = bc2(r, rp, m + 2 * i);
            let (w2, w2p) = bc2(r, rp, m + 2 * i + 1);
            let (w3, w3p) = bc2(r, rp, m / 2 + i);
            let base = 4 * i * t;
            let mut j = base;
            while j < base + t {
                // SAFETY: j + 3t + 8 <= base + 4t <= 2mt.
                unsafe {
                    let mut x = [_mm512_setzero_si512(); 4];
                    for (k, xk) in x.iter_mut().enumerate() {
                        *xk = _mm512_loadu_si512(p.add(j + k * t).cast());
                    }
                    (x[0], x[1]) = gs::<LAZY>(x[0], x[1], w1, w1p, b1, c);
                    (x[2], x[3]) = gs::<LAZY>(x[2], x[3], w2, w2p, b1, c);
                    (x[0], x[2]) = gs::<LAZY>(x[0], x[2], w3, w3p, b2, c);
                    (x[1], x[3]) = gs::<LAZY>(x[1], x[3], w3, w3p, b2, c);
                    for (k, xk) in x.iter().enumerate() {
                        _mm512_storeu_si512(p.add(j + k * t).cast(), *xk);
                    }
                }
                j += 8;
            }
        }
    }

    /// Inverse stages `(m, t)`, `(m/2, 2t)`, `(m/4, 4t)` in one pass; `m >= 4`, `t >= 8`.
    ///
    /// # Safety
    /// As [`inv_pass2`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn inv_pass8<const LAZY: bool>(
        tb: &IfmaNttTables,
        p: *mut u64,
        m: usize,
        t: usize,
        b: u64,
        c: Consts,
    ) {
        let (b1, b2, b3) = stage_bounds::<LAZY>(b);
        let (r, rp) = (&tb.inv[..], &tb.inv_shoup[..]);
        for i in 0..m / 4 {
            let (w1, w1p) = bc2(r, rp, m + 4 * i);
            let (w2, w2p) = bc2(r, rp, m + 4 * i + 1);
            let (w3, w3p) = bc2(r, rp, m + 4 * i + 2);
            let (w4, w4p) = bc2(r, rp, m + 4 * i + 3);
            let (w5, w5p) = bc2(r, rp, m / 2 + 2 * i);
            let (w6, w6p) = bc2(r, rp, m / 2 + 2 * i + 1);
            let (w7, w7p) = bc2(r, rp, m / 4 + i);
            let base = 8 * i * t;
            let mut j = base;
            while j < base + t {
                // SAFETY: j + 7t + 8 <= base + 8t <= 2mt.
                unsafe {
                    let mut x = [_mm512_setzero_si512(); 8];
                    for (k, xk) in x.iter_mut().enumerate() {
                        *xk = _mm512_loadu_si512(p.add(j + k * t).cast());
                    }
                    (x[0], x[1]) = gs::<LAZY>(x[0], x[1], w1, w1p, b1, c);
                    (x[2], x[3]) = gs::<LAZY>(x[2], x[3], w2, w2p, b1, c);
                    (x[4], x[5]) = gs::<LAZY>(x[4], x[5], w3, w3p, b1, c);
                    (x[6], x[7]) = gs::<LAZY>(x[6], x[7], w4, w4p, b1, c);
                    (x[0], x[2]) = gs::<LAZY>(x[0], x[2], w5, w5p, b2, c);
                    (x[1], x[3]) = gs::<LAZY>(x[1], x[3], w5, w5p, b2, c);
                    (x[4], x[6]) = gs::<LAZY>(x[4], x[6], w6, w6p, b2, c);
                    (x[5], x[7]) = gs::<LAZY>(x[5], x[7], w6, w6p, b2, c);
                    (x[0], x[4]) = gs::<LAZY>(x[0], x[4], w7, w7p, b3, c);
                    (x[1], x[5]) = gs::<LAZY>(x[1], x[5], w7, w7p, b3, c);
                    (x[2], x[6]) = gs::<LAZY>(x[2], x[6], w7, w7p, b3, c);
                    (x[3], x[7]) = gs::<LAZY>(x[3], x[7], w7, w7p, b3, c);
                    for (k, xk) in x.iter().enumerate() {
                        _mm512_storeu_si512(p.add(j + k * t).cast(), *xk);
                    }
                }
                j += 8;
            }
        }
    }

    /// First inverse stages (t = 1, 2, 4 and, if `T8`, t = 8) on 16-element blocks, in
    /// registers; inputs below `2q`. With `LAZY` the sums are never reduced (stage `k` runs
    /// at bound `2^(k+1) q`; the caller checks the bound after the last stage), else every
    /// stage runs at bound `2q`.
    ///
    /// # Safety
    /// avx512f + avx512ifma available; `p` valid for reads and writes of `tb.n` u64s.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn inv_first_stages<const T8: bool, const LAZY: bool>(
        tb: &IfmaNttTables,
        p: *mut u64,
        c: Consts,
    ) {
        let n = tb.n;
        let (b1, b2, b3) = stage_bounds::<LAZY>(2 * tb.q);
        let b4 = if LAZY {
            _mm512_set1_epi64((16 * tb.q) as i64)
        } else {
            b1
        };
        let bounds = [b1, b2, b3, b4];
        let k = InvShuffles::new();
        let nb = n / 8;
        let mut b = 0usize;
        while b + 4 <= nb {
            // SAFETY: blocks b .. b + 4 lie within n (8 (b + 4) <= n).
            unsafe { inv_first4::<2, T8, LAZY>(tb, p, b, &k, &bounds, c) };
            b += 4;
        }
        if b < nb {
            // SAFETY: blocks b, b + 1 lie within n.
            unsafe { inv_first4::<1, T8, LAZY>(tb, p, b, &k, &bounds, c) };
        }
    }

    /// Index vectors of the inverse in-register stages.
    struct InvShuffles {
        bcast4: __m512i,
        bcast2: __m512i,
        even: __m512i,
        odd: __m512i,
        pair_lo: __m512i,
        pair_hi: __m512i,
    }

    impl InvShuffles {
        #[inline]
        #[target_feature(enable = "avx512f,avx512ifma")]
        fn new() -> Self {
            Self {
                bcast4: idx([0, 0, 0, 0, 1, 1, 1, 1]),
                bcast2: idx([0, 0, 1, 1, 2, 2, 3, 3]),
                even: idx([0, 2, 4, 6, 8, 10, 12, 14]),
                odd: idx([1, 3, 5, 7, 9, 11, 13, 15]),
                pair_lo: idx([0, 1, 8, 9, 4, 5, 12, 13]),
                pair_hi: idx([2, 3, 10, 11, 6, 7, 14, 15]),
            }
        }
    }

    /// First inverse stages (t = 1, 2, 4 and, if `T8`, t = 8) of `U` consecutive
    /// 16-element blocks starting at 8-element block `b` (even); `bounds` are the
    /// per-stage bounds (see [`gs`]).
    ///
    /// # Safety
    /// avx512f + avx512ifma available; `p` valid for `tb.n` u64s; `8 (b + 2U) <= tb.n`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn inv_first4<const U: usize, const T8: bool, const LAZY: bool>(
        tb: &IfmaNttTables,
        p: *mut u64,
        b: usize,
        k: &InvShuffles,
        bounds: &[__m512i; 4],
        c: Consts,
    ) {
        let nb = tb.n / 8;
        let roots = tb.inv.as_ptr();
        let roots_p = tb.inv_shoup.as_ptr();
        let zero = _mm512_setzero_si512();
        let mut x = [zero; U];
        let mut y = [zero; U];
        // SAFETY (all pointer reads and writes below): same index bounds as in `fwd_last4`.
        unsafe {
            // t = 1: roots inv[4nb + 4bb .. 4nb + 4bb + 8].
            for u in 0..U {
                let bb = b + 2 * u;
                let v0 = _mm512_loadu_si512(p.add(8 * bb).cast());
                let v1 = _mm512_loadu_si512(p.add(8 * bb + 8).cast());
                let w = _mm512_loadu_si512(roots.add(4 * nb + 4 * bb).cast());
                let wp = _mm512_loadu_si512(roots_p.add(4 * nb + 4 * bb).cast());
                let x1 = _mm512_permutex2var_epi64(v0, k.even, v1);
                let y1 = _mm512_permutex2var_epi64(v0, k.odd, v1);
                (x[u], y[u]) = gs::<LAZY>(x1, y1, w, wp, bounds[0], c);
            }
            // t = 2: roots inv[2nb + 2bb .. 2nb + 2bb + 4].
            for u in 0..U {
                let bb = b + 2 * u;
                let r = _mm512_loadu_si512(roots.add(2 * nb + 2 * bb).cast());
                let rp = _mm512_loadu_si512(roots_p.add(2 * nb + 2 * bb).cast());
                let w = _mm512_permutexvar_epi64(k.bcast2, r);
                let wp = _mm512_permutexvar_epi64(k.bcast2, rp);
                let x2 = _mm512_unpacklo_epi64(x[u], y[u]);
                let y2 = _mm512_unpackhi_epi64(x[u], y[u]);
                (x[u], y[u]) = gs::<LAZY>(x2, y2, w, wp, bounds[1], c);
            }
            // t = 4: roots inv[nb + bb], inv[nb + bb + 1].
            for u in 0..U {
                let bb = b + 2 * u;
                let r = _mm512_loadu_si512(roots.add(nb + bb).cast());
                let rp = _mm512_loadu_si512(roots_p.add(nb + bb).cast());
                let w = _mm512_permutexvar_epi64(k.bcast4, r);
                let wp = _mm512_permutexvar_epi64(k.bcast4, rp);
                let x3 = _mm512_permutex2var_epi64(x[u], k.pair_lo, y[u]);
                let y3 = _mm512_permutex2var_epi64(x[u], k.pair_hi, y[u]);
                (x[u], y[u]) = gs::<LAZY>(x3, y3, w, wp, bounds[2], c);
            }
            // Back to standard order: v0 = [x.0..4, y.0..4], v1 = [x.4..8, y.4..8].
            for u in 0..U {
                let bb = b + 2 * u;
                let mut v0 = _mm512_shuffle_i64x2::<0b01_00_01_00>(x[u], y[u]);
                let mut v1 = _mm512_shuffle_i64x2::<0b11_10_11_10>(x[u], y[u]);
                if T8 {
                    // t = 8: one root inv[nb/2 + bb/2] for the whole block.
                    let w = _mm512_set1_epi64(*roots.add(nb / 2 + bb / 2) as i64);
                    let wp = _mm512_set1_epi64(*roots_p.add(nb / 2 + bb / 2) as i64);
                    (v0, v1) = gs::<LAZY>(v0, v1, w, wp, bounds[3], c);
                }
                _mm512_storeu_si512(p.add(8 * bb).cast(), v0);
                _mm512_storeu_si512(p.add(8 * bb + 8).cast(), v1);
            }
        }
    }

    /// # Safety
    /// The CPU supports avx512f + avx512ifma, `a.len() == tb.n`, `tb` built by `new`.
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn inverse_kernel(tb: &IfmaNttTables, a: &mut [u64]) {
        let n = tb.n;
        let c = consts(tb.q);
        let p = a.as_mut_ptr();

        // Bound tracking: all values entering a stage are below `bound`, a multiple of q
        // with 2q <= bound and 2 * bound <= 2^52 (so sums and differences fit the 52-bit
        // multiplier). A group of k stages leaves its sums unreduced when the bound after
        // it, bound * 2^k, still satisfies that; otherwise it reduces at the current bound.
        let limit = 1u64 << 52;
        let mut bound = 2 * tb.q;

        // First stages in registers; then stages m = n/32 .. 2 two or three per pass.
        let first = if n >= 32 { 4 } else { 3 };
        let lazy = (2 * bound) << first <= limit;
        // SAFETY: p is valid for n u64s; the CPU features are guaranteed by the caller.
        unsafe {
            match (n >= 32, lazy) {
                (true, true) => inv_first_stages::<true, true>(tb, p, c),
                (true, false) => inv_first_stages::<true, false>(tb, p, c),
                (false, true) => inv_first_stages::<false, true>(tb, p, c),
                (false, false) => inv_first_stages::<false, false>(tb, p, c),
            }
        }
        if lazy {
            bound <<= first;
        }
        let (mut m, mut t) = if n >= 32 { (n / 32, 16) } else { (1, 8) };
        let mut rem = m.trailing_zeros();
        while rem > 0 {
            let k = pass_width(rem);
            let lazy = (2 * bound) << k <= limit;
            // SAFETY: p is valid for n = 2mt u64s; the CPU features are guaranteed by the caller.
            unsafe {
                match (k, lazy) {
                    (3, true) => inv_pass8::<true>(tb, p, m, t, bound, c),
                    (3, false) => inv_pass8::<false>(tb, p, m, t, bound, c),
                    (2, true) => inv_pass4::<true>(tb, p, m, t, bound, c),
                    (2, false) => inv_pass4::<false>(tb, p, m, t, bound, c),
                    (_, true) => inv_pass2::<true>(tb, p, m, t, bound, c),
                    (_, false) => inv_pass2::<false>(tb, p, m, t, bound, c),
                }
            }
            if lazy {
                bound <<= k;
            }
            m >>= k;
            t <<= k;
            rem -= k;
        }
        debug_assert_eq!((m, t), (1, n / 2));
        debug_assert!(2 * bound <= limit);
        let bv = _mm512_set1_epi64(bound as i64);

        // Last stage (m = 1, t = n/2) fused with the multiplication by n^{-1}.
        let ni = _mm512_set1_epi64(tb.n_inv as i64);
        let nip = _mm512_set1_epi64(tb.n_inv_shoup as i64);
        let nw = _mm512_set1_epi64(tb.n_inv_w as i64);
        let nwp = _mm512_set1_epi64(tb.n_inv_w_shoup as i64);
        let mut j = 0usize;
        while j < t {
            // SAFETY: j + t + 8 <= 2t = n = a.len().
            unsafe {
                let px = p.add(j);
                let py = p.add(j + t);
                let x = _mm512_loadu_si512(px.cast());
                let y = _mm512_loadu_si512(py.cast());
                // x, y below `bound`: sum and difference below 2 * bound <= 2^52.
                let s = _mm512_add_epi64(x, y);
                let d = _mm512_sub_epi64(_mm512_add_epi64(x, bv), y);
                let s = reduce_once(mul_shoup(s, ni, nip, c), c.q);
                let d = reduce_once(mul_shoup(d, nw, nwp, c), c.q);
                _mm512_storeu_si512(px.cast(), s);
                _mm512_storeu_si512(py.cast(), d);
            }
            j += 8;
        }
    }
}

/// Non-x86_64 targets: IFMA is never available and no tables can be built.
#[cfg(not(target_arch = "x86_64"))]
mod stub {
    #[derive(Debug, Clone, Copy)]
    enum Never {}

    /// Uninhabited on this target: `new` always returns `None`.
    #[derive(Debug, Clone)]
    pub(crate) struct IfmaNttTables {
        never: Never,
    }

    impl IfmaNttTables {
        pub(crate) fn new(_n: usize, _q: u64, _psi: u64) -> Option<Self> {
            None
        }

        pub(crate) fn forward(&self, _a: &mut [u64]) {
            match self.never {}
        }

        pub(crate) fn inverse(&self, _a: &mut [u64]) {
            match self.never {}
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::IfmaNttTables;
    use super::scalar::{bit_reverse, mul_mod, pow_mod};

    fn splitmix64(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Deterministic Miller-Rabin for u64.
    fn is_prime(n: u64) -> bool {
        if n < 2 {
            return false;
        }
        const BASES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
        for p in BASES {
            if n.is_multiple_of(p) {
                return n == p;
            }
        }
        let mut d = n - 1;
        let mut s = 0;
        while d.is_multiple_of(2) {
            d /= 2;
            s += 1;
        }
        'witness: for a in BASES {
            let mut x = pow_mod(a, d, n);
            if x == 1 || x == n - 1 {
                continue;
            }
            for _ in 1..s {
                x = mul_mod(x, x, n);
                if x == n - 1 {
                    continue 'witness;
                }
            }
            return false;
        }
        true
    }

    /// The `count` largest primes q ≡ 1 mod 2n below 2^bits.
    fn primes_below(bits: u32, n: usize, count: usize) -> Vec<u64> {
        let step = 2 * n as u64;
        let mut q = ((1u64 << bits) - 1) / step * step + 1;
        let mut out = Vec::new();
        while out.len() < count {
            if q < (1u64 << bits) && is_prime(q) {
                out.push(q);
            }
            q -= step;
        }
        out
    }

    /// Some primitive 2n-th root of unity mod q (deterministic from the seed).
    fn find_psi(n: usize, q: u64, seed: u64) -> u64 {
        let mut s = seed;
        loop {
            let x = splitmix64(&mut s) % q;
            if x < 2 {
                continue;
            }
            let psi = pow_mod(x, (q - 1) / (2 * n as u64), q);
            if pow_mod(psi, n as u64, q) == q - 1 {
                return psi;
            }
        }
    }

    fn brv_powers(n: usize, q: u64, root: u64) -> Vec<u64> {
        let bits = n.trailing_zeros();
        (0..n)
            .map(|k| pow_mod(root, bit_reverse(k, bits) as u64, q))
            .collect()
    }

    /// Reference O(n log n) Cooley-Tukey with u128 arithmetic (the convention).
    fn ref_forward(a: &mut [u64], q: u64, psi: u64) {
        let n = a.len();
        let psi_brv = brv_powers(n, q, psi);
        let mut m = 1;
        let mut t = n / 2;
        while m < n {
            for i in 0..m {
                let w = psi_brv[m + i];
                for j in 2 * i * t..2 * i * t + t {
                    let x = a[j];
                    let y = mul_mod(w, a[j + t], q);
                    a[j] = (x + y) % q;
                    a[j + t] = (x + q - y) % q;
                }
            }
            m *= 2;
            t /= 2;
        }
    }

    /// O(n^2) definition: A[i] = sum_j a[j] psi^((2 brv(i) + 1) j).
    fn naive_forward(a: &[u64], q: u64, psi: u64) -> Vec<u64> {
        let n = a.len();
        let bits = n.trailing_zeros();
        (0..n)
            .map(|i| {
                let root = pow_mod(psi, 2 * bit_reverse(i, bits) as u64 + 1, q);
                let mut acc = 0u64;
                let mut pw = 1u64;
                for &aj in a {
                    acc = (acc + mul_mod(aj, pw, q)) % q;
                    pw = mul_mod(pw, root, q);
                }
                acc
            })
            .collect()
    }

    /// Scalar Harvey NTT with 64-bit Shoup factors (the speed baseline).
    struct ScalarHarvey {
        q: u64,
        fwd: Vec<u64>,
        fwd_s: Vec<u64>,
        inv: Vec<u64>,
        inv_s: Vec<u64>,
        n_inv: u64,
        n_inv_s: u64,
    }

    impl ScalarHarvey {
        fn new(n: usize, q: u64, psi: u64) -> Self {
            let sh = |w: u64| ((u128::from(w) << 64) / u128::from(q)) as u64;
            let fwd = brv_powers(n, q, psi);
            let inv = brv_powers(n, q, pow_mod(psi, q - 2, q));
            let n_inv = pow_mod(n as u64, q - 2, q);
            Self {
                q,
                fwd_s: fwd.iter().map(|&w| sh(w)).collect(),
                inv_s: inv.iter().map(|&w| sh(w)).collect(),
                fwd,
                inv,
                n_inv,
                n_inv_s: sh(n_inv),
            }
        }

        #[inline(always)]
        fn mul(y: u64, w: u64, ws: u64, q: u64) -> u64 {
            let hi = ((u128::from(ws) * u128::from(y)) >> 64) as u64;
            w.wrapping_mul(y).wrapping_sub(hi.wrapping_mul(q))
        }

        fn forward(&self, a: &mut [u64]) {
            let n = a.len();
            let q = self.q;
            let q2 = 2 * q;
            let mut m = 1;
            let mut t = n / 2;
            while m < n {
                for i in 0..m {
                    let (w, ws) = (self.fwd[m + i], self.fwd_s[m + i]);
                    let base = 2 * i * t;
                    let (lo, hi) = a[base..base + 2 * t].split_at_mut(t);
                    for (x, y) in lo.iter_mut().zip(hi.iter_mut()) {
                        let xv = (*x).min((*x).wrapping_sub(q2));
                        let tv = Self::mul(*y, w, ws, q);
                        *x = xv + tv;
                        *y = xv + q2 - tv;
                    }
                }
                m *= 2;
                t /= 2;
            }
            for x in a.iter_mut() {
                let v = (*x).min((*x).wrapping_sub(q2));
                *x = v.min(v.wrapping_sub(q));
            }
        }

        fn inverse(&self, a: &mut [u64]) {
            let n = a.len();
            let q = self.q;
            let q2 = 2 * q;
            let mut m = n / 2;
            let mut t = 1;
            while m >= 1 {
                for i in 0..m {
                    let (w, ws) = (self.inv[m + i], self.inv_s[m + i]);
                    let base = 2 * i * t;
                    let (lo, hi) = a[base..base + 2 * t].split_at_mut(t);
                    for (x, y) in lo.iter_mut().zip(hi.iter_mut()) {
                        let (xv, yv) = (*x, *y);
                        let s = xv + yv;
                        *x = s.min(s.wrapping_sub(q2));
                        *y = Self::mul(xv + q2 - yv, w, ws, q);
                    }
                }
                m /= 2;
                t *= 2;
            }
            for x in a.iter_mut() {
                let v = Self::mul(*x, self.n_inv, self.n_inv_s, q);
                *x = v.min(v.wrapping_sub(q));
            }
        }
    }

    fn random_vec(n: usize, q: u64, seed: &mut u64) -> Vec<u64> {
        (0..n).map(|_| splitmix64(seed) % q).collect()
    }

    fn check_one(n: usize, q: u64, psi: u64, seed: &mut u64) {
        let tb = IfmaNttTables::new(n, q, psi).expect("IFMA tables");
        let mut impulse = vec![0u64; n];
        impulse[n / 3] = q - 1;
        let inputs = vec![
            random_vec(n, q, seed),
            random_vec(n, q, seed),
            vec![q - 1; n],
            vec![0; n],
            (0..n).map(|i| if i % 2 == 0 { q - 1 } else { 0 }).collect(),
            impulse,
        ];
        for a in inputs {
            let mut expect = a.clone();
            ref_forward(&mut expect, q, psi);
            let mut got = a.clone();
            tb.forward(&mut got);
            assert_eq!(got, expect, "forward mismatch n={n} q={q}");
            tb.inverse(&mut got);
            assert_eq!(got, a, "inverse(forward(a)) != a, n={n} q={q}");
            // The inverse of an arbitrary vector is the exact inverse map.
            let mut inv = a.clone();
            tb.inverse(&mut inv);
            assert!(inv.iter().all(|&v| v < q));
            ref_forward(&mut inv, q, psi);
            assert_eq!(inv, a, "ref_forward(inverse(a)) != a, n={n} q={q}");
        }
    }

    #[test]
    fn ifma_reference_matches_naive_dft() {
        let mut seed = 7;
        for n in [16usize, 32, 64] {
            for q in primes_below(40, n, 2) {
                let psi = find_psi(n, q, seed);
                let a = random_vec(n, q, &mut seed);
                let mut r = a.clone();
                ref_forward(&mut r, q, psi);
                assert_eq!(r, naive_forward(&a, q, psi));
                let sh = ScalarHarvey::new(n, q, psi);
                let mut h = a.clone();
                sh.forward(&mut h);
                assert_eq!(h, r);
                sh.inverse(&mut h);
                assert_eq!(h, a);
            }
        }
    }

    #[test]
    fn ifma_ntt_matches_reference() {
        if !crate::simd::simd_test_can_run(super::is_available(), "avx512ifma") {
            return;
        }
        let mut seed = 0x1234_5678;
        for n in [
            16usize, 32, 64, 128, 256, 512, 1024, 2048, 4096, 16384, 65536, 131072,
        ] {
            let big = n >= 16384;
            let bit_sizes: &[u32] = if big {
                &[30, 35, 50]
            } else {
                &[30, 35, 40, 45, 49, 50]
            };
            for &bits in bit_sizes {
                for q in primes_below(bits, n, if big { 1 } else { 2 }) {
                    let psi = find_psi(n, q, seed ^ q);
                    check_one(n, q, psi, &mut seed);
                }
            }
        }
    }

    #[test]
    fn ifma_matches_naive_dft_small() {
        if !crate::simd::simd_test_can_run(super::is_available(), "avx512ifma") {
            return;
        }
        let mut seed = 99;
        for n in [16usize, 32, 64] {
            for q in primes_below(50, n, 3)
                .into_iter()
                .chain(primes_below(31, n, 2))
            {
                let psi = find_psi(n, q, seed);
                let tb = IfmaNttTables::new(n, q, psi).expect("IFMA tables");
                let a = random_vec(n, q, &mut seed);
                let mut got = a.clone();
                tb.forward(&mut got);
                assert_eq!(got, naive_forward(&a, q, psi));
            }
        }
    }

    #[test]
    fn ifma_lazy_inputs() {
        // Documented tolerance: forward accepts inputs < 4q, inverse < 2q.
        if !crate::simd::simd_test_can_run(super::is_available(), "avx512ifma") {
            return;
        }
        let mut seed = 5;
        for n in [16usize, 1024] {
            let q = primes_below(50, n, 1)[0];
            let psi = find_psi(n, q, 11);
            let tb = IfmaNttTables::new(n, q, psi).expect("IFMA tables");
            let a: Vec<u64> = (0..n).map(|_| splitmix64(&mut seed) % (4 * q)).collect();
            let mut expect: Vec<u64> = a.iter().map(|&v| v % q).collect();
            ref_forward(&mut expect, q, psi);
            let mut got = a.clone();
            tb.forward(&mut got);
            assert_eq!(got, expect);
            let b: Vec<u64> = (0..n).map(|_| splitmix64(&mut seed) % (2 * q)).collect();
            let mut got = b.clone();
            tb.inverse(&mut got);
            ref_forward(&mut got, q, psi);
            assert!(got.iter().zip(&b).all(|(&g, &v)| g == v % q));
        }
    }

    #[test]
    fn ifma_lazy_threshold_primes() {
        // Primes right below and above the bound (2 log n + 4) q < 2^52 under which the
        // forward skips intermediate reductions; inputs at the tolerated maximum 4q - 1.
        if !crate::simd::simd_test_can_run(super::is_available(), "avx512ifma") {
            return;
        }
        let mut seed = 77;
        for n in [16usize, 1024, 16384] {
            let k = 2 * u64::from(n.trailing_zeros()) + 4;
            let limit = (1u64 << 52) / k; // lazy iff q < 2^52 / k (q * k < 2^52)
            let step = 2 * n as u64;
            let mut below = Vec::new();
            let mut q = (limit - 1) / step * step + 1;
            while below.len() < 2 {
                if is_prime(q) {
                    below.push(q);
                }
                q -= step;
            }
            let mut above = Vec::new();
            let mut q = limit / step * step + 1 + step;
            while above.len() < 2 {
                if q < 1 << 50 && is_prime(q) {
                    above.push(q);
                }
                q += step;
            }
            for q in below.into_iter().chain(above) {
                let psi = find_psi(n, q, seed);
                let tb = IfmaNttTables::new(n, q, psi).expect("IFMA tables");
                assert_eq!(tb.lazy_fwd, q * k < 1 << 52);
                check_one(n, q, psi, &mut seed);
                let a = vec![4 * q - 1; n];
                let mut expect = vec![(4 * q - 1) % q; n];
                ref_forward(&mut expect, q, psi);
                let mut got = a.clone();
                tb.forward(&mut got);
                assert_eq!(got, expect, "n={n} q={q}");
            }
        }
    }

    #[test]
    fn ifma_max_inputs_all_sizes() {
        // Worst-case growth of the unreduced sums: every input at the tolerated maximum
        // (forward: 4q - 1, inverse: 2q - 1), across sizes and prime sizes.
        if !crate::simd::simd_test_can_run(super::is_available(), "avx512ifma") {
            return;
        }
        for n in [
            16usize, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072,
        ] {
            for bits in [30u32, 34, 36, 38, 40, 42, 44, 46, 47, 48, 49, 50] {
                let q = primes_below(bits, n, 1)[0];
                let psi = find_psi(n, q, q);
                let tb = IfmaNttTables::new(n, q, psi).expect("IFMA tables");
                let mut got = vec![4 * q - 1; n];
                tb.forward(&mut got);
                let mut expect = vec![(4 * q - 1) % q; n];
                ref_forward(&mut expect, q, psi);
                assert_eq!(got, expect, "forward n={n} q={q}");
                let mut got = vec![2 * q - 1; n];
                tb.inverse(&mut got);
                ref_forward(&mut got, q, psi);
                assert!(got.iter().all(|&v| v == q - 1), "inverse n={n} q={q}");
            }
        }
    }

    #[test]
    fn ifma_rejects_bad_parameters() {
        if !crate::simd::simd_test_can_run(super::is_available(), "avx512ifma") {
            return;
        }
        let n = 1024;
        let q = primes_below(40, n, 1)[0];
        let psi = find_psi(n, q, 3);
        assert!(IfmaNttTables::new(n, q, psi).is_some());
        let q8 = primes_below(40, 8, 1)[0];
        assert!(IfmaNttTables::new(8, q8, find_psi(8, q8, 1)).is_none());
        assert!(IfmaNttTables::new(n, q, mul_mod(psi, psi, q)).is_none());
        let big = primes_below(51, n, 1)[0];
        assert!(big >= 1 << 50);
        assert!(IfmaNttTables::new(n, big, find_psi(n, big, 3)).is_none());
        assert!(IfmaNttTables::new(1000, q, psi).is_none());
        // Wrong length: input untouched.
        let tb = IfmaNttTables::new(n, q, psi).expect("IFMA tables");
        let mut short = vec![1u64; n / 2];
        if !cfg!(debug_assertions) {
            tb.forward(&mut short);
            assert!(short.iter().all(|&v| v == 1));
        }
    }

    /// Timing: `cargo test -p henn-ring --release ifma_timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing only"]
    fn ifma_timing() {
        use std::hint::black_box;
        use std::time::Instant;
        if !crate::simd::simd_test_can_run(super::is_available(), "avx512ifma") {
            return;
        }
        let only_n: Option<usize> = std::env::var("IFMA_TIMING_N")
            .ok()
            .and_then(|v| v.parse().ok());
        for (n, bits) in [
            (4096usize, 35u32),
            (16384, 35),
            (16384, 45),
            (16384, 50),
            (65536, 35),
        ] {
            if only_n.is_some_and(|m| m != n) {
                continue;
            }
            let q = primes_below(bits, n, 1)[0];
            let psi = find_psi(n, q, 1);
            let tb = IfmaNttTables::new(n, q, psi).expect("IFMA tables");
            let sh = ScalarHarvey::new(n, q, psi);
            let mut seed = 42;
            let mut a = random_vec(n, q, &mut seed);
            // Fastest of many single calls: robust to other processes on a shared machine.
            let trials = (50_000_000 / n).clamp(200, 5000);
            let mut time = |f: &dyn Fn(&mut [u64])| {
                for _ in 0..trials / 10 {
                    f(black_box(&mut a));
                }
                let mut best = u128::MAX;
                for _ in 0..trials {
                    let t0 = Instant::now();
                    f(black_box(&mut a));
                    best = best.min(t0.elapsed().as_nanos());
                }
                best as f64
            };
            let f_ifma = time(&|a| tb.forward(a));
            let i_ifma = time(&|a| tb.inverse(a));
            let f_sc = time(&|a| sh.forward(a));
            let i_sc = time(&|a| sh.inverse(a));
            println!(
                "n={n:6} q~2^{bits}: IFMA fwd {f_ifma:8.0} ns inv {i_ifma:8.0} ns | scalar Harvey fwd {f_sc:8.0} ns inv {i_sc:8.0} ns | speedup fwd {:.2}x inv {:.2}x",
                f_sc / f_ifma,
                i_sc / i_ifma
            );
        }
    }
}
