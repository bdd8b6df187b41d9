//! The simulated backend: level and scale bookkeeping, op counts and the rotation steps
//! used, without any cryptography. The planner runs the layer code on it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use henn_ckks::Scale;

use super::{Backend, OpCounts, scale_of};
use crate::error::{ExecError, Result};

/// A simulated ciphertext: level and scale only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimCt {
    /// Level.
    pub level: usize,
    /// Scale.
    pub scale: Scale,
    /// Three parts: a square not yet relinearized.
    pub unrelinearized: bool,
}

/// The simulated backend over a modulus chain.
#[derive(Debug)]
pub struct Simulated {
    primes: Vec<f64>,
    slots: usize,
    counts: OpCounts,
    /// Rotation step -> highest level it was used at.
    rotations: Mutex<BTreeMap<i64, usize>>,
    /// Highest level of a relinearization (`None`: none yet).
    relin: Mutex<Option<usize>>,
    /// Complex pairs: products as pair products (see `Encrypted::with_complex_pairs`).
    pairs: bool,
}

pub(crate) fn check_add(a: (usize, Scale), b: (usize, Scale)) -> Result<()> {
    if a.0 != b.0 {
        return Err(ExecError::LevelMismatch { lhs: a.0, rhs: b.0 }.into());
    }
    if !a.1.matches(b.1) {
        return Err(ExecError::ScaleMismatch {
            lhs: a.1.log2(),
            rhs: b.1.log2(),
        }
        .into());
    }
    Ok(())
}

pub(crate) fn check_pt_level(ct: usize, pt: usize) -> Result<()> {
    if pt < ct {
        return Err(ExecError::PlaintextLevel { pt, ct }.into());
    }
    Ok(())
}

/// A plaintext of `len` values fits `slots` slots.
pub(crate) fn check_slots(len: usize, slots: usize) -> Result<()> {
    if len > slots {
        return Err(ExecError::SlotOverflow {
            need: len,
            have: slots,
        }
        .into());
    }
    Ok(())
}

/// The product of two ciphertexts needs them at one level.
pub(crate) fn check_mul_levels(a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(ExecError::LevelMismatch { lhs: a, rhs: b }.into());
    }
    Ok(())
}

/// A rescale needs a prime left.
pub(crate) fn check_rescale(level: usize) -> Result<()> {
    if level == 0 {
        return Err(ExecError::OutOfLevels("rescale at level 0").into());
    }
    Ok(())
}

/// Dropping primes can only lower the level.
pub(crate) fn check_drop(from: usize, to: usize) -> Result<()> {
    if to > from {
        return Err(ExecError::RaiseLevel { from, to }.into());
    }
    Ok(())
}

impl Simulated {
    /// A simulated backend whose data primes are `primes` (`q_0` first) with `slots` slots.
    pub fn new(primes: Vec<f64>, slots: usize) -> Self {
        Self {
            primes,
            slots,
            counts: OpCounts::default(),
            rotations: Mutex::new(BTreeMap::new()),
            relin: Mutex::new(None),
            pairs: false,
        }
    }

    /// With `on`, products are pair products as the encrypted backend makes them for a
    /// plan with complex pairs: one conjugation per operand (counted as a rotation), one
    /// relinearization, the scale 4 times the product of the scales.
    pub fn with_complex_pairs(mut self, on: bool) -> Self {
        self.pairs = on;
        self
    }

    /// The factor on a product's scale and the conjugations of a product of `operands`
    /// distinct ciphertexts (pair products; 1 and 0 otherwise).
    fn pair_product(&self, operands: u64) -> f64 {
        if self.pairs {
            OpCounts::bump(&self.counts.rotate, operands);
            4.0
        } else {
            1.0
        }
    }

    /// A chain of idealised primes `2^bits` (for depth counting before primes exist).
    pub fn with_bits(q_bits: &[u32], slots: usize) -> Self {
        Self::new(q_bits.iter().map(|&b| (b as f64).exp2()).collect(), slots)
    }

    /// The primes of real CKKS parameters.
    pub fn for_params(params: &henn_ckks::CkksParams) -> Self {
        Self::new(
            params.q().iter().map(|&q| q as f64).collect(),
            params.slots(),
        )
    }

    /// A fresh input ciphertext at the top level and `scale`.
    pub fn input(&self, scale: Scale) -> SimCt {
        SimCt {
            level: self.primes.len().saturating_sub(1),
            scale,
            unrelinearized: false,
        }
    }

