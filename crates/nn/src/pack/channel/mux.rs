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
//! layer by the rotation count, and with it whether the sum is evaluated double-hoisted
//! (baby steps and products over `Q ∪ P`, one ModDown per output; [`Backend::bsgs_sum`])
//! where the weights promise that to pay. A replicated input (the image copied into every block) is
//! read from the copy in the output lane's own block: no block rotation at all. Everything
//! accumulates at `x.scale * q_l` and is rescaled once: one level, as every convolution.
//! The weights sit in the plaintexts at the full scale `q_l` (no split with a mask).

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex, PoisonError};

use super::conv::{Tap, taps};
use super::{add_slot_constants, bias_at, exec_err};
use crate::backend::Backend;
use crate::backend::bsgs::Bsgs;
use crate::error::Result;
use crate::ir::Conv2d;
use crate::pack::{Grid, Packed};

/// Relative cost of a hoisted (baby) rotation against a plain (giant) one: hoisted
/// rotations share the decomposition of their input.
pub(super) const HOISTED_COST: f64 = 0.7;

/// Cost of one product with its plaintext and the addition (`plan::counts_cost`'s weights).
pub(super) const PRODUCT_COST: f64 = 0.07 + 0.017 + 0.02;

/// Relative cost of a double-hoisted baby step (the key's inner product and the
/// automorphism over `Q ∪ P`, no ModDown) against a plain rotation: measured at 0.65 of a
/// single-hoisted one (cifar_cnn4_swish4's second convolution, 140 baby steps).
const DOUBLE_BABY_COST: f64 = HOISTED_COST * 0.65;

/// Relative cost of a double-hoisted giant step (ModDown of one part, the key switch left
/// over `Q ∪ P`; the other part's ModDown once per output) against a plain rotation
/// (measured 0.9, the same layer's 62 giant steps).
const DOUBLE_GIANT_COST: f64 = 0.9;

/// Double hoisting is chosen where its weighted cost is below this fraction of the
/// single-hoisted one: the weights miss the memory traffic of the extended rotated inputs
/// (one more prime each, all kept until the products). Measured on mnist_resnet10 (2
/// threads, AVX2): the convolutions promised at least 8 % less ran 15-30 % faster, those
/// promised 5-7 % less between 6 % faster and 13 % slower.
const DOUBLE_MARGIN: f64 = 0.92;

/// Data primes assumed by [`MuxCost::weighted`] (the planner compares placements before it
/// knows levels).
const TYPICAL_PRIMES: usize = 7;

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
    /// Evaluated double-hoisted (see [`crate::backend::bsgs::Bsgs::double`]).
    pub double: bool,
}

impl MuxCost {
    /// A cost in units of one plain rotation (the weights of `plan::counts_cost`), for
    /// ciphertexts at a level the caller does not know (see [`Self::weighted_at`]).
    pub fn weighted(&self) -> f64 {
        self.weighted_at(TYPICAL_PRIMES)
    }

