//! CKKS bootstrapping: a ciphertext at the last level is brought back to a high level.
//!
//! **Pipeline** (CoeffToSlot first):
//! 1. *Sparse-secret encapsulation + ModRaise.* The level-0 ciphertext is switched from the
//!    (dense, uniform ternary) secret `s` to an ephemeral sparse secret `s'` of Hamming weight
//!    `h` with a key over `q_0 p_1 p_2` only (the first two special primes), its coefficients are
//!    lifted from `q_0` to the whole chain, and it is switched back to `s` at the top level.
//!    Under `s'` the lift decrypts to `t = m + q_0 I` with `|I| <= (h + 1) / 2`: for `h = 32`
//!    `|t / q_0| < 16.5` *always* (each of the `h + 1` terms of `c_0 + c_1 s'` lies in
//!    `(-q_0/2, q_0/2]`), so with `K >= 16.5` EvalMod cannot fail (probability 0, not just small).
//!    Security: the only key under the sparse secret lives at modulus `q_0 p_1 p_2` (145 bits
//!    for `boot`), far
//!    below any modulus at which sparse secrets of weight 32 are attackable at this ring degree;
//!    every other key is under `s` (Bossuat, Troncoso-Pastoriza, Hubaux, "Bootstrapping for
//!    approximate homomorphic encryption with negligible failure-probability by using
//!    sparse-secret encapsulation", ACNS 2022, eprint 2022/024).
//! 2. *SubSum* (fewer slots `n < N/2` only): `sum_j rot(ct, j n)` keeps the coefficients of
//!    `X^(N/2n)` powers, the ring of an `n`-slot message.
//! 3. *CoeffToSlot*: the inverse special FFT, collapsed to `cts_levels` levels
//!    ([`dft`]); the result is split into the real and imaginary parts of the packed
//!    coefficients (two ciphertexts for full slots, one `2n`-slot ciphertext otherwise).
//! 4. *EvalMod*: `sin(2 pi t / q_0)` through `cos(2 pi (K y - 1/4) / 2^r)` (Chebyshev, degree
//!    `sine_degree`, on `y = t / (K q_0)` in `[-1, 1]`) and `r` double angles `2c^2 - 1`.
//! 5. *SlotToCoeff*: the special FFT (`stc_levels` levels) with the factor `q_0 / (2 pi Delta)`.
//!
//! **Scales** are exact: the lifted ciphertext is declared at scale `2 S q_0 K` (`S = N/2`) so
//! that the unnormalised CoeffToSlot yields `y` directly; CoeffToSlot plaintext scales bring it
//! to the EvalMod scale; the Chebyshev target is solved backwards through the double angles
//! (`s -> s^2 / q`) so that SlotToCoeff, whose plaintext scales are fixed, lands exactly on the
//! requested output scale whatever the input scale.

pub(crate) mod dft;

use std::sync::Arc;
use std::time::{Duration, Instant};

use henn_ring::{BasisConverter, Coeff, ModDown, Ntt, Poly, sample};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::ciphertext::Ciphertext;
use crate::circuits::{Chebyshev, EncodedLinearTransform, Hoisting, LinearTransform};
use crate::encoding::{Complex, Encoder};
use crate::error::{CkksError, Result};
use crate::eval::Evaluator;
use crate::keys::{
    GaloisKeys, KeyGenerator, KeySwitchKey, RelinKey, SecretKey, expand_uniform, gaussian_ntt,
};
use crate::params::CkksParams;
use crate::types::{GaloisElement, Level, Scale};

/// The centred coefficients of `p` (over `q_0`) as a polynomial over `q_0..q_level`.
pub(crate) fn lift_from_q0(params: &CkksParams, p: &Poly<Ntt>, level: Level) -> Result<Poly<Ntt>> {
    let q0 = params.ring().modulus(0)?;
    let c = p.clone().intt();
    let vals: Vec<i64> = c.limb(0)?.iter().map(|&v| q0.center(v)).collect();
    Ok(Poly::<Coeff>::from_signed(params.ring(), &params.q_limbs(level), &vals)?.ntt())
}

/// Special primes of the encapsulation key (up to 2): its modulus is `q_0` times them, ~145
/// bits for `boot`, and the switching error `c_1 e / P_e` vanishes against the message.
const ENCAPSULATION_PRIMES: usize = 2;

