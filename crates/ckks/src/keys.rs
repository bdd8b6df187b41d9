//! Keys: secret (zeroized, redacted), public, and hybrid key-switching keys
//! (relinearization, rotations, conjugation), with the uniform parts derived from seeds.

use std::collections::BTreeMap;
use std::sync::Arc;

use henn_ring::{AutomorphismPermutation, Coeff, Ntt, Poly, sample};
use rand::{CryptoRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{CkksError, Result};
use crate::params::{CkksParams, ParamsId, SecretDistribution};
use crate::types::{GaloisElement, Level};

/// The secret key `s`, stored in NTT form over all primes (data and special).
///
/// Zeroized on drop; `Debug` is redacted; there is deliberately no serializer.
pub struct SecretKey {
    pub(crate) poly: Poly<Ntt>,
    /// Signed coefficients (for automorphisms and tests).
    pub(crate) coeffs: Vec<i64>,
    pub(crate) params_id: ParamsId,
}

impl Zeroize for SecretKey {
    fn zeroize(&mut self) {
        self.poly.zeroize();
        self.coeffs.zeroize();
    }
}
impl Drop for SecretKey {
    fn drop(&mut self) {
        self.zeroize();
    }
}
impl ZeroizeOnDrop for SecretKey {}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey")
            .field("params_id", &self.params_id)
            .field("data", &"<redacted>")
            .finish()
    }
}

impl SecretKey {
    /// Parameter fingerprint.
    pub fn params_id(&self) -> ParamsId {
        self.params_id
    }
}

/// A public encryption key `(b, a) = (-a s + e, a)` over the data primes, with `a`
/// expanded from `seed` (so it serializes as `b` and the seed).
#[derive(Clone, Debug, PartialEq)]
pub struct PublicKey {
    pub(crate) b: Poly<Ntt>,
    pub(crate) a: Poly<Ntt>,
    pub(crate) seed: [u8; 32],
    pub(crate) params_id: ParamsId,
}

impl PublicKey {
    /// Parameter fingerprint.
    pub fn params_id(&self) -> ParamsId {
        self.params_id
    }
}

/// A hybrid key-switching key from `s'` to `s`: one pair per digit over `Q ∪ P`,
/// `b_j = -a_j s + e_j + P * [digit j indicator] * s'`, with all `a_j` expanded from `seed`.
#[derive(Clone, Debug, PartialEq)]
pub struct KeySwitchKey {
    pub(crate) b: Vec<Poly<Ntt>>,
    pub(crate) a: Vec<Poly<Ntt>>,
    pub(crate) seed: [u8; 32],
    pub(crate) params_id: ParamsId,
    /// Highest level the key serves: its polynomials cover `q_0..q_level` and the special
    /// primes, with the digits of that level (a key for a lower level is smaller).
    pub(crate) level: Level,
}

impl KeySwitchKey {
    /// Whether the key belongs to this parameter instance: same fingerprint and the same
    /// ring context (objects of two equal parameter sets built separately do not mix; read
    /// or generate keys with the instance that will use them).
    pub fn belongs_to(&self, params: &CkksParams) -> bool {
        self.params_id == params.id()
            && self
                .b
                .iter()
                .chain(&self.a)
                .all(|p| Arc::ptr_eq(p.context(), params.ring()))
    }
    /// Bytes the key's polynomials occupy in memory (both halves, every digit).
    pub fn memory_bytes(&self) -> usize {
        self.b
            .iter()
            .chain(&self.a)
            .map(|p| p.data().len() * 8)
            .sum()
    }
    /// Highest level the key serves.
    pub fn level(&self) -> Level {
        self.level
    }
    /// The key's limbs (context indices): `q_0..q_level`, then the special primes.
    pub(crate) fn limbs(params: &CkksParams, level: Level) -> Vec<usize> {
        let mut v = params.q_limbs(level);
        v.extend(params.p_limbs());
        v
    }
    /// Number of digits.
    pub fn dnum(&self) -> usize {
        self.b.len()
    }
    /// Parameter fingerprint.
    pub fn params_id(&self) -> ParamsId {
        self.params_id
    }
}

