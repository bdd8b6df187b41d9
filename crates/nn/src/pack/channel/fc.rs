//! The fully connected layer of the channel layout, reading the gapped (and multiplexed)
//! layout directly and packing several outputs per ciphertext.

use rayon::prelude::*;

use super::{add_slot_constants, bias_at, exec_err, par_map, rotations};
use crate::backend::Backend;
use crate::error::Result;
use crate::ir::Linear;
use crate::pack::{Grid, Packed};

/// How a fully connected layer reduces its products (decided from the input grid, the output
/// count and the slots alone, so that the planner and the executor agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    /// Output `j` in block `j mod bl` (stride `s`) of ciphertext `j / bl`, each reduced by
    /// its own rotate-and-sum over `s` slots.
    Blocks { s: usize, bl: usize },
    /// All `m` outputs in one ciphertext, output `j` in slot `j`: every input ciphertext is
    /// rotated by `0, -1, .., -(modulus - 1)` (hoisted), and the product with rotation `r`
    /// takes output `j`'s weight for the input at slot `u` into slot `t = u + r` with
    /// `t = j (mod modulus)`; one rotate-and-sum with steps `modulus, 2 modulus, .., len / 2`
    /// then leaves every output's sum in its slot. `modulus` is `m` rounded up to a power of
    /// two; `len` covers the input span plus `modulus`.
    Residues { modulus: usize, len: usize },
}

impl Method {
    /// The output grid of the layer with `m` outputs.
    pub(super) fn output_grid(self, m: usize) -> Grid {
        match self {
            Method::Blocks { s, bl } => Grid::plain(m.div_ceil(bl), 1, bl, s * bl, s),
            Method::Residues { modulus, .. } => Grid::plain(1, 1, m, modulus, 1),
        }
    }
}

/// The cheaper [`Method`] for `m` outputs from grid `gi` (with `slots` unknown: blocks), by
/// the planner's weights (hoisted rotation 0.7, plain rotation 1, product and addition 0.107).
pub(super) fn method(gi: Grid, m: usize, slots: Option<usize>) -> Result<Method> {
    let (s, bl) = super::place::fc_blocks(gi, m, slots)?;
    let blocks = Method::Blocks { s, bl };
    let Some(n) = slots else {
        return Ok(blocks);
    };
    let modulus = m.max(1).next_power_of_two();
    let len = (gi.span() + modulus).next_power_of_two();
    if len > n || modulus >= len {
        return Ok(blocks);
    }
    let log2 = |v: usize| f64::from(v.max(1).trailing_zeros());
    let product = super::mux::PRODUCT_COST;
    let cin = gi.c as f64;
    let residues = cin
        * ((modulus - 1) as f64 * super::mux::HOISTED_COST + modulus as f64 * product)
        + log2(len / modulus);
    let groups = m.div_ceil(bl);
    let spread = if 2 * groups < gi.c {
        (groups * (bl - 1)) as f64
    } else {
        cin * (bl - 1) as f64 * super::mux::HOISTED_COST
    };
    let block_cost = (m as f64) * cin * product + spread + groups as f64 * log2(s);
    Ok(if residues < block_cost {
        Method::Residues { modulus, len }
    } else {
        blocks
    })
}

/// Fully connected layer on the gapped layout (see the module docs).
pub(super) fn linear<B: Backend>(
    b: &B,
    l: &Linear,
    x: &Packed<B::Ct>,
    gi: Grid,
    go: Grid,
) -> Result<Vec<B::Ct>> {
    let ws = l.weight.shape();
    let (m_out, k) = (ws[0], ws[1]);
    if x.cts.len() != gi.c {
        return Err(exec_err(format!(
            "fully connected layer expects {} input ciphertexts, got {}",
            gi.c,
            x.cts.len()
        )));
    }
    let how = method(gi, m_out, Some(b.slots()))?;
    if how.output_grid(m_out) != go {
        return Err(exec_err(format!(
            "fully connected layer: output grid {go:?} is not the one of {how:?}"
        )));
    }
    if let Method::Residues { modulus, len } = how {
        return residues(b, l, x, gi, modulus, len).map(|c| vec![c]);
    }
    let (s, bl) = (go.rx, go.w);
    // input element positions, per input ciphertext
    let mut pos: Vec<Vec<(usize, usize)>> = vec![Vec::new(); gi.c];
    for f in 0..k {
        let (c, slot) = gi.locate(f);
        pos.get_mut(c)
            .ok_or_else(|| exec_err(format!("input element {f} outside the grid")))?
            .push((f, slot));
    }
    let wd = l.weight.data();
    let m = x.mult;
    let span_in = gi.span();
    let bias_of = |j: usize| bias_at(&l.bias, j);
    // Output j of a group goes to block j (slot j s). Two ways to get it there, rotations
    // being linear: rotate every input ciphertext into every block once (hoisted, shared by
    // all output groups: inputs x (blocks - 1) rotations), or sum output j's masked products
    // at block 0 and rotate that sum (groups x (blocks - 1) plain rotations). The second wins
    // when there are fewer groups than half the inputs (a wide layer to few outputs).
    let per_output = 2 * go.c < gi.c;
    let reps: Vec<Vec<B::Ct>> = if per_output {
        Vec::new()
    } else {
        let steps: Vec<i64> = (0..bl).map(|blk| -((blk * s) as i64)).collect();
        par_map(gi.c, |c| rotations(b, &x.cts[c], &steps))?
    };
    par_map(go.c, |g| {
        let x0 = &x.cts[0];
        let cs = b.neutral_scale(x0)?;
        let level = b.level(x0);
        let outs: Vec<usize> = (0..bl)
            .map(|blk| g * bl + blk)
            .filter(|&j| j < m_out)
            .collect();
        let parts: Vec<Option<B::Ct>> = (0..outs.len())
            .into_par_iter()
            .map(|blk| -> Result<Option<B::Ct>> {
                let j = outs[blk];
                let base = if per_output { 0 } else { blk * s };
                let mut acc: Option<B::Ct> = None;
                for (c, xc) in x.cts.iter().enumerate() {
                    let mut mask = vec![0.0; base + span_in];
                    let mut any = false;
                    for &(f, slot) in &pos[c] {
                        let wv = wd[j * k + f] * m;
                        if wv != 0.0 {
                            mask[base + slot] = wv;
                            any = true;
                        }
                    }
                    if !any {
                        continue;
                    }
                    let pt = b.encode_cached(&mask, level, cs)?;
                    let src = if per_output {
                        xc
                    } else {
                        reps.get(c)
                            .and_then(|r| r.get(blk))
                            .ok_or_else(|| exec_err("missing input replica"))?
                    };
                    b.accumulate_pt(&mut acc, src, &pt)?;
                }
                match acc {
                    Some(a) if per_output && blk > 0 => {
                        Ok(Some(b.rotate(&a, -((blk * s) as i64))?))
                    }
                    other => Ok(other),
                }
            })
            .collect::<Result<_>>()?;
        let mut acc: Option<B::Ct> = None;
        for p in parts.into_iter().flatten() {
            match acc.as_mut() {
                None => acc = Some(p),
                Some(a) => b.add_assign(a, &p)?,
            }
        }
        let packed_bias = outs.len() > 1 && outs.iter().any(|&j| bias_of(j) != 0.0);
        let mut acc = b.sum_or_zero(acc, x0, cs)?;
        if packed_bias {
            // biases placed at the block starts before the reduction
            let mut bv = vec![0.0; outs.len() * s];
            for (blk, &j) in outs.iter().enumerate() {
                bv[blk * s] = bias_of(j);
            }
            add_slot_constants(b, &mut acc, x0, &bv, cs)?;
        }
        b.rescale_assign(&mut acc)?;
        let mut t = 1;
        while t < s {
            let r = b.rotate(&acc, t as i64)?;
            b.add_assign(&mut acc, &r)?;
            t *= 2;
        }
        if let Some(&j) = outs.first()
            && !packed_bias
            && bias_of(j) != 0.0
        {
            b.add_const_assign(&mut acc, bias_of(j))?;
        }
        Ok(acc)
    })
}

