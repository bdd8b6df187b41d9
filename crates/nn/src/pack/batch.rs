//! Batch-axis packing: slot `i` holds image `i` (up to N/2 images), one ciphertext per tensor
//! element (pixel x channel), weights are scalar constants multiplied in without plaintext
//! encoding. No rotations are needed. With one image this is per-pixel encryption.
//!
//! Linear layers are sums `sum_i w_i x_i` accumulated at scale `Δ q_l` and rescaled once per
//! output. Each packed tensor carries a plaintext multiplier ([`Packed::mult`]) so that average
//! pooling's `1/k^2`, scalar `Mul`s and activation leading coefficients cost no level: they are
//! folded into the next linear layer's weights.

use rayon::prelude::*;

use std::ops::Range;

use super::{CtSource, Layout, Packed, View, row_flats};
use crate::error::{NnError, Result};
use crate::exec::Backend;
use crate::ir::{Activation, AvgPool, Conv2d, Graph, Linear, Node, Op};
use crate::tensor::{Tensor, numel, strides};
use henn_ckks::Scale;

/// The batch-axis layout.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchLayout;

const LAYOUT: &str = "batch";

fn unsupported(node: &Node, hint: impl Into<String>) -> NnError {
    NnError::UnsupportedForLayout {
        node: node.name.clone(),
        op: node.op.kind().to_string(),
        layout: LAYOUT.into(),
        hint: hint.into(),
    }
}

