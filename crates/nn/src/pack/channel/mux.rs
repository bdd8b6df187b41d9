//! Convolutions between multiplexed grids (several channels, *lanes*, per ciphertext, on
//! either side): every product is a plaintext of per-lane weights times a rotation of an
//! input ciphertext, organised baby-step giant-step.
//!
//! Output lane `r_o` of output ciphertext `g` at pixel slot `s` needs, for every input lane
//! `r_i` of input ciphertext `j` and tap `t`, the input slot `s + R` with
//! `R = offset_in(r_i) - offset_out(r_o) + step_t`. `R` splits into a block part
//! (`block_in bs_in - block_out bs_out`, a multiple of the block size), a sub-lane part
//! (interleaved lanes) and the tap step; one part is the *giant* step `γ`, applied once per
//! output ciphertext to a sum, the rest the *baby* step `β`, applied once per input
//! ciphertext (hoisted):
//! `out_g = sum_γ rot_γ( sum_{j, β} P_{g,j,γ,β} * rot_β(x_j) )`, where `P` holds weight
//! `W[o, i, t]` at slot `offset_out(r_o) + s + γ` for every output pixel whose tap is inside
//! the image (padding and garbage slots get 0). Which part the tap step joins is chosen per
//! layer by the rotation count. A replicated input (the image copied into every block) is
//! read from the copy in the output lane's own block: no block rotation at all. Everything
//! accumulates at `x.scale * q_l` and is rescaled once: one level, as every convolution.
//! The weights sit in the plaintexts at the full scale `q_l` (no split with a mask).

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::conv::{Tap, taps};
use super::{add_slot_constants, bias_at, exec_err, par_map, rotations};
use crate::backend::Backend;
use crate::error::Result;
use crate::ir::Conv2d;
use crate::pack::{Grid, Packed};

/// Relative cost of a hoisted (baby) rotation against a plain (giant) one: hoisted
/// rotations share the decomposition of their input.
pub(super) const HOISTED_COST: f64 = 0.7;

/// Cost of one product with its plaintext and the addition (`plan::counts_cost`'s weights).
pub(super) const PRODUCT_COST: f64 = 0.07 + 0.017 + 0.02;

/// One product of a multiplexed convolution: output ciphertext `g` gets
/// `W[o, i, tap] x rot_{γ+β}(x_j)` on output lane `r_out`.
#[derive(Debug, Clone, Copy)]
struct Term {
    g: usize,
    j: usize,
    gamma: i64,
    beta: i64,
    r_out: usize,
    w: f64,
    tap: usize,
}

/// Rotation counts of a multiplexed convolution: baby (hoisted, per input ciphertext) and
/// giant (per output ciphertext) steps, and the plaintext products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MuxCost {
    /// Hoisted rotations over all input ciphertexts.
    pub baby: usize,
    /// Plain rotations over all output ciphertexts.
    pub giant: usize,
    /// Plaintext products.
    pub products: usize,
}

impl MuxCost {
    /// A cost in units of one plain rotation (the weights of `plan::counts_cost`).
    pub fn weighted(&self) -> f64 {
        self.baby as f64 * HOISTED_COST + self.giant as f64 + self.products as f64 * PRODUCT_COST
    }
}

/// `k` as a rotation step in `(-slots/2, slots/2]`.
fn signed(k: i64, slots: usize) -> i64 {
    let n = slots as i64;
    let r = k.rem_euclid(n);
    if r > n / 2 { r - n } else { r }
}

/// How a term's rotation `R = block + sub + step` splits into a giant step `γ` (per output
/// ciphertext, applied to a sum) and a baby step `β` (per input ciphertext, hoisted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// `γ` = block part, `β` = sub-lane part + tap step.
    TapBaby,
    /// `γ` = block part + tap step, `β` = sub-lane part.
    TapGiant,
    /// `β` = `R` modulo `m` (centred), `γ = R - β`: the whole rotation regrouped, e.g. rows
    /// as giant steps and columns as baby steps, whatever part (tap, sub-lane) they come from.
    Modulo(i64),
}