/// The relinearization key (switches from `s^2` to `s`).
#[derive(Clone, Debug, PartialEq)]
pub struct RelinKey(pub(crate) KeySwitchKey);

impl RelinKey {
    /// Highest level the key serves.
    pub fn level(&self) -> Level {
        self.0.level
    }
    /// See [`KeySwitchKey::belongs_to`].
    pub fn belongs_to(&self, params: &CkksParams) -> bool {
        self.0.belongs_to(params)
    }
    /// Bytes in memory (see [`KeySwitchKey::memory_bytes`]).
    pub fn memory_bytes(&self) -> usize {
        self.0.memory_bytes()
    }
    /// Parameter fingerprint.
    pub fn params_id(&self) -> ParamsId {
        self.0.params_id
    }
}

/// A Galois key for the automorphism `sigma: X -> X^g`, kept in *hoisting form*: every
/// polynomial of the key-switching key (from `sigma(s)` to `s`) is stored permuted by
/// `sigma^-1`. Since `sigma` is a ring automorphism, `sum_j sigma(d_j) k_j =
/// sigma(sum_j d_j sigma^-1(k_j))`: a rotation decomposes `c_1` itself (shareable between
/// rotations), takes the inner product without permuting any digit, and permutes only the two
/// results. Serialization converts to and from the canonical form.
#[derive(Clone, Debug, PartialEq)]
pub struct GaloisKey {
    pub(crate) key: KeySwitchKey,
    pub(crate) perm: AutomorphismPermutation,
    pub(crate) perm_inv: AutomorphismPermutation,
}

impl GaloisKey {
    /// Builds the hoisting form from a canonical key-switching key for element `g`.
    pub(crate) fn from_canonical(mut key: KeySwitchKey, n: usize, g: u64) -> Result<Self> {
        let perm = AutomorphismPermutation::new(n, g)?;
        let perm_inv = AutomorphismPermutation::new(n, inverse_mod_2n(g, n))?;
        for p in key.b.iter_mut().chain(key.a.iter_mut()) {
            *p = p.automorphism(&perm_inv)?;
        }
        Ok(Self {
            key,
            perm,
            perm_inv,
        })
    }

    /// The canonical key-switching key (for serialization).
    pub(crate) fn canonical(&self) -> Result<KeySwitchKey> {
        let mut key = self.key.clone();
        for p in key.b.iter_mut().chain(key.a.iter_mut()) {
            *p = p.automorphism(&self.perm)?;
        }
        Ok(key)
    }

    /// The Galois element.
    pub fn element(&self) -> GaloisElement {
        GaloisElement(self.perm.galois())
    }
}

/// `g^-1 mod 2n` for odd `g` (2n a power of two), by Newton iteration.
pub(crate) fn inverse_mod_2n(g: u64, n: usize) -> u64 {
    let mask = (2 * n as u64) - 1;
    let mut x = g; // correct to 3 bits for odd g
    for _ in 0..6 {
        x = x.wrapping_mul(2u64.wrapping_sub(g.wrapping_mul(x)));
    }
    x & mask
}

/// Galois keys indexed by element.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GaloisKeys {
    pub(crate) keys: BTreeMap<GaloisElement, GaloisKey>,
}

