//! Encryption (public key or secret key) and decryption.

use std::sync::Arc;

use henn_ring::{Coeff, Poly, sample};
use rand::{CryptoRng, RngCore};

use crate::ciphertext::{Ciphertext, Plaintext, SeededCiphertext, expand_uniform_one};
use crate::error::{CkksError, Result};
use crate::keys::{PublicKey, SecretKey, gaussian_ntt};
use crate::params::CkksParams;

/// Encrypts plaintexts.
#[derive(Debug)]
pub struct Encryptor {
    params: Arc<CkksParams>,
}

impl Encryptor {
    /// An encryptor for `params`.
    pub fn new(params: &Arc<CkksParams>) -> Self {
        Self {
            params: params.clone(),
        }
    }

    /// Public-key encryption: `(v b + e_0 + m, v a + e_1)` with ternary `v`.
    pub fn encrypt_pk<R: RngCore + CryptoRng + ?Sized>(
        &self,
        pt: &Plaintext,
        pk: &PublicKey,
        rng: &mut R,
    ) -> Result<Ciphertext> {
        self.params.check_id(pt.params_id)?;
        self.params.check_id(pk.params_id)?;
        let limbs = self.params.q_limbs(pt.level);
        let v = sample::ternary(self.params.n(), rng);
        let v = Poly::<Coeff>::from_signed(self.params.ring(), &limbs, &v)?.ntt();
        let mut c0 = gaussian_ntt(&self.params, &limbs, rng)?;
        let mut c1 = gaussian_ntt(&self.params, &limbs, rng)?;
        c0.mul_add_assign_subset(&v, &pk.b)?;
        c1.mul_add_assign_subset(&v, &pk.a)?;
        c0.add_assign(&pt.poly)?;
        Ok(Ciphertext {
            parts: vec![c0, c1],
            level: pt.level,
            scale: pt.scale,
            params_id: self.params.id(),
        })
    }

    /// Secret-key encryption: `(-a s + e + m, a)` with uniform `a`.
    pub fn encrypt_sk<R: RngCore + CryptoRng + ?Sized>(
        &self,
        pt: &Plaintext,
        sk: &SecretKey,
        rng: &mut R,
    ) -> Result<Ciphertext> {
        self.params.check_id(pt.params_id)?;
        self.params.check_id(sk.params_id)?;
        let limbs = self.params.q_limbs(pt.level);
        let a = sample::uniform_ntt(self.params.ring(), &limbs, rng)?;
        let mut c0 = gaussian_ntt(&self.params, &limbs, rng)?;
        let mut as_ = Poly::zero(self.params.ring(), &limbs)?;
        as_.mul_add_assign_subset(&a, &sk.poly)?;
        c0.sub_assign(&as_)?;
        c0.add_assign(&pt.poly)?;
        Ok(Ciphertext {
            parts: vec![c0, a],
            level: pt.level,
            scale: pt.scale,
            params_id: self.params.id(),
        })
    }

    /// Secret-key encryption with `a` expanded from a fresh 32-byte seed drawn from `rng`:
    /// the result serializes as `c_0` and the seed (half the bytes of a full ciphertext).
    /// Otherwise identical to [`Encryptor::encrypt_sk`].
    pub fn encrypt_sk_seeded<R: RngCore + CryptoRng + ?Sized>(
        &self,
        pt: &Plaintext,
        sk: &SecretKey,
        rng: &mut R,
    ) -> Result<SeededCiphertext> {
        self.params.check_id(pt.params_id)?;
        self.params.check_id(sk.params_id)?;
        self.params.check_level(pt.level)?;
        let limbs = self.params.q_limbs(pt.level);
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let a = expand_uniform_one(&self.params, &seed, pt.level)?;
        let mut c0 = gaussian_ntt(&self.params, &limbs, rng)?;
        let mut as_ = Poly::zero(self.params.ring(), &limbs)?;
        as_.mul_add_assign_subset(&a, &sk.poly)?;
        c0.sub_assign(&as_)?;
        c0.add_assign(&pt.poly)?;
        Ok(SeededCiphertext {
            c0,
            seed,
            level: pt.level,
            scale: pt.scale,
            params_id: self.params.id(),
        })
    }
}

/// Decrypts ciphertexts with the secret key.
#[derive(Debug)]
pub struct Decryptor {
    params: Arc<CkksParams>,
}

impl Decryptor {
    /// A decryptor for `params`.
    pub fn new(params: &Arc<CkksParams>) -> Self {
        Self {
            params: params.clone(),
        }
    }

    /// [`Decryptor::decrypt`] with noise flooding: a fresh rounded Gaussian of standard
    /// deviation `2^flood_bits` (from the caller's CSPRNG) is added to every coefficient of
    /// the decrypted polynomial, as OpenFHE's `NOISE_FLOODING_DECRYPT` does for IND-CPA^D
    /// security: decrypted values that will be shared (sent back to a server, published) then
    /// reveal nothing about the secret key through the encryption noise, provided `flood_bits`
    /// exceeds the noise's bits by the statistical security wanted (e.g. 30 + 20 bits). The
    /// price is precision: about `2^flood_bits * sqrt(N) / scale` per slot. `flood_bits` must
    /// leave 2 bits of the base prime free (and be at most 52).
    pub fn decrypt_flooded<R: RngCore + CryptoRng + ?Sized>(
        &self,
        ct: &Ciphertext,
        sk: &SecretKey,
        flood_bits: u32,
        rng: &mut R,
    ) -> Result<Plaintext> {
        let q0_bits = self
            .params
            .q()
            .first()
            .map_or(0, |&q| 64 - q.leading_zeros());
        if flood_bits > 52 || flood_bits + 2 > q0_bits {
            return Err(CkksError::InvalidArgument(format!(
                "flooding with 2^{flood_bits} noise needs a base prime of more than {} bits (it has {q0_bits}) and at most 2^52",
                flood_bits + 2
            )));
        }
        let mut pt = self.decrypt(ct, sk)?;
        let n = self.params.n();
        let e = sample::gaussian(n, f64::from(flood_bits).exp2(), rng);
        let limbs = self.params.q_limbs(ct.level);
        let e = Poly::from_signed(self.params.ring(), &limbs, &e)?.ntt();
        pt.poly.add_assign(&e)?;
        Ok(pt)
    }

    /// `c_0 + c_1 s (+ c_2 s^2)` as a plaintext at the ciphertext's level and scale.
    pub fn decrypt(&self, ct: &Ciphertext, sk: &SecretKey) -> Result<Plaintext> {
        self.params.check_id(ct.params_id)?;
        self.params.check_id(sk.params_id)?;
        let limbs = self.params.q_limbs(ct.level);
        let s = sk.poly.select_limbs(&limbs)?;
        let mut parts = ct.parts.iter().rev();
        // Horner: ((c_k s + c_{k-1}) s + ...) + c_0
        let mut acc = parts
            .next()
            .ok_or(CkksError::WrongSize {
                expected: 2,
                got: 0,
            })?
            .clone();
        for c in parts {
            acc.mul_assign(&s)?;
            acc.add_assign(c)?;
        }
        Ok(Plaintext {
            poly: acc,
            level: ct.level,
            scale: ct.scale,
            params_id: ct.params_id,
        })
    }
}
