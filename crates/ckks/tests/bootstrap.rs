//! Bootstrapping precision on a small insecure ring shaped like the `boot` preset
//! (TEST_INSECURE_BOOT: N = 2^12, q = [45, 35 x 2, 45 x 3, 60 x 8, 55 x 3], p = [60 x 4]).
//! Precision in bits: -log2 of the mean and of the maximum absolute error over all slots,
//! inputs uniform in [-1, 1] (real and imaginary parts).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failure should abort the test"
)]

use std::ops::Sub;
use std::sync::{Arc, OnceLock};

use henn_ckks::bootstrap::{BootstrapConfig, BootstrapKeys, Bootstrapper};
use henn_ckks::prelude::*;
use henn_ckks::serial;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const LEFT: usize = 2;

fn params() -> Arc<CkksParams> {
    let mut q_bits = vec![45];
    q_bits.extend(std::iter::repeat_n(35, LEFT));
    q_bits.extend(std::iter::repeat_n(45, 3));
    q_bits.extend(std::iter::repeat_n(60, 8));
    q_bits.extend(std::iter::repeat_n(55, 3));
    CkksParams::new(CkksParamsLiteral {
        log_n: 12,
        q_bits,
        p_bits: vec![60; 4],
        log_scale: 35.0,
        dnum: None,
        secret: SecretDistribution::Ternary,
        security: SecurityPolicy::InsecureAllowed {
            reason: "test parameter set TEST_INSECURE_BOOT (N = 2^12)".into(),
        },
    })
    .unwrap()
}

struct Kit {
    params: Arc<CkksParams>,
    sk: SecretKey,
    enc: Encoder,
    boot: Bootstrapper,
    keys: BootstrapKeys,
}

/// One kit per slot count, shared by the tests of this binary.
fn kit(log_slots: u32) -> &'static Kit {
    static FULL: OnceLock<Kit> = OnceLock::new();
    static SPARSE: OnceLock<Kit> = OnceLock::new();
    let cell = if log_slots == 11 { &FULL } else { &SPARSE };
    cell.get_or_init(|| {
        let params = params();
        let mut rng = ChaCha20Rng::seed_from_u64(11 + u64::from(log_slots));
        let sk = KeyGenerator::new(&params).secret_key(&mut rng).unwrap();
        let mut cfg = BootstrapConfig::default_for(12);
        cfg.log_slots = log_slots;
        let boot = Bootstrapper::new(&params, cfg, params.default_scale()).unwrap();
        let keys = boot.generate_keys(&sk, &mut rng).unwrap();
        Kit {
            enc: Encoder::new(&params),
            params,
            sk,
            boot,
            keys,
        }
    })
}

/// (mean, min) bits of precision.
fn precision(got: &[Complex], want: &[Complex]) -> (f64, f64) {
    let errs: Vec<f64> = got.iter().zip(want).map(|(a, b)| a.sub(*b).abs()).collect();
    let mean = errs.iter().sum::<f64>() / errs.len() as f64;
    let max = errs.iter().copied().fold(0.0, f64::max);
    (-mean.log2(), -max.log2())
}

impl Kit {
    fn encrypt_at0(&self, v: &[Complex], rng: &mut ChaCha20Rng) -> Ciphertext {
        let pt = self
            .enc
            .encode_complex(v, Level(0), self.params.default_scale())
            .unwrap();
        Encryptor::new(&self.params)
            .encrypt_sk(&pt, &self.sk, rng)
            .unwrap()
    }
    fn decrypt(&self, ct: &Ciphertext) -> Vec<Complex> {
        let pt = Decryptor::new(&self.params).decrypt(ct, &self.sk).unwrap();
        self.enc.decode_complex(&pt).unwrap()
    }
    /// `n`-periodic values over all slots.
    fn random(&self, n: usize, complex: bool, rng: &mut ChaCha20Rng) -> Vec<Complex> {
        let base: Vec<Complex> = (0..n)
            .map(|_| {
                Complex::new(
                    rng.random_range(-1.0..1.0),
                    if complex {
                        rng.random_range(-1.0..1.0)
                    } else {
                        0.0
                    },
                )
            })
            .collect();
        (0..self.params.slots()).map(|j| base[j % n]).collect()
    }
}

