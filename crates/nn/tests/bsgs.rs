//! Baby-step giant-step sums (`Backend::bsgs_sum`, the multiplexed convolution's core):
//! encrypted single- and double-hoisted evaluations and the slots backend against an f64
//! model of the sum, with the same op counts; malformed structures are errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use henn_ckks::{CkksParams, Decryptor, Encoder, Encryptor, KeyGenerator, Scale};
use henn_nn::backend::bsgs::Bsgs;
use henn_nn::backend::encrypted::Encrypted;
use henn_nn::backend::slots::Slots;
use henn_nn::backend::{Backend, Counts};
use henn_testkit::test_insecure_chain;
use rand::SeedableRng;

/// `v` rotated left by `k` slots.
fn rot(v: &[f64], k: i64) -> Vec<f64> {
    let n = v.len() as i64;
    (0..n).map(|s| v[(s + k).rem_euclid(n) as usize]).collect()
}

/// A pseudo-random diagonal for term `t` (values in [-1, 1)).
fn diag_of(t: usize, v: &mut [f64]) {
    let mut h = (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for x in v.iter_mut() {
        h ^= h >> 29;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        *x = (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    }
}

/// Three inputs with baby steps {0, 1, 5}, {-3, 2} and {0}; four groups over outputs 0 and 1
/// (giant steps 0, 7, -4 and 16); output 2 without groups.
fn spec(double: bool) -> Bsgs {
    let inputs = vec![(0, 0), (0, 1), (0, 5), (1, -3), (1, 2), (2, 0)];
    let groups = vec![(0, 0), (0, 7), (1, -4), (1, 16)];
    let terms = vec![
        (0, 0),
        (0, 3),
        (0, 5),
        (1, 1),
        (1, 4),
        (2, 2),
        (2, 0),
        (2, 3),
        (3, 4),
        (3, 5),
    ];
    Bsgs {
        inputs,
        groups,
        terms,
        n_out: 3,
        double,
    }
}

/// The f64 model of the sum.
fn model(xs: &[Vec<f64>], s: &Bsgs) -> Vec<Option<Vec<f64>>> {
    let slots = xs[0].len();
    let mut out: Vec<Option<Vec<f64>>> = vec![None; s.n_out];
    for (gi, &(o, gamma)) in s.groups.iter().enumerate() {
        let mut sum = vec![0.0; slots];
        for (t, &(g, r)) in s.terms.iter().enumerate() {
            if g != gi {
                continue;
            }
            let (j, beta) = s.inputs[r];
            let x = rot(&xs[j], beta);
            let mut d = vec![0.0; slots];
            diag_of(t, &mut d);
            for ((a, b), c) in sum.iter_mut().zip(&x).zip(&d) {
                *a += b * c;
            }
        }
        let r = rot(&sum, gamma);
        match out[o].as_mut() {
            None => out[o] = Some(r),
            Some(a) => a.iter_mut().zip(&r).for_each(|(a, b)| *a += b),
        }
    }
    out
}

fn op_counts<B: Backend>(b: &B) -> Counts {
    b.counts().snapshot()
}

#[test]
fn double_and_single_hoisting_equal_the_model() {
    let chain = test_insecure_chain(2);
    let params = Arc::new(CkksParams::new(chain.literal()).unwrap());
    let slots = params.slots();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
    let kg = KeyGenerator::new(&params);
    let sk = kg.secret_key(&mut rng).unwrap();
    let rlk = kg.relin_key(&sk, &mut rng).unwrap();
    let steps = [1, 5, -3, 2, 7, -4, 16];
    let gk = kg.galois_keys(&sk, &steps, false, &mut rng).unwrap();
    let be = Encrypted::new(&params, rlk, gk);
    let enc = Encoder::new(&params);
    let level = params.max_level();
    let values: Vec<Vec<f64>> = (0..3)
        .map(|j| {
            (0..slots)
                .map(|s| ((s * 7 + j * 13) % 23) as f64 / 23.0 - 0.5)
                .collect()
        })
        .collect();
    let cts: Vec<_> = values
        .iter()
        .map(|v| {
            let pt = enc.encode(v, level, params.default_scale()).unwrap();
            Encryptor::new(&params)
                .encrypt_sk(&pt, &sk, &mut rng)
                .unwrap()
        })
        .collect();
    let xs: Vec<_> = cts.iter().collect();
    let cs = Scale::new(2f64.powi(40)).unwrap();
    let dec = Decryptor::new(&params);
    let mut counts = Vec::new();
    let mut got = Vec::new();
    for double in [false, true] {
        let s = spec(double);
        let before = op_counts(&be);
        let outs = be.bsgs_sum(&xs, &s, &diag_of, level.0, cs).unwrap();
        counts.push(op_counts(&be).since(&before));
        let want = model(&values, &s);
        assert!(outs[2].is_none() && want[2].is_none());
        let mut decoded = Vec::new();
        for (o, (ct, w)) in outs.iter().zip(&want).take(2).enumerate() {
            let ct = ct.as_ref().unwrap();
            assert_eq!(ct.level(), level);
            let v = enc.decode(&dec.decrypt(ct, &sk).unwrap()).unwrap();
            let w = w.as_ref().unwrap();
            let err = v
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            // sums of up to three products of values below 1 in magnitude, at 2^40 x 2^40:
            // the key-switching and encoding noise stays far below 2^-20
            assert!(err < 2f64.powi(-20), "double {double}, output {o}: {err:e}");
            decoded.push(v);
        }
        got.push(decoded);
    }
    // the same sum either way (up to rounding), and the same op counts
    for (a, b) in got[0].iter().zip(&got[1]) {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(d < 2f64.powi(-20), "single vs double: {d:e}");
    }
    assert_eq!(counts[0], counts[1]);
    assert_eq!(counts[0].rotate_hoisted, 4, "{:?}", counts[0]);
    assert_eq!(counts[0].rotate, 3, "{:?}", counts[0]);
    assert_eq!(counts[0].mul_plain, 10, "{:?}", counts[0]);
    // the slots backend computes the same sum
    let sl = Slots::for_params(&params, slots);
    let sct: Vec<_> = values
        .iter()
        .map(|v| sl.input(v, params.default_scale()).unwrap())
        .collect();
    let refs: Vec<_> = sct.iter().collect();
    let top = sct[0].level;
    let outs = sl.bsgs_sum(&refs, &spec(true), &diag_of, top, cs).unwrap();
    let want = model(&values, &spec(true));
    for (o, w) in want.iter().enumerate().take(2) {
        let v = &outs[o].as_ref().unwrap().v;
        let err = v
            .iter()
            .zip(w.as_ref().unwrap())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        // the plaintexts quantized at 2^40
        assert!(err < 1e-9, "slots output {o}: {err:e}");
    }
}

#[test]
fn malformed_structures_are_errors() {
    let good = spec(false);
    assert!(good.check(3).is_ok());
    // an input index beyond the inputs
    assert!(good.check(2).is_err());
    let mut s = good.clone();
    s.inputs.swap(0, 1);
    assert!(s.check(3).is_err(), "unsorted rotated inputs");
    let mut s = good.clone();
    s.groups.push((1, 3));
    assert!(s.check(3).is_err(), "a group without terms");
    let mut s = good.clone();
    s.groups[0].0 = 3;
    assert!(s.check(3).is_err(), "a group of a missing output");
    let mut s = good.clone();
    s.terms.push((0, 6));
    assert!(s.check(3).is_err(), "a term of a missing rotated input");
    let mut s = good;
    s.terms.push((4, 0));
    assert!(s.check(3).is_err(), "a term of a missing group");
}