    /// [`Self::weighted`] for inputs over `primes` data primes (a double-hoisted product
    /// also runs over the special prime).
    pub fn weighted_at(&self, primes: usize) -> f64 {
        if self.double {
            let extra = (primes + 1) as f64 / primes.max(1) as f64;
            self.baby as f64 * DOUBLE_BABY_COST
                + self.giant as f64 * DOUBLE_GIANT_COST
                + self.products as f64 * PRODUCT_COST * extra
        } else {
            self.baby as f64 * HOISTED_COST
                + self.giant as f64
                + self.products as f64 * PRODUCT_COST
        }
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
            let o = go.channel_at(g, r_out);
            if o >= co {
                continue;
            }
            for j in 0..gi.c {
                for r_in in 0..ki {
                    let i = gi.channel_at(j, r_in);
                    if i >= ci {
                        continue;
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
    // distinct pairs and products, counted on their fields packed into one integer (the
    // planner costs every candidate split of every convolution on every calibration image:
    // sorting tuples was a third of a CIFAR CNN's plan); a field beyond 32 bits (never for
    // slots <= 2^17) falls back to sorting the tuples
    fn distinct<T: Ord>(mut v: Vec<T>) -> usize {
        v.sort_unstable();
        v.dedup();
        v.len()
    }
    fn packed(fields: [i64; 4]) -> Option<u128> {
        fields.iter().try_fold(0u128, |k, &f| {
            let f = i32::try_from(f).ok()?;
            Some((k << 32) | u128::from(f as u32))
        })
    }
    let count = |fields: &dyn Fn(&Term) -> Option<[i64; 4]>| -> usize {
        let keys: Option<Vec<u128>> = terms.iter().filter_map(fields).map(packed).collect();
        keys.map_or_else(
            || distinct(terms.iter().filter_map(fields).collect::<Vec<_>>()),
            distinct,
        )
    };
    let idx = |x: usize| i64::try_from(x).unwrap_or(i64::MAX);
    MuxCost {
        baby: count(&|t| (t.beta != 0).then(|| [0, 0, idx(t.j), t.beta])),
        giant: count(&|t| (t.gamma != 0).then(|| [0, 0, idx(t.g), t.gamma])),
        products: count(&|t| Some([idx(t.g), idx(t.j), t.gamma, t.beta])),
        double: false,
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

/// The cheapest split (see [`splits`]) and evaluation (single- or double-hoisted) for
/// inputs over `primes` data primes, and its cost.
#[allow(clippy::too_many_arguments)]
fn choose(
    gi: Grid,
    go: Grid,
    tp: &[Tap],
    slots: usize,
    weight: &(impl Fn(usize, usize, usize) -> f64 + Sync),
    co: usize,
    ci: usize,
    primes: usize,
) -> (Split, MuxCost) {
    let mut best: Option<(Split, MuxCost)> = None;
    for split in splits(gi, go) {
        let single = cost_of(&terms(gi, go, tp, slots, weight, co, ci, split));
        let double = MuxCost {
            double: true,
            ..single
        };
        let c = if double.weighted_at(primes) < DOUBLE_MARGIN * single.weighted_at(primes) {
            double
        } else {
            single
        };
        if best
            .as_ref()
            .is_none_or(|(_, b)| c.weighted_at(primes) < b.weighted_at(primes))
        {
            best = Some((split, c));
        }
    }
    best.unwrap_or((Split::TapBaby, MuxCost::default()))
}

/// What [`choose`] depends on: the grids, the window, the slots and primes, and which
/// weights are zero (a zero weight makes no term; the values of the others do not enter
/// the cost).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ChoiceKey {
    gi: Grid,
    go: Grid,
    shape: [usize; 4],
    stride: [usize; 2],
    pads: [usize; 4],
    slots: usize,
    primes: usize,
    /// Bit `f` set: flat weight `f` (times the input's multiplier) is non-zero.
    nonzero: Vec<u64>,
}

/// Choices of [`choose`] made in this process. The choice is a pure function of its
/// [`ChoiceKey`], and costing every candidate split builds and sorts every term of the
/// layer: the planner costs the same convolutions in every layout plan it compares and in
/// every calibration run, and the executor runs them on every image.
static CHOICES: LazyLock<Mutex<HashMap<ChoiceKey, (Split, MuxCost)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Entries [`CHOICES`] keeps before it starts afresh (a server holding many models).
const CHOICES_MAX: usize = 4096;

/// [`choose`] for convolution `c` from `gi` to `go` on inputs multiplied by `mult`,
/// remembered in [`CHOICES`].
#[allow(clippy::too_many_arguments)]
fn choose_memo(
    c: &Conv2d,
    gi: Grid,
    go: Grid,
    tp: &[Tap],
    slots: usize,
    weight: &(impl Fn(usize, usize, usize) -> f64 + Sync),
    mult: f64,
    primes: usize,
) -> (Split, MuxCost) {
    let ws = c.weight.shape();
    let wd = c.weight.data();
    let mut nonzero = vec![0u64; wd.len().div_ceil(64)];
    for (f, &w) in wd.iter().enumerate() {
        if w * mult != 0.0 {
            nonzero[f / 64] |= 1 << (f % 64);
        }
    }
    let key = ChoiceKey {
        gi,
        go,
        shape: [ws[0], ws[1], ws[2], ws[3]],
        stride: c.stride,
        pads: c.pads,
        slots,
        primes,
        nonzero,
    };
    let lock = || CHOICES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(&hit) = lock().get(&key) {
        return hit;
    }
    let chosen = choose(gi, go, tp, slots, weight, ws[0], ws[1], primes);
    let mut map = lock();
    if map.len() >= CHOICES_MAX {
        map.clear();
    }
    map.insert(key, chosen);
    chosen
}

/// The cost of [`conv2d_lanes`] for convolution `c` from `gi` to `go` (for the planner).
pub fn lanes_cost(c: &Conv2d, gi: Grid, go: Grid, slots: usize) -> MuxCost {
    let ws = c.weight.shape();
    let (ci, kh, kw) = (ws[1], ws[2], ws[3]);
    let tp = taps(gi, go, [kh, kw], c.stride, c.pads);
    let wd = c.weight.data();
    let weight = |o: usize, i: usize, t: usize| {
        let tap = &tp[t];
        wd[((o * ci + i) * kh + tap.ky) * kw + tap.kx]
    };
    choose_memo(c, gi, go, &tp, slots, &weight, 1.0, TYPICAL_PRIMES).1
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
    let primes = b.level(x0) + 1;
    let (split, cost) = choose_memo(c, gi, go, &tp, slots, &weight, m, primes);
    let terms = terms(gi, go, &tp, slots, &weight, co, ci, split);
    // rotated inputs (input, baby step) and groups (output, giant step), sorted
    let mut inputs: Vec<(usize, i64)> = terms.iter().map(|t| (t.j, t.beta)).collect();
    inputs.sort_unstable();
    inputs.dedup();
    // per group, per rotated input: the terms summed into one plaintext
    type Group = BTreeMap<usize, Vec<usize>>;
    let mut groups: BTreeMap<(usize, i64), Group> = BTreeMap::new();
    for (n, t) in terms.iter().enumerate() {
        let r = inputs
            .binary_search(&(t.j, t.beta))
            .map_err(|_| exec_err("rotated input missing"))?;
        groups
            .entry((t.g, t.gamma))
            .or_default()
            .entry(r)
            .or_default()
            .push(n);
    }
    let mut spec = Bsgs {
        inputs,
        groups: groups.keys().copied().collect(),
        terms: Vec::new(),
        n_out: go.c,
        double: cost.double,
    };
    // the terms of each product plaintext
    let mut members: Vec<&[usize]> = Vec::new();
    for (gi_, group) in groups.values().enumerate() {
        for (&r, ns) in group {
            spec.terms.push((gi_, r));
            members.push(ns);
        }
    }
    let level = b.level(x0);
    let cs = b.neutral_scale(x0)?;
    let diag = |p: usize, v: &mut [f64]| {
        let gamma = spec.groups[spec.terms[p].0].1;
        for &n in members[p] {
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
    };
    let xs: Vec<&B::Ct> = x.cts.iter().collect();
    let outs = b.bsgs_sum(&xs, &spec, &diag, level, cs)?;
    outs.into_iter()
        .enumerate()
        .map(|(g, acc)| {
            let mut acc = b.sum_or_zero(acc, x0, cs)?;
            let mut bias = vec![0.0; go.span()];
            let mut any = false;
            for r in 0..go.k.max(1) {
                let o = go.channel_at(g, r);
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

    /// A 3x3 convolution of 4 channels in 4 lanes of 64 slots to 8 channels in two such
    /// ciphertexts, weights `1 + (f mod 7)` except where `zero` says.
    fn lanes_case(zero: impl Fn(usize, usize) -> bool) -> (Conv2d, Grid, Grid, Vec<Tap>) {
        let (co, ci) = (8, 4);
        let data = (0..co * ci * 9)
            .map(|f| {
                let (o, i) = (f / (ci * 9), f / 9 % ci);
                if zero(o, i) {
                    0.0
                } else {
                    1.0 + (f % 7) as f64
                }
            })
            .collect();
        let c = Conv2d {
            weight: crate::tensor::Tensor::new(vec![co, ci, 3, 3], data).unwrap(),
            bias: None,
            stride: [1, 1],
            pads: [1, 1, 1, 1],
        };
        let grid = |n: usize| Grid {
            c: n,
            k: 4,
            bs: 64,
            ..Grid::plain(n, 8, 8, 8, 1)
        };
        let (gi, go) = (grid(1), grid(2));
        let tp = taps(gi, go, [3, 3], c.stride, c.pads);
        (c, gi, go, tp)
    }

    fn chosen(
        c: &Conv2d,
        gi: Grid,
        go: Grid,
        tp: &[Tap],
        mult: f64,
        memo: bool,
    ) -> (Split, MuxCost) {
        let ws = c.weight.shape();
        let (co, ci) = (ws[0], ws[1]);
        let wd = c.weight.data();
        let weight = |o: usize, i: usize, t: usize| {
            let tap = &tp[t];
            wd[((o * ci + i) * 3 + tap.ky) * 3 + tap.kx] * mult
        };
        if memo {
            choose_memo(c, gi, go, tp, 256, &weight, mult, 3)
        } else {
            choose(gi, go, tp, 256, &weight, co, ci, 3)
        }
    }

    #[test]
    fn remembered_choices_are_the_computed_ones() {
        let (c, gi, go, tp) = lanes_case(|_, _| false);
        let full = chosen(&c, gi, go, &tp, 1.0, false);
        assert!(full.1.products > 0);
        // computed, then remembered: the same both times, and for another non-zero multiplier
        for mult in [1.0, 1.0, -0.25] {
            assert_eq!(chosen(&c, gi, go, &tp, mult, true), full);
        }
        // zeros change the key: the second output ciphertext's channels all zero, then
        // every weight zero
        let (c3, ..) = lanes_case(|o, _| o >= 4);
        let fewer = chosen(&c3, gi, go, &tp, 1.0, false);
        assert!(
            fewer.1.products < full.1.products,
            "{fewer:?} against {full:?}"
        );
        assert_eq!(chosen(&c3, gi, go, &tp, 1.0, true), fewer);
        let none = chosen(&c, gi, go, &tp, 0.0, true);
        assert_eq!(none, chosen(&c, gi, go, &tp, 0.0, false));
        assert_eq!(none.1.products, 0);
        // and the first is still remembered as it was
        assert_eq!(chosen(&c, gi, go, &tp, 1.0, true), full);
    }
}
