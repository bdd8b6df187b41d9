//! Versioned, fingerprinted, size-limited binary serialization of parameters, plaintexts,
//! ciphertexts (full and seeded) and public evaluation keys.
//!
//! Secret keys have no serializer: they never leave the client.
//!
//! # Format (version 2)
//!
//! All integers little-endian.
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 4  | magic `b"HENN"` |
//! | 4  | 2  | format version (`u16`, = 2) |
//! | 6  | 1  | type tag ([`TypeTag`]) |
//! | 7  | 1  | flags (`u8`, must be 0) |
//! | 8  | 16 | [`ParamsId`] of the parameters the object belongs to (its own id for parameters) |
//! | 24 | 8  | payload length `len` (`u64`) |
//! | 32 | len | payload |
//! | 32 + len | 8 | checksum: the first 8 bytes of SHA-256(header ‖ payload) |
//!
//! Payloads:
//!
//! - **Params**: the [`CkksParamsLiteral`] as JSON; reading rebuilds the parameters and
//!   checks that the rebuilt fingerprint equals the stored one.
//! - **Poly** (building block): limb count `u16`, the limbs' context indices (`u16` each),
//!   then per limb its `N` residues bit-packed LSB-first at `bits(q_i)` bits each
//!   (`N * bits(q_i) / 8` bytes). Readers check the limb indices against what the object
//!   needs and every residue against its prime.
//! - **Plaintext**: level `u32`, scale `f64`, poly over `q_0..q_level`.
//! - **Ciphertext**: level `u32`, scale `f64`, part count `u8` (2 or 3), the parts.
//! - **SeededCiphertext**: level `u32`, scale `f64`, seed (32 bytes), `c_0`; `a` is
//!   re-expanded from the seed.
//! - **PublicKey**: seed (32 bytes), `b` over the data primes; `a` is re-expanded.
//! - **RelinKey**: key-switching key: seed (32 bytes), the highest level it serves `u32`,
//!   digit count `u16` (that level's), the `b_j` over `q_0..q_level` and the special primes;
//!   the `a_j` are re-expanded from the seed.
//! - **GaloisKeys**: key count `u32`, then per key (strictly increasing elements) the Galois
//!   element `u64` and a key-switching key. An empty set carries the all-zero fingerprint.
//!
//! Readers check, in order: size limit, magic, version, type tag, flags, declared length
//! against the buffer (truncation), checksum, fingerprint, then the payload structure; any
//! trailing byte is an error. Nothing is allocated from an untrusted length that the buffer
//! does not back.

use std::collections::BTreeMap;
use std::sync::Arc;

use henn_ring::{Ntt, Poly};
use sha2::{Digest, Sha256};

use crate::bootstrap::{BootstrapKeys, EncapsulationKey};
use crate::ciphertext::{Ciphertext, Plaintext, SeededCiphertext, expand_uniform_one};
use crate::error::{CkksError, Result};
use crate::keys::{GaloisKey, GaloisKeys, KeySwitchKey, PublicKey, RelinKey, expand_uniform};
use crate::params::{CkksParams, CkksParamsLiteral, ParamsId, SecurityPolicy};
use crate::types::{GaloisElement, Level, Scale};

/// Magic bytes opening every serialized object.
pub const MAGIC: [u8; 4] = *b"HENN";
/// The format version this build writes and reads (2: key-switching keys carry the highest
/// level they serve).
pub const FORMAT_VERSION: u16 = 2;
/// Header length in bytes.
pub const HEADER_LEN: usize = 32;
/// Checksum length in bytes.
pub const CHECKSUM_LEN: usize = 8;
/// Largest parameter payload accepted (JSON literal).
const MAX_PARAMS_PAYLOAD: usize = 64 * 1024;
/// Largest number of primes (data + special) accepted in serialized parameters.
const MAX_PARAMS_PRIMES: usize = 64;

/// The kind of object a buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum TypeTag {
    /// [`CkksParams`].
    Params = 1,
    /// [`Plaintext`].
    Plaintext = 2,
    /// [`Ciphertext`].
    Ciphertext = 3,
    /// [`PublicKey`].
    PublicKey = 4,
    /// [`RelinKey`].
    RelinKey = 5,
    /// [`GaloisKeys`].
    GaloisKeys = 6,
    /// [`SeededCiphertext`].
    SeededCiphertext = 7,
    /// [`BootstrapKeys`].
    BootstrapKeys = 8,
}

