//! Convolutions of the channel layout: hoisted rotations of each input, scalar tap weights
//! inside the image, 0/1 masks for taps touching the padding, multiplexed outputs.

use std::sync::Arc;

use henn_ckks::Scale;
use rayon::prelude::*;

use super::{add_slot_constants, bias_at, exec_err, par_map, rotations};
use crate::backend::{Backend, scale_of};
use crate::error::Result;
use crate::ir::Conv2d;
use crate::pack::{Grid, Packed};

/// Bits of the rescale prime moved from the weights to the block masks of a multiplexed
/// convolution, relative to [`split_scale`].
const MUX_MASK_EXTRA_BITS: f64 = 2.0;

/// A window tap: its rotation step and, per output position, the output slot and whether
/// the tapped input pixel is inside the image.
pub(super) struct Tap {
    ky: usize,
    kx: usize,
    pub(super) step: i64,
    /// `(output slot, inside)` for every output pixel.
    pub(super) cover: Vec<(usize, bool)>,
}

/// Taps of a `kh x kw` window with `stride` and `pads` from grid `gi` to grid `go`.
pub(super) fn taps(
    gi: Grid,
    go: Grid,
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
) -> Vec<Tap> {
    let mut v = Vec::with_capacity(kernel[0] * kernel[1]);
    for ky in 0..kernel[0] {
        for kx in 0..kernel[1] {
            let dy = ky as i64 - pads[0] as i64;
            let dx = kx as i64 - pads[1] as i64;
            let step = dy * gi.ry as i64 + dx * gi.rx as i64;
            let mut cover = Vec::with_capacity(go.h * go.w);
            for oy in 0..go.h {
                for ox in 0..go.w {
                    let iy = (oy * stride[0]) as i64 + dy;
                    let ix = (ox * stride[1]) as i64 + dx;
                    let inside = iy >= 0 && iy < gi.h as i64 && ix >= 0 && ix < gi.w as i64;
                    cover.push((go.slot(oy, ox), inside));
                }
            }
            v.push(Tap {
                ky,
                kx,
                step,
                cover,
            });
        }
    }
    v.retain(|t| t.cover.iter().any(|c| c.1));
    v
}

/// A ciphertext of zeros at the level and scale a one-level linear layer on `x` produces.
fn zero_like<B: Backend>(b: &B, x: &B::Ct) -> Result<B::Ct> {
    b.mul_const_rescale(x, 0.0)
}

/// Splits the rescale-neutral constant scale `q` of a masked border tap into a scale for the
/// (normalised) scalar weights and one for the 0/1 mask plaintext, balancing the weight
/// rounding error `1 / (2 wc)` against the mask encoding error `~ sqrt(N / 12) / ms`.
fn split_scale(q: f64, slots: usize) -> Result<(Scale, Scale)> {
    let n = (2 * slots.max(1)) as f64;
    let k = ((q.log2() - (2.0 * (n / 12.0).sqrt()).log2()) / 2.0)
        .round()
        .max(1.0);
    let wc = k.exp2();
    Ok((scale_of(wc)?, scale_of(q / wc)?))
}

