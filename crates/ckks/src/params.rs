//! Parameters: an unchecked, serde-friendly literal is turned into checked, immutable,
//! fingerprinted [`CkksParams`] (primes generated, security enforced, key-switching
//! precomputations built).

use std::sync::Arc;

use henn_ring::primes::ntt_primes_near;
use henn_ring::{BasisConverter, ModDown, RingContext};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{CkksError, Result};
use crate::types::{Level, Scale};

/// Distribution of the secret key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretDistribution {
    /// Uniform ternary {-1, 0, 1} (the distribution the security table is made for).
    Ternary,
    /// Sparse ternary with exactly `hamming_weight` non-zero coefficients. The standard
    /// table does not cover it, so it needs [`SecurityPolicy::InsecureAllowed`].
    SparseTernary {
        /// Number of non-zero coefficients.
        hamming_weight: usize,
    },
}

/// What security the parameter check enforces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityPolicy {
    /// Refuse anything below `bits` classical security per the HomomorphicEncryption.org
    /// table (128, 192 or 256).
    Enforce {
        /// Security level in bits.
        bits: u32,
    },
    /// Accept any size; logged at `warn` with the reason. For tests and experiments only.
    InsecureAllowed {
        /// Why insecure parameters are acceptable here.
        reason: String,
    },
}

impl Default for SecurityPolicy {
    fn default() -> Self {
        Self::Enforce { bits: 128 }
    }
}

/// Maximum log2(QP) for a ternary secret and error sigma 3.2, from the
/// HomomorphicEncryption.org security standard (classical), for 128/192/256 bits.
pub fn max_log_qp(log_n: u32, security_bits: u32) -> Option<u32> {
    let row: [u32; 3] = match log_n {
        10 => [27, 19, 14],
        11 => [54, 37, 29],
        12 => [109, 75, 58],
        13 => [218, 152, 118],
        14 => [438, 305, 237],
        15 => [881, 611, 476],
        16 => [1772, 1228, 956],
        _ => return None,
    };
    match security_bits {
        128 => Some(row[0]),
        192 => Some(row[1]),
        256 => Some(row[2]),
        _ => None,
    }
}

/// Unchecked parameter description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CkksParamsLiteral {
    /// log2 of the ring degree N (slots = N/2).
    pub log_n: u32,
    /// Bit sizes of the data primes, `q_0` (the base prime) first. A ciphertext at the top
    /// level uses all of them; each rescale drops the last one.
    pub q_bits: Vec<u32>,
    /// Bit sizes of the special primes `P` used only in key switching.
    pub p_bits: Vec<u32>,
    /// log2 of the default scale.
    pub log_scale: f64,
    /// Number of key-switching digits; `None` picks the smallest count whose digits fit
    /// under `P`.
    pub dnum: Option<usize>,
    /// Secret distribution.
    pub secret: SecretDistribution,
    /// Security policy.
    pub security: SecurityPolicy,
}

impl CkksParamsLiteral {
    /// The reference ResNet set: N = 16384, data primes [60, 35 x 8], scale 2^35; special
    /// primes 2 x 49 bits (both IFMA-friendly), giving exactly 438 bits for 128-bit security
    /// and 5 key-switching digits of at most two primes.
    pub fn resnet() -> Self {
        let mut q_bits = vec![60];
        q_bits.extend(std::iter::repeat_n(35, 8));
        Self {
            log_n: 14,
            q_bits,
            p_bits: vec![49, 49],
            log_scale: 35.0,
            dnum: None,
            secret: SecretDistribution::Ternary,
            security: SecurityPolicy::default(),
        }
    }

    /// A small set: N = 8192, data primes [60, 40, 40], scale 2^40, special primes
    /// 2 x 39 bits (IFMA-friendly), 218 bits in all, one prime per digit.
    pub fn small() -> Self {
        Self {
            log_n: 13,
            q_bits: vec![60, 40, 40],
            p_bits: vec![39, 39],
            log_scale: 40.0,
            dnum: None,
            secret: SecretDistribution::Ternary,
            security: SecurityPolicy::default(),
        }
    }