impl TypeTag {
    /// The tag for a byte, if known.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Params,
            2 => Self::Plaintext,
            3 => Self::Ciphertext,
            4 => Self::PublicKey,
            5 => Self::RelinKey,
            6 => Self::GaloisKeys,
            7 => Self::SeededCiphertext,
            8 => Self::BootstrapKeys,
            _ => return None,
        })
    }
    /// Human-readable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Params => "parameter set",
            Self::Plaintext => "plaintext",
            Self::Ciphertext => "ciphertext",
            Self::PublicKey => "public key",
            Self::RelinKey => "relinearization key",
            Self::GaloisKeys => "Galois key set",
            Self::SeededCiphertext => "seeded ciphertext",
            Self::BootstrapKeys => "bootstrapping key set",
        }
    }
}

impl std::fmt::Display for TypeTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Limits applied when reading untrusted data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted serialized object, header and checksum included.
    pub max_bytes: usize,
}

impl Limits {
    /// The default limit: 1 GiB (enough for large Galois key sets).
    pub const DEFAULT_MAX_BYTES: usize = 1 << 30;

    /// Limits with the given maximum object size in bytes.
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

/// The decoded header of a serialized object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u16,
    /// Object kind.
    pub type_tag: TypeTag,
    /// Fingerprint of the parameters the object belongs to.
    pub params_id: ParamsId,
    /// Payload length in bytes.
    pub payload_len: u64,
}

mod sealed {
    pub trait Sealed {}
}

/// Objects with a henn wire format. Sealed: implemented for [`Plaintext`], [`Ciphertext`],
/// [`SeededCiphertext`], [`PublicKey`], [`RelinKey`] and [`GaloisKeys`]; parameters use
/// [`params_to_bytes`] / [`params_from_bytes`].
pub trait WireFormat: sealed::Sealed + Sized {
    /// The type tag written in the header.
    const TYPE_TAG: TypeTag;
    /// Serializes the object.
    fn to_bytes(&self) -> Vec<u8>;
    /// Deserializes an object made for `params`, checking the header, size limit, checksum,
    /// fingerprint and every field.
    fn from_bytes(params: &Arc<CkksParams>, bytes: &[u8], limits: &Limits) -> Result<Self>;
}

/// Serializes `obj` (same as [`WireFormat::to_bytes`]).
pub fn to_bytes<T: WireFormat>(obj: &T) -> Vec<u8> {
    obj.to_bytes()
}

/// Deserializes an object for `params` with the default [`Limits`].
pub fn from_bytes<T: WireFormat>(params: &Arc<CkksParams>, bytes: &[u8]) -> Result<T> {
    T::from_bytes(params, bytes, &Limits::default())
}

/// Deserializes an object for `params` with explicit limits.
pub fn from_bytes_with_limits<T: WireFormat>(
    params: &Arc<CkksParams>,
    bytes: &[u8],
    limits: &Limits,
) -> Result<T> {
    T::from_bytes(params, bytes, limits)
}

// ---------------------------------------------------------------------------------------
// Framing

/// Starts a buffer with a header whose length field is patched by [`finish_frame`].
fn start_frame(tag: TypeTag, id: ParamsId, payload_hint: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload_hint + CHECKSUM_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(tag as u8);
    out.push(0);
    out.extend_from_slice(&id.0);
    out.extend_from_slice(&0u64.to_le_bytes());
    out
}

fn finish_frame(mut out: Vec<u8>) -> Vec<u8> {
    let len = (out.len().saturating_sub(HEADER_LEN)) as u64;
    if let Some(field) = out.get_mut(24..32) {
        field.copy_from_slice(&len.to_le_bytes());
    }
    let sum = checksum(&out);
    out.extend_from_slice(&sum);
    out
}

fn checksum(data: &[u8]) -> [u8; CHECKSUM_LEN] {
    let d = Sha256::digest(data);
    let mut s = [0u8; CHECKSUM_LEN];
    for (o, i) in s.iter_mut().zip(d.iter()) {
        *o = *i;
    }
    s
}

