//! Element-wise layer code shared by every layout: each output ciphertext is computed from
//! the ciphertexts at the same position of the inputs (residual additions with level and
//! scale alignment, products and squares, polynomials by powers, constants folded into the
//! multiplier where they can be). A layout says only how a constant tensor maps onto its
//! ciphertexts ([`CtConst`] per output ciphertext).

use std::borrow::Cow;

use rayon::prelude::*;

use super::{LayoutKind, View, unsupported};
use henn_ckks::Scale;
use henn_ckks::circuits::{Chebyshev, PolyArith};

use crate::backend::Backend;
use crate::error::{ExecError, NnError, Result};
use crate::ir::{BatchNorm, Node, Op};
use crate::tensor::Tensor;

/// An element-wise op.
#[derive(Debug, Clone)]
pub enum Elementwise<'a> {
    /// Copy (also a reshape, which moves no slot in any layout).
    Identity,
    /// Sum of two values of one shape.
    Add,
    /// Product of two values of one shape (a square when both are the same value).
    Mul {
        /// Both operands are the same value.
        square: bool,
    },
    /// Adds a constant broadcast to the input.
    AddConst(&'a Tensor),
    /// Multiplies by a constant broadcast to the input.
    MulConst(&'a Tensor),
    /// Per-channel affine map (inference batch norm over axis 1).
    Affine(&'a BatchNorm),
    /// `sum_k c_k x^k`, lowest degree first.
    Polynomial(Cow<'a, [f64]>),
    /// A Chebyshev series on an interval ([`Op::Chebyshev`]).
    Chebyshev(Box<Chebyshev>),
}

impl<'a> Elementwise<'a> {
    /// The element-wise form of `node`'s op, `None` for ops that are not element-wise.
    pub fn of(node: &'a Node) -> Option<Self> {
        Some(match &node.op {
            Op::Identity | Op::Reshape { .. } => Elementwise::Identity,
            Op::Add => Elementwise::Add,
            Op::Mul => Elementwise::Mul {
                square: node.inputs.first() == node.inputs.get(1),
            },
            Op::AddConst(t) => Elementwise::AddConst(t),
            Op::MulConst(t) => Elementwise::MulConst(t),
            Op::BatchNorm(bn) => Elementwise::Affine(bn),
            Op::Pow { exponent } => {
                let mut c = vec![0.0; *exponent as usize + 1];
                if let Some(l) = c.last_mut() {
                    *l = 1.0;
                }
                Elementwise::Polynomial(Cow::Owned(c))
            }
            Op::Polynomial { coeffs } => Elementwise::Polynomial(Cow::Borrowed(coeffs)),
            Op::Chebyshev { lo, hi, coeffs } => {
                Elementwise::Chebyshev(Box::new(Chebyshev::new(*lo, *hi, coeffs.clone()).ok()?))
            }
            Op::Conv2d(_)
            | Op::Linear(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool
            | Op::ReduceSum { .. }
            | Op::Activation(_) => return None,
        })
    }
}

/// A constant as it applies to one ciphertext.
#[derive(Debug, Clone, PartialEq)]
pub enum CtConst {
    /// The same value in every slot that holds an element.
    Scalar(f64),
    /// A slot vector (a constant that varies within the ciphertext).
    Slots(Vec<f64>),
}

/// How a layout maps a constant tensor onto the ciphertexts `flats` of a value of `shape`.
pub trait ConstPlacer: Sync {
    /// The layout (for error messages).
    fn layout(&self) -> LayoutKind;
    /// One [`CtConst`] per entry of `flats`.
    fn place(&self, t: &Tensor, shape: &[usize], flats: &[usize]) -> Result<Vec<CtConst>>;
}

/// `t` broadcast to `shape`, flat.
pub fn full_constant(shape: &[usize], t: &Tensor) -> Result<Vec<f64>> {
    Ok(Tensor::zeros(shape.to_vec())
        .broadcast_with(t, |_, c| c)?
        .into_data())
}

pub(crate) fn par_map<C: Send>(
    n: usize,
    f: impl Fn(usize) -> Result<C> + Sync + Send,
) -> Result<Vec<C>> {
    (0..n).into_par_iter().map(f).collect()
}

/// Per-channel `(scale, shift)` of a batch norm as tensors broadcastable to `shape` (the
/// channel on axis 1).
fn affine_tensors(bn: &BatchNorm, shape: &[usize]) -> Result<(Tensor, Tensor)> {
    let (s, t) = bn.affine();
    let mut ts = vec![1usize; shape.len().max(2)];
    ts[1] = s.len();
    Ok((Tensor::new(ts.clone(), s)?, Tensor::new(ts, t)?))
}

/// Evaluates element-wise `op` at ciphertexts `flats` of its inputs (output `i` reads
/// ciphertext `flats[i]` of every input); returns the outputs and their multiplier.
pub fn eval<B: Backend>(
    b: &B,
    node: &Node,
    op: &Elementwise<'_>,
    inputs: &[View<'_, B::Ct>],
    flats: &[usize],
    consts: &dyn ConstPlacer,
) -> Result<(Vec<B::Ct>, f64)> {
    let x = *inputs
        .first()
        .ok_or_else(|| NnError::InvalidGraph(format!("node '{}' has no input", node.name)))?;
    let second = |what: &str| -> Result<View<'_, B::Ct>> {
        let y = *inputs
            .get(1)
            .ok_or_else(|| NnError::InvalidGraph(format!("{what} needs two inputs")))?;
        if x.shape != y.shape {
            return Err(unsupported(
                node,
                consts.layout(),
                format!("broadcasting {what} between computed values"),
            ));
        }
        Ok(y)
    };
    let at = |i: usize| x.src.at(flats[i]);
    Ok(match op {
        Elementwise::Identity => (
            flats
                .iter()
                .map(|&f| x.src.at(f).cloned())
                .collect::<Result<_>>()?,
            x.mult,
        ),
        Elementwise::Add => {
            let y = second("Add")?;
            let pairs: Vec<(B::Ct, f64)> = par_map(flats.len(), |i| {
                add_aligned(b, at(i)?, x.mult, y.src.at(flats[i])?, y.mult)
            })?;
            let mult = pairs.first().map_or(x.mult, |p| p.1);
            (pairs.into_iter().map(|p| p.0).collect(), mult)
        }
        Elementwise::Mul { square: true } => (
            par_map(flats.len(), |i| b.square_rescale(at(i)?))?,
            x.mult * x.mult,
        ),
        Elementwise::Mul { square: false } => {
            let y = second("Mul")?;
            let cts = par_map(flats.len(), |i| b.mul_rescale(at(i)?, y.src.at(flats[i])?))?;
            (cts, x.mult * y.mult)
        }
        Elementwise::AddConst(t) => {
            let c = consts.place(t, x.shape, flats)?;
            (add_consts(b, node, consts.layout(), x, flats, &c)?, x.mult)
        }
        Elementwise::MulConst(t) => match t.as_uniform() {
            Some(c) if c != 0.0 => (
                flats
                    .iter()
                    .map(|&f| x.src.at(f).cloned())
                    .collect::<Result<_>>()?,
                x.mult * c,
            ),
            _ => {
                let c = consts.place(t, x.shape, flats)?;
                (mul_consts(b, x, flats, &c, 1.0)?, x.mult)
            }
        },
        Elementwise::Affine(bn) => {
            let (s, t) = affine_tensors(bn, x.shape)?;
            let sc = consts.place(&s, x.shape, flats)?;
            let tc = consts.place(&t, x.shape, flats)?;
            let scaled = mul_consts(b, x, flats, &sc, x.mult)?;
            let ys: Vec<usize> = (0..flats.len()).collect();
            let v = View {
                shape: x.shape,
                mult: 1.0,
                src: &scaled,
            };
            (add_consts(b, node, consts.layout(), v, &ys, &tc)?, 1.0)
        }
        Elementwise::Polynomial(coeffs) => polynomial_at(b, x, flats, coeffs)?,
        Elementwise::Chebyshev(p) => chebyshev_at(b, x, flats, p)?,
    })
}

/// `x + c / x.mult` per ciphertext (the multiplier stays); a constant that varies within a
/// ciphertext is refused.
fn add_consts<B: Backend>(
    b: &B,
    node: &Node,
    layout: LayoutKind,
    x: View<'_, B::Ct>,
    flats: &[usize],
    c: &[CtConst],
) -> Result<Vec<B::Ct>> {
    if x.mult == 0.0 {
        return Err(
            ExecError::Multiplier("cannot add a constant to a value with multiplier 0").into(),
        );
    }
    let m = x.mult;
    par_map(flats.len(), |i| {
        let mut r = x.src.at(flats[i])?.clone();
        match c.get(i) {
            Some(CtConst::Scalar(v)) => {
                if *v != 0.0 {
                    b.add_const_assign(&mut r, v / m)?;
                }
            }
            _ => {
                return Err(unsupported(
                    node,
                    layout,
                    "a constant that varies within a ciphertext (a channel) cannot be added",
                ));
            }
        }
        Ok(r)
    })
}

/// `x * (c m)` per ciphertext, rescaled (scalar constants by a constant product, slot
/// vectors by a plaintext product).
fn mul_consts<B: Backend>(
    b: &B,
    x: View<'_, B::Ct>,
    flats: &[usize],
    c: &[CtConst],
    m: f64,
) -> Result<Vec<B::Ct>> {
    par_map(flats.len(), |i| {
        let xi = x.src.at(flats[i])?;
        match c.get(i) {
            Some(CtConst::Scalar(v)) => b.mul_const_rescale(xi, v * m),
            Some(CtConst::Slots(v)) => {
                let v: Vec<f64> = v.iter().map(|a| a * m).collect();
                b.mul_slots_rescale(xi, &v)
            }
            None => Err(ExecError::Internal("constant missing for a ciphertext".into()).into()),
        }
    })
}

/// `x * mx + y * my` as one ciphertext and multiplier, aligning levels and scales (the
/// operand at the higher level pays for the alignment, with the multiplier ratio folded in).
pub fn add_aligned<B: Backend>(
    b: &B,
    x: &B::Ct,
    mx: f64,
    y: &B::Ct,
    my: f64,
) -> Result<(B::Ct, f64)> {
    let (hi, mh, lo, ml) = if b.level(x) >= b.level(y) {
        (x, mx, y, my)
    } else {
        (y, my, x, mx)
    };
    let (lh, ll) = (b.level(hi), b.level(lo));
    let ratio = mh / ml;
    let same = (ratio - 1.0).abs() < 1e-12;
    if lh > ll {
        let h = if same {
            b.align_to(hi, ll, b.scale(lo))?
        } else {
            b.mul_const_rescale_to(hi, ratio, ll, b.scale(lo))?
        };
        let mut r = lo.clone();
        b.add_assign(&mut r, &h)?;
        return Ok((r, ml));
    }
    if same && b.scale(hi).matches(b.scale(lo)) {
        let mut r = lo.clone();
        b.add_assign(&mut r, hi)?;
        return Ok((r, ml));
    }
    if ll == 0 {
        return Err(ExecError::OutOfLevels("aligning the operands of an addition").into());
    }
    let h = b.mul_const_rescale_to(hi, ratio, ll - 1, b.scale(lo))?;
    let mut r = lo.clone();
    b.drop_level_to_assign(&mut r, ll - 1)?;
    b.add_assign(&mut r, &h)?;
    Ok((r, ml))
}

/// Powers `x^k` needed for the nonzero coefficients of `f` (index = exponent).
pub(crate) fn powers<B: Backend>(b: &B, x: &B::Ct, f: &[f64]) -> Result<Vec<Option<B::Ct>>> {
    let d = f.len().saturating_sub(1);
    let mut need = vec![false; d + 1];
    for (k, &c) in f.iter().enumerate().skip(1) {
        need[k] = c != 0.0;
    }
    let split = |k: usize| -> (usize, usize) {
        if k.is_power_of_two() {
            (k / 2, k / 2)
        } else {
            let hi = 1usize << (usize::BITS - 1 - k.leading_zeros());
            (hi, k - hi)
        }
    };
    for k in (2..=d).rev() {
        if need[k] {
            let (a, c) = split(k);
            need[a] = true;
            need[c] = true;
        }
    }
    let mut p: Vec<Option<B::Ct>> = vec![None; d + 1];
    if d >= 1 {
        p[1] = Some(x.clone());
    }
    for k in 2..=d {
        if !need[k] {
            continue;
        }
        let (a, c) = split(k);
        let v = match (&p[a], &p[c]) {
            (Some(pa), Some(pc)) => {
                if a == c {
                    b.square_rescale(pa)?
                } else {
                    b.mul_rescale(pa, pc)?
                }
            }
            _ => {
                return Err(ExecError::Internal(format!("power x^{k} missing its factors")).into());
            }
        };
        p[k] = Some(v);
    }
    Ok(p)
}

/// Evaluates `sum_k f_k x^k` with `f_d = 1` (leading coefficient already factored out):
/// powers by repeated squaring and products, every lower term multiplied by its coefficient
/// during its alignment to the top term's level and scale (no extra level).
fn poly_eval<B: Backend>(b: &B, x: &B::Ct, f: &[f64]) -> Result<B::Ct> {
    let p = powers(b, x, f)?;
    let terms: Vec<(usize, f64, &B::Ct)> = f
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, c)| **c != 0.0)
        .filter_map(|(k, &c)| p.get(k).and_then(Option::as_ref).map(|ct| (k, c, ct)))
        .collect();
    let unit = |c: f64| c == 1.0 || c == -1.0;
    let top = terms
        .last()
        .ok_or_else(|| ExecError::Internal("polynomial without terms".into()))?;
    let mut level = terms
        .iter()
        .map(|(_, c, ct)| b.level(ct).saturating_sub(usize::from(!unit(*c))))
        .min()
        .unwrap_or(0);
    let mut scale = if b.level(top.2) == level {
        b.scale(top.2)
    } else {
        b.scale(x)
    };
    // terms already at the target level must be usable as they are
    let ok = terms
        .iter()
        .all(|(_, c, ct)| b.level(ct) > level || (unit(*c) && b.scale(ct).matches(scale)));
    if !ok {
        level = level
            .checked_sub(1)
            .ok_or(ExecError::OutOfLevels("in a polynomial"))?;
        scale = b.scale(x);
    }
    let mut acc: Option<B::Ct> = None;
    for (_, c, ct) in terms {
        let t = if b.level(ct) == level {
            let mut t = ct.clone();
            if c < 0.0 {
                b.neg_assign(&mut t)?;
            }
            t
        } else {
            b.mul_const_rescale_to(ct, c, level, scale)?
        };
        match acc.as_mut() {
            None => acc = Some(t),
            Some(a) => b.add_assign(a, &t)?,
        }
    }
    let mut acc = acc.ok_or_else(|| ExecError::Internal("polynomial without terms".into()))?;
    if let Some(&c0) = f.first()
        && c0 != 0.0
    {
        b.add_const_assign(&mut acc, c0)?;
    }
    Ok(acc)
}

/// A polynomial `sum_k c_k t^k` at the ciphertexts `flats` of a value `t = m s`:
/// coefficients in the stored domain are `c_k m^k`; the leading one is factored out into the
/// output multiplier. Returns the outputs and multiplier.
pub fn polynomial_at<B: Backend>(
    b: &B,
    x: View<'_, B::Ct>,
    flats: &[usize],
    coeffs: &[f64],
) -> Result<(Vec<B::Ct>, f64)> {
    let m = x.mult;
    let e: Vec<f64> = coeffs
        .iter()
        .enumerate()
        .map(|(k, &c)| c * m.powi(k as i32))
        .collect();
    let d = e.iter().rposition(|&c| c != 0.0).unwrap_or(0);
    if d == 0 {
        let c0 = e.first().copied().unwrap_or(0.0);
        let cts = par_map(flats.len(), |i| {
            let mut z = b.mul_const_rescale(x.src.at(flats[i])?, 0.0)?;
            b.add_const_assign(&mut z, c0)?;
            Ok(z)
        })?;
        return Ok((cts, 1.0));
    }
    let a = e[d];
    let f: Vec<f64> = e[..=d].iter().map(|&c| c / a).collect();
    let cts = par_map(flats.len(), |i| poly_eval(b, x.src.at(flats[i])?, &f))?;
    Ok((cts, a))
}

/// A [`Backend`] as the arithmetic of the Chebyshev circuit ([`Chebyshev::evaluate_with`]),
/// so that the one implementation in henn-ckks runs on every backend.
struct Arith<'b, B>(&'b B);

impl<B: Backend> PolyArith for Arith<'_, B> {
    type Ct = B::Ct;
    type Error = NnError;
    fn level(&self, a: &B::Ct) -> usize {
        self.0.level(a)
    }
    fn scale(&self, a: &B::Ct) -> Scale {
        self.0.scale(a)
    }
    fn prime(&self, level: usize) -> Result<f64> {
        self.0.prime(level)
    }
    fn product_scale_factor(&self) -> f64 {
        self.0.product_scale_factor()
    }
    fn drop_level_to(&self, a: &B::Ct, level: usize) -> Result<B::Ct> {
        let mut r = a.clone();
        if self.0.level(a) > level {
            self.0.drop_level_to_assign(&mut r, level)?;
        }
        Ok(r)
    }
    fn mul_relin(&self, a: &B::Ct, b: &B::Ct) -> Result<B::Ct> {
        self.0.mul_relin(a, b)
    }
    fn square_relin(&self, a: &B::Ct) -> Result<B::Ct> {
        self.0.square_relin(a)
    }
    fn add_assign(&self, a: &mut B::Ct, b: &B::Ct) -> Result<()> {
        self.0.add_assign(a, b)
    }
    fn sub_assign(&self, a: &mut B::Ct, b: &B::Ct) -> Result<()> {
        self.0.sub_assign(a, b)
    }
    fn add_const_assign(&self, a: &mut B::Ct, c: f64) -> Result<()> {
        self.0.add_const_assign(a, c)
    }
    fn mul_const(&self, a: &B::Ct, c: f64, const_scale: Scale) -> Result<B::Ct> {
        let mut r = a.clone();
        self.0.mul_const_assign(&mut r, c, const_scale)?;
        Ok(r)
    }
    fn mul_const_add_assign(
        &self,
        acc: &mut B::Ct,
        x: &B::Ct,
        c: f64,
        const_scale: Scale,
    ) -> Result<()> {
        self.0.mul_const_add_assign(acc, x, c, const_scale)
    }
    fn rescale_assign(&self, a: &mut B::Ct) -> Result<()> {
        self.0.rescale_assign(a)
    }
}

/// A Chebyshev series at the ciphertexts `flats` of a value `x = m s`: the multiplier folds
/// into the change of interval (one level, none when the interval is `[-1, 1]` and `m = 1`),
/// then the baby-step giant-step circuit of henn-ckks; the outputs land at the input's scale
/// with multiplier 1.
pub fn chebyshev_at<B: Backend>(
    b: &B,
    x: View<'_, B::Ct>,
    flats: &[usize],
    p: &Chebyshev,
) -> Result<(Vec<B::Ct>, f64)> {
    let ar = Arith(b);
    let cts = par_map(flats.len(), |i| {
        let ct = x.src.at(flats[i])?;
        if b.level(ct) < p.depth_with(x.mult) {
            return Err(ExecError::OutOfLevels("in a Chebyshev polynomial").into());
        }
        p.evaluate_with(&ar, ct, x.mult, b.scale(ct))
    })?;
    Ok((cts, 1.0))
}