/// Checks that every node of `graph` is supported by the batch layout (before any work).
pub fn check_supported(graph: &Graph) -> Result<()> {
    for node in graph.nodes() {
        match &node.op {
            Op::Activation(a) => {
                let hint = match a {
                    Activation::Relu => {
                        "ReLU is not a polynomial: retrain with a polynomial activation (square, swish2) or approximate it with a polynomial first"
                    }
                    _ => {
                        "non-polynomial activation: replace it with a polynomial approximation first"
                    }
                };
                return Err(unsupported(node, hint));
            }
            Op::Add | Op::Mul => {
                let (a, b) = (graph.shape(node.inputs[0]), graph.shape(node.inputs[1]));
                if a != b {
                    return Err(unsupported(
                        node,
                        format!(
                            "element-wise op on different shapes {a:?} and {b:?} (broadcasting between computed values) is not supported"
                        ),
                    ));
                }
            }
            Op::Linear(_) => {
                let s = graph.shape(node.inputs[0]);
                let rows: usize = s.iter().take(s.len().saturating_sub(1)).product();
                if rows != 1 {
                    return Err(unsupported(
                        node,
                        format!(
                            "Linear over an input of shape {s:?}: flatten to [1, features] first"
                        ),
                    ));
                }
            }
            Op::Conv2d(_) | Op::AvgPool(_) | Op::GlobalAvgPool
                if graph.shape(node.inputs[0]).len() != 4 =>
            {
                return Err(unsupported(node, "expects an NCHW input"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Slot vectors of the batch-packed input: element `p` of the image tensor across `images`
/// (slot `i` = image `i`).
pub fn pack_inputs(images: &[Tensor]) -> Result<Vec<Vec<f64>>> {
    let Some(first) = images.first() else {
        return Err(NnError::Exec("no input images".into()));
    };
    let n = first.len();
    if let Some(bad) = images.iter().find(|t| t.len() != n) {
        return Err(NnError::Exec(format!(
            "input sizes differ: {} vs {}",
            n,
            bad.len()
        )));
    }
    Ok((0..n)
        .map(|p| images.iter().map(|t| t.data()[p]).collect())
        .collect())
}

/// Unpacks decrypted output slot vectors (`out[j][i]` = element `j` for image `i`) into one
/// output vector per image, applying the multiplier.
pub fn unpack_outputs(decoded: &[Vec<f64>], mult: f64, images: usize) -> Vec<Vec<f64>> {
    (0..images)
        .map(|i| {
            decoded
                .iter()
                .map(|v| mult * v.get(i).copied().unwrap_or(0.0))
                .collect()
        })
        .collect()
}

fn par_map<B: Backend>(
    n: usize,
    f: impl Fn(usize) -> Result<B::Ct> + Sync + Send,
) -> Result<Vec<B::Ct>> {
    (0..n).into_par_iter().map(f).collect()
}

fn sum_cts<B: Backend>(b: &B, xs: &dyn CtSource<B::Ct>, idx: &[usize]) -> Result<B::Ct> {
    let (&first, rest) = idx
        .split_first()
        .ok_or_else(|| NnError::Exec("empty sum".into()))?;
    let mut acc = xs.at(first)?.clone();
    for &i in rest {
        b.add_assign(&mut acc, xs.at(i)?)?;
    }
    Ok(acc)
}

/// The constant scale of a linear layer on `x0` and whether it rescales: rescale-neutral
/// (the prime at the level), or at level 0 a reduced scale without rescale when the base prime
/// has room (see `Backend::level0_const_scale`).
fn linear_scale<B: Backend>(b: &B, x0: &B::Ct) -> Result<(Scale, bool)> {
    Ok(match b.level0_const_scale(x0)? {
        Some(s) => (s, false),
        None => (b.neutral_scale(x0)?, true),
    })
}

/// `out[o] = sum_k w[o K + k] inputs[k] + bias[o]` for every `o`, one rescale each.
fn linear_outputs<B: Backend>(
    b: &B,
    inputs: &[&B::Ct],
    w: &[f64],
    bias: &[f64],
) -> Result<Vec<B::Ct>> {
    let x0 = *inputs
        .first()
        .ok_or_else(|| NnError::Exec("linear layer without inputs".into()))?;
    let (cs, rescale) = linear_scale(b, x0)?;
    let mut outs = b.mul_const_matrix(inputs, w, bias.len(), cs)?;
    outs.par_iter_mut()
        .zip(bias)
        .try_for_each(|(acc, &bv)| -> Result<()> {
            if rescale {
                b.rescale_assign(acc)?;
            }
            if bv != 0.0 {
                b.add_const_assign(acc, bv)?;
            }
            Ok(())
        })?;
    Ok(outs)
}

/// The taps of a windowed op (convolution, pooling) at output pixel `[oy, ox]` that fall
/// inside the `[h, w]` input: `(ky, kx, iy, ix)` in kernel order, padding skipped (`pads`
/// begins with the top and left padding).
fn window_taps(
    [oy, ox]: [usize; 2],
    stride: [usize; 2],
    pads: &[usize],
    [kh, kw]: [usize; 2],
    [h, w]: [usize; 2],
) -> Vec<(usize, usize, usize, usize)> {
    let (top, left) = (
        pads.first().copied().unwrap_or(0),
        pads.get(1).copied().unwrap_or(0),
    );
    let mut v = Vec::with_capacity(kh * kw);
    for ky in 0..kh {
        let iy = (oy * stride[0] + ky) as isize - top as isize;
        if iy < 0 || iy >= h as isize {
            continue;
        }
        for kx in 0..kw {
            let ix = (ox * stride[1] + kx) as isize - left as isize;
            if ix >= 0 && ix < w as isize {
                v.push((ky, kx, iy as usize, ix as usize));
            }
        }
    }
    v
}

/// Convolution outputs at output pixels `pixels` (flat `oy * OW + ox`): per pixel, all
/// output channels at once (they share the input window, one pass of the matrix kernel).
fn conv_pixels<B: Backend>(
    b: &B,
    c: &Conv2d,
    x: View<'_, B::Ct>,
    out_shape: &[usize],
    pixels: Range<usize>,
) -> Result<Vec<Vec<B::Ct>>> {
    let (ci, h, w) = (x.shape[1], x.shape[2], x.shape[3]);
    let ws = c.weight.shape();
    let (co, kh, kw) = (ws[0], ws[2], ws[3]);
    let ow = out_shape[3];
    let wd = c.weight.data();
    let m = x.mult;
    let bias: Vec<f64> = (0..co)
        .map(|o| c.bias.as_ref().map_or(0.0, |bb| bb[o]))
        .collect();
    pixels
        .into_par_iter()
        .map(|p| {
            let (oy, ox) = (p / ow, p % ow);
            let win = window_taps([oy, ox], c.stride, &c.pads, [kh, kw], [h, w]);
            let mut inputs = Vec::with_capacity(ci * win.len());
            let mut taps = Vec::with_capacity(ci * win.len());
            for i in 0..ci {
                for &(ky, kx, iy, ix) in &win {
                    inputs.push(x.src.at((i * h + iy) * w + ix)?);
                    taps.push((i, ky, kx));
                }
            }
            let wm: Vec<f64> = (0..co)
                .flat_map(|o| taps.iter().map(move |&t| (o, t)))
                .map(|(o, (i, ky, kx))| wd[((o * ci + i) * kh + ky) * kw + kx] * m)
                .collect();
            linear_outputs(b, &inputs, &wm, &bias)
        })
        .collect()
}

/// Per-pixel output vectors (`co` channels each) in channel-major order: NCHW for whole
/// feature maps, `(c, x)` for one row.
fn channel_major<C>(per_pixel: Vec<Vec<C>>, co: usize) -> Result<Vec<C>> {
    let mut grid: Vec<std::vec::IntoIter<C>> = per_pixel.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(co * grid.len());
    for _o in 0..co {
        for px in grid.iter_mut() {
            out.push(
                px.next()
                    .ok_or_else(|| NnError::Exec("convolution output missing".into()))?,
            );
        }
    }
    Ok(out)
}

/// Splits a flat vector in rows of `row_len` elements.
fn split_rows<C>(v: Vec<C>, row_len: usize) -> Vec<Vec<C>> {
    let mut rows = Vec::with_capacity(v.len() / row_len.max(1));
    let mut it = v.into_iter();
    loop {
        let r: Vec<C> = it.by_ref().take(row_len.max(1)).collect();
        if r.is_empty() {
            return rows;
        }
        rows.push(r);
    }
}

fn linear<B: Backend>(b: &B, l: &Linear, x: &Packed<B::Ct>) -> Result<Vec<B::Ct>> {
    let ws = l.weight.shape();
    let (m_out, k) = (ws[0], ws[1]);
    let m = x.mult;
    let w: Vec<f64> = l.weight.data().iter().map(|v| v * m).collect();
    let bias: Vec<f64> = (0..m_out)
        .map(|o| l.bias.as_ref().map_or(0.0, |bb| bb[o]))
        .collect();
    let inputs: Vec<&B::Ct> = (0..k).map(|i| x.cts.at(i)).collect::<Result<_>>()?;
    linear_outputs(b, &inputs, &w, &bias)
}

/// Average pooling outputs at flat output indices `outs`, and the output multiplier.
fn avg_pool<B: Backend>(
    b: &B,
    p: &AvgPool,
    x: View<'_, B::Ct>,
    out_shape: &[usize],
    outs: &[usize],
) -> Result<(Vec<B::Ct>, f64)> {
    let (h, w) = (x.shape[2], x.shape[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let [kh, kw] = p.kernel;
    let full = (kh * kw) as f64;
    let window = |idx: usize| -> Vec<usize> {
        let ch = idx / (oh * ow);
        let (oy, ox) = ((idx / ow) % oh, idx % ow);
        window_taps([oy, ox], p.stride, &p.pads, [kh, kw], [h, w])
            .into_iter()
            .map(|(_, _, iy, ix)| (ch * h + iy) * w + ix)
            .collect()
    };
    // whether any window of the layer (not only of these rows) is cut by the padding
    let uneven = !p.count_include_pad && (0..oh * ow).any(|px| window(px).len() as f64 != full);
    let sums = par_map::<B>(outs.len(), |i| {
        let win = window(outs[i]);
        if win.is_empty() {
            return Err(NnError::Exec(
                "average pooling window entirely in the padding".into(),
            ));
        }
        let s = sum_cts(b, x.src, &win)?;
        if uneven {
            // divisor differs per window: multiply by full / count (one level, uniform)
            b.mul_const(&s, full / win.len() as f64)
        } else {
            Ok(s)
        }
    })?;
    Ok((sums, x.mult / full))
}

fn reduce_sum<B: Backend>(
    b: &B,
    x: &Packed<B::Ct>,
    axes: &[usize],
    out_len: usize,
) -> Result<Vec<B::Ct>> {
    let shape = &x.shape;
    let st = strides(shape);
    let mut reduced: Vec<usize> = shape.clone();
    for &a in axes {
        if let Some(r) = reduced.get_mut(a) {
            *r = 1;
        }
    }
    let rst = strides(&reduced);
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); out_len];
    for flat in 0..numel(shape) {
        let mut o = 0;
        for (d, (&s, &rs)) in st.iter().zip(&rst).enumerate() {
            let coord = (flat / s) % shape[d];
            if !axes.contains(&d) {
                o += coord * rs;
            }
        }
        if let Some(g) = groups.get_mut(o) {
            g.push(flat);
        }
    }
    par_map::<B>(out_len, |o| sum_cts(b, &x.cts, &groups[o]))
}

/// `x * mx + y * my` as one ciphertext and multiplier, aligning levels and scales (the
/// operand at the higher level pays for the alignment, with the multiplier ratio folded in).
pub(super) fn add_aligned<B: Backend>(
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
            b.mul_const_to(hi, ratio, ll, b.scale(lo))?
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
        return Err(NnError::Exec(
            "out of levels aligning the operands of an addition".into(),
        ));
    }
    let h = b.mul_const_to(hi, ratio, ll - 1, b.scale(lo))?;
    let mut r = lo.clone();
    b.drop_level_to_assign(&mut r, ll - 1)?;
    b.add_assign(&mut r, &h)?;
    Ok((r, ml))
}

/// Powers `x^k` needed for the nonzero coefficients of `f` (index = exponent).
fn powers<B: Backend>(b: &B, x: &B::Ct, f: &[f64]) -> Result<Vec<Option<B::Ct>>> {
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
                    b.square(pa)?
                } else {
                    b.mul(pa, pc)?
                }
            }
            _ => return Err(NnError::Exec(format!("power x^{k} missing its factors"))),
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
        .ok_or_else(|| NnError::Exec("polynomial without terms".into()))?;
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
            .ok_or_else(|| NnError::Exec("out of levels in a polynomial".into()))?;
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
            b.mul_const_to(ct, c, level, scale)?
        };
        match acc.as_mut() {
            None => acc = Some(t),
            Some(a) => b.add_assign(a, &t)?,
        }
    }
    let mut acc = acc.ok_or_else(|| NnError::Exec("polynomial without terms".into()))?;
    if let Some(&c0) = f.first()
        && c0 != 0.0
    {
        b.add_const_assign(&mut acc, c0)?;
    }
    Ok(acc)
}

/// A polynomial `sum_k c_k t^k` applied to a packed value `t = m s`: coefficients in the
/// stored domain are `c_k m^k`; the leading one is factored out into the output multiplier.
pub(super) fn polynomial<B: Backend>(
    b: &B,
    x: &Packed<B::Ct>,
    coeffs: &[f64],
) -> Result<Packed<B::Ct>> {
    let flats: Vec<usize> = (0..x.cts.len()).collect();
    let (cts, mult) = polynomial_at(b, View::of(x), &flats, coeffs)?;
    Ok(Packed {
        shape: x.shape.clone(),
        cts,
        mult,
    })
}

/// [`polynomial`] at the elements `flats` of a value; returns the outputs and multiplier.
fn polynomial_at<B: Backend>(
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
        let cts = par_map::<B>(flats.len(), |i| {
            let mut z = b.mul_const(x.src.at(flats[i])?, 0.0)?;
            b.add_const_assign(&mut z, c0)?;
            Ok(z)
        })?;
        return Ok((cts, 1.0));
    }
    let a = e[d];
    let f: Vec<f64> = e[..=d].iter().map(|&c| c / a).collect();
    let cts = par_map::<B>(flats.len(), |i| poly_eval(b, x.src.at(flats[i])?, &f))?;
    Ok((cts, a))
}

