//! A chain that consumes every level of the secure `resnet` preset (N = 16384,
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should abort the test"
)]
//! [60, 35 x 8], scale 2^35): at each level, multiply by a fresh encryption (relinearize,
//! rescale), then once more by a plaintext constant, until level 0.
//!
//! Bound: a fresh public-key encryption has coefficient noise of std ~ 2*sigma*sqrt(2N/3)
//! ~ 2^8.9; the embedding multiplies it by ~sqrt(N) = 2^7 and the worst of 8192 slots is ~4
//! standard deviations, so ~2^-17 absolute error at scale 2^35 (~2^-20 on average). Products
//! of values near 1 add their relative errors: after 8 multiplications we require >= 14 bits.
//! (Repeated squaring would double the relative error at each step instead.)

use henn_ckks::prelude::*;
use henn_testkit::{assert_precision, uniform_values};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

#[test]
fn mul_chain_consumes_every_level_of_resnet_preset() {
    let params = CkksParams::new(CkksParamsLiteral::resnet()).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let kg = KeyGenerator::new(&params);
    let sk = kg.secret_key(&mut rng).unwrap();
    let pk = kg.public_key(&sk, &mut rng).unwrap();
    let rlk = kg.relin_key(&sk, &mut rng).unwrap();
    let enc = Encoder::new(&params);
    let encryptor = Encryptor::new(&params);
    let dec = Decryptor::new(&params);
    let eval = Evaluator::new(&params);
    let near_one = |seed| -> Vec<f64> {
        uniform_values(params.slots(), 0.1, seed)
            .iter()
            .map(|x| 1.0 + x)
            .collect()
    };
    let v = near_one(1);
    let pt = enc
        .encode(&v, params.max_level(), params.default_scale())
        .unwrap();
    let mut ct = encryptor.encrypt_pk(&pt, &pk, &mut rng).unwrap();
    let mut want = v;
    for step in 0..params.max_level().0 {
        let w = near_one(100 + step as u64);
        // Encode the fresh factor at the ciphertext's current level and exact scale.
        let ptw = enc.encode(&w, ct.level(), ct.scale()).unwrap();
        let cw = encryptor.encrypt_pk(&ptw, &pk, &mut rng).unwrap();
        ct = if step == 3 {
            eval.square_relin(&ct, &rlk).unwrap()
        } else {
            eval.mul_relin(&ct, &cw, &rlk).unwrap()
        };
        eval.rescale_assign(&mut ct).unwrap();
        if step == 3 {
            want.iter_mut().for_each(|x| *x *= *x);
        } else {
            want.iter_mut().zip(&w).for_each(|(x, y)| *x *= y);
        }
        let got = enc.decode(&dec.decrypt(&ct, &sk).unwrap()).unwrap();
        let rel: Vec<f64> = got.iter().zip(&want).map(|(g, w)| g / w).collect();
        assert_precision(
            &format!("resnet chain step {step} ({})", ct.level()),
            &rel,
            &vec![1.0; want.len()],
            14.0,
        );
        assert_eq!(ct.level(), Level(params.max_level().0 - step - 1));
        // Scales stay near 2^35 because the 35-bit primes are the closest to 2^35 (the deviation
        // doubles with each ct x ct product; it is tracked exactly, so this is only a sanity check).
        assert!(
            (ct.scale().log2() - 35.0).abs() < 0.05,
            "scale drifted to {}",
            ct.scale()
        );
    }
    assert_eq!(ct.level(), Level(0));
    assert!(matches!(eval.rescale(&ct), Err(CkksError::OutOfLevels)));
}
