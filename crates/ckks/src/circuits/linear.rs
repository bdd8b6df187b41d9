//! Linear transforms of the slot vector given by their diagonals, evaluated by baby-step
//! giant-step with hoisted baby rotations.
//!
//! A matrix `M` on `S = N/2` slots is stored by its non-zero diagonals
//! `d_k[j] = M[j][(j + k) mod S]`, so that `M v = sum_k d_k ⊙ rot_k(v)`. Writing `k = g + b`
//! with `b` a *baby* step and `g` a multiple of the width `w`,
//! `M v = sum_g rot_g( sum_b rot_{-g}(d_{g+b}) ⊙ rot_b(v) )`: the baby rotations `rot_b(v)`
//! share one key-switching decomposition of `v` (hoisting), the diagonals are pre-rotated in
//! the clear, and only one rotation per giant step remains. [`LinearTransform::encode`] picks
//! the width minimising the rotations (giant rotations weigh more than hoisted baby ones) and
//! encodes the pre-rotated diagonals once, at the level and scale they will be used at.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Add, Mul};

use rayon::prelude::*;

use crate::ciphertext::{Ciphertext, Plaintext};
use crate::encoding::{Complex, Encoder};
use crate::error::{CkksError, Result};
use crate::eval::{Evaluator, ExtCiphertext};
use crate::keys::GaloisKeys;
use crate::types::{Level, Scale};

/// A complex matrix on the slot vector, by its diagonals.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearTransform {
    slots: usize,
    diags: BTreeMap<usize, Vec<Complex>>,
}

/// A baby-step giant-step split: baby steps and giant steps (signed rotations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BsgsSplit {
    /// Width: giant steps are multiples of it, baby steps lie in `[0, width)`.
    pub width: i64,
    /// Baby steps.
    pub babies: Vec<i64>,
    /// Giant steps.
    pub giants: Vec<i64>,
}

impl BsgsSplit {
    /// Non-zero rotations the split needs (babies then giants, deduplicated).
    pub fn rotations(&self) -> Vec<i64> {
        let set: BTreeSet<i64> = self
            .babies
            .iter()
            .chain(&self.giants)
            .copied()
            .filter(|&r| r != 0)
            .collect();
        set.into_iter().collect()
    }
}

impl LinearTransform {
    /// The zero matrix on `slots` slots (a power of two).
    pub fn zero(slots: usize) -> Self {
        Self {
            slots,
            diags: BTreeMap::new(),
        }
    }

    /// The diagonal matrix `diag(d)`.
    pub fn diagonal(d: Vec<Complex>) -> Self {
        let slots = d.len();
        let mut diags = BTreeMap::new();
        diags.insert(0, d);
        Self { slots, diags }
    }

