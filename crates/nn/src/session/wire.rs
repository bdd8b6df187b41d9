//! Wire types between client and server, on top of `henn-ckks`'s serialization: the
//! evaluation keys of a plan and packed ciphertexts (a run's input or output).
//!
//! # Format (version 1)
//!
//! All integers little-endian.
//!
//! | size | field |
//! |-----:|-------|
//! | 4  | magic `b"HNNW"` |
//! | 2  | format version (`u16`, = 1) |
//! | 1  | kind: 1 evaluation keys, 2 packed ciphertexts, 3 query (seeded ciphertexts) |
//! | 1  | flags (must be 0) |
//! | 32 | plan fingerprint (SHA-256) |
//! | 4  | images (`u32`; 0 for keys) |
//! | 8  | multiplier (`f64`; 1 for keys) |
//! | 4  | object count `k` (`u32`) |
//! | k x (8 + len) | per object: its length (`u64`), then its `henn-ckks` serialization (own header, parameter fingerprint and checksum) |
//! | 8  | checksum: the first 8 bytes of SHA-256 of everything before |
//!
//! Evaluation keys are one relinearization key then one Galois key set; a query holds seeded
//! ciphertexts (the uniform half of each given by a 32-byte seed), expanded on reading.
//! Readers check the size limit first, then that the bytes are not a secret-key file (a
//! named error: a secret key must never leave the client), magic, version, kind, flags, the
//! checksum, the plan fingerprint they expect, every object against the parameters, and that
//! no byte trails.

use std::sync::Arc;

use henn_ckks::serial::{Limits, WireFormat};
use henn_ckks::{Ciphertext, CkksParams, GaloisKeys, RelinKey, SeededCiphertext};
use sha2::{Digest, Sha256};

use crate::error::{NnError, Result};

const MAGIC: [u8; 4] = *b"HNNW";
/// The wire format version this build writes and reads.
pub const WIRE_VERSION: u16 = 1;
const KIND_KEYS: u8 = 1;
const KIND_CTS: u8 = 2;
const KIND_QUERY: u8 = 3;
const HEAD: usize = 4 + 2 + 1 + 1 + 32 + 4 + 8 + 4;
const SUM: usize = 8;

/// The evaluation keys of a plan: a relinearization key and exactly the Galois keys of the
/// plan's rotation steps. Never a secret key.
#[derive(Debug, Clone)]
pub struct EvaluationKeys {
    /// Fingerprint of the plan the keys were made for.
    pub plan_fingerprint: String,
    /// Relinearization key.
    pub relin: RelinKey,
    /// Galois keys.
    pub galois: GaloisKeys,
}

/// A client's encrypted input of one run, in seeded form (about half the bytes of
/// [`PackedCiphertexts`]); a server reads it as packed ciphertexts.
#[derive(Debug, Clone)]
pub struct Query {
    /// Fingerprint of the plan the ciphertexts are laid out by.
    pub plan_fingerprint: String,
    /// Images packed in this run.
    pub images: usize,
    /// The seeded ciphertexts, in the layout's order.
    pub cts: Vec<SeededCiphertext>,
}

/// Packed ciphertexts of one run: a client's encrypted input or a server's encrypted output.
#[derive(Debug, Clone)]
pub struct PackedCiphertexts {
    /// Fingerprint of the plan the ciphertexts are laid out by.
    pub plan_fingerprint: String,
    /// Images packed in this run.
    pub images: usize,
    /// Multiplier still to apply to the slot values (1 for an input).
    pub mult: f64,
    /// The ciphertexts, in the layout's order.
    pub cts: Vec<Ciphertext>,
}

fn wire_err(msg: impl Into<String>) -> NnError {
    NnError::Wire(msg.into())
}

/// The 32 bytes of a hex SHA-256 plan fingerprint.
pub(crate) fn fingerprint_bytes(hex: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return Err(wire_err(format!(
            "plan fingerprint '{hex}' is not 64 hex digits"
        )));
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16)
            .map_err(|_| wire_err(format!("plan fingerprint '{hex}' is not hex")))?;
    }
    Ok(out)
}

fn fp_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn checksum(data: &[u8]) -> [u8; SUM] {
    let d = Sha256::digest(data);
    let mut s = [0u8; SUM];
    s.copy_from_slice(&d[..SUM]);
    s
}

