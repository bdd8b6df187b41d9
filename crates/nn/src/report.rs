//! Per-layer report rows (like the reference papers' tables): time and share, op counts,
//! level and scale after the layer, and the error against the reference when known. Data
//! only; the binary renders it.

use serde::{Deserialize, Serialize};

use crate::backend::Counts;
use crate::exec::LayerStat;
use crate::tensor::Tensor;

/// Precision of `got` against `want` in bits: `-log2(max |got - want| / max |want|)` (64
/// when they are equal): the logit bits `henn eval` reports and the planner predicts.
pub fn logit_bits(got: &[f64], want: &[f64]) -> f64 {
    let err = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let top = want.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    if err == 0.0 {
        64.0
    } else {
        -(err / top.max(f64::MIN_POSITIVE)).log2()
    }
}

/// The largest absolute error of part of an intermediate value `value` (per image, `(flat
/// element, value)` pairs) against the reference's intermediates `refs` (per image, every
/// value of the graph).
pub fn part_error(got: &[Vec<(usize, f64)>], refs: &[Vec<Tensor>], value: usize) -> f64 {
    let mut e = 0.0f64;
    for (d, r) in got.iter().zip(refs) {
        if let Some(want) = r.get(value) {
            for &(f, a) in d {
                if let Some(b) = want.data().get(f) {
                    e = e.max((a - b).abs());
                }
            }
        }
    }
    e
}

/// One row of the per-layer table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRow {
    /// Node name.
    pub name: String,
    /// Op kind.
    pub op: String,
    /// Seconds spent in the layer.
    pub time_s: f64,
    /// Share of the total time (0..1).
    pub share: f64,
    /// Operation counts.
    pub counts: Counts,
    /// Level after the layer.
    pub level: usize,
    /// log2 of the scale after the layer.
    pub log2_scale: f64,
    /// Output ciphertexts.
    pub ciphertexts: usize,
    /// Max |decrypted - reference| after the layer (when the secret key was at hand).
    pub max_abs_error: Option<f64>,
    /// The same error as predicted from CKKS's noise on the slots backend
    /// ([`crate::plan::predicted_layer_errors`]), when computed.
    #[serde(default)]
    pub predicted_error: Option<f64>,
}

/// Builds the rows from an executor run and optional per-layer errors.
pub fn rows(stats: &[LayerStat], errors: Option<&[f64]>) -> Vec<LayerRow> {
    let total: f64 = stats.iter().map(|s| s.time_s).sum();
    stats
        .iter()
        .enumerate()
        .map(|(i, s)| LayerRow {
            name: s.name.clone(),
            op: s.op.clone(),
            time_s: s.time_s,
            share: if total > 0.0 { s.time_s / total } else { 0.0 },
            counts: s.counts,
            level: s.level,
            log2_scale: s.log2_scale,
            ciphertexts: s.ciphertexts,
            max_abs_error: errors.and_then(|e| e.get(i).copied()),
            predicted_error: None,
        })
        .collect()
}

/// The rows with the predicted per-layer errors (one per layer, in the rows' order).
pub fn with_predicted(mut rows: Vec<LayerRow>, predicted: &[f64]) -> Vec<LayerRow> {
    for (r, &p) in rows.iter_mut().zip(predicted) {
        r.predicted_error = Some(p);
    }
    rows
}

/// Total counts over all layers.
pub fn total_counts(stats: &[LayerStat]) -> Counts {
    let mut t = Counts::default();
    for s in stats {
        let c = &s.counts;
        t.mul_plain += c.mul_plain;
        t.mul_const += c.mul_const;
        t.mul += c.mul;
        t.square += c.square;
        t.relin += c.relin;
        t.rescale += c.rescale;
        t.rotate += c.rotate;
        t.rotate_hoisted += c.rotate_hoisted;
        t.add += c.add;
    }
    t
}