impl Split {
    fn apply(self, block: i64, sub: i64, step: i64) -> (i64, i64) {
        match self {
            Split::TapBaby => (block, sub + step),
            Split::TapGiant => (block + step, sub),
            Split::Modulo(m) => {
                let r = block + sub + step;
                let mut beta = r.rem_euclid(m);
                if beta > m / 2 {
                    beta -= m;
                }
                (r - beta, beta)
            }
        }
    }
}

/// Whether `gi` is replicated with all its lanes inside one block (every block a copy), so
/// that an output lane reads the copy in its own block.
fn replicated(gi: Grid) -> bool {
    gi.reps > 1 && gi.k.max(1) <= gi.per_block()
}

/// The terms of a convolution from `gi` to `go` with rotations split by `split`.
#[allow(clippy::too_many_arguments)]
fn terms(
    gi: Grid,
    go: Grid,
    tp: &[Tap],
    slots: usize,
    weight: &(impl Fn(usize, usize, usize) -> f64 + Sync),
    co: usize,
    ci: usize,
    split: Split,
) -> Vec<Term> {
    let (ki, ko) = (gi.k.max(1), go.k.max(1));
    let mut v = Vec::new();
    for g in 0..go.c {
        for r_out in 0..ko {
            let o = g * ko + r_out;
            if o >= co {
                break;
            }
            for j in 0..gi.c {
                for r_in in 0..ki {
                    let i = j * ki + r_in;
                    if i >= ci {
                        break;
                    }
                    // a replicated input holds its lanes in every block: read the copy in
                    // the output lane's own block (no block rotation)
                    let replica = replicated(gi) && gi.bs == go.bs && go.block(r_out) < gi.reps;
                    let block = if replica {
                        0
                    } else {
                        (gi.block(r_in) * gi.bs) as i64 - (go.block(r_out) * go.bs) as i64
                    };
                    let sub = gi.sub_offset(r_in) as i64 - go.sub_offset(r_out) as i64;
                    for (t, tap) in tp.iter().enumerate() {
                        let w = weight(o, i, t);
                        if w == 0.0 {
                            continue;
                        }
                        let (gamma, beta) = split.apply(block, sub, tap.step);
                        v.push(Term {
                            g,
                            j,
                            gamma: signed(gamma, slots),
                            beta: signed(beta, slots),
                            r_out,
                            w,
                            tap: t,
                        });
                    }
                }
            }
        }
    }
    v
}

fn cost_of(terms: &[Term]) -> MuxCost {
    fn distinct<T: Ord>(mut v: Vec<T>) -> usize {
        v.sort_unstable();
        v.dedup();
        v.len()
    }
    let babies = terms
        .iter()
        .filter(|t| t.beta != 0)
        .map(|t| (t.j, t.beta))
        .collect();
    let giants = terms
        .iter()
        .filter(|t| t.gamma != 0)
        .map(|t| (t.g, t.gamma))
        .collect();
    let products = terms.iter().map(|t| (t.g, t.j, t.gamma, t.beta)).collect();
    MuxCost {
        baby: distinct::<(usize, i64)>(babies),
        giant: distinct::<(usize, i64)>(giants),
        products: distinct::<(usize, usize, i64, i64)>(products),
    }
}

/// The splits worth trying: the tap step on either side, and the whole rotation regrouped
/// modulo each row step of either grid (rows giant, columns and nearby lanes baby).
fn splits(gi: Grid, go: Grid) -> Vec<Split> {
    let mut ms: Vec<usize> = [gi.ry, go.ry, gi.dy, go.dy, gi.ry / 2, go.ry / 2]
        .into_iter()
        .filter(|&m| m >= 2)
        .collect();
    ms.sort_unstable();
    ms.dedup();
    let mut v = vec![Split::TapBaby, Split::TapGiant];
    v.extend(ms.into_iter().map(|m| Split::Modulo(m as i64)));
    v
}

