//! AVX-512 (F + DQ) NTT for 64-bit-word moduli, meant for `2^50 <= q < 2^61` (the range
//! the IFMA kernel cannot handle; the dispatcher prefers IFMA below 2^50, but any odd
//! `q < 2^61` works here).
//!
//! Convention (identical to the portable path, bit for bit): the forward transform maps
//! coefficients in `[0, q)` (standard order) to `A[i] = a(psi^(2*brv(i)+1))` in bit-reversed
//! order, fully reduced; the inverse is the exact inverse map, output in `[0, q)`. Since both
//! outputs are fully reduced residues, equality with the portable kernel follows from
//! correctness alone (intermediate lazy values may differ, results cannot).
//!
//! Arithmetic: Harvey lazy butterflies with 64-bit Shoup multiplication
//! `r = a*w - Q*q mod 2^64` for any `a < 2^64`, `w < q`, `w' = floor(w 2^64 / q)`, where
//! `Q` estimates `hi(a*w') = floor(a*w' / 2^64)`. AVX-512 has no 64x64 -> 128-bit multiply:
//! `Q` is assembled from three 32x32 -> 64-bit `vpmuludq` partial products, dropping the
//! low x low one and the carries out of the middle column, so `hi - 2 <= Q <= hi` (see
//! [`mulhi_approx`]); the two low products use AVX-512DQ's `vpmullq`. With the exact `hi`,
//! `r < 2q` (Shoup, for any `a < 2^64`); with `Q`, `r < 4q`. The lazy bounds absorb that
//! (all within 64 bits since `8q < 2^64` for `q < 2^61`):
//! * Forward: values in `[0, 8q)` between stages; `x` is reduced to `[0, 4q)` before the
//!   butterfly, `(x + t, x + 4q - t)` with `t < 4q`; fully reduced at the end.
//! * Inverse: values in `[0, 4q)` between stages: `s = x + y` reduced to `[0, 4q)`,
//!   `d = x + 4q - y < 8q` multiplied; the last stage is fused with `n^{-1}`.
//!
//! Structure (as in the IFMA kernel): stages with butterfly distance `t >= 16` run two or
//! three per memory pass (8-lane loops, broadcast roots); the last four forward stages
//! (first four inverse stages), `t = 8, 4, 2, 1`, run in registers on 16-element blocks with
//! 128-bit / 64-bit shuffles. No allocation in the transforms.
//!
//! Input ranges: the contract is `a[i] < q`; the forward also accepts `a[i] < 4q`, the
//! inverse `a[i] < 2q` (tested); both still return fully reduced results.

pub(crate) use imp::Avx512NttTables;

mod imp {
    use crate::modulus::Modulus;
    use crate::ntt::bit_reverse;
    use core::arch::x86_64::{
        __m512i, _mm512_add_epi64, _mm512_loadu_si512, _mm512_min_epu64, _mm512_mul_epu32,
        _mm512_mullo_epi64, _mm512_permutex2var_epi64, _mm512_permutexvar_epi64, _mm512_set_epi64,
        _mm512_set1_epi64, _mm512_setzero_si512, _mm512_shuffle_i64x2, _mm512_srli_epi64,
        _mm512_storeu_si512, _mm512_sub_epi64, _mm512_unpackhi_epi64, _mm512_unpacklo_epi64,
    };
    use std::sync::atomic::{AtomicU8, Ordering};

    /// 0 = not yet probed, 1 = unavailable, 2 = available.
    static STATE: AtomicU8 = AtomicU8::new(0);

    /// Cached run-time detection of avx512f + avx512dq.
    pub(crate) fn is_available() -> bool {
        match STATE.load(Ordering::Relaxed) {
            2 => true,
            1 => false,
            _ => {
                let ok = std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512dq");
                STATE.store(if ok { 2 } else { 1 }, Ordering::Relaxed);
                ok
            }
        }
    }

    /// `floor(w * 2^64 / q)` for `w < q`.
    fn shoup64(w: u64, q: u64) -> u64 {
        ((u128::from(w) << 64) / u128::from(q)) as u64
    }

    /// Precomputed tables for the AVX-512 NTT of one limb.
    #[derive(Debug, Clone)]
    pub(crate) struct Avx512NttTables {
        n: usize,
        q: u64,
        /// `psi^brv(k)` for `k in 0..n`.
        fwd: Vec<u64>,
        /// 64-bit Shoup quotients of `fwd`.
        fwd_shoup: Vec<u64>,
        /// `psi^(-brv(k))` for `k in 0..n`.
        inv: Vec<u64>,
        /// 64-bit Shoup quotients of `inv`.
        inv_shoup: Vec<u64>,
        /// `n^{-1} mod q` and its Shoup quotient.
        n_inv: u64,
        n_inv_shoup: u64,
        /// `psi^(-brv(1)) * n^{-1} mod q` (last inverse stage, fused) and its quotient.
        n_inv_w: u64,
        n_inv_w_shoup: u64,
    }

