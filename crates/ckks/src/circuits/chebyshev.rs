//! Polynomials in the Chebyshev basis on an interval `[a, b]`, and their homomorphic
//! evaluation by baby-step giant-step (a Paterson-Stockmeyer style recursion on the Chebyshev
//! basis) with exact scale management.
//!
//! **Algorithm.** With `y = (2x - a - b) / (b - a)` (one level, skipped on `[-1, 1]`), the
//! baby steps `T_1 .. T_{2^lb - 1}` and the giant steps `T_{2^k}` (`k >= lb`) are computed with
//! `T_{2j} = 2 T_j^2 - 1` and `T_{i} = 2 T_j T_{i-j} - T_{2j-i}`, each `T_i` at the lowest depth
//! `ceil(log2 i)`. A polynomial `p` of degree `e >= 2^lb` is split as
//! `p = q T_{2^k} + r` (`2^k <= e`, using `T_{2^k} T_j = (T_{2^k+j} + T_{2^k-j}) / 2`); `q` and `r`
//! are evaluated recursively and the leaves `sum c_i T_i` (degree `< 2^lb`) take one scalar
//! multiplication level.
//!
//! **Scales.** Every sub-polynomial is evaluated towards a *target* level and scale handed
//! down by its parent: a leaf multiplies each `T_i` by `round(c_i * s_i)` with
//! `s_i = target * q_{l+1} / scale(T_i)`, so all its terms share one scale before the single
//! rescale whatever the scales of the `T_i`; a product `q T_{2^k}` asks `q` for the scale
//! `target * q_{l+1} / scale(T_{2^k})`. The output therefore lands exactly (to f64 rounding,
//! and the `2^-50` relative rounding of the integer constants) at the requested scale, with no
//! drift, whatever the primes.
//!
//! **Depth.** [`Chebyshev::plan`] picks the baby-step size minimising first the depth, then
//! the number of ciphertext products; for most degrees the depth is `ceil(log2(d + 1))`
//! (level-optimal), e.g. any degree `d <= 2^m - 2^(lb-1)` with baby steps `2^lb`; the plan
//! reports it (`+1` when the interval is not `[-1, 1]`).

use std::collections::BTreeMap;

use crate::ciphertext::Ciphertext;
use crate::error::{CkksError, Result};
use crate::eval::Evaluator;
use crate::keys::RelinKey;
use crate::types::{Level, Scale};

/// A real polynomial `sum_i c_i T_i(y)`, `y = (2x - a - b) / (b - a)`, for `x` in `[a, b]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Chebyshev {
    a: f64,
    b: f64,
    coeffs: Vec<f64>,
}

/// How [`Chebyshev::evaluate`] evaluates a polynomial: baby-step size `2^log_baby`, levels
/// consumed, ciphertext-ciphertext products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolyEvalPlan {
    /// log2 of the number of baby steps.
    pub log_baby: u32,
    /// Levels consumed (including the change of interval when not `[-1, 1]`).
    pub depth: usize,
    /// Ciphertext-ciphertext multiplications (each one relinearization).
    pub products: usize,
}

fn ceil_log2(x: usize) -> u32 {
    if x <= 1 {
        0
    } else {
        usize::BITS - (x - 1).leading_zeros()
    }
}

fn floor_log2(x: usize) -> u32 {
    usize::BITS - 1 - x.leading_zeros()
}

/// Degree after dropping trailing zero coefficients (`None`: the zero polynomial).
fn effective_degree(c: &[f64]) -> Option<usize> {
    c.iter().rposition(|&v| v != 0.0)
}

/// Quotient and remainder of `p = q T_n + r` (`n` a power of two, `deg p < 2n`).
fn split(c: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let e = c.len() - 1;
    let mut q = vec![0.0; e - n + 1];
    let mut r: Vec<f64> = c.iter().take(n).copied().collect();
    for (j, qj) in q.iter_mut().enumerate() {
        let cj = c.get(n + j).copied().unwrap_or(0.0);
        if j == 0 {
            *qj = cj;
        } else {
            *qj = 2.0 * cj;
            if let Some(rv) = r.get_mut(n - j) {
                *rv -= cj;
            }
        }
    }
    (q, r)
}