    /// A matrix from its diagonals (`k -> d_k`, each of length `slots`).
    pub fn from_diagonals(slots: usize, diags: BTreeMap<usize, Vec<Complex>>) -> Result<Self> {
        if !slots.is_power_of_two() {
            return Err(CkksError::InvalidArgument(format!(
                "{slots} slots: a power of two is needed"
            )));
        }
        for (&k, d) in &diags {
            if k >= slots || d.len() != slots {
                return Err(CkksError::InvalidArgument(format!(
                    "diagonal {k} of length {} for {slots} slots",
                    d.len()
                )));
            }
        }
        Ok(Self { slots, diags })
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The non-zero diagonals.
    pub fn diagonals(&self) -> &BTreeMap<usize, Vec<Complex>> {
        &self.diags
    }

    /// `M[row][col] += v`.
    pub fn add_entry(&mut self, row: usize, col: usize, v: Complex) {
        let s = self.slots;
        let k = (col + s - row % s) % s;
        let d = self
            .diags
            .entry(k)
            .or_insert_with(|| vec![Complex::default(); s]);
        if let Some(x) = d.get_mut(row % s) {
            *x = x.add(v);
        }
    }

    /// `M v` in f64.
    pub fn apply(&self, v: &[Complex]) -> Vec<Complex> {
        let s = self.slots;
        let mut out = vec![Complex::default(); s];
        for (&k, d) in &self.diags {
            for (j, (o, dj)) in out.iter_mut().zip(d).enumerate() {
                if let Some(x) = v.get((j + k) % s) {
                    *o = o.add(dj.mul(*x));
                }
            }
        }
        out
    }

    /// `self * first` (apply `first`, then `self`). Diagonals are composed directly:
    /// `(A B)_{k+l}[j] += a_k[j] b_l[j + k]`.
    pub fn compose(&self, first: &LinearTransform) -> Result<LinearTransform> {
        if self.slots != first.slots {
            return Err(CkksError::InvalidArgument(format!(
                "composing matrices on {} and {} slots",
                self.slots, first.slots
            )));
        }
        let s = self.slots;
        let mut out: BTreeMap<usize, Vec<Complex>> = BTreeMap::new();
        for (&k, a) in &self.diags {
            for (&l, b) in &first.diags {
                let d = out
                    .entry((k + l) % s)
                    .or_insert_with(|| vec![Complex::default(); s]);
                for (j, (dj, aj)) in d.iter_mut().zip(a).enumerate() {
                    if let Some(bj) = b.get((j + k) % s) {
                        *dj = dj.add(aj.mul(*bj));
                    }
                }
            }
        }
        let mut m = LinearTransform {
            slots: s,
            diags: out,
        };
        m.prune(0.0);
        Ok(m)
    }

    /// Multiplies every entry by `c`.
    pub fn scale_by(&mut self, c: Complex) {
        for d in self.diags.values_mut() {
            for x in d.iter_mut() {
                *x = x.mul(c);
            }
        }
    }

    /// Multiplies row `j` by `r[j]` (`diag(r) * self`).
    pub fn scale_rows(&mut self, r: &[Complex]) {
        for d in self.diags.values_mut() {
            for (x, rj) in d.iter_mut().zip(r) {
                *x = x.mul(*rj);
            }
        }
    }

    /// Drops diagonals whose entries are all at most `eps` in modulus.
    pub fn prune(&mut self, eps: f64) {
        self.diags.retain(|_, d| d.iter().any(|x| x.abs() > eps));
    }

    fn signed(&self, k: usize) -> i64 {
        let s = self.slots as i64;
        let k = k as i64;
        if k > s / 2 { k - s } else { k }
    }

    /// The baby-step giant-step split with the fewest weighted rotations for single hoisting
    /// (a giant rotation counts 1, a hoisted baby rotation 0.6).
    pub fn bsgs_split(&self) -> BsgsSplit {
        self.bsgs_split_weighted(Hoisting::Single.baby_weight())
    }

    /// The split minimising `giants + baby_weight * babies`.
    pub fn bsgs_split_weighted(&self, baby_weight: f64) -> BsgsSplit {
        let ks: Vec<i64> = self.diags.keys().map(|&k| self.signed(k)).collect();
        let g = ks.iter().fold(0i64, |acc, &k| gcd(acc, k.abs())).max(1);
        let mut best: Option<(f64, BsgsSplit)> = None;
        let mut w = g;
        while w <= self.slots as i64 {
            let babies: BTreeSet<i64> = ks.iter().map(|&k| k.rem_euclid(w)).collect();
            let giants: BTreeSet<i64> = ks.iter().map(|&k| k - k.rem_euclid(w)).collect();
            let nb = babies.iter().filter(|&&b| b != 0).count() as f64;
            let ng = giants.iter().filter(|&&g| g != 0).count() as f64;
            let cost = ng + baby_weight * nb;
            let split = BsgsSplit {
                width: w,
                babies: babies.into_iter().collect(),
                giants: giants.into_iter().collect(),
            };
            if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                best = Some((cost, split));
            }
            w *= 2;
        }
        best.map(|(_, s)| s).unwrap_or(BsgsSplit {
            width: 1,
            babies: vec![0],
            giants: vec![0],
        })
    }

    /// Rotations [`EncodedLinearTransform::apply`] needs (single hoisting).
    pub fn rotations(&self) -> Vec<i64> {
        self.bsgs_split().rotations()
    }

    /// Encodes the pre-rotated diagonals at `level` and `scale` (the scale the ciphertext's
    /// scale is multiplied by) for single hoisting. Plaintexts take `(level + 1) N` words each.
    pub fn encode(
        &self,
        enc: &Encoder,
        level: Level,
        scale: Scale,
    ) -> Result<EncodedLinearTransform> {
        self.encode_with(enc, level, scale, Hoisting::Single)
    }

    /// Encodes for the given hoisting; [`Hoisting::Double`] plaintexts also cover the special
    /// primes (`(level + 1 + |P|) N` words each).
    pub fn encode_with(
        &self,
        enc: &Encoder,
        level: Level,
        scale: Scale,
        hoisting: Hoisting,
    ) -> Result<EncodedLinearTransform> {
        self.encode_with_weight(enc, level, scale, hoisting, hoisting.baby_weight())
    }