/// Reads and checks the header of a serialized object (magic, version, known type tag,
/// flags) without verifying the payload or checksum. Useful to inspect a file.
pub fn read_header(bytes: &[u8]) -> Result<Header> {
    let mut r = Reader::new(bytes);
    let magic = r.take(4)?;
    if magic != MAGIC {
        return Err(CkksError::BadMagic);
    }
    let version = r.u16()?;
    if version != FORMAT_VERSION {
        return Err(CkksError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let tag = r.u8()?;
    let type_tag = TypeTag::from_u8(tag).ok_or_else(|| CkksError::WrongType {
        expected: "known henn object",
        found: format!("unknown object type (tag {tag})"),
    })?;
    let flags = r.u8()?;
    if flags != 0 {
        return Err(CkksError::Serialization(format!(
            "unknown header flags {flags:#04x}; the data was written by a newer henn or is corrupt"
        )));
    }
    let params_id = ParamsId(r.array::<16>()?);
    let payload_len = r.u64()?;
    Ok(Header {
        version,
        type_tag,
        params_id,
        payload_len,
    })
}

/// Checks the frame (limit, header, type, length, checksum) and returns the header and
/// payload.
fn open_frame<'a>(
    bytes: &'a [u8],
    expected: TypeTag,
    limits: &Limits,
) -> Result<(Header, &'a [u8])> {
    if bytes.len() > limits.max_bytes {
        return Err(CkksError::TooLarge {
            size: bytes.len() as u64,
            limit: limits.max_bytes as u64,
        });
    }
    if bytes.len() < HEADER_LEN {
        // Report a bad magic first if what is there is not ours.
        if bytes.len() >= 4 && bytes.get(..4) != Some(&MAGIC[..]) {
            return Err(CkksError::BadMagic);
        }
        return Err(CkksError::Truncated {
            needed: HEADER_LEN,
            have: bytes.len(),
        });
    }
    let header = read_header(bytes)?;
    if header.type_tag != expected {
        return Err(CkksError::WrongType {
            expected: expected.name(),
            found: header.type_tag.name().to_string(),
        });
    }
    let total = header
        .payload_len
        .checked_add((HEADER_LEN + CHECKSUM_LEN) as u64)
        .ok_or(CkksError::TooLarge {
            size: u64::MAX,
            limit: limits.max_bytes as u64,
        })?;
    if total > limits.max_bytes as u64 {
        return Err(CkksError::TooLarge {
            size: total,
            limit: limits.max_bytes as u64,
        });
    }
    let total = usize::try_from(total).map_err(|_| CkksError::TooLarge {
        size: total,
        limit: limits.max_bytes as u64,
    })?;
    if bytes.len() < total {
        return Err(CkksError::Truncated {
            needed: total,
            have: bytes.len(),
        });
    }
    if bytes.len() > total {
        return Err(CkksError::Serialization(format!(
            "{} trailing bytes after the {} of the object; pass exactly one object",
            bytes.len() - total,
            expected.name()
        )));
    }
    let (body, sum) = bytes
        .split_at_checked(total - CHECKSUM_LEN)
        .ok_or(CkksError::Truncated {
            needed: total,
            have: bytes.len(),
        })?;
    if checksum(body) != sum {
        return Err(CkksError::ChecksumMismatch);
    }
    let payload = body.get(HEADER_LEN..).ok_or(CkksError::Truncated {
        needed: HEADER_LEN,
        have: body.len(),
    })?;
    Ok((header, payload))
}

/// Opens a frame and checks its fingerprint against `params`.
fn open_for<'a>(
    params: &CkksParams,
    bytes: &'a [u8],
    expected: TypeTag,
    limits: &Limits,
) -> Result<Reader<'a>> {
    let (header, payload) = open_frame(bytes, expected, limits)?;
    params.check_id(header.params_id)?;
    Ok(Reader::new(payload))
}

// ---------------------------------------------------------------------------------------
// Primitive reader / writer