    /// The bootstrappable set: N = 2^16, 128-bit secure with a uniform ternary secret
    /// (1640 of 1772 bits). From the bottom: `q_0` 45 bits, 9 levels of 35 bits at scale 2^35
    /// (the levels left after a bootstrap), then the levels a bootstrap consumes: SlotToCoeff
    /// 3 x 45, EvalMod 8 x 60, CoeffToSlot 3 x 55; special primes 10 x 50 (IFMA-friendly),
    /// 3 key-switching digits. See [`crate::bootstrap::BootstrapConfig::boot`].
    pub fn boot() -> Self {
        let mut q_bits = vec![45];
        q_bits.extend(std::iter::repeat_n(35, 9));
        q_bits.extend(std::iter::repeat_n(45, 3));
        q_bits.extend(std::iter::repeat_n(60, 8));
        q_bits.extend(std::iter::repeat_n(55, 3));
        Self {
            log_n: 16,
            q_bits,
            p_bits: vec![50; 10],
            log_scale: 35.0,
            dnum: None,
            secret: SecretDistribution::Ternary,
            security: SecurityPolicy::default(),
        }
    }

    /// A preset by name (`resnet`, `small`, `boot`).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "resnet" => Some(Self::resnet()),
            "small" => Some(Self::small()),
            "boot" => Some(Self::boot()),
            _ => None,
        }
    }

    /// Total nominal bits of Q*P.
    pub fn log_qp(&self) -> u32 {
        self.q_bits.iter().chain(&self.p_bits).sum()
    }
}

/// Per-level precomputations for hybrid key switching.
#[derive(Debug)]
pub(crate) struct LevelTables {
    /// Digits at this level: context indices of the data primes of each digit.
    pub digits: Vec<Vec<usize>>,
    /// For each digit: conversion from the digit to its complement in `Q_l ∪ P`.
    pub mod_up: Vec<BasisConverter>,
    /// ModDown from `Q_l ∪ P` to `Q_l`.
    pub mod_down: ModDown,
    /// `Q_l ∪ P` (data primes then special primes).
    pub qp_limbs: Vec<usize>,
}

/// A 16-byte parameter fingerprint (a SHA-256 prefix); carried by every object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ParamsId(pub [u8; 16]);

impl std::fmt::Display for ParamsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Checked, immutable CKKS parameters.
#[derive(Debug)]
pub struct CkksParams {
    literal: CkksParamsLiteral,
    n: usize,
    q: Vec<u64>,
    p: Vec<u64>,
    ctx: Arc<RingContext>,
    scale: Scale,
    alpha: usize,
    id: ParamsId,
    levels: Vec<LevelTables>,
}