/// Depth of the recursive evaluation of a degree-`e` polynomial with baby steps `2^lb`.
fn rec_depth(e: usize, lb: u32) -> usize {
    if e < (1 << lb) {
        return if e == 0 { 0 } else { ceil_log2(e) as usize + 1 };
    }
    let k = floor_log2(e);
    let n = 1usize << k;
    let q = e - n;
    let dq = if q == 0 { 0 } else { rec_depth(q, lb) };
    let dr = rec_depth(n - 1, lb);
    (k as usize + 1).max(dq + 1).max(dr)
}

/// Ciphertext products of the recursion (not counting the basis).
fn rec_products(e: usize, lb: u32) -> usize {
    if e < (1 << lb) {
        return 0;
    }
    let n = 1usize << floor_log2(e);
    let q = e - n;
    let pq = if q == 0 { 0 } else { 1 + rec_products(q, lb) };
    pq + rec_products(n - 1, lb)
}

impl Chebyshev {
    /// A polynomial from its Chebyshev coefficients on `[a, b]`.
    pub fn new(a: f64, b: f64, coeffs: Vec<f64>) -> Result<Self> {
        if !(a.is_finite() && b.is_finite() && a < b) {
            return Err(CkksError::InvalidArgument(format!(
                "Chebyshev interval [{a}, {b}] must be finite with a < b"
            )));
        }
        if coeffs.is_empty() {
            return Err(CkksError::InvalidArgument(
                "a polynomial needs at least one coefficient".into(),
            ));
        }
        if let Some(c) = coeffs.iter().find(|c| !c.is_finite()) {
            return Err(CkksError::NonFinite(*c));
        }
        Ok(Self { a, b, coeffs })
    }

    /// Interpolates `f` at the `degree + 1` Chebyshev nodes of `[a, b]` (near-minimax).
    pub fn interpolate<F: Fn(f64) -> f64>(f: F, a: f64, b: f64, degree: usize) -> Result<Self> {
        let m = degree + 1;
        let mf = m as f64;
        let pi = std::f64::consts::PI;
        let vals: Vec<f64> = (0..m)
            .map(|k| {
                let t = (pi * (k as f64 + 0.5) / mf).cos();
                f(0.5 * (b - a) * t + 0.5 * (a + b))
            })
            .collect();
        let coeffs = (0..m)
            .map(|j| {
                let s: f64 = vals
                    .iter()
                    .enumerate()
                    .map(|(k, v)| v * (pi * j as f64 * (k as f64 + 0.5) / mf).cos())
                    .sum();
                let c = 2.0 * s / mf;
                if j == 0 { c / 2.0 } else { c }
            })
            .collect();
        Self::new(a, b, coeffs)
    }

    /// The Chebyshev coefficients.
    pub fn coeffs(&self) -> &[f64] {
        &self.coeffs
    }

    /// The interval `[a, b]`.
    pub fn interval(&self) -> (f64, f64) {
        (self.a, self.b)
    }

    /// Degree (trailing zero coefficients ignored).
    pub fn degree(&self) -> usize {
        effective_degree(&self.coeffs).unwrap_or(0)
    }

    fn unit_interval(&self) -> bool {
        self.a == -1.0 && self.b == 1.0
    }

    /// Evaluates in f64 (Clenshaw).
    pub fn eval(&self, x: f64) -> f64 {
        let t = (2.0 * x - self.a - self.b) / (self.b - self.a);
        let (mut b1, mut b2) = (0.0, 0.0);
        for &c in self.coeffs.iter().skip(1).rev() {
            let b0 = c + 2.0 * t * b1 - b2;
            b2 = b1;
            b1 = b0;
        }
        self.coeffs.first().copied().unwrap_or(0.0) + t * b1 - b2
    }

    /// Maximum of `|self(x) - f(x)|` on `samples` equally spaced points of the interval.
    pub fn max_error<F: Fn(f64) -> f64>(&self, f: F, samples: usize) -> f64 {
        let n = samples.max(2);
        (0..n)
            .map(|i| {
                let x = self.a + (self.b - self.a) * i as f64 / (n - 1) as f64;
                (self.eval(x) - f(x)).abs()
            })
            .fold(0.0, f64::max)
    }

