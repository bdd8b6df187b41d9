//! Negacyclic number-theoretic transform per prime.
//!
//! Convention (the one SEAL and HEXL use): the forward transform maps coefficients
//! `a[0..n]` in standard order to `A[i] = a(psi^(2*brv(i)+1))`, i.e. evaluations at the odd
//! powers of a primitive `2n`-th root `psi`, in bit-reversed order; outputs are fully reduced.
//! Butterflies are Harvey's lazy ones (values kept in `[0, 4q)` between stages).
//!
//! Three implementations: a portable one (any q < 2^61), an AVX-512 IFMA one (q < 2^50)
//! and an AVX-512F/DQ one (used for q >= 2^50, or when IFMA is missing), chosen at run
//! time; all give bit-identical results.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod fma;
#[cfg(target_arch = "x86_64")]
pub use fma::FMA_MODULUS_LIMIT;
#[cfg(target_arch = "x86_64")]
pub(crate) mod ifma;

use crate::error::{Result, RingError};
use crate::modulus::{Modulus, ShoupConst};
use crate::primes::minimal_primitive_root;

/// Which NTT kernel a table uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NttBackend {
    /// Portable scalar Harvey butterflies.
    Portable,
    /// AVX-512 IFMA (52-bit multiply-add) kernels.
    Ifma,
    /// AVX-512F/DQ kernels with 64-bit Shoup products (moduli up to 2^61).
    Avx512,
    /// The portable Harvey butterflies with 32 x 32-bit Shoup products (q < 2^30, so lazy
    /// values stay below 2^32), compiled for AVX2, which vectorizes them; for CPUs with AVX2
    /// but neither AVX-512 nor FMA.
    Avx2,
    /// The portable Harvey butterflies in double precision with FMA-exact products
    /// (q < 2^50), four lanes of AVX2; for CPUs without AVX-512.
    Avx2Fma,
}

/// Largest modulus (exclusive) of the AVX2 kernel: `4q < 2^32`.
pub const AVX2_MODULUS_LIMIT: u64 = 1 << 30;

/// Precomputed tables for the negacyclic NTT of one prime.
#[derive(Clone, Debug)]
pub struct NttTable {
    n: usize,
    log_n: u32,
    modulus: Modulus,
    psi: u64,
    /// `psi^brv(k)` with Shoup quotients, k = 0..n.
    roots: Vec<ShoupConst>,
    /// `psi^-brv(k)` with Shoup quotients, k = 0..n.
    inv_roots: Vec<ShoupConst>,
    n_inv: ShoupConst,
    #[cfg(target_arch = "x86_64")]
    ifma: Option<ifma::IfmaNttTables>,
    #[cfg(target_arch = "x86_64")]
    avx512: Option<avx512::Avx512NttTables>,
    /// Whether the AVX2 kernel runs (q < 2^30, AVX2 detected, no AVX-512 kernel).
    avx2: bool,
    /// The AVX2 + FMA kernel's tables (2^30 <= q < 2^50, no AVX-512 kernel).
    #[cfg(target_arch = "x86_64")]
    fma: Option<fma::FmaNttTables>,
}

/// Bit reversal of the low `bits` bits of `x`.
#[inline]
pub fn bit_reverse(x: usize, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        x.reverse_bits() >> (usize::BITS - bits)
    }
}

/// Brings lazy butterfly outputs from `[0, 4q)` to `[0, q)`.
#[inline(always)]
fn reduce_from_4q(a: &mut [u64], q: u64) {
    let two_q = 2 * q;
    for x in a.iter_mut() {
        let mut v = *x;
        if v >= two_q {
            v -= two_q;
        }
        if v >= q {
            v -= q;
        }
        *x = v;
    }
}

impl NttTable {
    /// Builds the tables for degree `n` (a power of two, 16..=2^17) and prime `q ≡ 1 mod 2n`,
    /// using the smallest primitive `2n`-th root of unity.
    pub fn new(n: usize, q: u64) -> Result<Self> {
        Self::with_backend(n, q, None)
    }

