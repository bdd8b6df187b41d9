//! Serialization: round trips, sizes, and rejection of truncated, corrupt, mistyped,
//! foreign, forged and oversized input; a digest pins the format.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::Arc;

use henn_ckks::prelude::*;
use henn_ckks::serial::{self, CHECKSUM_LEN, HEADER_LEN, Limits, TypeTag, WireFormat};
use henn_ckks::{SeededCiphertext, params::ParamsId};
use henn_testkit::{TEST_INSECURE_LOGN11_DNUM, TEST_INSECURE_LOGN12_L4, TestContext};
use sha2::{Digest, Sha256};

fn tc() -> Arc<TestContext> {
    henn_testkit::context(&TEST_INSECURE_LOGN12_L4)
}

fn values(n: usize) -> Vec<f64> {
    henn_testkit::uniform_values(n, 1.0, 42)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Recomputes the checksum of a (forged) buffer.
fn reseal(buf: &mut [u8]) {
    let body = buf.len() - CHECKSUM_LEN;
    let d = Sha256::digest(&buf[..body]);
    buf[body..].copy_from_slice(&d[..CHECKSUM_LEN]);
}

/// A small ciphertext: level 0.
fn small_ct(c: &TestContext) -> Ciphertext {
    let pt = c
        .encoder
        .encode(&values(16), Level(0), c.params.default_scale())
        .unwrap();
    c.encryptor
        .encrypt_pk(&pt, &c.pk, &mut TestContext::rng(7))
        .unwrap()
}

#[test]
fn params_round_trip() {
    let c = tc();
    let bytes = serial::params_to_bytes(&c.params).unwrap();
    // The receiver enforces its own (128-bit) policy: insecure test parameters are refused
    // unless the receiver itself opts in.
    assert!(matches!(
        serial::params_from_bytes(&bytes),
        Err(CkksError::Insecure { .. })
    ));
    let policy = c.params.literal().security.clone();
    let p =
        serial::params_from_bytes_with_policy(&bytes, &serial::Limits::default(), policy).unwrap();
    assert_eq!(p.id(), c.params.id());
    assert_eq!(p.literal(), c.params.literal());
    assert_eq!(p.q(), c.params.q());
    let h = serial::read_header(&bytes).unwrap();
    assert_eq!(h.type_tag, TypeTag::Params);
    assert_eq!(h.params_id, c.params.id());

    let small = CkksParams::new(CkksParamsLiteral::small()).unwrap();
    let p = serial::params_from_bytes(&serial::params_to_bytes(&small).unwrap()).unwrap();
    assert_eq!(p.id(), small.id());
}

#[test]
fn params_with_wrong_id_rejected() {
    let c = tc();
    let mut bytes = serial::params_to_bytes(&c.params).unwrap();
    bytes[8] ^= 1;
    reseal(&mut bytes);
    let policy = c.params.literal().security.clone();
    assert!(matches!(
        serial::params_from_bytes_with_policy(&bytes, &serial::Limits::default(), policy),
        Err(CkksError::ParamsMismatch { .. })
    ));
}

#[test]
fn plaintext_round_trip() {
    let c = tc();
    for level in [Level(0), Level(2), c.params.max_level()] {
        let pt = c
            .encoder
            .encode(&values(100), level, c.params.default_scale())
            .unwrap();
        let bytes = pt.to_bytes();
        let back: Plaintext = serial::from_bytes(&c.params, &bytes).unwrap();
        assert_eq!(back, pt);
    }
}

#[test]
fn ciphertext_round_trip_two_and_three_parts() {
    let c = tc();
    let v = values(64);
    let ct = c.encrypt(&v, &mut TestContext::rng(1));
    let bytes = serial::to_bytes(&ct);
    assert_eq!(
        bytes.len(),
        serial::ciphertext_size(&c.params, ct.level(), 2)
    );
    let back: Ciphertext = serial::from_bytes(&c.params, &bytes).unwrap();
    assert_eq!(back, ct);
    henn_testkit::assert_precision("ct round trip", &c.decrypt(&back), &v, 20.0);

    let ct3 = c.eval.mul(&ct, &ct).unwrap();
    assert_eq!(ct3.size(), 3);
    let bytes3 = ct3.to_bytes();
    assert_eq!(
        bytes3.len(),
        serial::ciphertext_size(&c.params, ct3.level(), 3)
    );
    let back3 = Ciphertext::from_bytes(&c.params, &bytes3, &Limits::default()).unwrap();
    assert_eq!(back3, ct3);
    let sq: Vec<f64> = v.iter().map(|x| x * x).collect();
    let got = c.decrypt(
        &c.eval
            .rescale(&c.eval.relinearize(&back3, &c.rlk).unwrap())
            .unwrap(),
    );
    henn_testkit::assert_precision("ct3 round trip", &got, &sq, 20.0);

    // Lower level, non-default scale.
    let low = c
        .eval
        .rescale(&c.eval.relinearize(&ct3, &c.rlk).unwrap())
        .unwrap();
    let back: Ciphertext = serial::from_bytes(&c.params, &low.to_bytes()).unwrap();
    assert_eq!(back, low);
}

#[test]
fn bit_packing_is_compact() {
    // N = 4096, primes [55, 40 x 4]: residues take 55 and 40 bits, not 64.
    let c = tc();
    let ct = c.encrypt(&values(8), &mut TestContext::rng(2));
    let n = c.params.n();
    let payload_polys = 2 * (2 + 5 * 2 + n * (55 + 4 * 40) / 8);
    assert_eq!(
        ct.to_bytes().len(),
        HEADER_LEN + 13 + payload_polys + CHECKSUM_LEN
    );
}

#[test]
fn public_key_round_trip() {
    let c = tc();
    let bytes = c.pk.to_bytes();
    // b and a 32-byte seed: about one polynomial.
    let one_poly = serial::seeded_ciphertext_size(&c.params, c.params.max_level());
    assert!(bytes.len() < one_poly, "{} vs {one_poly}", bytes.len());
    let pk: PublicKey = serial::from_bytes(&c.params, &bytes).unwrap();
    assert_eq!(pk, c.pk);
    let v = values(32);
    let pt = c
        .encoder
        .encode(&v, c.params.max_level(), c.params.default_scale())
        .unwrap();
    let ct = c
        .encryptor
        .encrypt_pk(&pt, &pk, &mut TestContext::rng(3))
        .unwrap();
    henn_testkit::assert_precision("pk round trip", &c.decrypt(&ct), &v, 20.0);
}

#[test]
fn relin_key_round_trip() {
    let c = tc();
    let bytes = c.rlk.to_bytes();
    let rlk: RelinKey = serial::from_bytes(&c.params, &bytes).unwrap();
    assert_eq!(rlk, c.rlk);
}

#[test]
fn galois_keys_round_trip() {
    let c = tc();
    let bytes = c.gk.to_bytes();
    let gk: GaloisKeys = serial::from_bytes(&c.params, &bytes).unwrap();
    assert_eq!(gk.len(), c.gk.len());
    assert_eq!(gk, c.gk);
    let v = values(c.params.slots());
    let ct = c.encrypt(&v, &mut TestContext::rng(4));
    let rot = c.eval.rotate(&ct, 4, &gk).unwrap();
    let want: Vec<f64> = (0..v.len()).map(|i| v[(i + 4) % v.len()]).collect();
    henn_testkit::assert_precision(
        "rotation with deserialized keys",
        &c.decrypt(&rot),
        &want,
        20.0,
    );

    let empty = GaloisKeys::default();
    let back: GaloisKeys = serial::from_bytes(&c.params, &empty.to_bytes()).unwrap();
    assert!(back.is_empty());
}

#[test]
fn seeded_ciphertext_round_trip_and_half_size() {
    let c = tc();
    let v = values(200);
    let pt = c
        .encoder
        .encode(&v, c.params.max_level(), c.params.default_scale())
        .unwrap();
    let mut rng = TestContext::rng(5);
    let sct = c.encryptor.encrypt_sk_seeded(&pt, &c.sk, &mut rng).unwrap();
    let bytes = sct.to_bytes();
    assert_eq!(
        bytes.len(),
        serial::seeded_ciphertext_size(&c.params, pt.level())
    );
    let full = sct.expand(&c.params).unwrap();
    let full_len = full.to_bytes().len();
    let ratio = bytes.len() as f64 / full_len as f64;
    assert!(
        (0.49..=0.51).contains(&ratio),
        "seeded {} vs full {full_len} bytes",
        bytes.len()
    );

    let back: SeededCiphertext = serial::from_bytes(&c.params, &bytes).unwrap();
    assert_eq!(back, sct);
    let ct = back.expand(&c.params).unwrap();
    assert_eq!(ct, full);
    henn_testkit::assert_precision("seeded round trip", &c.decrypt(&ct), &v, 20.0);

    // Works at a lower level too, and evaluates like any ciphertext.
    let pt1 = c
        .encoder
        .encode(&v, Level(1), c.params.default_scale())
        .unwrap();
    let s1 = c
        .encryptor
        .encrypt_sk_seeded(&pt1, &c.sk, &mut rng)
        .unwrap();
    let s1: SeededCiphertext = serial::from_bytes(&c.params, &s1.to_bytes()).unwrap();
    let ct1 = s1.expand(&c.params).unwrap();
    let dbl = c.eval.add(&ct1, &ct1).unwrap();
    let want: Vec<f64> = v.iter().map(|x| 2.0 * x).collect();
    henn_testkit::assert_precision("seeded level 1", &c.decrypt(&dbl), &want, 20.0);
}

#[test]
fn every_truncation_rejected() {
    let c = tc();
    let bytes = small_ct(&c).to_bytes();
    for len in 0..bytes.len() {
        let r = Ciphertext::from_bytes(&c.params, &bytes[..len], &Limits::default());
        match r {
            Err(CkksError::Truncated { .. }) => {}
            other => panic!("length {len}: expected Truncated, got {other:?}"),
        }
    }
    assert!(Ciphertext::from_bytes(&c.params, &bytes, &Limits::default()).is_ok());
    // Trailing garbage too.
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        serial::from_bytes::<Ciphertext>(&c.params, &long),
        Err(CkksError::Serialization(_))
    ));
}