#[derive(Debug)]
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let (head, tail) = self.buf.split_at_checked(n).ok_or(CkksError::Truncated {
            needed: n,
            have: self.buf.len(),
        })?;
        self.buf = tail;
        Ok(head)
    }
    fn array<const K: usize>(&mut self) -> Result<[u8; K]> {
        let s = self.take(K)?;
        let mut a = [0u8; K];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(u8::from_le_bytes(self.array::<1>()?))
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array::<2>()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array::<4>()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array::<8>()?))
    }
    fn remaining(&self) -> usize {
        self.buf.len()
    }
    fn finish(self) -> Result<()> {
        if !self.buf.is_empty() {
            return Err(CkksError::Serialization(format!(
                "{} unexpected bytes at the end of the payload; the data is malformed",
                self.buf.len()
            )));
        }
        Ok(())
    }

    fn level(&mut self, params: &CkksParams) -> Result<Level> {
        let l = self.u32()?;
        let level = Level(usize::try_from(l).map_err(|_| CkksError::LevelOutOfRange {
            level: usize::MAX,
            max: 0,
        })?);
        params.check_level(level)?;
        Ok(level)
    }
    fn scale(&mut self) -> Result<Scale> {
        let v = f64::from_bits(self.u64()?);
        Scale::new(v).ok_or_else(|| {
            CkksError::Serialization(format!("invalid scale {v}: must be finite and >= 1"))
        })
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_level(out: &mut Vec<u8>, l: Level) {
    put_u32(out, l.0 as u32);
}
fn put_scale(out: &mut Vec<u8>, s: Scale) {
    put_u64(out, s.value().to_bits());
}

// ---------------------------------------------------------------------------------------
// Polynomials

fn bits_of(q: u64) -> u32 {
    64 - q.leading_zeros()
}

/// Bytes of one packed limb of `n` residues at `bits` bits.
fn packed_len(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(8)
}

/// Serialized size of a poly over primes with the given bit sizes.
fn poly_len(n: usize, bits: impl Iterator<Item = u32>) -> usize {
    let mut len = 2;
    for b in bits {
        len += 2 + packed_len(n, b);
    }
    len
}

fn pack_limb(out: &mut Vec<u8>, vals: &[u64], bits: u32) {
    let mut acc: u128 = 0;
    let mut nacc: u32 = 0;
    for &v in vals {
        acc |= u128::from(v) << nacc;
        nacc += bits;
        if nacc >= 64 {
            out.extend_from_slice(&(acc as u64).to_le_bytes());
            acc >>= 64;
            nacc -= 64;
        }
    }
    let rest = (nacc as usize).div_ceil(8);
    out.extend_from_slice(acc.to_le_bytes().get(..rest).unwrap_or(&[]));
}

fn write_poly(out: &mut Vec<u8>, p: &Poly<Ntt>) {
    put_u16(out, p.num_limbs() as u16);
    for &i in p.limbs() {
        put_u16(out, i as u16);
    }
    for (m, limb) in p.iter_limbs() {
        pack_limb(out, limb, bits_of(m.value()));
    }
}

fn unpack_limb(src: &[u8], q: u64, n: usize, out: &mut Vec<u64>, limb_pos: usize) -> Result<()> {
    let bits = bits_of(q);
    let mask = (1u64 << bits) - 1;
    let mut acc: u128 = 0;
    let mut nacc: u32 = 0;
    let mut bytes = src.iter();
    for k in 0..n {
        while nacc < bits {
            let b = bytes.next().ok_or(CkksError::Truncated {
                needed: packed_len(n, bits),
                have: src.len(),
            })?;
            acc |= u128::from(*b) << nacc;
            nacc += 8;
        }
        let v = (acc as u64) & mask;
        acc >>= bits;
        nacc -= bits;
        if v >= q {
            return Err(CkksError::Serialization(format!(
                "residue {v} at limb {limb_pos}, coefficient {k} is not below its prime {q}; the data is corrupt or \
                 was made for other parameters"
            )));
        }
        out.push(v);
    }
    if acc != 0 || bytes.next().is_some() {
        return Err(CkksError::Serialization(
            "non-zero padding after packed residues; the data is malformed".into(),
        ));
    }
    Ok(())
}

fn read_poly(params: &CkksParams, r: &mut Reader<'_>, expected: &[usize]) -> Result<Poly<Ntt>> {
    let ctx = params.ring();
    let n = params.n();
    let count = usize::from(r.u16()?);
    if count != expected.len() {
        return Err(CkksError::Serialization(format!(
            "polynomial has {count} limbs, expected {}; the data is malformed or for another level",
            expected.len()
        )));
    }
    for &want in expected {
        let got = usize::from(r.u16()?);
        if got != want {
            return Err(CkksError::Serialization(format!(
                "polynomial limb index {got}, expected {want}; the data is malformed"
            )));
        }
    }
    let mut moduli = Vec::with_capacity(expected.len());
    for &i in expected {
        moduli.push(ctx.modulus(i)?.value());
    }
    let need: usize = moduli.iter().map(|&q| packed_len(n, bits_of(q))).sum();
    if r.remaining() < need {
        return Err(CkksError::Truncated {
            needed: need,
            have: r.remaining(),
        });
    }
    let mut data = Vec::with_capacity(n * expected.len());
    for (pos, &q) in moduli.iter().enumerate() {
        let src = r.take(packed_len(n, bits_of(q)))?;
        unpack_limb(src, q, n, &mut data, pos)?;
    }
    Ok(Poly::from_raw(ctx, expected, data)?)
}

// ---------------------------------------------------------------------------------------
// Parameters

/// Serializes parameters (their literal, JSON inside the binary frame).
pub fn params_to_bytes(params: &CkksParams) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(params.literal()).map_err(|e| {
        CkksError::Serialization(format!("cannot encode the parameter literal: {e}"))
    })?;
    let mut out = start_frame(TypeTag::Params, params.id(), json.len());
    out.extend_from_slice(&json);
    Ok(finish_frame(out))
}