/// The cheapest split (see [`splits`]) and its cost.
fn choose(
    gi: Grid,
    go: Grid,
    tp: &[Tap],
    slots: usize,
    weight: &(impl Fn(usize, usize, usize) -> f64 + Sync),
    co: usize,
    ci: usize,
) -> (Vec<Term>, MuxCost) {
    let mut best: Option<(Vec<Term>, MuxCost)> = None;
    for split in splits(gi, go) {
        let t = terms(gi, go, tp, slots, weight, co, ci, split);
        let c = cost_of(&t);
        if best
            .as_ref()
            .is_none_or(|(_, b)| c.weighted() < b.weighted())
        {
            best = Some((t, c));
        }
    }
    best.unwrap_or_default()
}

/// The cost of [`conv2d_lanes`] for convolution `c` from `gi` to `go` (for the planner).
pub fn lanes_cost(c: &Conv2d, gi: Grid, go: Grid, slots: usize) -> MuxCost {
    let ws = c.weight.shape();
    let (co, ci, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let tp = taps(gi, go, [kh, kw], c.stride, c.pads);
    let wd = c.weight.data();
    let weight = |o: usize, i: usize, t: usize| {
        let tap = &tp[t];
        wd[((o * ci + i) * kh + tap.ky) * kw + tap.kx]
    };
    choose(gi, go, &tp, slots, &weight, co, ci).1
}

/// Convolution from grid `gi` to grid `go`, either or both multiplexed (see the module docs).
pub(super) fn conv2d_lanes<B: Backend>(
    b: &B,
    c: &Conv2d,
    x: &Packed<B::Ct>,
    gi: Grid,
    go: Grid,
) -> Result<Vec<B::Ct>> {
    let ws = c.weight.shape();
    let (co, ci, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    if x.cts.len() != gi.c || gi.c * gi.k.max(1) < ci || go.c * go.k.max(1) < co {
        return Err(exec_err(format!(
            "multiplexed convolution {ci} -> {co} channels on {} input ciphertexts of grid \
             {gi:?} to grid {go:?}",
            x.cts.len()
        )));
    }
    let x0 = x
        .cts
        .first()
        .ok_or_else(|| exec_err("convolution without input ciphertexts"))?;
    let slots = b.slots();
    let tp = taps(gi, go, [kh, kw], c.stride, c.pads);
    let tap0 = tp
        .first()
        .ok_or_else(|| exec_err("convolution without taps"))?;
    let wd = c.weight.data();
    let m = x.mult;
    let weight = |o: usize, i: usize, t: usize| {
        let tap = &tp[t];
        wd[((o * ci + i) * kh + tap.ky) * kw + tap.kx] * m
    };
    let (terms, _) = choose(gi, go, &tp, slots, &weight, co, ci);
    // baby steps per input ciphertext, hoisted
    let mut babies: Vec<Vec<i64>> = vec![Vec::new(); gi.c];
    for t in &terms {
        babies[t.j].push(t.beta);
    }
    for s in &mut babies {
        s.sort_unstable();
        s.dedup();
    }
    let rots: Vec<Vec<B::Ct>> = par_map(gi.c, |j| rotations(b, &x.cts[j], &babies[j]))?;
    let rot_of = |j: usize, beta: i64| -> Result<&B::Ct> {
        babies[j]
            .binary_search(&beta)
            .ok()
            .and_then(|k| rots[j].get(k))
            .ok_or_else(|| exec_err(format!("baby step {beta} of input {j} missing")))
    };
    // per output ciphertext and giant step: the (input, baby step) products
    type Group = BTreeMap<(usize, i64), Vec<usize>>;
    let mut groups: BTreeMap<(usize, i64), Group> = BTreeMap::new();
    for (n, t) in terms.iter().enumerate() {
        groups
            .entry((t.g, t.gamma))
            .or_default()
            .entry((t.j, t.beta))
            .or_default()
            .push(n);
    }
    let level = b.level(x0);
    let cs = b.neutral_scale(x0)?;
    let keys: Vec<(usize, i64)> = groups.keys().copied().collect();
    // every rotated input once, in (input, baby step) order
    let inputs: Vec<(usize, i64)> = babies
        .iter()
        .enumerate()
        .flat_map(|(j, bs)| bs.iter().map(move |&beta| (j, beta)))
        .collect();
    let xs: Vec<&B::Ct> = inputs
        .iter()
        .map(|&(j, beta)| rot_of(j, beta))
        .collect::<Result<_>>()?;
    // the plaintexts of every (output sum, rotated input) pair
    let pts: Vec<Vec<(usize, std::sync::Arc<B::Pt>)>> = keys
        .par_iter()
        .map(|key| -> Result<Vec<(usize, std::sync::Arc<B::Pt>)>> {
            let gamma = key.1;
            let group = &groups[key];
            let mut v = vec![0.0; slots];
            let mut out = Vec::with_capacity(group.len());
            for (&(j, beta), ns) in group {
                v.fill(0.0);
                for &n in ns {
                    let t = &terms[n];
                    // a replicated output gets its weights in every copy
                    for rep in 0..go.reps.max(1) {
                        let base = (go.offset(t.r_out) + rep * go.bs) as i64 + gamma;
                        for &(s, inside) in &tp[t.tap].cover {
                            if inside {
                                let slot = (base + s as i64).rem_euclid(slots as i64) as usize;
                                v[slot] += t.w;
                            }
                        }
                    }
                }
                let i = inputs
                    .binary_search(&(j, beta))
                    .map_err(|_| exec_err("rotated input missing"))?;
                out.push((i, b.encode_cached(&v, level, cs)?));
            }
            Ok(out)
        })
        .collect::<Result<_>>()?;
    let products: Vec<(usize, usize, &B::Pt)> = pts
        .iter()
        .enumerate()
        .flat_map(|(o, v)| v.iter().map(move |(i, p)| (o, *i, &**p)))
        .collect();
    let sums = b.mul_plain_matrix(&xs, &products, keys.len())?;
    let parts: Vec<(usize, B::Ct)> = keys
        .par_iter()
        .zip(sums.into_par_iter())
        .map(|(&(g, gamma), acc)| -> Result<(usize, B::Ct)> {
            if gamma == 0 {
                Ok((g, acc))
            } else {
                Ok((g, b.rotate(&acc, gamma)?))
            }
        })
        .collect::<Result<_>>()?;
    let mut outs: Vec<Option<B::Ct>> = vec![None; go.c];
    for (g, p) in parts {
        match outs[g].as_mut() {
            None => outs[g] = Some(p),
            Some(a) => b.add_assign(a, &p)?,
        }
    }
    outs.into_iter()
        .enumerate()
        .map(|(g, acc)| {
            let mut acc = b.sum_or_zero(acc, x0, cs)?;
            let mut bias = vec![0.0; go.span()];
            let mut any = false;
            for r in 0..go.k.max(1) {
                let o = g * go.k.max(1) + r;
                let bv = bias_at(&c.bias, o);
                if o < co && bv != 0.0 {
                    any = true;
                    let base = go.offset(r);
                    for &(s, _) in &tap0.cover {
                        bias[base + s] = bv;
                    }
                }
            }
            if any {
                add_slot_constants(b, &mut acc, x0, &go.tile(bias), cs)?;
            }
            b.rescale_assign(&mut acc)?;
            Ok(acc)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_steps() {
        assert_eq!(signed(5, 16), 5);
        assert_eq!(signed(9, 16), -7);
        assert_eq!(signed(-3, 16), -3);
        assert_eq!(signed(8, 16), 8);
        assert_eq!(signed(16, 16), 0);
    }
}