#[test]
fn flipped_bytes_rejected() {
    let c = tc();
    let bytes = small_ct(&c).to_bytes();
    let mut positions: Vec<usize> = (0..HEADER_LEN + 64).collect();
    positions.extend((HEADER_LEN + 64..bytes.len()).step_by(97));
    positions.extend(bytes.len() - CHECKSUM_LEN..bytes.len());
    for &i in &positions {
        for bit in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= bit;
            let r = serial::from_bytes::<Ciphertext>(&c.params, &b);
            assert!(r.is_err(), "flip of bit {bit:#x} at byte {i} accepted");
            if i >= HEADER_LEN {
                assert_eq!(r.unwrap_err(), CkksError::ChecksumMismatch, "byte {i}");
            }
        }
    }
}

#[test]
fn wrong_type_version_magic_rejected() {
    let c = tc();
    let bytes = small_ct(&c).to_bytes();
    // A ciphertext read as a plaintext or a key.
    match serial::from_bytes::<Plaintext>(&c.params, &bytes) {
        Err(CkksError::WrongType { expected, found }) => {
            assert_eq!(expected, "plaintext");
            assert_eq!(found, "ciphertext");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        serial::from_bytes::<RelinKey>(&c.params, &bytes),
        Err(CkksError::WrongType { .. })
    ));
    assert!(matches!(
        serial::params_from_bytes(&bytes),
        Err(CkksError::WrongType { .. })
    ));
    // Unknown tag.
    let mut b = bytes.clone();
    b[6] = 99;
    reseal(&mut b);
    assert!(matches!(
        serial::from_bytes::<Ciphertext>(&c.params, &b),
        Err(CkksError::WrongType { .. })
    ));
    // Version.
    let mut b = bytes.clone();
    b[4..6].copy_from_slice(&1u16.to_le_bytes());
    reseal(&mut b);
    assert_eq!(
        serial::from_bytes::<Ciphertext>(&c.params, &b).unwrap_err(),
        CkksError::UnsupportedVersion {
            found: 1,
            supported: 2
        }
    );
    // Magic.
    let mut b = bytes.clone();
    b[0] = b'X';
    reseal(&mut b);
    assert_eq!(
        serial::from_bytes::<Ciphertext>(&c.params, &b).unwrap_err(),
        CkksError::BadMagic
    );
    assert_eq!(
        serial::from_bytes::<Ciphertext>(&c.params, b"{\"json\": 1}").unwrap_err(),
        CkksError::BadMagic
    );
    // Flags.
    let mut b = bytes.clone();
    b[7] = 1;
    reseal(&mut b);
    assert!(serial::from_bytes::<Ciphertext>(&c.params, &b).is_err());
}