impl CkksParams {
    /// Checks a literal and builds the parameters (primes, tables). Fails on structural
    /// problems and, unless the policy allows it, on anything below the security level.
    pub fn new(literal: CkksParamsLiteral) -> Result<Arc<Self>> {
        let lit = literal;
        if !(10..=16).contains(&lit.log_n) {
            return Err(CkksError::InvalidParams(format!(
                "log_n = {} unsupported: choose 10..=16",
                lit.log_n
            )));
        }
        let n = 1usize << lit.log_n;
        if lit.q_bits.is_empty() {
            return Err(CkksError::InvalidParams(
                "at least one data prime is needed".into(),
            ));
        }
        if lit.p_bits.is_empty() && lit.q_bits.len() > 1 {
            return Err(CkksError::InvalidParams(
                "at least one special prime is needed for key switching".into(),
            ));
        }
        let min_bits = lit.log_n + 2;
        if let Some(b) = lit
            .q_bits
            .iter()
            .chain(&lit.p_bits)
            .find(|&&b| b < min_bits || b > 61)
        {
            return Err(CkksError::InvalidParams(format!(
                "prime size {b} bits unsupported: use {min_bits}..=61 bits for N = 2^{}",
                lit.log_n
            )));
        }
        if !(lit.log_scale.is_finite() && lit.log_scale >= 1.0 && lit.log_scale < 61.0) {
            return Err(CkksError::InvalidParams(format!(
                "log_scale {} must be in [1, 61)",
                lit.log_scale
            )));
        }
        if let SecretDistribution::SparseTernary { hamming_weight } = lit.secret
            && (hamming_weight == 0 || hamming_weight > n)
        {
            return Err(CkksError::InvalidParams(format!(
                "hamming weight {hamming_weight} not in 1..=N"
            )));
        }
        Self::check_security(&lit)?;

        // Primes: every prime has exactly its nominal bit size (searched downward from
        // 2^bits), and the primes of one size are the closest ones to 2^bits so rescaling by
        // them keeps the scale stable.
        let mut used: Vec<u64> = Vec::new();
        let mut take = |bits: u32| -> Result<u64> {
            let p = ntt_primes_near(bits, n, 1, &used, true)?;
            let p = *p
                .first()
                .ok_or(CkksError::InvalidParams(format!("no {bits}-bit NTT prime")))?;
            used.push(p);
            Ok(p)
        };
        let mut q = Vec::with_capacity(lit.q_bits.len());
        for &b in &lit.q_bits {
            q.push(take(b)?);
        }
        let mut p = Vec::with_capacity(lit.p_bits.len());
        for &b in &lit.p_bits {
            p.push(take(b)?);
        }
        let all: Vec<u64> = q.iter().chain(&p).copied().collect();
        let ctx = RingContext::new(n, &all)?;

        // Digits: alpha consecutive data primes per digit.
        let l = q.len();
        let p_bits_total: u32 = lit.p_bits.iter().sum();
        let alpha = match lit.dnum {
            Some(0) => return Err(CkksError::InvalidParams("dnum must be at least 1".into())),
            Some(d) if d > l => {
                return Err(CkksError::InvalidParams(format!(
                    "dnum {d} exceeds the {l} data primes"
                )));
            }
            Some(d) => l.div_ceil(d),
            None => {
                // Largest alpha whose every digit fits under P (plus a margin of 2 bits).
                let mut best = 1;
                for a in 1..=l {
                    let fits = lit
                        .q_bits
                        .chunks(a)
                        .all(|c| c.iter().sum::<u32>() <= p_bits_total + 2);
                    if fits {
                        best = a;
                    }
                }
                best
            }
        };
        let p_idx: Vec<usize> = (l..l + p.len()).collect();
        let mut levels = Vec::with_capacity(l);
        for lev in 0..l {
            let q_idx: Vec<usize> = (0..=lev).collect();
            let digits: Vec<Vec<usize>> = q_idx.chunks(alpha).map(<[usize]>::to_vec).collect();
            let qp_limbs: Vec<usize> = q_idx.iter().chain(&p_idx).copied().collect();
            let (mod_up, mod_down) = if p_idx.is_empty() {
                (Vec::new(), None)
            } else {
                let mut mod_up = Vec::with_capacity(digits.len());
                for d in &digits {
                    let comp: Vec<usize> = qp_limbs
                        .iter()
                        .copied()
                        .filter(|i| !d.contains(i))
                        .collect();
                    mod_up.push(BasisConverter::new(&ctx, d, &comp)?);
                }
                (mod_up, Some(ModDown::new(&ctx, &q_idx, &p_idx)?))
            };
            if let Some(mod_down) = mod_down {
                levels.push(LevelTables {
                    digits,
                    mod_up,
                    mod_down,
                    qp_limbs,
                });
            }
        }

        let mut h = Sha256::new();
        h.update(b"henn-ckks-params-v1");
        h.update((n as u64).to_le_bytes());
        for v in q.iter().chain(&p) {
            h.update(v.to_le_bytes());
        }
        h.update([0xff]);
        h.update((q.len() as u64).to_le_bytes());
        h.update(lit.log_scale.to_bits().to_le_bytes());
        h.update((alpha as u64).to_le_bytes());
        match lit.secret {
            SecretDistribution::Ternary => h.update([0u8]),
            SecretDistribution::SparseTernary { hamming_weight } => {
                h.update([1u8]);
                h.update((hamming_weight as u64).to_le_bytes());
            }
        }
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);