    /// The evaluation plan: baby-step size with the smallest depth, then fewest products.
    pub fn plan(&self) -> PolyEvalPlan {
        let d = self.degree();
        let extra = usize::from(!self.unit_interval());
        let top = ceil_log2(d + 1).max(1);
        let mut best: Option<PolyEvalPlan> = None;
        for lb in 1..=top {
            let depth = rec_depth(d, lb) + extra;
            let baby = ((1usize << lb) - 1).min(d).saturating_sub(1);
            let giants = if d >= (1 << lb) {
                (lb..=floor_log2(d)).count()
            } else {
                0
            };
            let products = baby + giants + rec_products(d, lb);
            let cand = PolyEvalPlan {
                log_baby: lb,
                depth,
                products,
            };
            best = match best {
                Some(b) if (b.depth, b.products) <= (depth, products) => Some(b),
                _ => Some(cand),
            };
        }
        best.unwrap_or(PolyEvalPlan {
            log_baby: 1,
            depth: extra,
            products: 0,
        })
    }

    /// Levels [`Chebyshev::evaluate`] consumes.
    pub fn depth(&self) -> usize {
        self.plan().depth
    }

    /// Evaluates the polynomial on every slot of `ct` (values must lie in `[a, b]`); the
    /// result is at level `ct.level() - self.depth()` and at scale `target` exactly.
    /// Needs a relinearization key serving `ct`'s level.
    pub fn evaluate(
        &self,
        ev: &Evaluator,
        ct: &Ciphertext,
        target: Scale,
        rlk: &RelinKey,
    ) -> Result<Ciphertext> {
        self.evaluate_with(&WithRelin { ev, rlk }, ct, 1.0, target)
    }

    /// Levels [`Chebyshev::evaluate_with`] consumes for an input multiplier `mult`: the
    /// change of interval costs a level unless the interval is `[-1, 1]` and `mult` is 1.
    pub fn depth_with(&self, mult: f64) -> usize {
        let p = self.plan();
        p.depth + usize::from(self.unit_interval() && mult != 1.0)
    }

    /// [`Chebyshev::evaluate`] on any arithmetic implementing [`PolyArith`] (a real
    /// evaluator, or a stand-in that tracks levels and scales): evaluates the polynomial at
    /// `mult * ct` (the multiplier folds into the change of interval), landing at level
    /// `level(ct) - self.depth_with(mult)` and at scale `target` exactly.
    pub fn evaluate_with<A: PolyArith>(
        &self,
        ar: &A,
        ct: &A::Ct,
        mult: f64,
        target: Scale,
    ) -> std::result::Result<A::Ct, A::Error> {
        let d = self.degree();
        if d == 0 {
            return Err(CkksError::InvalidArgument(
                "a constant polynomial needs no evaluation".into(),
            )
            .into());
        }
        if !(mult.is_finite() && mult != 0.0) {
            return Err(CkksError::InvalidArgument(format!(
                "input multiplier {mult} must be finite and non-zero"
            ))
            .into());
        }
        let plan = self.plan();
        let depth = self.depth_with(mult);
        let level = ar.level(ct);
        if level < depth {
            return Err(CkksError::OutOfLevels.into());
        }
        let y = if self.unit_interval() && mult == 1.0 {
            ct.clone()
        } else {
            let alpha = 2.0 / (self.b - self.a) * mult;
            let beta = -(self.a + self.b) / (self.b - self.a);
            let q = scale_of(ar.prime(level)?)?;
            let mut y = ar.mul_const(ct, alpha, q)?;
            ar.rescale_assign(&mut y)?;
            if beta != 0.0 {
                ar.add_const_assign(&mut y, beta)?;
            }
            y
        };
        let lb = plan.log_baby;
        let basis = Basis::compute(ar, y, d, lb)?;
        let out_level = level - depth;
        let coeffs: Vec<f64> = self.coeffs.iter().take(d + 1).copied().collect();
        let ctx = RecCtx {
            ar,
            basis: &basis,
            lb,
        };
        match ctx.rec(&coeffs, target.value(), out_level)? {
            Term::Ct(c) => Ok(c),
            Term::Const(_) => {
                Err(CkksError::InvalidArgument("polynomial reduced to a constant".into()).into())
            }
        }
    }
}