    /// Encodes with the split minimising `giants + baby_weight * babies` (e.g. to reuse the
    /// rotation keys of another transform encoded with other hoisting).
    pub fn encode_with_weight(
        &self,
        enc: &Encoder,
        level: Level,
        scale: Scale,
        hoisting: Hoisting,
        baby_weight: f64,
    ) -> Result<EncodedLinearTransform> {
        if enc.slots() != self.slots {
            return Err(CkksError::InvalidArgument(format!(
                "matrix on {} slots for parameters with {} slots",
                self.slots,
                enc.slots()
            )));
        }
        let split = self.bsgs_split_weighted(baby_weight);
        let s = self.slots as i64;
        let w = split.width;
        let mut giants: BTreeMap<i64, Vec<(i64, Vec<Complex>)>> = BTreeMap::new();
        for (&k, d) in &self.diags {
            let ks = self.signed(k);
            let b = ks.rem_euclid(w);
            let g = ks - b;
            // rot_{-g}(d)[j] = d[j - g]
            let shifted: Vec<Complex> = (0..s)
                .map(|j| {
                    d.get((j - g).rem_euclid(s) as usize)
                        .copied()
                        .unwrap_or_default()
                })
                .collect();
            giants.entry(g).or_default().push((b, shifted));
        }
        let jobs: Vec<(i64, i64, Vec<Complex>)> = giants
            .into_iter()
            .flat_map(|(g, v)| v.into_iter().map(move |(b, d)| (g, b, d)))
            .collect();
        let encoded = jobs
            .into_par_iter()
            .map(|(g, b, d)| {
                let pt = match hoisting {
                    Hoisting::Single => enc.encode_complex(&d, level, scale)?,
                    Hoisting::Double => enc.encode_complex_ext(&d, level, scale)?,
                };
                Ok((g, b, pt))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut by_giant: BTreeMap<i64, Vec<(i64, Plaintext)>> = BTreeMap::new();
        for (g, b, pt) in encoded {
            by_giant.entry(g).or_default().push((b, pt));
        }
        Ok(EncodedLinearTransform {
            level,
            scale,
            hoisting,
            babies: split.babies,
            giants: by_giant.into_iter().collect(),
        })
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// How baby-step rotations are shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hoisting {
    /// One decomposition of the input for all baby steps; each baby and giant rotation ends
    /// with its own ModDown.
    Single,
    /// Baby rotations stay over `Q ∪ P` (no ModDown), are multiplied by plaintexts over
    /// `Q ∪ P` and summed; each giant step then needs one ModDown of one polynomial and the
    /// result one final ModDown (Bossuat et al., Eurocrypt 2021). Cheaper baby steps, so the
    /// split takes more of them; plaintexts are larger.
    Double,
}

impl Hoisting {
    /// Cost of a baby rotation relative to a giant one, as measured at the `boot` preset.
    pub fn baby_weight(self) -> f64 {
        match self {
            Self::Single => 0.6,
            Self::Double => 0.25,
        }
    }
}

/// A [`LinearTransform`] encoded for one level and scale.
#[derive(Clone, Debug)]
pub struct EncodedLinearTransform {
    level: Level,
    scale: Scale,
    hoisting: Hoisting,
    babies: Vec<i64>,
    giants: Vec<(i64, Vec<(i64, Plaintext)>)>,
}

impl EncodedLinearTransform {
    /// Level of the plaintexts (the ciphertext must be at most this level).
    pub fn level(&self) -> Level {
        self.level
    }

    /// Scale of the plaintexts.
    pub fn scale(&self) -> Scale {
        self.scale
    }

    /// Non-zero rotations needed.
    pub fn rotations(&self) -> Vec<i64> {
        let set: BTreeSet<i64> = self
            .babies
            .iter()
            .copied()
            .chain(self.giants.iter().map(|(g, _)| *g))
            .filter(|&r| r != 0)
            .collect();
        set.into_iter().collect()
    }

    /// Number of plaintext diagonals.
    pub fn num_diagonals(&self) -> usize {
        self.giants.iter().map(|(_, v)| v.len()).sum()
    }

    /// Memory held by the plaintexts, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.giants
            .iter()
            .flat_map(|(_, v)| v.iter())
            .map(|(_, pt)| pt.poly.data().len() * 8)
            .sum()
    }

    /// `M ct`, no rescale: the result is at `ct`'s level and at scale `ct.scale * self.scale()`.
    pub fn apply(&self, ev: &Evaluator, ct: &Ciphertext, gk: &GaloisKeys) -> Result<Ciphertext> {
        if ct.level() > self.level
            || (self.hoisting == Hoisting::Double && ct.level() != self.level)
        {
            return Err(CkksError::LevelMismatch {
                lhs: ct.level(),
                rhs: self.level,
            });
        }
        if self.hoisting == Hoisting::Double {
            return self.apply_double(ev, ct, gk);
        }
        let dec = ev.hoist(ct)?;
        let rotated: BTreeMap<i64, Ciphertext> = self
            .babies
            .par_iter()
            .map(|&b| {
                let r = if b == 0 {
                    ct.clone()
                } else {
                    ev.rotate_hoisted_with(ct, &dec, b, gk)?
                };
                Ok((b, r))
            })
            .collect::<Result<_>>()?;
        drop(dec);
        let parts = self
            .giants
            .par_iter()
            .map(|(g, list)| -> Result<Ciphertext> {
                let mut acc: Option<Ciphertext> = None;
                for (b, pt) in list {
                    let x = rotated.get(b).ok_or_else(|| {
                        CkksError::InvalidArgument(format!("baby step {b} missing"))
                    })?;
                    match acc.as_mut() {
                        None => acc = Some(ev.mul_plain(x, pt)?),
                        Some(a) => ev.mul_plain_add_assign(a, x, pt)?,
                    }
                }
                let acc =
                    acc.ok_or_else(|| CkksError::InvalidArgument("empty giant step".into()))?;
                if *g == 0 {
                    Ok(acc)
                } else {
                    ev.rotate(&acc, *g, gk)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let mut it = parts.into_iter();
        let mut out = it
            .next()
            .ok_or_else(|| CkksError::InvalidArgument("empty linear transform".into()))?;
        for p in it {
            ev.add_assign(&mut out, &p)?;
        }
        Ok(out)
    }
}

impl EncodedLinearTransform {
    fn apply_double(&self, ev: &Evaluator, ct: &Ciphertext, gk: &GaloisKeys) -> Result<Ciphertext> {
        let dec = ev.hoist(ct)?;
        let rotated: BTreeMap<i64, ExtCiphertext> = self
            .babies
            .par_iter()
            .map(|&b| Ok((b, ev.rotate_hoisted_ext(ct, &dec, b, gk)?)))
            .collect::<Result<_>>()?;
        drop(dec);
        let parts = self
            .giants
            .par_iter()
            .map(|(g, list)| -> Result<ExtCiphertext> {
                let mut acc: Option<ExtCiphertext> = None;
                for (b, pt) in list {
                    let x = rotated.get(b).ok_or_else(|| {
                        CkksError::InvalidArgument(format!("baby step {b} missing"))
                    })?;
                    ev.ext_mul_plain_add_assign(&mut acc, x, pt)?;
                }
                let acc =
                    acc.ok_or_else(|| CkksError::InvalidArgument("empty giant step".into()))?;
                ev.ext_rotate(&acc, *g, gk)
            })
            .collect::<Result<Vec<_>>>()?;
        drop(rotated);
        let mut it = parts.into_iter();
        let mut out = it
            .next()
            .ok_or_else(|| CkksError::InvalidArgument("empty linear transform".into()))?;
        for p in it {
            ev.ext_add_assign(&mut out, &p)?;
        }
        ev.ext_mod_down(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(re: f64, im: f64) -> Complex {
        Complex::new(re, im)
    }

    #[test]
    fn compose_matches_sequential_application() {
        let s = 8;
        let mut a = LinearTransform::zero(s);
        let mut b = LinearTransform::zero(s);
        for j in 0..s {
            a.add_entry(j, (j + 1) % s, c(j as f64, 1.0));
            a.add_entry(j, j, c(0.5, -0.25));
            b.add_entry(j, (j + 3) % s, c(-1.0, j as f64 * 0.1));
            b.add_entry(j, (j + s - 2) % s, c(2.0, 0.0));
        }
        let v: Vec<Complex> = (0..s).map(|j| c(j as f64, 1.0 - j as f64)).collect();
        let ab = a.compose(&b).unwrap();
        let want = a.apply(&b.apply(&v));
        let got = ab.apply(&v);
        for (x, y) in want.iter().zip(&got) {
            assert!((*x - *y).abs() < 1e-12);
        }
    }

    #[test]
    fn split_covers_every_diagonal() {
        let s = 64;
        let mut a = LinearTransform::zero(s);
        for t in -7i64..=7 {
            for j in 0..s {
                let col = (j as i64 + 4 * t).rem_euclid(s as i64) as usize;
                a.add_entry(j, col, c(1.0, 0.0));
            }
        }
        let sp = a.bsgs_split();
        for &k in a.diagonals().keys() {
            let ks = a.signed(k);
            let b = ks.rem_euclid(sp.width);
            assert!(sp.babies.contains(&b) && sp.giants.contains(&(ks - b)));
        }
        assert!(sp.rotations().len() < 14, "{sp:?}");
    }
}