impl GaloisKeys {
    /// Elements present.
    pub fn elements(&self) -> impl Iterator<Item = GaloisElement> + '_ {
        self.keys.keys().copied()
    }
    /// Whether the key for `g` is present.
    pub fn contains(&self, g: GaloisElement) -> bool {
        self.keys.contains_key(&g)
    }
    pub(crate) fn get(&self, g: GaloisElement, steps: Option<i64>) -> Result<&GaloisKey> {
        self.keys
            .get(&g)
            .ok_or(CkksError::MissingGaloisKey { element: g, steps })
    }
    /// Highest level the key for `g` serves, if there is one.
    pub fn level_of(&self, g: GaloisElement) -> Option<Level> {
        self.keys.get(&g).map(|k| k.key.level)
    }
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    /// Bytes in memory of all keys (see [`KeySwitchKey::memory_bytes`]).
    pub fn memory_bytes(&self) -> usize {
        self.keys.values().map(|k| k.key.memory_bytes()).sum()
    }
    /// Whether every key belongs to this parameter instance (see
    /// [`KeySwitchKey::belongs_to`]).
    pub fn belong_to(&self, params: &CkksParams) -> bool {
        self.keys.values().all(|k| k.key.belongs_to(params))
    }
    /// Removes the key for `g`; whether it was there.
    pub fn remove(&mut self, g: GaloisElement) -> bool {
        self.keys.remove(&g).is_some()
    }
    /// Adds (or replaces) one key.
    pub fn insert(&mut self, key: GaloisKey) {
        self.keys.insert(key.element(), key);
    }
    /// Adds (or replaces) keys from another set.
    pub fn extend(&mut self, other: GaloisKeys) {
        self.keys.extend(other.keys);
    }
}

/// Generates keys from a caller-provided CSPRNG.
#[derive(Debug)]
pub struct KeyGenerator {
    params: Arc<CkksParams>,
}

/// Expands a 32-byte seed into the uniform polynomials `a_j` of a key-switching key (or of a
/// seeded ciphertext).
pub(crate) fn expand_uniform(
    params: &CkksParams,
    seed: &[u8; 32],
    count: usize,
    limbs: &[usize],
) -> Result<Vec<Poly<Ntt>>> {
    let mut rng = ChaCha20Rng::from_seed(*seed);
    (0..count)
        .map(|_| Ok(sample::uniform_ntt(params.ring(), limbs, &mut rng)?))
        .collect()
}

/// A fresh error polynomial over `limbs` in NTT form.
pub(crate) fn gaussian_ntt<R: RngCore + CryptoRng + ?Sized>(
    params: &CkksParams,
    limbs: &[usize],
    rng: &mut R,
) -> Result<Poly<Ntt>> {
    let e = sample::gaussian(params.n(), sample::GAUSSIAN_SIGMA, rng);
    Ok(Poly::<Coeff>::from_signed(params.ring(), limbs, &e)?.ntt())
}

impl KeyGenerator {
    /// A generator for `params`.
    pub fn new(params: &Arc<CkksParams>) -> Self {
        Self {
            params: params.clone(),
        }
    }

