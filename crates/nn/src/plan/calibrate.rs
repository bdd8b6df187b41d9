//! Magnitudes for parameter selection and the precision a plan is predicted to have, measured under the layout that will run: the slots
//! backend replays the layer code under the layout plan on calibration images, and every
//! slot of every layer output counts, the slots a layout leaves off its grid (garbage from
//! rotations, biases and activations of it) included, because they too must stay below the
//! primes.

use henn_ckks::{CkksParams, Scale};
use rayon::prelude::*;

use crate::backend::slots::{Noise, Slots};
use crate::error::{NnError, Result};
use crate::exec;
use crate::ir::Graph;
use crate::pack::LayoutPlan;
use crate::reference;
use crate::report;
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

/// The precision an encrypted run of `graph` under `layout` with `params` is predicted to
/// have, in bits: per image of `images`, `-log2` of its largest output error relative to its
/// largest output (what `henn eval` reports as logit bits, [`report::logit_bits`]), between a
/// slots run with CKKS's noise ([`Noise`]: fresh encryption, plaintext encodings, rescales,
/// key switches; constants rounded as CKKS rounds them) and the f64 reference; the median
/// over the images. Runs of `layout.images_per_run` images each, in parallel, each run on
/// one thread; the noise is seeded by the values, so the prediction is the same on every
/// call and thread count.
pub fn predicted_bits(
    graph: &Graph,
    layout: &LayoutPlan,
    params: &CkksParams,
    images: &[Tensor],
) -> Result<f64> {
    let bits = noisy_runs(layout, params, images, |be, run| {
        let input = super::slots_input(be, layout, graph, run, params.default_scale())?;
        let (out, _) = exec::run(be, layout, graph, input, |_, _| Ok(()))?;
        let decoded: Vec<Vec<f64>> = out.cts.iter().map(|c| c.v.clone()).collect();
        let noisy = layout.unpack_outputs(&decoded, out.mult, run.len())?;
        run.iter()
            .zip(&noisy)
            .map(|(image, n)| {
                let exact = reference::run(graph, image)?.into_data();
                Ok(report::logit_bits(n, &exact))
            })
            .collect::<Result<Vec<f64>>>()
    })?;
    let mut bits: Vec<f64> = bits.into_iter().flatten().collect();
    bits.sort_by(f64::total_cmp);
    Ok(bits.get(bits.len() / 2).copied().unwrap_or(0.0))
}

/// Per node of `graph`, the largest absolute error of its output predicted for an encrypted
/// run under `layout` with `params` (a slots run with CKKS's noise, see [`predicted_bits`],
/// against the f64 reference), over `images`: what `henn profile` measures per layer.
pub fn predicted_layer_errors(
    graph: &Graph,
    layout: &LayoutPlan,
    params: &CkksParams,
    images: &[Tensor],
) -> Result<Vec<f64>> {
    let nodes = graph.nodes().len();
    let errors = noisy_runs(layout, params, images, |be, run| {
        let refs: Vec<Vec<Tensor>> = run
            .iter()
            .map(|x| reference::run_all(graph, x))
            .collect::<Result<_>>()?;
        let input = super::slots_input(be, layout, graph, run, params.default_scale())?;
        let mut errors = vec![0.0f64; nodes];
        exec::run(be, layout, graph, input, |ni, part| {
            let node = graph
                .nodes()
                .get(ni)
                .ok_or_else(|| NnError::InvalidGraph("node index".into()))?;
            let numel: usize = part.shape.iter().product();
            let slots: Vec<Vec<f64>> = part.cts.iter().map(|c| c.v.clone()).collect();
            let got =
                layout.unpack_part(node.output, numel, part.flats, &slots, part.mult, run.len())?;
            if let Some(slot) = errors.get_mut(ni) {
                *slot = slot.max(report::part_error(&got, &refs, node.output));
            }
            Ok(())
        })?;
        Ok(errors)
    })?;
    Ok(errors.into_iter().fold(vec![0.0; nodes], |a, b| {
        a.iter().zip(&b).map(|(x, y)| x.max(*y)).collect()
    }))
}

/// `f` on a slots backend with CKKS's noise for `layout` and `params` (paired where the
/// layout pairs images), per run of `layout.images_per_run` images of `images`: the runs in
/// parallel, each on one thread, so that the executor's sums always add in the same order
/// and the values (and the noise they seed) are the same bits on every call.
fn noisy_runs<T: Send>(
    layout: &LayoutPlan,
    params: &CkksParams,
    images: &[Tensor],
    f: impl Fn(&Slots, &[Tensor]) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    if images.is_empty() {
        return Err(NnError::Plan(
            "no calibration images to predict the precision on".into(),
        ));
    }
    let primes: Vec<f64> = params.q().iter().map(|&q| q as f64).collect();
    let noise = Noise::for_params(params);
    let noise = if layout.complex_pairs {
        noise.paired()
    } else {
        noise
    };
    let runs: Vec<&[Tensor]> = images.chunks(layout.images_per_run.max(1)).collect();
    runs.par_iter()
        .map(|run| {
            // only the slots that hold distinct values (a batch run's images and one empty
            // slot, not the thousands more the noise would be drawn for)
            let slots = layout
                .kind
                .rules()
                .slots_for_magnitudes(layout, run.len())
                .min(layout.value_slots());
            let be = Slots::new(primes.clone(), slots).with_noise(noise.clone());
            sequential(|| f(&be, run))?
        })
        .collect()
}

/// Runs `f` on a pool of one thread (the caller's parallelism stays across runs). The pool
/// is kept per calling thread for the process: a fresh pool per run started a fresh thread,
/// whose allocator heap faulted in (and the kernel zeroed) fresh pages for every run's
/// slot vectors, a quarter of a plan's time.
fn sequential<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T> {
    thread_local! {
        static POOL: std::result::Result<rayon::ThreadPool, String> =
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .map_err(|e| e.to_string());
    }
    POOL.with(|pool| match pool {
        Ok(pool) => Ok(pool.install(f)),
        Err(e) => Err(NnError::Plan(format!(
            "a thread pool for the precision prediction: {e}"
        ))),
    })
}
