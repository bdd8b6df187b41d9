//! Errors of the CKKS layer.

use thiserror::Error;

use crate::types::{GaloisElement, Level};

/// Errors raised by `henn-ckks`. Messages say what went wrong and what to do.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum CkksError {
    /// Error from the ring layer.
    #[error(transparent)]
    Ring(#[from] henn_ring::RingError),
    /// Parameters are structurally invalid.
    #[error("invalid CKKS parameters: {0}")]
    InvalidParams(String),
    /// Parameters are below the required security level.
    #[error(
        "parameters give log2(QP) = {log_qp} bits at N = 2^{log_n}, above the {max_bits}-bit limit for \
         {security_bits}-bit security (HomomorphicEncryption.org table); use fewer or smaller primes, a larger N, \
         or opt in with SecurityPolicy::InsecureAllowed"
    )]
    Insecure {
        /// log2 of the ring degree.
        log_n: u32,
        /// Total bits of Q*P.
        log_qp: u32,
        /// The table's maximum.
        max_bits: u32,
        /// The security level checked.
        security_bits: u32,
    },
    /// Objects made under different parameters were combined.
    #[error("parameter mismatch: object was made for parameters {found}, expected {expected}")]
    ParamsMismatch {
        /// Expected fingerprint (hex).
        expected: String,
        /// Found fingerprint (hex).
        found: String,
    },
    /// Operands are at different levels.
    #[error("level mismatch: {lhs} vs {rhs}; bring the higher one down with drop_level_to")]
    LevelMismatch {
        /// Left operand level.
        lhs: Level,
        /// Right operand level.
        rhs: Level,
    },
    /// Operands have different scales.
    #[error(
        "scale mismatch: 2^{lhs_log2:.4} vs 2^{rhs_log2:.4}; rescale or re-encode one operand at the other's scale"
    )]
    ScaleMismatch {
        /// log2 of the left scale.
        lhs_log2: f64,
        /// log2 of the right scale.
        rhs_log2: f64,
    },
    /// A level out of range for the parameters.
    #[error("level {level} is out of range (maximum level {max})")]
    LevelOutOfRange {
        /// Requested level.
        level: usize,
        /// Maximum level of the parameters.
        max: usize,
    },
    /// No level left to rescale or multiply.
    #[error(
        "ciphertext is at level 0: no prime left to rescale by; the circuit needs more levels (a longer modulus chain)"
    )]
    OutOfLevels,
    /// A Galois key needed for a rotation is missing.
    #[error(
        "missing Galois key for element {element} (rotation by {steps:?}); generate keys for this rotation"
    )]
    MissingGaloisKey {
        /// The Galois element.
        element: GaloisElement,
        /// The rotation steps, if this was a rotation.
        steps: Option<i64>,
    },
    /// A key-switching key made for lower levels than the ciphertext it is applied to.
    #[error(
        "the key serves ciphertexts up to level {key}, this one is at level {needed}; generate the keys for the plan's levels"
    )]
    KeyLevel {
        /// Highest level the key serves.
        key: Level,
        /// Level of the ciphertext.
        needed: Level,
    },
    /// A ciphertext with an unexpected number of parts.
    #[error("ciphertext has {got} parts, expected {expected}; relinearize first")]
    WrongSize {
        /// Expected parts.
        expected: usize,
        /// Actual parts.
        got: usize,
    },
    /// Too many values for the slots.
    #[error("{got} values do not fit in {slots} slots")]
    TooManyValues {
        /// Values supplied.
        got: usize,
        /// Slots available.
        slots: usize,
    },
    /// Encoded values overflow the plaintext modulus at the chosen scale.
    #[error(
        "value {value:e} times scale 2^{log_scale:.1} overflows the plaintext range; lower the scale or the values"
    )]
    ValueTooLarge {
        /// Offending value.
        value: f64,
        /// log2 of the scale.
        log_scale: f64,
    },
    /// A non-finite input value.
    /// An argument of an evaluator call is inconsistent (e.g. weight count vs inputs).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("input contains a non-finite value ({0}); only finite numbers can be encoded")]
    NonFinite(f64),
    /// A rotation step not representable for the slot count.
    #[error("rotation by {steps} is invalid for {slots} slots")]
    InvalidRotation {
        /// Requested steps.
        steps: i64,
        /// Slots.
        slots: usize,
    },
    /// Serialization or deserialization failure.
    #[error("serialization: {0}")]
    Serialization(String),
    /// Serialized data ends before the object does.
    #[error(
        "serialized data truncated: {needed} bytes needed, {have} available; the buffer was cut short \
         (incomplete read, download or copy): obtain the complete object"
    )]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// The data does not start with the henn magic bytes.
    #[error(
        "not a henn object (magic bytes \"HENN\" missing); check that the input is henn-serialized data"
    )]
    BadMagic,
    /// The data was written in a format version this build cannot read.
    #[error(
        "serialization format version {found} unsupported (this build reads version {supported}); use a matching henn version"
    )]
    UnsupportedVersion {
        /// Version in the data.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The data holds a different kind of object than the one requested.
    #[error(
        "serialized object is a {found}, expected a {expected}; deserialize it as the right type"
    )]
    WrongType {
        /// Type requested.
        expected: &'static str,
        /// Type found in the data.
        found: String,
    },
    /// The checksum does not match: the data was corrupted.
    #[error(
        "checksum mismatch: the serialized data is corrupt (damaged in storage or transit); obtain a fresh copy"
    )]
    ChecksumMismatch,
    /// The data (or its declared size) exceeds the configured limit.
    #[error(
        "serialized object of {size} bytes exceeds the limit of {limit} bytes; raise serial::Limits::max_bytes if it is expected"
    )]
    TooLarge {
        /// Size found or declared.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, CkksError>;