/// The homomorphic arithmetic the polynomial evaluation needs, so that one implementation
/// serves the evaluator ([`Chebyshev::evaluate`]) and stand-ins that only track levels and
/// scales (a planner's simulation) or compute on plain slots.
pub trait PolyArith {
    /// A ciphertext.
    type Ct: Clone;
    /// The error type (CKKS errors convert into it).
    type Error: From<CkksError>;
    /// Level of `a`.
    fn level(&self, a: &Self::Ct) -> usize;
    /// Scale of `a`.
    fn scale(&self, a: &Self::Ct) -> Scale;
    /// The prime a rescale at `level` divides by.
    fn prime(&self, level: usize) -> std::result::Result<f64, Self::Error>;
    /// `a` with primes dropped down to `level` (scale unchanged).
    fn drop_level_to(
        &self,
        a: &Self::Ct,
        level: usize,
    ) -> std::result::Result<Self::Ct, Self::Error>;
    /// `a * b` relinearized, no rescale (same level).
    fn mul_relin(&self, a: &Self::Ct, b: &Self::Ct) -> std::result::Result<Self::Ct, Self::Error>;
    /// `a^2` relinearized, no rescale.
    fn square_relin(&self, a: &Self::Ct) -> std::result::Result<Self::Ct, Self::Error>;
    /// `a += b` (same level and scale).
    fn add_assign(&self, a: &mut Self::Ct, b: &Self::Ct) -> std::result::Result<(), Self::Error>;
    /// `a -= b` (same level and scale).
    fn sub_assign(&self, a: &mut Self::Ct, b: &Self::Ct) -> std::result::Result<(), Self::Error>;
    /// `a += c` in every slot.
    fn add_const_assign(&self, a: &mut Self::Ct, c: f64) -> std::result::Result<(), Self::Error>;
    /// `a * c` with the constant at `const_scale`, no rescale.
    fn mul_const(
        &self,
        a: &Self::Ct,
        c: f64,
        const_scale: Scale,
    ) -> std::result::Result<Self::Ct, Self::Error>;
    /// `acc += x * c` (constant at `const_scale`, `acc` at `x.scale * const_scale`).
    fn mul_const_add_assign(
        &self,
        acc: &mut Self::Ct,
        x: &Self::Ct,
        c: f64,
        const_scale: Scale,
    ) -> std::result::Result<(), Self::Error>;
    /// Divides by the last prime.
    fn rescale_assign(&self, a: &mut Self::Ct) -> std::result::Result<(), Self::Error>;
    /// The factor a product's scale carries on top of the product of its operands' scales:
    /// 1 for a product of ciphertexts, 4 for the pair products of two real values per
    /// complex slot (`Evaluator::mul_pair_relin`).
    fn product_scale_factor(&self) -> f64 {
        1.0
    }
    /// `a = 2 a` (no scale change).
    fn double_assign(&self, a: &mut Self::Ct) -> std::result::Result<(), Self::Error> {
        let t = a.clone();
        self.add_assign(a, &t)
    }
}

/// The evaluator with a relinearization key, as [`PolyArith`].
struct WithRelin<'a> {
    ev: &'a Evaluator,
    rlk: &'a RelinKey,
}

impl PolyArith for WithRelin<'_> {
    type Ct = Ciphertext;
    type Error = CkksError;
    fn level(&self, a: &Ciphertext) -> usize {
        a.level().0
    }
    fn scale(&self, a: &Ciphertext) -> Scale {
        a.scale()
    }
    fn prime(&self, level: usize) -> Result<f64> {
        self.ev
            .params()
            .q()
            .get(level)
            .map(|&q| q as f64)
            .ok_or(CkksError::OutOfLevels)
    }
    fn drop_level_to(&self, a: &Ciphertext, level: usize) -> Result<Ciphertext> {
        self.ev.drop_level_to(a, Level(level))
    }
    fn mul_relin(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.ev.mul_relin(a, b, self.rlk)
    }
    fn square_relin(&self, a: &Ciphertext) -> Result<Ciphertext> {
        self.ev.square_relin(a, self.rlk)
    }
    fn add_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        self.ev.add_assign(a, b)
    }
    fn sub_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        self.ev.sub_assign(a, b)
    }
    fn add_const_assign(&self, a: &mut Ciphertext, c: f64) -> Result<()> {
        self.ev.add_const_assign(a, c)
    }
    fn mul_const(&self, a: &Ciphertext, c: f64, const_scale: Scale) -> Result<Ciphertext> {
        self.ev.mul_const(a, c, const_scale)
    }
    fn mul_const_add_assign(
        &self,
        acc: &mut Ciphertext,
        x: &Ciphertext,
        c: f64,
        const_scale: Scale,
    ) -> Result<()> {
        self.ev.mul_const_add_assign(acc, x, c, const_scale)
    }
    fn rescale_assign(&self, a: &mut Ciphertext) -> Result<()> {
        self.ev.rescale_assign(a)
    }
    fn double_assign(&self, a: &mut Ciphertext) -> Result<()> {
        self.ev.mul_int_assign(a, 2)
    }
}

