//! Pooling and spatial sums of the channel layout: separable rotate-and-add, or masked taps
//! with padding.

use std::sync::Arc;

use super::conv::taps;
use super::{exec_err, par_map, rot_sum, rotations};
use crate::backend::Backend;
use crate::error::Result;
use crate::ir::AvgPool;
use crate::pack::{Grid, Packed};

/// Average pooling: rotate-and-add without padding (no level, multiplier `1/k^2`); with
/// padding, masked taps like a depthwise convolution (one level).
pub(super) fn avg_pool<B: Backend>(
    b: &B,
    p: &AvgPool,
    x: &Packed<B::Ct>,
    gi: Grid,
    go: Grid,
) -> Result<(Vec<B::Ct>, f64)> {
    let [kh, kw] = p.kernel;
    let full = (kh * kw) as f64;
    if p.pads.iter().all(|&v| v == 0) {
        let cols: Vec<i64> = (0..kw).map(|kx| (kx * gi.rx) as i64).collect();
        let rows: Vec<i64> = (0..kh).map(|ky| (ky * gi.ry) as i64).collect();
        let cts = par_map(x.cts.len(), |i| {
            let r = rot_sum(b, &x.cts[i], &cols)?;
            rot_sum(b, &r, &rows)
        })?;
        if gi.merged() > 1 {
            let channels = x.shape.get(1).copied().unwrap_or(0);
            return Ok((merge(b, &cts, gi, go, channels, x.mult / full)?, 1.0));
        }
        return Ok((cts, x.mult / full));
    }
    let tp = taps(gi, go, p.kernel, p.stride, p.pads);
    let npix = go.h * go.w;
    let mut count = vec![0usize; npix];
    for t in &tp {
        for (k, c) in t.cover.iter().enumerate() {
            count[k] += usize::from(c.1);
        }
    }
    if count.contains(&0) {
        return Err(exec_err("average pooling window entirely in the padding"));
    }
    let div: Vec<f64> = count
        .iter()
        .map(|&c| if p.count_include_pad { full } else { c as f64 })
        .collect();
    let steps: Vec<i64> = tp.iter().map(|t| t.step).collect();
    let span = go.span();
    let m = x.mult;
    let x0 = x
        .cts
        .first()
        .ok_or_else(|| exec_err("pooling without input ciphertexts"))?;
    let (level, cs) = (b.level(x0), b.neutral_scale(x0)?);
    let masks: Vec<Arc<B::Pt>> = tp
        .iter()
        .map(|t| {
            let mut mask = vec![0.0; span];
            for (k, &(s, inside)) in t.cover.iter().enumerate() {
                if inside {
                    mask[s] = m / div[k];
                }
            }
            b.encode_cached(&go.tile(go.spread(mask)), level, cs)
        })
        .collect::<Result<_>>()?;
    let cts = par_map(x.cts.len(), |i| {
        let rots = rotations(b, &x.cts[i], &steps)?;
        let mut acc: Option<B::Ct> = None;
        for (pt, r) in masks.iter().zip(&rots) {
            b.accumulate_pt(&mut acc, r, pt)?;
        }
        let mut a = acc.ok_or_else(|| exec_err("empty pooling window"))?;
        b.rescale_assign(&mut a)?;
        Ok(a)
    })?;
    Ok((cts, 1.0))
}

/// The repacking of a pooling whose input grid `gi` is in merge order ([`Grid::lane_of`]):
/// `pooled` are the pooled ciphertexts (the strided grid of `gi`, garbage in the gaps);
/// ciphertext `p = py mx + px` of each group of `my mx` keeps its channels' grid positions
/// (a mask, times the multiplier `mult`) and moves by `py ry + px rx` (`gi`'s steps) into
/// the gaps of the first: `m - 1` rotations, `m` products and one rescale per merged
/// ciphertext (one level). Lanes without a channel stay zero.
fn merge<B: Backend>(
    b: &B,
    pooled: &[B::Ct],
    gi: Grid,
    go: Grid,
    channels: usize,
    mult: f64,
) -> Result<Vec<B::Ct>> {
    let m = gi.merged();
    let gp = Grid {
        h: go.h,
        w: go.w,
        ry: go.ry,
        rx: go.rx,
        ..gi
    };
    let x0 = pooled
        .first()
        .ok_or_else(|| exec_err("pooling without input ciphertexts"))?;
    let (level, cs) = (b.level(x0), b.neutral_scale(x0)?);
    let slots = b.slots();
    par_map(go.c, |t| {
        let mut acc: Option<B::Ct> = None;
        for p in 0..m {
            let ct = t * m + p;
            let Some(c) = pooled.get(ct) else {
                continue;
            };
            let shift = (p / gi.mx) * gi.ry + (p % gi.mx) * gi.rx;
            let mut mask = vec![0.0; slots];
            for r in 0..gp.k.max(1) {
                if gp.channel_at(ct, r) >= channels {
                    continue;
                }
                for i in 0..gp.h {
                    for j in 0..gp.w {
                        let s = gp.offset(r) + gp.slot(i, j) + shift;
                        let d = mask
                            .get_mut(s)
                            .ok_or_else(|| exec_err("a repacked lane outside the slots"))?;
                        *d = mult;
                    }
                }
            }
            let pt = b.encode_cached(&mask, level, cs)?;
            let moved = if shift == 0 {
                c.clone()
            } else {
                b.rotate(c, -(shift as i64))?
            };
            b.accumulate_pt(&mut acc, &moved, &pt)?;
        }
        let mut a = acc.ok_or_else(|| exec_err("an empty repacking"))?;
        b.rescale_assign(&mut a)?;
        Ok(a)
    })
}

/// Sum over the `h x w` grid of each ciphertext into slot 0 (separable rotate-and-add).
pub(super) fn spatial_sum<B: Backend>(b: &B, x: &[B::Ct], g: Grid) -> Result<Vec<B::Ct>> {
    let cols: Vec<i64> = (0..g.w).map(|j| (j * g.rx) as i64).collect();
    let rows: Vec<i64> = (0..g.h).map(|i| (i * g.ry) as i64).collect();
    par_map(x.len(), |i| {
        let r = rot_sum(b, &x[i], &cols)?;
        rot_sum(b, &r, &rows)
    })
}

pub(super) fn sum_all<B: Backend>(b: &B, x: &[B::Ct]) -> Result<B::Ct> {
    let (first, rest) = x.split_first().ok_or_else(|| exec_err("empty sum"))?;
    let mut acc = first.clone();
    for c in rest {
        b.add_assign(&mut acc, c)?;
    }
    Ok(acc)
}