    /// Samples a secret key.
    pub fn secret_key<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R) -> Result<SecretKey> {
        let n = self.params.n();
        let coeffs = match self.params.literal().secret {
            SecretDistribution::Ternary => sample::ternary(n, rng),
            SecretDistribution::SparseTernary { hamming_weight } => {
                sample::sparse_ternary(n, hamming_weight, rng)?
            }
        };
        let poly =
            Poly::<Coeff>::from_signed(self.params.ring(), &self.params.all_limbs(), &coeffs)?
                .ntt();
        Ok(SecretKey {
            poly,
            coeffs,
            params_id: self.params.id(),
        })
    }

    /// A public key for `sk`.
    pub fn public_key<R: RngCore + CryptoRng + ?Sized>(
        &self,
        sk: &SecretKey,
        rng: &mut R,
    ) -> Result<PublicKey> {
        self.params.check_id(sk.params_id)?;
        let limbs = self.params.q_limbs(self.params.max_level());
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let a = expand_uniform(&self.params, &seed, 1, &limbs)?
            .pop()
            .ok_or(CkksError::InvalidParams("public key expansion".into()))?;
        let s = sk.poly.select_limbs(&limbs)?;
        let mut b = gaussian_ntt(&self.params, &limbs, rng)?;
        // b = e - a s
        let mut as_ = a.mul(&s)?;
        as_.neg_assign();
        b.add_assign(&as_)?;
        Ok(PublicKey {
            b,
            a,
            seed,
            params_id: self.params.id(),
        })
    }

    /// A key-switching key from `s_from` (NTT, all primes) to `sk` for ciphertexts up to
    /// `level`: over `q_0..q_level` and the special primes, with that level's digits.
    fn key_switch_key<R: RngCore + CryptoRng + ?Sized>(
        &self,
        sk: &SecretKey,
        s_from: &Poly<Ntt>,
        level: Level,
        rng: &mut R,
    ) -> Result<KeySwitchKey> {
        let params = &self.params;
        params.check_level(level)?;
        let limbs = KeySwitchKey::limbs(params, level);
        let tables = params.level_tables(level)?;
        let dnum = tables.digits.len();
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let a = expand_uniform(params, &seed, dnum, &limbs)?;
        let s = sk.poly.select_limbs(&limbs)?;
        let s_from = s_from.select_limbs(&limbs)?;
        // P mod q_i for the data primes.
        let ctx = params.ring();
        let p_limbs = params.p_limbs();
        let mut b = Vec::with_capacity(dnum);
        for (j, digit) in tables.digits.iter().enumerate() {
            let aj = a
                .get(j)
                .ok_or(CkksError::InvalidParams("digit count".into()))?;
            let mut bj = gaussian_ntt(params, &limbs, rng)?;
            let mut as_ = aj.mul(&s)?;
            as_.neg_assign();
            bj.add_assign(&as_)?;
            // + P * s_from on the limbs of digit j (zero elsewhere, including P's limbs);
            // data primes come first, so a data prime's position is its context index
            let mut scalars = vec![0u64; limbs.len()];
            for &i in digit {
                let qi = ctx.modulus(i)?;
                let mut pm = 1u64;
                for &pi in &p_limbs {
                    pm = qi.mul(pm, ctx.modulus(pi)?.value());
                }
                if let Some(sc) = scalars.get_mut(i) {
                    *sc = pm;
                }
            }
            let mut term = s_from.clone();
            term.mul_scalar_assign(&scalars)?;
            bj.add_assign(&term)?;
            b.push(bj);
        }
        Ok(KeySwitchKey {
            b,
            a,
            seed,
            params_id: params.id(),
            level,
        })
    }

    /// A key switching from the secret `s_from` (NTT, all primes) to `sk`, serving
    /// ciphertexts up to `level` (used by bootstrapping's sparse-secret encapsulation).
    pub(crate) fn switch_key_from<R: RngCore + CryptoRng + ?Sized>(
        &self,
        sk: &SecretKey,
        s_from: &Poly<Ntt>,
        level: Level,
        rng: &mut R,
    ) -> Result<KeySwitchKey> {
        self.params.check_id(sk.params_id)?;
        self.key_switch_key(sk, s_from, level, rng)
    }

    /// The relinearization key.
    pub fn relin_key<R: RngCore + CryptoRng + ?Sized>(
        &self,
        sk: &SecretKey,
        rng: &mut R,
    ) -> Result<RelinKey> {
        self.relin_key_at(sk, self.params.max_level(), rng)
    }

    /// The relinearization key for products up to `level` (smaller than a full one).
    pub fn relin_key_at<R: RngCore + CryptoRng + ?Sized>(
        &self,
        sk: &SecretKey,
        level: Level,
        rng: &mut R,
    ) -> Result<RelinKey> {
        self.params.check_id(sk.params_id)?;
        let mut s2 = sk.poly.mul(&sk.poly)?;
        let k = self.key_switch_key(sk, &s2, level, rng);
        s2.zeroize();
        Ok(RelinKey(k?))
    }

    /// The Galois key for element `g` (switches from `s(X^g)` to `s`).
    pub fn galois_key<R: RngCore + CryptoRng + ?Sized>(
        &self,
        sk: &SecretKey,
        g: GaloisElement,
        rng: &mut R,
    ) -> Result<GaloisKey> {
        self.galois_key_at(sk, g, self.params.max_level(), rng)
    }

    /// The Galois key for element `g` serving ciphertexts up to `level`.
    pub fn galois_key_at<R: RngCore + CryptoRng + ?Sized>(
        &self,
        sk: &SecretKey,
        g: GaloisElement,
        level: Level,
        rng: &mut R,
    ) -> Result<GaloisKey> {
        self.params.check_id(sk.params_id)?;
        let perm = AutomorphismPermutation::new(self.params.n(), g.value())?;
        let mut sg = sk.poly.automorphism(&perm)?;
        let key = self.key_switch_key(sk, &sg, level, rng);
        sg.zeroize();
        GaloisKey::from_canonical(key?, self.params.n(), g.value())
    }

    /// Galois keys for left rotations by each `(steps, level)` (negative: right), each
    /// serving ciphertexts up to its level (the highest level the rotation is used at; a
    /// step listed twice gets the higher). Steps equal to 0 mod N/2 are skipped.
    pub fn galois_keys_at<R: RngCore + CryptoRng + ?Sized>(
        &self,
        sk: &SecretKey,
        steps: &[(i64, Level)],
        rng: &mut R,
    ) -> Result<GaloisKeys> {
        let n = self.params.n();
        let mut want: BTreeMap<GaloisElement, Level> = BTreeMap::new();
        for &(k, level) in steps {
            let g = GaloisElement::for_rotation(k, n);
            if g.value() != 1 {
                let e = want.entry(g).or_insert(level);
                *e = (*e).max(level);
            }
        }
        let keys = par_galois_keys(self, sk, want.into_iter().collect(), rng)?;
        Ok(GaloisKeys {
            keys: keys.into_iter().map(|k| (k.element(), k)).collect(),
        })
    }

    /// Galois keys for left rotations by each of `steps` (negative: right), plus complex
    /// conjugation when `conjugate` is set. Steps equal to 0 mod N/2 are skipped.
    pub fn galois_keys<R: RngCore + CryptoRng + ?Sized>(
        &self,
        sk: &SecretKey,
        steps: &[i64],
        conjugate: bool,
        rng: &mut R,
    ) -> Result<GaloisKeys> {
        let n = self.params.n();
        let mut elements: Vec<GaloisElement> = steps
            .iter()
            .map(|&k| GaloisElement::for_rotation(k, n))
            .filter(|g| g.value() != 1)
            .collect();
        if conjugate {
            elements.push(GaloisElement::conjugation(n));
        }
        elements.sort();
        elements.dedup();
        let mut keys = BTreeMap::new();
        for g in elements {
            keys.insert(g, self.galois_key(sk, g, rng)?);
        }
        Ok(GaloisKeys { keys })
    }
}

/// Galois keys of one parameter set for every rotation and level given, generated in
/// parallel (one CSPRNG stream per key, seeded from `rng`).
pub(crate) fn par_galois_keys<R: RngCore + CryptoRng + ?Sized>(
    kg: &KeyGenerator,
    sk: &SecretKey,
    elements: Vec<(GaloisElement, Level)>,
    rng: &mut R,
) -> Result<Vec<GaloisKey>> {
    let seeded: Vec<(GaloisElement, Level, [u8; 32])> = elements
        .into_iter()
        .map(|(g, l)| {
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            (g, l, seed)
        })
        .collect();
    seeded
        .into_par_iter()
        .map(|(g, l, mut seed)| {
            let mut r = ChaCha20Rng::from_seed(seed);
            seed.zeroize();
            kg.galois_key_at(sk, g, l, &mut r)
        })
        .collect()
}