#[test]
fn other_parameters_rejected() {
    let a = tc();
    let b = henn_testkit::context(&TEST_INSECURE_LOGN11_DNUM);
    let ct = small_ct(&a);
    let err = serial::from_bytes::<Ciphertext>(&b.params, &ct.to_bytes()).unwrap_err();
    assert!(matches!(err, CkksError::ParamsMismatch { .. }), "{err:?}");
    let pt = a
        .encoder
        .encode(&[1.0], Level(0), a.params.default_scale())
        .unwrap();
    assert!(matches!(
        serial::from_bytes::<Plaintext>(&b.params, &pt.to_bytes()),
        Err(CkksError::ParamsMismatch { .. })
    ));
    assert!(matches!(
        serial::from_bytes::<PublicKey>(&b.params, &a.pk.to_bytes()),
        Err(CkksError::ParamsMismatch { .. })
    ));
    assert!(matches!(
        serial::from_bytes::<RelinKey>(&b.params, &a.rlk.to_bytes()),
        Err(CkksError::ParamsMismatch { .. })
    ));
    assert!(matches!(
        serial::from_bytes::<GaloisKeys>(&b.params, &a.gk.to_bytes()),
        Err(CkksError::ParamsMismatch { .. })
    ));
    // And the other way round, for a key with two digits.
    assert!(matches!(
        serial::from_bytes::<RelinKey>(&a.params, &b.rlk.to_bytes()),
        Err(CkksError::ParamsMismatch { .. })
    ));
    let rlk: RelinKey = serial::from_bytes(&b.params, &b.rlk.to_bytes()).unwrap();
    assert_eq!(rlk, b.rlk);
}

