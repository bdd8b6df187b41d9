//! Circuits against f64 models on a small insecure ring (TEST_INSECURE_CIRCUITS: N = 2^12).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failure should abort the test"
)]

use std::ops::Sub;
use std::sync::Arc;

use henn_ckks::circuits::{Chebyshev, Hoisting, LinearTransform};
use henn_ckks::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn params(levels: usize) -> Arc<CkksParams> {
    let mut q_bits = vec![60];
    q_bits.extend(std::iter::repeat_n(50, levels));
    CkksParams::new(CkksParamsLiteral {
        log_n: 12,
        q_bits,
        p_bits: vec![60, 60],
        log_scale: 50.0,
        dnum: None,
        secret: SecretDistribution::Ternary,
        security: SecurityPolicy::InsecureAllowed {
            reason: "test parameter set TEST_INSECURE_CIRCUITS (N = 2^12)".into(),
        },
    })
    .unwrap()
}

struct Kit {
    params: Arc<CkksParams>,
    sk: SecretKey,
    rlk: RelinKey,
    enc: Encoder,
    ev: Evaluator,
    rng: ChaCha20Rng,
}

fn kit(levels: usize) -> Kit {
    let params = params(levels);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let kg = KeyGenerator::new(&params);
    let sk = kg.secret_key(&mut rng).unwrap();
    let rlk = kg.relin_key(&sk, &mut rng).unwrap();
    Kit {
        enc: Encoder::new(&params),
        ev: Evaluator::new(&params),
        params,
        sk,
        rlk,
        rng,
    }
}

impl Kit {
    fn encrypt(&mut self, v: &[Complex]) -> Ciphertext {
        let pt = self
            .enc
            .encode_complex(v, self.params.max_level(), self.params.default_scale())
            .unwrap();
        Encryptor::new(&self.params)
            .encrypt_sk(&pt, &self.sk, &mut self.rng)
            .unwrap()
    }
    fn decrypt(&self, ct: &Ciphertext) -> Vec<Complex> {
        let pt = Decryptor::new(&self.params).decrypt(ct, &self.sk).unwrap();
        self.enc.decode_complex(&pt).unwrap()
    }
}

/// log2 of the largest error.
fn max_err_bits(got: &[Complex], want: &[Complex]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(a, b)| a.sub(*b).abs())
        .fold(0.0, f64::max)
        .log2()
}

#[test]
fn chebyshev_lands_on_the_target_scale_with_stated_precision() {
    let mut k = kit(10);
    let slots = k.params.slots();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for (name, f, a, b, degree) in [
        (
            "cos(6x)",
            (|x: f64| (6.0 * x).cos()) as fn(f64) -> f64,
            -1.0,
            1.0,
            30,
        ),
        ("exp", f64::exp, -2.0, 3.0, 15),
        ("sigmoid", |x: f64| 1.0 / (1.0 + (-x).exp()), -8.0, 8.0, 63),
    ] {
        let p = Chebyshev::interpolate(f, a, b, degree).unwrap();
        let xs: Vec<f64> = (0..slots).map(|_| rng.random_range(a..b)).collect();
        let v: Vec<Complex> = xs.iter().map(|&x| Complex::new(x, 0.0)).collect();
        let ct = k.encrypt(&v);
        let target = Scale::from_log2(47.3);
        let out = p.evaluate(&k.ev, &ct, target, &k.rlk).unwrap();
        assert_eq!(out.scale(), target, "{name}: scale");
        assert_eq!(
            out.level().0,
            k.params.max_level().0 - p.depth(),
            "{name}: level"
        );
        let want: Vec<Complex> = xs.iter().map(|&x| Complex::new(p.eval(x), 0.0)).collect();
        let bits = max_err_bits(&k.decrypt(&out), &want);
        eprintln!(
            "{name}: degree {degree}, plan {:?}, max error 2^{bits:.1}",
            p.plan()
        );
        // bound: 2^-30 against the f64 polynomial (scale 2^50, N = 2^12)
        assert!(bits < -30.0, "{name}: 2^{bits}");
    }
}

#[test]
fn linear_transform_matches_f64() {
    let mut k = kit(3);
    let slots = k.params.slots();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut m = LinearTransform::zero(slots);
    for t in -9i64..=9 {
        for j in 0..slots {
            let col = (j as i64 + 3 * t).rem_euclid(slots as i64) as usize;
            m.add_entry(
                j,
                col,
                Complex::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)),
            );
        }
    }
    let rots = m.rotations();
    let double_rots = m
        .bsgs_split_weighted(Hoisting::Double.baby_weight())
        .rotations();
    let all: Vec<i64> = rots.iter().chain(&double_rots).copied().collect();
    let gk = KeyGenerator::new(&k.params)
        .galois_keys(&k.sk, &all, false, &mut k.rng)
        .unwrap();
    let v: Vec<Complex> = (0..slots)
        .map(|_| Complex::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)))
        .collect();
    let ct = k.encrypt(&v);
    let q = k.ev.rescale_neutral_scale(&ct).unwrap();
    let lt = m.encode(&k.enc, ct.level(), q).unwrap();
    assert_eq!(lt.rotations(), rots);
    assert!(
        rots.len() <= 10,
        "{} rotations for 19 diagonals",
        rots.len()
    );
    let mut out = lt.apply(&k.ev, &ct, &gk).unwrap();
    k.ev.rescale_assign(&mut out).unwrap();
    let bits = max_err_bits(&k.decrypt(&out), &m.apply(&v));
    eprintln!(
        "linear transform: {} rotations, max error 2^{bits:.1}",
        rots.len()
    );
    assert!(bits < -30.0, "2^{bits}");
    // double hoisting: the same product, plaintexts over Q ∪ P
    let lt2 = m
        .encode_with(&k.enc, ct.level(), q, Hoisting::Double)
        .unwrap();
    assert_eq!(lt2.rotations(), double_rots);
    let mut out2 = lt2.apply(&k.ev, &ct, &gk).unwrap();
    assert!((out2.scale().value() / (ct.scale().value() * q.value()) - 1.0).abs() < 1e-12);
    k.ev.rescale_assign(&mut out2).unwrap();
    let bits2 = max_err_bits(&k.decrypt(&out2), &m.apply(&v));
    eprintln!(
        "double hoisting: {} rotations, max error 2^{bits2:.1}",
        double_rots.len()
    );
    assert!(bits2 < -30.0, "2^{bits2}");
}