fn frame(kind: u8, fp: &str, images: usize, mult: f64, objects: &[Vec<u8>]) -> Result<Vec<u8>> {
    let len: usize = objects.iter().map(|o| 8 + o.len()).sum();
    let mut out = Vec::with_capacity(HEAD + len + SUM);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&WIRE_VERSION.to_le_bytes());
    out.push(kind);
    out.push(0);
    out.extend_from_slice(&fingerprint_bytes(fp)?);
    let images = u32::try_from(images).map_err(|_| wire_err("too many images"))?;
    out.extend_from_slice(&images.to_le_bytes());
    out.extend_from_slice(&mult.to_le_bytes());
    let count = u32::try_from(objects.len()).map_err(|_| wire_err("too many objects"))?;
    out.extend_from_slice(&count.to_le_bytes());
    for o in objects {
        out.extend_from_slice(&(o.len() as u64).to_le_bytes());
        out.extend_from_slice(o);
    }
    let sum = checksum(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

/// A checked frame: plan fingerprint, images, multiplier and the objects' bytes.
struct Frame<'a> {
    fp: String,
    images: usize,
    mult: f64,
    objects: Vec<&'a [u8]>,
}

fn take<'a>(b: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8]> {
    let end = at.checked_add(n).filter(|&e| e <= b.len()).ok_or_else(|| {
        wire_err(format!(
            "truncated: {} bytes, needs more than {}",
            b.len(),
            *at
        ))
    })?;
    let s = &b[*at..end];
    *at = end;
    Ok(s)
}

fn le<const K: usize>(b: &[u8]) -> [u8; K] {
    let mut a = [0u8; K];
    a.copy_from_slice(&b[..K]);
    a
}

fn open<'a>(bytes: &'a [u8], kind: u8, expect_fp: &str, limits: &Limits) -> Result<Frame<'a>> {
    if bytes.len() > limits.max_bytes {
        return Err(wire_err(format!(
            "{} bytes, more than the limit of {}",
            bytes.len(),
            limits.max_bytes
        )));
    }
    if super::secret::looks_like_secret(bytes) {
        return Err(NnError::SecretKeyUploaded);
    }
    if bytes.len() < HEAD + SUM {
        return Err(wire_err(format!("truncated: {} bytes", bytes.len())));
    }
    let mut at = 0;
    if take(bytes, &mut at, 4)? != MAGIC {
        return Err(wire_err("not a henn wire object (bad magic)"));
    }
    let version = u16::from_le_bytes(le(take(bytes, &mut at, 2)?));
    if version != WIRE_VERSION {
        return Err(wire_err(format!(
            "wire format version {version}, this henn reads {WIRE_VERSION}"
        )));
    }
    let k = take(bytes, &mut at, 1)?[0];
    if k != kind {
        let name = |k: u8| match k {
            KIND_KEYS => "evaluation keys",
            KIND_CTS => "packed ciphertexts",
            KIND_QUERY => "a query",
            _ => "an unknown object",
        };
        return Err(wire_err(format!(
            "expected {}, got {}",
            name(kind),
            name(k)
        )));
    }
    if take(bytes, &mut at, 1)?[0] != 0 {
        return Err(wire_err("unknown flags"));
    }
    let body = &bytes[..bytes.len() - SUM];
    if checksum(body)[..] != bytes[bytes.len() - SUM..] {
        return Err(wire_err("checksum mismatch (corrupted or truncated)"));
    }
    let fp = fp_hex(take(bytes, &mut at, 32)?);
    if fp != expect_fp {
        return Err(NnError::PlanMismatch {
            what: "plan fingerprint of the received object".into(),
            stored: fp,
            computed: expect_fp.to_string(),
        });
    }
    let images = u32::from_le_bytes(le(take(bytes, &mut at, 4)?)) as usize;
    let mult = f64::from_le_bytes(le(take(bytes, &mut at, 8)?));
    if !mult.is_finite() {
        return Err(wire_err("multiplier is not finite"));
    }
    let count = u32::from_le_bytes(le(take(bytes, &mut at, 4)?)) as usize;
    // every object takes at least its 8-byte length: no allocation the buffer does not back
    if count > (body.len() - at) / 8 {
        return Err(wire_err(format!(
            "{count} objects cannot fit in {} bytes",
            body.len()
        )));
    }
    let mut objects = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u64::from_le_bytes(le(take(body, &mut at, 8)?));
        let len = usize::try_from(len).map_err(|_| wire_err("object length overflows"))?;
        objects.push(take(body, &mut at, len)?);
    }
    if at != body.len() {
        return Err(wire_err(format!("{} trailing bytes", body.len() - at)));
    }
    Ok(Frame {
        fp,
        images,
        mult,
        objects,
    })
}

fn ckks_obj<T: WireFormat>(params: &Arc<CkksParams>, b: &[u8], limits: &Limits) -> Result<T> {
    T::from_bytes(params, b, limits).map_err(|source| NnError::Ckks {
        node: "wire".into(),
        source,
    })
}

/// Every object of a frame read as `T` and turned into a ciphertext by `f`.
fn read_objects<T: WireFormat>(
    params: &Arc<CkksParams>,
    f: &Frame<'_>,
    limits: &Limits,
    g: impl Fn(T) -> Result<Ciphertext>,
) -> Result<Vec<Ciphertext>> {
    f.objects
        .iter()
        .map(|o| g(ckks_obj(params, o, limits)?))
        .collect()
}