/// Deserializes parameters with the default limits: rebuilds them from the literal and
/// checks the fingerprint. Note that the literal carries its security policy: compare the
/// result's [`CkksParams::id`] with the parameters you expect before trusting a peer's set.
pub fn params_from_bytes(bytes: &[u8]) -> Result<Arc<CkksParams>> {
    params_from_bytes_with_limits(bytes, &Limits::default())
}

/// [`params_from_bytes`] with explicit limits (the payload is capped at 64 KiB and 64
/// primes in any case). The receiver's default security policy (128-bit) is enforced,
/// whatever policy the sender's literal carried.
pub fn params_from_bytes_with_limits(bytes: &[u8], limits: &Limits) -> Result<Arc<CkksParams>> {
    params_from_bytes_with_policy(bytes, limits, SecurityPolicy::default())
}

/// Reads parameters and checks them under the *receiver's* `policy` (the sender's
/// `security` field is ignored: a peer cannot talk us into insecure parameters). The
/// fingerprint does not depend on the policy, so it is still compared with the header's.
pub fn params_from_bytes_with_policy(
    bytes: &[u8],
    limits: &Limits,
    policy: SecurityPolicy,
) -> Result<Arc<CkksParams>> {
    let cap = Limits::new(
        limits
            .max_bytes
            .min(MAX_PARAMS_PAYLOAD + HEADER_LEN + CHECKSUM_LEN),
    );
    let (header, payload) = open_frame(bytes, TypeTag::Params, &cap)?;
    let mut lit: CkksParamsLiteral = serde_json::from_slice(payload)
        .map_err(|e| CkksError::Serialization(format!("parameter literal is not valid: {e}")))?;
    let primes = lit.q_bits.len() + lit.p_bits.len();
    if primes > MAX_PARAMS_PRIMES {
        return Err(CkksError::InvalidParams(format!(
            "{primes} primes in serialized parameters exceed the limit of {MAX_PARAMS_PRIMES}"
        )));
    }
    lit.security = policy;
    let params = CkksParams::new(lit)?;
    if params.id() != header.params_id {
        return Err(CkksError::ParamsMismatch {
            expected: header.params_id.to_string(),
            found: params.id().to_string(),
        });
    }
    Ok(params)
}

// ---------------------------------------------------------------------------------------
// Objects

impl sealed::Sealed for Plaintext {}
impl WireFormat for Plaintext {
    const TYPE_TAG: TypeTag = TypeTag::Plaintext;

    fn to_bytes(&self) -> Vec<u8> {
        let hint = 12
            + poly_len(
                self.poly.n(),
                self.poly.iter_limbs().map(|(m, _)| bits_of(m.value())),
            );
        let mut out = start_frame(Self::TYPE_TAG, self.params_id, hint);
        put_level(&mut out, self.level);
        put_scale(&mut out, self.scale);
        write_poly(&mut out, &self.poly);
        finish_frame(out)
    }

    fn from_bytes(params: &Arc<CkksParams>, bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = open_for(params, bytes, Self::TYPE_TAG, limits)?;
        let level = r.level(params)?;
        let scale = r.scale()?;
        let poly = read_poly(params, &mut r, &params.q_limbs(level))?;
        r.finish()?;
        Ok(Plaintext {
            poly,
            level,
            scale,
            params_id: params.id(),
        })
    }
}

impl sealed::Sealed for Ciphertext {}
impl WireFormat for Ciphertext {
    const TYPE_TAG: TypeTag = TypeTag::Ciphertext;