/// Convolution. Taps inside the image at every output pixel are scalar products
/// (`mul_const_add`, no plaintext); a tap that falls into the padding somewhere sums its
/// scalar-weighted rotations over the inputs first and multiplies that sum once by the tap's
/// 0/1 mask (one cached plaintext per tap), the constant scale `q` split between weights and
/// mask (see [`split_scale`]). Everything accumulates at scale `x.scale * q`; one rescale.
pub(super) fn conv2d<B: Backend>(
    b: &B,
    c: &Conv2d,
    x: &Packed<B::Ct>,
    gi: Grid,
    go: Grid,
) -> Result<Vec<B::Ct>> {
    let ws = c.weight.shape();
    let (co, ci, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    if x.cts.len() != ci || gi.c != ci {
        return Err(exec_err(format!(
            "convolution expects {ci} input ciphertexts, got {}",
            x.cts.len()
        )));
    }
    let x0 = x
        .cts
        .first()
        .ok_or_else(|| exec_err("convolution without input ciphertexts"))?;
    let tp = taps(gi, go, [kh, kw], c.stride, c.pads);
    let steps: Vec<i64> = tp.iter().map(|t| t.step).collect();
    let rots: Vec<Vec<B::Ct>> = par_map(ci, |i| rotations(b, &x.cts[i], &steps))?;
    let wd = c.weight.data();
    let m = x.mult;
    let weight = |o: usize, i: usize, t: &Tap| wd[((o * ci + i) * kh + t.ky) * kw + t.kx] * m;
    let level = b.level(x0);
    let cs = b.neutral_scale(x0)?;
    let (wc, ms) = split_scale(b.prime(level)?, b.slots())?;
    let wmax = wd.iter().fold(0.0f64, |a, &w| a.max((w * m).abs()));
    if go.k > 1 {
        // the block masks have many more non-zero slots than a border tap's: their encoding
        // error dominates at the border-tap split, two bits more for the mask measured best
        // (mnist_cnn3_swish4: output max error 2.6e-3 -> 1.3e-3)
        let shift = MUX_MASK_EXTRA_BITS.exp2();
        let taps = MuxTaps {
            tp: &tp,
            rots: &rots,
            weight: &weight,
            wc: scale_of(wc.value() / shift)?,
            ms: scale_of(ms.value() * shift)?,
            cs,
            level,
        };
        return conv2d_multiplexed(b, c, x0, &taps, go, co, ci);
    }
    let span = go.span();
    let masks: Vec<Option<Arc<B::Pt>>> = tp
        .iter()
        .map(|t| {
            if t.cover.iter().all(|c| c.1) || wmax == 0.0 {
                return Ok(None);
            }
            let mut v = vec![0.0; span];
            for &(s, inside) in &t.cover {
                if inside {
                    v[s] = wmax;
                }
            }
            b.encode_cached(&go.tile(v), level, ms).map(Some)
        })
        .collect::<Result<_>>()?;
    // taps inside the image: one matrix of scalar products over every (tap, input) rotation
    let full: Vec<usize> = (0..tp.len()).filter(|&t| masks[t].is_none()).collect();
    let accs: Vec<Option<B::Ct>> = if full.is_empty() {
        vec![None; co]
    } else {
        let xs: Vec<&B::Ct> = full
            .iter()
            .flat_map(|&t| rots.iter().map(move |ri| &ri[t]))
            .collect();
        let w: Vec<f64> = (0..co)
            .flat_map(|o| {
                full.iter()
                    .flat_map(move |&t| (0..ci).map(move |i| (o, i, t)))
            })
            .map(|(o, i, t)| weight(o, i, &tp[t]))
            .collect();
        b.mul_const_matrix(&xs, &w, co, cs)?
            .into_iter()
            .map(Some)
            .collect()
    };
    // taps touching the padding, per output (the partial sum stays in cache): scalar-weighted
    // sums over the inputs, then the tap's mask
    let accs: Vec<(usize, Option<B::Ct>)> = accs.into_iter().enumerate().collect();
    accs.into_par_iter()
        .map(|(o, mut acc)| {
            for (t, mask) in masks.iter().enumerate() {
                let Some(pt) = mask else { continue };
                let mut part: Option<B::Ct> = None;
                for (i, ri) in rots.iter().enumerate() {
                    let wv = weight(o, i, &tp[t]) / wmax;
                    if wv != 0.0 {
                        b.accumulate_const(&mut part, &ri[t], wv, wc)?;
                    }
                }
                if let Some(p) = part {
                    b.accumulate_pt(&mut acc, &p, pt)?;
                }
            }
            let mut out = match acc {
                Some(mut a) => {
                    b.rescale_assign(&mut a)?;
                    a
                }
                None => zero_like(b, x0)?,
            };
            let bias = bias_at(&c.bias, o);
            if bias != 0.0 {
                b.add_const_assign(&mut out, bias)?;
            }
            Ok(out)
        })
        .collect()
}

/// What [`conv2d_multiplexed`] shares with [`conv2d`]: the taps, the rotated inputs
/// (`rots[input][tap]`), the folded weights and the scales.
struct MuxTaps<'a, C, W: Fn(usize, usize, &Tap) -> f64> {
    tp: &'a [Tap],
    rots: &'a [Vec<C>],
    weight: &'a W,
    wc: Scale,
    ms: Scale,
    cs: Scale,
    level: usize,
}

