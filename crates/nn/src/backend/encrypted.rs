//! The encrypted backend: the CKKS evaluator with evaluation keys only (relinearization and
//! the Galois keys the plan asks for). It never sees the secret key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use henn_ckks::{
    Ciphertext, CkksParams, Complex, Encoder, Evaluator, ExtCiphertext, GaloisElement, GaloisKeys,
    Level, Plaintext, RelinKey, Scale,
};
use rayon::prelude::*;

use super::bsgs::{self, Bsgs, DiagFn};
use super::{Backend, OpCounts, ckks_err};
use crate::error::{ExecError, Result};

/// The encrypted backend.
#[derive(Debug)]
pub struct Encrypted {
    params: Arc<CkksParams>,
    eval: Evaluator,
    encoder: Encoder,
    rlk: RelinKey,
    gk: GaloisKeys,
    counts: OpCounts,
    cache: Arc<PlaintextCache>,
    pairs: bool,
}

/// Default memory budget of the plaintext cache.
pub const DEFAULT_PT_CACHE_BYTES: usize = 6 << 30;

/// Encoded plaintexts by content (values, level, scale), up to a memory budget: layer code
/// recomputes its masks per image (cheap slot vectors), the cache makes the expensive
/// encoding (FFT + one NTT per prime) happen once per model. Encodings do not depend on keys,
/// so one cache serves every session of a model.
#[derive(Debug, Default)]
pub struct PlaintextCache {
    map: Mutex<HashMap<u64, Vec<CachedPt>>>,
    bytes: AtomicUsize,
    budget: usize,
}

impl PlaintextCache {
    /// An empty cache holding up to `budget` bytes (0 disables it).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }

    /// Bytes cached so far.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct CachedPt {
    values: Vec<f64>,
    level: usize,
    scale_bits: u64,
    /// Encoded over `Q_level ∪ P` (double hoisting) rather than `Q_level`.
    ext: bool,
    pt: Arc<Plaintext>,
}

fn content_hash(v: &[f64], level: usize, scale: Scale, ext: bool) -> u64 {
    // a multiply-xorshift mix of the words (a lookup key, not a defence: entries are compared
    // value by value), several times faster than SipHash on the 2^13-word masks
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, x: u64| (h ^ x).wrapping_mul(K).rotate_left(29);
    let mut h = mix(
        mix(K, level as u64 + (u64::from(ext) << 32)),
        scale.value().to_bits(),
    );
    // trailing zeros do not change the encoding
    let end = v.iter().rposition(|&x| x != 0.0).map_or(0, |i| i + 1);
    for (i, x) in v[..end].iter().enumerate() {
        if *x != 0.0 {
            h = mix(h, x.to_bits() ^ (i as u64).wrapping_mul(K));
        }
    }
    h
}

fn same_values(a: &[f64], b: &[f64]) -> bool {
    let n = a.len().max(b.len());
    (0..n).all(|i| a.get(i).copied().unwrap_or(0.0) == b.get(i).copied().unwrap_or(0.0))
}

impl Encrypted {
    /// A backend from evaluation keys, with its own plaintext cache of the default budget.
    pub fn new(params: &Arc<CkksParams>, rlk: RelinKey, gk: GaloisKeys) -> Self {
        Self::with_cache(
            params,
            rlk,
            gk,
            Arc::new(PlaintextCache::new(DEFAULT_PT_CACHE_BYTES)),
        )
    }

    /// A backend from evaluation keys sharing a plaintext cache (one per model).
    pub fn with_cache(
        params: &Arc<CkksParams>,
        rlk: RelinKey,
        gk: GaloisKeys,
        cache: Arc<PlaintextCache>,
    ) -> Self {
        Self {
            params: params.clone(),
            eval: Evaluator::new(params),
            encoder: Encoder::new(params),
            rlk,
            gk,
            counts: OpCounts::default(),
            cache,
            pairs: false,
        }
    }