/// Context indices of the encapsulation key's special primes.
pub(crate) fn encapsulation_primes(params: &CkksParams) -> Vec<usize> {
    params
        .p_limbs()
        .into_iter()
        .take(ENCAPSULATION_PRIMES)
        .collect()
}

/// Limbs of the encapsulation key: `q_0` then its special primes.
pub(crate) fn encapsulation_limbs(params: &CkksParams) -> Vec<usize> {
    std::iter::once(0)
        .chain(encapsulation_primes(params))
        .collect()
}

/// The lifted ciphertext is multiplied by this integer before the top-level key switch back
/// to the dense secret, so that the key-switching error is small against the message.
const RAISE_FACTOR: u64 = 1 << 10;

/// Bootstrapping parameters (on top of [`CkksParams`], which fix the modulus chain).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// log2 of the number of slots `n` (at most `log N - 1`; fewer: sparse packing).
    pub log_slots: u32,
    /// Levels of CoeffToSlot (more levels, fewer rotations).
    pub cts_levels: usize,
    /// Levels of SlotToCoeff.
    pub stc_levels: usize,
    /// Range bound `K`: EvalMod approximates on `|t / q_0| <= K`.
    pub k: f64,
    /// Chebyshev degree of the scaled cosine.
    pub sine_degree: usize,
    /// Double-angle steps `r`.
    pub double_angle: u32,
    /// Hamming weight of the ephemeral sparse secret.
    pub ephemeral_hamming_weight: usize,
    /// log2 of the scale EvalMod runs at (about the size of its primes).
    pub log_eval_mod_scale: f64,
    /// Double hoisting in CoeffToSlot (faster, plaintexts over `Q ∪ P`: more memory);
    /// SlotToCoeff, at low levels, uses single hoisting with the same splits.
    pub double_hoisting: bool,
    /// Arcsine correction after EvalMod: `s + s^3 / 6` undoes the sine's cubic error
    /// (`(2 pi m / q_0)^2 / 6` relative, ~2^-17 for a coefficient of 1 at `q_0 / Delta = 2^10`),
    /// at two more levels. Off in `boot`, whose chain has no levels for it.
    #[serde(default)]
    pub arcsine: bool,
}

impl BootstrapConfig {
    /// The default for full slots at `log_n`, for chains shaped like
    /// [`CkksParamsLiteral::boot`](crate::CkksParamsLiteral::boot): 3 + 3 transform levels,
    /// `h = 32`, `K = 17` (deterministic bound 16.5 with margin), degree 56 (level-optimal:
    /// depth 6), 2 double angles, EvalMod at scale 2^60 (8 levels).
    pub fn default_for(log_n: u32) -> Self {
        Self {
            log_slots: log_n.saturating_sub(1),
            cts_levels: 3,
            stc_levels: 3,
            k: 17.0,
            sine_degree: 56,
            double_angle: 2,
            ephemeral_hamming_weight: 32,
            log_eval_mod_scale: 60.0,
            double_hoisting: true,
            arcsine: false,
        }
    }

    /// The configuration of the `boot` preset (N = 2^16, 32768 slots).
    pub fn boot() -> Self {
        Self::default_for(16)
    }

    /// The EvalMod polynomial `cos(2 pi (K y - 1/4) / 2^r)` on `[-1, 1]`.
    pub fn eval_mod_poly(&self) -> Result<Chebyshev> {
        let k = self.k;
        let r = f64::from(self.double_angle).exp2();
        Chebyshev::interpolate(
            move |y| (2.0 * std::f64::consts::PI * (k * y - 0.25) / r).cos(),
            -1.0,
            1.0,
            self.sine_degree,
        )
    }

    /// Levels EvalMod consumes.
    pub fn eval_mod_depth(&self) -> Result<usize> {
        Ok(self.eval_mod_poly()?.depth()
            + self.double_angle as usize
            + if self.arcsine { 2 } else { 0 })
    }

    /// Levels a bootstrap consumes from the top of the chain.
    pub fn depth(&self) -> Result<usize> {
        Ok(self.cts_levels + self.eval_mod_depth()? + self.stc_levels)
    }
}

/// The key that switches a level-0 ciphertext from `s` to the ephemeral sparse `s'`, over
/// `q_0` and the first two special primes only.
#[derive(Clone, Debug)]
pub struct EncapsulationKey {
    pub(crate) b: Poly<Ntt>,
    pub(crate) a: Poly<Ntt>,
    pub(crate) seed: [u8; 32],
}