/// [`Method::Residues`]: all outputs in one ciphertext, output `j` in slot `j`.
fn residues<B: Backend>(
    b: &B,
    l: &Linear,
    x: &Packed<B::Ct>,
    gi: Grid,
    modulus: usize,
    len: usize,
) -> Result<B::Ct> {
    let ws = l.weight.shape();
    let (m_out, k) = (ws[0], ws[1]);
    let x0 = x
        .cts
        .first()
        .ok_or_else(|| exec_err("fully connected layer without input ciphertexts"))?;
    let n = b.slots();
    let (level, cs) = (b.level(x0), b.neutral_scale(x0)?);
    let wd = l.weight.data();
    let m = x.mult;
    // per input ciphertext and rotation r: the slot vector of weights (slot t = u + r holds
    // output j's weight of the input at slot u, j = t mod modulus)
    let mut masks: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); modulus]; gi.c];
    for f in 0..k {
        let (c, u) = gi.locate(f);
        let per = masks
            .get_mut(c)
            .ok_or_else(|| exec_err(format!("input element {f} outside the grid")))?;
        for j in 0..m_out {
            let wv = wd[j * k + f] * m;
            if wv == 0.0 {
                continue;
            }
            let r = (j + modulus - u % modulus) % modulus;
            let v = &mut per[r];
            if v.is_empty() {
                v.resize(len, 0.0);
            }
            v[u + r] = wv;
        }
    }
    let steps: Vec<Vec<i64>> = masks
        .iter()
        .map(|per| {
            (0..modulus)
                .filter(|&r| !per[r].is_empty())
                .map(|r| -(r as i64))
                .collect()
        })
        .collect();
    let rots: Vec<Vec<B::Ct>> = par_map(gi.c, |c| rotations(b, &x.cts[c], &steps[c]))?;
    let mut xs: Vec<&B::Ct> = Vec::new();
    let mut pts = Vec::new();
    for (c, per) in masks.iter().enumerate() {
        for (i, &st) in steps[c].iter().enumerate() {
            let v = &per[(-st) as usize];
            let ct = rots
                .get(c)
                .and_then(|r| r.get(i))
                .ok_or_else(|| exec_err("missing rotated input"))?;
            xs.push(ct);
            pts.push(b.encode_cached(v, level, cs)?);
        }
    }
    let products: Vec<(usize, usize, &B::Pt)> =
        pts.iter().enumerate().map(|(i, p)| (0, i, &**p)).collect();
    let mut acc = if products.is_empty() {
        b.sum_or_zero(None, x0, cs)?
    } else {
        b.mul_plain_matrix(&xs, &products, 1)?
            .into_iter()
            .next()
            .ok_or_else(|| exec_err("fully connected layer: no sum"))?
    };
    let bias: Vec<f64> = (0..m_out).map(|j| bias_at(&l.bias, j)).collect();
    if bias.iter().any(|&v| v != 0.0) {
        add_slot_constants(b, &mut acc, x0, &bias, cs)?;
    }
    b.rescale_assign(&mut acc)?;
    let mut t = modulus;
    while t < len.min(n) {
        let r = b.rotate(&acc, t as i64)?;
        b.add_assign(&mut acc, &r)?;
        t *= 2;
    }
    Ok(acc)
}