#[test]
fn forged_residue_out_of_range_rejected() {
    let c = tc();
    let pt = c
        .encoder
        .encode(&values(4), Level(0), c.params.default_scale())
        .unwrap();
    let mut bytes = pt.to_bytes();
    // Payload: level u32, scale f64, limb count u16, limb index u16, then the packed
    // residues: set the first residue's 55 bits to all ones (>= q_0).
    let first = HEADER_LEN + 4 + 8 + 2 + 2;
    for b in &mut bytes[first..first + 6] {
        *b = 0xff;
    }
    bytes[first + 6] |= 0x7f;
    reseal(&mut bytes);
    match serial::from_bytes::<Plaintext>(&c.params, &bytes) {
        Err(CkksError::Serialization(msg)) => assert!(msg.contains("not below its prime"), "{msg}"),
        other => panic!("{other:?}"),
    }

    // Limb index and level fields forged with a valid checksum are caught too.
    let mut b = pt.to_bytes();
    b[HEADER_LEN + 14] = 3; // limb index 0 -> 3
    reseal(&mut b);
    assert!(matches!(
        serial::from_bytes::<Plaintext>(&c.params, &b),
        Err(CkksError::Serialization(_))
    ));
    let mut b = pt.to_bytes();
    b[HEADER_LEN] = 9; // level 0 -> 9 (> max level 4)
    reseal(&mut b);
    assert!(matches!(
        serial::from_bytes::<Plaintext>(&c.params, &b),
        Err(CkksError::LevelOutOfRange { .. })
    ));
    let mut b = pt.to_bytes();
    b[HEADER_LEN] = 1; // level 0 -> 1: one limb where two are needed
    reseal(&mut b);
    assert!(serial::from_bytes::<Plaintext>(&c.params, &b).is_err());
    // Scale NaN.
    let mut b = pt.to_bytes();
    b[HEADER_LEN + 4..HEADER_LEN + 12].copy_from_slice(&f64::NAN.to_bits().to_le_bytes());
    reseal(&mut b);
    assert!(matches!(
        serial::from_bytes::<Plaintext>(&c.params, &b),
        Err(CkksError::Serialization(_))
    ));
}

