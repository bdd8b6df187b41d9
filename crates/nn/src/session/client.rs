//! The client side: it holds the secret key and needs the plan only (parameters, layout
//! plan, rotation steps, output multiplier), never the model: it makes the keys, packs and
//! encrypts inputs, decrypts and unpacks outputs. The server only ever gets
//! [`Client::evaluation_keys`] and ciphertexts.

use std::sync::Arc;

use henn_ckks::{
    Ciphertext, CkksParams, Complex, Decryptor, Encoder, Encryptor, KeyGenerator, SecretKey,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use super::secret::{SecretKeyFile, SecretSeed};
use super::wire::{EvaluationKeys, PackedCiphertexts, Query};
use crate::backend::ckks_err;
use crate::error::{ExecError, NnError, Result};
use crate::plan::Plan;
use crate::tensor::Tensor;

/// Client: the plan, its parameters and the secret key (with the seed it derives from).
#[derive(Debug)]
pub struct Client {
    plan: Plan,
    params: Arc<CkksParams>,
    seed: SecretSeed,
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
        Self::assemble(plan, params, SecretSeed::generate())
    }

    /// The client of a saved secret key (made for this plan).
    pub fn from_secret(plan: Plan, secret: SecretKeyFile) -> Result<Self> {
        if secret.plan_fingerprint != plan.fingerprint {
            return Err(NnError::PlanMismatch {
                what: "plan fingerprint of the secret key".into(),
                stored: secret.plan_fingerprint,
                computed: plan.fingerprint.clone(),
            });
        }
        let params = plan.ckks_params()?;
        Self::assemble(plan, params, secret.seed)
    }

    /// The secret key as a file to keep on the client (see [`SecretKeyFile::write`]).
    pub fn secret_file(&self) -> SecretKeyFile {
        SecretKeyFile {
            plan_fingerprint: self.plan.fingerprint.clone(),
            seed: self.seed.duplicate(),
        }
    }

    fn assemble(plan: Plan, params: Arc<CkksParams>, seed: SecretSeed) -> Result<Self> {
        plan.verify_fingerprint()?;
        if params.literal() != &plan.params {
            return Err(NnError::PlanMismatch {
                what: "parameters".into(),
                stored: format!("{:?}", plan.params),
                computed: format!("{:?}", params.literal()),
            });
        }
        let sk = KeyGenerator::new(&params)
            .secret_key(&mut seed.rng())
            .map_err(ckks_err)?;
        Ok(Self {
            encoder: Encoder::new(&params),
            plan,
            params,
            seed,
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

    /// A relinearization key and exactly the Galois keys the plan lists, each made for the
    /// highest level the plan uses it at.
    pub fn evaluation_keys(&self) -> Result<EvaluationKeys> {
        let kg = KeyGenerator::new(&self.params);
        let mut rng = fresh_rng();
        let relin = kg
            .relin_key_at(&self.sk, henn_ckks::Level(self.plan.relin_level), &mut rng)
            .map_err(ckks_err)?;
        let mut galois = kg
            .galois_keys_at(&self.sk, &self.plan.rotation_keys(), &mut rng)
            .map_err(ckks_err)?;
        if self.plan.layout.complex_pairs {
            // pair products conjugate at every level a relinearization happens at
            galois.insert(
                kg.galois_key_at(
                    &self.sk,
                    henn_ckks::GaloisElement::conjugation(self.params.n()),
                    henn_ckks::Level(self.plan.relin_level),
                    &mut rng,
                )
                .map_err(ckks_err)?,
            );
        }
        Ok(EvaluationKeys {
            plan_fingerprint: self.plan.fingerprint.clone(),
            relin,
            galois,
        })
    }

    /// Packs `images` (at most the plan's images per run) as the layout plan says and
    /// encrypts them with the secret key at the top level and the plan's input scale.
    pub fn encrypt(&self, images: &[Tensor]) -> Result<PackedCiphertexts> {
        let enc = Encryptor::new(&self.params);
        let cts = self.encrypt_each(images, |pt, rng| enc.encrypt_sk(pt, &self.sk, rng))?;
        Ok(PackedCiphertexts {
            plan_fingerprint: self.plan.fingerprint.clone(),
            images: images.len(),
            mult: 1.0,
            cts,
        })
    }

    /// The packed input vectors of `images`, each encoded at the top level and default scale
    /// and encrypted by `f` (in parallel, a fresh CSPRNG per worker).
    fn encrypt_each<C: Send>(
        &self,
        images: &[Tensor],
        f: impl Fn(&henn_ckks::Plaintext, &mut ChaCha20Rng) -> henn_ckks::Result<C> + Sync + Send,
    ) -> Result<Vec<C>> {
        let vectors = self.plan.layout.pack_inputs(images)?;
        let level = self.params.max_level();
        let scale = self.plan.layout.input_scale(self.params.default_scale());
        let pairs = self.plan.layout.complex_pairs;
        let slots = self.params.slots();
        vectors
            .par_iter()
            .map_init(fresh_rng, |rng, v| {
                let pt = if pairs {
                    // value slot s in the real part of slot s, slots + s in its imaginary part
                    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
                    let z: Vec<Complex> = (0..slots)
                        .map(|s| Complex::new(at(s), at(slots + s)))
                        .collect();
                    self.encoder.encode_complex(&z, level, scale)
                } else {
                    self.encoder.encode(v, level, scale)
                }
                .map_err(ckks_err)?;
                f(&pt, rng).map_err(ckks_err)
            })
            .collect()
    }

    /// The value slots of a decrypted plaintext: the real slots, followed by the imaginary
    /// parts with complex pairs.
    fn decode_values(&self, pt: &henn_ckks::Plaintext) -> Result<Vec<f64>> {
        if self.plan.layout.complex_pairs {
            let z = self.encoder.decode_complex(pt).map_err(ckks_err)?;
            Ok(z.iter()
                .map(|c| c.re)
                .chain(z.iter().map(|c| c.im))
                .collect())
        } else {
            self.encoder.decode(pt).map_err(ckks_err)
        }
    }

    /// [`Client::encrypt`] as a query to send: seeded ciphertexts (the uniform half of each is
    /// a 32-byte seed), about half the bytes.
    pub fn encrypt_query(&self, images: &[Tensor]) -> Result<Query> {
        let enc = Encryptor::new(&self.params);
        let cts = self.encrypt_each(images, |pt, rng| enc.encrypt_sk_seeded(pt, &self.sk, rng))?;
        Ok(Query {
            plan_fingerprint: self.plan.fingerprint.clone(),
            images: images.len(),
            cts,
        })
    }

    /// [`Client::decrypt`] with noise flooding (a Gaussian of standard deviation
    /// `2^flood_bits` added to every decrypted coefficient; see
    /// `henn_ckks::Decryptor::decrypt_flooded`): for results that will be shared.
    pub fn decrypt_flooded(
        &self,
        out: &PackedCiphertexts,
        flood_bits: u32,
    ) -> Result<Vec<Vec<f64>>> {
        self.check_output(out)?;
        let dec = Decryptor::new(&self.params);
        let slots = out
            .cts
            .par_iter()
            .map_init(fresh_rng, |rng, c| {
                let pt = dec
                    .decrypt_flooded(c, &self.sk, flood_bits, rng)
                    .map_err(ckks_err)?;
                self.decode_values(&pt)
            })
            .collect::<Result<Vec<_>>>()?;
        self.plan
            .layout
            .unpack_outputs(&slots, out.mult, out.images)
    }

    /// Decrypts and decodes ciphertexts to their value slots (see
    /// [`crate::pack::LayoutPlan::value_slots`]).
    pub fn decrypt_slots(&self, cts: &[Ciphertext]) -> Result<Vec<Vec<f64>>> {
        let dec = Decryptor::new(&self.params);
        cts.par_iter()
            .map(|c| {
                let pt = dec.decrypt(c, &self.sk).map_err(ckks_err)?;
                self.decode_values(&pt)
            })
            .collect()
    }

    /// Decrypts a run's output: the logits of each image, the multiplier applied.
    pub fn decrypt(&self, out: &PackedCiphertexts) -> Result<Vec<Vec<f64>>> {
        self.check_output(out)?;
        let slots = self.decrypt_slots(&out.cts)?;
        self.plan
            .layout
            .unpack_outputs(&slots, out.mult, out.images)
    }

    fn check_output(&self, out: &PackedCiphertexts) -> Result<()> {
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
        Ok(())
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