/// Element-wise ops at the elements `flats` (output element `i` reads element `i` of every
/// input): the outputs and their multiplier; `None` for ops that are not element-wise.
fn elementwise<B: Backend>(
    b: &B,
    node: &Node,
    inputs: &[View<'_, B::Ct>],
    flats: &[usize],
) -> Result<Option<(Vec<B::Ct>, f64)>> {
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
                format!("broadcasting {what} between computed values"),
            ));
        }
        Ok(y)
    };
    let at = |i: usize| x.src.at(flats[i]);
    Ok(Some(match &node.op {
        Op::BatchNorm(bn) => {
            let (s, t) = bn.affine();
            let c = x.shape.get(1).copied().unwrap_or(1).max(1);
            let inner: usize = x.shape.iter().skip(2).product::<usize>().max(1);
            let m = x.mult;
            let cts = par_map::<B>(flats.len(), |i| {
                let ch = (flats[i] / inner) % c;
                let mut r = b.mul_const(at(i)?, s[ch] * m)?;
                b.add_const_assign(&mut r, t[ch])?;
                Ok(r)
            })?;
            (cts, 1.0)
        }
        Op::Identity => (
            flats
                .iter()
                .map(|&f| x.src.at(f).cloned())
                .collect::<Result<_>>()?,
            x.mult,
        ),
        Op::Add => {
            let y = second("Add")?;
            let pairs: Vec<(B::Ct, f64)> = (0..flats.len())
                .into_par_iter()
                .map(|i| add_aligned(b, at(i)?, x.mult, y.src.at(flats[i])?, y.mult))
                .collect::<Result<_>>()?;
            let mult = pairs.first().map_or(x.mult, |p| p.1);
            (pairs.into_iter().map(|p| p.0).collect(), mult)
        }
        Op::Mul => {
            let y = second("Mul")?;
            if node.inputs.first() == node.inputs.get(1) {
                (
                    par_map::<B>(flats.len(), |i| b.square(at(i)?))?,
                    x.mult * x.mult,
                )
            } else {
                let cts = par_map::<B>(flats.len(), |i| b.mul(at(i)?, y.src.at(flats[i])?))?;
                (cts, x.mult * y.mult)
            }
        }
        Op::AddConst(t) => {
            if x.mult == 0.0 {
                return Err(NnError::Exec(
                    "cannot add a constant to a value with multiplier 0".into(),
                ));
            }
            let c = full_constant(x.shape, t)?;
            let m = x.mult;
            let cts = par_map::<B>(flats.len(), |i| {
                let mut r = at(i)?.clone();
                b.add_const_assign(&mut r, c[flats[i]] / m)?;
                Ok(r)
            })?;
            (cts, m)
        }
        Op::MulConst(t) => match t.as_uniform() {
            Some(c) if c != 0.0 => (
                flats
                    .iter()
                    .map(|&f| x.src.at(f).cloned())
                    .collect::<Result<_>>()?,
                x.mult * c,
            ),
            _ => {
                let c = full_constant(x.shape, t)?;
                let cts = par_map::<B>(flats.len(), |i| b.mul_const(at(i)?, c[flats[i]]))?;
                (cts, x.mult)
            }
        },
        Op::Pow { exponent } => {
            let mut coeffs = vec![0.0; *exponent as usize + 1];
            if let Some(l) = coeffs.last_mut() {
                *l = 1.0;
            }
            polynomial_at(b, x, flats, &coeffs)?
        }
        Op::Polynomial { coeffs } => polynomial_at(b, x, flats, coeffs)?,
        _ => return Ok(None),
    }))
}

