//! Magnitudes for parameter selection, measured under the layout that will run: the slots
//! backend replays the layer code under the layout plan on calibration images, and every
//! slot of every layer output counts, the slots a layout leaves off its grid (garbage from
//! rotations, biases and activations of it) included, because they too must stay below the
//! primes.

use henn_ckks::Scale;
use rayon::prelude::*;

use crate::backend::slots::Slots;
use crate::error::{NnError, Result};
use crate::exec;
use crate::ir::Graph;
use crate::pack::LayoutPlan;
use crate::tensor::Tensor;

/// The largest absolute slot value over the input and all layer outputs of `graph` under
/// `layout` on `images`, on a slots backend with data primes `primes` (constants rounded as
/// CKKS rounds them at the scales the layer code uses, input at `scale`). Runs of
/// `layout.images_per_run` images each, in parallel.
pub fn max_abs(
    graph: &Graph,
    layout: &LayoutPlan,
    primes: &[f64],
    scale: Scale,
    images: &[Tensor],
) -> Result<f64> {
    if images.is_empty() {
        return Err(NnError::Plan(
            "no calibration images to measure value magnitudes on".into(),
        ));
    }
    let per_run = layout.images_per_run.max(1);
    let slots = layout
        .kind
        .rules()
        .slots_for_magnitudes(layout, per_run)
        .min(layout.value_slots());
    let runs: Vec<&[Tensor]> = images.chunks(per_run).collect();
    let maxima = runs
        .par_iter()
        .map(|run| -> Result<f64> {
            let be = Slots::new(primes.to_vec(), slots);
            let input = super::slots_input(&be, layout, graph, run, scale)?;
            let mut max = input
                .cts
                .iter()
                .flat_map(|c| &c.v)
                .fold(0.0f64, |m, v| m.max(v.abs()));
            exec::run(&be, layout, graph, input, |_, p| {
                for c in p.cts {
                    for v in &c.v {
                        max = max.max(v.abs());
                    }
                }
                Ok(())
            })?;
            Ok(max)
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok(maxima.into_iter().fold(0.0, f64::max))
}