        let scale = Scale::from_log2(lit.log_scale);
        Ok(Arc::new(Self {
            literal: lit,
            n,
            q,
            p,
            ctx,
            scale,
            alpha,
            id: ParamsId(id),
            levels,
        }))
    }

    fn check_security(lit: &CkksParamsLiteral) -> Result<()> {
        match &lit.security {
            SecurityPolicy::InsecureAllowed { reason } => {
                tracing::warn!(
                    log_n = lit.log_n,
                    log_qp = lit.log_qp(),
                    reason = %reason,
                    "INSECURE CKKS parameters explicitly allowed; do not use for real data"
                );
                Ok(())
            }
            SecurityPolicy::Enforce { bits } => {
                if let SecretDistribution::SparseTernary { .. } = lit.secret {
                    return Err(CkksError::InvalidParams(
                        "sparse ternary secrets are not covered by the security table; use SecretDistribution::Ternary \
                         or SecurityPolicy::InsecureAllowed"
                            .into(),
                    ));
                }
                let max = max_log_qp(lit.log_n, *bits).ok_or_else(|| {
                    CkksError::InvalidParams(format!(
                        "no security table entry for N = 2^{} at {bits} bits (supported: 128, 192, 256; N = 2^10..2^16)",
                        lit.log_n
                    ))
                })?;
                let log_qp = lit.log_qp();
                if log_qp > max {
                    return Err(CkksError::Insecure {
                        log_n: lit.log_n,
                        log_qp,
                        max_bits: max,
                        security_bits: *bits,
                    });
                }
                Ok(())
            }
        }
    }

    /// The literal these parameters were built from.
    pub fn literal(&self) -> &CkksParamsLiteral {
        &self.literal
    }
    /// Ring degree N.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Number of complex slots, N/2.
    pub fn slots(&self) -> usize {
        self.n / 2
    }
    /// Data primes `q_0..q_L`.
    pub fn q(&self) -> &[u64] {
        &self.q
    }
    /// Special primes.
    pub fn p(&self) -> &[u64] {
        &self.p
    }
    /// The ring context (data primes at indices `0..=L`, special primes after).
    pub fn ring(&self) -> &Arc<RingContext> {
        &self.ctx
    }
    /// Highest level `L` (number of data primes minus one).
    pub fn max_level(&self) -> Level {
        Level(self.q.len() - 1)
    }
    /// Default scale.
    pub fn default_scale(&self) -> Scale {
        self.scale
    }
    /// Data primes per key-switching digit.
    pub fn alpha(&self) -> usize {
        self.alpha
    }
    /// Number of key-switching digits at the top level.
    pub fn dnum(&self) -> usize {
        self.q.len().div_ceil(self.alpha)
    }
    /// Fingerprint.
    pub fn id(&self) -> ParamsId {
        self.id
    }
    /// Total bits of Q*P (sum of prime bit lengths).
    pub fn log_qp(&self) -> u32 {
        self.q
            .iter()
            .chain(&self.p)
            .map(|&x| 64 - x.leading_zeros())
            .sum()
    }
    /// Context indices of the data primes at `level`.
    pub fn q_limbs(&self, level: Level) -> Vec<usize> {
        (0..=level.0).collect()
    }
    /// Context indices of the special primes.
    pub fn p_limbs(&self) -> Vec<usize> {
        (self.q.len()..self.q.len() + self.p.len()).collect()
    }
    /// Context indices of all primes.
    pub fn all_limbs(&self) -> Vec<usize> {
        (0..self.q.len() + self.p.len()).collect()
    }
    /// Checks that `level` exists.
    pub fn check_level(&self, level: Level) -> Result<()> {
        if level.0 >= self.q.len() {
            return Err(CkksError::LevelOutOfRange {
                level: level.0,
                max: self.q.len() - 1,
            });
        }
        Ok(())
    }
    pub(crate) fn level_tables(&self, level: Level) -> Result<&LevelTables> {
        self.levels.get(level.0).ok_or(CkksError::InvalidParams(
            "key switching needs special primes (p_bits) in the parameters".into(),
        ))
    }
    /// Checks a fingerprint against these parameters.
    pub fn check_id(&self, found: ParamsId) -> Result<()> {
        if found != self.id {
            return Err(CkksError::ParamsMismatch {
                expected: self.id.to_string(),
                found: found.to_string(),
            });
        }
        Ok(())
    }
}
