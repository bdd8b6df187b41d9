//! The client side: it holds the secret key and needs the plan only (parameters, layout
//! plan, rotation steps, output multiplier), never the model: it makes the keys, packs and
//! encrypts inputs, decrypts and unpacks outputs. The server only ever gets
//! [`Client::evaluation_keys`] and ciphertexts.

use std::sync::Arc;

use henn_ckks::{Ciphertext, CkksParams, Decryptor, Encoder, Encryptor, KeyGenerator, SecretKey};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use super::wire::{EvaluationKeys, PackedCiphertexts};
use crate::backend::ckks_err;
use crate::error::{ExecError, NnError, Result};
use crate::plan::Plan;
use crate::tensor::Tensor;

/// Client: the plan, its parameters and the secret key.
#[derive(Debug)]
pub struct Client {
    plan: Plan,
    params: Arc<CkksParams>,
    sk: SecretKey,
    encoder: Encoder,
}

fn fresh_rng() -> ChaCha20Rng {
    ChaCha20Rng::from_os_rng()
}

impl Client {
    /// A client for `plan` with a fresh secret key (from the OS-seeded ChaCha20 CSPRNG). The
    /// plan must be intact (its fingerprint) and its parameters valid.
    pub fn new(plan: Plan) -> Result<Self> {
        let params = plan.ckks_params()?;
        Self::with_params(plan, params)
    }

    /// [`Client::new`] on a given instance of the plan's parameters (to share it with objects
    /// made in the same process: a server in a [`super::LocalSession`]).
    pub fn with_params(plan: Plan, params: Arc<CkksParams>) -> Result<Self> {
        plan.verify_fingerprint()?;
        if plan.ckks_params()?.id() != params.id() {
            return Err(NnError::PlanMismatch {
                what: "parameters".into(),
                stored: format!("{:?}", plan.params),
                computed: format!("{:?}", params.literal()),
            });
        }
        let sk = KeyGenerator::new(&params)
            .secret_key(&mut fresh_rng())
            .map_err(ckks_err)?;
        Ok(Self {
            encoder: Encoder::new(&params),
            plan,
            params,
            sk,
        })
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<CkksParams> {
        &self.params
    }

    /// A relinearization key and exactly the Galois keys the plan lists.
    pub fn evaluation_keys(&self) -> Result<EvaluationKeys> {
        let kg = KeyGenerator::new(&self.params);
        let mut rng = fresh_rng();
        let relin = kg.relin_key(&self.sk, &mut rng).map_err(ckks_err)?;
        let galois = kg
            .galois_keys(&self.sk, &self.plan.rotations, false, &mut rng)
            .map_err(ckks_err)?;
        Ok(EvaluationKeys {
            plan_fingerprint: self.plan.fingerprint.clone(),
            relin,
            galois,
        })
    }

    /// Packs `images` (at most the plan's images per run) as the layout plan says and
    /// encrypts them with the secret key at the top level and the default scale.
    pub fn encrypt(&self, images: &[Tensor]) -> Result<PackedCiphertexts> {
        let vectors = self.plan.layout.pack_inputs(images)?;
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
        Ok(PackedCiphertexts {
            plan_fingerprint: self.plan.fingerprint.clone(),
            images: images.len(),
            mult: 1.0,
            cts,
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

    /// Decrypts a run's output: the logits of each image, the multiplier applied.
    pub fn decrypt(&self, out: &PackedCiphertexts) -> Result<Vec<Vec<f64>>> {
        if out.plan_fingerprint != self.plan.fingerprint {
            return Err(NnError::PlanMismatch {
                what: "plan fingerprint of the output".into(),
                stored: out.plan_fingerprint.clone(),
                computed: self.plan.fingerprint.clone(),
            });
        }
        if out.images > self.plan.layout.images_per_run {
            return Err(ExecError::Input(format!(
                "the output claims {} images, the plan packs at most {}",
                out.images, self.plan.layout.images_per_run
            ))
            .into());
        }
        let slots = self.decrypt_slots(&out.cts)?;
        self.plan
            .layout
            .unpack_outputs(&slots, out.mult, out.images)
    }

    /// Decrypts part of an intermediate value `value` (ciphertexts `cts`, at indices
    /// `ct_index` among the value's ciphertexts, multiplier `mult`) of a run of `images`
    /// images: per image, `(flat element, value)` for every element those ciphertexts hold.
    pub fn decrypt_part(
        &self,
        value: usize,
        numel: usize,
        cts: &[Ciphertext],
        ct_index: &[usize],
        mult: f64,
        images: usize,
    ) -> Result<Vec<Vec<(usize, f64)>>> {
        let slots = self.decrypt_slots(cts)?;
        self.plan
            .layout
            .unpack_part(value, numel, ct_index, &slots, mult, images)
    }
}
