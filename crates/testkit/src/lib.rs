//! # henn-testkit (dev-only)
//!
//! Insecure test parameter sets (named `TEST_INSECURE_*`), a per-process key cache so each
//! test binary generates keys once per parameter set, and precision assertions that compare
//! HE results with an f64 model and state a log2-precision bound.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "dev-only test support: failures should abort the test"
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use henn_ckks::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// A named test parameter set.
#[derive(Clone, Copy, Debug)]
pub struct TestParams {
    /// Name, used in test output and as the key-cache key.
    pub name: &'static str,
    /// log2 N.
    pub log_n: u32,
    /// Data prime sizes.
    pub q_bits: &'static [u32],
    /// Special prime sizes.
    pub p_bits: &'static [u32],
    /// log2 of the scale.
    pub log_scale: f64,
    /// Whether this set is below 128-bit security.
    pub insecure: bool,
}

/// N = 2^12, 4 levels of 40 bits, scale 2^40 (insecure: 250 bits > 109).
pub const TEST_INSECURE_LOGN12_L4: TestParams = TestParams {
    name: "TEST_INSECURE_LOGN12_L4",
    log_n: 12,
    q_bits: &[55, 40, 40, 40, 40],
    p_bits: &[55],
    log_scale: 40.0,
    insecure: true,
};

/// N = 2^11, three 45-bit primes and two special primes (two digits per level at the top).
pub const TEST_INSECURE_LOGN11_DNUM: TestParams = TestParams {
    name: "TEST_INSECURE_LOGN11_DNUM",
    log_n: 11,
    q_bits: &[50, 45, 45, 45],
    p_bits: &[50, 50],
    log_scale: 45.0,
    insecure: true,
};

/// The secure `small` preset (N = 8192).
pub const SMALL: TestParams = TestParams {
    name: "small",
    log_n: 13,
    q_bits: &[60, 40, 40],
    p_bits: &[39, 39],
    log_scale: 40.0,
    insecure: false,
};

/// `TEST_INSECURE_CHAIN`: a modulus chain as deep as a test model needs, `levels` primes of
/// `prime_bits` bits above a `q0_bits` base prime, one special prime of `p_bits` bits, scale
/// `2^prime_bits`, at N = 2^`log_n`. Insecure whenever log2(QP) exceeds the table's bound
/// for N (always at the default N = 2^12 with more than a few levels).
#[derive(Clone, Copy, Debug)]
pub struct TestChain {
    /// log2 N.
    pub log_n: u32,
    /// Base prime bits.
    pub q0_bits: u32,
    /// Bits of each scale-sized prime (and of the scale).
    pub prime_bits: u32,
    /// Number of scale-sized primes (levels).
    pub levels: usize,
    /// Special prime bits.
    pub p_bits: u32,
}

/// The default `TEST_INSECURE_CHAIN`: N = 2^12, q = [55, 40 x `levels`], p = [55], 2^40.
pub const fn test_insecure_chain(levels: usize) -> TestChain {
    TestChain {
        log_n: 12,
        q0_bits: 55,
        prime_bits: 40,
        levels,
        p_bits: 55,
    }
}

impl TestChain {
    /// The literal, with an explicit (logged) insecure policy.
    pub fn literal(&self) -> CkksParamsLiteral {
        CkksParamsLiteral {
            log_n: self.log_n,
            q_bits: std::iter::once(self.q0_bits)
                .chain(std::iter::repeat_n(self.prime_bits, self.levels))
                .collect(),
            p_bits: vec![self.p_bits],
            log_scale: f64::from(self.prime_bits),
            dnum: None,
            secret: SecretDistribution::Ternary,
            security: SecurityPolicy::InsecureAllowed {
                reason: format!(
                    "test parameter set TEST_INSECURE_CHAIN (N = 2^{}, q = [{}, {} x {}], p = [{}])",
                    self.log_n, self.q0_bits, self.prime_bits, self.levels, self.p_bits
                ),
            },
        }
    }

    /// The chain's data primes as powers of two (an idealised chain for cleartext backends).
    pub fn ideal_primes(&self) -> Vec<f64> {
        std::iter::once(self.q0_bits)
            .chain(std::iter::repeat_n(self.prime_bits, self.levels))
            .map(|b| f64::from(b).exp2())
            .collect()
    }
}

impl TestParams {
    /// The literal for this set (with an explicit insecure policy where needed).
    pub fn literal(&self) -> CkksParamsLiteral {
        CkksParamsLiteral {
            log_n: self.log_n,
            q_bits: self.q_bits.to_vec(),
            p_bits: self.p_bits.to_vec(),
            log_scale: self.log_scale,
            dnum: None,
            secret: SecretDistribution::Ternary,
            security: if self.insecure {
                SecurityPolicy::InsecureAllowed {
                    reason: format!("test parameter set {}", self.name),
                }
            } else {
                SecurityPolicy::default()
            },
        }
    }
}

/// Everything a test needs for one parameter set.
#[derive(Debug)]
pub struct TestContext {
    /// Parameters.
    pub params: Arc<CkksParams>,
    /// Secret key.
    pub sk: SecretKey,
    /// Public key.
    pub pk: PublicKey,
    /// Relinearization key.
    pub rlk: RelinKey,
    /// Galois keys for all power-of-two rotations (both directions) and conjugation.
    pub gk: GaloisKeys,
    /// Encoder.
    pub encoder: Encoder,
    /// Encryptor.
    pub encryptor: Encryptor,
    /// Decryptor.
    pub decryptor: Decryptor,
    /// Evaluator.
    pub eval: Evaluator,
}

