//! Batch-axis packing: slot `i` holds image `i` (up to N/2 images), one ciphertext per tensor
//! element (pixel x channel), weights are scalar constants multiplied in without plaintext
//! encoding. No rotations are needed. With one image this is per-pixel encryption.
//!
//! With more images than slots (up to N), two images share each complex slot: image `i` in
//! the real part of slot `i`, image `N/2 + i` in its imaginary part
//! ([`crate::pack::LayoutPlan::complex_pairs`]). Every linear op of this layout has real
//! weights, so it acts on both images at once; the backend's products and added constants
//! become pair operations (one conjugation and one relinearization for two images' squares),
//! which is where twice the images cost less than twice the time.
//!
//! Linear layers are sums `sum_i w_i x_i` accumulated at scale `Δ q_l` and rescaled once per
//! output. Each packed tensor carries a plaintext multiplier ([`Packed::mult`]) so that average
//! pooling's `1/k^2`, scalar `Mul`s and activation leading coefficients cost no level: they are
//! folded into the next linear layer's weights.

use rayon::prelude::*;

use std::ops::Range;

use super::elementwise::{self, ConstPlacer, CtConst, Elementwise, full_constant};
use super::placement::count_placement;
use super::{
    CtSource, Layout, LayoutKind, LayoutPlan, LayoutRules, NodeCtx, Packed, Placement, Room, View,
    row_flats, unsupported,
};
use crate::backend::{Backend, scale_of};
use crate::error::{ExecError, NnError, Result};
use crate::ir::{Activation, AvgPool, Conv2d, Graph, Linear, Node, Op};
use crate::tensor::{Tensor, numel, strides};
use henn_ckks::Scale;

/// The batch-axis layout.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchLayout;

const KIND: LayoutKind = LayoutKind::Batch;

fn par_map<B: Backend>(
    n: usize,
    f: impl Fn(usize) -> Result<B::Ct> + Sync + Send,
) -> Result<Vec<B::Ct>> {
    elementwise::par_map(n, f)
}