    /// With `on`, every complex slot holds two real values (a plan with
    /// [`crate::pack::LayoutPlan::complex_pairs`]): products become pair products
    /// (`henn_ckks::Evaluator::mul_pair_relin`: one conjugation per operand, counted as a
    /// rotation, and one relinearization) and a constant `c` is added as `c + c i`. Linear
    /// ops with real constants need no change. Needs the conjugation key.
    pub fn with_complex_pairs(mut self, on: bool) -> Self {
        self.pairs = on;
        self
    }

    /// Replaces the plaintext cache by an empty one of `bytes` (0 disables it).
    pub fn with_pt_cache_budget(mut self, bytes: usize) -> Self {
        self.cache = Arc::new(PlaintextCache::new(bytes));
        self
    }

    /// Bytes of plaintexts cached so far.
    pub fn pt_cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Bytes of the evaluation keys in memory.
    pub fn key_bytes(&self) -> usize {
        self.rlk.memory_bytes() + self.gk.memory_bytes()
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<CkksParams> {
        &self.params
    }

    /// [`Backend::encode_cached`], over `Q_level ∪ P` with `ext` (the plaintexts of a
    /// double-hoisted sum; an encoding either way counts once).
    fn cached(&self, v: &[f64], level: usize, scale: Scale, ext: bool) -> Result<Arc<Plaintext>> {
        let c = &self.cache;
        if c.budget == 0 {
            return Ok(Arc::new(self.encode_fresh(v, level, scale, ext)?));
        }
        let key = content_hash(v, level, scale, ext);
        let bits = scale.value().to_bits();
        let find = |map: &HashMap<u64, Vec<CachedPt>>| {
            map.get(&key).and_then(|b| {
                b.iter()
                    .find(|e| {
                        e.level == level
                            && e.ext == ext
                            && e.scale_bits == bits
                            && same_values(&e.values, v)
                    })
                    .map(|e| e.pt.clone())
            })
        };
        if let Some(pt) = c.map.lock().ok().and_then(|m| find(&m)) {
            OpCounts::bump(&self.counts.encode, 1);
            return Ok(pt);
        }
        let pt = Arc::new(self.encode_fresh(v, level, scale, ext)?);
        let primes = level + 1 + if ext { self.params.p_limbs().len() } else { 0 };
        let size = primes * self.params.n() * 8 + v.len() * 8;
        if c.bytes.load(Ordering::Relaxed) + size <= c.budget
            && let Ok(mut m) = c.map.lock()
        {
            if let Some(found) = find(&m) {
                return Ok(found);
            }
            c.bytes.fetch_add(size, Ordering::Relaxed);
            m.entry(key).or_default().push(CachedPt {
                values: v.to_vec(),
                level,
                scale_bits: bits,
                ext,
                pt: pt.clone(),
            });
        }
        Ok(pt)
    }

    /// Encodes `v` at `level` and `scale`, over `Q_level ∪ P` with `ext`; counts one
    /// encoding.
    fn encode_fresh(&self, v: &[f64], level: usize, scale: Scale, ext: bool) -> Result<Plaintext> {
        if !ext {
            return self.encode(v, level, scale);
        }
        OpCounts::bump(&self.counts.encode, 1);
        self.encoder
            .encode_ext(v, Level(level), scale)
            .map_err(ckks_err)
    }

    /// [`Backend::bsgs_sum`] double-hoisted: per input one decomposition, its baby steps
    /// left over `Q ∪ P` (no ModDown), the products over `Q ∪ P` with plaintexts encoded
    /// there, each group's giant rotation from its sum's `c_1` brought down once and left
    /// over `Q ∪ P` again, and one ModDown per output.
    fn bsgs_double(
        &self,
        xs: &[&Ciphertext],
        spec: &Bsgs,
        diag: &DiagFn<'_>,
        level: usize,
        scale: Scale,
    ) -> Result<Vec<Option<Ciphertext>>> {
        spec.check(xs.len())?;
        let babies: Vec<i64> = spec.inputs.iter().map(|e| e.1).collect();
        let giants: Vec<i64> = spec.groups.iter().map(|e| e.1).collect();
        self.check_rotations(&babies)?;
        self.check_rotations(&giants)?;
        let n_babies = babies.iter().filter(|&&k| k != 0).count();
        let n_giants = giants.iter().filter(|&&k| k != 0).count();
        OpCounts::bump(&self.counts.rotate_hoisted, n_babies as u64);
        OpCounts::bump(&self.counts.rotate, n_giants as u64);
        let per_input: Vec<Vec<ExtCiphertext>> = (0..xs.len())
            .into_par_iter()
            .map(|j| -> Result<Vec<ExtCiphertext>> {
                let steps = spec.steps_of(j);
                let x = xs[j];
                if steps.iter().all(|&k| k == 0) {
                    return steps
                        .iter()
                        .map(|_| self.eval.lift_ext(x).map_err(ckks_err))
                        .collect();
                }
                let dec = self.eval.hoist(x).map_err(ckks_err)?;
                steps
                    .par_iter()
                    .map(|&k| {
                        self.eval
                            .rotate_hoisted_ext(x, &dec, k, &self.gk)
                            .map_err(ckks_err)
                    })
                    .collect()
            })
            .collect::<Result<_>>()?;
        let rotated: Vec<&ExtCiphertext> = per_input.iter().flatten().collect();
        let slots = self.slots();
        let pts: Vec<Arc<Plaintext>> = (0..spec.terms.len())
            .into_par_iter()
            .map(|t| self.cached(&bsgs::diag_vector(slots, t, diag), level, scale, true))
            .collect::<Result<_>>()?;
        let terms = bsgs::product_terms(spec, &pts);
        OpCounts::bump(&self.counts.mul_plain, terms.len() as u64);
        OpCounts::bump(
            &self.counts.add,
            terms.len().saturating_sub(spec.groups.len()) as u64,
        );
        let sums = self
            .eval
            .ext_mul_plain_matrix(&rotated, &terms, spec.groups.len())
            .map_err(ckks_err)?;
        let outs = bsgs::into_outputs(
            spec,
            sums,
            |acc, gamma| {
                self.eval
                    .ext_rotate(&acc, gamma, &self.gk)
                    .map_err(ckks_err)
            },
            |a, p| {
                OpCounts::bump(&self.counts.add, 1);
                self.eval.ext_add_assign(a, p).map_err(ckks_err)
            },
        )?;
        outs.into_par_iter()
            .map(|o| {
                o.map(|x| self.eval.ext_mod_down(x).map_err(ckks_err))
                    .transpose()
            })
            .collect()
    }

    /// Checks that the Galois keys cover every rotation step in `steps`.
    pub fn check_rotations(&self, steps: &[i64]) -> Result<()> {
        let n = self.params.n();
        let missing: Vec<i64> = steps
            .iter()
            .copied()
            .filter(|&k| {
                let g = GaloisElement::for_rotation(k, n);
                g.value() != 1 && !self.gk.contains(g)
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ExecError::MissingRotation { steps: missing }.into())
        }
    }

    /// Checks that the keys serve the levels they are needed at: each rotation step up to its
    /// level, relinearizations up to `relin_level`.
    pub fn check_keys(&self, rotations: &[(i64, Level)], relin_level: usize) -> Result<()> {
        let steps: Vec<i64> = rotations.iter().map(|r| r.0).collect();
        self.check_rotations(&steps)?;
        let n = self.params.n();
        for &(k, need) in rotations {
            let g = GaloisElement::for_rotation(k, n);
            if let Some(have) = self.gk.level_of(g)
                && have < need
            {
                return Err(ExecError::KeyLevel {
                    what: format!("rotation key for step {k}"),
                    have: have.0,
                    need: need.0,
                }
                .into());
            }
        }
        if self.pairs {
            let g = GaloisElement::conjugation(n);
            match self.gk.level_of(g) {
                None => {
                    return Err(ExecError::Input(
                        "the plan packs two images per complex slot and needs the conjugation key: make the evaluation keys with this plan (Client::evaluation_keys)".into(),
                    )
                    .into());
                }
                Some(have) if have.0 < relin_level => {
                    return Err(ExecError::KeyLevel {
                        what: "conjugation key".into(),
                        have: have.0,
                        need: relin_level,
                    }
                    .into());
                }
                Some(_) => {}
            }
        }
        if self.rlk.level().0 < relin_level {
            return Err(ExecError::KeyLevel {
                what: "relinearization key".into(),
                have: self.rlk.level().0,
                need: relin_level,
            }
            .into());
        }
        Ok(())
    }

    fn check_rotation(&self, k: i64) -> Result<()> {
        self.check_rotations(&[k])
    }
}

impl Backend for Encrypted {
    type Ct = Ciphertext;