    fn to_bytes(&self) -> Vec<u8> {
        let per = self.parts.first().map_or(0, |p| {
            poly_len(p.n(), p.iter_limbs().map(|(m, _)| bits_of(m.value())))
        });
        let mut out = start_frame(Self::TYPE_TAG, self.params_id, 13 + per * self.parts.len());
        put_level(&mut out, self.level);
        put_scale(&mut out, self.scale);
        out.push(self.parts.len() as u8);
        for p in &self.parts {
            write_poly(&mut out, p);
        }
        finish_frame(out)
    }

    fn from_bytes(params: &Arc<CkksParams>, bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = open_for(params, bytes, Self::TYPE_TAG, limits)?;
        let level = r.level(params)?;
        let scale = r.scale()?;
        let count = usize::from(r.u8()?);
        if !(2..=3).contains(&count) {
            return Err(CkksError::WrongSize {
                expected: 2,
                got: count,
            });
        }
        let limbs = params.q_limbs(level);
        let mut parts = Vec::with_capacity(count);
        for _ in 0..count {
            parts.push(read_poly(params, &mut r, &limbs)?);
        }
        r.finish()?;
        Ok(Ciphertext {
            parts,
            level,
            scale,
            params_id: params.id(),
        })
    }
}

impl sealed::Sealed for SeededCiphertext {}
impl WireFormat for SeededCiphertext {
    const TYPE_TAG: TypeTag = TypeTag::SeededCiphertext;

    fn to_bytes(&self) -> Vec<u8> {
        let hint = 44
            + poly_len(
                self.c0.n(),
                self.c0.iter_limbs().map(|(m, _)| bits_of(m.value())),
            );
        let mut out = start_frame(Self::TYPE_TAG, self.params_id, hint);
        put_level(&mut out, self.level);
        put_scale(&mut out, self.scale);
        out.extend_from_slice(&self.seed);
        write_poly(&mut out, &self.c0);
        finish_frame(out)
    }

    fn from_bytes(params: &Arc<CkksParams>, bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = open_for(params, bytes, Self::TYPE_TAG, limits)?;
        let level = r.level(params)?;
        let scale = r.scale()?;
        let seed = r.array::<32>()?;
        let c0 = read_poly(params, &mut r, &params.q_limbs(level))?;
        r.finish()?;
        Ok(SeededCiphertext {
            c0,
            seed,
            level,
            scale,
            params_id: params.id(),
        })
    }
}

impl sealed::Sealed for PublicKey {}
impl WireFormat for PublicKey {
    const TYPE_TAG: TypeTag = TypeTag::PublicKey;

    fn to_bytes(&self) -> Vec<u8> {
        let hint = 32
            + poly_len(
                self.b.n(),
                self.b.iter_limbs().map(|(m, _)| bits_of(m.value())),
            );
        let mut out = start_frame(Self::TYPE_TAG, self.params_id, hint);
        out.extend_from_slice(&self.seed);
        write_poly(&mut out, &self.b);
        finish_frame(out)
    }

    fn from_bytes(params: &Arc<CkksParams>, bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = open_for(params, bytes, Self::TYPE_TAG, limits)?;
        let seed = r.array::<32>()?;
        let b = read_poly(params, &mut r, &params.q_limbs(params.max_level()))?;
        r.finish()?;
        let a = expand_uniform_one(params, &seed, params.max_level())?;
        Ok(PublicKey {
            b,
            a,
            seed,
            params_id: params.id(),
        })
    }
}

fn ksk_len(k: &KeySwitchKey) -> usize {
    38 + k
        .b
        .iter()
        .map(|p| poly_len(p.n(), p.iter_limbs().map(|(m, _)| bits_of(m.value()))))
        .sum::<usize>()
}

fn write_ksk(out: &mut Vec<u8>, k: &KeySwitchKey) {
    out.extend_from_slice(&k.seed);
    put_u32(out, k.level.0 as u32);
    put_u16(out, k.b.len() as u16);
    for b in &k.b {
        write_poly(out, b);
    }
}

fn read_ksk(params: &CkksParams, r: &mut Reader<'_>) -> Result<KeySwitchKey> {
    let seed = r.array::<32>()?;
    let level = r.level(params)?;
    let dnum = usize::from(r.u16()?);
    let want = params.level_tables(level)?.digits.len();
    if dnum != want {
        return Err(CkksError::Serialization(format!(
            "key-switching key for level {} has {dnum} digits, the parameters use {want} there; the data is malformed",
            level.0
        )));
    }
    let limbs = KeySwitchKey::limbs(params, level);
    let mut b = Vec::with_capacity(dnum);
    for _ in 0..dnum {
        b.push(read_poly(params, r, &limbs)?);
    }
    let a = expand_uniform(params, &seed, dnum, &limbs)?;
    Ok(KeySwitchKey {
        b,
        a,
        seed,
        params_id: params.id(),
        level,
    })
}

