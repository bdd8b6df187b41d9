//! The client side: keys, encryption of a batch, decryption of the output. It holds the
//! secret key; the server only ever gets [`Client::evaluation_keys`] and ciphertexts.

use std::sync::Arc;

use henn_ckks::{
    Ciphertext, CkksParams, Decryptor, Encoder, Encryptor, GaloisKeys, KeyGenerator, RelinKey,
    SecretKey,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use super::ckks_err;
use crate::error::{NnError, Result};
use crate::pack::batch;
use crate::pack::{LayoutKind, Packed};
use crate::plan::Plan;
use crate::tensor::Tensor;

/// Client: parameters and the secret key.
#[derive(Debug)]
pub struct Client {
    params: Arc<CkksParams>,
    sk: SecretKey,
    encoder: Encoder,
}

fn fresh_rng() -> ChaCha20Rng {
    ChaCha20Rng::from_os_rng()
}

impl Client {
    /// A client with a fresh secret key.
    pub fn new(params: &Arc<CkksParams>) -> Result<Self> {
        let sk = KeyGenerator::new(params)
            .secret_key(&mut fresh_rng())
            .map_err(ckks_err)?;
        Ok(Self {
            params: params.clone(),
            sk,
            encoder: Encoder::new(params),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<CkksParams> {
        &self.params
    }

    /// Relinearization key and exactly the Galois keys the plan lists.
    pub fn evaluation_keys(&self, plan: &Plan) -> Result<(RelinKey, GaloisKeys)> {
        let kg = KeyGenerator::new(&self.params);
        let mut rng = fresh_rng();
        let rlk = kg.relin_key(&self.sk, &mut rng).map_err(ckks_err)?;
        let gk = kg
            .galois_keys(&self.sk, &plan.rotations, false, &mut rng)
            .map_err(ckks_err)?;
        Ok((rlk, gk))
    }

    /// Encrypts a batch of images in the plan's layout (batch: slot i = image i; channel: one
    /// image, one ciphertext per channel).
    pub fn encrypt(
        &self,
        plan: &Plan,
        shape: &[usize],
        images: &[Tensor],
    ) -> Result<Packed<Ciphertext>> {
        if images.len() > self.params.slots() {
            return Err(NnError::Exec(format!(
                "{} images exceed the {} slots of N = {}",
                images.len(),
                self.params.slots(),
                self.params.n()
            )));
        }
        let vectors = match (plan.layout, images) {
            (LayoutKind::Batch, _) => batch::pack_inputs(images)?,
            (LayoutKind::Channel, [one]) => {
                crate::pack::channel::pack_inputs(one, plan.input_replicas, self.params.slots())?
            }
            (LayoutKind::Channel, _) => {
                return Err(NnError::Exec(
                    "the channel layout encrypts one image at a time".into(),
                ));
            }
        };
        let enc = Encryptor::new(&self.params);
        let level = self.params.max_level();
        let scale = self.params.default_scale();
        let cts = vectors
            .par_iter()
            .map_init(fresh_rng, |rng, v| {
                let pt = self.encoder.encode(v, level, scale).map_err(ckks_err)?;
                enc.encrypt_sk(&pt, &self.sk, rng).map_err(ckks_err)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Packed {
            shape: shape.to_vec(),
            cts,
            mult: 1.0,
        })
    }

    /// Decrypts and decodes ciphertexts to their slot vectors.
    pub fn decrypt_slots(&self, cts: &[Ciphertext]) -> Result<Vec<Vec<f64>>> {
        let dec = Decryptor::new(&self.params);
        cts.par_iter()
            .map(|c| {
                let pt = dec.decrypt(c, &self.sk).map_err(ckks_err)?;
                self.encoder.decode(&pt).map_err(ckks_err)
            })
            .collect()
    }

    /// Decrypts a packed batch-layout value: one vector (in the value's element order, the
    /// multiplier applied) per image.
    pub fn decrypt_batch(&self, out: &Packed<Ciphertext>, images: usize) -> Result<Vec<Vec<f64>>> {
        let slots = self.decrypt_slots(&out.cts)?;
        Ok(batch::unpack_outputs(&slots, out.mult, images))
    }
}
