//! One harness over every layout: on every generated network (`kit::configs`) and both
//! layouts, the slots backend (cleartext), the simulated backend (the plan) and the encrypted
//! backend (a `TEST_INSECURE_CHAIN`) run the same layer code under the same layout plan, and
//! * they agree on the number of layers, the level and scale after each, and the op counts;
//! * slots and encrypted outputs equal the f64 reference to a stated precision in bits;
//! * the channel layout multiplexes the convolutions that should be (an encrypted run of a
//!   multiplexed convolution).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod kit;

use henn_ckks::CkksParams;
use henn_nn::backend::slots::Slots;
use henn_nn::exec::{self, LayerStat};
use henn_nn::pack::{LayoutKind, Placement};
use henn_nn::session::LocalSession;
use henn_nn::{Graph, Tensor};
use kit::{LAYOUTS, assert_bits};

/// Precision of the slots backend against the reference (relative to the largest output).
/// Batch: every constant is a scalar rounded at a 40-bit scale (about 2^-40 per weight, a
/// few layers): 28 bits (measured >= 31). Channel: the weights of convolution taps touching
/// the padding, and all weights of a multiplexed convolution, are rounded at about
/// 2^15-2^17 relative to their channel's largest (the rescale prime is split between weight
/// and 0/1 mask): 13 bits (measured >= 15.4).
fn slots_bits(kind: LayoutKind) -> f64 {
    match kind {
        LayoutKind::Batch => 28.0,
        LayoutKind::Channel => 13.0,
    }
}

/// Precision of encrypted outputs against the reference at scale 2^40 and N = 2^12: CKKS
/// noise and rounding (about 2^-28 per op at this scale): 22 bits (measured >= 26); the
/// channel layout's weight rounding on top: 12 bits (measured >= 14.4).
fn encrypted_bits(kind: LayoutKind) -> f64 {
    match kind {
        LayoutKind::Batch => 22.0,
        LayoutKind::Channel => 12.0,
    }
}

/// Images of one run: several with batch packing, one with channel packing.
fn run_images(g: &Graph, kind: LayoutKind, seed: u64) -> Vec<Tensor> {
    let n = match kind {
        LayoutKind::Batch => 3,
        LayoutKind::Channel => 1,
    };
    kit::images(g, n, seed)
}

fn slots_run(
    g: &Graph,
    plan: &henn_nn::plan::Plan,
    params: &CkksParams,
    imgs: &[Tensor],
) -> (Vec<Vec<f64>>, Vec<LayerStat>) {
    let be = Slots::for_params(params, plan.layout.room.slots);
    let input =
        henn_nn::plan::slots_input(&be, &plan.layout, g, imgs, params.default_scale()).unwrap();
    let (out, stats) = exec::run(&be, &plan.layout, g, input, |_, _| Ok(())).unwrap();
    let dec: Vec<Vec<f64>> = out.cts.iter().map(|c| c.v.clone()).collect();
    (
        plan.layout
            .unpack_outputs(&dec, out.mult, imgs.len())
            .unwrap(),
        stats,
    )
}

fn same_layers(what: &str, a: &[LayerStat], b: &[LayerStat], counts: bool) {
    assert_eq!(a.len(), b.len(), "{what}: number of layers");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.name, y.name, "{what}");
        assert_eq!(x.level, y.level, "{what}: level after {}", x.name);
        assert!(
            (x.log2_scale - y.log2_scale).abs() < 1e-9,
            "{what}: scale after {}: 2^{} vs 2^{}",
            x.name,
            x.log2_scale,
            y.log2_scale
        );
        assert_eq!(
            x.ciphertexts, y.ciphertexts,
            "{what}: ciphertexts of {}",
            x.name
        );
        assert_eq!(
            x.multiplier, y.multiplier,
            "{what}: multiplier of {}",
            x.name
        );
        if counts {
            assert_eq!(x.counts, y.counts, "{what}: op counts of {}", x.name);
        }
    }
}