    impl Avx512NttTables {
        /// `3 <= q < 2^61`, `q ≡ 1 mod 2n`, `psi` a primitive 2n-th root of unity mod q,
        /// `n >= 16` a power of two. Returns `None` if any of these fail or the CPU lacks
        /// AVX-512F / AVX-512DQ.
        pub(crate) fn new(n: usize, q: u64, psi: u64) -> Option<Self> {
            if !is_available() || !n.is_power_of_two() || n < 16 || !(3..1u64 << 61).contains(&q) {
                return None;
            }
            let m = Modulus::new(q).ok()?;
            if q % (2 * n as u64) != 1 || psi == 0 || psi >= q || m.pow(psi, n as u64) != q - 1 {
                return None;
            }
            let bits = n.trailing_zeros();
            let psi_inv = m.inv(psi).ok()?;
            let mut fwd = vec![1u64; n];
            let mut inv = vec![1u64; n];
            let (mut pw, mut ipw) = (1u64, 1u64);
            for k in 0..n {
                let idx = bit_reverse(k, bits);
                if let (Some(f), Some(i)) = (fwd.get_mut(idx), inv.get_mut(idx)) {
                    *f = pw;
                    *i = ipw;
                }
                pw = m.mul(pw, psi);
                ipw = m.mul(ipw, psi_inv);
            }
            let fwd_shoup = fwd.iter().map(|&w| shoup64(w, q)).collect();
            let inv_shoup = inv.iter().map(|&w| shoup64(w, q)).collect();
            let n_inv = m.inv(n as u64).ok()?;
            let n_inv_w = m.mul(n_inv, *inv.get(1)?);
            Some(Self {
                n,
                q,
                fwd,
                fwd_shoup,
                inv,
                inv_shoup,
                n_inv,
                n_inv_shoup: shoup64(n_inv, q),
                n_inv_w,
                n_inv_w_shoup: shoup64(n_inv_w, q),
            })
        }

        /// Forward NTT in place; output fully reduced in `[0, q)`, bit-reversed order.
        ///
        /// Contract: `a.len() == n` (checked; a mismatch leaves `a` untouched and trips a
        /// debug assertion) and every `a[i] < q` (inputs below `4q` are tolerated).
        pub(crate) fn forward(&self, a: &mut [u64]) {
            debug_assert_eq!(a.len(), self.n, "AVX-512 NTT: wrong length");
            if a.len() != self.n {
                return;
            }
            // SAFETY: `self` can only be built by `new`, which checked that the CPU supports
            // avx512f and avx512dq; `a.len() == n` was checked above.
            unsafe { forward_kernel(self, a) }
        }

        /// Inverse NTT in place; output fully reduced in `[0, q)`.
        ///
        /// Contract: `a.len() == n` (checked as in [`Self::forward`]) and every `a[i] < q`
        /// (inputs below `2q` are tolerated).
        pub(crate) fn inverse(&self, a: &mut [u64]) {
            debug_assert_eq!(a.len(), self.n, "AVX-512 NTT: wrong length");
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
        q4: __m512i,
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn consts(q: u64) -> Consts {
        Consts {
            q: _mm512_set1_epi64(q as i64),
            q2: _mm512_set1_epi64((2 * q) as i64),
            q4: _mm512_set1_epi64((4 * q) as i64),
        }
    }

    /// A root in all lanes (or per lane): value `w`, Shoup quotient `wp`, and `wp >> 32`.
    #[derive(Clone, Copy)]
    struct Root {
        w: __m512i,
        wp: __m512i,
        wph: __m512i,
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn root(w: __m512i, wp: __m512i) -> Root {
        Root {
            w,
            wp,
            wph: _mm512_srli_epi64::<32>(wp),
        }
    }

    /// Broadcasts entry `k` of a root table and of its Shoup table.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn bc(w: &[u64], wp: &[u64], k: usize) -> Root {
        let (a, b) = match (w.get(k), wp.get(k)) {
            (Some(&a), Some(&b)) => (a, b),
            // Unreachable for the indices used (k < n); any value keeps memory safety.
            _ => (0, 0),
        };
        root(_mm512_set1_epi64(a as i64), _mm512_set1_epi64(b as i64))
    }

    /// Estimate `Q` of the high 64 bits `hi` of `a * b` per lane (`bh = b >> 32`), with
    /// `hi - 2 <= Q <= hi`. With `a = a1 2^32 + a0`, `b = b1 2^32 + b0`:
    /// `a b = a1 b1 2^64 + (a0 b1 + a1 b0) 2^32 + a0 b0`, and
    /// `Q = a1 b1 + hi32(a0 b1) + hi32(a1 b0)` drops `(lo32(a0 b1) + lo32(a1 b0)) 2^32 + a0 b0
    /// < 3 * 2^64`, i.e. at most 2 from the quotient by `2^64`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn mulhi_approx(a: __m512i, b: __m512i, bh: __m512i) -> __m512i {
        let ah = _mm512_srli_epi64::<32>(a);
        let p01 = _mm512_mul_epu32(a, bh);
        let p10 = _mm512_mul_epu32(ah, b);
        let p11 = _mm512_mul_epu32(ah, bh);
        _mm512_add_epi64(
            _mm512_add_epi64(p11, _mm512_srli_epi64::<32>(p01)),
            _mm512_srli_epi64::<32>(p10),
        )
    }

    /// `y * w mod q` in `[0, 4q)` for any `y < 2^64` (Shoup with the quotient estimate of
    /// [`mulhi_approx`]: `r = y w - Q q = y w - hi q + (hi - Q) q`, in `[0, 2q) + {0, q, 2q}`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn mul_shoup(y: __m512i, r: Root, c: Consts) -> __m512i {
        let hi = mulhi_approx(y, r.wp, r.wph);
        _mm512_sub_epi64(_mm512_mullo_epi64(y, r.w), _mm512_mullo_epi64(hi, c.q))
    }

