//! Criterion benchmarks of the CKKS core operations on the `resnet` and `small` presets
//! (and of a bootstrap at the `boot` preset when `bootstrap` is in the filter),
//! named `op/logN=../L=../dnum=..` (the same operations as `henn bench ckks`).
//!
//! Sample sizes are small so that `cargo bench -p henn-ckks` finishes in a few minutes;
//! use `henn bench ckks` for the numbers recorded in docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use henn_ckks::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn bench_preset(c: &mut Criterion, lit: CkksParamsLiteral) {
    let params = CkksParams::new(lit).expect("preset parameters");
    let tag = format!(
        "logN={}/L={}/dnum={}",
        params.n().trailing_zeros(),
        params.max_level().get(),
        params.dnum()
    );
    let level = params.max_level();
    let scale = params.default_scale();
    let mut rng = ChaCha20Rng::seed_from_u64(0x6865_6e6e);
    let kg = KeyGenerator::new(&params);
    let sk = kg.secret_key(&mut rng).unwrap();
    let pk = kg.public_key(&sk, &mut rng).unwrap();
    let rlk = kg.relin_key(&sk, &mut rng).unwrap();
    let steps: Vec<i64> = (1..=9).collect();
    let gk = kg.galois_keys(&sk, &steps, false, &mut rng).unwrap();
    let enc = Encoder::new(&params);
    let encryptor = Encryptor::new(&params);
    let dec = Decryptor::new(&params);
    let ev = Evaluator::new(&params);
    let v1: Vec<f64> = (0..params.slots())
        .map(|_| rng.random_range(-1.0..=1.0))
        .collect();
    let v2: Vec<f64> = (0..params.slots())
        .map(|_| rng.random_range(-1.0..=1.0))
        .collect();
    let pt1 = enc.encode(&v1, level, scale).unwrap();
    let pt2 = enc.encode(&v2, level, scale).unwrap();
    let ct1 = encryptor.encrypt_pk(&pt1, &pk, &mut rng).unwrap();
    let ct2 = encryptor.encrypt_pk(&pt2, &pk, &mut rng).unwrap();
    let prod = ev.mul_relin(&ct1, &ct2, &rlk).unwrap();
    let const_scale = ev.rescale_neutral_scale(&ct1).unwrap();

    c.bench_function(&format!("encode/{tag}"), |b| {
        b.iter(|| enc.encode(black_box(&v1), level, scale).unwrap())
    });
    c.bench_function(&format!("encrypt/{tag}"), |b| {
        b.iter(|| encryptor.encrypt_pk(&pt1, &pk, &mut rng).unwrap())
    });
    c.bench_function(&format!("decrypt/{tag}"), |b| {
        b.iter(|| {
            enc.decode(&dec.decrypt(black_box(&ct1), &sk).unwrap())
                .unwrap()
        })
    });
    c.bench_function(&format!("add/{tag}"), |b| {
        b.iter(|| ev.add(black_box(&ct1), &ct2).unwrap())
    });
    c.bench_function(&format!("mul_plain/{tag}"), |b| {
        b.iter(|| ev.mul_plain(black_box(&ct1), &pt2).unwrap())
    });
    c.bench_function(&format!("mul_const/{tag}"), |b| {
        b.iter(|| ev.mul_const(black_box(&ct1), 0.7, const_scale).unwrap())
    });
    c.bench_function(&format!("mul_relin/{tag}"), |b| {
        b.iter(|| ev.mul_relin(black_box(&ct1), &ct2, &rlk).unwrap())
    });
    c.bench_function(&format!("square_relin/{tag}"), |b| {
        b.iter(|| ev.square_relin(black_box(&ct1), &rlk).unwrap())
    });
    c.bench_function(&format!("rescale/{tag}"), |b| {
        b.iter_batched(
            || prod.clone(),
            |mut x| ev.rescale_assign(&mut x).map(|()| x).unwrap(),
            BatchSize::LargeInput,
        )
    });
    c.bench_function(&format!("rotate/{tag}"), |b| {
        b.iter(|| ev.rotate(black_box(&ct1), 1, &gk).unwrap())
    });
    c.bench_function(&format!("rotate_hoisted_x9/{tag}"), |b| {
        b.iter(|| ev.rotate_hoisted(black_box(&ct1), &steps, &gk).unwrap())
    });
    for (name, idx) in [("ntt", 1usize), ("ntt_q0", 0)] {
        let table = params.ring().ntt_table(idx).unwrap();
        let q = table.modulus().value();
        let mut buf: Vec<u64> = (0..params.n()).map(|_| rng.random_range(0..q)).collect();
        c.bench_function(&format!("{name}/{tag}"), |b| {
            b.iter(|| table.forward(black_box(&mut buf)))
        });
    }
}

fn resnet(c: &mut Criterion) {
    bench_preset(c, CkksParamsLiteral::resnet());
}

fn small(c: &mut Criterion) {
    bench_preset(c, CkksParamsLiteral::small());
}

/// One full-slot bootstrap at the `boot` preset (N = 2^16; about 10 GiB and a minute of
/// set-up): `cargo bench -p henn-ckks -- bootstrap`.
fn bootstrap(c: &mut Criterion) {
    use henn_ckks::bootstrap::{BootstrapConfig, Bootstrapper};
    // the set-up is expensive: only when this benchmark is selected
    if !std::env::args().any(|a| a.contains("bootstrap")) {
        return;
    }
    let params = CkksParams::new(CkksParamsLiteral::boot()).expect("boot preset");
    let boot = Bootstrapper::new(&params, BootstrapConfig::boot(), params.default_scale())
        .expect("bootstrapper");
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let sk = KeyGenerator::new(&params).secret_key(&mut rng).unwrap();
    let keys = boot.generate_keys(&sk, &mut rng).unwrap();
    let v: Vec<f64> = (0..params.slots())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let pt = Encoder::new(&params)
        .encode(&v, Level(0), params.default_scale())
        .unwrap();
    let ct = Encryptor::new(&params)
        .encrypt_sk(&pt, &sk, &mut rng)
        .unwrap();
    let mut g = c.benchmark_group("bootstrap");
    g.sample_size(10).measurement_time(Duration::from_secs(60));
    g.bench_function("boot/logN=16/slots=32768", |b| {
        b.iter(|| black_box(boot.bootstrap(black_box(&ct), &keys).unwrap()));
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = small, resnet, bootstrap
}
criterion_main!(benches);
