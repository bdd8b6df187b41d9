//! Correctness tests of henn-ring against naive references.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should abort the test"
)]
#![allow(
    clippy::needless_range_loop,
    clippy::type_complexity,
    reason = "naive reference loops read clearest with indices"
)]

use std::sync::Arc;

use henn_ring::ntt::bit_reverse;
use henn_ring::primes::{is_ntt_friendly, is_prime, ntt_primes_near};
use henn_ring::sample;
use henn_ring::{
    AutomorphismPermutation, BasisConverter, Coeff, ModDown, Modulus, Ntt, NttBackend, NttTable,
    Poly, RingContext,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Schoolbook negacyclic product modulo q.
fn negacyclic_schoolbook(a: &[u64], b: &[u64], q: u64) -> Vec<u64> {
    let n = a.len();
    let mut out = vec![0u128; n];
    let qq = u128::from(q);
    for i in 0..n {
        for j in 0..n {
            let p = u128::from(a[i]) * u128::from(b[j]) % qq;
            let k = i + j;
            if k < n {
                out[k] = (out[k] + p) % qq;
            } else {
                out[k - n] = (out[k - n] + qq - p) % qq;
            }
        }
    }
    out.into_iter().map(|x| x as u64).collect()
}

#[test]
fn primes_are_ntt_friendly_and_near_target() {
    for (bits, n) in [
        (35u32, 1usize << 14),
        (40, 1 << 13),
        (60, 1 << 14),
        (50, 1 << 16),
        (61, 1 << 15),
    ] {
        let ps = ntt_primes_near(bits, n, 5, &[], false).unwrap();
        assert_eq!(ps.len(), 5);
        for &p in &ps {
            assert!(is_ntt_friendly(p, n), "{p}");
            let dist = (p as f64).log2() - f64::from(bits);
            assert!(dist.abs() < 0.01, "prime {p} too far from 2^{bits}");
        }
        let below = ntt_primes_near(bits, n, 3, &ps, true).unwrap();
        for &p in &below {
            assert!(p < 1 << bits && !ps.contains(&p));
        }
    }
    assert!(is_prime(2305843009213693951)); // 2^61 - 1
    assert!(!is_prime(2305843009213693953));
    assert!(!is_prime(3215031751)); // strong pseudoprime to bases 2,3,5,7
}

#[test]
fn ntt_matches_schoolbook_negacyclic_product() {
    let mut r = rng(1);
    for &(n, bits) in &[
        (16usize, 30u32),
        (64, 35),
        (256, 50),
        (256, 60),
        (1024, 45),
        (1024, 61),
    ] {
        for backend in [NttBackend::Portable, NttBackend::Ifma] {
            let q = ntt_primes_near(bits, n, 1, &[], true).unwrap()[0];
            let t = NttTable::with_backend(n, q, Some(backend)).unwrap();
            let a: Vec<u64> = (0..n).map(|_| r.random_range(0..q)).collect();
            let b: Vec<u64> = (0..n).map(|_| r.random_range(0..q)).collect();
            let expected = negacyclic_schoolbook(&a, &b, q);
            let (mut fa, mut fb) = (a.clone(), b.clone());
            t.forward(&mut fa);
            t.forward(&mut fb);
            let m = Modulus::new(q).unwrap();
            let mut c: Vec<u64> = fa.iter().zip(&fb).map(|(&x, &y)| m.mul(x, y)).collect();
            t.inverse(&mut c);
            assert_eq!(
                c,
                expected,
                "n={n} q={q} backend {backend:?} ({:?} used)",
                t.backend()
            );
            // Evaluation convention: A[i] = a(psi^(2 brv(i) + 1)).
            let psi = t.psi();
            for i in [0usize, 1, n / 2, n - 1] {
                let x = m.pow(psi, 2 * bit_reverse(i, n.trailing_zeros()) as u64 + 1);
                let mut acc = 0u64;
                for &coef in a.iter().rev() {
                    acc = m.add(m.mul(acc, x), coef);
                }
                assert_eq!(fa[i], acc);
            }
        }
    }
}

#[test]
fn ifma_equals_portable_bit_for_bit() {
    let mut r = rng(2);
    for &n in &[16usize, 1024, 4096, 16384, 65536] {
        for bits in [28u32, 35, 40, 49, 51, 55, 60, 61] {
            let q = ntt_primes_near(bits, n, 1, &[], true).unwrap()[0];
            let t = NttTable::new(n, q).unwrap();
            if t.backend() == NttBackend::Portable {
                // portable only on this CPU, the comparison below is then trivial: a note,
                // or a failure under HENN_REQUIRE_AVX512=1
                let _ =
                    henn_ring::simd::simd_test_can_run(false, &format!("an AVX-512 NTT for q={q}"));
            }
            let a: Vec<u64> = (0..n).map(|_| r.random_range(0..q)).collect();
            let (mut x, mut y) = (a.clone(), a.clone());
            t.forward(&mut x);
            t.forward_portable(&mut y);
            assert_eq!(x, y, "forward n={n} q={q}");
            t.inverse(&mut x);
            t.inverse_portable(&mut y);
            assert_eq!(x, y, "inverse n={n} q={q}");
            assert_eq!(x, a);
            let mut edge = vec![q - 1; n];
            let mut edge2 = edge.clone();
            t.forward(&mut edge);
            t.forward_portable(&mut edge2);
            assert_eq!(edge, edge2);
        }
    }
}

fn ctx(n: usize, bits: &[u32]) -> Arc<RingContext> {
    let mut primes = Vec::new();
    for &b in bits {
        let p = ntt_primes_near(b, n, 1, &primes, true).unwrap()[0];
        primes.push(p);
    }
    RingContext::new(n, &primes).unwrap()
}

#[test]
fn automorphism_coeff_and_ntt_agree() {
    let n = 256;
    let c = ctx(n, &[50, 40, 60]);
    let limbs = [0, 1, 2];
    let mut r = rng(3);
    let coeffs: Vec<i64> = (0..n).map(|_| r.random_range(-1000..1000)).collect();
    let p = Poly::<Coeff>::from_signed(&c, &limbs, &coeffs).unwrap();
    for g in [5u64, 25, 3, 2 * n as u64 - 1, 125 % (2 * n as u64)] {
        let a = p.automorphism(g).unwrap().ntt();
        let perm = AutomorphismPermutation::new(n, g).unwrap();
        let b = p.clone().ntt().automorphism(&perm).unwrap();
        assert_eq!(a, b, "galois {g}");
    }
    assert!(p.automorphism(4).is_err());
}

#[test]
fn rescale_divides_and_rounds() {
    let n = 64;
    let c = ctx(n, &[50, 40, 45]);
    let limbs = [0, 1, 2];
    let q_last = c.modulus(2).unwrap().value() as i128;
    let mut r = rng(4);
    let coeffs: Vec<i128> = (0..n)
        .map(|_| r.random_range(-(1i128 << 80)..(1i128 << 80)))
        .collect();
    let mut p = Poly::<Coeff>::from_signed_i128(&c, &limbs, &coeffs)
        .unwrap()
        .ntt();
    p.divide_round_by_last_assign().unwrap();
    let p = p.intt();
    assert_eq!(p.limbs(), &[0, 1]);
    for (k, &x) in coeffs.iter().enumerate() {
        let expected = (x as f64 / q_last as f64).round() as i128;
        for (m, limb) in p.iter_limbs() {
            let got = m.center(limb[k]) as i128;
            let want = m.center(m.reduce_i128(expected)) as i128;
            assert!((got - want).abs() <= 1, "coefficient {k}: {got} vs {want}");
        }
    }
}

#[test]
fn basis_conversion_is_exact_up_to_multiple_of_q() {
    let n = 64;
    let c = ctx(n, &[40, 41, 42, 50, 55]);
    let from = [0, 1, 2];
    let to = [3, 4];
    let qprod: i128 = from
        .iter()
        .map(|&i| c.modulus(i).unwrap().value() as i128)
        .product();
    let mut r = rng(5);
    let coeffs: Vec<i128> = (0..n).map(|_| r.random_range(0..qprod)).collect();
    let x = Poly::<Coeff>::from_signed_i128(&c, &from, &coeffs).unwrap();
    let conv = BasisConverter::new(&c, &from, &to).unwrap();
    let y = conv.convert(&x).unwrap();
    for (k, &v) in coeffs.iter().enumerate() {
        for (m, limb) in y.iter_limbs() {
            let ok = (0..from.len() as i128).any(|u| m.reduce_i128(v + u * qprod) == limb[k]);
            assert!(ok, "coefficient {k}");
        }
    }
}

#[test]
fn centred_conversion_is_exact_up_to_a_small_centred_multiple() {
    let n = 256;
    // a 40-bit target (IFMA path) and a 61-bit one (portable path)
    let c = ctx(n, &[40, 41, 42, 45, 61]);
    let from = [0, 1, 2];
    let to = [3, 4];
    let qprod: i128 = from
        .iter()
        .map(|&i| c.modulus(i).unwrap().value() as i128)
        .product();
    let mut r = rng(7);
    let coeffs: Vec<i128> = (0..n)
        .map(|_| r.random_range(-qprod / 2..qprod / 2))
        .collect();
    let x = Poly::<Coeff>::from_signed_i128(&c, &from, &coeffs).unwrap();
    let y = BasisConverter::new(&c, &from, &to)
        .unwrap()
        .convert_centered(&x)
        .unwrap();
    let mut sum_u = 0i128;
    for (k, &v) in coeffs.iter().enumerate() {
        // y = v + u Q with |u| <= |from| / 2 (v centred)
        let us: Vec<i128> = (-2..=2)
            .filter(|&u| {
                y.iter_limbs()
                    .all(|(m, limb)| m.reduce_i128(v + u * qprod) == limb[k])
            })
            .collect();
        assert_eq!(us.len(), 1, "coefficient {k}: {us:?}");
        sum_u += us[0];
    }
    // the plain conversion's u lies in [0, 3) with mean ~1; the centred one's mean is ~0
    assert!(
        (sum_u as f64 / n as f64).abs() < 0.3,
        "mean u {}",
        sum_u as f64 / n as f64
    );
}

#[test]
fn one_prime_conversion_is_the_centred_value() {
    // from one prime (a key switch's digit, one special prime): exactly the centred
    // representative modulo each target (u = 0), plain or centred; targets below and above
    // 2^50 (the double-precision path and Barrett), sources of 33 to 61 bits; the edge values
    // 0, q/2, q/2 + 1, q - 1 and a length that is not a multiple of four
    for src_bits in [33u32, 49, 61] {
        let n = 4096;
        let c = ctx(n, &[src_bits, 33, 41, 50, 60]);
        let q = c.modulus(0).unwrap().value();
        let p33 = c.modulus(1).unwrap().value() as i128;
        let mut r = rng(70 + u64::from(src_bits));
        // random values, and centred values within one of a multiple of the 33-bit target
        // (where a floor quotient in doubles may be off by one either way)
        let mut vals: Vec<u64> = (0..n)
            .map(|k| {
                if k % 2 == 0 {
                    r.random_range(0..q)
                } else {
                    let most = (q as i128 / 2 / p33).max(1);
                    let v = r.random_range(-most..=most) * p33 + r.random_range(-1..=1);
                    v.rem_euclid(q as i128) as u64
                }
            })
            .collect();
        vals[..4].copy_from_slice(&[0, q / 2, q / 2 + 1, q - 1]);
        let coeffs: Vec<i128> = vals.iter().map(|&v| v as i128).collect();
        let x = Poly::<Coeff>::from_signed_i128(&c, &[0], &coeffs).unwrap();
        let conv = BasisConverter::new(&c, &[0], &[1, 2, 3, 4]).unwrap();
        let centred = conv.convert_centered(&x).unwrap();
        let plain = conv.convert(&x).unwrap();
        for (k, &v) in vals.iter().enumerate() {
            let cv = if v > q / 2 {
                v as i128 - q as i128
            } else {
                v as i128
            };
            for ((m, a), (_, b)) in centred.iter_limbs().zip(plain.iter_limbs()) {
                assert_eq!(a[k], m.reduce_i128(cv), "q {q} p {} k {k}", m.value());
                assert_eq!(b[k], m.reduce_i128(v as i128));
            }
        }
        // and the slice kernel on a length with a tail
        let m = c.modulus(2).unwrap();
        let mut dst = vec![0; 7];
        henn_ring::simd::reduce_centered_into(&mut dst, &vals[..7], q, m);
        for (d, &v) in dst.iter().zip(&vals) {
            let cv = if v > q / 2 {
                v as i128 - q as i128
            } else {
                v as i128
            };
            assert_eq!(*d, m.reduce_i128(cv));
        }
    }
}

#[test]
fn mod_down_divides_by_p() {
    let n = 64;
    let c = ctx(n, &[50, 45, 60, 61]);
    let q = [0, 1];
    let p = [2, 3];
    let pprod = c.modulus(2).unwrap().value() as f64 * c.modulus(3).unwrap().value() as f64;
    let mut r = rng(6);
    // x = P * small + noise with |x| well below Q*P
    let small: Vec<i64> = (0..n).map(|_| r.random_range(-1000..1000)).collect();
    let mut all = Poly::<Coeff>::from_signed(&c, &[0, 1, 2, 3], &small).unwrap();
    let pq: Vec<u64> = [0usize, 1, 2, 3]
        .iter()
        .map(|&i| {
            let m = c.modulus(i).unwrap();
            m.mul(c.modulus(2).unwrap().value(), c.modulus(3).unwrap().value())
        })
        .collect();
    all.mul_scalar_assign(&pq).unwrap();
    let md = ModDown::new(&c, &q, &p).unwrap();
    let out = md.apply(all.ntt()).unwrap().intt();
    for (m, limb) in out.iter_limbs() {
        for (k, &s) in small.iter().enumerate() {
            let d = (m.center(limb[k]) - s).abs();
            assert!(d <= 2, "coefficient {k} off by {d} (P = {pprod:e})");
        }
    }
}

#[test]
fn poly_ops_check_basis_and_thread_count_independence() {
    let n = 1024;
    let c = ctx(n, &[50, 40, 40, 40]);
    let mut r = rng(7);
    let a = sample::uniform_ntt(&c, &[0, 1, 2, 3], &mut r).unwrap();
    let b = sample::uniform_ntt(&c, &[0, 1, 2, 3], &mut r).unwrap();
    let c3 = sample::uniform_ntt(&c, &[0, 1, 2], &mut r).unwrap();
    assert!(a.mul(&c3).is_err());
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let f = |a: &Poly<Ntt>, b: &Poly<Ntt>| {
        let mut x = a.mul(b).unwrap();
        x.add_assign(a).unwrap();
        x.divide_round_by_last_assign().unwrap();
        x.intt()
    };
    assert_eq!(one.install(|| f(&a, &b)), two.install(|| f(&a, &b)));
}

#[test]
fn samplers_have_the_right_distribution() {
    let mut r = rng(8);
    let n = 1 << 16;
    let t = sample::ternary(n, &mut r);
    let zeros = t.iter().filter(|&&x| x == 0).count() as f64 / n as f64;
    assert!((zeros - 1.0 / 3.0).abs() < 0.01);
    assert!(t.iter().all(|&x| (-1..=1).contains(&x)));
    let s = sample::sparse_ternary(n, 192, &mut r).unwrap();
    assert_eq!(s.iter().filter(|&&x| x != 0).count(), 192);
    let g = sample::gaussian(n, 3.2, &mut r);
    let mean = g.iter().sum::<i64>() as f64 / n as f64;
    let var = g.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
    assert!(mean.abs() < 0.1, "mean {mean}");
    assert!((var.sqrt() - 3.2).abs() < 0.1, "sigma {}", var.sqrt());
    assert!(g.iter().all(|&x| x.abs() <= 19));
}

proptest! {
    #[test]
    fn modular_laws(a in any::<u64>(), b in any::<u64>(), c in any::<u64>(), bits in 2u32..=61) {
        let q = ntt_primes_near(bits.max(20), 16, 1, &[], true).unwrap()[0];
        let m = Modulus::new(q).unwrap();
        let (a, b, c) = (m.reduce(a), m.reduce(b), m.reduce(c));
        let qq = u128::from(q);
        prop_assert_eq!(u128::from(m.mul(a, b)), u128::from(a) * u128::from(b) % qq);
        prop_assert_eq!(m.mul(a, m.add(b, c)), m.add(m.mul(a, b), m.mul(a, c)));
        prop_assert_eq!(m.sub(m.add(a, b), b), a);
        prop_assert_eq!(m.add(a, m.neg(a)), 0);
        let w = m.shoup(b);
        prop_assert_eq!(m.mul_shoup(a, w), m.mul(a, b));
        prop_assert!(m.mul_shoup_lazy(u64::MAX, w) < 2 * q);
        if a != 0 {
            prop_assert_eq!(m.mul(a, m.inv(a).unwrap()), 1);
        }
        prop_assert_eq!(m.pow(a, q - 1), u64::from(a != 0));
    }

    #[test]
    fn barrett_reduces_any_u128(x in any::<u128>(), q in 2u64..(1u64 << 61)) {
        let m = Modulus::new(q).unwrap();
        prop_assert_eq!(u128::from(m.reduce_u128(x)), x % u128::from(q));
        prop_assert_eq!(m.reduce(x as u64), (x as u64) % q);
        prop_assert_eq!(m.reduce_i64(x as i64), (x as i64).rem_euclid(q as i64) as u64);
    }
}

#[test]
fn simd_kernels_equal_portable() {
    // every dispatch (IFMA, AVX2 + FMA doubles below 2^50, AVX-512 / AVX2 additions, scalar)
    // against the scalar code, with the extreme inputs: q - 1 and 0 in places, and q - 1
    // everywhere (the largest products)
    use henn_ring::simd;
    let mut r = rng(9);
    for bits in [17u32, 20, 26, 30, 35, 40, 49, 50, 55, 60, 61] {
        let q = ntt_primes_near(bits, 16, 1, &[], true).unwrap()[0];
        let m = Modulus::new(q).unwrap();
        for (len, all_max) in [
            (0usize, false),
            (5, false),
            (64, false),
            (1000, false),
            (7, true),
            (64, true),
        ] {
            let rand_or_max = |r: &mut ChaCha20Rng| -> Vec<u64> {
                (0..len)
                    .map(|_| if all_max { q - 1 } else { r.random_range(0..q) })
                    .collect()
            };
            let mut a = rand_or_max(&mut r);
            let b = rand_or_max(&mut r);
            let c = rand_or_max(&mut r);
            if len > 3 && !all_max {
                a[0] = q - 1;
                a[1] = 0;
                a[2] = q - 1;
            }
            let w = m.shoup(if all_max { q - 1 } else { r.random_range(0..q) });
            let mut x = a.clone();
            simd::sub_mul_shoup_assign(&mut x, &b, w, &m);
            assert!(
                x.iter()
                    .zip(a.iter().zip(&b))
                    .all(|(&s, (&u, &v))| s == m.mul(m.sub(u, v), w.value)),
                "sub_mul_shoup q={q}"
            );
            let (mut x, mut y) = (a.clone(), a.clone());
            simd::mul_assign(&mut x, &b, &m);
            simd::portable::mul_assign(&mut y, &b, &m);
            assert_eq!(x, y, "mul q={q}");
            let (mut x, mut y) = (c.clone(), c.clone());
            simd::mul_add_assign(&mut x, &a, &b, &m);
            simd::portable::mul_add_assign(&mut y, &a, &b, &m);
            assert_eq!(x, y, "mul_add q={q}");
            let (mut x, mut y) = (a.clone(), a.clone());
            simd::mul_shoup_assign(&mut x, w, &m);
            simd::portable::mul_shoup_assign(&mut y, w, &m);
            assert_eq!(x, y, "mul_shoup q={q}");
            let mut x = a.clone();
            simd::add_assign(&mut x, &b, &m);
            assert!(
                x.iter()
                    .zip(a.iter().zip(&b))
                    .all(|(&s, (&u, &v))| s == m.add(u, v))
            );
            let mut x = a.clone();
            simd::sub_assign(&mut x, &b, &m);
            assert!(
                x.iter()
                    .zip(a.iter().zip(&b))
                    .all(|(&s, (&u, &v))| s == m.sub(u, v))
            );
        }
    }
}

#[test]
fn dot_product_2_equals_portable_and_naive() {
    use henn_ring::simd;
    let mut r = rng(10);
    // below 2^32 the portable kernels sum in u64 (AVX2-vectorized where detected), above in
    // u128; both reduce once per chunk of terms
    // (and by 32-bit halves just below 2^32 and up to 2^50 where AVX2 is detected, in
    // blocks of 64 coefficients and chunks of 4096 terms)
    for bits in [20u32, 26, 30, 31, 32, 33, 35, 41, 49, 50, 60, 61] {
        let q = ntt_primes_near(bits, 16, 1, &[], true).unwrap()[0];
        let m = Modulus::new(q).unwrap();
        let long = if bits <= 50 { 4100 } else { 3 };
        for (terms, len) in [
            (1usize, 16usize),
            (5, 1000),
            (11, 37),
            (63, 64),
            (40, 130),
            (long, 67),
        ] {
            let make = |r: &mut ChaCha20Rng| -> Vec<Vec<u64>> {
                (0..terms)
                    .map(|_| {
                        (0..len)
                            .map(|_| {
                                if r.random_bool(0.1) {
                                    q - 1
                                } else {
                                    r.random_range(0..q)
                                }
                            })
                            .collect()
                    })
                    .collect()
            };
            let (x, b, a) = (make(&mut r), make(&mut r), make(&mut r));
            let (rx, rb, ra): (Vec<&[u64]>, Vec<&[u64]>, Vec<&[u64]>) = (
                x.iter().map(|s| s.as_slice()).collect(),
                b.iter().map(|s| s.as_slice()).collect(),
                a.iter().map(|s| s.as_slice()).collect(),
            );
            // the two-output form takes at most 63 terms (a key switch's digits)
            if terms <= 63 {
                let (mut o0, mut o1) = (vec![0; len], vec![0; len]);
                simd::dot_product_2(&mut o0, &mut o1, &rx, &rb, &ra, &m);
                let (mut p0, mut p1) = (vec![0; len], vec![0; len]);
                simd::portable::dot_product_2(&mut p0, &mut p1, &rx, &rb, &ra, &m);
                assert_eq!(o0, p0, "q={q} terms={terms}");
                assert_eq!(o1, p1);
                for k in 0..len {
                    let want = (0..terms).fold(0u64, |acc, j| m.add(acc, m.mul(x[j][k], b[j][k])));
                    assert_eq!(o0[k], want);
                    let want = (0..terms).fold(0u64, |acc, j| m.add(acc, m.mul(x[j][k], a[j][k])));
                    assert_eq!(o1[k], want);
                }
            }
            // the accumulating form, from a non-zero start, with as many terms as a long
            // plaintext-product sum (several reduction chunks for the larger primes)
            let start: Vec<u64> = (0..len).map(|k| (k as u64 * 7919) % q).collect();
            let mut acc = start.clone();
            simd::dot_product_add_assign(&mut acc, &rx, &ra, &m);
            let mut pacc = start.clone();
            simd::portable::dot_product_add_assign(&mut pacc, &rx, &ra, &m);
            for k in 0..len {
                let want = (0..terms).fold(start[k], |s, j| m.add(s, m.mul(x[j][k], a[j][k])));
                assert_eq!(acc[k], want, "q={q} terms={terms} k={k}");
                assert_eq!(pacc[k], want, "q={q} terms={terms} k={k}");
            }
            // several accumulators over the same terms (a ciphertext's parts times the same
            // plaintexts)
            let mut accs = [start.clone(), vec![1; len]];
            {
                let [a0, a1] = &mut accs;
                simd::dot_products_add_assign(&mut [a0, a1], &ra, &[&rx, &rb], &m);
            }
            let mut p1 = vec![1; len];
            simd::portable::dot_product_add_assign(&mut p1, &rb, &ra, &m);
            assert_eq!(accs[0], acc, "q={q} terms={terms}");
            assert_eq!(accs[1], p1, "q={q} terms={terms}");
        }
    }
}

#[test]
fn fused_kernels_equal_scalar() {
    use henn_ring::simd;
    let mut r = rng(11);
    for bits in [35u32, 49, 60] {
        let q = ntt_primes_near(bits, 16, 1, &[], true).unwrap()[0];
        let m = Modulus::new(q).unwrap();
        let a: Vec<u64> = (0..77).map(|_| r.random_range(0..q)).collect();
        let b: Vec<u64> = (0..77).map(|_| r.random_range(0..q)).collect();
        let w = m.shoup(r.random_range(0..q));
        // multiply-add by a Shoup constant (IFMA below 2^50, 64-bit lanes above), with the
        // extreme inputs q - 1 and 0 at both ends
        let mut xs = b.clone();
        xs[0] = q - 1;
        xs[76] = 0;
        for wv in [w, m.shoup(q - 1), m.shoup(1)] {
            let mut acc = a.clone();
            simd::mul_shoup_add_assign(&mut acc, &xs, wv, &m);
            for k in 0..77 {
                assert_eq!(
                    acc[k],
                    m.add(a[k], m.mul(xs[k], wv.value)),
                    "{bits} bits, k {k}"
                );
            }
        }
        let mut x = a.clone();
        simd::sub_mul_shoup_assign(&mut x, &b, w, &m);
        for k in 0..77 {
            assert_eq!(x[k], m.mul(m.sub(a[k], b[k]), w.value));
        }
        let src: Vec<u64> = (0..77).map(|_| r.random_range(0..2 * q)).collect();
        let c = r.random_range(0..q);
        let mut d = vec![0; 77];
        simd::reduce_once_sub(&mut d, &src, c, &m);
        for k in 0..77 {
            assert_eq!(d[k], m.sub(src[k] % q, c));
        }
    }
}

#[test]
fn scalar_matrix_mul_equals_scalar_mul_add_loops() {
    // n not a multiple of the block, more inputs than a tile, zero weights, 50- and 60-bit
    // primes (IFMA and portable paths): bit-identical to per-output mul_scalar_add loops.
    for (n, bits) in [(2048usize, vec![50u32, 40, 36]), (256, vec![60, 45])] {
        let c = ctx(n, &bits);
        let limbs: Vec<usize> = (0..bits.len()).collect();
        let mut r = rng(31);
        let k = 70;
        let n_out = 3;
        let xs: Vec<Poly<Ntt>> = (0..k)
            .map(|_| sample::uniform_ntt(&c, &limbs, &mut r).unwrap())
            .collect();
        let moduli: Vec<Modulus> = c.moduli().to_vec();
        let wres: Vec<u64> = (0..n_out * k * limbs.len())
            .map(|i| {
                if i % 7 == 3 {
                    0
                } else {
                    r.random_range(0..moduli[i % limbs.len()].value())
                }
            })
            .collect();
        let shoup: Vec<_> = wres
            .iter()
            .enumerate()
            .map(|(i, &w)| moduli[i % limbs.len()].shoup(w))
            .collect();
        let refs: Vec<&Poly<Ntt>> = xs.iter().collect();
        let got = Poly::scalar_matrix_mul(&refs, &shoup, n_out).unwrap();
        for (o, g) in got.iter().enumerate() {
            let mut want = Poly::<Ntt>::zero(&c, &limbs).unwrap();
            for (kk, x) in xs.iter().enumerate() {
                let s: Vec<u64> = (0..limbs.len())
                    .map(|j| wres[(o * k + kk) * limbs.len() + j])
                    .collect();
                want.mul_scalar_add_assign(x, &s).unwrap();
            }
            assert_eq!(g, &want, "n {n} output {o}");
        }
        // wrong weight count and mixed bases are errors
        assert!(Poly::scalar_matrix_mul(&refs, &shoup[1..], n_out).is_err());
        let other = sample::uniform_ntt(&c, &limbs[..1], &mut r).unwrap();
        assert!(Poly::scalar_matrix_mul(&[&xs[0], &other], &shoup[..2 * limbs.len()], 1).is_err());
    }
}

#[test]
fn matrix_kernel_equals_per_term_shoup() {
    // primes from 20 to 60 bits: lazy IFMA chunks of 2048 (capped), 64, 4 terms and the
    // per-term paths; the portable lazy kernel (u64 sums below 2^32, chunks of 4 terms at 31
    // bits, sums by 32-bit halves just below 2^32; u128 sums above, chunks of 255 at 60
    // bits), run here whatever the CPU; 1..7
    // outputs (every register-block width); lengths with a tail; accumulators that start
    // non-zero
    for bits in [20u32, 31, 32, 36, 45, 49, 50, 60] {
        let q = ntt_primes_near(bits, 16, 1, &[], true).unwrap()[0];
        let m = Modulus::new(q).unwrap();
        let mut r = rng(u64::from(bits));
        for (n_out, k, len) in [
            (1usize, 3usize, 16usize),
            (7, 150, 77),
            (5, 9, 48),
            (2, 300, 130),
        ] {
            let xs: Vec<Vec<u64>> = (0..k)
                .map(|_| (0..len).map(|_| r.random_range(0..q)).collect())
                .collect();
            let w: Vec<_> = (0..n_out * k)
                .map(|i| m.shoup(if i % 5 == 2 { 0 } else { r.random_range(0..q) }))
                .collect();
            let init: Vec<Vec<u64>> = (0..n_out)
                .map(|_| (0..len).map(|_| r.random_range(0..q)).collect())
                .collect();
            let mut accs = init.clone();
            let mut refs: Vec<&mut [u64]> = accs.iter_mut().map(|a| a.as_mut_slice()).collect();
            let xr: Vec<&[u64]> = xs.iter().map(|x| x.as_slice()).collect();
            henn_ring::simd::matrix_mul_add_assign(&mut refs, &xr, &w, &m);
            let mut lazy = init.clone();
            let mut lrefs: Vec<&mut [u64]> = lazy.iter_mut().map(|a| a.as_mut_slice()).collect();
            henn_ring::simd::portable::matrix_mul_add_assign_lazy(&mut lrefs, &xr, &w, &m);
            for o in 0..n_out {
                for i in 0..len {
                    let mut want = init[o][i];
                    for kk in 0..k {
                        want = m.add(want, m.mul(xs[kk][i], w[o * k + kk].value));
                    }
                    assert_eq!(accs[o][i], want, "{bits} bits, output {o}, element {i}");
                    assert_eq!(
                        lazy[o][i], want,
                        "portable, {bits} bits, output {o}, element {i}"
                    );
                }
            }
        }
    }
}

#[test]
fn plain_matrix_mul_equals_mul_add_loops() {
    // one block and several; 20- to 60-bit primes (lazy IFMA chunks of thousands, a few and
    // one term; without AVX-512 the u64 sums below 2^30, the half-word sums just below 2^32
    // and up to 2^50, u128 above); plaintexts over more primes than the inputs, in another
    // order; an output with no terms is zero; bit-identical to per-term
    // mul_add_assign_subset loops, for one part and (each plaintext read once) for two.
    for (n, bits) in [
        (4096usize, vec![50u32, 20, 36, 45]),
        (256, vec![60, 49, 30]),
        (512, vec![32, 33, 41, 59]),
    ] {
        let c = ctx(n, &bits);
        let all: Vec<usize> = (0..bits.len()).collect();
        let limbs: Vec<usize> = all[..bits.len() - 1].to_vec();
        let mut pt_limbs = all.clone();
        pt_limbs.reverse();
        let mut r = rng(77);
        let (k, n_out) = (9usize, 5usize);
        let xs: Vec<Poly<Ntt>> = (0..k)
            .map(|_| sample::uniform_ntt(&c, &limbs, &mut r).unwrap())
            .collect();
        let pts: Vec<Poly<Ntt>> = (0..30)
            .map(|_| sample::uniform_ntt(&c, &pt_limbs, &mut r).unwrap())
            .collect();
        // output 3 gets no terms; output 0 gets 20 (more than one lazy chunk at 60 bits)
        let mut terms: Vec<(usize, usize, &Poly<Ntt>)> = Vec::new();
        for (t, p) in pts.iter().enumerate() {
            let o = if t < 20 { 0 } else { [1, 2, 4][t % 3] };
            terms.push((o, (t * 7) % k, p));
        }
        let refs: Vec<&Poly<Ntt>> = xs.iter().collect();
        let got = Poly::plain_matrix_mul(&refs, &terms, n_out).unwrap();
        for (o, g) in got.iter().enumerate() {
            let mut want = Poly::<Ntt>::zero(&c, &limbs).unwrap();
            for &(_, i, p) in terms.iter().filter(|t| t.0 == o) {
                want.mul_add_assign_subset(&xs[i], p).unwrap();
            }
            assert_eq!(g, &want, "n {n} output {o}");
        }
        // two parts per input: the first as above, the second its own products
        let second: Vec<Poly<Ntt>> = (0..k)
            .map(|_| sample::uniform_ntt(&c, &limbs, &mut r).unwrap())
            .collect();
        let pairs: Vec<[&Poly<Ntt>; 2]> = xs.iter().zip(&second).map(|(a, b)| [a, b]).collect();
        let prefs: Vec<&[&Poly<Ntt>]> = pairs.iter().map(|p| p.as_slice()).collect();
        let got2 = Poly::plain_matrix_mul_parts(&prefs, &terms, n_out).unwrap();
        for (o, g) in got2.iter().enumerate() {
            assert_eq!(g.len(), 2);
            assert_eq!(g[0], got[o]);
            let mut want = Poly::<Ntt>::zero(&c, &limbs).unwrap();
            for &(_, i, p) in terms.iter().filter(|t| t.0 == o) {
                want.mul_add_assign_subset(&second[i], p).unwrap();
            }
            assert_eq!(g[1], want, "n {n} output {o}, second part");
        }
        let ragged: Vec<&[&Poly<Ntt>]> = vec![&pairs[0][..], &pairs[1][..1]];
        assert!(Poly::plain_matrix_mul_parts(&ragged, &terms[..1], n_out).is_err());
        // out-of-range indices and plaintexts missing an input prime are errors
        assert!(Poly::plain_matrix_mul(&refs, &[(n_out, 0, &pts[0])], n_out).is_err());
        assert!(Poly::plain_matrix_mul(&refs, &[(0, k, &pts[0])], n_out).is_err());
        let short = sample::uniform_ntt(&c, &limbs[1..], &mut r).unwrap();
        assert!(Poly::plain_matrix_mul(&refs, &[(0, 0, &short)], n_out).is_err());
    }
}

#[test]
fn small_prime_kernel_equals_portable_bit_for_bit() {
    // the 32 x 32-bit kernel (AVX2 where detected and neither AVX-512 nor FMA is) for primes
    // below 2^30, called directly (any CPU) and through the table's dispatch
    let mut r = rng(3);
    for &n in &[16usize, 1024, 8192] {
        for bits in [17u32, 22, 27, 29, 30] {
            let q = ntt_primes_near(bits, n, 1, &[], true).unwrap()[0];
            if q >= henn_ring::ntt::AVX2_MODULUS_LIMIT {
                continue;
            }
            let t = NttTable::new(n, q).unwrap();
            let a: Vec<u64> = (0..n).map(|_| r.random_range(0..q)).collect();
            let (mut x, mut y, mut z) = (a.clone(), a.clone(), a.clone());
            t.forward_small(&mut x);
            t.forward_portable(&mut y);
            t.forward(&mut z);
            assert_eq!(x, y, "forward n={n} q={q}");
            assert_eq!(z, y, "forward ({:?}) n={n} q={q}", t.backend());
            t.inverse_small(&mut x);
            t.inverse_portable(&mut y);
            t.inverse(&mut z);
            assert_eq!(x, y, "inverse n={n} q={q}");
            assert_eq!(z, y, "inverse ({:?}) n={n} q={q}", t.backend());
            assert_eq!(x, a);
        }
    }
}

#[test]
fn fma_kernel_equals_portable_bit_for_bit() {
    // the AVX2 + FMA double-precision kernel for primes below 2^50 (where the CPU has AVX2
    // and FMA; the table's own dispatch takes it when no AVX-512 kernel runs, small primes
    // included), with the extreme inputs 0 and q - 1
    let mut r = rng(4);
    let fma = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    for &n in &[16usize, 32, 1024, 8192] {
        for bits in [17u32, 22, 26, 29, 31, 36, 41, 45, 49, 50] {
            let q = ntt_primes_near(bits, n, 1, &[], true).unwrap()[0];
            let t = NttTable::new(n, q).unwrap();
            let mut a: Vec<u64> = (0..n).map(|_| r.random_range(0..q)).collect();
            a[0] = q - 1;
            a[n - 1] = q - 1;
            a[1] = 0;
            let (mut x, mut y, mut z) = (a.clone(), a.clone(), a.clone());
            let ran = t.forward_fma(&mut x).is_some();
            assert_eq!(ran, fma && q < henn_ring::ntt::FMA_MODULUS_LIMIT, "q={q}");
            if !ran {
                continue;
            }
            t.forward_portable(&mut y);
            t.forward(&mut z);
            assert_eq!(x, y, "forward n={n} q={q}");
            assert_eq!(z, y, "forward ({:?}) n={n} q={q}", t.backend());
            let all_max = vec![q - 1; n];
            let (mut u, mut v) = (all_max.clone(), all_max.clone());
            t.forward_fma(&mut u).unwrap();
            t.forward_portable(&mut v);
            assert_eq!(u, v, "forward of q - 1 everywhere, n={n} q={q}");
            t.inverse_fma(&mut x).unwrap();
            t.inverse_portable(&mut y);
            t.inverse(&mut z);
            assert_eq!(x, y, "inverse n={n} q={q}");
            assert_eq!(z, y, "inverse ({:?}) n={n} q={q}", t.backend());
            assert_eq!(x, a);
        }
    }
}
