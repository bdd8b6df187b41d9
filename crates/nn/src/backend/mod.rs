//! The lowest floor of henn-nn's homomorphic side: the [`Backend`] trait (homomorphic
//! arithmetic as layer code sees it), its op counters, and three implementations:
//!
//! * [`simulated::Simulated`]: tracks level, scale, rotation steps and op counts, no crypto
//!   (the planner runs the layer code on it);
//! * [`slots::Slots`]: cleartext slot vectors in the same layout, with the same level and
//!   scale bookkeeping (for debugging packing without crypto, and for measuring magnitudes);
//! * [`encrypted::Encrypted`]: the CKKS evaluator with evaluation keys only.
//!
//! Names follow `henn-ckks`: `mul_const_assign`, `mul_plain_assign`, `mul_relin`,
//! `square_relin` neither rescale nor relinearize beyond what the name says; every operation
//! that rescales says so (`mul_rescale`, `square_rescale`, `mul_const_rescale`, ...).
//!
//! This floor knows nothing of graphs, layouts or plans.

pub mod bsgs;
pub mod encrypted;
pub mod simulated;
pub mod slots;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use henn_ckks::{CkksError, Scale};
use serde::{Deserialize, Serialize};

use crate::error::{ExecError, NnError, Result};

/// Atomic operation counters (layer code runs under rayon).
#[derive(Debug, Default)]
pub struct OpCounts {
    /// Ciphertext x plaintext-vector products.
    pub mul_plain: AtomicU64,
    /// Ciphertext x scalar-constant products.
    pub mul_const: AtomicU64,
    /// Ciphertext x ciphertext products (not squares).
    pub mul: AtomicU64,
    /// Ciphertext squares.
    pub square: AtomicU64,
    /// Relinearizations.
    pub relin: AtomicU64,
    /// Rescales.
    pub rescale: AtomicU64,
    /// Plain rotations.
    pub rotate: AtomicU64,
    /// Hoisted rotations (each rotation of a hoisted batch counts once).
    pub rotate_hoisted: AtomicU64,
    /// Additions and subtractions (ciphertext and constant).
    pub add: AtomicU64,
    /// Plaintext encodings asked for (cached or not: the same count on every backend).
    pub encode: AtomicU64,
}

/// A snapshot of [`OpCounts`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Ciphertext x plaintext-vector products.
    pub mul_plain: u64,
    /// Ciphertext x scalar-constant products.
    pub mul_const: u64,
    /// Ciphertext x ciphertext products (not squares).
    pub mul: u64,
    /// Ciphertext squares.
    pub square: u64,
    /// Relinearizations.
    pub relin: u64,
    /// Rescales.
    pub rescale: u64,
    /// Plain rotations.
    pub rotate: u64,
    /// Hoisted rotations.
    pub rotate_hoisted: u64,
    /// Additions.
    pub add: u64,
    /// Plaintext encodings asked for (a cache may serve some).
    #[serde(default)]
    pub encode: u64,
}

impl Counts {
    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            mul_plain: self.mul_plain.saturating_sub(earlier.mul_plain),
            mul_const: self.mul_const.saturating_sub(earlier.mul_const),
            mul: self.mul.saturating_sub(earlier.mul),
            square: self.square.saturating_sub(earlier.square),
            relin: self.relin.saturating_sub(earlier.relin),
            rescale: self.rescale.saturating_sub(earlier.rescale),
            rotate: self.rotate.saturating_sub(earlier.rotate),
            rotate_hoisted: self.rotate_hoisted.saturating_sub(earlier.rotate_hoisted),
            add: self.add.saturating_sub(earlier.add),
            encode: self.encode.saturating_sub(earlier.encode),
        }
    }
}

