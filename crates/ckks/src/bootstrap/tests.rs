//! Stage-by-stage diagnostics of the bootstrap on a small insecure ring.

use super::*;
use crate::encrypt::{Decryptor, Encryptor};
use crate::params::{CkksParamsLiteral, SecretDistribution, SecurityPolicy};
use rand::SeedableRng;

#[test]
#[ignore = "diagnostics"]
fn stages() {
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
    let mut cfg = BootstrapConfig::default_for(12);
    cfg.log_eval_mod_scale = 60.0;
    cfg.double_angle = 2;
    cfg.sine_degree = 56;
    let boot = Bootstrapper::new(&params, cfg, params.default_scale()).unwrap();
    let keys = boot.generate_keys(&sk, &mut rng).unwrap();
    let enc = Encoder::new(&params);
    let pt = enc
        .encode_complex(&[], Level(0), params.default_scale())
        .unwrap();
    let ct = Encryptor::new(&params).encrypt_sk(&pt, &sk, &mut rng).unwrap();
    let dec = |c: &Ciphertext| {
        enc.decode_complex(&Decryptor::new(&params).decrypt(c, &sk).unwrap())
            .unwrap()
    };
    let coeff_noise = |name: &str, c: &Ciphertext| {
        let pt = Decryptor::new(&params).decrypt(c, &sk).unwrap();
        let v = crate::encoding::crt_centered_f64(&pt.poly().clone().intt()).unwrap();
        let q0 = params.q()[0] as f64;
        let r: Vec<f64> = v.iter().map(|x| x - q0 * (x / q0).round()).collect();
        let h = r.len() / 2;
        let m1 = r[..h].iter().sum::<f64>() / h as f64;
        let m2 = r[h..].iter().sum::<f64>() / h as f64;
        let max = r.iter().map(|x| x.abs()).fold(0.0, f64::max);
        eprintln!("{name}: coefficient noise mean {m1:.2} / {m2:.2}, max {max:.1}");
    };
    coeff_noise("input", &ct);
    let saved: std::cell::RefCell<Vec<(String, Vec<Complex>)>> = Default::default();
    let probe = |name: &str, c: &Ciphertext| {
        let v = dec(c);
        saved.borrow_mut().push((name.to_string(), v.clone()));
        if name == "raised" {
            coeff_noise("raised", c);
        }
        match name {
            "cts" => {
                // y = I/K + tiny: distance to the nearest multiple of 1/K
                let k = 17.0;
                let d: Vec<f64> = v
                    .iter()
                    .flat_map(|z| [z.re, z.im])
                    .map(|x| 2.0 * x * k - (2.0 * x * k).round())
                    .collect();
                let mean = d.iter().sum::<f64>() / d.len() as f64;
                let max = d.iter().map(|x| x.abs()).fold(0.0, f64::max);
                eprintln!("cts: K y - I: mean {mean:e} max {max:e}, scale 2^{:.2}", c.scale().log2());
            }
            _ => {
                let re: Vec<f64> = v.iter().map(|z| z.re).collect();
                let im = v.iter().map(|z| z.im.abs()).fold(0.0, f64::max);
                let mean = re.iter().sum::<f64>() / re.len() as f64;
                let max = re.iter().map(|x| x.abs()).fold(0.0, f64::max);
                eprintln!("{name}: mean {mean:e} max {max:e} max|im| {im:e}, level {}, scale 2^{:.2}", c.level(), c.scale().log2());
            }
        }
    };
    let out = boot.bootstrap_probed(&ct, &keys, &probe).unwrap();
    probe("out", &out);
    let saved = saved.into_inner();
    let get = |n: &str| saved.iter().find(|(m, _)| m == n).map(|(_, v)| v.clone()).unwrap();
    let (cts, re) = (get("cts"), get("evalmod_re"));
    let mut by_i: std::collections::BTreeMap<i64, (f64, f64, usize)> = Default::default();
    let poly = boot.config.eval_mod_poly().unwrap();
    for (c, e) in cts.iter().zip(&re) {
        let y = 2.0 * c.re;
        let i = (y * 17.0).round() as i64;
        let mut f = poly.eval(y);
        for _ in 0..2 {
            f = 2.0 * f * f - 1.0;
        }
        let ent = by_i.entry(i).or_default();
        ent.0 += e.re;
        ent.1 += f;
        ent.2 += 1;
    }
    for (i, (sum, fsum, n)) in by_i {
        eprintln!("I = {i:3}: n {n:4} mean ckks {:+.3e} mean f64 {:+.3e}", sum / n as f64, fsum / n as f64);
    }
}