#[test]
fn full_slots_bootstrap_to_the_planned_level_and_scale() {
    let k = kit(11);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let v = k.random(k.params.slots(), true, &mut rng);
    let out = k
        .boot
        .bootstrap(&k.encrypt_at0(&v, &mut rng), &k.keys)
        .unwrap();
    let depth = k.boot.config().depth().unwrap();
    assert_eq!(out.level(), Level(k.params.max_level().0 - depth));
    assert_eq!(out.level(), k.boot.output_level());
    assert_eq!(out.level(), Level(LEFT));
    assert_eq!(out.scale(), k.params.default_scale());
    let (mean, min) = precision(&k.decrypt(&out), &v);
    eprintln!("full slots: {mean:.1} bits mean, {min:.1} bits min");
    assert!(mean > 20.0 && min > 17.0, "{mean} / {min}");
}

#[test]
fn sparse_slots_bootstrap_precisely() {
    let k = kit(7);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let v = k.random(1 << 7, true, &mut rng);
    let out = k
        .boot
        .bootstrap(&k.encrypt_at0(&v, &mut rng), &k.keys)
        .unwrap();
    assert_eq!(out.level(), Level(LEFT));
    let (mean, min) = precision(&k.decrypt(&out), &v);
    eprintln!("128 slots: {mean:.1} bits mean, {min:.1} bits min");
    assert!(mean > 21.0 && min > 19.0, "{mean} / {min}");
}

#[test]
fn real_slots_and_real_pairs() {
    let k = kit(11);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let a = k.random(k.params.slots(), false, &mut rng);
    let b = k.random(k.params.slots(), false, &mut rng);
    let (ca, cb) = (k.encrypt_at0(&a, &mut rng), k.encrypt_at0(&b, &mut rng));
    let out = k.boot.bootstrap_real(&ca, &k.keys).unwrap();
    let got = k.decrypt(&out);
    let max_im = got.iter().map(|z| z.im.abs()).fold(0.0, f64::max);
    let (mean, min) = precision(&got, &a);
    eprintln!("real slots: {mean:.1} bits mean, {min:.1} bits min, max |im| {max_im:e}");
    assert!(mean > 20.0 && min > 17.0, "{mean} / {min}");
    // the imaginary part is down to the CKKS noise of one conjugation at scale 2^35
    assert!(max_im < 2f64.powi(-20), "imaginary part left: {max_im}");
    let (oa, ob) = k.boot.bootstrap_real_pair(&ca, &cb, &k.keys).unwrap();
    for (name, ct, want) in [("pair a", &oa, &a), ("pair b", &ob, &b)] {
        assert_eq!(ct.level(), k.boot.output_level());
        assert_eq!(ct.scale(), k.params.default_scale());
        let (mean, min) = precision(&k.decrypt(ct), want);
        eprintln!("{name}: {mean:.1} bits mean, {min:.1} bits min");
        assert!(mean > 20.0 && min > 17.0, "{name}: {mean} / {min}");
    }
}

#[test]
fn ten_bootstraps_in_a_row_keep_their_precision() {
    let k = kit(7);
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let v = k.random(1 << 7, true, &mut rng);
    let ev = Evaluator::new(&k.params);
    let mut ct = k.encrypt_at0(&v, &mut rng);
    let mut bits = Vec::new();
    for _ in 0..10 {
        ct = k.boot.bootstrap(&ct, &k.keys).unwrap();
        bits.push(precision(&k.decrypt(&ct), &v).1);
        ct = ev.drop_level_to(&ct, Level(0)).unwrap();
    }
    eprintln!("min bits after each of 10 bootstraps: {bits:.1?}");
    // errors add up (at most ~log2(10) = 3.3 bits lost), never blow up
    let last = bits.last().copied().unwrap_or(0.0);
    assert!(last > bits[0] - 4.0 && last > 16.0, "{bits:?}");
}

