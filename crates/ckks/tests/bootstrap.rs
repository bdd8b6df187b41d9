//! Bootstrapping precision on small insecure rings (TEST_INSECURE_BOOT: N = 2^12, the
//! `boot` preset's chain shape).

use std::sync::Arc;

use henn_ckks::bootstrap::{BootstrapConfig, BootstrapKeys, Bootstrapper};
use henn_ckks::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn params(log_n: u32, left: usize) -> Arc<CkksParams> {
    let mut q_bits = vec![env("Q0", 45)];
    q_bits.extend(std::iter::repeat_n(35, left));
    q_bits.extend(std::iter::repeat_n(env("STC", 45), 3));
    q_bits.extend(std::iter::repeat_n(env("EM", 60), env("EML", 8) as usize));
    q_bits.extend(std::iter::repeat_n(env("CTS", 55), 3));
    CkksParams::new(CkksParamsLiteral {
        log_n,
        q_bits,
        p_bits: vec![60; 4],
        log_scale: 35.0,
        dnum: None,
        secret: SecretDistribution::Ternary,
        security: SecurityPolicy::InsecureAllowed {
            reason: format!("test parameter set TEST_INSECURE_BOOT (N = 2^{log_n})"),
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
    rng: ChaCha20Rng,
}

fn kit(log_n: u32, log_slots: u32) -> Kit {
    let params = params(log_n, 2);
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let kg = KeyGenerator::new(&params);
    let sk = kg.secret_key(&mut rng).unwrap();
    let mut cfg = BootstrapConfig::default_for(log_n);
    cfg.log_slots = log_slots;
    cfg.log_eval_mod_scale = f64::from(env("EM", 60));
    cfg.double_angle = env("R", 2);
    cfg.sine_degree = env("DEG", 56) as usize;
    let boot = Bootstrapper::new(&params, cfg, params.default_scale()).unwrap();
    let keys = boot.generate_keys(&sk, &mut rng).unwrap();
    Kit {
        enc: Encoder::new(&params),
        params,
        sk,
        boot,
        keys,
        rng,
    }
}

/// (mean, min) bits of precision: -log2 of the mean and of the max absolute error.
fn precision(got: &[Complex], want: &[Complex]) -> (f64, f64) {
    let errs: Vec<f64> = got.iter().zip(want).map(|(a, b)| a.sub(*b).abs()).collect();
    let mean = errs.iter().sum::<f64>() / errs.len() as f64;
    if std::env::var("DEBUG").is_ok() {
        let mut idx: Vec<usize> = (0..errs.len()).collect();
        idx.sort_by(|&a, &b| errs[b].partial_cmp(&errs[a]).unwrap());
        for &i in idx.iter().take(6) {
            eprintln!("slot {i}: err 2^{:.1} want {:?} got {:?}", errs[i].log2(), want[i], got[i]);
        }
        let big = errs.iter().filter(|&&e| e > 2f64.powi(-18)).count();
        eprintln!("{big} slots above 2^-18");
    }
    let max = errs.iter().copied().fold(0.0, f64::max);
    (-mean.log2(), -max.log2())
}

impl Kit {
    fn encrypt_at0(&mut self, v: &[Complex]) -> Ciphertext {
        let pt = self
            .enc
            .encode_complex(v, Level(0), self.params.default_scale())
            .unwrap();
        Encryptor::new(&self.params)
            .encrypt_sk(&pt, &self.sk, &mut self.rng)
            .unwrap()
    }
    fn decrypt(&self, ct: &Ciphertext) -> Vec<Complex> {
        let pt = Decryptor::new(&self.params).decrypt(ct, &self.sk).unwrap();
        self.enc.decode_complex(&pt).unwrap()
    }
    fn random(&mut self, n: usize, complex: bool) -> Vec<Complex> {
        let slots = self.params.slots();
        let base: Vec<Complex> = (0..n)
            .map(|_| {
                Complex::new(
                    self.rng.random_range(-1.0..1.0),
                    if complex { self.rng.random_range(-1.0..1.0) } else { 0.0 },
                )
            })
            .collect();
        (0..slots).map(|j| base[j % n]).collect()
    }
}

#[test]
fn full_slots_bootstrap_precisely() {
    let mut k = kit(12, 11);
    let v = k.random(k.params.slots(), true);
    let ct = k.encrypt_at0(&v);
    let out = k.boot.bootstrap(&ct, &k.keys).unwrap();
    assert_eq!(out.level(), k.boot.output_level());
    assert_eq!(out.level(), Level(2));
    assert_eq!(out.scale(), k.params.default_scale());
    let (mean, min) = precision(&k.decrypt(&out), &v);
    eprintln!("full slots: {mean:.1} bits mean, {min:.1} bits min");
    assert!(min > 18.0, "{min}");
}

#[test]
fn sparse_slots_bootstrap_precisely() {
    let mut k = kit(12, 7);
    let v = k.random(1 << 7, true);
    let ct = k.encrypt_at0(&v);
    let out = k.boot.bootstrap(&ct, &k.keys).unwrap();
    let (mean, min) = precision(&k.decrypt(&out), &v);
    eprintln!("128 slots: {mean:.1} bits mean, {min:.1} bits min");
    assert!(min > 18.0, "{min}");
}

#[test]
#[ignore = "diagnostics"]
fn diag_inputs() {
    let mut k = kit(12, 11);
    let slots = k.params.slots();
    for kind in ["zero", "real", "const", "random"] {
        let v: Vec<Complex> = match kind {
            "zero" => vec![Complex::default(); slots],
            "real" => k.random(slots, false),
            "const" => vec![Complex::new(0.5, 0.0); slots],
            _ => k.random(slots, true),
        };
        let ct = k.encrypt_at0(&v);
        let out = k.boot.bootstrap(&ct, &k.keys).unwrap();
        let (mean, min) = precision(&k.decrypt(&out), &v);
        eprintln!("{kind}: {mean:.1} bits mean, {min:.1} bits min");
    }
}
