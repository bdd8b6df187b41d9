//! Bootstraps once at the secure `boot` preset (N = 2^16) and prints time, precision and
//! memory: `cargo run --release -p henn-ckks --example boot_preset [log_slots]`.
#![allow(clippy::print_stdout, reason = "an example prints its figures")]

use std::ops::Sub;
use std::time::Instant;

use henn_ckks::bootstrap::{BootstrapConfig, Bootstrapper};
use henn_ckks::prelude::*;
use rand::{Rng, SeedableRng};

fn rss_gib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / (1024.0 * 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let params = CkksParams::new(CkksParamsLiteral::boot())?;
    let mut cfg = BootstrapConfig::boot();
    if let Some(ls) = std::env::args().nth(1) {
        cfg.log_slots = ls.parse()?;
    }
    if std::env::var("SINGLE_HOISTING").is_ok() {
        cfg.double_hoisting = false;
    }
    let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
    let t = Instant::now();
    let boot = Bootstrapper::new(&params, cfg, params.default_scale())?;
    println!(
        "transforms: {:.1} s, {:.2} GiB",
        t.elapsed().as_secs_f64(),
        boot.memory_bytes() as f64 / (1u64 << 30) as f64
    );
    let kg = KeyGenerator::new(&params);
    let sk = kg.secret_key(&mut rng)?;
    let t = Instant::now();
    let keys = boot.generate_keys(&sk, &mut rng)?;
    println!(
        "keys: {:.1} s, {:.2} GiB in memory, {} Galois keys, serialized {:.2} GiB, rss {:.2} GiB",
        t.elapsed().as_secs_f64(),
        keys.memory_bytes() as f64 / (1u64 << 30) as f64,
        keys.galois.len(),
        henn_ckks::serial::bootstrap_keys_size(&keys) as f64 / (1u64 << 30) as f64,
        rss_gib()
    );
    let enc = Encoder::new(&params);
    let n = 1usize << boot.config().log_slots;
    let base: Vec<Complex> = (0..n)
        .map(|_| Complex::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)))
        .collect();
    let v: Vec<Complex> = (0..params.slots()).map(|j| base[j % n]).collect();
    let pt = enc.encode_complex(&v, Level(0), params.default_scale())?;
    let ct = Encryptor::new(&params).encrypt_sk(&pt, &sk, &mut rng)?;
    for _ in 0..2 {
        let t = Instant::now();
        let (out, times) = boot.bootstrap_timed(&ct, &keys)?;
        println!("  {times:?}");
        let el = t.elapsed().as_secs_f64();
        let got = enc.decode_complex(&Decryptor::new(&params).decrypt(&out, &sk)?)?;
        let errs: Vec<f64> = got.iter().zip(&v).map(|(a, b)| a.sub(*b).abs()).collect();
        let mean = errs.iter().sum::<f64>() / errs.len() as f64;
        let max = errs.iter().copied().fold(0.0, f64::max);
        if std::env::var("DEBUG").is_ok() {
            let mut idx: Vec<usize> = (0..errs.len()).collect();
            idx.sort_by(|&a, &b| errs[b].total_cmp(&errs[a]));
            for &i in idx.iter().take(8) {
                println!("  slot {i}: error 2^{:.1}", errs[i].log2());
            }
        }
        println!(
            "bootstrap: {el:.2} s, {:.1} bits mean, {:.1} bits min, level {} scale 2^{:.2}, rss {:.2} GiB",
            -mean.log2(),
            -max.log2(),
            out.level(),
            out.scale().log2(),
            rss_gib()
        );
    }
    Ok(())
}
