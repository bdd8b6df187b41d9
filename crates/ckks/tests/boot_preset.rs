//! One bootstrap at the secure `boot` preset (N = 2^16, 128-bit, uniform ternary secret, no
//! opt-in), with 1024 slots to keep the key set small in CI (the full-slot figures are
//! measured by `henn bench ckks --preset boot`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failure should abort the test"
)]

use henn_ckks::bootstrap::{BootstrapConfig, Bootstrapper};
use henn_ckks::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::ops::Sub;

#[test]
fn the_secure_boot_preset_bootstraps_with_nine_levels_left() {
    let lit = CkksParamsLiteral::boot();
    assert_eq!(lit.security, SecurityPolicy::Enforce { bits: 128 });
    assert_eq!(lit.secret, SecretDistribution::Ternary);
    let params = CkksParams::new(lit).unwrap();
    let mut cfg = BootstrapConfig::boot();
    cfg.log_slots = 10;
    let boot = Bootstrapper::new(&params, cfg, params.default_scale()).unwrap();
    assert_eq!(boot.output_level(), Level(9));
    let mut rng = ChaCha20Rng::from_os_rng();
    let sk = KeyGenerator::new(&params).secret_key(&mut rng).unwrap();
    let keys = boot.generate_keys(&sk, &mut rng).unwrap();
    let enc = Encoder::new(&params);
    let n = 1 << 10;
    let base: Vec<Complex> = (0..n)
        .map(|_| Complex::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)))
        .collect();
    let v: Vec<Complex> = (0..params.slots()).map(|j| base[j % n]).collect();
    let pt = enc
        .encode_complex(&v, Level(0), params.default_scale())
        .unwrap();
    let ct = Encryptor::new(&params)
        .encrypt_sk(&pt, &sk, &mut rng)
        .unwrap();
    let out = boot.bootstrap(&ct, &keys).unwrap();
    assert_eq!(out.level(), Level(9));
    assert_eq!(out.scale(), Scale::from_log2(35.0));
    let got = enc
        .decode_complex(&Decryptor::new(&params).decrypt(&out, &sk).unwrap())
        .unwrap();
    let max = got
        .iter()
        .zip(&v)
        .map(|(a, b)| a.sub(*b).abs())
        .fold(0.0, f64::max);
    eprintln!("boot preset, 1024 slots: {:.1} bits min", -max.log2());
    assert!(max < 2f64.powi(-17), "max error 2^{:.1}", max.log2());
}
