//! The slots backend: cleartext slot vectors in the packed layout, exact f64 arithmetic, with
//! the same level and scale bookkeeping (and checks) as the encrypted backend.

use henn_ckks::Scale;

use super::simulated::{
    check_add, check_drop, check_mul_levels, check_pt_level, check_rescale, check_slots,
};
use super::{Backend, OpCounts, scale_of};
use crate::error::{ExecError, Result};

/// A cleartext "ciphertext": the slot values plus level and scale.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotCt {
    /// Slot values (true values, not multiplied by the scale).
    pub v: Vec<f64>,
    /// Level.
    pub level: usize,
    /// Scale.
    pub scale: Scale,
}

/// The slots backend over a modulus chain.
#[derive(Debug)]
pub struct Slots {
    primes: Vec<f64>,
    slots: usize,
    counts: OpCounts,
}

/// The constant a CKKS constant product really applies: `round(c * scale) / scale`.
fn quantize(c: f64, scale: Scale) -> f64 {
    (c * scale.value()).round() / scale.value()
}

impl Slots {
    /// A slots backend with data primes `primes` and `slots` slots.
    pub fn new(primes: Vec<f64>, slots: usize) -> Self {
        Self {
            primes,
            slots,
            counts: OpCounts::default(),
        }
    }

    /// Idealised primes `2^bits`.
    pub fn with_bits(q_bits: &[u32], slots: usize) -> Self {
        Self::new(q_bits.iter().map(|&b| (b as f64).exp2()).collect(), slots)
    }

    /// The primes of real CKKS parameters (slot count chosen by the caller, e.g. the batch).
    pub fn for_params(params: &henn_ckks::CkksParams, slots: usize) -> Self {
        Self::new(params.q().iter().map(|&q| q as f64).collect(), slots)
    }

    /// A fresh input at the top level (values padded with zeros to the slot count).
    pub fn input(&self, values: &[f64], scale: Scale) -> Result<SlotCt> {
        check_slots(values.len(), self.slots)?;
        let mut v = values.to_vec();
        v.resize(self.slots, 0.0);
        Ok(SlotCt {
            v,
            level: self.primes.len().saturating_sub(1),
            scale,
        })
    }
}

impl Backend for Slots {
    type Ct = SlotCt;