    /// As [`NttTable::new`], forcing the portable kernel when `force_portable` is set.
    pub fn with_backend(n: usize, q: u64, force: Option<NttBackend>) -> Result<Self> {
        if !n.is_power_of_two() || !(16..=1 << 17).contains(&n) {
            return Err(RingError::InvalidDegree { n });
        }
        let modulus = Modulus::new(q)?;
        let psi = minimal_primitive_root(q, n)?;
        let psi_inv = modulus.inv(psi)?;
        let log_n = n.trailing_zeros();
        let mut roots = vec![modulus.shoup(0); n];
        let mut inv_roots = vec![modulus.shoup(0); n];
        let (mut pw, mut ipw) = (1u64, 1u64);
        for k in 0..n {
            let idx = bit_reverse(k, log_n);
            roots[idx] = modulus.shoup(pw);
            inv_roots[idx] = modulus.shoup(ipw);
            pw = modulus.mul(pw, psi);
            ipw = modulus.mul(ipw, psi_inv);
        }
        let n_inv = modulus.shoup(modulus.inv(n as u64)?);
        #[cfg(target_arch = "x86_64")]
        let ifma = match force {
            Some(NttBackend::Portable) => None,
            _ => ifma::IfmaNttTables::new(n, q, psi),
        };
        #[cfg(target_arch = "x86_64")]
        let avx512 = match force {
            Some(NttBackend::Portable) => None,
            _ if ifma.is_some() => None,
            _ => avx512::Avx512NttTables::new(n, q, psi),
        };
        #[cfg(target_arch = "x86_64")]
        // The FMA kernel (below 2^50, short stages shuffled) is faster than this one wherever
        // both run (n = 2^14, 26-bit prime, AMD EPYC: forward 89 against 288 us, inverse 85
        // against 113), so this one is for CPUs with AVX2 but no FMA.
        let avx2 = force != Some(NttBackend::Portable)
            && ifma.is_none()
            && avx512.is_none()
            && q < AVX2_MODULUS_LIMIT
            && std::is_x86_feature_detected!("avx2")
            && !std::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        #[cfg(target_arch = "x86_64")]
        let fma_wanted =
            force != Some(NttBackend::Portable) && ifma.is_none() && avx512.is_none() && !avx2;
        #[allow(unused_mut, reason = "set only on x86_64")]
        let mut t = Self {
            n,
            log_n,
            modulus,
            psi,
            roots,
            inv_roots,
            n_inv,
            #[cfg(target_arch = "x86_64")]
            ifma,
            #[cfg(target_arch = "x86_64")]
            avx512,
            avx2,
            #[cfg(target_arch = "x86_64")]
            fma: None,
        };
        #[cfg(target_arch = "x86_64")]
        if fma_wanted {
            t.fma = fma::FmaNttTables::new(&t);
        }
        Ok(t)
    }

    /// Ring degree.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The prime.
    pub fn modulus(&self) -> &Modulus {
        &self.modulus
    }

    /// The primitive `2n`-th root of unity used.
    pub fn psi(&self) -> u64 {
        self.psi
    }

    /// Which kernel this table runs.
    pub fn backend(&self) -> NttBackend {
        #[cfg(target_arch = "x86_64")]
        if self.ifma.is_some() {
            return NttBackend::Ifma;
        }
        #[cfg(target_arch = "x86_64")]
        if self.avx512.is_some() {
            return NttBackend::Avx512;
        }
        if self.avx2 {
            return NttBackend::Avx2;
        }
        #[cfg(target_arch = "x86_64")]
        if self.fma.is_some() {
            return NttBackend::Avx2Fma;
        }
        NttBackend::Portable
    }

