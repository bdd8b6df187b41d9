//! The CKKS encoder: N/2 complex slots <-> plaintext polynomial (canonical embedding).
//!
//! Slot `j` holds `m(zeta^(5^j))` with `zeta = exp(i*pi/N)`, so rotating the slots left by
//! `k` is the automorphism `X -> X^(5^k)` and conjugation is `X -> X^(2N-1)`. Because
//! `zeta^(5^j * N/2) = i`, the evaluation is a size-N/2 complex transform of
//! `m_k + i m_{k+N/2}`, computed with a "special" FFT in O(N log N).

use std::ops::{Add, Mul, Sub};
use std::sync::Arc;

use henn_ring::{Coeff, Poly};

use crate::ciphertext::Plaintext;
use crate::error::{CkksError, Result};
use crate::params::CkksParams;
use crate::types::{Level, Scale};

/// A complex number (minimal, to keep the encoder free of dependencies).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Complex {
    /// Real part.
    pub re: f64,
    /// Imaginary part.
    pub im: f64,
}

impl Complex {
    /// `re + i im`.
    pub const fn new(re: f64, im: f64) -> Self {
        Self { re, im }
    }
    /// Complex conjugate.
    #[inline]
    pub fn conj(self) -> Self {
        Self::new(self.re, -self.im)
    }
    /// Product with a real number.
    #[inline]
    pub fn scale(self, r: f64) -> Self {
        Self::new(self.re * r, self.im * r)
    }
    /// `exp(i theta)`.
    pub fn from_angle(theta: f64) -> Self {
        Self::new(theta.cos(), theta.sin())
    }
    /// Modulus.
    pub fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
}

impl std::ops::Add for Complex {
    type Output = Self;
    #[inline]
    fn add(self, o: Self) -> Self {
        Self::new(self.re + o.re, self.im + o.im)
    }
}

impl std::ops::Sub for Complex {
    type Output = Self;
    #[inline]
    fn sub(self, o: Self) -> Self {
        Self::new(self.re - o.re, self.im - o.im)
    }
}

impl std::ops::Mul for Complex {
    type Output = Self;
    #[inline]
    fn mul(self, o: Self) -> Self {
        Self::new(
            self.re * o.re - self.im * o.im,
            self.re * o.im + self.im * o.re,
        )
    }
}

/// Encoder/decoder for one parameter set.
#[derive(Debug, Clone)]
pub struct Encoder {
    params: Arc<CkksParams>,
    /// `5^j mod 2N` for j < N/2.
    rot_group: Vec<usize>,
    /// `exp(2 pi i k / 2N)` for k <= 2N.
    ksi: Vec<Complex>,
}

fn bit_reverse_in_place<T>(v: &mut [T]) {
    let n = v.len();
    let bits = n.trailing_zeros();
    if bits == 0 {
        return;
    }
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - bits);
        if i < j {
            v.swap(i, j);
        }
    }
}

impl Encoder {
    /// Precomputes the transform tables.
    pub fn new(params: &Arc<CkksParams>) -> Self {
        let n = params.n();
        let m = 2 * n;
        let mut rot_group = Vec::with_capacity(n / 2);
        let mut g = 1usize;
        for _ in 0..n / 2 {
            rot_group.push(g);
            g = g * 5 % m;
        }
        let ksi = (0..=m)
            .map(|k| {
                let a = 2.0 * std::f64::consts::PI * k as f64 / m as f64;
                Complex::new(a.cos(), a.sin())
            })
            .collect();
        Self {
            params: params.clone(),
            rot_group,
            ksi,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<CkksParams> {
        &self.params
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.params.slots()
    }

    /// Slots -> "coefficient" domain (inverse special FFT), in place; length a power of two.
    #[allow(
        clippy::indexing_slicing,
        reason = "indices bounded by the power-of-two size"
    )]
    fn fft_special_inv(&self, vals: &mut [Complex]) {
        let size = vals.len();
        let m = 2 * self.params.n();
        let mut len = size;
        while len >= 2 {
            let lenh = len >> 1;
            let lenq = len << 2;
            let gap = m / lenq;
            for i in (0..size).step_by(len) {
                for j in 0..lenh {
                    let idx = (lenq - (self.rot_group[j] % lenq)) * gap;
                    let u = vals[i + j].add(vals[i + j + lenh]);
                    let v = vals[i + j].sub(vals[i + j + lenh]).mul(self.ksi[idx]);
                    vals[i + j] = u;
                    vals[i + j + lenh] = v;
                }
            }
            len >>= 1;
        }
        bit_reverse_in_place(vals);
        let inv = 1.0 / size as f64;
        for v in vals.iter_mut() {
            v.re *= inv;
            v.im *= inv;
        }
    }