impl EncapsulationKey {
    /// Memory held, in bytes.
    pub fn memory_bytes(&self) -> usize {
        (self.b.data().len() + self.a.data().len()) * 8
    }
}

/// Everything a server needs to bootstrap (no secret): relinearization key for EvalMod,
/// Galois keys (rotations at the levels they are used, conjugation), and the two
/// encapsulation keys.
#[derive(Clone, Debug)]
pub struct BootstrapKeys {
    /// Relinearization key (serving EvalMod's top level).
    pub relin: RelinKey,
    /// Galois keys.
    pub galois: GaloisKeys,
    /// `s -> s'` at `q_0 p_1 p_2`.
    pub to_sparse: EncapsulationKey,
    /// `s' -> s` at the top level.
    pub from_sparse: KeySwitchKey,
}

impl BootstrapKeys {
    /// Memory held by all keys, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.relin.memory_bytes()
            + self.galois.memory_bytes()
            + self.to_sparse.memory_bytes()
            + self.from_sparse.memory_bytes()
    }
}

/// Precomputed bootstrapping circuit for one parameter set and configuration.
#[derive(Debug)]
pub struct Bootstrapper {
    params: Arc<CkksParams>,
    config: BootstrapConfig,
    ev: Evaluator,
    cts: Vec<EncodedLinearTransform>,
    stc: Vec<EncodedLinearTransform>,
    eval_mod: Chebyshev,
    /// Scale of the lifted ciphertext (`2 S q_0 K`).
    raise_scale: f64,
    /// SlotToCoeff input scale for an input at the reference scale.
    stc_in_scale: f64,
    /// Reference input scale folded into SlotToCoeff.
    ref_scale: f64,
    out_scale: Scale,
    out_level: Level,
    i_pt: Vec<crate::ciphertext::Plaintext>,
    to_sparse_conv: BasisConverter,
    to_sparse_down: ModDown,
}

/// Wall time of each stage of one bootstrap.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageTimes {
    /// Encapsulation, ModRaise, switch back (and SubSum for fewer slots).
    pub mod_raise: Duration,
    /// CoeffToSlot.
    pub coeff_to_slot: Duration,
    /// Conjugation split and EvalMod (both halves for full slots).
    pub eval_mod: Duration,
    /// SlotToCoeff.
    pub slot_to_coeff: Duration,
}

/// What a bootstrap needs, levels included, for key generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapKeyPlan {
    /// `(steps, level)` of every rotation.
    pub rotations: Vec<(i64, Level)>,
    /// Level of the conjugation key.
    pub conjugation: Level,
    /// Level of the relinearization key.
    pub relin: Level,
}