impl EvaluationKeys {
    /// Serialized (see the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        frame(
            KIND_KEYS,
            &self.plan_fingerprint,
            0,
            1.0,
            &[self.relin.to_bytes(), self.galois.to_bytes()],
        )
    }

    /// Reads keys made for the plan with fingerprint `plan_fingerprint` and `params`.
    pub fn from_bytes(
        params: &Arc<CkksParams>,
        plan_fingerprint: &str,
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<Self> {
        let f = open(bytes, KIND_KEYS, plan_fingerprint, limits)?;
        let [relin, galois] = f.objects.as_slice() else {
            return Err(wire_err(format!(
                "evaluation keys hold {} objects, expected 2 (relinearization key, Galois keys)",
                f.objects.len()
            )));
        };
        Ok(Self {
            plan_fingerprint: f.fp,
            relin: ckks_obj(params, relin, limits)?,
            galois: ckks_obj(params, galois, limits)?,
        })
    }
}

impl PackedCiphertexts {
    /// Serialized (see the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let objs: Vec<Vec<u8>> = self.cts.iter().map(WireFormat::to_bytes).collect();
        frame(
            KIND_CTS,
            &self.plan_fingerprint,
            self.images,
            self.mult,
            &objs,
        )
    }

    /// Reads packed ciphertexts of the plan with fingerprint `plan_fingerprint` and `params`.
    pub fn from_bytes(
        params: &Arc<CkksParams>,
        plan_fingerprint: &str,
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<Self> {
        let f = open(bytes, KIND_CTS, plan_fingerprint, limits)?;
        let cts = read_objects(params, &f, limits, Ok)?;
        Ok(Self {
            plan_fingerprint: f.fp,
            images: f.images,
            mult: f.mult,
            cts,
        })
    }
}

impl Query {
    /// Serialized (see the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let objs: Vec<Vec<u8>> = self.cts.iter().map(WireFormat::to_bytes).collect();
        frame(KIND_QUERY, &self.plan_fingerprint, self.images, 1.0, &objs)
    }

    /// Reads a query of the plan with fingerprint `plan_fingerprint` and `params`, expanding
    /// the seeded ciphertexts.
    pub fn read(
        params: &Arc<CkksParams>,
        plan_fingerprint: &str,
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<PackedCiphertexts> {
        let f = open(bytes, KIND_QUERY, plan_fingerprint, limits)?;
        let cts = read_objects(params, &f, limits, |s: SeededCiphertext| {
            s.expand(params).map_err(|source| NnError::Ckks {
                node: "wire".into(),
                source,
            })
        })?;
        Ok(PackedCiphertexts {
            plan_fingerprint: f.fp,
            images: f.images,
            mult: f.mult,
            cts,
        })
    }
}

/// The plan fingerprint a wire object claims, from its header only (magic, version and length
/// checked; nothing else): a server uses it to find the model before reading the object.
pub fn peek_plan_fingerprint(bytes: &[u8]) -> Result<String> {
    if super::secret::looks_like_secret(bytes) {
        return Err(NnError::SecretKeyUploaded);
    }
    if bytes.len() < HEAD + SUM {
        return Err(wire_err(format!("truncated: {} bytes", bytes.len())));
    }
    if bytes[..4] != MAGIC {
        return Err(wire_err("not a henn wire object (bad magic)"));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != WIRE_VERSION {
        return Err(wire_err(format!(
            "wire format version {version}, this henn reads {WIRE_VERSION}"
        )));
    }
    Ok(fp_hex(&bytes[8..40]))
}

/// Bytes of the evaluation-key bundle of `plan` under `params`.
pub fn evaluation_keys_size(params: &CkksParams, plan: &crate::plan::Plan) -> Result<usize> {
    use henn_ckks::serial::{galois_keys_size, relin_key_size};
    let levels: Vec<henn_ckks::Level> = plan.rotation_keys().into_iter().map(|r| r.1).collect();
    let err = |source| NnError::Ckks {
        node: "wire".into(),
        source,
    };
    Ok(HEAD
        + 2 * 8
        + relin_key_size(params, henn_ckks::Level(plan.relin_level)).map_err(err)?
        + galois_keys_size(params, &levels).map_err(err)?
        + SUM)
}

/// Bytes of a query of `cts` seeded ciphertexts at the top level under `params`.
pub fn query_size(params: &CkksParams, cts: usize) -> usize {
    let one = henn_ckks::serial::seeded_ciphertext_size(params, params.max_level());
    HEAD + cts * (8 + one) + SUM
}

/// Bytes of packed ciphertexts (`cts` of two parts at `level`) under `params`.
pub fn packed_size(params: &CkksParams, level: usize, cts: usize) -> usize {
    let one = henn_ckks::serial::ciphertext_size(params, henn_ckks::Level(level), 2);
    HEAD + cts * (8 + one) + SUM
}