#[test]
#[ignore = "diagnostics"]
fn poly_at_integers() {
    let mut cfg = BootstrapConfig::default_for(12);
    cfg.double_angle = 2;
    cfg.sine_degree = 56;
    let p = cfg.eval_mod_poly().unwrap();
    for i in -3i32..=3 {
        for d in [0.0, 1e-12, 1e-11] {
            let y = (f64::from(i) + d) / 17.0;
            let mut f = p.eval(y);
            for _ in 0..2 {
                f = 2.0 * f * f - 1.0;
            }
            eprintln!("I {i} d {d:e}: poly {f:+.4e} sin {:+.4e}", (2.0 * std::f64::consts::PI * 17.0 * y).sin());
        }
    }
}

#[test]
#[ignore = "diagnostics"]
fn encapsulation_noise() {
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
    let boot = Bootstrapper::new(&params, BootstrapConfig::default_for(12), params.default_scale()).unwrap();
    let coeffs = sample::sparse_ternary(params.n(), 32, &mut rng).unwrap();
    let sparse = Poly::<Coeff>::from_signed(params.ring(), &params.all_limbs(), &coeffs).unwrap().ntt();
    let enc_key = boot.encapsulation_key(&sk, &sparse, &mut rng).unwrap();
    let enc = Encoder::new(&params);
    let pt = enc.encode_complex(&[], Level(0), params.default_scale()).unwrap();
    let ct = Encryptor::new(&params).encrypt_sk(&pt, &sk, &mut rng).unwrap();
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
    };
    stats("input under s", &ct.parts[0], &ct.parts[1], &sk.poly);
    let c1 = &ct.parts[1];
    let ext = boot.to_sparse_conv.convert(&c1.clone().intt()).unwrap().ntt();
    let d = c1.clone().concat_limbs(&ext).unwrap();
    let u0 = boot.to_sparse_down.apply(d.mul(&enc_key.b).unwrap()).unwrap();
    let u1 = boot.to_sparse_down.apply(d.mul(&enc_key.a).unwrap()).unwrap();
    let mut b0 = ct.parts[0].clone();
    b0.add_assign(&u0).unwrap();
    stats("after s -> s'", &b0, &u1, &sparse);
    let top = params.max_level();
    let limbs = params.q_limbs(top);
    let q0 = params.q()[0];
    let lift = |p: &Poly<Ntt>| {
        let c = p.clone().intt();
        let vals: Vec<i64> = c.limb(0).unwrap().iter().map(|&v| if v > q0 / 2 { v as i64 - q0 as i64 } else { v as i64 }).collect();
        Poly::<Coeff>::from_signed(params.ring(), &limbs, &vals).unwrap().ntt()
    };
    let (r0, r1) = (lift(&b0), lift(&u1));
    stats("lifted under s'", &r0, &r1, &sparse);
    let from = kg.switch_key_from(&sk, &sparse, top, &mut rng).unwrap();
    let ev = Evaluator::new(&params);
    let (v0, v1) = ev.key_switch(&r1, top, &from).unwrap();
    let mut w0 = r0.clone();
    w0.add_assign(&v0).unwrap();
    stats("switched back under s", &w0, &v1, &sk.poly);
    // the same switch on a random top-level polynomial
    let rnd = sample::uniform_ntt(params.ring(), &limbs, &mut rng).unwrap();
    let (z0, z1) = ev.key_switch(&rnd, top, &from).unwrap();
    let mut neg = rnd.mul(&sparse.select_limbs(&limbs).unwrap()).unwrap();
    neg.neg_assign();
    let mut y0 = z0.clone();
    y0.add_assign(&neg).unwrap();
    stats("switch of a uniform c1", &y0, &z1, &sk.poly);
    // without ModDown: check d * (b + a s') = d (p s + e)
    let sp = sparse.select_limbs(&[0, params.q().len()]).unwrap();
    let mut k = enc_key.a.mul(&sp).unwrap();
    k.add_assign(&enc_key.b).unwrap();
    let kc = crate::encoding::crt_centered_f64(&k.clone().intt()).unwrap();
    eprintln!("key phase (p s + e) first coeffs / p: {:?}", kc.iter().take(4).map(|x| x / params.p()[0] as f64).collect::<Vec<_>>());
}
