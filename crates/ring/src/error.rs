//! Errors of the ring layer.

use thiserror::Error;

/// Errors raised by `henn-ring`. Every variant carries the numbers involved.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RingError {
    /// A modulus outside the supported range (2 <= q < 2^61).
    #[error("modulus {q} is out of range: henn-ring supports 2 <= q < 2^61")]
    ModulusOutOfRange {
        /// The offending modulus.
        q: u64,
    },
    /// The ring degree is not a supported power of two.
    #[error("ring degree {n} is not a power of two in 2^4..=2^17")]
    InvalidDegree {
        /// The offending degree.
        n: usize,
    },
    /// A modulus is not an NTT-friendly prime for the ring degree.
    #[error(
        "modulus {q} is not a prime congruent to 1 mod 2N = {two_n}; choose one with henn_ring::primes"
    )]
    NotNttFriendly {
        /// The modulus.
        q: u64,
        /// 2N.
        two_n: u64,
    },
    /// Not enough NTT-friendly primes of the requested size exist.
    #[error("could not find {count} distinct NTT-friendly primes of {bits} bits for 2N = {two_n}")]
    NotEnoughPrimes {
        /// Bits requested.
        bits: u32,
        /// Count requested.
        count: usize,
        /// 2N.
        two_n: u64,
    },
    /// The same prime appears twice in one RNS basis.
    #[error("prime {q} appears twice in the RNS basis; all moduli must be distinct")]
    DuplicatePrime {
        /// The duplicated prime.
        q: u64,
    },
    /// Two polynomials (or a polynomial and a table) are over different RNS bases.
    #[error("RNS basis mismatch: {lhs:?} vs {rhs:?}")]
    BasisMismatch {
        /// Limb indices of the left operand.
        lhs: Vec<usize>,
        /// Limb indices of the right operand.
        rhs: Vec<usize>,
    },
    /// A limb index outside the ring context.
    #[error("limb index {index} is outside the ring context ({len} moduli)")]
    LimbOutOfRange {
        /// Requested index.
        index: usize,
        /// Number of moduli in the context.
        len: usize,
    },
    /// A buffer has the wrong length.
    #[error("buffer length {got} does not match the expected {expected}")]
    LengthMismatch {
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// An operation needs at least `need` limbs.
    #[error("operation needs at least {need} limbs, polynomial has {have}")]
    NotEnoughLimbs {
        /// Limbs needed.
        need: usize,
        /// Limbs present.
        have: usize,
    },
    /// A Galois element that is not an odd residue mod 2N.
    #[error("Galois element {element} is not odd modulo 2N = {two_n}")]
    InvalidGaloisElement {
        /// The element.
        element: u64,
        /// 2N.
        two_n: u64,
    },
    /// A basis conversion with too many input primes for lazy 128-bit accumulation.
    #[error("basis conversion from {count} primes is unsupported (at most 63)")]
    TooManyPrimes {
        /// Number of input primes.
        count: usize,
    },
    /// A value is not invertible modulo q.
    #[error("{value} is not invertible modulo {q}")]
    NotInvertible {
        /// The value.
        value: u64,
        /// The modulus.
        q: u64,
    },
}

/// Result alias for ring operations.
pub type Result<T> = std::result::Result<T, RingError>;