    /// The rotation steps used so far (sorted).
    pub fn rotations(&self) -> Vec<i64> {
        self.rotations
            .lock()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The highest level each rotation step of [`Simulated::rotations`] was used at (the
    /// level its key must serve), in the same order.
    pub fn rotation_levels(&self) -> Vec<usize> {
        self.rotations
            .lock()
            .map(|r| r.values().copied().collect())
            .unwrap_or_default()
    }

    /// The highest level of a relinearization so far (0 when there was none).
    pub fn relin_level(&self) -> usize {
        self.relin.lock().map_or(0, |r| r.unwrap_or(0))
    }

    fn record(&self, k: i64, level: usize) {
        let s = self.slots as i64;
        let k = if s > 0 { k.rem_euclid(s) } else { k };
        if k != 0
            && let Ok(mut r) = self.rotations.lock()
        {
            let e = r.entry(k).or_insert(level);
            *e = (*e).max(level);
        }
    }

    fn record_relin(&self, level: usize) {
        if let Ok(mut r) = self.relin.lock() {
            *r = Some(r.map_or(level, |l| l.max(level)));
        }
    }
}

impl Backend for Simulated {
    type Ct = SimCt;

    fn name(&self) -> &'static str {
        "simulated"
    }
    fn slots(&self) -> usize {
        self.slots
    }
    fn counts(&self) -> &OpCounts {
        &self.counts
    }
    fn complex_pairs(&self) -> Option<bool> {
        Some(self.pairs)
    }
    fn prime(&self, level: usize) -> Result<f64> {
        self.primes
            .get(level)
            .copied()
            .ok_or_else(|| ExecError::NoPrime(level).into())
    }
    fn level(&self, a: &SimCt) -> usize {
        a.level
    }
    fn scale(&self, a: &SimCt) -> Scale {
        a.scale
    }
    fn add_assign(&self, a: &mut SimCt, b: &SimCt) -> Result<()> {
        check_add((a.level, a.scale), (b.level, b.scale))?;
        OpCounts::bump(&self.counts.add, 1);
        a.unrelinearized |= b.unrelinearized;
        Ok(())
    }
    fn sub_assign(&self, a: &mut SimCt, b: &SimCt) -> Result<()> {
        self.add_assign(a, b)
    }
    fn neg_assign(&self, _a: &mut SimCt) -> Result<()> {
        Ok(())
    }
    fn add_const_assign(&self, _a: &mut SimCt, _c: f64) -> Result<()> {
        OpCounts::bump(&self.counts.add, 1);
        Ok(())
    }
    fn mul_const_assign(&self, a: &mut SimCt, _c: f64, const_scale: Scale) -> Result<()> {
        OpCounts::bump(&self.counts.mul_const, 1);
        a.scale = scale_of(a.scale.value() * const_scale.value())?;
        Ok(())
    }
    fn mul_const_add_assign(
        &self,
        acc: &mut SimCt,
        x: &SimCt,
        _c: f64,
        const_scale: Scale,
    ) -> Result<()> {
        OpCounts::bump(&self.counts.mul_const, 1);
        let s = scale_of(x.scale.value() * const_scale.value())?;
        check_add((acc.level, acc.scale), (x.level, s))?;
        OpCounts::bump(&self.counts.add, 1);
        Ok(())
    }
    type Pt = SimCt;
    fn encode(&self, v: &[f64], level: usize, scale: Scale) -> Result<SimCt> {
        check_slots(v.len(), self.slots)?;
        OpCounts::bump(&self.counts.encode, 1);
        Ok(SimCt {
            level,
            scale,
            unrelinearized: false,
        })
    }
    fn mul_plain_assign(&self, a: &mut SimCt, pt: &SimCt) -> Result<()> {
        check_pt_level(a.level, pt.level)?;
        OpCounts::bump(&self.counts.mul_plain, 1);
        a.scale = scale_of(a.scale.value() * pt.scale.value())?;
        Ok(())
    }
    fn mul_plain_add_assign(&self, acc: &mut SimCt, x: &SimCt, pt: &SimCt) -> Result<()> {
        check_pt_level(x.level, pt.level)?;
        OpCounts::bump(&self.counts.mul_plain, 1);
        OpCounts::bump(&self.counts.add, 1);
        let s = scale_of(x.scale.value() * pt.scale.value())?;
        check_add((acc.level, acc.scale), (x.level, s))
    }
    fn mul_relin(&self, a: &SimCt, b: &SimCt) -> Result<SimCt> {
        check_mul_levels(a.level, b.level)?;
        OpCounts::bump(&self.counts.mul, 1);
        OpCounts::bump(&self.counts.relin, 1);
        self.record_relin(a.level);
        let f = self.pair_product(2);
        Ok(SimCt {
            level: a.level,
            scale: scale_of(f * a.scale.value() * b.scale.value())?,
            unrelinearized: false,
        })
    }
    fn square_relin(&self, a: &SimCt) -> Result<SimCt> {
        let mut c = self.square(a)?;
        self.relinearize_assign(&mut c)?;
        Ok(c)
    }
    fn square(&self, a: &SimCt) -> Result<SimCt> {
        OpCounts::bump(&self.counts.square, 1);
        let f = self.pair_product(1);
        Ok(SimCt {
            level: a.level,
            scale: scale_of(f * a.scale.value() * a.scale.value())?,
            unrelinearized: true,
        })
    }
    fn relinearize_assign(&self, a: &mut SimCt) -> Result<()> {
        if a.unrelinearized {
            OpCounts::bump(&self.counts.relin, 1);
            self.record_relin(a.level);
            a.unrelinearized = false;
        }
        Ok(())
    }
    fn unrelinearized(&self, a: &SimCt) -> bool {
        a.unrelinearized
    }
    fn rescale_assign(&self, a: &mut SimCt) -> Result<()> {
        check_rescale(a.level)?;
        let q = self.prime(a.level)?;
        OpCounts::bump(&self.counts.rescale, 1);
        a.level -= 1;
        a.scale = scale_of(a.scale.value() / q)?;
        Ok(())
    }
    fn drop_level_to_assign(&self, a: &mut SimCt, level: usize) -> Result<()> {
        check_drop(a.level, level)?;
        a.level = level;
        Ok(())
    }
    fn rotate(&self, a: &SimCt, k: i64) -> Result<SimCt> {
        OpCounts::bump(&self.counts.rotate, 1);
        self.record(k, a.level);
        Ok(*a)
    }
    fn rotate_hoisted(&self, a: &SimCt, ks: &[i64]) -> Result<Vec<SimCt>> {
        OpCounts::bump(&self.counts.rotate_hoisted, ks.len() as u64);
        for &k in ks {
            self.record(k, a.level);
        }
        Ok(vec![*a; ks.len()])
    }
}