impl sealed::Sealed for RelinKey {}
impl WireFormat for RelinKey {
    const TYPE_TAG: TypeTag = TypeTag::RelinKey;

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = start_frame(Self::TYPE_TAG, self.0.params_id, ksk_len(&self.0));
        write_ksk(&mut out, &self.0);
        finish_frame(out)
    }

    fn from_bytes(params: &Arc<CkksParams>, bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = open_for(params, bytes, Self::TYPE_TAG, limits)?;
        let k = read_ksk(params, &mut r)?;
        r.finish()?;
        Ok(RelinKey(k))
    }
}

impl sealed::Sealed for GaloisKeys {}
impl WireFormat for GaloisKeys {
    const TYPE_TAG: TypeTag = TypeTag::GaloisKeys;

    fn to_bytes(&self) -> Vec<u8> {
        let id = self
            .keys
            .values()
            .next()
            .map_or(ParamsId([0; 16]), |k| k.key.params_id);
        let hint = 4 + self
            .keys
            .values()
            .map(|k| 8 + ksk_len(&k.key))
            .sum::<usize>();
        let mut out = start_frame(Self::TYPE_TAG, id, hint);
        write_galois(&mut out, self);
        finish_frame(out)
    }

    fn from_bytes(params: &Arc<CkksParams>, bytes: &[u8], limits: &Limits) -> Result<Self> {
        let (header, payload) = open_frame(bytes, Self::TYPE_TAG, limits)?;
        let mut r = Reader::new(payload);
        if header.params_id == ParamsId([0; 16]) {
            // An empty set has no parameters of its own.
            let count = r.u32()?;
            if count != 0 {
                return Err(CkksError::ParamsMismatch {
                    expected: params.id().to_string(),
                    found: header.params_id.to_string(),
                });
            }
            r.finish()?;
            return Ok(GaloisKeys::default());
        }
        params.check_id(header.params_id)?;
        let keys = read_galois(params, &mut r)?;
        r.finish()?;
        Ok(keys)
    }
}

fn galois_len(keys: &GaloisKeys) -> usize {
    4 + keys
        .keys
        .values()
        .map(|k| 8 + ksk_len(&k.key))
        .sum::<usize>()
}

fn write_galois(out: &mut Vec<u8>, keys: &GaloisKeys) {
    put_u32(out, keys.keys.len() as u32);
    for (g, k) in &keys.keys {
        put_u64(out, g.value());
        // Keys are held in hoisting form; the wire carries the canonical form. Permuting
        // back cannot fail for a key built by this crate (lengths match by construction);
        // fall back to the stored form rather than panic.
        match k.canonical() {
            Ok(c) => write_ksk(out, &c),
            Err(_) => write_ksk(out, &k.key),
        }
    }
}

fn read_galois(params: &CkksParams, r: &mut Reader<'_>) -> Result<GaloisKeys> {
    let count = r.u32()?;
    let n = params.n();
    let two_n = 2 * n as u64;
    let mut keys = BTreeMap::new();
    let mut prev: Option<u64> = None;
    for _ in 0..count {
        let g = r.u64()?;
        if g >= two_n || g % 2 == 0 || g == 1 {
            return Err(CkksError::Serialization(format!(
                "invalid Galois element {g}: must be odd, not 1, and below 2N = {two_n}"
            )));
        }
        if prev.is_some_and(|p| g <= p) {
            return Err(CkksError::Serialization(
                "Galois elements not strictly increasing (duplicate or unordered keys); the data is malformed"
                    .into(),
            ));
        }
        prev = Some(g);
        let key = read_ksk(params, r)?;
        keys.insert(GaloisElement(g), GaloisKey::from_canonical(key, n, g)?);
    }
    Ok(GaloisKeys { keys })
}