    /// "Coefficient" domain -> slots (special FFT), in place.
    #[allow(
        clippy::indexing_slicing,
        reason = "indices bounded by the power-of-two size"
    )]
    fn fft_special(&self, vals: &mut [Complex]) {
        let size = vals.len();
        let m = 2 * self.params.n();
        bit_reverse_in_place(vals);
        let mut len = 2;
        while len <= size {
            let lenh = len >> 1;
            let lenq = len << 2;
            let gap = m / lenq;
            for i in (0..size).step_by(len) {
                for j in 0..lenh {
                    let idx = (self.rot_group[j] % lenq) * gap;
                    let u = vals[i + j];
                    let v = vals[i + j + lenh].mul(self.ksi[idx]);
                    vals[i + j] = u.add(v);
                    vals[i + j + lenh] = u.sub(v);
                }
            }
            len <<= 1;
        }
    }

    /// Integer coefficients `round(scale * m)` of the polynomial whose slots are `values`
    /// (zero-padded to N/2 slots).
    fn coefficients(&self, values: &[Complex], scale: Scale) -> Result<Vec<i128>> {
        let slots = self.slots();
        if values.len() > slots {
            return Err(CkksError::TooManyValues {
                got: values.len(),
                slots,
            });
        }
        let mut v = vec![Complex::default(); slots];
        for (d, s) in v.iter_mut().zip(values) {
            if !s.re.is_finite() || !s.im.is_finite() {
                return Err(CkksError::NonFinite(if s.re.is_finite() {
                    s.im
                } else {
                    s.re
                }));
            }
            *d = *s;
        }
        self.fft_special_inv(&mut v);
        let n = self.params.n();
        let mut coeffs = vec![0i128; n];
        let limit = 2f64.powi(120);
        let (lo, hi) = coeffs.split_at_mut(slots);
        for ((c_re, c_im), z) in lo.iter_mut().zip(hi.iter_mut()).zip(&v) {
            for (dst, x) in [(c_re, z.re), (c_im, z.im)] {
                let y = (x * scale.value()).round();
                if y.abs() >= limit {
                    return Err(CkksError::ValueTooLarge {
                        value: x,
                        log_scale: scale.log2(),
                    });
                }
                *dst = y as i128;
            }
        }
        Ok(coeffs)
    }

    /// Encodes complex values at `level` and `scale`.
    pub fn encode_complex(
        &self,
        values: &[Complex],
        level: Level,
        scale: Scale,
    ) -> Result<Plaintext> {
        self.encode_over(values, level, scale, self.params.q_limbs(level))
    }

    /// Encodes over the given primes (those of `level`, optionally followed by the special
    /// primes), tagged with `level`.
    fn encode_over(
        &self,
        values: &[Complex],
        level: Level,
        scale: Scale,
        limbs: Vec<usize>,
    ) -> Result<Plaintext> {
        self.params.check_level(level)?;
        let coeffs = self.coefficients(values, scale)?;
        let poly = Poly::<Coeff>::from_signed_i128(self.params.ring(), &limbs, &coeffs)?.ntt();
        Ok(Plaintext {
            poly,
            level,
            scale,
            params_id: self.params.id(),
        })
    }

    /// Encodes complex values over `Q_level ∪ P` (data primes up to `level` and the special
    /// primes): the plaintexts of double-hoisted linear transforms, multiplied with
    /// [`crate::eval::ExtCiphertext`]s. Such a plaintext also works wherever a plaintext at
    /// `level` does.
    pub fn encode_complex_ext(
        &self,
        values: &[Complex],
        level: Level,
        scale: Scale,
    ) -> Result<Plaintext> {
        let limbs = self
            .params
            .q_limbs(level)
            .into_iter()
            .chain(self.params.p_limbs())
            .collect();
        self.encode_over(values, level, scale, limbs)
    }

    /// [`Self::encode_complex_ext`] for real values (missing slots are zero).
    pub fn encode_ext(&self, values: &[f64], level: Level, scale: Scale) -> Result<Plaintext> {
        let v: Vec<Complex> = values.iter().map(|&x| Complex::new(x, 0.0)).collect();
        self.encode_complex_ext(&v, level, scale)
    }

    /// Encodes real values at `level` and `scale` (missing slots are zero).
    pub fn encode(&self, values: &[f64], level: Level, scale: Scale) -> Result<Plaintext> {
        let v: Vec<Complex> = values.iter().map(|&x| Complex::new(x, 0.0)).collect();
        self.encode_complex(&v, level, scale)
    }

    /// Encodes the same complex constant in every slot without a transform: the constant
    /// polynomial `round(re * scale) + round(im * scale) * X^(N/2)` (since `X^(N/2)` evaluates
    /// to `i` at every slot's root).
    pub fn encode_constant(&self, c: Complex, level: Level, scale: Scale) -> Result<Plaintext> {
        self.params.check_level(level)?;
        let n = self.params.n();
        let mut coeffs = vec![0i128; n];
        let limit = 2f64.powi(120);
        for (slot, x) in [(0usize, c.re), (n / 2, c.im)] {
            if !x.is_finite() {
                return Err(CkksError::NonFinite(x));
            }
            let y = (x * scale.value()).round();
            if y.abs() >= limit {
                return Err(CkksError::ValueTooLarge {
                    value: x,
                    log_scale: scale.log2(),
                });
            }
            if let Some(dst) = coeffs.get_mut(slot) {
                *dst = y as i128;
            }
        }
        let limbs = self.params.q_limbs(level);
        let poly = Poly::<Coeff>::from_signed_i128(self.params.ring(), &limbs, &coeffs)?.ntt();
        Ok(Plaintext {
            poly,
            level,
            scale,
            params_id: self.params.id(),
        })
    }

    /// Decodes all N/2 complex slots.
    pub fn decode_complex(&self, pt: &Plaintext) -> Result<Vec<Complex>> {
        self.params.check_id(pt.params_id)?;
        let coeffs = crt_centered_f64(&pt.poly.clone().intt())?;
        let slots = self.slots();
        let inv = 1.0 / pt.scale.value();
        let (lo, hi) = coeffs.split_at(slots);
        let mut v: Vec<Complex> = lo
            .iter()
            .zip(hi)
            .map(|(&a, &b)| Complex::new(a * inv, b * inv))
            .collect();
        self.fft_special(&mut v);
        Ok(v)
    }

    /// Decodes the real parts of all N/2 slots.
    pub fn decode(&self, pt: &Plaintext) -> Result<Vec<f64>> {
        Ok(self.decode_complex(pt)?.into_iter().map(|c| c.re).collect())
    }
}