    /// Forward negacyclic NTT in place. Input in `[0, q)`, output in `[0, q)`, bit-reversed.
    ///
    /// The slice must have length `n` (checked by callers in this crate; shorter slices
    /// are a logic error and would panic on indexing).
    #[inline]
    pub fn forward(&self, a: &mut [u64]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = &self.ifma {
            t.forward(a);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = &self.avx512 {
            t.forward(a);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: AVX2 was detected when the table was made (`avx2` is only set then).
            unsafe { self.forward_avx2(a) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = &self.fma {
            // SAFETY: `fma` tables exist only where AVX2 and FMA were detected.
            unsafe { self.forward_fma_inner(t, a) };
            return;
        }
        self.forward_portable(a);
    }

    /// Inverse negacyclic NTT in place. Input in `[0, q)` bit-reversed, output in `[0, q)`.
    #[inline]
    pub fn inverse(&self, a: &mut [u64]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = &self.ifma {
            t.inverse(a);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = &self.avx512 {
            t.inverse(a);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: AVX2 was detected when the table was made (`avx2` is only set then).
            unsafe { self.inverse_avx2(a) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = &self.fma {
            // SAFETY: `fma` tables exist only where AVX2 and FMA were detected.
            unsafe { self.inverse_fma_inner(t, a) };
            return;
        }
        self.inverse_portable(a);
    }

    /// The portable forward kernel (exposed for testing against the IFMA one).
    pub fn forward_portable(&self, a: &mut [u64]) {
        let a = &mut a[..self.n];
        self.forward_stages(a, 1, self.n);
        reduce_from_4q(a, self.modulus.value());
    }

    /// The portable forward butterflies from stage `m` (roots `m..2m`, each over `t / 2`
    /// pairs) to the last, on lazy values in `[0, 4q)` (left lazy).
    #[allow(
        clippy::indexing_slicing,
        reason = "indices bounded by n = a.len() by construction"
    )]
    pub(crate) fn forward_stages(&self, a: &mut [u64], mut m: usize, mut t: usize) {
        let n = self.n;
        let two_q = 2 * self.modulus.value();
        let m_ = &self.modulus;
        while m < n {
            t >>= 1;
            for i in 0..m {
                let w = self.roots[m + i];
                let (lo, hi) = a[2 * i * t..2 * i * t + 2 * t].split_at_mut(t);
                for (x, y) in lo.iter_mut().zip(hi.iter_mut()) {
                    let mut u = *x;
                    if u >= two_q {
                        u -= two_q;
                    }
                    let v = m_.mul_shoup_lazy(*y, w);
                    *x = u + v;
                    *y = u + two_q - v;
                }
            }
            m <<= 1;
        }
    }

    /// The portable inverse kernel (exposed for testing against the IFMA one).
    pub fn inverse_portable(&self, a: &mut [u64]) {
        let a = &mut a[..self.n];
        self.inverse_stages(a, 1, self.n);
        for x in a.iter_mut() {
            *x = self.modulus.mul_shoup(*x, self.n_inv);
        }
    }

    /// The portable inverse butterflies of the stages with spans `t` from `t_from` up to
    /// (excluding) `t_to`, on values in `[0, 2q)` (left in `[0, 2q)`).
    #[allow(
        clippy::indexing_slicing,
        reason = "indices bounded by n = a.len() by construction"
    )]
    pub(crate) fn inverse_stages(&self, a: &mut [u64], t_from: usize, t_to: usize) {
        let two_q = 2 * self.modulus.value();
        let m_ = &self.modulus;
        let mut t = t_from;
        while t < t_to {
            let h = self.n / (2 * t);
            for i in 0..h {
                let w = self.inv_roots[h + i];
                let (lo, hi) = a[2 * i * t..2 * i * t + 2 * t].split_at_mut(t);
                for (x, y) in lo.iter_mut().zip(hi.iter_mut()) {
                    let (u, v) = (*x, *y);
                    let mut s = u + v;
                    if s >= two_q {
                        s -= two_q;
                    }
                    *x = s;
                    *y = m_.mul_shoup_lazy(u + two_q - v, w);
                }
            }
            t <<= 1;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn forward_avx2(&self, a: &mut [u64]) {
        self.forward_small(a);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn inverse_avx2(&self, a: &mut [u64]) {
        self.inverse_small(a);
    }

    /// The forward kernel for `q < 2^30` (inlined into the AVX2 entry point): Harvey's lazy
    /// butterflies with values below `4q < 2^32`, so every product is 32 x 32 bits (a Shoup
    /// quotient of 32 bits, `floor(w 2^32 / q)`, the top half of the 64-bit one) and the
    /// inner loop vectorizes. Exposed for testing.
    #[allow(
        clippy::indexing_slicing,
        reason = "indices bounded by n = a.len() by construction"
    )]
    #[inline(always)]
    pub fn forward_small(&self, a: &mut [u64]) {
        let n = self.n;
        let a = &mut a[..n];
        let q = self.modulus.value();
        debug_assert!(q < AVX2_MODULUS_LIMIT);
        let q32 = u64::from(q as u32);
        let two_q = 2 * q;
        let mut t = n;
        let mut m = 1;
        while m < n {
            t >>= 1;
            for i in 0..m {
                let w = self.roots[m + i];
                let wv = u64::from(w.value as u32);
                let wq = u64::from((w.quotient >> 32) as u32);
                let (lo, hi) = a[2 * i * t..2 * i * t + 2 * t].split_at_mut(t);
                for (x, y) in lo.iter_mut().zip(hi.iter_mut()) {
                    let u = if *x >= two_q { *x - two_q } else { *x };
                    let yv = u64::from(*y as u32);
                    let h = (yv * wq) >> 32;
                    let v = yv * wv - h * q32;
                    *x = u + v;
                    *y = u + two_q - v;
                }
            }
            m <<= 1;
        }
        reduce_from_4q(a, q);
    }

    /// The inverse kernel for `q < 2^30` (see [`Self::forward_small`]). Exposed for testing.
    #[allow(
        clippy::indexing_slicing,
        reason = "indices bounded by n = a.len() by construction"
    )]
    #[inline(always)]
    pub fn inverse_small(&self, a: &mut [u64]) {
        let n = self.n;
        let a = &mut a[..n];
        let q = self.modulus.value();
        debug_assert!(q < AVX2_MODULUS_LIMIT);
        let q32 = u64::from(q as u32);
        let two_q = 2 * q;
        let mut t = 1;
        let mut h = n >> 1;
        while h >= 1 {
            for i in 0..h {
                let w = self.inv_roots[h + i];
                let wv = u64::from(w.value as u32);
                let wq = u64::from((w.quotient >> 32) as u32);
                let (lo, hi) = a[2 * i * t..2 * i * t + 2 * t].split_at_mut(t);
                for (x, y) in lo.iter_mut().zip(hi.iter_mut()) {
                    let (u, v) = (*x, *y);
                    let s = u + v;
                    *x = if s >= two_q { s - two_q } else { s };
                    let d = u64::from((u + two_q - v) as u32);
                    let hq = (d * wq) >> 32;
                    *y = d * wv - hq * q32;
                }
            }
            t <<= 1;
            h >>= 1;
        }
        let wv = u64::from(self.n_inv.value as u32);
        let wq = u64::from((self.n_inv.quotient >> 32) as u32);
        for x in a.iter_mut() {
            let xv = u64::from(*x as u32);
            let hq = (xv * wq) >> 32;
            let r = xv * wv - hq * q32;
            *x = if r >= q { r - q } else { r };
        }
    }

    /// log2 of the degree.
    pub fn log_n(&self) -> u32 {
        self.log_n
    }
}
