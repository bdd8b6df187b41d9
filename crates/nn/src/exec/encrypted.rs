//! The encrypted backend: the CKKS evaluator with evaluation keys only (relinearization and
//! the Galois keys the plan asks for). It never sees the secret key.

use std::sync::Arc;

use henn_ckks::{
    Ciphertext, CkksParams, Encoder, Evaluator, GaloisElement, GaloisKeys, Level, RelinKey, Scale,
};

use super::{Backend, OpCounts, ckks_err};
use crate::error::{NnError, Result};

/// The encrypted backend.
#[derive(Debug)]
pub struct Encrypted {
    params: Arc<CkksParams>,
    eval: Evaluator,
    encoder: Encoder,
    rlk: RelinKey,
    gk: GaloisKeys,
    counts: OpCounts,
}

impl Encrypted {
    /// A backend from evaluation keys.
    pub fn new(params: &Arc<CkksParams>, rlk: RelinKey, gk: GaloisKeys) -> Self {
        Self {
            params: params.clone(),
            eval: Evaluator::new(params),
            encoder: Encoder::new(params),
            rlk,
            gk,
            counts: OpCounts::default(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<CkksParams> {
        &self.params
    }

    /// Checks that the Galois keys cover every rotation step in `steps`.
    pub fn check_rotations(&self, steps: &[i64]) -> Result<()> {
        let n = self.params.n();
        let missing: Vec<i64> = steps
            .iter()
            .copied()
            .filter(|&k| {
                let g = GaloisElement::for_rotation(k, n);
                g.value() != 1 && !self.gk.contains(g)
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(NnError::Exec(format!(
                "the Galois keys lack rotation steps {missing:?} that the plan needs; regenerate the keys from the plan"
            )))
        }
    }

    fn check_rotation(&self, k: i64) -> Result<()> {
        self.check_rotations(&[k])
    }
}

impl Backend for Encrypted {
    type Ct = Ciphertext;

    fn name(&self) -> &'static str {
        "encrypted"
    }
    fn slots(&self) -> usize {
        self.params.slots()
    }
    fn counts(&self) -> &OpCounts {
        &self.counts
    }
    fn prime(&self, level: usize) -> Result<f64> {
        self.params
            .q()
            .get(level)
            .map(|&q| q as f64)
            .ok_or_else(|| NnError::Exec(format!("no prime at level {level}")))
    }
    fn level(&self, a: &Ciphertext) -> usize {
        a.level().0
    }
    fn scale(&self, a: &Ciphertext) -> Scale {
        a.scale()
    }
    fn add_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        OpCounts::bump(&self.counts.add, 1);
        self.eval.add_assign(a, b).map_err(ckks_err)
    }
    fn sub_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        OpCounts::bump(&self.counts.add, 1);
        self.eval.sub_assign(a, b).map_err(ckks_err)
    }
    fn neg_assign(&self, a: &mut Ciphertext) -> Result<()> {
        self.eval.neg_assign(a).map_err(ckks_err)
    }
    fn add_const_assign(&self, a: &mut Ciphertext, c: f64) -> Result<()> {
        OpCounts::bump(&self.counts.add, 1);
        self.eval.add_const_assign(a, c).map_err(ckks_err)
    }
    fn mul_const_scaled_assign(
        &self,
        a: &mut Ciphertext,
        c: f64,
        const_scale: Scale,
    ) -> Result<()> {
        OpCounts::bump(&self.counts.mul_const, 1);
        self.eval
            .mul_const_assign(a, c, const_scale)
            .map_err(ckks_err)
    }
    fn mul_const_add_assign(
        &self,
        acc: &mut Ciphertext,
        x: &Ciphertext,
        c: f64,
        const_scale: Scale,
    ) -> Result<()> {
        OpCounts::bump(&self.counts.mul_const, 1);
        OpCounts::bump(&self.counts.add, 1);
        self.eval
            .mul_const_add_assign(acc, x, c, const_scale)
            .map_err(ckks_err)
    }
    fn mul_plain_scaled_assign(
        &self,
        a: &mut Ciphertext,
        v: &[f64],
        pt_scale: Scale,
    ) -> Result<()> {
        OpCounts::bump(&self.counts.mul_plain, 1);
        let pt = self
            .encoder
            .encode(v, a.level(), pt_scale)
            .map_err(ckks_err)?;
        self.eval.mul_plain_assign(a, &pt).map_err(ckks_err)
    }
    fn mul_relin(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        OpCounts::bump(&self.counts.mul, 1);
        OpCounts::bump(&self.counts.relin, 1);
        self.eval.mul_relin(a, b, &self.rlk).map_err(ckks_err)
    }
    fn square_relin(&self, a: &Ciphertext) -> Result<Ciphertext> {
        OpCounts::bump(&self.counts.square, 1);
        OpCounts::bump(&self.counts.relin, 1);
        self.eval.square_relin(a, &self.rlk).map_err(ckks_err)
    }
    fn rescale_assign(&self, a: &mut Ciphertext) -> Result<()> {
        OpCounts::bump(&self.counts.rescale, 1);
        self.eval.rescale_assign(a).map_err(ckks_err)
    }
    fn drop_level_to_assign(&self, a: &mut Ciphertext, level: usize) -> Result<()> {
        self.eval
            .drop_level_to_assign(a, Level(level))
            .map_err(ckks_err)
    }
    fn rotate(&self, a: &Ciphertext, k: i64) -> Result<Ciphertext> {
        self.check_rotation(k)?;
        OpCounts::bump(&self.counts.rotate, 1);
        self.eval.rotate(a, k, &self.gk).map_err(ckks_err)
    }
    fn rotate_hoisted(&self, a: &Ciphertext, ks: &[i64]) -> Result<Vec<Ciphertext>> {
        self.check_rotations(ks)?;
        OpCounts::bump(&self.counts.rotate_hoisted, ks.len() as u64);
        self.eval.rotate_hoisted(a, ks, &self.gk).map_err(ckks_err)
    }
}