#[test]
fn every_layout_slots_simulated_and_encrypted_agree_with_the_reference() {
    let mut multiplexed = 0;
    for (ci, cfg) in kit::configs().iter().enumerate() {
        let g = henn_nn::rewrite::simplify(&kit::generated(cfg, 100 + ci as u64)).unwrap();
        for kind in LAYOUTS {
            let what = format!("cfg {ci} {kind}");
            let imgs = run_images(&g, kind, 7 * ci as u64 + 1);
            let chain = kit::chain_for(&g, kind);
            let plan = kit::plan_on(&g, kind, &imgs, &chain);
            let params = plan.ckks_params().unwrap();
            let want = kit::reference(&g, &imgs);

            let (slots_out, slots_layers) = slots_run(&g, &plan, &params, &imgs);
            let session = LocalSession::new(&g, &plan).unwrap();
            let enc = session.run(&imgs, true).unwrap();

            // simulated (the plan) = slots = encrypted: layers, levels, scales, op counts
            same_layers(
                &format!("{what} slots vs plan"),
                &slots_layers,
                &plan.layers,
                true,
            );
            same_layers(
                &format!("{what} encrypted vs plan"),
                &enc.layers,
                &plan.layers,
                true,
            );
            for (i, w) in want.iter().enumerate() {
                assert_bits(
                    &format!("{what} slots image {i}"),
                    &slots_out[i],
                    w,
                    slots_bits(kind),
                );
                assert_bits(
                    &format!("{what} encrypted image {i}"),
                    &enc.outputs[i],
                    w,
                    encrypted_bits(kind),
                );
            }
            // every layer, decrypted, is close to the reference's intermediate value
            let errs = enc.layer_errors.unwrap();
            assert_eq!(errs.len(), g.nodes().len(), "{what}: one error per layer");
            assert!(
                errs.iter().all(|e| e.is_finite() && *e < 1e-2),
                "{what}: {errs:?}"
            );
            let mux = plan
                .layout
                .values
                .iter()
                .flatten()
                .any(|p| matches!(p, Placement::Grid(gr) if gr.k > 1));
            multiplexed += usize::from(mux);
            eprintln!(
                "{what}: depth {}, {} layers, {} rotation keys, multiplexed {mux}, encrypted {:.1} bits",
                plan.depth,
                plan.layers.len(),
                plan.rotations.len(),
                kit::relative_bits(&enc.outputs[0], &want[0])
            );
        }
    }
    assert!(
        multiplexed >= 2,
        "the multiplexing configs should multiplex their convolution under the channel layout"
    );
}

/// The cleartext slots backend equals the reference on the unsimplified graphs too (the
/// PyTorch-style activation nodes run one by one), at two slot counts for the channel layout
/// (one FC output per ciphertext, and many, with replication and multiplexing).
#[test]
fn slots_backend_equals_reference_before_simplification() {
    for (ci, cfg) in kit::configs().iter().enumerate() {
        let g = kit::generated(cfg, 200 + ci as u64);
        for kind in LAYOUTS {
            let imgs = run_images(&g, kind, ci as u64);
            let need = kind
                .rules()
                .required_slots(&g, imgs.len())
                .unwrap()
                .next_power_of_two();
            for slots in [need, 1024.max(need)] {
                let (out, _) = henn_nn::plan::run_slots(
                    &g,
                    kind,
                    &imgs,
                    henn_testkit::test_insecure_chain(24).ideal_primes(),
                    henn_ckks::Scale::from_log2(40.0),
                    slots,
                )
                .unwrap();
                for (i, w) in kit::reference(&g, &imgs).iter().enumerate() {
                    assert_bits(
                        &format!("cfg {ci} {kind} slots {slots} image {i}"),
                        &out[i],
                        w,
                        slots_bits(kind),
                    );
                }
            }
        }
    }
}

/// A high-degree Chebyshev series (the last generated config, degree 12 on [-4, 4]): the
/// simplified graph folds its change of interval into the convolution before it (the series
/// on [-1, 1], 4 levels = ceil(log2 13)); the graph as built spends one level more on it; both
/// run on the slots backend as the reference computes.
#[test]
fn chebyshev_change_of_interval_folds_into_the_layer_before() {
    let cfg = *kit::configs().last().unwrap();
    assert!(matches!(cfg.act, kit::Act::Cheb));
    let raw = kit::generated(&cfg, 77);
    let simple = henn_nn::rewrite::simplify(&raw).unwrap();
    let cheb_of = |g: &Graph| {
        g.nodes()
            .iter()
            .find_map(|n| match &n.op {
                henn_nn::Op::Chebyshev { lo, hi, .. } => Some((n.name.clone(), *lo, *hi)),
                _ => None,
            })
            .unwrap()
    };
    let (_, lo, hi) = cheb_of(&simple);
    assert_eq!((lo, hi), (-1.0, 1.0));
    assert_eq!(cheb_of(&raw).1, -4.0);
    let kind = LayoutKind::Channel;
    for (g, levels) in [(&simple, 4), (&raw, 5)] {
        let imgs = run_images(g, kind, 3);
        let chain = kit::chain_for(g, kind);
        let plan = kit::plan_on(g, kind, &imgs, &chain);
        let name = cheb_of(g).0;
        let i = plan.layers.iter().position(|l| l.name == name).unwrap();
        let before = plan.layers[i - 1].level;
        assert_eq!(before - plan.layers[i].level, levels, "{name}");
        let params = plan.ckks_params().unwrap();
        let (out, _) = slots_run(g, &plan, &params, &imgs);
        for (o, w) in out.iter().zip(kit::reference(g, &imgs)) {
            assert_bits("chebyshev slots", o, &w, slots_bits(kind));
        }
    }
}