/// Whether the batch layout computes `node` row by row: an NCHW output, and a convolution,
/// an average pooling or an element-wise op between values of the output's shape.
fn row_wise(graph: &Graph, node: &Node) -> bool {
    let out = graph.shape(node.output);
    if out.len() != 4 || out[0] != 1 {
        return false;
    }
    let same_shape = || node.inputs.iter().all(|&v| graph.shape(v) == out);
    match &node.op {
        Op::Conv2d(_) | Op::AvgPool(_) => graph.shape(node.inputs[0]).len() == 4,
        Op::BatchNorm(_)
        | Op::Identity
        | Op::Add
        | Op::Mul
        | Op::AddConst(_)
        | Op::MulConst(_)
        | Op::Pow { .. }
        | Op::Polynomial { .. } => same_shape(),
        _ => false,
    }
}

/// Input rows `[lo, hi]` that output row `r` of a windowed op reads (`stride`, top `pad`,
/// kernel height `k`, input height `h`).
fn window_rows(r: usize, stride: usize, pad: usize, k: usize, h: usize) -> (usize, usize) {
    let top = (r * stride) as isize - pad as isize;
    let bottom = top + k as isize - 1;
    let hi = bottom.clamp(0, h as isize - 1) as usize;
    let lo = top.clamp(0, hi as isize) as usize;
    (lo, hi)
}