impl Counts {
    /// `self + other`, field by field.
    pub fn plus(&self, o: &Counts) -> Counts {
        Counts {
            mul_plain: self.mul_plain + o.mul_plain,
            mul_const: self.mul_const + o.mul_const,
            mul: self.mul + o.mul,
            square: self.square + o.square,
            relin: self.relin + o.relin,
            rescale: self.rescale + o.rescale,
            rotate: self.rotate + o.rotate,
            rotate_hoisted: self.rotate_hoisted + o.rotate_hoisted,
            add: self.add + o.add,
            encode: self.encode + o.encode,
        }
    }
}

impl OpCounts {
    /// Adds `n` to a counter.
    pub fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> Counts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            mul_plain: g(&self.mul_plain),
            mul_const: g(&self.mul_const),
            mul: g(&self.mul),
            square: g(&self.square),
            relin: g(&self.relin),
            rescale: g(&self.rescale),
            rotate: g(&self.rotate),
            rotate_hoisted: g(&self.rotate_hoisted),
            add: g(&self.add),
            encode: g(&self.encode),
        }
    }
}

/// Wraps a CKKS error (the executor adds the node name).
pub(crate) fn ckks_err(source: CkksError) -> NnError {
    NnError::Ckks {
        node: String::new(),
        source,
    }
}

impl From<CkksError> for NnError {
    fn from(source: CkksError) -> Self {
        ckks_err(source)
    }
}

/// Input `i` and the accumulator of output `o` of a plaintext-matrix term
/// ([`Backend::mul_plain_matrix`]), or a named error for an index out of range.
pub(crate) fn matrix_term<'a, X, A>(
    xs: &[&'a X],
    accs: &'a mut [Option<A>],
    o: usize,
    i: usize,
) -> Result<(&'a X, &'a mut Option<A>)> {
    let x = xs
        .get(i)
        .copied()
        .ok_or_else(|| ExecError::Internal(format!("product of missing input {i}")))?;
    let acc = accs
        .get_mut(o)
        .ok_or_else(|| ExecError::Internal(format!("product for missing output {o}")))?;
    Ok((x, acc))
}

/// The outputs of a plaintext matrix, or a named error for one without a term.
pub(crate) fn matrix_outputs<A>(accs: Vec<Option<A>>) -> Result<Vec<A>> {
    accs.into_iter()
        .enumerate()
        .map(|(o, a)| {
            a.ok_or_else(|| {
                ExecError::Internal(format!("output {o} of a plaintext matrix has no term")).into()
            })
        })
        .collect()
}

/// `Scale` from a value, as a named error when it is not a valid scale.
pub(crate) fn scale_of(v: f64) -> Result<Scale> {
    Scale::new(v).ok_or_else(|| ExecError::InvalidScale(v).into())
}

/// Bits reserved for output magnitudes by a level-0 linear layer (`|value| < 2^10`).
pub const LEVEL0_VALUE_BITS: f64 = 10.0;
/// Smallest constant scale (bits) a level-0 linear layer accepts for its weights.
pub const LEVEL0_MIN_CONST_BITS: f64 = 10.0;

