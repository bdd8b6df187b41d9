//! Criterion benchmarks of the ring layer: forward/inverse negacyclic NTT at n = 16384 for
//! a 26-bit and a 35-bit prime (AVX-512 IFMA, else AVX2 + FMA, where available) and a
//! 60-bit prime (portable kernel without AVX-512), the portable kernel on the 35-bit prime
//! for comparison, and modular multiplication throughput over one limb: scalar Barrett /
//! Shoup (`Modulus`) and the slice kernels of `simd` (below 2^50 AVX-512 IFMA, else AVX2 +
//! FMA, where available; portable otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use henn_ring::primes::ntt_primes_near;
use henn_ring::{Modulus, NttTable, simd};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const N: usize = 16384;

fn random_limb(q: u64, rng: &mut ChaCha20Rng) -> Vec<u64> {
    (0..N).map(|_| rng.random_range(0..q)).collect()
}

fn ntt(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for bits in [26u32, 35, 60] {
        let q = ntt_primes_near(bits, N, 1, &[], true).unwrap()[0];
        let table = NttTable::new(N, q).unwrap();
        let backend = format!("{:?}", table.backend()).to_lowercase();
        let mut g = c.benchmark_group(format!("ntt/n={N}/q={bits}bit"));
        g.throughput(Throughput::Elements(N as u64));
        let mut a = random_limb(q, &mut rng);
        g.bench_function(format!("forward_{backend}"), |b| {
            b.iter(|| table.forward(black_box(&mut a)))
        });
        g.bench_function(format!("inverse_{backend}"), |b| {
            b.iter(|| table.inverse(black_box(&mut a)))
        });
        if bits == 35 {
            g.bench_function("forward_portable", |b| {
                b.iter(|| table.forward_portable(black_box(&mut a)))
            });
            g.bench_function("inverse_portable", |b| {
                b.iter(|| table.inverse_portable(black_box(&mut a)))
            });
        }
        g.finish();
    }
}

fn modmul(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    for bits in [26u32, 35, 60] {
        let q = ntt_primes_near(bits, N, 1, &[], true).unwrap()[0];
        let m = Modulus::new(q).unwrap();
        let x = random_limb(q, &mut rng);
        let y = random_limb(q, &mut rng);
        let w = m.shoup(rng.random_range(0..q));
        let mut out = vec![0u64; N];
        let mut g = c.benchmark_group(format!("modmul/n={N}/q={bits}bit"));
        g.throughput(Throughput::Elements(N as u64));
        g.bench_function("barrett_mul", |b| {
            b.iter(|| {
                for ((o, &a), &b) in out.iter_mut().zip(&x).zip(&y) {
                    *o = m.mul(a, b);
                }
                black_box(&mut out);
            })
        });
        g.bench_function("barrett_mul_add_u128", |b| {
            b.iter(|| {
                for ((o, &a), &b) in out.iter_mut().zip(&x).zip(&y) {
                    *o = m.reduce_u128(u128::from(a) * u128::from(b) + u128::from(*o));
                }
                black_box(&mut out);
            })
        });
        g.bench_function("simd_mul_assign", |b| {
            b.iter(|| {
                out.copy_from_slice(&x);
                simd::mul_assign(black_box(&mut out), &y, &m);
            })
        });
        g.bench_function("simd_mul_add_assign", |b| {
            b.iter(|| simd::mul_add_assign(black_box(&mut out), &x, &y, &m))
        });
        g.bench_function("shoup_mul_const", |b| {
            b.iter(|| {
                for (o, &a) in out.iter_mut().zip(&x) {
                    *o = m.mul_shoup(a, w);
                }
                black_box(&mut out);
            })
        });
        g.finish();
    }
}

/// The lazy dot product of the plaintext products of a convolution: 32 terms over one limb,
/// for a prime just below 2^32 (the scale-2^32 chains), 33- and 41-bit ones (the CIFAR CNNs'
/// chains) and a 59-bit one; over whole limbs (memory-bound) and in cache-sized blocks.
fn dot_product(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    const TERMS: usize = 32;
    for (bits, below) in [(32u32, true), (33, true), (41, true), (59, true)] {
        let q = ntt_primes_near(bits, N, 1, &[], below).unwrap()[0];
        let m = Modulus::new(q).unwrap();
        let xs: Vec<Vec<u64>> = (0..TERMS).map(|_| random_limb(q, &mut rng)).collect();
        let ys: Vec<Vec<u64>> = (0..TERMS).map(|_| random_limb(q, &mut rng)).collect();
        let rx: Vec<&[u64]> = xs.iter().map(|v| v.as_slice()).collect();
        let ry: Vec<&[u64]> = ys.iter().map(|v| v.as_slice()).collect();
        let mut acc = vec![0u64; N];
        let side = if below { "below" } else { "above" };
        let mut g = c.benchmark_group(format!("dot_product/n={N}/terms={TERMS}"));
        g.throughput(Throughput::Elements((N * TERMS) as u64));
        g.bench_function(format!("q={bits}bit_{side}"), |b| {
            b.iter(|| simd::dot_product_add_assign(black_box(&mut acc), &rx, &ry, &m))
        });
        // the same work in blocks that stay in the L2 cache: the kernel's own speed
        let bx: Vec<&[u64]> = rx.iter().map(|v| &v[..512]).collect();
        let by: Vec<&[u64]> = ry.iter().map(|v| &v[..512]).collect();
        g.bench_function(format!("q={bits}bit_{side}_cached"), |b| {
            b.iter(|| {
                for _ in 0..N / 512 {
                    simd::dot_product_add_assign(black_box(&mut acc[..512]), &bx, &by, &m)
                }
            })
        });
        g.finish();
    }
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
    targets = ntt, modmul, dot_product
}
criterion_main!(benches);
