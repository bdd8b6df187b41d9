//! The evaluator: homomorphic arithmetic with exact level and scale tracking. Every entry
//! point checks parameter fingerprints, levels and scales and returns a named error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use henn_ring::{Ntt, Poly};
use rayon::prelude::*;

use crate::ciphertext::{Ciphertext, Plaintext};
use crate::encoding::Complex;
use crate::error::{CkksError, Result};
use crate::keys::{GaloisKey, GaloisKeys, KeySwitchKey, RelinKey};
use crate::keyswitch::{Decomposed, apply_key, decompose, inner_product, lift_to_qp, mod_down};
use crate::params::CkksParams;
use crate::types::{GaloisElement, Level, Scale};

/// A ciphertext over `Q_level ∪ P` that decrypts to `P` times its message: rotations kept
/// before their ModDown, so that many of them can be combined and brought down once (double
/// hoisting in [`crate::circuits::linear`]). Made by [`Evaluator::lift_ext`] and
/// [`Evaluator::rotate_hoisted_ext`], finished by [`Evaluator::ext_mod_down`].
#[derive(Clone, Debug)]
pub struct ExtCiphertext {
    c0: Poly<Ntt>,
    c1: Poly<Ntt>,
    level: Level,
    scale: Scale,
}

impl ExtCiphertext {
    /// Level of the `Q` part.
    pub fn level(&self) -> Level {
        self.level
    }
    /// Scale of the message.
    pub fn scale(&self) -> Scale {
        self.scale
    }
}

/// Homomorphic operations for one parameter set.
#[derive(Debug, Clone)]
pub struct Evaluator {
    params: Arc<CkksParams>,
    /// Monomials `X^k` over every `q` prime in NTT form, by `k` (made on first use).
    monomials: Arc<Mutex<HashMap<usize, Arc<Poly<Ntt>>>>>,
}

fn check_same_level(a: Level, b: Level) -> Result<()> {
    if a != b {
        return Err(CkksError::LevelMismatch { lhs: a, rhs: b });
    }
    Ok(())
}

fn check_same_scale(a: Scale, b: Scale) -> Result<()> {
    if !a.matches(b) {
        return Err(CkksError::ScaleMismatch {
            lhs_log2: a.log2(),
            rhs_log2: b.log2(),
        });
    }
    Ok(())
}

impl Evaluator {
    /// An evaluator for `params`.
    pub fn new(params: &Arc<CkksParams>) -> Self {
        Self {
            params: params.clone(),
            monomials: Arc::default(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<CkksParams> {
        &self.params
    }

    fn check_ct(&self, ct: &Ciphertext) -> Result<()> {
        self.params.check_id(ct.params_id)
    }

    /// The first part of `a` (where plaintexts and constants are added).
    fn c0_mut(a: &mut Ciphertext) -> Result<&mut Poly<Ntt>> {
        a.parts.first_mut().ok_or(CkksError::WrongSize {
            expected: 2,
            got: 0,
        })
    }

    fn check_size(ct: &Ciphertext, expected: usize) -> Result<()> {
        if ct.parts.len() != expected {
            return Err(CkksError::WrongSize {
                expected,
                got: ct.parts.len(),
            });
        }
        Ok(())
    }

    /// The plaintext polynomial restricted to the ciphertext level (plaintexts at a higher
    /// level are accepted; lower ones are an error).
    fn pt_at_level(&self, pt: &Plaintext, level: Level) -> Result<Poly<Ntt>> {
        self.params.check_id(pt.params_id)?;
        if pt.level < level {
            return Err(CkksError::LevelMismatch {
                lhs: level,
                rhs: pt.level,
            });
        }
        if pt.level == level {
            Ok(pt.poly.clone())
        } else {
            Ok(pt.poly.select_limbs(&self.params.q_limbs(level))?)
        }
    }

    // ----- addition -----

    /// `a + b` (same level and scale; sizes may differ).
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let mut r = a.clone();
        self.add_assign(&mut r, b)?;
        Ok(r)
    }

    /// `a += b`.
    pub fn add_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        check_same_level(a.level, b.level)?;
        check_same_scale(a.scale, b.scale)?;
        for (i, pb) in b.parts.iter().enumerate() {
            match a.parts.get_mut(i) {
                Some(pa) => pa.add_assign(pb)?,
                None => a.parts.push(pb.clone()),
            }
        }
        Ok(())
    }

    /// `a - b`.
    pub fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let mut r = a.clone();
        self.sub_assign(&mut r, b)?;
        Ok(r)
    }

