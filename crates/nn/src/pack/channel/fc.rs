//! The fully connected layer of the channel layout, reading the gapped (and multiplexed)
//! layout directly and packing several outputs per ciphertext.

use rayon::prelude::*;

use super::{add_slot_constants, bias_at, exec_err, par_map, rotations};
use crate::backend::Backend;
use crate::error::Result;
use crate::ir::Linear;
use crate::pack::{Grid, Packed};

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