    fn name(&self) -> &'static str {
        "slots"
    }
    fn slots(&self) -> usize {
        self.slots
    }
    fn counts(&self) -> &OpCounts {
        &self.counts
    }
    fn prime(&self, level: usize) -> Result<f64> {
        self.primes
            .get(level)
            .copied()
            .ok_or_else(|| ExecError::NoPrime(level).into())
    }
    fn level(&self, a: &SlotCt) -> usize {
        a.level
    }
    fn scale(&self, a: &SlotCt) -> Scale {
        a.scale
    }
    fn add_assign(&self, a: &mut SlotCt, b: &SlotCt) -> Result<()> {
        check_add((a.level, a.scale), (b.level, b.scale))?;
        OpCounts::bump(&self.counts.add, 1);
        a.v.iter_mut().zip(&b.v).for_each(|(x, y)| *x += y);
        Ok(())
    }
    fn sub_assign(&self, a: &mut SlotCt, b: &SlotCt) -> Result<()> {
        check_add((a.level, a.scale), (b.level, b.scale))?;
        OpCounts::bump(&self.counts.add, 1);
        a.v.iter_mut().zip(&b.v).for_each(|(x, y)| *x -= y);
        Ok(())
    }
    fn neg_assign(&self, a: &mut SlotCt) -> Result<()> {
        a.v.iter_mut().for_each(|x| *x = -*x);
        Ok(())
    }
    fn add_const_assign(&self, a: &mut SlotCt, c: f64) -> Result<()> {
        OpCounts::bump(&self.counts.add, 1);
        a.v.iter_mut().for_each(|x| *x += c);
        Ok(())
    }
    fn mul_const_assign(&self, a: &mut SlotCt, c: f64, const_scale: Scale) -> Result<()> {
        OpCounts::bump(&self.counts.mul_const, 1);
        let c = quantize(c, const_scale);
        a.v.iter_mut().for_each(|x| *x *= c);
        a.scale = scale_of(a.scale.value() * const_scale.value())?;
        Ok(())
    }
    fn mul_const_add_assign(
        &self,
        acc: &mut SlotCt,
        x: &SlotCt,
        c: f64,
        const_scale: Scale,
    ) -> Result<()> {
        OpCounts::bump(&self.counts.mul_const, 1);
        let s = scale_of(x.scale.value() * const_scale.value())?;
        check_add((acc.level, acc.scale), (x.level, s))?;
        OpCounts::bump(&self.counts.add, 1);
        let c = quantize(c, const_scale);
        acc.v.iter_mut().zip(&x.v).for_each(|(a, b)| *a += c * b);
        Ok(())
    }
    type Pt = SlotCt;
    fn encode(&self, v: &[f64], level: usize, scale: Scale) -> Result<SlotCt> {
        check_slots(v.len(), self.slots)?;
        OpCounts::bump(&self.counts.encode, 1);
        let mut v = v.to_vec();
        v.resize(self.slots, 0.0);
        Ok(SlotCt { v, level, scale })
    }
    fn mul_plain_assign(&self, a: &mut SlotCt, pt: &SlotCt) -> Result<()> {
        check_pt_level(a.level, pt.level)?;
        OpCounts::bump(&self.counts.mul_plain, 1);
        for (x, p) in a.v.iter_mut().zip(&pt.v) {
            *x *= p;
        }
        a.scale = scale_of(a.scale.value() * pt.scale.value())?;
        Ok(())
    }
    fn mul_plain_add_assign(&self, acc: &mut SlotCt, x: &SlotCt, pt: &SlotCt) -> Result<()> {
        check_pt_level(x.level, pt.level)?;
        OpCounts::bump(&self.counts.mul_plain, 1);
        OpCounts::bump(&self.counts.add, 1);
        let s = scale_of(x.scale.value() * pt.scale.value())?;
        check_add((acc.level, acc.scale), (x.level, s))?;
        for ((a, v), p) in acc.v.iter_mut().zip(&x.v).zip(&pt.v) {
            *a += v * p;
        }
        Ok(())
    }
    fn mul_relin(&self, a: &SlotCt, b: &SlotCt) -> Result<SlotCt> {
        check_mul_levels(a.level, b.level)?;
        OpCounts::bump(&self.counts.mul, 1);
        OpCounts::bump(&self.counts.relin, 1);
        Ok(SlotCt {
            v: a.v.iter().zip(&b.v).map(|(x, y)| x * y).collect(),
            level: a.level,
            scale: scale_of(a.scale.value() * b.scale.value())?,
        })
    }
    fn square_relin(&self, a: &SlotCt) -> Result<SlotCt> {
        OpCounts::bump(&self.counts.square, 1);
        OpCounts::bump(&self.counts.relin, 1);
        Ok(SlotCt {
            v: a.v.iter().map(|x| x * x).collect(),
            level: a.level,
            scale: scale_of(a.scale.value() * a.scale.value())?,
        })
    }
    fn rescale_assign(&self, a: &mut SlotCt) -> Result<()> {
        check_rescale(a.level)?;
        let q = self.prime(a.level)?;
        OpCounts::bump(&self.counts.rescale, 1);
        a.level -= 1;
        a.scale = scale_of(a.scale.value() / q)?;
        Ok(())
    }
    fn drop_level_to_assign(&self, a: &mut SlotCt, level: usize) -> Result<()> {
        check_drop(a.level, level)?;
        a.level = level;
        Ok(())
    }
    fn rotate(&self, a: &SlotCt, k: i64) -> Result<SlotCt> {
        OpCounts::bump(&self.counts.rotate, 1);
        Ok(rotated(a, k))
    }
    fn rotate_hoisted(&self, a: &SlotCt, ks: &[i64]) -> Result<Vec<SlotCt>> {
        OpCounts::bump(&self.counts.rotate_hoisted, ks.len() as u64);
        Ok(ks.iter().map(|&k| rotated(a, k)).collect())
    }
}

fn rotated(a: &SlotCt, k: i64) -> SlotCt {
    let n = a.v.len();
    let mut r = a.clone();
    if n > 0 {
        let s = k.rem_euclid(n as i64) as usize;
        r.v.rotate_left(s);
    }
    r
}