/// Homomorphic arithmetic as the layer code sees it. Every method checks levels and scales
/// like the CKKS evaluator does, and counts what it does in [`Backend::counts`].
///
/// Required methods are the primitives; the provided ones (rescale-neutral constant products,
/// products with rescale, alignment) are built on them so that all backends agree on levels
/// and scales by construction.
pub trait Backend: Sync + 'static {
    /// A ciphertext (or its stand-in).
    type Ct: Clone + Send + Sync;

    /// Backend name (`simulated`, `slots`, `encrypted`).
    fn name(&self) -> &'static str;
    /// Number of slots per ciphertext.
    fn slots(&self) -> usize;
    /// The operation counters.
    fn counts(&self) -> &OpCounts;
    /// The data prime `q_level` (the one a rescale at `level` divides by).
    fn prime(&self, level: usize) -> Result<f64>;
    /// Whether products and added constants treat each complex slot as two real values
    /// (`Some(true)`, see [`crate::pack::LayoutPlan::complex_pairs`]) or as one
    /// (`Some(false)`); `None` for a backend whose slots are independent reals anyway (the
    /// slots backend, which runs a paired plan as twice the slots). The executor refuses a
    /// plan whose pairing the backend does not follow.
    fn complex_pairs(&self) -> Option<bool> {
        None
    }
    /// The factor the scale of a product of ciphertexts carries on top of the product of
    /// the operands' scales: 4 for pair products ([`Backend::complex_pairs`]), else 1.
    fn product_scale_factor(&self) -> f64 {
        if self.complex_pairs() == Some(true) {
            4.0
        } else {
            1.0
        }
    }

    /// Level of `a`.
    fn level(&self, a: &Self::Ct) -> usize;
    /// Scale of `a`.
    fn scale(&self, a: &Self::Ct) -> Scale;

    /// `a += b` (same level and scale).
    fn add_assign(&self, a: &mut Self::Ct, b: &Self::Ct) -> Result<()>;
    /// `a -= b` (same level and scale).
    fn sub_assign(&self, a: &mut Self::Ct, b: &Self::Ct) -> Result<()>;
    /// `a = -a`.
    fn neg_assign(&self, a: &mut Self::Ct) -> Result<()>;
    /// `a += c` in every slot.
    fn add_const_assign(&self, a: &mut Self::Ct, c: f64) -> Result<()>;
    /// `a *= c` with the constant encoded at `const_scale`; no rescale (scale multiplies).
    fn mul_const_assign(&self, a: &mut Self::Ct, c: f64, const_scale: Scale) -> Result<()>;
    /// `acc += x * c` with the constant at `const_scale` (`acc` must already be at scale
    /// `x.scale * const_scale`); no rescale. Counts one constant product and one addition.
    fn mul_const_add_assign(
        &self,
        acc: &mut Self::Ct,
        x: &Self::Ct,
        c: f64,
        const_scale: Scale,
    ) -> Result<()> {
        let mut t = x.clone();
        self.mul_const_assign(&mut t, c, const_scale)?;
        self.add_assign(acc, &t)
    }
    /// A plaintext (slot vector encoded at a level and scale) or its stand-in.
    type Pt: Send + Sync;
    /// Encodes slot values `v` (zero-padded to the slot count) at `level` and `scale`.
    fn encode(&self, v: &[f64], level: usize, scale: Scale) -> Result<Self::Pt>;
    /// `a *= pt` slot-wise; no rescale (scales multiply). `pt` may sit at a higher level.
    fn mul_plain_assign(&self, a: &mut Self::Ct, pt: &Self::Pt) -> Result<()>;
    /// `acc += x * pt` (`acc` at `x`'s level and scale `x.scale * pt.scale`); no rescale.
    /// Counts one plaintext product and one addition.
    fn mul_plain_add_assign(&self, acc: &mut Self::Ct, x: &Self::Ct, pt: &Self::Pt) -> Result<()> {
        let mut t = x.clone();
        self.mul_plain_assign(&mut t, pt)?;
        self.add_assign(acc, &t)
    }
    /// [`Backend::encode`], reusing an earlier encoding of the same values at the same level
    /// and scale where the backend keeps a cache (the encrypted one does, so that weight masks
    /// are encoded once per model rather than once per image).
    fn encode_cached(&self, v: &[f64], level: usize, scale: Scale) -> Result<Arc<Self::Pt>> {
        Ok(Arc::new(self.encode(v, level, scale)?))
    }
    /// `acc += x * c` at `const_scale`, starting the sum (`x * c`) when `acc` is empty.
    fn accumulate_const(
        &self,
        acc: &mut Option<Self::Ct>,
        x: &Self::Ct,
        c: f64,
        const_scale: Scale,
    ) -> Result<()> {
        match acc.as_mut() {
            None => {
                let mut t = x.clone();
                self.mul_const_assign(&mut t, c, const_scale)?;
                *acc = Some(t);
                Ok(())
            }
            Some(a) => self.mul_const_add_assign(a, x, c, const_scale),
        }
    }
    /// `acc += x * pt`, starting the sum (`x * pt`) when `acc` is empty.
    fn accumulate_pt(&self, acc: &mut Option<Self::Ct>, x: &Self::Ct, pt: &Self::Pt) -> Result<()> {
        match acc.as_mut() {
            None => {
                let mut t = x.clone();
                self.mul_plain_assign(&mut t, pt)?;
                *acc = Some(t);
                Ok(())
            }
            Some(a) => self.mul_plain_add_assign(a, x, pt),
        }
    }
    /// `out[o] = sum over terms (o, i, pt) of xs[i] * pt` for `n_out` outputs, no rescale;
    /// every output needs at least one term. Counts one plaintext product per term and one
    /// addition per term after an output's first. The encrypted backend streams each input
    /// and plaintext through memory once (`Evaluator::mul_plain_matrix`).
    fn mul_plain_matrix(
        &self,
        xs: &[&Self::Ct],
        terms: &[(usize, usize, &Self::Pt)],
        n_out: usize,
    ) -> Result<Vec<Self::Ct>> {
        let mut accs: Vec<Option<Self::Ct>> = vec![None; n_out];
        for &(o, i, pt) in terms {
            let (x, acc) = matrix_term(xs, &mut accs, o, i)?;
            self.accumulate_pt(acc, x, pt)?;
        }
        matrix_outputs(accs)
    }
    /// A baby-step giant-step sum of plaintext products (see [`bsgs::Bsgs`]): for every
    /// output `o`, the sum over its groups `(o, γ)` of `rot_γ(sum over the group's terms t
    /// of rot_β(xs[j]) * encode(diag(t)))` with the plaintexts at `level` and `scale`; `None`
    /// for an output without groups. No rescale. Counts the baby steps as hoisted rotations,
    /// the non-zero giant steps as rotations, and the products and additions as
    /// [`Backend::mul_plain_matrix`] does, however it is evaluated.
    fn bsgs_sum(
        &self,
        xs: &[&Self::Ct],
        spec: &bsgs::Bsgs,
        diag: &bsgs::DiagFn<'_>,
        level: usize,
        scale: Scale,
    ) -> Result<Vec<Option<Self::Ct>>>
    where
        Self: Sized,
    {
        bsgs::single_hoisted(self, xs, spec, diag, level, scale)
    }
    /// `out[o] = sum_k w[o * K + k] * xs[k]` with the constants at `const_scale`, no
    /// rescale: the linear combinations of a layer's outputs over shared inputs. Zero weights
    /// are skipped; an output whose weights are all zero is `xs[0] * 0`. Counts one constant
    /// product and one addition per non-zero weight. The encrypted backend computes all
    /// outputs in one cache-tiled pass over the inputs.
    fn mul_const_matrix(
        &self,
        xs: &[&Self::Ct],
        w: &[f64],
        n_out: usize,
        const_scale: Scale,
    ) -> Result<Vec<Self::Ct>> {
        let k = xs.len();
        let x0 = *xs
            .first()
            .ok_or_else(|| ExecError::Internal("linear combination without inputs".into()))?;
        if w.len() != n_out * k {
            return Err(ExecError::Internal(format!(
                "{} weights for {n_out} x {k} products",
                w.len()
            ))
            .into());
        }
        (0..n_out)
            .map(|o| {
                let mut acc: Option<Self::Ct> = None;
                for (kk, x) in xs.iter().enumerate() {
                    let c = w[o * k + kk];
                    if c != 0.0 {
                        self.accumulate_const(&mut acc, x, c, const_scale)?;
                    }
                }
                self.sum_or_zero(acc, x0, const_scale)
            })
            .collect()
    }
    /// A sum of products at `like.scale * const_scale` (see [`Backend::accumulate_const`]),
    /// or, when nothing was added, zeros at that level and scale (`like * 0`).
    fn sum_or_zero(
        &self,
        acc: Option<Self::Ct>,
        like: &Self::Ct,
        const_scale: Scale,
    ) -> Result<Self::Ct> {
        match acc {
            Some(a) => Ok(a),
            None => {
                let mut t = like.clone();
                self.mul_const_assign(&mut t, 0.0, const_scale)?;
                Ok(t)
            }
        }
    }
    /// `a *= v` slot-wise with `v` encoded at `pt_scale`; no rescale.
    fn mul_slots_assign(&self, a: &mut Self::Ct, v: &[f64], pt_scale: Scale) -> Result<()> {
        let pt = self.encode(v, self.level(a), pt_scale)?;
        self.mul_plain_assign(a, &pt)
    }
    /// `a * b` with relinearization, no rescale (same level).
    fn mul_relin(&self, a: &Self::Ct, b: &Self::Ct) -> Result<Self::Ct>;
    /// `a^2` with relinearization, no rescale.
    fn square_relin(&self, a: &Self::Ct) -> Result<Self::Ct>;
    /// `a^2` without relinearization, no rescale: three parts, which sums and constant
    /// products accept and [`Backend::relinearize_assign`] brings back to two (*lazy
    /// relinearization*: a linear layer with fewer outputs than inputs relinearizes its sums,
    /// one key switch per output instead of one per input). Counts a square (and, for
    /// complex pairs, the conjugation).
    fn square(&self, a: &Self::Ct) -> Result<Self::Ct>;
    /// Relinearizes a ciphertext left by [`Backend::square`] (counted as one
    /// relinearization); nothing for a ciphertext of two parts.
    fn relinearize_assign(&self, a: &mut Self::Ct) -> Result<()>;
    /// Whether `a` has three parts (a [`Backend::square`] or a sum of them, not yet
    /// relinearized).
    fn unrelinearized(&self, a: &Self::Ct) -> bool;
    /// Divides by the last prime: level - 1, scale / q_level.
    fn rescale_assign(&self, a: &mut Self::Ct) -> Result<()>;
    /// Drops primes down to `level` (scale unchanged).
    fn drop_level_to_assign(&self, a: &mut Self::Ct, level: usize) -> Result<()>;
    /// Left rotation of the slots by `k` (negative: right).
    fn rotate(&self, a: &Self::Ct, k: i64) -> Result<Self::Ct>;
    /// Several rotations of one ciphertext sharing one decomposition.
    fn rotate_hoisted(&self, a: &Self::Ct, ks: &[i64]) -> Result<Vec<Self::Ct>>;

    // ----- provided -----

    /// Bytes of `a`'s polynomials: two (three unrelinearized) of `N = 2 x slots` words per
    /// prime at its level.
    fn ct_bytes(&self, a: &Self::Ct) -> u64 {
        let parts = if self.unrelinearized(a) { 3 } else { 2 };
        (parts * 2 * self.slots() * (self.level(a) + 1) * 8) as u64
    }

    /// `a + b`.
    fn add(&self, a: &Self::Ct, b: &Self::Ct) -> Result<Self::Ct> {
        let mut r = a.clone();
        self.add_assign(&mut r, b)?;
        Ok(r)
    }

    /// The constant scale that makes a constant product followed by a rescale keep `a`'s
    /// scale (the prime at `a`'s level).
    fn neutral_scale(&self, a: &Self::Ct) -> Result<Scale> {
        scale_of(self.prime(self.level(a))?)
    }

    /// `a * c` at the rescale-neutral constant scale, without the rescale: the start of a
    /// sum of products that is rescaled once.
    fn mul_const_neutral(&self, a: &Self::Ct, c: f64) -> Result<Self::Ct> {
        let s = self.neutral_scale(a)?;
        let mut r = a.clone();
        self.mul_const_assign(&mut r, c, s)?;
        Ok(r)
    }

    /// Constant scale for a linear layer on a ciphertext at level 0, where no prime is left
    /// to rescale by: the largest power of two that keeps values up to
    /// `2^LEVEL0_VALUE_BITS` below `q_0 / 2` at the product's scale (the layer then skips its
    /// rescale). `None` when that leaves less than `2^LEVEL0_MIN_CONST_BITS` for the
    /// constants. This lets a model whose last op is linear use one prime fewer (the
    /// reference ResNet's `[60, 35 x 8]` chain holds its 9 multiplicative layers this way).
    fn level0_const_scale(&self, a: &Self::Ct) -> Result<Option<Scale>> {
        if self.level(a) != 0 {
            return Ok(None);
        }
        let room = self.prime(0)?.log2() - 1.0 - self.scale(a).log2() - LEVEL0_VALUE_BITS;
        let bits = room.floor();
        if bits < LEVEL0_MIN_CONST_BITS {
            return Ok(None);
        }
        Ok(Some(scale_of(bits.exp2())?))
    }

    /// `a * c`, rescaled: one level consumed, scale unchanged.
    fn mul_const_rescale(&self, a: &Self::Ct, c: f64) -> Result<Self::Ct> {
        let mut r = self.mul_const_neutral(a, c)?;
        self.rescale_assign(&mut r)?;
        Ok(r)
    }

    /// `a * c` landing exactly at `level` (< level(a)) and `scale`: drops `a` to `level + 1`,
    /// multiplies by `c` at the constant scale `scale * q_{level+1} / scale(a)` and rescales.
    /// Used to align branches and to fold constants into alignment for free.
    fn mul_const_rescale_to(
        &self,
        a: &Self::Ct,
        c: f64,
        level: usize,
        scale: Scale,
    ) -> Result<Self::Ct> {
        let la = self.level(a);
        if la <= level {
            return Err(ExecError::RaiseLevel {
                from: la,
                to: level + 1,
            }
            .into());
        }
        let mut r = a.clone();
        if la > level + 1 {
            self.drop_level_to_assign(&mut r, level + 1)?;
        }
        let cs = scale_of(scale.value() * self.prime(level + 1)? / self.scale(&r).value())?;
        self.mul_const_assign(&mut r, c, cs)?;
        self.rescale_assign(&mut r)?;
        Ok(r)
    }

    /// `a * v` slot-wise at the rescale-neutral scale, rescaled.
    fn mul_slots_rescale(&self, a: &Self::Ct, v: &[f64]) -> Result<Self::Ct> {
        let s = self.neutral_scale(a)?;
        let mut r = a.clone();
        self.mul_slots_assign(&mut r, v, s)?;
        self.rescale_assign(&mut r)?;
        Ok(r)
    }

    /// `a * b` with relinearization and rescale (the higher operand is dropped first).
    fn mul_rescale(&self, a: &Self::Ct, b: &Self::Ct) -> Result<Self::Ct> {
        let (la, lb) = (self.level(a), self.level(b));
        let mut r = if la == lb {
            self.mul_relin(a, b)?
        } else if la > lb {
            let mut a2 = a.clone();
            self.drop_level_to_assign(&mut a2, lb)?;
            self.mul_relin(&a2, b)?
        } else {
            let mut b2 = b.clone();
            self.drop_level_to_assign(&mut b2, la)?;
            self.mul_relin(a, &b2)?
        };
        self.rescale_assign(&mut r)?;
        Ok(r)
    }

    /// `a^2` with relinearization and rescale.
    fn square_rescale(&self, a: &Self::Ct) -> Result<Self::Ct> {
        let mut r = self.square_relin(a)?;
        self.rescale_assign(&mut r)?;
        Ok(r)
    }

    /// Brings `a` to `level` and `scale` (free when only the level differs and the scale
    /// already matches; otherwise one constant product by 1).
    fn align_to(&self, a: &Self::Ct, level: usize, scale: Scale) -> Result<Self::Ct> {
        let la = self.level(a);
        if self.scale(a).matches(scale) && la >= level {
            let mut r = a.clone();
            if la > level {
                self.drop_level_to_assign(&mut r, level)?;
            }
            return Ok(r);
        }
        self.mul_const_rescale_to(a, 1.0, level, scale)
    }
}
