//! Channel-wise packing: the rotation steps a plan records, graphs the layout cannot hold are
//! explained, shipped MNIST models on the slots backend at 1024 and 8192 slots (one channel
//! per ciphertext, and conv2 multiplexed 8 to a ciphertext), and an encrypted shipped model
//! whose plan multiplexes a convolution. (Slots/simulated/encrypted agreement on generated
//! networks: `harness.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod kit;

use henn_ckks::Scale;
use henn_nn::ir::Conv2d;
use henn_nn::pack::{LayoutKind, Placement};
use henn_nn::plan::{Images, PlanOptions, make_plan, run_slots};
use henn_nn::session::LocalSession;
use henn_nn::{Graph, NnError, Op, Tensor};
use henn_testkit::{TestChain, test_insecure_chain};
use kit::assert_bits;

const KIND: LayoutKind = LayoutKind::Channel;

#[test]
fn plan_records_the_rotation_steps() {
    let g = henn_nn::rewrite::simplify(&kit::generated(&kit::configs()[1], 201)).unwrap();
    let imgs = kit::images(&g, 1, 2);
    let plan = kit::plan_on(&g, KIND, &imgs, &kit::chain_for(&g, KIND));
    let rots = &plan.rotations;
    let slots = plan.layout.room.slots as i64;
    assert!(!rots.is_empty());
    assert!(!rots.contains(&0));
    // 5x5 pad 2 on a 9x9 image: taps (-2..=2) x (-2..=2) at row stride 9 (steps mod slots)
    for dy in -2i64..=2 {
        for dx in -2i64..=2 {
            if (dy, dx) != (0, 0) {
                let k = (dy * 9 + dx).rem_euclid(slots);
                assert!(rots.contains(&k), "missing conv tap step {k}: {rots:?}");
            }
        }
    }
}

#[test]
fn unsupported_graphs_are_explained() {
    // output larger than the input (padding beyond kernel - 1) cannot stay in place
    let mut g = Graph::new("big", "x", vec![1, 1, 4, 4]);
    let conv = Conv2d {
        weight: Tensor::new(vec![1, 1, 1, 1], vec![1.0]).unwrap(),
        bias: None,
        stride: [1, 1],
        pads: [1; 4],
    };
    let y = g
        .add_node("conv", Op::Conv2d(conv), vec![g.input()], "y")
        .unwrap();
    g.set_output(y).unwrap();
    let e = KIND.rules().check_supported(&g).unwrap_err();
    assert!(
        matches!(&e, NnError::UnsupportedForLayout { node, layout, .. } if node == "conv" && layout == "channel"),
        "{e}"
    );
    // too few slots: a named slot overflow
    let g = kit::generated(&kit::configs()[0], 1);
    let e = run_slots(
        &g,
        KIND,
        &kit::images(&g, 1, 0),
        test_insecure_chain(20).ideal_primes(),
        Scale::from_log2(40.0),
        32,
    )
    .unwrap_err();
    assert!(
        matches!(
            &e,
            NnError::Exec {
                source: henn_nn::ExecError::SlotOverflow { have: 32, .. },
                ..
            }
        ),
        "{e}"
    );
}

/// The channel layout's weight rounding on the slots backend: see `harness.rs` (measured
/// >= 16.3 on these models).
const SLOTS_BITS: f64 = 13.0;

#[test]
fn shipped_models_on_the_slots_backend_equal_the_reference() {
    let data = kit::mnist_images(3);
    for name in ["mnist_cnn3_square", "mnist_tenseal"] {
        let g = kit::shipped(name);
        KIND.rules().check_supported(&g).unwrap();
        for slots in [1024, 8192] {
            for (i, x) in data.iter().enumerate() {
                let (out, stats) = run_slots(
                    &g,
                    KIND,
                    std::slice::from_ref(x),
                    test_insecure_chain(20).ideal_primes(),
                    Scale::from_log2(40.0),
                    slots,
                )
                .unwrap();
                let want = kit::reference(&g, std::slice::from_ref(x));
                assert_bits(
                    &format!("{name} slots {slots} image {i}"),
                    &out[0],
                    &want[0],
                    SLOTS_BITS,
                );
                if i == 0 && name == "mnist_cnn3_square" {
                    // 8192 slots hold 8 replicas of the 28 x 28 image: conv2's 50 channels
                    // go 8 to a ciphertext, so the activation after it squares 7 ciphertexts
                    let has = |n: usize| stats.iter().any(|s| s.ciphertexts == n);
                    if slots == 8192 {
                        assert!(has(7) && !has(50), "{name}: conv2 multiplexed");
                    } else {
                        assert!(has(50), "{name}: one channel per ciphertext");
                    }
                }
            }
        }
    }
}

/// mnist_cnn3_square on a 36-bit `TEST_INSECURE_CHAIN` at N = 2^14: the plan multiplexes
/// conv2 (8 channels per ciphertext) and the encrypted logits of 3 images are within 10 bits
/// of the reference (relative to the largest; measured >= 12.2), top-1 equal.
#[test]
fn encrypted_shipped_model_with_a_multiplexed_convolution() {
    let g = kit::shipped("mnist_cnn3_square");
    let imgs = kit::mnist_images(3);
    let depth = henn_nn::plan::depth(&g, KIND).unwrap();
    let chain = TestChain {
        log_n: 14,
        q0_bits: 50,
        prime_bits: 36,
        levels: depth,
        p_bits: 50,
    };
    let opts = PlanOptions {
        layout: KIND,
        images: Images::Exactly(1),
        ..PlanOptions::default()
    };
    let (plan, _) = make_plan(&g, &opts, &imgs, Some(chain.literal())).unwrap();
    let mux: Vec<_> = plan
        .layout
        .values
        .iter()
        .flatten()
        .filter_map(|p| match p {
            Placement::Grid(gr) if gr.k > 1 => Some(gr.k),
            _ => None,
        })
        .collect();
    assert!(!mux.is_empty() && mux.iter().all(|&k| k == 8), "{mux:?}");
    assert!(plan.layout.input.replicas > 1);
    let s = LocalSession::new(&g, &plan).unwrap();
    let want = kit::reference(&g, &imgs);
    for (i, x) in imgs.iter().enumerate() {
        let r = s.run(std::slice::from_ref(x), i == 0).unwrap();
        let bits = assert_bits(&format!("image {i}"), &r.outputs[0], &want[i], 10.0);
        let top = |v: &[f64]| Tensor::new(vec![v.len()], v.to_vec()).unwrap().argmax();
        assert_eq!(top(&r.outputs[0]), top(&want[i]), "image {i}");
        eprintln!("image {i}: {bits:.1} bits, {:.3} s", r.timings.eval_s);
    }
}