    /// Test hook: [`mul_shoup`] on 8 lanes (`None` without AVX-512F/DQ).
    #[cfg(test)]
    pub(super) fn mul_shoup_lanes(y: [u64; 8], w: u64, q: u64) -> Option<[u64; 8]> {
        if !is_available() {
            return None;
        }
        let wp = shoup64(w, q);
        let mut out = [0u64; 8];
        // SAFETY: avx512f + avx512dq were detected above; `y` and `out` hold 8 u64s.
        unsafe { mul_shoup_lanes_kernel(&y, w, wp, q, &mut out) };
        Some(out)
    }

    /// # Safety
    /// avx512f + avx512dq available.
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn mul_shoup_lanes_kernel(y: &[u64; 8], w: u64, wp: u64, q: u64, out: &mut [u64; 8]) {
        let c = consts(q);
        let r = root(_mm512_set1_epi64(w as i64), _mm512_set1_epi64(wp as i64));
        // SAFETY: both arrays hold 8 u64s (64 bytes).
        unsafe {
            let v = mul_shoup(_mm512_loadu_si512(y.as_ptr().cast()), r, c);
            _mm512_storeu_si512(out.as_mut_ptr().cast(), v);
        }
    }

    /// Maps `[0, 2m)` to `[0, m)` (unsigned min trick: `x - m` wraps when `x < m`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn reduce_once(x: __m512i, m: __m512i) -> __m512i {
        _mm512_min_epu64(x, _mm512_sub_epi64(x, m))
    }

    /// Cooley-Tukey lazy butterfly: inputs in `[0, 8q)`, outputs in `[0, 8q)`
    /// (`x` reduced to `[0, 4q)`, `t = y w` in `[0, 4q)`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn ct(x: __m512i, y: __m512i, r: Root, c: Consts) -> (__m512i, __m512i) {
        let x = reduce_once(x, c.q4);
        let t = mul_shoup(y, r, c);
        (
            _mm512_add_epi64(x, t),
            _mm512_sub_epi64(_mm512_add_epi64(x, c.q4), t),
        )
    }

    /// Gentleman-Sande lazy butterfly: inputs in `[0, 4q)`, outputs in `[0, 4q)`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn gs(x: __m512i, y: __m512i, r: Root, c: Consts) -> (__m512i, __m512i) {
        let s = reduce_once(_mm512_add_epi64(x, y), c.q4);
        let d = _mm512_sub_epi64(_mm512_add_epi64(x, c.q4), y);
        (s, mul_shoup(d, r, c))
    }

    /// Index vector, lanes given low to high (`_mm512_set_epi64` takes them high to low).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn idx(l: [i64; 8]) -> __m512i {
        _mm512_set_epi64(l[7], l[6], l[5], l[4], l[3], l[2], l[1], l[0])
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
    /// avx512f + avx512dq available; `p` valid for reads and writes of `2 m t` u64s.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn fwd_pass2(tb: &Avx512NttTables, p: *mut u64, m: usize, t: usize, c: Consts) {
        let (r, rp) = (&tb.fwd[..], &tb.fwd_shoup[..]);
        for i in 0..m {
            let w = bc(r, rp, m + i);
            let base = 2 * i * t;
            let mut j = base;
            while j < base + t {
                // SAFETY: j + t + 8 <= base + 2t <= 2mt.
                unsafe {
                    let px = p.add(j);
                    let py = p.add(j + t);
                    let (x, y) = ct(
                        _mm512_loadu_si512(px.cast()),
                        _mm512_loadu_si512(py.cast()),
                        w,
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
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn fwd_pass4(tb: &Avx512NttTables, p: *mut u64, m: usize, t: usize, c: Consts) {
        let (r, rp) = (&tb.fwd[..], &tb.fwd_shoup[..]);
        let h = t / 2;
        for i in 0..m {
            let w1 = bc(r, rp, m + i);
            let w2 = bc(r, rp, 2 * m + 2 * i);
            let w3 = bc(r, rp, 2 * m + 2 * i + 1);
            let base = 2 * i * t;
            let mut j = base;
            while j < base + h {
                // SAFETY: j + 3h + 8 <= base + 4h = base + 2t <= 2mt.
                unsafe {
                    let mut x = [_mm512_setzero_si512(); 4];
                    for (k, xk) in x.iter_mut().enumerate() {
                        *xk = _mm512_loadu_si512(p.add(j + k * h).cast());
                    }
                    (x[0], x[2]) = ct(x[0], x[2], w1, c);
                    (x[1], x[3]) = ct(x[1], x[3], w1, c);
                    (x[0], x[1]) = ct(x[0], x[1], w2, c);
                    (x[2], x[3]) = ct(x[2], x[3], w3, c);
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
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn fwd_pass8(tb: &Avx512NttTables, p: *mut u64, m: usize, t: usize, c: Consts) {
        let (r, rp) = (&tb.fwd[..], &tb.fwd_shoup[..]);
        let h = t / 4;
        for i in 0..m {
            let w1 = bc(r, rp, m + i);
            let w2 = bc(r, rp, 2 * m + 2 * i);
            let w3 = bc(r, rp, 2 * m + 2 * i + 1);
            let w4 = bc(r, rp, 4 * m + 4 * i);
            let w5 = bc(r, rp, 4 * m + 4 * i + 1);
            let w6 = bc(r, rp, 4 * m + 4 * i + 2);
            let w7 = bc(r, rp, 4 * m + 4 * i + 3);
            let base = 2 * i * t;
            let mut j = base;
            while j < base + h {
                // SAFETY: j + 7h + 8 <= base + 8h = base + 2t <= 2mt.
                unsafe {
                    let mut x = [_mm512_setzero_si512(); 8];
                    for (k, xk) in x.iter_mut().enumerate() {
                        *xk = _mm512_loadu_si512(p.add(j + k * h).cast());
                    }
                    (x[0], x[4]) = ct(x[0], x[4], w1, c);
                    (x[1], x[5]) = ct(x[1], x[5], w1, c);
                    (x[2], x[6]) = ct(x[2], x[6], w1, c);
                    (x[3], x[7]) = ct(x[3], x[7], w1, c);
                    (x[0], x[2]) = ct(x[0], x[2], w2, c);
                    (x[1], x[3]) = ct(x[1], x[3], w2, c);
                    (x[4], x[6]) = ct(x[4], x[6], w3, c);
                    (x[5], x[7]) = ct(x[5], x[7], w3, c);
                    (x[0], x[1]) = ct(x[0], x[1], w4, c);
                    (x[2], x[3]) = ct(x[2], x[3], w5, c);
                    (x[4], x[5]) = ct(x[4], x[5], w6, c);
                    (x[6], x[7]) = ct(x[6], x[7], w7, c);
                    for (k, xk) in x.iter().enumerate() {
                        _mm512_storeu_si512(p.add(j + k * h).cast(), *xk);
                    }
                }
                j += 8;
            }
        }
    }

    /// # Safety
    /// The CPU supports avx512f + avx512dq, `a.len() == tb.n`, `tb` built by `new`.
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn forward_kernel(tb: &Avx512NttTables, a: &mut [u64]) {
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
                    3 => fwd_pass8(tb, p, m, t, c),
                    2 => fwd_pass4(tb, p, m, t, c),
                    _ => fwd_pass2(tb, p, m, t, c),
                }
            }
            m <<= k;
            t >>= k;
            rem -= k;
        }
        debug_assert_eq!((m, t), (n / 16, 8));

        // Last four stages (t = 8, 4, 2, 1) on 16-element blocks, in registers; two blocks
        // per iteration so that their dependency chains interleave.
        let k = Shuffles::new();
        let nb = n / 8;
        let mut b = 0usize;
        while b + 4 <= nb {
            // SAFETY: blocks b .. b + 4 lie within n (8 (b + 4) <= n).
            unsafe { fwd_last4::<2>(tb, p, b, &k, c) };
            b += 4;
        }
        if b < nb {
            // SAFETY: blocks b, b + 1 lie within n.
            unsafe { fwd_last4::<1>(tb, p, b, &k, c) };
        }
    }

    /// Index vectors of the in-register stages.
    struct Shuffles {
        bcast4: __m512i,
        bcast2: __m512i,
        pair_lo: __m512i,
        pair_hi: __m512i,
        interleave_lo: __m512i,
        interleave_hi: __m512i,
        even: __m512i,
        odd: __m512i,
    }

    impl Shuffles {
        #[inline]
        #[target_feature(enable = "avx512f,avx512dq")]
        fn new() -> Self {
            Self {
                bcast4: idx([0, 0, 0, 0, 1, 1, 1, 1]),
                bcast2: idx([0, 0, 1, 1, 2, 2, 3, 3]),
                pair_lo: idx([0, 1, 8, 9, 4, 5, 12, 13]),
                pair_hi: idx([2, 3, 10, 11, 6, 7, 14, 15]),
                interleave_lo: idx([0, 8, 1, 9, 2, 10, 3, 11]),
                interleave_hi: idx([4, 12, 5, 13, 6, 14, 7, 15]),
                even: idx([0, 2, 4, 6, 8, 10, 12, 14]),
                odd: idx([1, 3, 5, 7, 9, 11, 13, 15]),
            }
        }
    }

    /// Loads 8 consecutive roots starting at `k` and spreads lanes with `perm`.
    ///
    /// # Safety
    /// `k + 8 <= n` for the tables of `tb`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn load_roots(w: *const u64, wp: *const u64, k: usize, perm: Option<__m512i>) -> Root {
        // SAFETY: the caller guarantees k + 8 <= n, the table length.
        let (r, rp) = unsafe {
            (
                _mm512_loadu_si512(w.add(k).cast()),
                _mm512_loadu_si512(wp.add(k).cast()),
            )
        };
        match perm {
            Some(s) => root(
                _mm512_permutexvar_epi64(s, r),
                _mm512_permutexvar_epi64(s, rp),
            ),
            None => root(r, rp),
        }
    }

    /// Last four forward stages (t = 8, 4, 2, 1) of `U` consecutive 16-element blocks
    /// starting at 8-element block `b` (even), plus the final reduction to `[0, q)`.
    ///
    /// # Safety
    /// avx512f + avx512dq available; `p` valid for `tb.n` u64s; `8 (b + 2U) <= tb.n`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn fwd_last4<const U: usize>(
        tb: &Avx512NttTables,
        p: *mut u64,
        b: usize,
        k: &Shuffles,
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
                let w = bc(&tb.fwd, &tb.fwd_shoup, nb / 2 + bb / 2);
                (x[u], y[u]) = ct(v0, v1, w, c);
            }
            // t = 4: roots fwd[nb + bb], fwd[nb + bb + 1];
            // x = [v0.0..4, v1.0..4], y = [v0.4..8, v1.4..8] (128-bit chunks).
            for u in 0..U {
                let bb = b + 2 * u;
                let w = load_roots(roots, roots_p, nb + bb, Some(k.bcast4));
                let x1 = _mm512_shuffle_i64x2::<0b01_00_01_00>(x[u], y[u]);
                let y1 = _mm512_shuffle_i64x2::<0b11_10_11_10>(x[u], y[u]);
                (x[u], y[u]) = ct(x1, y1, w, c);
            }
            // t = 2: roots fwd[2nb + 2bb .. 2nb + 2bb + 4].
            for u in 0..U {
                let bb = b + 2 * u;
                let w = load_roots(roots, roots_p, 2 * nb + 2 * bb, Some(k.bcast2));
                let x2 = _mm512_permutex2var_epi64(x[u], k.pair_lo, y[u]);
                let y2 = _mm512_permutex2var_epi64(x[u], k.pair_hi, y[u]);
                (x[u], y[u]) = ct(x2, y2, w, c);
            }
            // t = 1: roots fwd[4nb + 4bb .. 4nb + 4bb + 8].
            for u in 0..U {
                let bb = b + 2 * u;
                let w = load_roots(roots, roots_p, 4 * nb + 4 * bb, None);
                let x3 = _mm512_unpacklo_epi64(x[u], y[u]);
                let y3 = _mm512_unpackhi_epi64(x[u], y[u]);
                (x[u], y[u]) = ct(x3, y3, w, c);
            }
            // Full reduction [0, 8q) -> [0, q), then back to standard lane order.
            for u in 0..U {
                let bb = b + 2 * u;
                let xr = reduce_once(reduce_once(reduce_once(x[u], c.q4), c.q2), c.q);
                let yr = reduce_once(reduce_once(reduce_once(y[u], c.q4), c.q2), c.q);
                let o0 = _mm512_permutex2var_epi64(xr, k.interleave_lo, yr);
                let o1 = _mm512_permutex2var_epi64(xr, k.interleave_hi, yr);
                _mm512_storeu_si512(p.add(8 * bb).cast(), o0);
                _mm512_storeu_si512(p.add(8 * bb + 8).cast(), o1);
            }
        }
    }

    /// Inverse stage `(m, t)`, `t >= 8`, one pass.
    ///
    /// # Safety
    /// avx512f + avx512dq available; `p` valid for reads and writes of `2 m t` u64s.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn inv_pass2(tb: &Avx512NttTables, p: *mut u64, m: usize, t: usize, c: Consts) {
        let (r, rp) = (&tb.inv[..], &tb.inv_shoup[..]);
        for i in 0..m {
            let w = bc(r, rp, m + i);
            let base = 2 * i * t;
            let mut j = base;
            while j < base + t {
                // SAFETY: j + t + 8 <= base + 2t <= 2mt.
                unsafe {
                    let px = p.add(j);
                    let py = p.add(j + t);
                    let (x, y) = gs(
                        _mm512_loadu_si512(px.cast()),
                        _mm512_loadu_si512(py.cast()),
                        w,
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
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn inv_pass4(tb: &Avx512NttTables, p: *mut u64, m: usize, t: usize, c: Consts) {
        let (r, rp) = (&tb.inv[..], &tb.inv_shoup[..]);
        for i in 0..m / 2 {
            let w1 = bc(r, rp, m + 2 * i);
            let w2 = bc(r, rp, m + 2 * i + 1);
            let w3 = bc(r, rp, m / 2 + i);
            let base = 4 * i * t;
            let mut j = base;
            while j < base + t {
                // SAFETY: j + 3t + 8 <= base + 4t <= 2mt.
                unsafe {
                    let mut x = [_mm512_setzero_si512(); 4];
                    for (k, xk) in x.iter_mut().enumerate() {
                        *xk = _mm512_loadu_si512(p.add(j + k * t).cast());
                    }
                    (x[0], x[1]) = gs(x[0], x[1], w1, c);
                    (x[2], x[3]) = gs(x[2], x[3], w2, c);
                    (x[0], x[2]) = gs(x[0], x[2], w3, c);
                    (x[1], x[3]) = gs(x[1], x[3], w3, c);
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
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn inv_pass8(tb: &Avx512NttTables, p: *mut u64, m: usize, t: usize, c: Consts) {
        let (r, rp) = (&tb.inv[..], &tb.inv_shoup[..]);
        for i in 0..m / 4 {
            let w1 = bc(r, rp, m + 4 * i);
            let w2 = bc(r, rp, m + 4 * i + 1);
            let w3 = bc(r, rp, m + 4 * i + 2);
            let w4 = bc(r, rp, m + 4 * i + 3);
            let w5 = bc(r, rp, m / 2 + 2 * i);
            let w6 = bc(r, rp, m / 2 + 2 * i + 1);
            let w7 = bc(r, rp, m / 4 + i);
            let base = 8 * i * t;
            let mut j = base;
            while j < base + t {
                // SAFETY: j + 7t + 8 <= base + 8t <= 2mt.
                unsafe {
                    let mut x = [_mm512_setzero_si512(); 8];
                    for (k, xk) in x.iter_mut().enumerate() {
                        *xk = _mm512_loadu_si512(p.add(j + k * t).cast());
                    }
                    (x[0], x[1]) = gs(x[0], x[1], w1, c);
                    (x[2], x[3]) = gs(x[2], x[3], w2, c);
                    (x[4], x[5]) = gs(x[4], x[5], w3, c);
                    (x[6], x[7]) = gs(x[6], x[7], w4, c);
                    (x[0], x[2]) = gs(x[0], x[2], w5, c);
                    (x[1], x[3]) = gs(x[1], x[3], w5, c);
                    (x[4], x[6]) = gs(x[4], x[6], w6, c);
                    (x[5], x[7]) = gs(x[5], x[7], w6, c);
                    (x[0], x[4]) = gs(x[0], x[4], w7, c);
                    (x[1], x[5]) = gs(x[1], x[5], w7, c);
                    (x[2], x[6]) = gs(x[2], x[6], w7, c);
                    (x[3], x[7]) = gs(x[3], x[7], w7, c);
                    for (k, xk) in x.iter().enumerate() {
                        _mm512_storeu_si512(p.add(j + k * t).cast(), *xk);
                    }
                }
                j += 8;
            }
        }
    }

    /// First inverse stages (t = 1, 2, 4 and, if `T8`, t = 8) of `U` consecutive
    /// 16-element blocks starting at 8-element block `b` (even), in registers.
    ///
    /// # Safety
    /// avx512f + avx512dq available; `p` valid for `tb.n` u64s; `8 (b + 2U) <= tb.n`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn inv_first4<const U: usize, const T8: bool>(
        tb: &Avx512NttTables,
        p: *mut u64,
        b: usize,
        k: &Shuffles,
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
                let w = load_roots(roots, roots_p, 4 * nb + 4 * bb, None);
                let x1 = _mm512_permutex2var_epi64(v0, k.even, v1);
                let y1 = _mm512_permutex2var_epi64(v0, k.odd, v1);
                (x[u], y[u]) = gs(x1, y1, w, c);
            }
            // t = 2: roots inv[2nb + 2bb .. 2nb + 2bb + 4].
            for u in 0..U {
                let bb = b + 2 * u;
                let w = load_roots(roots, roots_p, 2 * nb + 2 * bb, Some(k.bcast2));
                let x2 = _mm512_unpacklo_epi64(x[u], y[u]);
                let y2 = _mm512_unpackhi_epi64(x[u], y[u]);
                (x[u], y[u]) = gs(x2, y2, w, c);
            }
            // t = 4: roots inv[nb + bb], inv[nb + bb + 1].
            for u in 0..U {
                let bb = b + 2 * u;
                let w = load_roots(roots, roots_p, nb + bb, Some(k.bcast4));
                let x3 = _mm512_permutex2var_epi64(x[u], k.pair_lo, y[u]);
                let y3 = _mm512_permutex2var_epi64(x[u], k.pair_hi, y[u]);
                (x[u], y[u]) = gs(x3, y3, w, c);
            }
            // Back to standard order: v0 = [x.0..4, y.0..4], v1 = [x.4..8, y.4..8].
            for u in 0..U {
                let bb = b + 2 * u;
                let mut v0 = _mm512_shuffle_i64x2::<0b01_00_01_00>(x[u], y[u]);
                let mut v1 = _mm512_shuffle_i64x2::<0b11_10_11_10>(x[u], y[u]);
                if T8 {
                    // t = 8: one root inv[nb/2 + bb/2] for the whole block.
                    let w = bc(&tb.inv, &tb.inv_shoup, nb / 2 + bb / 2);
                    (v0, v1) = gs(v0, v1, w, c);
                }
                _mm512_storeu_si512(p.add(8 * bb).cast(), v0);
                _mm512_storeu_si512(p.add(8 * bb + 8).cast(), v1);
            }
        }
    }

    /// First inverse stages on all blocks (see [`inv_first4`]).
    ///
    /// # Safety
    /// avx512f + avx512dq available; `p` valid for reads and writes of `tb.n` u64s.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn inv_first_stages<const T8: bool>(tb: &Avx512NttTables, p: *mut u64, c: Consts) {
        let k = Shuffles::new();
        let nb = tb.n / 8;
        let mut b = 0usize;
        while b + 4 <= nb {
            // SAFETY: blocks b .. b + 4 lie within n (8 (b + 4) <= n).
            unsafe { inv_first4::<2, T8>(tb, p, b, &k, c) };
            b += 4;
        }
        if b < nb {
            // SAFETY: blocks b, b + 1 lie within n.
            unsafe { inv_first4::<1, T8>(tb, p, b, &k, c) };
        }
    }

    /// # Safety
    /// The CPU supports avx512f + avx512dq, `a.len() == tb.n`, `tb` built by `new`.
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn inverse_kernel(tb: &Avx512NttTables, a: &mut [u64]) {
        let n = tb.n;
        let c = consts(tb.q);
        let p = a.as_mut_ptr();

        // First stages in registers; then stages m = n/32 .. 2 two or three per pass.
        // SAFETY: p is valid for n u64s; the CPU features are guaranteed by the caller.
        unsafe {
            if n >= 32 {
                inv_first_stages::<true>(tb, p, c);
            } else {
                inv_first_stages::<false>(tb, p, c);
            }
        }
        let (mut m, mut t) = if n >= 32 { (n / 32, 16) } else { (1, 8) };
        let mut rem = m.trailing_zeros();
        while rem > 0 {
            let k = pass_width(rem);
            // SAFETY: p is valid for n = 2mt u64s; the CPU features are guaranteed by the caller.
            unsafe {
                match k {
                    3 => inv_pass8(tb, p, m, t, c),
                    2 => inv_pass4(tb, p, m, t, c),
                    _ => inv_pass2(tb, p, m, t, c),
                }
            }
            m >>= k;
            t <<= k;
            rem -= k;
        }
        debug_assert_eq!((m, t), (1, n / 2));

        // Last stage (m = 1, t = n/2) fused with the multiplication by n^{-1}: inputs in
        // [0, 4q), sum and difference in [0, 8q), Shoup products in [0, 4q), then [0, q).
        let ni = root(
            _mm512_set1_epi64(tb.n_inv as i64),
            _mm512_set1_epi64(tb.n_inv_shoup as i64),
        );
        let nw = root(
            _mm512_set1_epi64(tb.n_inv_w as i64),
            _mm512_set1_epi64(tb.n_inv_w_shoup as i64),
        );
        let mut j = 0usize;
        while j < t {
            // SAFETY: j + t + 8 <= 2t = n = a.len().
            unsafe {
                let px = p.add(j);
                let py = p.add(j + t);
                let x = _mm512_loadu_si512(px.cast());
                let y = _mm512_loadu_si512(py.cast());
                let s = _mm512_add_epi64(x, y);
                let d = _mm512_sub_epi64(_mm512_add_epi64(x, c.q4), y);
                let s = reduce_once(reduce_once(mul_shoup(s, ni, c), c.q2), c.q);
                let d = reduce_once(reduce_once(mul_shoup(d, nw, c), c.q2), c.q);
                _mm512_storeu_si512(px.cast(), s);
                _mm512_storeu_si512(py.cast(), d);
            }
            j += 8;
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::Avx512NttTables;
    use crate::ntt::{NttBackend, NttTable};
    use crate::primes::ntt_primes_near;

    fn splitmix64(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn available() -> bool {
        crate::simd::simd_test_can_run(super::imp::is_available(), "avx512f/avx512dq")
    }

    /// Portable table (the reference) and the AVX-512 tables for the same root.
    fn tables(n: usize, q: u64) -> (NttTable, Avx512NttTables) {
        let t = NttTable::with_backend(n, q, Some(NttBackend::Portable)).expect("table");
        let v = Avx512NttTables::new(n, q, t.psi()).expect("AVX-512 tables");
        (t, v)
    }

    fn check(t: &NttTable, v: &Avx512NttTables, a: &[u64]) {
        let (n, q) = (t.n(), t.modulus().value());
        let mut x = a.to_vec();
        let mut y = a.to_vec();
        v.forward(&mut x);
        t.forward_portable(&mut y);
        assert_eq!(x, y, "forward n={n} q={q}");
        v.inverse(&mut x);
        assert_eq!(x, a, "round trip n={n} q={q}");
        let mut x = a.to_vec();
        let mut y = a.to_vec();
        v.inverse(&mut x);
        t.inverse_portable(&mut y);
        assert_eq!(x, y, "inverse n={n} q={q}");
    }

    #[test]
    fn avx512_ntt_equals_portable() {
        if !available() {
            return;
        }
        let mut seed = 0xABCD;
        let mut n = 16usize;
        while n <= 65536 {
            let bit_sizes: &[u32] = if n >= 16384 {
                &[51, 55, 60, 61]
            } else {
                &[30, 45, 50, 51, 52, 54, 55, 57, 58, 59, 60, 61]
            };
            for &bits in bit_sizes {
                let q = ntt_primes_near(bits, n, 1, &[], true).expect("prime")[0];
                let (t, v) = tables(n, q);
                let mut impulse = vec![0u64; n];
                impulse[n / 3] = 1;
                let mut impulse2 = vec![0u64; n];
                impulse2[n - 1] = q - 1;
                let inputs = [
                    (0..n)
                        .map(|_| splitmix64(&mut seed) % q)
                        .collect::<Vec<_>>(),
                    (0..n).map(|_| splitmix64(&mut seed) % q).collect(),
                    vec![q - 1; n],
                    vec![0; n],
                    (0..n).map(|i| if i % 2 == 0 { q - 1 } else { 0 }).collect(),
                    impulse,
                    impulse2,
                ];
                for a in &inputs {
                    check(&t, &v, a);
                }
            }
            n *= 2;
        }
    }

    #[test]
    fn avx512_mul_shoup_bounds() {
        // r = y w - Q q with the estimated quotient: r == y w mod q and r < 4q for every
        // y < 2^64 (extremes and random), several prime sizes and extreme roots.
        if !available() {
            return;
        }
        let mut seed = 17;
        for bits in [30u32, 50, 51, 55, 60, 61] {
            let q = ntt_primes_near(bits, 16, 1, &[], true).expect("prime")[0];
            for w in [0, 1, 2, q / 2, q - 2, q - 1, splitmix64(&mut seed) % q] {
                for round in 0..2000 {
                    let y: [u64; 8] = core::array::from_fn(|i| match (round, i) {
                        (0, 0) => u64::MAX,
                        (0, 1) => 8 * q - 1,
                        (0, 2) => 4 * q - 1,
                        (0, 3) => 0,
                        (0, 4) => u64::MAX - q,
                        (0, 5) => 1 << 63,
                        (0, 6) => (1 << 32) - 1,
                        _ => match splitmix64(&mut seed) % 3 {
                            0 => splitmix64(&mut seed),
                            1 => splitmix64(&mut seed) % (8 * q),
                            _ => u64::MAX - splitmix64(&mut seed) % (1 << 40),
                        },
                    });
                    let r = super::imp::mul_shoup_lanes(y, w, q).expect("AVX-512");
                    for (yi, ri) in y.iter().zip(r) {
                        let want = (u128::from(*yi) * u128::from(w) % u128::from(q)) as u64;
                        assert!(ri < 4 * q, "q={q} w={w} y={yi} r={ri}");
                        assert_eq!(ri % q, want, "q={q} w={w} y={yi}");
                    }
                }
            }
        }
    }

    #[test]
    fn avx512_lazy_inputs() {
        // Documented tolerance: forward accepts inputs < 4q, inverse < 2q.
        if !available() {
            return;
        }
        let mut seed = 5;
        for n in [16usize, 32, 1024] {
            for bits in [51u32, 61] {
                let q = ntt_primes_near(bits, n, 1, &[], true).expect("prime")[0];
                let (t, v) = tables(n, q);
                for a in [
                    (0..n)
                        .map(|_| splitmix64(&mut seed) % (4 * q))
                        .collect::<Vec<_>>(),
                    vec![4 * q - 1; n],
                ] {
                    let mut expect: Vec<u64> = a.iter().map(|&x| x % q).collect();
                    t.forward_portable(&mut expect);
                    let mut got = a.clone();
                    v.forward(&mut got);
                    assert_eq!(got, expect, "n={n} q={q}");
                }
                for b in [
                    (0..n)
                        .map(|_| splitmix64(&mut seed) % (2 * q))
                        .collect::<Vec<_>>(),
                    vec![2 * q - 1; n],
                ] {
                    let mut expect: Vec<u64> = b.iter().map(|&x| x % q).collect();
                    t.inverse_portable(&mut expect);
                    let mut got = b.clone();
                    v.inverse(&mut got);
                    assert_eq!(got, expect, "n={n} q={q}");
                }
            }
        }
    }

    #[test]
    fn avx512_rejects_bad_parameters() {
        if !available() {
            return;
        }
        let n = 1024;
        let q = ntt_primes_near(60, n, 1, &[], true).expect("prime")[0];
        let (t, _) = tables(n, q);
        let psi = t.psi();
        assert!(Avx512NttTables::new(n, q, psi).is_some());
        assert!(Avx512NttTables::new(n, q, t.modulus().mul(psi, psi)).is_none());
        assert!(Avx512NttTables::new(1000, q, psi).is_none());
        assert!(Avx512NttTables::new(8, q, psi).is_none());
        let q8 = ntt_primes_near(60, 4, 1, &[], true).expect("prime")[0];
        let t8 = crate::primes::minimal_primitive_root(q8, 4).expect("root");
        assert!(Avx512NttTables::new(8, q8, t8).is_none());
        // Wrong length: input untouched (release builds; debug builds assert).
        let v = Avx512NttTables::new(n, q, psi).expect("tables");
        if !cfg!(debug_assertions) {
            let mut short = vec![1u64; n / 2];
            v.forward(&mut short);
            v.inverse(&mut short);
            assert!(short.iter().all(|&x| x == 1));
        }
    }

    #[test]
    fn dispatch_uses_avx512_for_large_primes() {
        let n = 4096;
        for bits in [51u32, 55, 60, 61] {
            let q = ntt_primes_near(bits, n, 1, &[], true).expect("prime")[0];
            let t = NttTable::new(n, q).expect("table");
            if super::imp::is_available() {
                assert_eq!(t.backend(), NttBackend::Avx512, "q={q}");
            }
            let forced = NttTable::with_backend(n, q, Some(NttBackend::Portable)).expect("t");
            assert_eq!(forced.backend(), NttBackend::Portable);
            let mut seed = u64::from(bits);
            let a: Vec<u64> = (0..n).map(|_| splitmix64(&mut seed) % q).collect();
            let (mut x, mut y) = (a.clone(), a.clone());
            t.forward(&mut x);
            forced.forward(&mut y);
            assert_eq!(x, y);
            t.inverse(&mut x);
            forced.inverse(&mut y);
            assert_eq!(x, y);
            assert_eq!(x, a);
        }
    }

    /// Timing: `cargo test -p henn-ring --release avx512_timing -- --ignored --nocapture`
    /// (`AVX512_TIMING_N` picks one size). Minimum of many single calls, robust to load.
    #[test]
    #[ignore = "timing only"]
    fn avx512_timing() {
        use std::hint::black_box;
        use std::time::Instant;
        if !available() {
            return;
        }
        let only_n: Option<usize> = std::env::var("AVX512_TIMING_N")
            .ok()
            .and_then(|v| v.parse().ok());
        for (n, bits) in [
            (4096usize, 60u32),
            (16384, 51),
            (16384, 60),
            (16384, 61),
            (65536, 60),
        ] {
            if only_n.is_some_and(|m| m != n) {
                continue;
            }
            let q = ntt_primes_near(bits, n, 1, &[], true).expect("prime")[0];
            let (t, v) = tables(n, q);
            let mut seed = 42;
            let mut a: Vec<u64> = (0..n).map(|_| splitmix64(&mut seed) % q).collect();
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
            let f_v = time(&|a| v.forward(a));
            let i_v = time(&|a| v.inverse(a));
            let f_p = time(&|a| t.forward_portable(a));
            let i_p = time(&|a| t.inverse_portable(a));
            println!(
                "n={n:6} q~2^{bits}: AVX-512 fwd {f_v:8.0} ns inv {i_v:8.0} ns | portable fwd {f_p:8.0} ns inv {i_p:8.0} ns | speedup fwd {:.2}x inv {:.2}x",
                f_p / f_v,
                i_p / i_v
            );
        }
    }
}
