//! Word-size modular arithmetic: Barrett reduction (128-bit), Shoup multiplication by
//! precomputed constants, and lazy variants for NTT butterflies.
//!
//! All moduli are below 2^61, so `4q < 2^63` and lazy values in `[0, 4q)` never overflow.

use crate::error::{Result, RingError};

/// Largest supported modulus bit length.
pub const MAX_MODULUS_BITS: u32 = 61;

/// A modulus `q` (2 <= q < 2^61) with its Barrett constant `floor(2^128 / q)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Modulus {
    value: u64,
    ratio_lo: u64,
    ratio_hi: u64,
    bits: u32,
}

/// A constant `w` together with its Shoup quotient `floor(w * 2^64 / q)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShoupConst {
    /// The constant, in `[0, q)`.
    pub value: u64,
    /// `floor(value * 2^64 / q)`.
    pub quotient: u64,
}

impl Modulus {
    /// Creates a modulus; `q` must satisfy `2 <= q < 2^61`.
    pub fn new(q: u64) -> Result<Self> {
        if !(2..(1u64 << MAX_MODULUS_BITS)).contains(&q) {
            return Err(RingError::ModulusOutOfRange { q });
        }
        let ratio = u128::MAX / u128::from(q);
        // u128::MAX / q == floor((2^128 - 1) / q) == floor(2^128 / q) unless q | 2^128,
        // which only happens for powers of two; fix that case.
        let ratio = if q.is_power_of_two() {
            ratio + 1
        } else {
            ratio
        };
        Ok(Self {
            value: q,
            ratio_lo: ratio as u64,
            ratio_hi: (ratio >> 64) as u64,
            bits: 64 - q.leading_zeros(),
        })
    }

    /// The modulus value.
    #[inline(always)]
    pub fn value(&self) -> u64 {
        self.value
    }

    /// Bit length of the modulus.
    #[inline]
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Reduces a 128-bit value modulo q (Barrett, exact quotient estimate, one correction).
    #[inline(always)]
    pub fn reduce_u128(&self, x: u128) -> u64 {
        let x_lo = x as u64;
        let x_hi = (x >> 64) as u64;
        let lo_lo = (u128::from(x_lo) * u128::from(self.ratio_lo)) >> 64;
        let mid1 = u128::from(x_lo) * u128::from(self.ratio_hi);
        let mid2 = u128::from(x_hi) * u128::from(self.ratio_lo);
        let mid = lo_lo + u128::from(mid1 as u64) + u128::from(mid2 as u64);
        let q_est = (u128::from(x_hi) * u128::from(self.ratio_hi))
            .wrapping_add(mid1 >> 64)
            .wrapping_add(mid2 >> 64)
            .wrapping_add(mid >> 64);
        let r = x_lo.wrapping_sub((q_est as u64).wrapping_mul(self.value));
        if r >= self.value { r - self.value } else { r }
    }

    /// Reduces a 64-bit value modulo q.
    #[inline(always)]
    pub fn reduce(&self, x: u64) -> u64 {
        // floor(x * ratio / 2^128) only needs the high word for a 64-bit input.
        let q_est = ((u128::from(x) * u128::from(self.ratio_hi))
            + ((u128::from(x) * u128::from(self.ratio_lo)) >> 64))
            >> 64;
        let r = x.wrapping_sub((q_est as u64).wrapping_mul(self.value));
        if r >= self.value { r - self.value } else { r }
    }

    /// Reduces a signed value into `[0, q)`.
    #[inline]
    pub fn reduce_i64(&self, x: i64) -> u64 {
        let r = self.reduce(x.unsigned_abs());
        if x < 0 && r != 0 { self.value - r } else { r }
    }

    /// Reduces a signed 128-bit value into `[0, q)`.
    #[inline]
    pub fn reduce_i128(&self, x: i128) -> u64 {
        let r = self.reduce_u128(x.unsigned_abs());
        if x < 0 && r != 0 { self.value - r } else { r }
    }

    /// Centered representative of `x in [0, q)` in `(-q/2, q/2]`.
    #[inline]
    pub fn center(&self, x: u64) -> i64 {
        if x > self.value / 2 {
            x as i64 - self.value as i64
        } else {
            x as i64
        }
    }

    /// `a + b mod q` for `a, b < q`.
    #[inline(always)]
    pub fn add(&self, a: u64, b: u64) -> u64 {
        let s = a + b;
        if s >= self.value { s - self.value } else { s }
    }

    /// `a - b mod q` for `a, b < q`.
    #[inline(always)]
    pub fn sub(&self, a: u64, b: u64) -> u64 {
        if a >= b { a - b } else { a + self.value - b }
    }

    /// `-a mod q` for `a < q`.
    #[inline(always)]
    pub fn neg(&self, a: u64) -> u64 {
        if a == 0 { 0 } else { self.value - a }
    }

    /// `a * b mod q` for `a, b < 2^64` (any inputs; exact).
    #[inline(always)]
    pub fn mul(&self, a: u64, b: u64) -> u64 {
        self.reduce_u128(u128::from(a) * u128::from(b))
    }

    /// Precomputes the Shoup quotient of `w` (reduced mod q first).
    #[inline]
    pub fn shoup(&self, w: u64) -> ShoupConst {
        let value = self.reduce(w);
        ShoupConst {
            value,
            quotient: ((u128::from(value) << 64) / u128::from(self.value)) as u64,
        }
    }

    /// `a * w mod q` in `[0, 2q)` for any `a < 2^64` (Harvey's lazy Shoup multiplication).
    #[inline(always)]
    pub fn mul_shoup_lazy(&self, a: u64, w: ShoupConst) -> u64 {
        let hi = ((u128::from(a) * u128::from(w.quotient)) >> 64) as u64;
        a.wrapping_mul(w.value)
            .wrapping_sub(hi.wrapping_mul(self.value))
    }

    /// `a * w mod q` in `[0, q)` for any `a < 2^64`.
    #[inline(always)]
    pub fn mul_shoup(&self, a: u64, w: ShoupConst) -> u64 {
        let r = self.mul_shoup_lazy(a, w);
        if r >= self.value { r - self.value } else { r }
    }

    /// `a^e mod q`.
    pub fn pow(&self, a: u64, mut e: u64) -> u64 {
        let mut base = self.reduce(a);
        let mut acc = 1 % self.value;
        while e > 0 {
            if e & 1 == 1 {
                acc = self.mul(acc, base);
            }
            base = self.mul(base, base);
            e >>= 1;
        }
        acc
    }

    /// Multiplicative inverse of `a` modulo q (extended Euclid; q need not be prime).
    pub fn inv(&self, a: u64) -> Result<u64> {
        let a = self.reduce(a);
        let (mut r0, mut r1) = (i128::from(self.value), i128::from(a));
        let (mut t0, mut t1) = (0i128, 1i128);
        while r1 != 0 {
            let quot = r0 / r1;
            (r0, r1) = (r1, r0 - quot * r1);
            (t0, t1) = (t1, t0 - quot * t1);
        }
        if r0 != 1 {
            return Err(RingError::NotInvertible {
                value: a,
                q: self.value,
            });
        }
        Ok(self.reduce_i128(t0))
    }
}