impl Bootstrapper {
    /// Precomputes (and encodes) the transforms; `out_scale` is the scale every bootstrap
    /// returns (usually `params.default_scale()`).
    pub fn new(
        params: &Arc<CkksParams>,
        config: BootstrapConfig,
        out_scale: Scale,
    ) -> Result<Self> {
        let ring_n = params.n();
        let slots = params.slots();
        let n = 1usize << config.log_slots;
        if n > slots || config.log_slots == 0 {
            return Err(CkksError::InvalidArgument(format!(
                "bootstrapping {n} slots with N = {ring_n}: use 2..={slots}"
            )));
        }
        if params.p().is_empty() {
            return Err(CkksError::InvalidParams(
                "bootstrapping needs special primes".into(),
            ));
        }
        let bound = (config.ephemeral_hamming_weight as f64 + 1.0) / 2.0;
        if config.k < bound {
            return Err(CkksError::InvalidArgument(format!(
                "K = {} below the bound {bound} of the ephemeral secret (h = {})",
                config.k, config.ephemeral_hamming_weight
            )));
        }
        let log_n_slots = config.log_slots as usize;
        if config.cts_levels == 0
            || config.stc_levels == 0
            || config.cts_levels > log_n_slots
            || config.stc_levels > log_n_slots
        {
            return Err(CkksError::InvalidArgument(format!(
                "transform levels must be in 1..={log_n_slots}"
            )));
        }
        let eval_mod = config.eval_mod_poly()?;
        let em_depth = config.eval_mod_depth()?;
        let top = params.max_level().0;
        let need = config.cts_levels + em_depth + config.stc_levels;
        if top < need + 1 {
            return Err(CkksError::InvalidParams(format!(
                "bootstrapping needs {need} levels above a level left; the chain has {top}"
            )));
        }
        let sparse = n < slots;
        let q = params.q();
        let prime =
            |l: usize| -> Result<f64> { q.get(l).map(|&v| v as f64).ok_or(CkksError::OutOfLevels) };
        let q0 = prime(0)?;
        let enc = Encoder::new(params);
        let hoisting = if config.double_hoisting {
            Hoisting::Double
        } else {
            Hoisting::Single
        };

        // CoeffToSlot: declared input scale 2 S q0 K, output the EvalMod scale.
        let raise_scale = 2.0 * slots as f64 * q0 * config.k * RAISE_FACTOR as f64;
        let eval_mod_scale = config.log_eval_mod_scale.exp2();
        let mut cts_m = dft::coeff_to_slot(ring_n, n, config.cts_levels)?;
        if sparse {
            // rows j mod 2n < n keep y/2, the others get -i y/2: v + conj(v) = [Re y, Im y]
            let d: Vec<Complex> = (0..slots)
                .map(|j| {
                    if j % (2 * n) < n {
                        Complex::new(1.0, 0.0)
                    } else {
                        Complex::new(0.0, -1.0)
                    }
                })
                .collect();
            if let Some(last) = cts_m.last_mut() {
                last.scale_rows(&d);
            }
        }
        let cts_count = cts_m.len();
        let ratio = (eval_mod_scale / raise_scale).powf(1.0 / cts_count as f64);
        let mut cts = Vec::with_capacity(cts_count);
        let mut in_scale = raise_scale;
        for (i, m) in cts_m.iter().enumerate() {
            let level = top - i;
            let out = if i + 1 == cts_count {
                eval_mod_scale
            } else {
                in_scale * ratio
            };
            let pt_scale = out * prime(level)? / in_scale;
            cts.push(m.encode_with(&enc, Level(level), scale(pt_scale)?, hoisting)?);
            in_scale = out;
        }

        // SlotToCoeff: from the (fixed) input scale to out_scale.
        let stc_top = top - config.cts_levels - em_depth;
        let ref_scale = params.default_scale().value();
        let stc_in_scale = eval_mod_scale;
        let mut stc_m = dft::slot_to_coeff(ring_n, n, config.stc_levels)?;
        if let Some(first) = stc_m.first_mut() {
            let mut pre = if sparse {
                // [Re, Im] (2n-periodic) -> Re + i Im (n-periodic)
                let mut r = LinearTransform::zero(slots);
                for j in 0..slots {
                    let (a, b) = if j % (2 * n) < n {
                        (Complex::new(1.0, 0.0), Complex::new(0.0, 1.0))
                    } else {
                        (Complex::new(0.0, 1.0), Complex::new(1.0, 0.0))
                    };
                    r.add_entry(j, j, a);
                    r.add_entry(j, (j + n) % slots, b);
                }
                first.compose(&r)?
            } else {
                first.clone()
            };
            pre.scale_by(Complex::new(
                q0 / (2.0 * std::f64::consts::PI * ref_scale),
                0.0,
            ));
            *first = pre;
        }
        let stc_count = stc_m.len();
        let sratio = (out_scale.value() / stc_in_scale).powf(1.0 / stc_count as f64);
        let mut stc = Vec::with_capacity(stc_count);
        let mut in_scale = stc_in_scale;
        for (i, m) in stc_m.iter().enumerate() {
            let level = stc_top - i;
            let out = if i + 1 == stc_count {
                out_scale.value()
            } else {
                in_scale * sratio
            };
            let pt_scale = out * prime(level)? / in_scale;
            // SlotToCoeff runs at low levels, where plaintexts over Q ∪ P would cost more
            // memory than double hoisting saves time: single hoisting, with CoeffToSlot's
            // split so that both share their rotation keys
            stc.push(m.encode_with_weight(
                &enc,
                Level(level),
                scale(pt_scale)?,
                Hoisting::Single,
                hoisting.baby_weight(),
            )?);
            in_scale = out;
        }
        let out_level = Level(stc_top - stc_count);

        // i as a plaintext (the monomial X^(N/2)) at the levels it is used at
        let i_pt = (0..=top)
            .map(|l| enc.encode_constant(Complex::new(0.0, 1.0), Level(l), scale(1.0)?))
            .collect::<Result<Vec<_>>>()?;
        let ctx = params.ring();
        let pe = encapsulation_primes(params);
        let to_sparse_conv = BasisConverter::new(ctx, &[0], &pe)?;
        let to_sparse_down = ModDown::new(ctx, &[0], &pe)?;
        Ok(Self {
            params: params.clone(),
            ev: Evaluator::new(params),
            config,
            cts,
            stc,
            eval_mod,
            raise_scale,
            stc_in_scale,
            ref_scale,
            out_scale,
            out_level,
            i_pt,
            to_sparse_conv,
            to_sparse_down,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BootstrapConfig {
        &self.config
    }

    /// Level of every bootstrapped ciphertext (the levels left).
    pub fn output_level(&self) -> Level {
        self.out_level
    }

    /// Scale of every bootstrapped ciphertext.
    pub fn output_scale(&self) -> Scale {
        self.out_scale
    }

    /// Memory held by the encoded transforms, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.cts
            .iter()
            .chain(&self.stc)
            .map(EncodedLinearTransform::memory_bytes)
            .sum()
    }

    fn slots(&self) -> usize {
        1 << self.config.log_slots
    }

    fn sparse(&self) -> bool {
        self.slots() < self.params.slots()
    }

    /// Keys a bootstrap needs, with the level each one serves.
    pub fn key_plan(&self) -> BootstrapKeyPlan {
        let top = self.params.max_level().0;
        let mut rotations = Vec::new();
        if self.sparse() {
            let n = self.slots();
            let mut r = n;
            while r < self.params.slots() {
                rotations.push((r as i64, Level(top)));
                r *= 2;
            }
        }
        for t in &self.cts {
            rotations.extend(t.rotations().into_iter().map(|r| (r, t.level())));
        }
        for t in &self.stc {
            rotations.extend(t.rotations().into_iter().map(|r| (r, t.level())));
        }
        let em_top = Level(top - self.config.cts_levels);
        BootstrapKeyPlan {
            rotations,
            conjugation: em_top,
            relin: em_top,
        }
    }

    /// Generates the bootstrapping keys for `sk` (with a fresh ephemeral sparse secret, used
    /// here only and zeroized).
    pub fn generate_keys<R: RngCore + CryptoRng + ?Sized>(
        &self,
        sk: &SecretKey,
        rng: &mut R,
    ) -> Result<BootstrapKeys> {
        let params = &self.params;
        params.check_id(sk.params_id)?;
        let kg = KeyGenerator::new(params);
        let plan = self.key_plan();
        let mut galois = kg.galois_keys_at(sk, &plan.rotations, rng)?;
        let conj = kg.galois_key_at(
            sk,
            GaloisElement::conjugation(params.n()),
            plan.conjugation,
            rng,
        )?;
        galois.insert(conj);
        let relin = kg.relin_key_at(sk, plan.relin, rng)?;

        let mut coeffs =
            sample::sparse_ternary(params.n(), self.config.ephemeral_hamming_weight, rng)?;
        let all = params.all_limbs();
        let sparse = Poly::<Coeff>::from_signed(params.ring(), &all, &coeffs);
        coeffs.zeroize();
        let mut sparse = sparse?.ntt();
        let from_sparse = kg.switch_key_from(sk, &sparse, params.max_level(), rng);
        let to_sparse = self.encapsulation_key(sk, &sparse, rng);
        sparse.data_mut().zeroize();
        Ok(BootstrapKeys {
            relin,
            galois,
            to_sparse: to_sparse?,
            from_sparse: from_sparse?,
        })
    }

    /// `b = -a s' + e + P_e s` over `q_0` and the encapsulation primes (`P_e` their product).
    fn encapsulation_key<R: RngCore + CryptoRng + ?Sized>(
        &self,
        sk: &SecretKey,
        sparse: &Poly<Ntt>,
        rng: &mut R,
    ) -> Result<EncapsulationKey> {
        let params = &self.params;
        let limbs = encapsulation_limbs(params);
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let a = expand_uniform(params, &seed, 1, &limbs)?
            .pop()
            .ok_or(CkksError::InvalidParams(
                "encapsulation key expansion".into(),
            ))?;
        let s_sparse = sparse.select_limbs(&limbs)?;
        let mut b = gaussian_ntt(params, &limbs, rng)?;
        let mut as_ = a.mul(&s_sparse)?;
        as_.neg_assign();
        b.add_assign(&as_)?;
        // P_e = the product of the encapsulation primes: P_e mod q_0 on q_0, 0 on them
        let q0m = params.ring().modulus(0)?;
        let mut p_mod_q0 = 1u64;
        for &i in limbs.iter().skip(1) {
            p_mod_q0 = q0m.mul(p_mod_q0, q0m.reduce(params.ring().modulus(i)?.value()));
        }
        let mut scalars = vec![0u64; limbs.len()];
        if let Some(x) = scalars.first_mut() {
            *x = p_mod_q0;
        }
        let mut ps = sk.poly.select_limbs(&limbs)?;
        ps.mul_scalar_assign(&scalars)?;
        b.add_assign(&ps)?;
        ps.data_mut().zeroize();
        Ok(EncapsulationKey { b, a, seed })
    }

    fn check_keys(&self, keys: &BootstrapKeys) -> Result<()> {
        let plan = self.key_plan();
        for &(r, level) in &plan.rotations {
            let g = GaloisElement::for_rotation(r, self.params.n());
            match keys.galois.level_of(g) {
                None => {
                    return Err(CkksError::MissingGaloisKey {
                        element: g,
                        steps: Some(r),
                    });
                }
                Some(l) if l < level => {
                    return Err(CkksError::KeyLevel {
                        key: l,
                        needed: level,
                    });
                }
                Some(_) => {}
            }
        }
        let conj = GaloisElement::conjugation(self.params.n());
        if !keys.galois.contains(conj) {
            return Err(CkksError::MissingGaloisKey {
                element: conj,
                steps: None,
            });
        }
        if keys.relin.level() < plan.relin {
            return Err(CkksError::KeyLevel {
                key: keys.relin.level(),
                needed: plan.relin,
            });
        }
        Ok(())
    }

    /// Switches a level-0 ciphertext to the sparse secret and lifts it to the top level,
    /// back under `s`.
    fn mod_raise(&self, ct: &Ciphertext, keys: &BootstrapKeys) -> Result<Ciphertext> {
        let params = &self.params;
        let ct0 = self.ev.drop_level_to(ct, Level(0))?;
        let (c0, c1) = match ct0.parts.as_slice() {
            [c0, c1] => (c0, c1),
            _ => {
                return Err(CkksError::WrongSize {
                    expected: 2,
                    got: ct0.parts.len(),
                });
            }
        };
        // s -> s' at q0 p1 p2
        let c1_coeff = c1.clone().intt();
        let ext = self.to_sparse_conv.convert(&c1_coeff)?.ntt();
        let d = c1.clone().concat_limbs(&ext)?;
        let (u0, u1) = rayon::join(
            || -> Result<Poly<Ntt>> { Ok(self.to_sparse_down.apply(d.mul(&keys.to_sparse.b)?)?) },
            || -> Result<Poly<Ntt>> { Ok(self.to_sparse_down.apply(d.mul(&keys.to_sparse.a)?)?) },
        );
        let mut b0 = c0.clone();
        b0.add_assign(&u0?)?;
        let b1 = u1?;
        // lift from q0 to the whole chain
        let top = params.max_level();
        let lift = |p: Poly<Ntt>| lift_from_q0(params, &p, top);
        let (r0, r1) = rayon::join(|| lift(b0), || lift(b1));
        let (mut r0, mut r1) = (r0?, r1?);
        // times F (free, no level; the declared scale absorbs it): the error of the
        // top-level key switch below, ~2^10 in absolute terms at N = 2^16, then weighs
        // 1/F against the message instead of dominating the bootstrap's error
        let f = self.raise_factor_residues(top)?;
        r0.mul_scalar_assign(&f)?;
        r1.mul_scalar_assign(&f)?;
        // s' -> s at the top level
        let (v0, v1) = self.ev.key_switch(&r1, top, &keys.from_sparse)?;
        r0.add_assign(&v0)?;
        Ok(Ciphertext {
            parts: vec![r0, v1],
            level: top,
            scale: scale(self.raise_scale)?,
            params_id: params.id(),
        })
    }

    fn raise_factor_residues(&self, level: Level) -> Result<Vec<u64>> {
        self.params
            .q_limbs(level)
            .iter()
            .map(|&i| Ok(self.params.ring().modulus(i)?.reduce(RAISE_FACTOR)))
            .collect()
    }

    fn mul_i(&self, ct: &mut Ciphertext, negate: bool) -> Result<()> {
        let pt = self
            .i_pt
            .get(ct.level.0)
            .ok_or(CkksError::LevelOutOfRange {
                level: ct.level.0,
                max: self.i_pt.len().saturating_sub(1),
            })?;
        self.ev.mul_plain_assign(ct, pt)?;
        if negate {
            self.ev.neg_assign(ct)?;
        }
        Ok(())
    }

    /// EvalMod of a real-slot ciphertext at the EvalMod scale; lands at `target`.
    fn eval_mod(&self, ct: &Ciphertext, target: f64, rlk: &RelinKey) -> Result<Ciphertext> {
        let q = |l: usize| -> Result<f64> {
            self.params
                .q()
                .get(l)
                .map(|&v| v as f64)
                .ok_or(CkksError::OutOfLevels)
        };
        let r = self.config.double_angle as usize;
        let cheb_level = ct.level.0 - self.eval_mod.depth();
        // scales solved backwards from the target: the arcsine step maps s to s^3 / (q_a q_b)
        // (levels l_r and l_r - 1 after the double angles), each double angle s to s^2 / q
        let l_r = cheb_level - r;
        let mut s = target;
        if self.config.arcsine {
            s = (s * q(l_r)? * q(l_r - 1)?).cbrt();
        }
        for k in 0..r {
            // the k-th double angle from the end rescales by the prime at l_r + 1 + k
            s = (s * q(l_r + 1 + k)?).sqrt();
        }
        let mut c = self.eval_mod.evaluate(&self.ev, ct, scale(s)?, rlk)?;
        for _ in 0..r {
            let mut d = self.ev.square_relin(&c, rlk)?;
            self.ev.mul_int_assign(&mut d, 2)?;
            self.ev.add_const_assign(&mut d, -1.0)?;
            self.ev.rescale_assign(&mut d)?;
            c = d;
        }
        if self.config.arcsine {
            c = self.arcsine(&c, rlk)?;
        }
        Ok(c)
    }

    /// `s + s^3 / 6` (arcsin to third order) two levels down, at scale `s^3 / (q_a q_b)`.
    fn arcsine(&self, c: &Ciphertext, rlk: &RelinKey) -> Result<Ciphertext> {
        let qa = self.ev.rescale_neutral_scale(c)?;
        let mut s2 = self.ev.square_relin(c, rlk)?;
        self.ev.rescale_assign(&mut s2)?;
        let mut s6 = self.ev.mul_const(c, 1.0 / 6.0, qa)?;
        self.ev.rescale_assign(&mut s6)?;
        let mut p = self.ev.mul_relin(&s2, &s6, rlk)?;
        // s itself, brought to the product's scale: times s^2 / q_a (an integer ~2^60), then
        // both rescale by the same prime
        let lin = self.ev.drop_level_to(c, s2.level())?;
        let cs = scale(p.scale().value() / lin.scale().value())?;
        let lin = self.ev.mul_const(&lin, 1.0, cs)?;
        self.ev.add_assign(&mut p, &lin)?;
        self.ev.rescale_assign(&mut p)?;
        Ok(p)
    }

    fn apply_lt(
        &self,
        t: &EncodedLinearTransform,
        ct: &Ciphertext,
        gk: &GaloisKeys,
    ) -> Result<Ciphertext> {
        let mut out = t.apply(&self.ev, ct, gk)?;
        self.ev.rescale_assign(&mut out)?;
        Ok(out)
    }

    /// Bootstraps `ct` (any level; its slots must be `2^log_slots`-periodic): returns a
    /// ciphertext with the same slots, up to the bootstrapping error, at
    /// [`Self::output_level`] and exactly [`Self::output_scale`].
    pub fn bootstrap(&self, ct: &Ciphertext, keys: &BootstrapKeys) -> Result<Ciphertext> {
        Ok(self.bootstrap_timed(ct, keys)?.0)
    }

    /// [`Self::bootstrap`], also returning the wall time of each stage.
    pub fn bootstrap_timed(
        &self,
        ct: &Ciphertext,
        keys: &BootstrapKeys,
    ) -> Result<(Ciphertext, StageTimes)> {
        self.params.check_id(ct.params_id)?;
        self.check_keys(keys)?;
        let mut times = StageTimes::default();
        let in_scale = ct.scale.value();
        let gk = &keys.galois;
        let t = Instant::now();
        let mut x = self.mod_raise(ct, keys)?;
        if self.sparse() {
            let declared = x.scale;
            x = self.ev.rotate_and_sum(
                &x,
                self.params.slots() / self.slots(),
                self.slots() as i64,
                gk,
            )?;
            x.scale = declared;
        }
        times.mod_raise = t.elapsed();
        let t = Instant::now();
        for lt in &self.cts {
            x = self.apply_lt(lt, &x, gk)?;
        }
        times.coeff_to_slot = t.elapsed();
        // the SlotToCoeff input must be at stc_in_scale * in_scale / ref_scale (see the
        // module docs): EvalMod lands there, then the scale is re-declared
        let em_target = self.stc_in_scale * self.ref_scale / in_scale;
        let t = Instant::now();
        let conj = self.ev.conjugate(&x, gk)?;
        let y = if self.sparse() {
            let re_im = self.ev.add(&x, &conj)?;
            let mut y = self.eval_mod(&re_im, em_target, &keys.relin)?;
            y.scale = scale(self.stc_in_scale)?;
            y
        } else {
            let re = self.ev.add(&x, &conj)?;
            let mut im = self.ev.sub(&x, &conj)?;
            self.mul_i(&mut im, true)?;
            let (a, b) = rayon::join(
                || self.eval_mod(&re, em_target, &keys.relin),
                || self.eval_mod(&im, em_target, &keys.relin),
            );
            let (mut a, mut b) = (a?, b?);
            self.mul_i(&mut b, false)?;
            self.ev.add_assign(&mut a, &b)?;
            a.scale = scale(self.stc_in_scale)?;
            a
        };
        times.eval_mod = t.elapsed();
        let t = Instant::now();
        let mut out = y;
        for lt in &self.stc {
            out = self.apply_lt(lt, &out, gk)?;
        }
        out.scale = self.out_scale;
        times.slot_to_coeff = t.elapsed();
        Ok((out, times))
    }

    /// Bootstraps a ciphertext whose slots are real and returns real slots: the imaginary
    /// part of the bootstrapping error is removed with one conjugation.
    pub fn bootstrap_real(&self, ct: &Ciphertext, keys: &BootstrapKeys) -> Result<Ciphertext> {
        let mut half = ct.clone();
        half.scale = scale(ct.scale.value() * 2.0)?;
        let out = self.bootstrap(&half, keys)?;
        let conj = self.ev.conjugate(&out, &keys.galois)?;
        self.ev.add(&out, &conj)
    }

    /// Bootstraps two real-slot ciphertexts for the price of one (fast path for real
    /// values): `a + i b` is bootstrapped once and split again by conjugation.
    pub fn bootstrap_real_pair(
        &self,
        a: &Ciphertext,
        b: &Ciphertext,
        keys: &BootstrapKeys,
    ) -> Result<(Ciphertext, Ciphertext)> {
        let a0 = self.ev.drop_level_to(a, Level(0))?;
        let mut b0 = self.ev.drop_level_to(b, Level(0))?;
        if !a0.scale.matches(b0.scale) {
            return Err(CkksError::ScaleMismatch {
                lhs_log2: a0.scale.log2(),
                rhs_log2: b0.scale.log2(),
            });
        }
        self.mul_i(&mut b0, false)?;
        let mut packed = self.ev.add(&a0, &b0)?;
        packed.scale = scale(a0.scale.value() * 2.0)?;
        let out = self.bootstrap(&packed, keys)?;
        let conj = self.ev.conjugate(&out, &keys.galois)?;
        let re = self.ev.add(&out, &conj)?;
        let mut im = self.ev.sub(&out, &conj)?;
        self.mul_i(&mut im, true)?;
        Ok((re, im))
    }
}

#[cfg(test)]
mod tests;

fn scale(v: f64) -> Result<Scale> {
    Scale::new(v).ok_or_else(|| CkksError::InvalidArgument(format!("scale {v} below 1")))
}
