//! Noise of the sparse-secret encapsulation and of key switching (mean and maximum of the
//! coefficient error), on a small insecure ring.

use super::*;
use crate::encrypt::Encryptor;
use crate::params::{CkksParamsLiteral, SecretDistribution, SecurityPolicy};
use rand::SeedableRng;

#[test]
fn encapsulation_and_key_switching_are_unbiased() {
    let mut q_bits = vec![45];
    q_bits.extend(std::iter::repeat_n(35, 2));
    q_bits.extend(std::iter::repeat_n(45, 3));
    q_bits.extend(std::iter::repeat_n(60, 8));
    q_bits.extend(std::iter::repeat_n(55, 3));
    let params = CkksParams::new(CkksParamsLiteral {
        log_n: 12,
        q_bits,
        p_bits: vec![60; 4],
        log_scale: 35.0,
        dnum: None,
        secret: SecretDistribution::Ternary,
        security: SecurityPolicy::InsecureAllowed {
            reason: "TEST_INSECURE_BOOT diagnostics".into(),
        },
    })
    .unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
    let kg = KeyGenerator::new(&params);
    let sk = kg.secret_key(&mut rng).unwrap();
    let boot = Bootstrapper::new(
        &params,
        BootstrapConfig::default_for(12),
        params.default_scale(),
    )
    .unwrap();
    let coeffs = sample::sparse_ternary(params.n(), 32, &mut rng).unwrap();
    let sparse = Poly::<Coeff>::from_signed(params.ring(), &params.all_limbs(), &coeffs)
        .unwrap()
        .ntt();
    let enc_key = boot.encapsulation_key(&sk, &sparse, &mut rng).unwrap();
    let enc = Encoder::new(&params);
    let pt = enc
        .encode_complex(&[], Level(0), params.default_scale())
        .unwrap();
    let ct = Encryptor::new(&params)
        .encrypt_sk(&pt, &sk, &mut rng)
        .unwrap();
    let stats = |name: &str, c0: &Poly<Ntt>, c1: &Poly<Ntt>, s: &Poly<Ntt>| {
        let s = s.select_limbs(c0.limbs()).unwrap();
        let mut m = c1.mul(&s).unwrap();
        m.add_assign(c0).unwrap();
        let v = crate::encoding::crt_centered_f64(&m.intt()).unwrap();
        let q0 = params.q()[0] as f64;
        let r: Vec<f64> = v.iter().map(|x| x - q0 * (x / q0).round()).collect();
        let mean = r.iter().sum::<f64>() / r.len() as f64;
        let max = r.iter().map(|x| x.abs()).fold(0.0, f64::max);
        eprintln!("{name}: mean {mean:.2} max {max:.1}");
        (mean, max)
    };
    let (_, input_max) = stats("input under s", &ct.parts[0], &ct.parts[1], &sk.poly);
    let c1 = &ct.parts[1];
    let ext = boot
        .to_sparse_conv
        .convert(&c1.clone().intt())
        .unwrap()
        .ntt();
    let d = c1.clone().concat_limbs(&ext).unwrap();
    let u0 = boot
        .to_sparse_down
        .apply(d.mul(&enc_key.b).unwrap())
        .unwrap();
    let u1 = boot
        .to_sparse_down
        .apply(d.mul(&enc_key.a).unwrap())
        .unwrap();
    let mut b0 = ct.parts[0].clone();
    b0.add_assign(&u0).unwrap();
    let (mean, max) = stats("after s -> s'", &b0, &u1, &sparse);
    assert!(
        mean.abs() < 1.0 && max < input_max + 16.0,
        "encapsulation adds {max}"
    );
    let top = params.max_level();
    let limbs = params.q_limbs(top);
    let lift = |p: &Poly<Ntt>| lift_from_q0(&params, p, top).unwrap();
    let (r0, r1) = (lift(&b0), lift(&u1));
    let (_, lifted) = stats("lifted under s'", &r0, &r1, &sparse);
    assert_eq!(lifted, max, "the lift is exact");
    let from = kg.switch_key_from(&sk, &sparse, top, &mut rng).unwrap();
    let ev = Evaluator::new(&params);
    let (v0, v1) = ev.key_switch(&r1, top, &from).unwrap();
    let mut w0 = r0.clone();
    w0.add_assign(&v0).unwrap();
    let (mean, max) = stats("switched back under s", &w0, &v1, &sk.poly);
    // unbiased: before the centred conversions the mean was ~125 (floor bias times s)
    assert!(mean.abs() < 16.0 && max < 2048.0, "mean {mean}, max {max}");
    // the same switch on a random top-level polynomial
    let rnd = sample::uniform_ntt(params.ring(), &limbs, &mut rng).unwrap();
    let (z0, z1) = ev.key_switch(&rnd, top, &from).unwrap();
    let mut neg = rnd.mul(&sparse.select_limbs(&limbs).unwrap()).unwrap();
    neg.neg_assign();
    let mut y0 = z0.clone();
    y0.add_assign(&neg).unwrap();
    let (mean, _) = stats("switch of a uniform c1", &y0, &z1, &sk.poly);
    assert!(mean.abs() < 16.0, "mean {mean}");
}