#[test]
fn missing_or_short_keys_are_named_errors() {
    let k = kit(11);
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let ct = k.encrypt_at0(&k.random(8, true, &mut rng), &mut rng);
    let plan = k.boot.key_plan();
    let (steps, _) = plan.rotations[0];
    let mut keys = k.keys.clone();
    assert!(
        keys.galois
            .remove(GaloisElement::for_rotation(steps, k.params.n()))
    );
    match k.boot.bootstrap(&ct, &keys) {
        Err(CkksError::MissingGaloisKey { steps: s, .. }) => assert_eq!(s, Some(steps)),
        other => panic!("expected MissingGaloisKey, got {other:?}"),
    }
    let mut keys = k.keys.clone();
    assert!(keys.galois.remove(GaloisElement::conjugation(k.params.n())));
    assert!(matches!(
        k.boot.bootstrap(&ct, &keys),
        Err(CkksError::MissingGaloisKey { steps: None, .. })
    ));
    let mut keys = k.keys.clone();
    keys.relin = KeyGenerator::new(&k.params)
        .relin_key_at(&k.sk, Level(1), &mut rng)
        .unwrap();
    assert!(matches!(
        k.boot.bootstrap(&ct, &keys),
        Err(CkksError::KeyLevel { .. })
    ));
}

#[test]
fn keys_survive_serialization() {
    let k = kit(7);
    let bytes = serial::to_bytes(&k.keys);
    assert_eq!(bytes.len(), serial::bootstrap_keys_size(&k.keys));
    let back: BootstrapKeys = serial::from_bytes(&k.params, &bytes).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let v = k.random(1 << 7, true, &mut rng);
    let ct = k.encrypt_at0(&v, &mut rng);
    let a = k.decrypt(&k.boot.bootstrap(&ct, &k.keys).unwrap());
    let b = k.decrypt(&k.boot.bootstrap(&ct, &back).unwrap());
    assert_eq!(a, b, "deserialized keys bootstrap bit for bit alike");
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    assert!(serial::from_bytes::<BootstrapKeys>(&k.params, &bad).is_err());
}

#[test]
fn the_arcsine_correction_removes_the_sine_error_on_large_coefficients() {
    // the same chain with two more EvalMod levels for the correction
    let mut q_bits = vec![45];
    q_bits.extend(std::iter::repeat_n(35, LEFT));
    q_bits.extend(std::iter::repeat_n(45, 3));
    q_bits.extend(std::iter::repeat_n(60, 10));
    q_bits.extend(std::iter::repeat_n(55, 3));
    let params = CkksParams::new(CkksParamsLiteral {
        log_n: 12,
        q_bits,
        p_bits: vec![60; 4],
        log_scale: 35.0,
        dnum: None,
        secret: SecretDistribution::Ternary,
        security: SecurityPolicy::InsecureAllowed {
            reason: "test parameter set TEST_INSECURE_BOOT with arcsine levels (N = 2^12)".into(),
        },
    })
    .unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let sk = KeyGenerator::new(&params).secret_key(&mut rng).unwrap();
    let enc = Encoder::new(&params);
    // all slots 1: the plaintext is the constant polynomial 1 (a coefficient of Delta, the
    // worst case of the sine: relative error (2 pi Delta / q_0)^2 / 6 ~ 2^-17.3)
    let v = vec![Complex::new(1.0, 0.0); params.slots()];
    let pt = enc
        .encode_complex(&v, Level(0), params.default_scale())
        .unwrap();
    let ct = Encryptor::new(&params)
        .encrypt_sk(&pt, &sk, &mut rng)
        .unwrap();
    let mut bits = Vec::new();
    for arcsine in [false, true] {
        let mut cfg = BootstrapConfig::default_for(12);
        cfg.arcsine = arcsine;
        let boot = Bootstrapper::new(&params, cfg, params.default_scale()).unwrap();
        let keys = boot.generate_keys(&sk, &mut rng).unwrap();
        let out = boot.bootstrap(&ct, &keys).unwrap();
        assert_eq!(out.level(), Level(LEFT + if arcsine { 0 } else { 2 }));
        assert_eq!(out.scale(), params.default_scale());
        let got = enc
            .decode_complex(&Decryptor::new(&params).decrypt(&out, &sk).unwrap())
            .unwrap();
        let (mean, min) = precision(&got, &v);
        eprintln!("ones, arcsine {arcsine}: {mean:.1} bits mean, {min:.1} bits min");
        bits.push(min);
    }
    assert!(
        bits[0] < 18.5,
        "without the correction the sine error shows: {bits:?}"
    );
    assert!(bits[1] > 21.0, "with it, it is gone: {bits:?}");
}
