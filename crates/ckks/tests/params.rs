//! Parameter checking, presets and the security table.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should abort the test"
)]

use henn_ckks::params::max_log_qp;
use henn_ckks::prelude::*;

#[test]
fn presets_are_128_bit_secure_and_have_the_stated_shape() {
    let r = CkksParams::new(CkksParamsLiteral::resnet()).unwrap();
    assert_eq!(r.n(), 16384);
    assert_eq!(r.q().len(), 9);
    assert_eq!(r.max_level(), Level(8));
    assert!(r.log_qp() <= 438, "{}", r.log_qp());
    assert_eq!(64 - r.q()[0].leading_zeros(), 60);
    assert!(r.q()[1..].iter().all(|&q| 64 - q.leading_zeros() == 35));
    assert_eq!(r.default_scale().log2(), 35.0);
    assert_eq!(r.dnum(), 5);
    for &q in r.q().iter().chain(r.p()) {
        assert_eq!(q % (2 * 16384), 1);
    }
    let s = CkksParams::new(CkksParamsLiteral::small()).unwrap();
    assert_eq!(s.n(), 8192);
    assert!(s.log_qp() <= 218);
    // Deterministic fingerprints, different for different parameters.
    assert_eq!(
        r.id(),
        CkksParams::new(CkksParamsLiteral::resnet()).unwrap().id()
    );
    assert_ne!(r.id(), s.id());
}

#[test]
fn security_check_rejects_oversize_modulus() {
    let mut lit = CkksParamsLiteral::resnet();
    lit.q_bits.push(35);
    match CkksParams::new(lit.clone()) {
        Err(CkksError::Insecure {
            log_qp, max_bits, ..
        }) => {
            assert_eq!(max_bits, 438);
            assert_eq!(log_qp, 473);
        }
        other => panic!("expected Insecure, got {other:?}"),
    }
    // The same with an explicit, logged insecure policy is accepted.
    lit.security = SecurityPolicy::InsecureAllowed {
        reason: "test".into(),
    };
    assert!(CkksParams::new(lit).is_ok());
    // 192-bit policy rejects the 128-bit preset.
    let mut lit = CkksParamsLiteral::resnet();
    lit.security = SecurityPolicy::Enforce { bits: 192 };
    assert!(matches!(
        CkksParams::new(lit),
        Err(CkksError::Insecure { max_bits: 305, .. })
    ));
    // Sparse secrets need the explicit policy.
    let mut lit = CkksParamsLiteral::small();
    lit.secret = SecretDistribution::SparseTernary { hamming_weight: 64 };
    assert!(CkksParams::new(lit).is_err());
}

#[test]
fn table_values() {
    assert_eq!(max_log_qp(12, 128), Some(109));
    assert_eq!(max_log_qp(13, 128), Some(218));
    assert_eq!(max_log_qp(14, 128), Some(438));
    assert_eq!(max_log_qp(15, 128), Some(881));
    assert_eq!(max_log_qp(16, 128), Some(1772));
    assert_eq!(max_log_qp(17, 128), None);
}

#[test]
fn structural_errors() {
    let base = CkksParamsLiteral::small();
    for bad in [
        CkksParamsLiteral {
            log_n: 9,
            ..base.clone()
        },
        CkksParamsLiteral {
            q_bits: vec![],
            ..base.clone()
        },
        CkksParamsLiteral {
            q_bits: vec![62, 40],
            ..base.clone()
        },
        CkksParamsLiteral {
            p_bits: vec![],
            ..base.clone()
        },
        CkksParamsLiteral {
            log_scale: f64::NAN,
            ..base.clone()
        },
        CkksParamsLiteral {
            dnum: Some(0),
            ..base.clone()
        },
        CkksParamsLiteral {
            dnum: Some(9),
            ..base.clone()
        },
    ] {
        assert!(CkksParams::new(bad.clone()).is_err(), "{bad:?} accepted");
    }
}
