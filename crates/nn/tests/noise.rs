//! The slots backend's noise model (`Noise`) against the errors an encrypted run really has:
//! encoding, fresh encryption, a rescale and rotations (key switches, at the top level and
//! at level 0, with digits of one and of two primes), each measured over every slot of a
//! 128-bit N = 2^13 ciphertext and compared by standard deviation; and the precision
//! predicted for a model against an encrypted run of it, in channel and in batch packing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use henn_ckks::{
    CkksParams, CkksParamsLiteral, Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator,
    SecretDistribution, SecurityPolicy,
};
use henn_nn::backend::slots::Noise;
use henn_nn::pack::LayoutKind;
use henn_nn::plan::{Images, PlanOptions, make_plan};
use henn_nn::session::LocalSession;
use rand::SeedableRng;

mod kit;

fn std_of(errs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = errs.collect();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

/// Measured over predicted standard deviation, within a factor of 1.3 (0.4 bits).
fn assert_close(what: &str, measured: f64, predicted: f64) {
    let r = measured / predicted;
    eprintln!(
        "{what}: measured 2^{:.2}, predicted 2^{:.2} (ratio {r:.3})",
        measured.log2(),
        predicted.log2()
    );
    assert!(
        (1.0 / 1.3..=1.3).contains(&r),
        "{what}: measured {measured:e}, predicted {predicted:e}"
    );
}

#[test]
fn noise_model_matches_encrypted_errors() {
    for (q_bits, p_bits) in [
        (vec![40, 26, 26, 26], vec![40]),
        (vec![36, 26, 26, 26], vec![30, 30]),
    ] {
        let params = CkksParams::new(CkksParamsLiteral {
            log_n: 13,
            q_bits,
            p_bits,
            log_scale: 26.0,
            dnum: None,
            secret: SecretDistribution::Ternary,
            security: SecurityPolicy::Enforce { bits: 128 },
        })
        .unwrap();
        let params = Arc::new(params);
        let noise = Noise::for_params(&params);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let kg = KeyGenerator::new(&params);
        let sk = kg.secret_key(&mut rng).unwrap();
        let gk = kg.galois_keys(&sk, &[1], false, &mut rng).unwrap();
        let enc = Encoder::new(&params);
        let dec = Decryptor::new(&params);
        let ev = Evaluator::new(&params);
        let slots = params.slots();
        // pseudo-random values in [-1, 1) (a periodic vector has a sparse spectrum whose
        // coefficients do not round like independent uniforms)
        let x: Vec<f64> = (0..slots)
            .map(|i| {
                let h = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let h = (h ^ (h >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect();
        let level = params.max_level();
        let delta = params.default_scale();
        let pt = enc.encode(&x, level, delta).unwrap();
        let plain = enc.decode(&pt).unwrap();
        assert_close(
            "encoding",
            std_of(plain.iter().zip(&x).map(|(a, b)| a - b)),
            noise.encode() / delta.value(),
        );
        let ct = Encryptor::new(&params)
            .encrypt_sk(&pt, &sk, &mut rng)
            .unwrap();
        let read = |c: &henn_ckks::Ciphertext| enc.decode(&dec.decrypt(c, &sk).unwrap()).unwrap();
        let fresh = read(&ct);
        let e0: Vec<f64> = fresh.iter().zip(&x).map(|(a, b)| a - b).collect();
        assert_close(
            "fresh encryption",
            std_of(e0.iter().copied()),
            noise.fresh() / delta.value(),
        );
        // a rotation: its error beyond the rotated fresh error
        let r = read(&ev.rotate(&ct, 1, &gk).unwrap());
        assert_close(
            "rotation (key switch)",
            std_of((0..slots).map(|i| r[i] - fresh[(i + 1) % slots])),
            noise.key_switch(level.0) / delta.value(),
        );
        // a rotation at level 0 (the digit is the base prime alone)
        let low = ev.drop_level_to(&ct, henn_ckks::Level(0)).unwrap();
        let r0 = read(&ev.rotate(&low, 1, &gk).unwrap());
        let f0 = read(&low);
        assert_close(
            "rotation at level 0",
            std_of((0..slots).map(|i| r0[i] - f0[(i + 1) % slots])),
            noise.key_switch(0) / delta.value(),
        );
        // a rescale: times 1 at the scale (an integer that is not the prime: the division
        // rounds), then divided by the top prime
        let mut m = ev.mul_const(&ct, 1.0, delta).unwrap();
        ev.rescale_assign(&mut m).unwrap();
        let s = read(&m);
        assert_close(
            "rescale",
            std_of(s.iter().zip(&fresh).map(|(a, b)| a - b)),
            noise.rescale() / m.scale().value(),
        );
    }
}

/// The plan's predicted precision against an encrypted run at 128 bits: the shipped
/// mnist_cnn3_square under channel packing on 16 committed MNIST test images, median logit
/// bits within one bit of the prediction; the prediction is the same when planned again.
#[test]
fn predicted_precision_matches_an_encrypted_run() {
    let g = kit::shipped("mnist_cnn3_square");
    let imgs = kit::mnist_images(16);
    let opts = PlanOptions {
        layout: LayoutKind::Channel,
        images: Images::Exactly(1),
        ..PlanOptions::default()
    };
    let (plan, params) = make_plan(&g, &opts, &imgs, None).unwrap();
    let again = make_plan(&g, &opts, &imgs, None).unwrap().0;
    assert_eq!(plan.predicted_bits, again.predicted_bits);
    let predicted = henn_nn::plan::predicted_bits(&g, &plan.layout, &params, &imgs).unwrap();
    assert!((plan.predicted_bits - predicted).abs() <= 0.05);
    let s = LocalSession::new(&g, &plan).unwrap();
    let want = kit::reference(&g, &imgs);
    let mut bits: Vec<f64> = imgs
        .iter()
        .zip(&want)
        .map(|(x, w)| {
            let r = s.run(std::slice::from_ref(x), false).unwrap();
            kit::relative_bits(&r.outputs[0], w)
        })
        .collect();
    bits.sort_by(f64::total_cmp);
    let measured = bits[bits.len() / 2];
    eprintln!(
        "mnist_cnn3_square, {:?}: measured median {measured:.2} bits, predicted {predicted:.2}",
        plan.params.q_bits
    );
    assert!(
        (measured - predicted).abs() <= 1.0,
        "measured {measured:.2} bits, predicted {predicted:.2}"
    );
}

/// The same in batch packing, one image per slot and two per complex slot (where the
/// prediction models the quarter scale and the conjugations' key switches): the shipped
/// mnist_cnn3_square on 64 committed MNIST test images in one run, median logit bits within
/// one bit of the prediction, 1.5 paired (the planner's slots runs hold only the images'
/// slots).
#[test]
fn predicted_batch_precision_matches_an_encrypted_run() {
    let g = kit::shipped("mnist_cnn3_square");
    let imgs = kit::mnist_images(64);
    let want = kit::reference(&g, &imgs);
    for (images, paired) in [(Images::Exactly(64), false), (Images::UpTo(10_000), true)] {
        let opts = PlanOptions {
            layout: LayoutKind::Batch,
            images,
            ..PlanOptions::default()
        };
        let (plan, _) = make_plan(&g, &opts, &imgs, None).unwrap();
        assert_eq!(plan.layout.complex_pairs, paired);
        let s = LocalSession::new(&g, &plan).unwrap();
        let r = s.run(&imgs, false).unwrap();
        let mut bits: Vec<f64> = r
            .outputs
            .iter()
            .zip(&want)
            .map(|(o, w)| kit::relative_bits(o, w))
            .collect();
        assert_eq!(bits.len(), imgs.len());
        bits.sort_by(f64::total_cmp);
        let measured = bits[bits.len() / 2];
        eprintln!(
            "mnist_cnn3_square batch, paired {paired}: measured median {measured:.2} bits, \
             predicted {:.2}",
            plan.predicted_bits
        );
        // paired predictions run 0.7 bits high on average (docs/BENCHMARKS.md), and the
        // median of 32 images moves by up to 0.4 bits from one encryption to the next
        let within = if paired { 1.5 } else { 1.0 };
        assert!(
            (measured - plan.predicted_bits).abs() <= within,
            "paired {paired}: measured {measured:.2} bits, predicted {:.2}",
            plan.predicted_bits
        );
    }
}