/// Exact centered CRT reconstruction of every coefficient, returned as f64.
///
/// Values below `q_0 / 2` in magnitude are recognised in O(L) per coefficient; the others use
/// Garner's algorithm with balanced digits: `x = sum_i d_i * (q_0 ... q_{i-1})` with
/// `|d_i| <= q_i / 2`, which represents exactly the centered range `(-Q/2, Q/2]`; the sum
/// is then evaluated from the most significant digit down in f64.
pub(crate) fn crt_centered_f64(poly: &Poly<Coeff>) -> Result<Vec<f64>> {
    let ctx = poly.context();
    let limbs = poly.limbs();
    let k = limbs.len();
    let mods: Vec<henn_ring::Modulus> = limbs
        .iter()
        .map(|&i| ctx.modulus(i).copied())
        .collect::<std::result::Result<_, _>>()?;
    // prefix[i][j] = (q_0 ... q_{j-1}) mod q_i for j <= i; inv[i] = (q_0...q_{i-1})^{-1} mod q_i
    let mut prefix = vec![vec![0u64; k]; k];
    let mut inv = vec![0u64; k];
    let mut prefix_f = vec![1.0f64; k];
    for (i, mi) in mods.iter().enumerate() {
        let mut acc = 1u64 % mi.value();
        for j in 0..i {
            if let Some(slot) = prefix.get_mut(i).and_then(|r| r.get_mut(j)) {
                *slot = acc;
            }
            acc = mi.mul(acc, mods.get(j).map_or(1, |m| m.value()));
        }
        if let Some(slot) = prefix.get_mut(i).and_then(|r| r.get_mut(i)) {
            *slot = acc;
        }
        if let Some(slot) = inv.get_mut(i) {
            *slot = mi.inv(acc)?;
        }
        if i > 0 {
            let prev = prefix_f.get(i - 1).copied().unwrap_or(1.0);
            if let Some(slot) = prefix_f.get_mut(i) {
                *slot = prev * mods.get(i - 1).map_or(1.0, |m| m.value() as f64);
            }
        }
    }
    let n = poly.n();
    let data = poly.data();
    let mut out = vec![0f64; n];
    let mut digits = vec![0i64; k];
    #[allow(
        clippy::indexing_slicing,
        reason = "all tables have k entries and data has k*n"
    )]
    for (c, o) in out.iter_mut().enumerate() {
        // Fast path: if the centered residue modulo q_0 agrees with every other limb, it is
        // the exact centered value (the difference would be a non-zero multiple of Q smaller
        // than Q). This holds whenever |value| < q_0 / 2, i.e. for every well-scaled message.
        let x0 = mods[0].center(data[c]);
        if (1..k).all(|i| mods[i].reduce_i64(x0) == data[i * n + c]) {
            *o = x0 as f64;
            continue;
        }
        for i in 0..k {
            let mi = &mods[i];
            // value of sum_{j<i} d_j M_j mod q_i
            let mut s = 0u64;
            for j in 0..i {
                s = mi.add(s, mi.mul(mi.reduce_i64(digits[j]), prefix[i][j]));
            }
            let r = mi.mul(mi.sub(data[i * n + c], s), inv[i]);
            digits[i] = mi.center(r);
        }
        let mut v = 0f64;
        for i in (0..k).rev() {
            v += digits[i] as f64 * prefix_f[i];
        }
        *o = v;
    }
    Ok(out)
}