fn full_constant(shape: &[usize], t: &Tensor) -> Result<Vec<f64>> {
    Ok(Tensor::zeros(shape.to_vec())
        .broadcast_with(t, |_, c| c)?
        .into_data())
}

impl<B: Backend> Layout<B> for BatchLayout {
    fn name(&self) -> &'static str {
        LAYOUT
    }

    fn eval_node(
        &self,
        b: &B,
        graph: &Graph,
        node: &Node,
        inputs: &[&Packed<B::Ct>],
    ) -> Result<Packed<B::Ct>> {
        let out_shape = graph.shape(node.output).to_vec();
        let x = *inputs
            .first()
            .ok_or_else(|| NnError::InvalidGraph(format!("node '{}' has no input", node.name)))?;
        let same = |cts: Vec<B::Ct>, mult: f64| Packed {
            shape: out_shape.clone(),
            cts,
            mult,
        };
        let views: Vec<View<'_, B::Ct>> = inputs.iter().map(|p| View::of(p)).collect();
        let all: Vec<usize> = (0..numel(&out_shape)).collect();
        match &node.op {
            Op::Conv2d(c) => {
                if x.shape.len() != 4 {
                    return Err(unsupported(node, "expects an NCHW input"));
                }
                let pixels =
                    conv_pixels(b, c, views[0], &out_shape, 0..out_shape[2] * out_shape[3])?;
                Ok(same(channel_major(pixels, out_shape[1])?, 1.0))
            }
            Op::Linear(l) => {
                let rows: usize = x
                    .shape
                    .iter()
                    .take(x.shape.len().saturating_sub(1))
                    .product();
                if rows != 1 {
                    return Err(unsupported(
                        node,
                        "Linear needs a flattened [1, features] input",
                    ));
                }
                Ok(same(linear(b, l, x)?, 1.0))
            }
            Op::Reshape { .. } => Ok(same(x.cts.clone(), x.mult)),
            Op::AvgPool(p) => {
                if x.shape.len() != 4 {
                    return Err(unsupported(node, "expects an NCHW input"));
                }
                let (cts, m) = avg_pool(b, p, views[0], &out_shape, &all)?;
                Ok(same(cts, m))
            }
            Op::GlobalAvgPool => {
                let area: usize = x.shape.iter().skip(2).product::<usize>().max(1);
                let cts = reduce_sum(b, x, &[2, 3], numel(&out_shape))?;
                Ok(same(cts, x.mult / area as f64))
            }
            Op::ReduceSum { axes, .. } => {
                let cts = reduce_sum(b, x, axes, numel(&out_shape))?;
                Ok(same(cts, x.mult))
            }
            Op::Activation(_) => {
                check_supported(graph)?;
                Err(unsupported(node, "non-polynomial activation"))
            }
            _ => match elementwise(b, node, &views, &all)? {
                Some((cts, mult)) => Ok(same(cts, mult)),
                None => Err(unsupported(node, "op not supported by the batch layout")),
            },
        }
    }

    fn input_rows(
        &self,
        graph: &Graph,
        node: &Node,
        input: usize,
        row: usize,
    ) -> Option<(usize, usize)> {
        if !row_wise(graph, node) {
            return None;
        }
        let h = *graph.shape(*node.inputs.get(input)?).get(2)?;
        match &node.op {
            Op::Conv2d(c) => Some(window_rows(
                row,
                c.stride[0],
                c.pads[0],
                c.weight.shape()[2],
                h,
            )),
            Op::AvgPool(p) => Some(window_rows(row, p.stride[0], p.pads[0], p.kernel[0], h)),
            _ => Some((row, row)),
        }
    }

    fn eval_rows(
        &self,
        b: &B,
        graph: &Graph,
        node: &Node,
        inputs: &[View<'_, B::Ct>],
        rows: Range<usize>,
    ) -> Result<(Vec<Vec<B::Ct>>, f64)> {
        if !row_wise(graph, node) {
            return Err(NnError::Exec(format!(
                "node '{}' is not computed row by row",
                node.name
            )));
        }
        let out_shape = graph.shape(node.output);
        let (co, ow) = (out_shape[1], out_shape[3]);
        let x = *inputs
            .first()
            .ok_or_else(|| NnError::InvalidGraph(format!("node '{}' has no input", node.name)))?;
        if let Op::Conv2d(c) = &node.op {
            let pixels = conv_pixels(b, c, x, out_shape, rows.start * ow..rows.end * ow)?;
            let rows = split_rows(pixels, ow)
                .into_iter()
                .map(|r| channel_major(r, co))
                .collect::<Result<_>>()?;
            return Ok((rows, 1.0));
        }
        let flats = row_flats(out_shape, rows);
        let (cts, mult) = match &node.op {
            Op::AvgPool(p) => avg_pool(b, p, x, out_shape, &flats)?,
            _ => elementwise(b, node, inputs, &flats)?.ok_or_else(|| {
                NnError::Exec(format!("node '{}' is not element-wise", node.name))
            })?,
        };
        Ok((split_rows(cts, co * ow), mult))
    }
}