    /// `a -= b`.
    pub fn sub_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        check_same_level(a.level, b.level)?;
        check_same_scale(a.scale, b.scale)?;
        for (i, pb) in b.parts.iter().enumerate() {
            match a.parts.get_mut(i) {
                Some(pa) => pa.sub_assign(pb)?,
                None => {
                    let mut p = pb.clone();
                    p.neg_assign();
                    a.parts.push(p);
                }
            }
        }
        Ok(())
    }

    /// `-a`.
    pub fn neg(&self, a: &Ciphertext) -> Result<Ciphertext> {
        let mut r = a.clone();
        self.neg_assign(&mut r)?;
        Ok(r)
    }

    /// `a = -a`.
    pub fn neg_assign(&self, a: &mut Ciphertext) -> Result<()> {
        self.check_ct(a)?;
        a.parts.iter_mut().for_each(|p| p.neg_assign());
        Ok(())
    }

    /// `a + pt` (same scale; the plaintext level must be at least the ciphertext's).
    pub fn add_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        let mut r = a.clone();
        self.add_plain_assign(&mut r, pt)?;
        Ok(r)
    }

    /// `a += pt`.
    pub fn add_plain_assign(&self, a: &mut Ciphertext, pt: &Plaintext) -> Result<()> {
        self.check_ct(a)?;
        check_same_scale(a.scale, pt.scale)?;
        let p = self.pt_at_level(pt, a.level)?;
        Self::c0_mut(a)?.add_assign(&p)?;
        Ok(())
    }

    /// `a - pt`.
    pub fn sub_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        self.check_ct(a)?;
        check_same_scale(a.scale, pt.scale)?;
        let p = self.pt_at_level(pt, a.level)?;
        let mut r = a.clone();
        Self::c0_mut(&mut r)?.sub_assign(&p)?;
        Ok(r)
    }

    /// Residues of `round(x)` for each data prime up to `level`.
    fn int_residues(&self, x: f64, level: Level) -> Result<Vec<u64>> {
        if !x.is_finite() || x.abs() >= 2f64.powi(126) {
            return Err(CkksError::ValueTooLarge {
                value: x,
                log_scale: 0.0,
            });
        }
        let v = x.round() as i128;
        self.params
            .q_limbs(level)
            .iter()
            .map(|&i| Ok(self.params.ring().modulus(i)?.reduce_i128(v)))
            .collect()
    }

    /// `a + c` for a real constant `c` added to every slot (encoded at the ciphertext scale).
    pub fn add_const(&self, a: &Ciphertext, c: f64) -> Result<Ciphertext> {
        let mut r = a.clone();
        self.add_const_assign(&mut r, c)?;
        Ok(r)
    }

    /// `a += c` in every slot.
    pub fn add_const_assign(&self, a: &mut Ciphertext, c: f64) -> Result<()> {
        self.check_ct(a)?;
        let r = self.int_residues(c * a.scale.value(), a.level)?;
        Self::c0_mut(a)?.add_scalar_assign(&r)?;
        Ok(())
    }

    // ----- multiplication -----

    /// `a * pt` (slot-wise); scales multiply. No rescale.
    pub fn mul_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        let mut r = a.clone();
        self.mul_plain_assign(&mut r, pt)?;
        Ok(r)
    }

    /// `a *= pt`.
    pub fn mul_plain_assign(&self, a: &mut Ciphertext, pt: &Plaintext) -> Result<()> {
        self.check_ct(a)?;
        self.params.check_id(pt.params_id)?;
        if pt.level < a.level {
            return Err(CkksError::LevelMismatch {
                lhs: a.level,
                rhs: pt.level,
            });
        }
        // The plaintext's primes start with the ciphertext's: multiply by that prefix in
        // place, without copying the plaintext.
        for part in &mut a.parts {
            part.mul_assign_prefix(&pt.poly)?;
        }
        a.scale = a.scale.mul(pt.scale);
        Ok(())
    }

    /// `out[o] = sum_k w[o * K + k] * xs[k]` for real constants encoded as
    /// `round(w * const_scale)`, no rescale: many linear combinations of the same inputs at
    /// once (a convolution's output channels, a fully connected layer), computed by the
    /// cache-tiled [`Poly::scalar_matrix_mul`] instead of `n_out` passes over the inputs.
    /// All inputs must share level and scale; results are at scale `x.scale * const_scale`.
    pub fn mul_const_matrix(
        &self,
        xs: &[&Ciphertext],
        w: &[f64],
        n_out: usize,
        const_scale: Scale,
    ) -> Result<Vec<Ciphertext>> {
        let x0 = *xs.first().ok_or(CkksError::InvalidArgument(
            "mul_const_matrix without inputs".into(),
        ))?;
        for x in xs {
            self.check_ct(x)?;
            check_same_level(x0.level, x.level)?;
            check_same_scale(x0.scale, x.scale)?;
            if x.parts.len() != x0.parts.len() {
                return Err(CkksError::WrongSize {
                    got: x.parts.len(),
                    expected: x0.parts.len(),
                });
            }
        }
        let k = xs.len();
        if w.len() != n_out * k {
            return Err(CkksError::InvalidArgument(format!(
                "{} weights for {n_out} x {k} products",
                w.len()
            )));
        }
        let ring = self.params.ring();
        let limbs = self.params.q_limbs(x0.level);
        let moduli = limbs
            .iter()
            .map(|&i| ring.modulus(i))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut shoup = Vec::with_capacity(w.len() * limbs.len());
        for &c in w {
            let r = self.int_residues(c * const_scale.value(), x0.level)?;
            for (m, v) in moduli.iter().zip(r) {
                shoup.push(m.shoup(v));
            }
        }
        let mut parts: Vec<Vec<Poly<Ntt>>> = Vec::with_capacity(x0.parts.len());
        for p in 0..x0.parts.len() {
            let polys: Vec<&Poly<Ntt>> = xs.iter().map(|x| &x.parts[p]).collect();
            parts.push(Poly::scalar_matrix_mul(&polys, &shoup, n_out)?);
        }
        let scale = x0.scale.mul(const_scale);
        let mut outs: Vec<Ciphertext> = (0..n_out)
            .map(|_| Ciphertext {
                parts: Vec::with_capacity(parts.len()),
                level: x0.level,
                scale,
                params_id: x0.params_id,
            })
            .collect();
        for part in parts {
            for (o, poly) in part.into_iter().enumerate() {
                outs[o].parts.push(poly);
            }
        }
        Ok(outs)
    }

    /// `out[o] = sum over terms (o, i, pt) of xs[i] * pt` for `n_out` outputs (no rescale):
    /// the products of a layer whose outputs share rotated inputs, each input and plaintext
    /// streamed through memory once for all the parts (`Poly::plain_matrix_mul_parts`).
    /// Inputs at one level and scale, plaintexts at that level or above and one scale; an
    /// output without terms is 0.
    pub fn mul_plain_matrix(
        &self,
        xs: &[&Ciphertext],
        terms: &[(usize, usize, &Plaintext)],
        n_out: usize,
    ) -> Result<Vec<Ciphertext>> {
        let x0 = *xs.first().ok_or(CkksError::InvalidArgument(
            "mul_plain_matrix without inputs".into(),
        ))?;
        for x in xs {
            self.check_ct(x)?;
            check_same_level(x0.level, x.level)?;
            check_same_scale(x0.scale, x.scale)?;
            if x.parts.len() != x0.parts.len() {
                return Err(CkksError::WrongSize {
                    got: x.parts.len(),
                    expected: x0.parts.len(),
                });
            }
        }
        let pt_scale = self.matrix_pt_scale(terms, "mul_plain_matrix")?;
        for (_, _, pt) in terms {
            if pt.level < x0.level {
                return Err(CkksError::LevelMismatch {
                    lhs: x0.level,
                    rhs: pt.level,
                });
            }
        }
        let inputs: Vec<Vec<&Poly<Ntt>>> = xs.iter().map(|x| x.parts.iter().collect()).collect();
        let refs: Vec<&[&Poly<Ntt>]> = inputs.iter().map(|x| x.as_slice()).collect();
        let ts: Vec<(usize, usize, &Poly<Ntt>)> =
            terms.iter().map(|&(o, i, pt)| (o, i, &pt.poly)).collect();
        let scale = x0.scale.mul(pt_scale);
        Ok(Poly::plain_matrix_mul_parts(&refs, &ts, n_out)?
            .into_iter()
            .map(|parts| Ciphertext {
                parts,
                level: x0.level,
                scale,
                params_id: x0.params_id,
            })
            .collect())
    }

    /// `acc += x * pt` with no temporary ciphertext (the plaintext-mask counterpart of
    /// [`Evaluator::mul_const_add_assign`]). `acc` must be at `x`'s level and at scale
    /// `x.scale * pt.scale`; `pt` may sit at a higher level (its leading primes are used).
    pub fn mul_plain_add_assign(
        &self,
        acc: &mut Ciphertext,
        x: &Ciphertext,
        pt: &Plaintext,
    ) -> Result<()> {
        self.check_ct(acc)?;
        self.check_ct(x)?;
        self.params.check_id(pt.params_id)?;
        check_same_level(acc.level, x.level)?;
        if pt.level < x.level {
            return Err(CkksError::LevelMismatch {
                lhs: x.level,
                rhs: pt.level,
            });
        }
        check_same_scale(acc.scale, x.scale.mul(pt.scale))?;
        for (i, px) in x.parts.iter().enumerate() {
            match acc.parts.get_mut(i) {
                Some(pa) => pa.mul_add_assign_subset(px, &pt.poly)?,
                None => {
                    let mut p = px.clone();
                    p.mul_assign_prefix(&pt.poly)?;
                    acc.parts.push(p);
                }
            }
        }
        Ok(())
    }

    /// `a * c` for a real constant, encoded as the integer `round(c * const_scale)`: one
    /// scalar multiplication per limb, no NTT. The result scale is `a.scale * const_scale`.
    /// With `const_scale` equal to the last prime, a following rescale restores the scale.
    pub fn mul_const(&self, a: &Ciphertext, c: f64, const_scale: Scale) -> Result<Ciphertext> {
        let mut r = a.clone();
        self.mul_const_assign(&mut r, c, const_scale)?;
        Ok(r)
    }

    /// `a *= c` (see [`Evaluator::mul_const`]).
    pub fn mul_const_assign(&self, a: &mut Ciphertext, c: f64, const_scale: Scale) -> Result<()> {
        self.check_ct(a)?;
        let r = self.int_residues(c * const_scale.value(), a.level)?;
        for part in &mut a.parts {
            part.mul_scalar_assign(&r)?;
        }
        a.scale = a.scale.mul(const_scale);
        Ok(())
    }

    /// `acc += x * c` for a real constant encoded as `round(c * const_scale)`, with no
    /// temporary ciphertext: the building block of linear layers (`sum_i w_i x_i`, then one
    /// rescale). `acc` must be at `x`'s level and at scale `x.scale * const_scale`.
    pub fn mul_const_add_assign(
        &self,
        acc: &mut Ciphertext,
        x: &Ciphertext,
        c: f64,
        const_scale: Scale,
    ) -> Result<()> {
        self.check_ct(acc)?;
        self.check_ct(x)?;
        check_same_level(acc.level, x.level)?;
        check_same_scale(acc.scale, x.scale.mul(const_scale))?;
        let r = self.int_residues(c * const_scale.value(), x.level)?;
        for (i, px) in x.parts.iter().enumerate() {
            match acc.parts.get_mut(i) {
                Some(pa) => pa.mul_scalar_add_assign(px, &r)?,
                None => {
                    let mut p = px.clone();
                    p.mul_scalar_assign(&r)?;
                    acc.parts.push(p);
                }
            }
        }
        Ok(())
    }

    /// `a * k` for an integer `k`; the scale is unchanged and no level is consumed.
    pub fn mul_int_assign(&self, a: &mut Ciphertext, k: i64) -> Result<()> {
        self.check_ct(a)?;
        let r = self.int_residues(k as f64, a.level)?;
        for part in &mut a.parts {
            part.mul_scalar_assign(&r)?;
        }
        Ok(())
    }

    /// The scale that makes `mul_const` followed by `rescale` keep the ciphertext's scale:
    /// the last prime at its level.
    pub fn rescale_neutral_scale(&self, ct: &Ciphertext) -> Result<Scale> {
        let q = self
            .params
            .q()
            .get(ct.level.0)
            .copied()
            .ok_or(CkksError::OutOfLevels)?;
        Scale::new(q as f64).ok_or(CkksError::OutOfLevels)
    }

    /// `a * b` without relinearization (3 parts). Same level required.
    pub fn mul(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        Self::check_size(a, 2)?;
        Self::check_size(b, 2)?;
        check_same_level(a.level, b.level)?;
        let (a0, a1) = (&a.parts[0], &a.parts[1]);
        let (b0, b1) = (&b.parts[0], &b.parts[1]);
        let ((c0, c2), c1) = rayon::join(
            || (a0.mul(b0), a1.mul(b1)),
            || -> Result<Poly<Ntt>> {
                let mut c1 = a0.mul(b1)?;
                c1.mul_add_assign(a1, b0)?;
                Ok(c1)
            },
        );
        Ok(Ciphertext {
            parts: vec![c0?, c1?, c2?],
            level: a.level,
            scale: a.scale.mul(b.scale),
            params_id: a.params_id,
        })
    }

    /// `a^2` without relinearization (3 parts).
    pub fn square(&self, a: &Ciphertext) -> Result<Ciphertext> {
        self.check_ct(a)?;
        Self::check_size(a, 2)?;
        let (a0, a1) = (&a.parts[0], &a.parts[1]);
        let c0 = a0.mul(a0)?;
        let mut c1 = a0.mul(a1)?;
        let c1b = c1.clone();
        c1.add_assign(&c1b)?;
        let c2 = a1.mul(a1)?;
        Ok(Ciphertext {
            parts: vec![c0, c1, c2],
            level: a.level,
            scale: a.scale.mul(a.scale),
            params_id: a.params_id,
        })
    }

    /// Relinearizes a 3-part ciphertext back to 2 parts.
    pub fn relinearize(&self, a: &Ciphertext, rlk: &RelinKey) -> Result<Ciphertext> {
        let mut r = a.clone();
        self.relinearize_assign(&mut r, rlk)?;
        Ok(r)
    }

    /// In-place relinearization.
    pub fn relinearize_assign(&self, a: &mut Ciphertext, rlk: &RelinKey) -> Result<()> {
        self.check_ct(a)?;
        self.params.check_id(rlk.0.params_id)?;
        if a.parts.len() == 2 {
            return Ok(());
        }
        Self::check_size(a, 3)?;
        let c2 = a.parts.pop().ok_or(CkksError::WrongSize {
            expected: 3,
            got: 0,
        })?;
        let dec = decompose(&self.params, &c2, a.level)?;
        let (u0, u1) = apply_key(&self.params, &dec, &rlk.0)?;
        a.parts[0].add_assign(&u0)?;
        a.parts[1].add_assign(&u1)?;
        Ok(())
    }

    /// `a * b` followed by relinearization.
    pub fn mul_relin(&self, a: &Ciphertext, b: &Ciphertext, rlk: &RelinKey) -> Result<Ciphertext> {
        let mut r = self.mul(a, b)?;
        self.relinearize_assign(&mut r, rlk)?;
        Ok(r)
    }

    /// `a^2` followed by relinearization.
    pub fn square_relin(&self, a: &Ciphertext, rlk: &RelinKey) -> Result<Ciphertext> {
        let mut r = self.square(a)?;
        self.relinearize_assign(&mut r, rlk)?;
        Ok(r)
    }

    // ----- monomials and complex pairs -----

    /// `X^k` (`0 <= k < N`) over every `q` prime in NTT form, made once per evaluator.
    fn monomial(&self, k: usize) -> Result<Arc<Poly<Ntt>>> {
        let n = self.params.n();
        if k >= n {
            return Err(CkksError::InvalidParams(format!(
                "monomial X^{k} of a ring of degree {n}"
            )));
        }
        let mut map = self
            .monomials
            .lock()
            .map_err(|_| CkksError::InvalidParams("monomial cache poisoned".into()))?;
        if let Some(m) = map.get(&k) {
            return Ok(m.clone());
        }
        let mut coeffs = vec![0i64; n];
        coeffs[k] = 1;
        let limbs = self.params.q_limbs(self.params.max_level());
        let m = Arc::new(
            Poly::<henn_ring::Coeff>::from_signed(self.params.ring(), &limbs, &coeffs)?.ntt(),
        );
        map.insert(k, m.clone());
        Ok(m)
    }

    /// `a *= X^k`: exact, no level and no noise growth. `X^(N/2)` is `i` in every slot,
    /// `X^(N/4)` a square root of `i` in every slot (`±(1 + i)/√2`, the sign by slot).
    pub fn mul_monomial_assign(&self, a: &mut Ciphertext, k: usize) -> Result<()> {
        self.check_ct(a)?;
        let m = self.monomial(k)?;
        for p in &mut a.parts {
            p.mul_assign_prefix(&m)?;
        }
        Ok(())
    }

    /// `a *= i` in every slot (the monomial `X^(N/2)`): exact, no level.
    pub fn mul_i_assign(&self, a: &mut Ciphertext) -> Result<()> {
        self.mul_monomial_assign(a, self.params.n() / 2)
    }

    /// `a += c` for a complex constant `c` in every slot (encoded at the ciphertext scale).
    pub fn add_complex_const_assign(&self, a: &mut Ciphertext, c: Complex) -> Result<()> {
        self.add_const_assign(a, c.re)?;
        if c.im == 0.0 {
            return Ok(());
        }
        let r = self.int_residues(c.im * a.scale.value(), a.level)?;
        let i = self
            .monomial(self.params.n() / 2)?
            .select_limbs(&self.params.q_limbs(a.level))?;
        Self::c0_mut(a)?.mul_scalar_add_assign(&i, &r)?;
        Ok(())
    }

    /// The real and imaginary parts of `a`, each as a real-slot ciphertext in the form the
    /// pair products need: `(a + conj a, (a - conj a) X^(N/4))`, i.e. `2 Re a` and
    /// `2 i ζ Im a` with `ζ^2 = i` (one conjugation).
    fn pair_parts(&self, a: &Ciphertext, gk: &GaloisKeys) -> Result<(Ciphertext, Ciphertext)> {
        Self::check_size(a, 2)?;
        let d = self.conjugate(a, gk)?;
        let re2 = self.add(a, &d)?;
        let mut im2 = self.sub(a, &d)?;
        self.mul_monomial_assign(&mut im2, self.params.n() / 4)?;
        Ok((re2, im2))
    }

    /// The slot-wise products of two pairs of real vectors packed as complex slots: for
    /// `a = x1 + i x2` and `b = y1 + i y2` (every slot), returns `x1 y1 + i x2 y2`,
    /// relinearized, at scale `4 scale(a) scale(b)` (the factor 4 is exact bookkeeping:
    /// `a + conj a = 2 x1`). Two conjugations (one when `a` and `b` are the same ciphertext)
    /// and one relinearization for the two products: what makes two images per complex slot
    /// cost less than two ciphertexts.
    pub fn mul_pair_relin(
        &self,
        a: &Ciphertext,
        b: &Ciphertext,
        rlk: &RelinKey,
        gk: &GaloisKeys,
    ) -> Result<Ciphertext> {
        let mut t = self.mul_pair(a, b, gk)?;
        self.relinearize_assign(&mut t, rlk)?;
        Ok(t)
    }

    /// [`Self::mul_pair_relin`] without the relinearization: three parts (relinearize later,
    /// e.g. after a linear layer has summed many of them into fewer ciphertexts). The
    /// conjugations are key switches all the same.
    pub fn mul_pair(&self, a: &Ciphertext, b: &Ciphertext, gk: &GaloisKeys) -> Result<Ciphertext> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        check_same_level(a.level, b.level)?;
        let (ra, ia) = self.pair_parts(a, gk)?;
        let (mut t, u) = if std::ptr::eq(a, b) {
            (self.square(&ra)?, self.square(&ia)?)
        } else {
            let (rb, ib) = self.pair_parts(b, gk)?;
            (self.mul(&ra, &rb)?, self.mul(&ia, &ib)?)
        };
        // (2 x1)(2 y1) - (2 i ζ x2)(2 i ζ y2) = 4 x1 y1 + 4 i x2 y2  (ζ^2 = i, i^2 i = -i)
        self.sub_assign(&mut t, &u)?;
        t.scale =
            Scale::new(4.0 * a.scale.value() * b.scale.value()).ok_or(CkksError::OutOfLevels)?;
        Ok(t)
    }

    /// [`Self::mul_pair_relin`] of `a` with itself: `x1^2 + i x2^2` for `a = x1 + i x2`,
    /// at scale `4 scale(a)^2` (one conjugation, one relinearization).
    pub fn square_pair_relin(
        &self,
        a: &Ciphertext,
        rlk: &RelinKey,
        gk: &GaloisKeys,
    ) -> Result<Ciphertext> {
        self.mul_pair_relin(a, a, rlk, gk)
    }

    /// [`Self::square_pair_relin`] without the relinearization (three parts).
    pub fn square_pair(&self, a: &Ciphertext, gk: &GaloisKeys) -> Result<Ciphertext> {
        self.mul_pair(a, a, gk)
    }

    // ----- levels -----

    /// Divides by the last prime `q_l` (rounding) and drops it: level - 1, scale / q_l.
    pub fn rescale(&self, a: &Ciphertext) -> Result<Ciphertext> {
        let mut r = a.clone();
        self.rescale_assign(&mut r)?;
        Ok(r)
    }

    /// In-place rescale.
    pub fn rescale_assign(&self, a: &mut Ciphertext) -> Result<()> {
        self.check_ct(a)?;
        if a.level.0 == 0 {
            return Err(CkksError::OutOfLevels);
        }
        let q = self
            .params
            .q()
            .get(a.level.0)
            .copied()
            .ok_or(CkksError::OutOfLevels)? as f64;
        a.parts
            .par_iter_mut()
            .try_for_each(|p| p.divide_round_by_last_assign())?;
        a.level = Level(a.level.0 - 1);
        a.scale = a.scale.div(q);
        Ok(())
    }

    /// Drops primes down to `level` without changing the scale (modulus switching).
    pub fn drop_level_to(&self, a: &Ciphertext, level: Level) -> Result<Ciphertext> {
        let mut r = a.clone();
        self.drop_level_to_assign(&mut r, level)?;
        Ok(r)
    }

    /// In-place [`Evaluator::drop_level_to`].
    pub fn drop_level_to_assign(&self, a: &mut Ciphertext, level: Level) -> Result<()> {
        self.check_ct(a)?;
        if level > a.level {
            return Err(CkksError::LevelMismatch {
                lhs: a.level,
                rhs: level,
            });
        }
        for p in &mut a.parts {
            p.truncate_limbs(level.num_limbs())?;
        }
        a.level = level;
        Ok(())
    }

    // ----- automorphisms -----

    /// `sigma(a)` for the automorphism of `key`, from a decomposition of `a`'s `c_1` (which
    /// may be shared by many automorphisms of the same ciphertext: hoisting). With the key in
    /// hoisting form: `(sigma(c_0) + sigma(u_0), sigma(u_1))` where `(u_0, u_1)` switches
    /// `c_1` with the `sigma^-1`-permuted key.
    fn automorph_with(
        &self,
        a: &Ciphertext,
        dec: &Decomposed,
        key: &GaloisKey,
    ) -> Result<Ciphertext> {
        self.params.check_id(key.key.params_id)?;
        let (mut u0, u1) = apply_key(&self.params, dec, &key.key)?;
        // the automorphism is linear: sigma(c0) + sigma(u0) = sigma(c0 + u0), one permutation
        u0.add_assign(&a.parts[0])?;
        let c0 = u0.automorphism(&key.perm)?;
        let c1 = u1.automorphism(&key.perm)?;
        Ok(Ciphertext {
            parts: vec![c0, c1],
            level: a.level,
            scale: a.scale,
            params_id: a.params_id,
        })
    }

    fn apply_galois_with(
        &self,
        a: &Ciphertext,
        gk: &GaloisKeys,
        g: GaloisElement,
        steps: Option<i64>,
    ) -> Result<Ciphertext> {
        self.check_ct(a)?;
        Self::check_size(a, 2)?;
        let key = gk.get(g, steps)?;
        let dec = decompose(&self.params, &a.parts[1], a.level)?;
        self.automorph_with(a, &dec, key)
    }

    /// Applies the automorphism of Galois element `g`.
    pub fn apply_galois(
        &self,
        a: &Ciphertext,
        g: GaloisElement,
        gk: &GaloisKeys,
    ) -> Result<Ciphertext> {
        self.apply_galois_with(a, gk, g, None)
    }

    fn rotation_element(&self, steps: i64) -> Result<GaloisElement> {
        let slots = self.params.slots();
        if steps.unsigned_abs() as usize >= slots {
            return Err(CkksError::InvalidRotation { steps, slots });
        }
        Ok(GaloisElement::for_rotation(steps, self.params.n()))
    }

    /// Rotates the slots left by `steps` (right for negative steps).
    pub fn rotate(&self, a: &Ciphertext, steps: i64, gk: &GaloisKeys) -> Result<Ciphertext> {
        let g = self.rotation_element(steps)?;
        if g.value() == 1 {
            return Ok(a.clone());
        }
        self.apply_galois_with(a, gk, g, Some(steps))
    }

    /// Complex conjugation of every slot.
    pub fn conjugate(&self, a: &Ciphertext, gk: &GaloisKeys) -> Result<Ciphertext> {
        self.apply_galois_with(a, gk, GaloisElement::conjugation(self.params.n()), None)
    }

    /// Decomposes `c_1` once, for many rotations of the same ciphertext ([`Self::rotate_hoisted_with`]).
    pub fn hoist(&self, a: &Ciphertext) -> Result<Decomposed> {
        self.check_ct(a)?;
        Self::check_size(a, 2)?;
        decompose(&self.params, &a.parts[1], a.level)
    }

    /// One rotation reusing a decomposition made by [`Self::hoist`] of the same ciphertext.
    pub fn rotate_hoisted_with(
        &self,
        a: &Ciphertext,
        dec: &Decomposed,
        steps: i64,
        gk: &GaloisKeys,
    ) -> Result<Ciphertext> {
        match self.hoisted_key(a, dec, steps, gk)? {
            None => Ok(a.clone()),
            Some(key) => self.automorph_with(a, dec, key),
        }
    }

    /// The Galois key of a hoisted rotation of `a` by `steps` (`None`: the identity), after
    /// checking that `dec` decomposes a ciphertext at `a`'s level.
    fn hoisted_key<'k>(
        &self,
        a: &Ciphertext,
        dec: &Decomposed,
        steps: i64,
        gk: &'k GaloisKeys,
    ) -> Result<Option<&'k GaloisKey>> {
        self.check_ct(a)?;
        if dec.level != a.level {
            return Err(CkksError::LevelMismatch {
                lhs: a.level,
                rhs: dec.level,
            });
        }
        let g = self.rotation_element(steps)?;
        if g.value() == 1 {
            return Ok(None);
        }
        gk.get(g, Some(steps)).map(Some)
    }

    /// Rotations of one ciphertext by each of `steps`, sharing one decomposition (hoisting).
    pub fn rotate_hoisted(
        &self,
        a: &Ciphertext,
        steps: &[i64],
        gk: &GaloisKeys,
    ) -> Result<Vec<Ciphertext>> {
        let dec = self.hoist(a)?;
        steps
            .par_iter()
            .map(|&s| self.rotate_hoisted_with(a, &dec, s, gk))
            .collect()
    }

    /// Sums `count` slots with stride `stride` into slot 0 (and its cyclic shifts):
    /// `sum_{i<count} rot(a, i*stride)` with log2(count) rotations (`count` a power of two).
    /// Needs keys for rotations by `stride * 2^k`.
    pub fn rotate_and_sum(
        &self,
        a: &Ciphertext,
        count: usize,
        stride: i64,
        gk: &GaloisKeys,
    ) -> Result<Ciphertext> {
        if !count.is_power_of_two() {
            return Err(CkksError::InvalidRotation {
                steps: count as i64,
                slots: self.params.slots(),
            });
        }
        let mut acc = a.clone();
        let mut step = stride;
        let mut c = 1;
        while c < count {
            let r = self.rotate(&acc, step, gk)?;
            self.add_assign(&mut acc, &r)?;
            step *= 2;
            c *= 2;
        }
        Ok(acc)
    }

    // ----- double hoisting -----

    /// `(P c_0, P c_1)` over `Q_level ∪ P`.
    pub fn lift_ext(&self, a: &Ciphertext) -> Result<ExtCiphertext> {
        self.check_ct(a)?;
        Self::check_size(a, 2)?;
        let (c0, c1) = rayon::join(
            || lift_to_qp(&self.params, &a.parts[0], a.level),
            || lift_to_qp(&self.params, &a.parts[1], a.level),
        );
        Ok(ExtCiphertext {
            c0: c0?,
            c1: c1?,
            level: a.level,
            scale: a.scale,
        })
    }

    /// A rotation from a shared decomposition ([`Self::hoist`]) left over `Q_level ∪ P`
    /// (no ModDown).
    pub fn rotate_hoisted_ext(
        &self,
        a: &Ciphertext,
        dec: &Decomposed,
        steps: i64,
        gk: &GaloisKeys,
    ) -> Result<ExtCiphertext> {
        let Some(key) = self.hoisted_key(a, dec, steps, gk)? else {
            return self.lift_ext(a);
        };
        self.params.check_id(key.key.params_id)?;
        let (mut u0, u1) = inner_product(&self.params, dec, &key.key)?;
        u0.add_assign(&lift_to_qp(&self.params, &a.parts[0], a.level)?)?;
        Ok(ExtCiphertext {
            c0: u0.automorphism(&key.perm)?,
            c1: u1.automorphism(&key.perm)?,
            level: a.level,
            scale: a.scale,
        })
    }

    /// `acc += x * pt` for a plaintext encoded over `Q_level ∪ P`
    /// ([`crate::Encoder::encode_complex_ext`]); `acc` is created when `None`.
    pub fn ext_mul_plain_add_assign(
        &self,
        acc: &mut Option<ExtCiphertext>,
        x: &ExtCiphertext,
        pt: &Plaintext,
    ) -> Result<()> {
        self.params.check_id(pt.params_id)?;
        if pt.poly.limbs() != x.c0.limbs() {
            return Err(CkksError::InvalidArgument(format!(
                "plaintext over {} primes for an extended ciphertext over {}: encode it with encode_complex_ext at level {}",
                pt.poly.num_limbs(),
                x.c0.num_limbs(),
                x.level
            )));
        }
        match acc {
            None => {
                let (c0, c1) = rayon::join(|| x.c0.mul(&pt.poly), || x.c1.mul(&pt.poly));
                *acc = Some(ExtCiphertext {
                    c0: c0?,
                    c1: c1?,
                    level: x.level,
                    scale: x.scale.mul(pt.scale),
                });
            }
            Some(a) => {
                check_same_scale(a.scale, x.scale.mul(pt.scale))?;
                let (r0, r1) = rayon::join(
                    || a.c0.mul_add_assign(&x.c0, &pt.poly),
                    || a.c1.mul_add_assign(&x.c1, &pt.poly),
                );
                r0?;
                r1?;
            }
        }
        Ok(())
    }

    /// The common scale of a plaintext matrix's terms, after checking each plaintext's
    /// parameters (`what`: the operation, for the error without terms).
    fn matrix_pt_scale(&self, terms: &[(usize, usize, &Plaintext)], what: &str) -> Result<Scale> {
        let Some((_, _, first)) = terms.first() else {
            return Err(CkksError::InvalidArgument(format!("{what} without terms")));
        };
        for (_, _, pt) in terms {
            self.params.check_id(pt.params_id)?;
            check_same_scale(first.scale, pt.scale)?;
        }
        Ok(first.scale)
    }

    /// [`Self::mul_plain_matrix`] over extended ciphertexts: `out[o] = sum over terms
    /// (o, i, pt) of xs[i] * pt` with plaintexts encoded over `Q_level ∪ P`
    /// ([`crate::Encoder::encode_ext`]), each plaintext read once for both parts. Every
    /// output needs at least one term.
    pub fn ext_mul_plain_matrix(
        &self,
        xs: &[&ExtCiphertext],
        terms: &[(usize, usize, &Plaintext)],
        n_out: usize,
    ) -> Result<Vec<ExtCiphertext>> {
        let x0 = *xs.first().ok_or(CkksError::InvalidArgument(
            "ext_mul_plain_matrix without inputs".into(),
        ))?;
        for x in xs {
            check_same_level(x0.level, x.level)?;
            check_same_scale(x0.scale, x.scale)?;
        }
        let pt_scale = self.matrix_pt_scale(terms, "ext_mul_plain_matrix")?;
        for (_, _, pt) in terms {
            if pt.poly.num_limbs() < x0.c0.num_limbs() {
                return Err(CkksError::InvalidArgument(format!(
                    "plaintext over {} primes for extended ciphertexts over {}: encode it with \
                     encode_ext at level {}",
                    pt.poly.num_limbs(),
                    x0.c0.num_limbs(),
                    x0.level
                )));
            }
        }
        let inputs: Vec<[&Poly<Ntt>; 2]> = xs.iter().map(|x| [&x.c0, &x.c1]).collect();
        let refs: Vec<&[&Poly<Ntt>]> = inputs.iter().map(|x| x.as_slice()).collect();
        let ts: Vec<(usize, usize, &Poly<Ntt>)> =
            terms.iter().map(|&(o, i, pt)| (o, i, &pt.poly)).collect();
        let scale = x0.scale.mul(pt_scale);
        Poly::plain_matrix_mul_parts(&refs, &ts, n_out)?
            .into_iter()
            .map(|parts| {
                let [c0, c1]: [Poly<Ntt>; 2] =
                    parts
                        .try_into()
                        .map_err(|p: Vec<Poly<Ntt>>| CkksError::WrongSize {
                            got: p.len(),
                            expected: 2,
                        })?;
                Ok(ExtCiphertext {
                    c0,
                    c1,
                    level: x0.level,
                    scale,
                })
            })
            .collect()
    }

    /// `acc += x` (same level and scale).
    pub fn ext_add_assign(&self, acc: &mut ExtCiphertext, x: &ExtCiphertext) -> Result<()> {
        check_same_level(acc.level, x.level)?;
        check_same_scale(acc.scale, x.scale)?;
        acc.c0.add_assign(&x.c0)?;
        acc.c1.add_assign(&x.c1)?;
        Ok(())
    }

    /// Rotates an extended ciphertext: ModDown of `c_1` only, one decomposition, the inner
    /// product left over `Q_level ∪ P`.
    pub fn ext_rotate(
        &self,
        x: &ExtCiphertext,
        steps: i64,
        gk: &GaloisKeys,
    ) -> Result<ExtCiphertext> {
        let g = self.rotation_element(steps)?;
        if g.value() == 1 {
            return Ok(x.clone());
        }
        let key = gk.get(g, Some(steps))?;
        self.params.check_id(key.key.params_id)?;
        let c1 = mod_down(&self.params, x.level, x.c1.clone())?;
        let dec = decompose(&self.params, &c1, x.level)?;
        let (mut w0, w1) = inner_product(&self.params, &dec, &key.key)?;
        w0.add_assign(&x.c0)?;
        Ok(ExtCiphertext {
            c0: w0.automorphism(&key.perm)?,
            c1: w1.automorphism(&key.perm)?,
            level: x.level,
            scale: x.scale,
        })
    }

    /// Brings an extended ciphertext back to `Q_level` (one ModDown per part).
    pub fn ext_mod_down(&self, x: ExtCiphertext) -> Result<Ciphertext> {
        let level = x.level;
        let (c0, c1) = rayon::join(
            || mod_down(&self.params, level, x.c0),
            || mod_down(&self.params, level, x.c1),
        );
        Ok(Ciphertext {
            parts: vec![c0?, c1?],
            level,
            scale: x.scale,
            params_id: self.params.id(),
        })
    }

    /// A key-switching primitive for advanced circuits: switches `d` (at `level`) with `key`.
    pub fn key_switch(
        &self,
        d: &Poly<Ntt>,
        level: Level,
        key: &KeySwitchKey,
    ) -> Result<(Poly<Ntt>, Poly<Ntt>)> {
        self.params.check_id(key.params_id)?;
        let dec = decompose(&self.params, d, level)?;
        apply_key(&self.params, &dec, key)
    }
}