/// The Chebyshev basis `T_i(y)` a plan needs.
struct Basis<C> {
    t: BTreeMap<usize, C>,
}

impl<C: Clone> Basis<C> {
    fn compute<A: PolyArith<Ct = C>>(
        ar: &A,
        y: C,
        d: usize,
        lb: u32,
    ) -> std::result::Result<Self, A::Error> {
        let mut t = BTreeMap::new();
        t.insert(1usize, y);
        let baby_max = ((1usize << lb) - 1).min(d);
        let mut wanted: Vec<usize> = (2..=baby_max).collect();
        if d >= (1 << lb) {
            wanted.extend((lb..=floor_log2(d)).map(|k| 1usize << k));
        }
        let mut b = Self { t };
        for i in wanted {
            if !b.t.contains_key(&i) {
                let ti = b.make(ar, i)?;
                b.t.insert(i, ti);
            }
        }
        Ok(b)
    }

    fn get(&self, i: usize) -> Result<&C> {
        self.t
            .get(&i)
            .ok_or_else(|| CkksError::InvalidArgument(format!("Chebyshev basis lacks T_{i}")))
    }

    /// `T_i` from lower terms (computing the missing ones first).
    fn make<A: PolyArith<Ct = C>>(&mut self, ar: &A, i: usize) -> std::result::Result<C, A::Error> {
        let j = 1usize << floor_log2(i);
        let (a, b, sub) = if i == j {
            (i / 2, i / 2, 0)
        } else {
            (j, i - j, 2 * j - i)
        };
        for k in [a, b, sub] {
            if k >= 2 && !self.t.contains_key(&k) {
                let tk = self.make(ar, k)?;
                self.t.insert(k, tk);
            }
        }
        let (ta, tb) = (self.get(a)?, self.get(b)?);
        let lvl = ar.level(ta).min(ar.level(tb));
        let mut p = if a == b {
            let ta = ar.drop_level_to(ta, lvl)?;
            ar.square_relin(&ta)?
        } else {
            ar.mul_relin(&ar.drop_level_to(ta, lvl)?, &ar.drop_level_to(tb, lvl)?)?
        };
        ar.double_assign(&mut p)?;
        if sub == 0 {
            ar.add_const_assign(&mut p, -1.0)?;
        } else {
            let ts = ar.drop_level_to(self.get(sub)?, lvl)?;
            let cs = Scale::new(ar.scale(&p).value() / ar.scale(&ts).value())
                .ok_or(CkksError::InvalidArgument("scale below 1".into()))?;
            let ts = ar.mul_const(&ts, 1.0, cs)?;
            ar.sub_assign(&mut p, &ts)?;
        }
        ar.rescale_assign(&mut p)?;
        Ok(p)
    }
}

struct RecCtx<'a, A: PolyArith> {
    ar: &'a A,
    basis: &'a Basis<A::Ct>,
    lb: u32,
}

/// Result of a recursive evaluation: a ciphertext, or a constant when all non-constant
/// coefficients vanish.
enum Term<C> {
    Const(f64),
    Ct(C),
}