impl sealed::Sealed for BootstrapKeys {}
/// Bootstrapping keys: the relinearization key, the `s' -> s` switching key, the
/// encapsulation key (seed and `b` over `q_0 p`), then the Galois keys; every uniform half is
/// carried as its seed.
impl WireFormat for BootstrapKeys {
    const TYPE_TAG: TypeTag = TypeTag::BootstrapKeys;

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = start_frame(
            Self::TYPE_TAG,
            self.relin.0.params_id,
            bootstrap_keys_len(self),
        );
        write_ksk(&mut out, &self.relin.0);
        write_ksk(&mut out, &self.from_sparse);
        out.extend_from_slice(&self.to_sparse.seed);
        write_poly(&mut out, &self.to_sparse.b);
        write_galois(&mut out, &self.galois);
        finish_frame(out)
    }

    fn from_bytes(params: &Arc<CkksParams>, bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = open_for(params, bytes, Self::TYPE_TAG, limits)?;
        let relin = RelinKey(read_ksk(params, &mut r)?);
        let from_sparse = read_ksk(params, &mut r)?;
        if from_sparse.level != params.max_level() {
            return Err(CkksError::Serialization(format!(
                "the s' -> s switching key serves level {}, bootstrapping needs the top level {}; the data is malformed",
                from_sparse.level.0,
                params.max_level().0
            )));
        }
        let seed = r.array::<32>()?;
        let limbs = crate::bootstrap::encapsulation_limbs(params);
        let b = read_poly(params, &mut r, &limbs)?;
        let a = expand_uniform(params, &seed, 1, &limbs)?
            .pop()
            .ok_or(CkksError::Serialization(
                "encapsulation key expansion".into(),
            ))?;
        let galois = read_galois(params, &mut r)?;
        r.finish()?;
        Ok(BootstrapKeys {
            relin,
            galois,
            to_sparse: EncapsulationKey { b, a, seed },
            from_sparse,
        })
    }
}

fn bootstrap_keys_len(k: &BootstrapKeys) -> usize {
    let b = &k.to_sparse.b;
    ksk_len(&k.relin.0)
        + ksk_len(&k.from_sparse)
        + 32
        + poly_len(b.n(), b.iter_limbs().map(|(m, _)| bits_of(m.value())))
        + galois_len(&k.galois)
}

/// Serialized size in bytes of a bootstrapping key set (header and checksum included),
/// without serializing it.
pub fn bootstrap_keys_size(keys: &BootstrapKeys) -> usize {
    HEADER_LEN + bootstrap_keys_len(keys) + CHECKSUM_LEN
}

/// Serialized size in bytes of a ciphertext with `parts` polynomials at `level` under
/// `params` (header and checksum included); a seeded ciphertext is
/// `seeded_ciphertext_size(params, level)`.
pub fn ciphertext_size(params: &CkksParams, level: Level, parts: usize) -> usize {
    let bits: Vec<u32> = params
        .q()
        .iter()
        .take(level.0 + 1)
        .map(|&q| bits_of(q))
        .collect();
    HEADER_LEN + 13 + parts * poly_len(params.n(), bits.into_iter()) + CHECKSUM_LEN
}

/// Serialized size in bytes of a seeded ciphertext at `level` under `params`.
pub fn seeded_ciphertext_size(params: &CkksParams, level: Level) -> usize {
    let bits: Vec<u32> = params
        .q()
        .iter()
        .take(level.0 + 1)
        .map(|&q| bits_of(q))
        .collect();
    HEADER_LEN + 44 + poly_len(params.n(), bits.into_iter()) + CHECKSUM_LEN
}

/// Serialized size in bytes of the payload of a key-switching key serving levels up to
/// `level` under `params` (seed, level, digit count, the `b` half of every digit of that
/// level over `q_0..q_level` and the special primes).
fn ksk_size(params: &CkksParams, level: Level) -> Result<usize> {
    let bits: Vec<u32> = KeySwitchKey::limbs(params, level)
        .into_iter()
        .map(|i| params.ring().modulus(i).map(|m| bits_of(m.value())))
        .collect::<std::result::Result<_, _>>()?;
    let digits = params.level_tables(level)?.digits.len();
    Ok(38 + digits * poly_len(params.n(), bits.into_iter()))
}

/// Serialized size in bytes of a relinearization key serving levels up to `level` (header
/// and checksum included).
pub fn relin_key_size(params: &CkksParams, level: Level) -> Result<usize> {
    Ok(HEADER_LEN + ksk_size(params, level)? + CHECKSUM_LEN)
}

/// Serialized size in bytes of a set of Galois keys, one per entry of `levels` (the highest
/// level each serves).
pub fn galois_keys_size(params: &CkksParams, levels: &[Level]) -> Result<usize> {
    let mut total = HEADER_LEN + 4 + CHECKSUM_LEN;
    for &l in levels {
        total += 8 + ksk_size(params, l)?;
    }
    Ok(total)
}