#[test]
fn size_limit_enforced() {
    let c = tc();
    let bytes = small_ct(&c).to_bytes();
    let err = Ciphertext::from_bytes(&c.params, &bytes, &Limits::new(1000)).unwrap_err();
    assert_eq!(
        err,
        CkksError::TooLarge {
            size: bytes.len() as u64,
            limit: 1000
        }
    );
    assert!(Ciphertext::from_bytes(&c.params, &bytes, &Limits::new(bytes.len())).is_ok());

    // A short buffer declaring a huge payload: refused before anything is allocated.
    for declared in [u64::MAX, u64::MAX - 40, 1 << 40] {
        let mut b = bytes[..HEADER_LEN].to_vec();
        b[24..32].copy_from_slice(&declared.to_le_bytes());
        assert!(matches!(
            serial::from_bytes::<Ciphertext>(&c.params, &b),
            Err(CkksError::TooLarge { .. })
        ));
    }
    // Declared length within the limit but beyond the buffer.
    let mut b = bytes[..HEADER_LEN].to_vec();
    b[24..32].copy_from_slice(&1_000_000u64.to_le_bytes());
    assert!(matches!(
        serial::from_bytes::<Ciphertext>(&c.params, &b),
        Err(CkksError::Truncated { .. })
    ));
    // A forged Galois key count is bounded by the data actually present.
    let empty = GaloisKeys::default().to_bytes();
    let mut g = empty.clone();
    g[8..24].copy_from_slice(&c.params.id().0);
    g[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    reseal(&mut g);
    assert!(matches!(
        serial::from_bytes::<GaloisKeys>(&c.params, &g),
        Err(CkksError::Truncated { .. })
    ));
}

#[test]
fn read_header_reports_object() {
    let c = tc();
    let ct = small_ct(&c);
    let h = serial::read_header(&ct.to_bytes()).unwrap();
    assert_eq!(h.version, serial::FORMAT_VERSION);
    assert_eq!(h.type_tag, TypeTag::Ciphertext);
    assert_eq!(h.params_id, c.params.id());
    assert_eq!(h.params_id, ParamsId(c.params.id().0));
}

/// Pins the wire format. If this fails after a deliberate format change, bump
/// `serial::FORMAT_VERSION` (and keep reading the old version if files exist in the
/// field), then record the new digests printed by the failure message.
#[test]
fn format_digest() {
    let small = CkksParams::new(CkksParamsLiteral::small()).unwrap();
    let pbytes = serial::params_to_bytes(&small).unwrap();
    let pdigest = hex(&Sha256::digest(&pbytes));

    let c = tc();
    let vals: Vec<f64> = (0..16).map(|i| f64::from(i) / 16.0 - 0.5).collect();
    let pt = c
        .encoder
        .encode(&vals, Level(1), c.params.default_scale())
        .unwrap();
    let tbytes = pt.to_bytes();
    let tdigest = hex(&Sha256::digest(&tbytes));

    assert_eq!(
        (pdigest.as_str(), tdigest.as_str()),
        (PARAMS_SMALL_DIGEST, PLAINTEXT_DIGEST),
        "serialization format changed (params {} bytes, plaintext {} bytes)",
        pbytes.len(),
        tbytes.len()
    );
}

/// SHA-256 of `params_to_bytes` of the `small` preset (173 bytes).
const PARAMS_SMALL_DIGEST: &str =
    "5ecd814613cdd884ee723c6dba9b2701551fb267baeff2185bd02e5aa6b45a77";
/// SHA-256 of a plaintext of 16 fixed values at level 1 under TEST_INSECURE_LOGN12_L4
/// (48,698 bytes).
const PLAINTEXT_DIGEST: &str = "fe8df6fb8f4998fd016f0c07fdccf92c3e852aa664c263860487b4162a0a9afa";

#[test]
fn resnet_sizes() {
    // N = 16384, data primes [60, 35 x 8]: 340 bits per coefficient at the top level.
    let p = CkksParams::new(CkksParamsLiteral::resnet()).unwrap();
    let top = p.max_level();
    let poly = 2 + 9 * 2 + 16384 * 340 / 8;
    assert_eq!(
        serial::ciphertext_size(&p, top, 2),
        HEADER_LEN + 13 + 2 * poly + CHECKSUM_LEN
    );
    assert_eq!(serial::ciphertext_size(&p, top, 2), 1_392_733);
    assert_eq!(serial::seeded_ciphertext_size(&p, top), 696_424);
}
