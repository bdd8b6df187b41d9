//! Plaintexts and ciphertexts: RNS polynomials in NTT form tagged with level, scale and the
//! parameter fingerprint.

use henn_ring::{Ntt, Poly};

use crate::error::{CkksError, Result};
use crate::keys::expand_uniform;
use crate::params::{CkksParams, ParamsId};
use crate::types::{Level, Scale};

/// An encoded (not encrypted) message.
#[derive(Clone, Debug, PartialEq)]
pub struct Plaintext {
    pub(crate) poly: Poly<Ntt>,
    pub(crate) level: Level,
    pub(crate) scale: Scale,
    pub(crate) params_id: ParamsId,
}

impl Plaintext {
    /// Level.
    pub fn level(&self) -> Level {
        self.level
    }
    /// Scale.
    pub fn scale(&self) -> Scale {
        self.scale
    }
    /// Parameter fingerprint.
    pub fn params_id(&self) -> ParamsId {
        self.params_id
    }
    /// The polynomial (NTT form over `q_0..q_level`).
    pub fn poly(&self) -> &Poly<Ntt> {
        &self.poly
    }
}

/// A CKKS ciphertext `(c_0, c_1[, c_2])` decrypting to `c_0 + c_1 s [+ c_2 s^2]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Ciphertext {
    pub(crate) parts: Vec<Poly<Ntt>>,
    pub(crate) level: Level,
    pub(crate) scale: Scale,
    pub(crate) params_id: ParamsId,
}

impl Ciphertext {
    /// Level.
    pub fn level(&self) -> Level {
        self.level
    }
    /// Scale.
    pub fn scale(&self) -> Scale {
        self.scale
    }
    /// Number of polynomials (2 normally, 3 after a multiplication without relinearization).
    pub fn size(&self) -> usize {
        self.parts.len()
    }
    /// Parameter fingerprint.
    pub fn params_id(&self) -> ParamsId {
        self.params_id
    }
    /// The polynomials.
    pub fn parts(&self) -> &[Poly<Ntt>] {
        &self.parts
    }
}

/// A fresh secret-key ciphertext `(c_0, a)` whose uniform part `a` is given by a 32-byte
/// seed: half the size on the wire. Made by
/// [`Encryptor::encrypt_sk_seeded`](crate::Encryptor::encrypt_sk_seeded); turn it into a
/// [`Ciphertext`] with [`SeededCiphertext::expand`].
#[derive(Clone, Debug, PartialEq)]
pub struct SeededCiphertext {
    pub(crate) c0: Poly<Ntt>,
    pub(crate) seed: [u8; 32],
    pub(crate) level: Level,
    pub(crate) scale: Scale,
    pub(crate) params_id: ParamsId,
}

impl SeededCiphertext {
    /// Level.
    pub fn level(&self) -> Level {
        self.level
    }
    /// Scale.
    pub fn scale(&self) -> Scale {
        self.scale
    }
    /// Parameter fingerprint.
    pub fn params_id(&self) -> ParamsId {
        self.params_id
    }

    /// Expands the seed into `a` and returns the ciphertext `(c_0, a)`.
    pub fn expand(&self, params: &CkksParams) -> Result<Ciphertext> {
        params.check_id(self.params_id)?;
        let a = expand_uniform_one(params, &self.seed, self.level)?;
        Ok(Ciphertext {
            parts: vec![self.c0.clone(), a],
            level: self.level,
            scale: self.scale,
            params_id: self.params_id,
        })
    }
}

/// The uniform part of a seeded ciphertext at `level`.
pub(crate) fn expand_uniform_one(
    params: &CkksParams,
    seed: &[u8; 32],
    level: Level,
) -> Result<Poly<Ntt>> {
    expand_uniform(params, seed, 1, &params.q_limbs(level))?
        .pop()
        .ok_or(CkksError::InvalidParams(
            "seed expansion produced no polynomial".into(),
        ))
}