impl TestContext {
    /// A fresh test RNG (deterministic per test for reproducibility).
    pub fn rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    /// Encrypts real values at the top level and default scale.
    pub fn encrypt(&self, values: &[f64], rng: &mut ChaCha20Rng) -> Ciphertext {
        let pt = self
            .encoder
            .encode(values, self.params.max_level(), self.params.default_scale())
            .expect("encode");
        self.encryptor
            .encrypt_pk(&pt, &self.pk, rng)
            .expect("encrypt")
    }

    /// Decrypts and decodes real parts.
    pub fn decrypt(&self, ct: &Ciphertext) -> Vec<f64> {
        let pt = self.decryptor.decrypt(ct, &self.sk).expect("decrypt");
        self.encoder.decode(&pt).expect("decode")
    }
}

fn build(tp: &TestParams) -> TestContext {
    let params = CkksParams::new(tp.literal()).expect("test parameters");
    let mut rng = ChaCha20Rng::seed_from_u64(0x5eed ^ u64::from(tp.log_n));
    let kg = KeyGenerator::new(&params);
    let sk = kg.secret_key(&mut rng).expect("sk");
    let pk = kg.public_key(&sk, &mut rng).expect("pk");
    let rlk = kg.relin_key(&sk, &mut rng).expect("rlk");
    let slots = params.slots() as i64;
    let mut steps = Vec::new();
    let mut k = 1;
    while k < slots {
        steps.push(k);
        steps.push(-k);
        k *= 2;
    }
    let gk = kg
        .galois_keys(&sk, &steps, true, &mut rng)
        .expect("galois keys");
    TestContext {
        encoder: Encoder::new(&params),
        encryptor: Encryptor::new(&params),
        decryptor: Decryptor::new(&params),
        eval: Evaluator::new(&params),
        params,
        sk,
        pk,
        rlk,
        gk,
    }
}

/// The cached context for a parameter set (keys generated once per process).
pub fn context(tp: &TestParams) -> Arc<TestContext> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, Arc<TestContext>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(c) = cache.lock().expect("cache").get(tp.name) {
        return c.clone();
    }
    let c = Arc::new(build(tp));
    cache
        .lock()
        .expect("cache")
        .entry(tp.name)
        .or_insert(c)
        .clone()
}

/// Precision statistics: log2 of the inverse absolute error (bits of precision).
#[derive(Clone, Copy, Debug)]
pub struct Precision {
    /// Worst-case bits (-log2 max |error|).
    pub min_bits: f64,
    /// Bits of the mean absolute error.
    pub avg_bits: f64,
    /// Maximum absolute error.
    pub max_err: f64,
}

/// Compares `got` with `want` on the first `want.len()` slots.
pub fn precision(got: &[f64], want: &[f64]) -> Precision {
    assert!(
        got.len() >= want.len(),
        "result has {} values, expected {}",
        got.len(),
        want.len()
    );
    let errs: Vec<f64> = got.iter().zip(want).map(|(g, w)| (g - w).abs()).collect();
    let max_err = errs.iter().copied().fold(0.0, f64::max);
    let avg = errs.iter().sum::<f64>() / errs.len().max(1) as f64;
    Precision {
        min_bits: -max_err.max(f64::MIN_POSITIVE).log2(),
        avg_bits: -avg.max(f64::MIN_POSITIVE).log2(),
        max_err,
    }
}

/// Asserts at least `min_bits` bits of precision (worst case) of `got` against `want`.
/// Set `HENN_PRINT_PRECISION=1` to print the statistics.
#[track_caller]
pub fn assert_precision(label: &str, got: &[f64], want: &[f64], min_bits: f64) -> Precision {
    let p = precision(got, want);
    if std::env::var_os("HENN_PRINT_PRECISION").is_some() {
        eprintln!(
            "{label}: min {:.2} bits, avg {:.2} bits, max err {:.3e}",
            p.min_bits, p.avg_bits, p.max_err
        );
    }
    assert!(
        p.min_bits >= min_bits,
        "{label}: precision {:.2} bits (max error {:.3e}) below the required {min_bits} bits",
        p.min_bits,
        p.max_err
    );
    p
}

/// Deterministic uniform test vector in [-bound, bound].
pub fn uniform_values(n: usize, bound: f64, seed: u64) -> Vec<f64> {
    use rand::Rng;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
}

/// Bits of precision of `got` against `want` relative to their scale: `-log2(max |got -
/// want| / max(1, max |want|))` (errors of large values count relative to the largest one,
/// of values below 1 absolutely).
pub fn relative_bits(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f64, f64::max);
    -(err / scale).max(f64::MIN_POSITIVE).log2()
}

/// Asserts that `got` and `want` have the same length and at least `min_bits` bits of
/// [`relative_bits`] precision; returns the bits. The one precision assertion of the nn
/// tests.
#[track_caller]
pub fn assert_bits(label: &str, got: &[f64], want: &[f64], min_bits: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{label}: lengths differ");
    let bits = relative_bits(got, want);
    if std::env::var_os("HENN_PRINT_PRECISION").is_some() {
        eprintln!("{label}: {bits:.2} bits");
    }
    assert!(
        bits >= min_bits,
        "{label}: {bits:.2} bits of precision, below the required {min_bits} (first values: got {:?}, want {:?})",
        &got[..got.len().min(8)],
        &want[..want.len().min(8)]
    );
    bits
}