/// A convolution whose output is multiplexed (`go.k` channels per ciphertext, channel
/// `g k + r` in block `r`) from a replicated input: every block of a rotated input holds the
/// same image, so output channel `o`'s scalar tap sums (weights normalised by `wmax`, at
/// scale `wc`) are computed as in [`conv2d`] and then multiplied by a 0/1 mask (`wmax` at
/// scale `ms`) of block `o mod k`'s output pixels, per tap for taps touching the padding.
/// All products are at `x.scale * wc * ms = x.scale * q`: still one rescale, one level.
/// Biases go in through an all-ones ciphertext times the per-block bias vector.
fn conv2d_multiplexed<B: Backend, W: Fn(usize, usize, &Tap) -> f64 + Sync>(
    b: &B,
    c: &Conv2d,
    x0: &B::Ct,
    t: &MuxTaps<'_, B::Ct, W>,
    go: Grid,
    co: usize,
    ci: usize,
) -> Result<Vec<B::Ct>> {
    let (k, bs) = (go.k, go.bs);
    let inside_all = |tap: &Tap| tap.cover.iter().all(|c| c.1);
    let full: Vec<usize> = (0..t.tp.len()).filter(|&i| inside_all(&t.tp[i])).collect();
    // each output channel's weights are normalised by their own largest magnitude (the
    // mask carries it), so that small channels keep their relative precision at scale wc
    let wmax: Vec<f64> = (0..co)
        .map(|o| {
            t.tp.iter()
                .flat_map(|tap| (0..ci).map(move |j| (t.weight)(o, j, tap).abs()))
                .fold(0.0f64, f64::max)
        })
        .collect();
    let norm = |o: usize| if wmax[o] == 0.0 { 0.0 } else { 1.0 / wmax[o] };
    let parts: Vec<Option<B::Ct>> = if full.is_empty() || wmax.iter().all(|&w| w == 0.0) {
        vec![None; co]
    } else {
        let xs: Vec<&B::Ct> = full
            .iter()
            .flat_map(|&i| t.rots.iter().map(move |ri| &ri[i]))
            .collect();
        let w: Vec<f64> = (0..co)
            .flat_map(|o| {
                full.iter()
                    .flat_map(move |&i| (0..ci).map(move |j| (o, j, i)))
            })
            .map(|(o, j, i)| (t.weight)(o, j, &t.tp[i]) * norm(o))
            .collect();
        b.mul_const_matrix(&xs, &w, co, t.wc)?
            .into_iter()
            .map(Some)
            .collect()
    };
    // output o's mask in block r: its wmax at the output pixels (all, or where the tap is
    // inside the image)
    let mask = |o: usize, r: usize, tap: &Tap, all: bool| -> Result<Arc<B::Pt>> {
        let mut v = vec![0.0; r * bs + go.image_span()];
        for &(s, inside) in &tap.cover {
            if all || inside {
                v[r * bs + s] = wmax[o];
            }
        }
        b.encode_cached(&v, t.level, t.ms)
    };
    let tap0 =
        t.tp.first()
            .ok_or_else(|| exec_err("convolution without taps"))?;
    par_map(go.c, |g| {
        let mut acc: Option<B::Ct> = None;
        let mut bias = vec![0.0; go.span()];
        let mut any_bias = false;
        for r in 0..k {
            let o = g * k + r;
            if o >= co {
                break;
            }
            if let Some(p) = &parts[o] {
                b.accumulate_pt(&mut acc, p, &*mask(o, r, tap0, true)?)?;
            }
            for (i, tap) in t.tp.iter().enumerate() {
                if inside_all(tap) || wmax[o] == 0.0 {
                    continue;
                }
                let mut part: Option<B::Ct> = None;
                for (j, rj) in t.rots.iter().enumerate() {
                    let wv = (t.weight)(o, j, tap) * norm(o);
                    if wv != 0.0 {
                        b.accumulate_const(&mut part, &rj[i], wv, t.wc)?;
                    }
                }
                if let Some(p) = part {
                    b.accumulate_pt(&mut acc, &p, &*mask(o, r, tap, false)?)?;
                }
            }
            let bv = bias_at(&c.bias, o);
            if bv != 0.0 {
                any_bias = true;
                for &(s, _) in &tap0.cover {
                    bias[r * bs + s] = bv;
                }
            }
        }
        let mut acc = b.sum_or_zero(acc, x0, t.cs)?;
        if any_bias {
            add_slot_constants(b, &mut acc, x0, &bias, t.cs)?;
        }
        b.rescale_assign(&mut acc)?;
        Ok(acc)
    })
}