fn sum_cts<B: Backend>(b: &B, xs: &dyn CtSource<B::Ct>, idx: &[usize]) -> Result<B::Ct> {
    let (&first, rest) = idx
        .split_first()
        .ok_or_else(|| ExecError::Internal("empty sum".into()))?;
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
///
/// Inputs left unrelinearized (squares at scale `Δ^2`, level `l`: see [`lazy_square`]) are
/// summed as they are; each sum is relinearized and rescaled twice, with constants at
/// `q_{l-1}`: the level and scale the relinearized, rescaled squares would have given, one key
/// switch per output instead of one per input (and its noise divided by both primes).
fn linear_outputs<B: Backend>(
    b: &B,
    inputs: &[&B::Ct],
    w: &[f64],
    bias: &[f64],
) -> Result<Vec<B::Ct>> {
    let x0 = *inputs
        .first()
        .ok_or_else(|| ExecError::Internal("linear layer without inputs".into()))?;
    let lazy = b.unrelinearized(x0);
    let (cs, rescale) = if lazy {
        let l = b.level(x0);
        if l < 2 {
            return Err(ExecError::Internal(format!(
                "an unrelinearized input at level {l} (two rescales needed)"
            ))
            .into());
        }
        (scale_of(b.prime(l - 1)?)?, true)
    } else {
        linear_scale(b, x0)?
    };
    let mut outs = b.mul_const_matrix(inputs, w, bias.len(), cs)?;
    outs.par_iter_mut()
        .zip(bias)
        .try_for_each(|(acc, &bv)| -> Result<()> {
            if lazy {
                b.relinearize_assign(acc)?;
                b.rescale_assign(acc)?;
            }
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
                    .ok_or_else(|| ExecError::Internal("convolution output missing".into()))?,
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
            return Err(ExecError::Internal(
                "average pooling window entirely in the padding".into(),
            )
            .into());
        }
        let s = sum_cts(b, x.src, &win)?;
        if uneven {
            // divisor differs per window: multiply by full / count (one level, uniform)
            b.mul_const_rescale(&s, full / win.len() as f64)
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
        | Op::Polynomial { .. }
        | Op::Chebyshev { .. } => same_shape(),
        Op::Linear(_)
        | Op::Reshape { .. }
        | Op::GlobalAvgPool
        | Op::ReduceSum { .. }
        | Op::Activation(_) => false,
    }
}

/// The coefficients (lowest degree first, the last nonzero) of a polynomial activation whose
/// top power is a square of a lower one: `x * x`, `x^2`, a polynomial of degree 2, 4, 8, ...
fn square_topped(node: &Node) -> Option<Vec<f64>> {
    match &node.op {
        Op::Mul if node.inputs.first() == node.inputs.get(1) => Some(vec![0.0, 0.0, 1.0]),
        Op::Pow { exponent: 2 } => Some(vec![0.0, 0.0, 1.0]),
        Op::Polynomial { coeffs } => {
            let d = coeffs.iter().rposition(|&c| c != 0.0)?;
            (d >= 2 && d.is_power_of_two()).then(|| coeffs[..=d].to_vec())
        }
        _ => None,
    }
}

/// Relative costs of [`lazy_relin_values`], in relinearizations (a key switch): a constant
/// product of the batch matrix kernel, and the share of a linear layer's products that a third
/// part and one more prime add. Measured with `henn profile --packing batch` (2 threads): a
/// relinearization costs 110 (AVX-512 IFMA, mnist_cnn3_square) to 200 (AVX2, mnist_lola)
/// kernel products; unrelinearized inputs made fully connected layers 70 % (mnist_lola,
/// mnist_tenseal, level 3) to 150 % (mnist_cnn3_square, level 2) dearer.
const RELIN_COST: f64 = 1.0;
const CONST_PRODUCT_COST: f64 = 1.0 / 150.0;
const THIRD_PART_SHARE: f64 = 1.0;

/// The polynomial activations to leave unrelinearized (their top square): every use of the
/// activation (through reshapes) is a linear layer (convolution, fully connected), it is not
/// the output, and the key switches saved (one per square, less one per output of its linear
/// layers) outweigh what a third part costs those layers' constant products.
fn lazy_relin_values(graph: &Graph) -> Vec<usize> {
    let nodes = graph.nodes();
    let users =
        |v: usize| -> Vec<&Node> { nodes.iter().filter(|n| n.inputs.contains(&v)).collect() };
    let mut lazy = Vec::new();
    for n in nodes {
        if square_topped(n).is_none() || graph.shape(n.output).first() != Some(&1) {
            continue;
        }
        // the linear layers reached through reshapes, or None if anything else uses it
        let mut linear: Vec<&Node> = Vec::new();
        let mut stack = vec![n.output];
        let mut ok = true;
        while let Some(v) = stack.pop() {
            if v == graph.output() {
                ok = false;
                break;
            }
            for u in users(v) {
                match &u.op {
                    Op::Reshape { .. } | Op::Identity => stack.push(u.output),
                    Op::Linear(_) | Op::Conv2d(_) if u.inputs.len() == 1 => linear.push(u),
                    _ => ok = false,
                }
            }
        }
        if !ok || linear.is_empty() {
            continue;
        }
        let squares = numel(graph.shape(n.output)) as f64;
        let (mut outputs, mut products) = (0.0, 0.0);
        for u in &linear {
            let out = numel(graph.shape(u.output)) as f64;
            outputs += out;
            products += match &u.op {
                Op::Conv2d(c) => {
                    let ws = c.weight.shape();
                    out * (ws[1] * ws[2] * ws[3]) as f64
                }
                Op::Linear(l) => out * l.weight.shape()[1] as f64,
                _ => 0.0,
            };
        }
        let saved = RELIN_COST * (squares - outputs);
        let extra = CONST_PRODUCT_COST * THIRD_PART_SHARE * products;
        if saved > extra {
            lazy.push(n.output);
        }
    }
    lazy.sort_unstable();
    lazy
}

/// A polynomial activation the plan leaves unrelinearized ([`LayoutPlan::lazy_relin`]), at
/// output ciphertexts `flats`: the three-part results and the multiplier, or `None` (computed
/// as usual) when the plan does not say so or the top square's input is below level 2 (its
/// linear layer rescales twice). For `t = m s` (multiplier `m`, stored `s`), `sum_k c_k t^k`
/// of degree `d` is `e (s^d + sum_{k<d} f_k s^k)` with `e = c_d m^d` the output multiplier:
/// the powers below `d` as usual (relinearized, rescaled), `s^d` the square of `s^(d/2)`
/// unrelinearized and unrescaled, every lower term a constant product at the scale that matches
/// it (no rescale), `f_0` added.
fn lazy_square<B: Backend>(
    b: &B,
    at: NodeCtx<'_>,
    x: View<'_, B::Ct>,
    flats: &[usize],
) -> Result<Option<(Vec<B::Ct>, f64)>> {
    let Some(c) = square_topped(at.node) else {
        return Ok(None);
    };
    if at.plan.lazy_relin.binary_search(&at.node.output).is_err() {
        return Ok(None);
    }
    let d = c.len() - 1;
    let first = match flats.first() {
        Some(&f) => x.src.at(f)?,
        None => return Ok(None),
    };
    // levels the powers up to s^(d/2) take: one per doubling
    let below = (d / 2).trailing_zeros() as usize;
    if b.level(first) < below + 2 {
        return Ok(None);
    }
    let m = x.mult;
    let e = c[d] * m.powi(d as i32);
    let f: Vec<f64> = (0..d).map(|k| c[k] * m.powi(k as i32) / e).collect();
    // the powers the lower terms need, and s^(d/2)
    let mut need = f.clone();
    need.push(0.0);
    need[d / 2] = 1.0;
    let cts = par_map::<B>(flats.len(), |i| {
        let xi = x.src.at(flats[i])?;
        let p = elementwise::powers(b, xi, &need)?;
        let half = p[d / 2]
            .as_ref()
            .ok_or_else(|| ExecError::Internal(format!("power x^{} missing", d / 2)))?;
        let mut top = b.square(half)?;
        let (level, scale) = (b.level(&top), b.scale(&top));
        for (k, &fk) in f.iter().enumerate().skip(1) {
            if fk == 0.0 {
                continue;
            }
            let pk = p[k]
                .as_ref()
                .ok_or_else(|| ExecError::Internal(format!("power x^{k} missing")))?;
            let mut t = pk.clone();
            b.drop_level_to_assign(&mut t, level)?;
            let cs = scale_of(scale.value() / b.scale(&t).value())?;
            b.mul_const_assign(&mut t, fk, cs)?;
            b.add_assign(&mut top, &t)?;
        }
        if f[0] != 0.0 {
            b.add_const_assign(&mut top, f[0])?;
        }
        Ok(top)
    })?;
    Ok(Some((cts, e)))
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

/// Constants of the batch layout: every ciphertext holds one element, so every constant is
/// a scalar (the element's value).
struct BatchConsts;

impl ConstPlacer for BatchConsts {
    fn layout(&self) -> LayoutKind {
        KIND
    }
    fn place(&self, t: &Tensor, shape: &[usize], flats: &[usize]) -> Result<Vec<CtConst>> {
        let c = full_constant(shape, t)?;
        flats
            .iter()
            .map(|&f| {
                c.get(f).map(|&v| CtConst::Scalar(v)).ok_or_else(|| {
                    ExecError::Internal(format!("constant element {f} out of range")).into()
                })
            })
            .collect()
    }
}

fn check_node(graph: &Graph, node: &Node) -> Result<()> {
    let in0 = || graph.shape(node.inputs[0]);
    match &node.op {
        Op::Activation(a) => {
            let hint = match a {
                Activation::Relu => {
                    "ReLU is not a polynomial: retrain with a polynomial activation (square, swish2) or fit one in its place (`henn approximate MODEL.onnx --calib DATASET:N --uniform 4 -o OUT.onnx`)"
                }
                Activation::Sigmoid
                | Activation::Silu
                | Activation::Gelu
                | Activation::Erf
                | Activation::Tanh => {
                    "non-polynomial activation: replace it with a fitted polynomial first (`henn approximate MODEL.onnx --calib DATASET:N --uniform 4 -o OUT.onnx`)"
                }
            };
            Err(unsupported(node, KIND, hint))
        }
        Op::Add | Op::Mul => {
            let (a, b) = (graph.shape(node.inputs[0]), graph.shape(node.inputs[1]));
            if a != b {
                return Err(unsupported(
                    node,
                    KIND,
                    format!(
                        "element-wise op on different shapes {a:?} and {b:?} (broadcasting between computed values) is not supported"
                    ),
                ));
            }
            Ok(())
        }
        Op::Linear(_) => {
            let s = in0();
            let rows: usize = s.iter().take(s.len().saturating_sub(1)).product();
            if rows != 1 {
                return Err(unsupported(
                    node,
                    KIND,
                    format!("Linear over an input of shape {s:?}: flatten to [1, features] first"),
                ));
            }
            Ok(())
        }
        Op::Conv2d(_) | Op::AvgPool(_) | Op::GlobalAvgPool => {
            if in0().len() != 4 {
                return Err(unsupported(node, KIND, "expects an NCHW input"));
            }
            Ok(())
        }
        Op::BatchNorm(_)
        | Op::Reshape { .. }
        | Op::ReduceSum { .. }
        | Op::AddConst(_)
        | Op::MulConst(_)
        | Op::Pow { .. }
        | Op::Polynomial { .. }
        | Op::Chebyshev { .. }
        | Op::Identity => Ok(()),
    }
}

impl LayoutRules for BatchLayout {
    fn kind(&self) -> LayoutKind {
        KIND
    }

    fn check_supported(&self, graph: &Graph) -> Result<()> {
        graph.nodes().iter().try_for_each(|n| check_node(graph, n))
    }

    /// Half the images: beyond one image per slot, two share each complex slot.
    fn required_slots(&self, _graph: &Graph, images: usize) -> Result<usize> {
        Ok(images.div_ceil(2).max(1))
    }

    /// Up to two images per slot (complex pairs).
    fn images_per_run(&self, wanted: usize, slots: usize) -> usize {
        wanted.min(slots.saturating_mul(2)).max(1)
    }

    /// Slots never mix in this layout: the images plus one empty slot, which stands for
    /// every slot without an image (the network on a zero input).
    fn slots_for_magnitudes(&self, _plan: &LayoutPlan, images: usize) -> usize {
        images + 1
    }

    /// Every value element by element: element `f` in ciphertext `f`, image `i` in slot `i`.
    fn plan(&self, graph: &Graph, room: Room, images: usize) -> Result<LayoutPlan> {
        self.check_supported(graph)?;
        let images = images.max(1);
        if images > 2 * room.slots {
            return Err(ExecError::SlotOverflow {
                need: images.div_ceil(2),
                have: room.slots,
            }
            .into());
        }
        let values = graph
            .values()
            .iter()
            .map(|v| {
                count_placement();
                Some(Placement::Identity {
                    elements: numel(&v.shape),
                })
            })
            .collect();
        let mut plan = LayoutPlan::assemble(KIND, room, graph, values, images, 1)?;
        plan.lazy_relin = lazy_relin_values(graph);
        if images > room.slots {
            // image i in the real part of slot i, image slots + i in its imaginary part
            plan.complex_pairs = true;
            plan.slots_needed = images.div_ceil(2);
        }
        Ok(plan)
    }
}

impl<B: Backend> Layout<B> for BatchLayout {
    fn eval_node(
        &self,
        b: &B,
        at: NodeCtx<'_>,
        inputs: &[&Packed<B::Ct>],
    ) -> Result<Packed<B::Ct>> {
        let node = at.node;
        let out_shape = at.out_shape().to_vec();
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
                    return Err(unsupported(node, KIND, "expects an NCHW input"));
                }
                let pixels =
                    conv_pixels(b, c, views[0], &out_shape, 0..out_shape[2] * out_shape[3])?;
                Ok(same(channel_major(pixels, out_shape[1])?, 1.0))
            }
            Op::Linear(l) => {
                check_node(at.graph, node)?;
                Ok(same(linear(b, l, x)?, 1.0))
            }
            Op::AvgPool(p) => {
                if x.shape.len() != 4 {
                    return Err(unsupported(node, KIND, "expects an NCHW input"));
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
                check_node(at.graph, node)?;
                Err(unsupported(node, KIND, "non-polynomial activation"))
            }
            Op::BatchNorm(_)
            | Op::Reshape { .. }
            | Op::Identity
            | Op::Add
            | Op::Mul
            | Op::AddConst(_)
            | Op::MulConst(_)
            | Op::Pow { .. }
            | Op::Polynomial { .. }
            | Op::Chebyshev { .. } => {
                if let Some((cts, mult)) = lazy_square(b, at, views[0], &all)? {
                    return Ok(same(cts, mult));
                }
                let op = Elementwise::of(node)
                    .ok_or_else(|| ExecError::Internal("element-wise op expected".into()))?;
                let (cts, mult) = elementwise::eval(b, node, &op, &views, &all, &BatchConsts)?;
                Ok(same(cts, mult))
            }
        }
    }

    fn input_rows(&self, at: NodeCtx<'_>, input: usize, row: usize) -> Option<(usize, usize)> {
        let (graph, node) = (at.graph, at.node);
        if !row_wise(graph, node) {
            return None;
        }
        let h = *graph.shape(*node.inputs.get(input)?).get(2)?;
        Some(match &node.op {
            Op::Conv2d(c) => window_rows(row, c.stride[0], c.pads[0], c.weight.shape()[2], h),
            Op::AvgPool(p) => window_rows(row, p.stride[0], p.pads[0], p.kernel[0], h),
            Op::BatchNorm(_)
            | Op::Linear(_)
            | Op::Reshape { .. }
            | Op::GlobalAvgPool
            | Op::ReduceSum { .. }
            | Op::Add
            | Op::AddConst(_)
            | Op::Mul
            | Op::MulConst(_)
            | Op::Pow { .. }
            | Op::Activation(_)
            | Op::Polynomial { .. }
            | Op::Chebyshev { .. }
            | Op::Identity => (row, row),
        })
    }

    fn eval_rows(
        &self,
        b: &B,
        at: NodeCtx<'_>,
        inputs: &[View<'_, B::Ct>],
        rows: Range<usize>,
    ) -> Result<(Vec<Vec<B::Ct>>, f64)> {
        let (graph, node) = (at.graph, at.node);
        if !row_wise(graph, node) {
            return Err(ExecError::Internal(format!(
                "node '{}' is not computed row by row",
                node.name
            ))
            .into());
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
        let (cts, mult) = if let Op::AvgPool(p) = &node.op {
            avg_pool(b, p, x, out_shape, &flats)?
        } else if let Some(r) = lazy_square(b, at, x, &flats)? {
            r
        } else {
            let op = Elementwise::of(node).ok_or_else(|| {
                ExecError::Internal(format!("node '{}' is not element-wise", node.name))
            })?;
            elementwise::eval(b, node, &op, inputs, &flats, &BatchConsts)?
        };
        Ok((split_rows(cts, co * ow), mult))
    }
}
