//! Convolutions of the channel layout: hoisted rotations of each input, scalar tap weights
//! inside the image, 0/1 masks for taps touching the padding, multiplexed outputs.

use std::sync::Arc;

use henn_ckks::Scale;
use rayon::prelude::*;

use super::{bias_at, exec_err, par_map, rotations};
use crate::backend::{Backend, scale_of};
use crate::error::Result;
use crate::ir::Conv2d;
use crate::pack::{Grid, Packed};

/// A window tap: its rotation step and, per output position, the output slot and whether
/// the tapped input pixel is inside the image.
pub(super) struct Tap {
    pub(super) ky: usize,
    pub(super) kx: usize,
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
    if gi.k > 1 || go.k > 1 {
        return super::mux::conv2d_lanes(b, c, x, gi, go);
    }
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