    fn name(&self) -> &'static str {
        "encrypted"
    }
    fn slots(&self) -> usize {
        self.params.slots()
    }
    fn counts(&self) -> &OpCounts {
        &self.counts
    }
    fn complex_pairs(&self) -> Option<bool> {
        Some(self.pairs)
    }
    fn prime(&self, level: usize) -> Result<f64> {
        self.params
            .q()
            .get(level)
            .map(|&q| q as f64)
            .ok_or_else(|| ExecError::NoPrime(level).into())
    }
    fn level(&self, a: &Ciphertext) -> usize {
        a.level().0
    }
    fn scale(&self, a: &Ciphertext) -> Scale {
        a.scale()
    }
    fn add_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        OpCounts::bump(&self.counts.add, 1);
        self.eval.add_assign(a, b).map_err(ckks_err)
    }
    fn sub_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        OpCounts::bump(&self.counts.add, 1);
        self.eval.sub_assign(a, b).map_err(ckks_err)
    }
    fn neg_assign(&self, a: &mut Ciphertext) -> Result<()> {
        self.eval.neg_assign(a).map_err(ckks_err)
    }
    fn add_const_assign(&self, a: &mut Ciphertext, c: f64) -> Result<()> {
        OpCounts::bump(&self.counts.add, 1);
        if self.pairs {
            return self
                .eval
                .add_complex_const_assign(a, Complex::new(c, c))
                .map_err(ckks_err);
        }
        self.eval.add_const_assign(a, c).map_err(ckks_err)
    }
    fn mul_const_assign(&self, a: &mut Ciphertext, c: f64, const_scale: Scale) -> Result<()> {
        OpCounts::bump(&self.counts.mul_const, 1);
        self.eval
            .mul_const_assign(a, c, const_scale)
            .map_err(ckks_err)
    }
    fn mul_const_add_assign(
        &self,
        acc: &mut Ciphertext,
        x: &Ciphertext,
        c: f64,
        const_scale: Scale,
    ) -> Result<()> {
        OpCounts::bump(&self.counts.mul_const, 1);
        OpCounts::bump(&self.counts.add, 1);
        self.eval
            .mul_const_add_assign(acc, x, c, const_scale)
            .map_err(ckks_err)
    }
    fn mul_const_matrix(
        &self,
        xs: &[&Ciphertext],
        w: &[f64],
        n_out: usize,
        const_scale: Scale,
    ) -> Result<Vec<Ciphertext>> {
        // counted like the default implementation: per output, one product per non-zero
        // weight and one addition per product after the first
        let k = xs.len().max(1);
        for row in w.chunks(k) {
            let nnz = row.iter().filter(|&&c| c != 0.0).count() as u64;
            OpCounts::bump(&self.counts.mul_const, nnz.max(1));
            OpCounts::bump(&self.counts.add, nnz.saturating_sub(1));
        }
        self.eval
            .mul_const_matrix(xs, w, n_out, const_scale)
            .map_err(ckks_err)
    }
    type Pt = Plaintext;
    fn encode(&self, v: &[f64], level: usize, scale: Scale) -> Result<Plaintext> {
        OpCounts::bump(&self.counts.encode, 1);
        self.encoder
            .encode(v, Level(level), scale)
            .map_err(ckks_err)
    }
    fn mul_plain_assign(&self, a: &mut Ciphertext, pt: &Plaintext) -> Result<()> {
        OpCounts::bump(&self.counts.mul_plain, 1);
        self.eval.mul_plain_assign(a, pt).map_err(ckks_err)
    }
    fn mul_plain_add_assign(
        &self,
        acc: &mut Ciphertext,
        x: &Ciphertext,
        pt: &Plaintext,
    ) -> Result<()> {
        OpCounts::bump(&self.counts.mul_plain, 1);
        OpCounts::bump(&self.counts.add, 1);
        self.eval.mul_plain_add_assign(acc, x, pt).map_err(ckks_err)
    }
    fn mul_plain_matrix(
        &self,
        xs: &[&Ciphertext],
        terms: &[(usize, usize, &Plaintext)],
        n_out: usize,
    ) -> Result<Vec<Ciphertext>> {
        let mut used = vec![false; n_out];
        for &(o, _, _) in terms {
            if let Some(u) = used.get_mut(o) {
                *u = true;
            }
        }
        if let Some(o) = used.iter().position(|u| !u) {
            return Err(ExecError::Internal(format!(
                "output {o} of a plaintext matrix has no term"
            ))
            .into());
        }
        OpCounts::bump(&self.counts.mul_plain, terms.len() as u64);
        OpCounts::bump(&self.counts.add, (terms.len() - n_out) as u64);
        self.eval
            .mul_plain_matrix(xs, terms, n_out)
            .map_err(ckks_err)
    }
    fn encode_cached(&self, v: &[f64], level: usize, scale: Scale) -> Result<Arc<Plaintext>> {
        self.cached(v, level, scale, false)
    }
    fn bsgs_sum(
        &self,
        xs: &[&Ciphertext],
        spec: &Bsgs,
        diag: &DiagFn<'_>,
        level: usize,
        scale: Scale,
    ) -> Result<Vec<Option<Ciphertext>>> {
        if spec.double {
            self.bsgs_double(xs, spec, diag, level, scale)
        } else {
            bsgs::single_hoisted(self, xs, spec, diag, level, scale)
        }
    }
    fn mul_relin(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        OpCounts::bump(&self.counts.mul, 1);
        OpCounts::bump(&self.counts.relin, 1);
        if self.pairs {
            OpCounts::bump(&self.counts.rotate, 2);
            return self
                .eval
                .mul_pair_relin(a, b, &self.rlk, &self.gk)
                .map_err(ckks_err);
        }
        self.eval.mul_relin(a, b, &self.rlk).map_err(ckks_err)
    }
    fn square_relin(&self, a: &Ciphertext) -> Result<Ciphertext> {
        let mut c = self.square(a)?;
        self.relinearize_assign(&mut c)?;
        Ok(c)
    }
    fn square(&self, a: &Ciphertext) -> Result<Ciphertext> {
        OpCounts::bump(&self.counts.square, 1);
        if self.pairs {
            OpCounts::bump(&self.counts.rotate, 1);
            return self.eval.square_pair(a, &self.gk).map_err(ckks_err);
        }
        self.eval.square(a).map_err(ckks_err)
    }
    fn relinearize_assign(&self, a: &mut Ciphertext) -> Result<()> {
        if a.size() <= 2 {
            return Ok(());
        }
        OpCounts::bump(&self.counts.relin, 1);
        self.eval.relinearize_assign(a, &self.rlk).map_err(ckks_err)
    }
    fn unrelinearized(&self, a: &Ciphertext) -> bool {
        a.size() > 2
    }
    fn rescale_assign(&self, a: &mut Ciphertext) -> Result<()> {
        OpCounts::bump(&self.counts.rescale, 1);
        self.eval.rescale_assign(a).map_err(ckks_err)
    }
    fn drop_level_to_assign(&self, a: &mut Ciphertext, level: usize) -> Result<()> {
        self.eval
            .drop_level_to_assign(a, Level(level))
            .map_err(ckks_err)
    }
    fn rotate(&self, a: &Ciphertext, k: i64) -> Result<Ciphertext> {
        self.check_rotation(k)?;
        OpCounts::bump(&self.counts.rotate, 1);
        self.eval.rotate(a, k, &self.gk).map_err(ckks_err)
    }
    fn rotate_hoisted(&self, a: &Ciphertext, ks: &[i64]) -> Result<Vec<Ciphertext>> {
        self.check_rotations(ks)?;
        OpCounts::bump(&self.counts.rotate_hoisted, ks.len() as u64);
        self.eval.rotate_hoisted(a, ks, &self.gk).map_err(ckks_err)
    }
}
