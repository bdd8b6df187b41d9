//! Small types carrying invariants: levels, scales, Galois elements.

use serde::{Deserialize, Serialize};

/// A level: a ciphertext at level `l` lives modulo `q_0 * ... * q_l`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Level(pub usize);

impl Level {
    /// Number of RNS limbs at this level.
    #[inline]
    pub fn num_limbs(self) -> usize {
        self.0 + 1
    }
    /// The level as an index.
    #[inline]
    pub fn get(self) -> usize {
        self.0
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "level {}", self.0)
    }
}

/// A CKKS scale Δ (values are stored as `round(Δ * x)`), tracked exactly as an f64.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct Scale(f64);

impl Scale {
    /// `2^log2`.
    pub fn from_log2(log2: f64) -> Self {
        Self(log2.exp2())
    }
    /// A scale from its value; must be finite and >= 1.
    pub fn new(value: f64) -> Option<Self> {
        (value.is_finite() && value >= 1.0).then_some(Self(value))
    }
    /// The value.
    #[inline]
    pub fn value(self) -> f64 {
        self.0
    }
    /// log2 of the value.
    pub fn log2(self) -> f64 {
        self.0.log2()
    }
    /// Relative tolerance of [`Scale::matches`]: 2^-32, far below CKKS noise (2^-17 and
    /// more at scale 2^35), and above the ~2^-35 rounding left when one operand's scale is
    /// aligned to another's with an integer constant.
    pub const MATCH_TOLERANCE: f64 = 1.0 / 4_294_967_296.0;

    /// Whether two scales agree to within a relative [`Scale::MATCH_TOLERANCE`].
    pub fn matches(self, other: Scale) -> bool {
        ((self.0 / other.0) - 1.0).abs() < Self::MATCH_TOLERANCE
    }
    pub(crate) fn mul(self, other: Scale) -> Scale {
        Scale(self.0 * other.0)
    }
    pub(crate) fn div(self, d: f64) -> Scale {
        Scale(self.0 / d)
    }
}

impl std::fmt::Display for Scale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "2^{:.4}", self.log2())
    }
}

/// A Galois element `g` (odd, mod 2N) naming the automorphism `X -> X^g`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GaloisElement(pub u64);

impl GaloisElement {
    /// The element for a left rotation by `steps` slots (negative: right) with N/2 slots:
    /// `5^steps mod 2N`.
    pub fn for_rotation(steps: i64, n: usize) -> Self {
        let two_n = 2 * n as u64;
        let slots = (n / 2) as i64;
        let k = steps.rem_euclid(slots) as u64;
        let mut g = 1u64;
        let mut base = 5u64;
        let mut e = k;
        while e > 0 {
            if e & 1 == 1 {
                g = g * base % two_n;
            }
            base = base * base % two_n;
            e >>= 1;
        }
        Self(g)
    }
    /// The element of complex conjugation, `2N - 1`.
    pub fn conjugation(n: usize) -> Self {
        Self(2 * n as u64 - 1)
    }
    /// The value.
    pub fn value(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for GaloisElement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