impl<A: PolyArith> RecCtx<'_, A> {
    /// `T_i` at `level`, or an error naming the shortfall.
    fn at(&self, i: usize, level: usize) -> std::result::Result<A::Ct, A::Error> {
        let t = self.basis.get(i)?;
        let l = self.ar.level(t);
        if l < level {
            return Err(CkksError::LevelMismatch {
                lhs: Level(l),
                rhs: Level(level),
            }
            .into());
        }
        self.ar.drop_level_to(t, level)
    }

    /// Evaluates `sum c_i T_i` to exactly `scale` at `level`.
    fn rec(
        &self,
        c: &[f64],
        scale: f64,
        level: usize,
    ) -> std::result::Result<Term<A::Ct>, A::Error> {
        let Some(e) = effective_degree(c) else {
            return Ok(Term::Const(0.0));
        };
        let c = c.get(..=e).unwrap_or(c);
        if e == 0 {
            return Ok(Term::Const(c.first().copied().unwrap_or(0.0)));
        }
        if e < (1 << self.lb) {
            return self.leaf(c, scale, level);
        }
        let n = 1usize << floor_log2(e);
        let (q, r) = split(c, n);
        let tn = self.at(n, level + 1)?;
        // the scale q must land at for `q T_n` to be at `scale * q_(l+1)` (a product of
        // ciphertexts may carry a factor of its own; a constant product does not)
        let qs = scale * self.ar.prime(level + 1)? / self.ar.scale(&tn).value();
        let mut prod = match self.rec(&q, qs / self.ar.product_scale_factor(), level + 1)? {
            Term::Const(v) => self.ar.mul_const(&tn, v, scale_of(qs)?)?,
            Term::Ct(qc) => self.ar.mul_relin(&qc, &tn)?,
        };
        self.ar.rescale_assign(&mut prod)?;
        match self.rec(&r, scale, level)? {
            Term::Const(v) => {
                if v != 0.0 {
                    self.ar.add_const_assign(&mut prod, v)?;
                }
            }
            Term::Ct(rc) => self.ar.add_assign(&mut prod, &rc)?,
        }
        Ok(Term::Ct(prod))
    }

    fn leaf(
        &self,
        c: &[f64],
        scale: f64,
        level: usize,
    ) -> std::result::Result<Term<A::Ct>, A::Error> {
        let qn = self.ar.prime(level + 1)?;
        let mut acc: Option<A::Ct> = None;
        for (i, &ci) in c.iter().enumerate().skip(1) {
            if ci == 0.0 {
                continue;
            }
            let t = self.at(i, level + 1)?;
            let cs = scale_of(scale * qn / self.ar.scale(&t).value())?;
            match acc.as_mut() {
                None => acc = Some(self.ar.mul_const(&t, ci, cs)?),
                Some(a) => self.ar.mul_const_add_assign(a, &t, ci, cs)?,
            }
        }
        let c0 = c.first().copied().unwrap_or(0.0);
        match acc {
            None => Ok(Term::Const(c0)),
            Some(mut a) => {
                self.ar.rescale_assign(&mut a)?;
                if c0 != 0.0 {
                    self.ar.add_const_assign(&mut a, c0)?;
                }
                Ok(Term::Ct(a))
            }
        }
    }
}

fn scale_of(v: f64) -> Result<Scale> {
    Scale::new(v).ok_or_else(|| {
        CkksError::InvalidArgument(format!(
            "constant scale {v} below 1: the target scale is too small for these primes"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_is_accurate() {
        let p = Chebyshev::interpolate(f64::exp, -2.0, 3.0, 20).unwrap();
        assert!(p.max_error(f64::exp, 1000) < 1e-12);
    }

    #[test]
    fn split_is_exact() {
        let c = vec![0.3, -1.0, 0.5, 0.25, 2.0, -0.75, 0.125];
        let p = Chebyshev::new(-1.0, 1.0, c.clone()).unwrap();
        let (q, r) = split(&c, 4);
        let (pq, pr) = (
            Chebyshev::new(-1.0, 1.0, q).unwrap(),
            Chebyshev::new(-1.0, 1.0, r).unwrap(),
        );
        let t4 = Chebyshev::new(-1.0, 1.0, vec![0.0, 0.0, 0.0, 0.0, 1.0]).unwrap();
        for i in 0..50 {
            let x = -1.0 + 2.0 * i as f64 / 49.0;
            let want = p.eval(x);
            let got = pq.eval(x) * t4.eval(x) + pr.eval(x);
            assert!((want - got).abs() < 1e-12, "{want} {got}");
        }
    }

    #[test]
    fn plans_are_level_optimal_for_common_degrees() {
        for (d, depth) in [
            (1, 1),
            (2, 2),
            (3, 2),
            (7, 3),
            (15, 4),
            (30, 5),
            (31, 5),
            (60, 6),
        ] {
            let p = Chebyshev::new(-1.0, 1.0, vec![1.0; d + 1]).unwrap();
            assert_eq!(p.plan().depth, depth, "degree {d}: {:?}", p.plan());
        }
        let p = Chebyshev::new(0.0, 1.0, vec![1.0; 8]).unwrap();
        assert_eq!(p.plan().depth, 4);
    }
}
