//! Batch-axis packing: row streaming equals whole-layer execution and holds less; a last
//! linear layer at level 0 saves a prime; planning errors are explained (too deep, given
//! parameters that do not fit, unsupported ops, missing rotation keys); peak memory; shipped
//! models agree with the plaintext on the committed MNIST images.
//! (Slots/simulated/encrypted agreement on generated networks: `harness.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// HE objects are large and short-lived: the binary's allocator, for realistic test times.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod kit;

use henn_ckks::Scale;
use henn_nn::backend::slots;
use henn_nn::pack::LayoutKind;
use henn_nn::plan::{Images, PlanOptions, make_plan};
use henn_nn::session::{LocalSession, run_once};
use henn_nn::{Graph, Op, Tensor};
use henn_testkit::{TestChain, test_insecure_chain};
use kit::{Act, Cfg, Pool, assert_bits};

fn batch_opts(n: usize) -> PlanOptions {
    PlanOptions {
        layout: LayoutKind::Batch,
        images: Images::Exactly(n),
        ..PlanOptions::default()
    }
}

/// Encrypted batch inference of a shipped model with automatically chosen (secure)
/// parameters: top-1 equals the plaintext top-1 on all 100 committed MNIST test images, and
/// the logits are within `bits` bits of the reference.
fn shipped_model_agrees(name: &str, bits: f64) {
    let g = kit::shipped(name);
    let imgs = kit::mnist_images(100);
    let (plan, _) = make_plan(&g, &batch_opts(imgs.len()), &imgs[..16], None).unwrap();
    let t = std::time::Instant::now();
    let r = run_once(&g, &plan, &imgs, false).unwrap();
    let want = kit::reference(&g, &imgs);
    let mut agree = 0;
    let mut worst = f64::INFINITY;
    for (i, w) in want.iter().enumerate() {
        worst = worst.min(assert_bits(
            &format!("{name} image {i}"),
            &r.outputs[i],
            w,
            bits,
        ));
        let top = |v: &[f64]| Tensor::new(vec![v.len()], v.to_vec()).unwrap().argmax();
        agree += usize::from(top(&r.outputs[i]) == top(w));
    }
    eprintln!(
        "{name}: depth {}, max_abs {:.3e}, params N=2^{} q {:?} p {:?} scale 2^{}, eval {:.2} s (total {:.2} s), worst logits {worst:.1} bits, agreement {agree}/100",
        plan.depth,
        plan.max_abs,
        plan.params.log_n,
        plan.params.q_bits,
        plan.params.p_bits,
        plan.params.log_scale,
        r.timings.eval_s,
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        agree,
        imgs.len(),
        "{name}: encrypted top-1 differs from plaintext top-1"
    );
}

/// mnist_cnn3_square at 27-bit primes: 12 bits relative to the largest logit (measured
/// >= 15 on the 100 images).
#[test]
fn shipped_cnn3_square_encrypted_top1_equals_plaintext() {
    shipped_model_agrees("mnist_cnn3_square", 12.0);
}

/// mnist_tenseal (its x^2 activations on 26-bit primes): 9 bits relative (measured >= 12).
#[test]
fn shipped_tenseal_encrypted_top1_equals_plaintext() {
    shipped_model_agrees("mnist_tenseal", 9.0);
}

#[test]
fn too_deep_for_any_secure_parameters_is_a_clear_error() {
    let e = henn_nn::plan::choose_params(80, 16, 1, 128, 10.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("depth D = 80") && e.contains("1772"), "{e}");
    // and a deep generated model through make_plan
    let mut g = Graph::new("deep", "x", vec![1, 4]);
    let mut x = g.input();
    for i in 0..80 {
        x = g
            .add_node(format!("sq{i}"), Op::Mul, vec![x, x], format!("v{i}"))
            .unwrap();
    }
    g.set_output(x).unwrap();
    let calib = kit::images(&g, 1, 0);
    let e = make_plan(&g, &PlanOptions::default(), &calib, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("depth D = 80"), "{e}");
}

#[test]
fn user_params_that_do_not_fit_are_explained() {
    let g = kit::generated(&kit::configs()[1], 101);
    let d = henn_nn::plan::depth(&g, LayoutKind::Batch).unwrap();
    let calib = kit::images(&g, 2, 3);
    let plan = |lit: henn_ckks::CkksParamsLiteral, n: usize| {
        make_plan(&g, &batch_opts(n), &calib, Some(lit))
            .unwrap_err()
            .to_string()
    };
    let e = plan(test_insecure_chain(d - 2).literal(), 1);
    assert!(e.contains(&format!("needs depth {d}")), "{e}");
    // 5000 images: two per complex slot, 2500 slots, more than N = 2^12 has
    let e = plan(test_insecure_chain(d).literal(), 5000);
    assert!(e.contains("2500 slots"), "{e}");
    let mut lit = test_insecure_chain(d).literal();
    lit.security = henn_ckks::SecurityPolicy::Enforce { bits: 128 };
    let e = plan(lit, 1);
    assert!(e.to_lowercase().contains("secur"), "{e}");
}

#[test]
fn unsupported_op_for_layout_is_a_named_error() {
    let mut g = Graph::new("relu", "x", vec![1, 4]);
    let y = g
        .add_node(
            "act",
            Op::Activation(henn_nn::ir::Activation::Relu),
            vec![g.input()],
            "y",
        )
        .unwrap();
    g.set_output(y).unwrap();
    let calib = kit::images(&g, 1, 0);
    for layout in kit::LAYOUTS {
        let opts = PlanOptions {
            layout,
            ..PlanOptions::default()
        };
        let e = make_plan(&g, &opts, &calib, None).unwrap_err();
        assert!(
            matches!(e, henn_nn::NnError::UnsupportedForLayout { .. }),
            "{layout}: {e}"
        );
        assert!(e.to_string().contains("act"), "{e}");
    }
    let e = make_plan(&g, &batch_opts(1), &calib, None).unwrap_err();
    assert!(e.to_string().contains("ReLU"), "{e}");
}

#[test]
fn missing_rotation_key_is_a_clear_error() {
    use henn_ckks::{CkksParams, GaloisKeys, KeyGenerator};
    use rand::SeedableRng;
    let params = CkksParams::new(test_insecure_chain(1).literal()).unwrap();
    let mut crng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
    let kg = KeyGenerator::new(&params);
    let sk = kg.secret_key(&mut crng).unwrap();
    let rlk = kg.relin_key(&sk, &mut crng).unwrap();
    let gk: GaloisKeys = kg.galois_keys(&sk, &[1], false, &mut crng).unwrap();
    let be = henn_nn::backend::encrypted::Encrypted::new(&params, rlk, gk);
    assert!(be.check_rotations(&[1]).is_ok());
    let e = be.check_rotations(&[1, 4]).unwrap_err();
    assert!(
        matches!(
            &e,
            henn_nn::NnError::Exec {
                source: henn_nn::ExecError::MissingRotation { steps },
                ..
            } if steps == &[4]
        ),
        "{e}"
    );
    assert!(e.to_string().contains("Galois"), "{e}");
}

/// A chain one prime short of the depth works when the last op is linear and the base prime
/// has room (the reference ResNet's `[60, 35 x 8]` situation): the final linear layer runs at
/// level 0 at a reduced constant scale without a rescale. Encrypted output == reference.
#[test]
fn last_linear_layer_at_level_zero_saves_a_prime() {
    let g = kit::generated(&kit::configs()[1], 101);
    assert!(matches!(
        g.nodes().last().map(|n| &n.op),
        Some(Op::Linear(_))
    ));
    let d = henn_nn::plan::depth(&g, LayoutKind::Batch).unwrap();
    let lit = |levels: usize, q0: u32| {
        TestChain {
            log_n: 12,
            q0_bits: q0,
            prime_bits: 35,
            levels,
            p_bits: 60,
        }
        .literal()
    };
    let imgs = kit::images(&g, 4, 40);
    let opts = batch_opts(imgs.len());
    // two primes short, or a base prime without room: explained
    assert!(make_plan(&g, &opts, &imgs, Some(lit(d - 2, 60))).is_err());
    assert!(make_plan(&g, &opts, &imgs, Some(lit(d - 1, 45))).is_err());
    let (plan, _) = make_plan(&g, &opts, &imgs, Some(lit(d - 1, 60))).unwrap();
    let last = plan.layers.last().unwrap();
    assert_eq!(last.level, 0);
    assert!(last.log2_scale > 35.0 + 9.0, "{}", last.log2_scale);
    let r = run_once(&g, &plan, &imgs, false).unwrap();
    // scale 2^35 data, weights of the last layer at >= 2^10: about 10 bits fewer than a
    // rescaled layer; 10 bits relative to the largest output (measured >= 12.9)
    for (i, want) in kit::reference(&g, &imgs).iter().enumerate() {
        assert_bits(&format!("image {i}"), &r.outputs[i], want, 10.0);
    }
}

#[test]
fn plan_reports_peak_ciphertext_memory() {
    // x [1, 4] -> square -> square: the peak is a node's input and output together
    let mut g = Graph::new("sq2", "x", vec![1, 4]);
    let x = g.input();
    let a = g.add_node("sq0", Op::Mul, vec![x, x], "a").unwrap();
    let y = g.add_node("sq1", Op::Mul, vec![a, a], "y").unwrap();
    g.set_output(y).unwrap();
    let calib = kit::images(&g, 8, 1);
    let (plan, params) = make_plan(
        &g,
        &batch_opts(8),
        &calib,
        Some(test_insecure_chain(2).literal()),
    )
    .unwrap();
    let n = params.n() as u64;
    let ct = |level: u64| 4 * 2 * n * (level + 1) * 8;
    assert_eq!(plan.peak_bytes, ct(2) + ct(1));
    let back = henn_nn::plan::Plan::from_json(&plan.to_json().unwrap()).unwrap();
    assert_eq!(back, plan);
    // one session, several runs: the same plan and keys
    let s = LocalSession::new(&g, &plan).unwrap();
    let r = s
        .run_all(&kit::images(&g, 20, 5), false, |_, _| {})
        .unwrap();
    assert_eq!((r.runs, r.images_per_run, r.outputs.len()), (3, 8, 20));
}

/// Runs `g` on the slots backend with `row_chunk_cts` (1: one row per step, the most
/// streaming; `usize::MAX`: whole layers), recording which elements the observer saw.
fn run_chunked(
    g: &Graph,
    imgs: &[Tensor],
    row_chunk_cts: usize,
) -> (henn_nn::exec::RunOutput<slots::SlotCt>, Vec<Vec<usize>>) {
    use henn_nn::exec::{ExecOptions, run_with};
    use henn_nn::pack::{LayoutKind, Room};
    let primes = test_insecure_chain(20).ideal_primes();
    let mut layout = henn_nn::plan::layout_plan(
        g,
        LayoutKind::Batch,
        Room::of_chain(imgs.len(), &primes),
        imgs.len(),
    )
    .unwrap();
    // streaming against whole layers on the same ciphertexts: squares relinearized (a lazy
    // square is held at three parts, whole where its fully connected layer reads it, which on
    // these tiny maps can make a streamed step the larger; tested on its own below)
    layout.lazy_relin.clear();
    let be = slots::Slots::new(primes, imgs.len());
    let input = henn_nn::plan::slots_input(&be, &layout, g, imgs, Scale::from_log2(40.0)).unwrap();
    let mut seen = vec![Vec::new(); g.nodes().len()];
    let out = run_with(
        &be,
        &layout,
        g,
        input,
        ExecOptions { row_chunk_cts },
        |ni, part| {
            assert_eq!(part.cts.len(), part.flats.len());
            seen[ni].extend_from_slice(part.flats);
            Ok(())
        },
    )
    .unwrap();
    (out, seen)
}

#[test]
fn row_streaming_equals_whole_layers_and_holds_less() {
    // the generated graphs plus a larger residual one (28 x 28, stride-2 block, pooling)
    let mut cfgs = kit::configs();
    cfgs.push(Cfg {
        hw: 28,
        cin: 1,
        c1: 4,
        k1: 3,
        s1: 1,
        p1: 1,
        act: Act::Square,
        pool: Pool::Avg(2, 2, 0, true),
        residual: true,
        global: true,
        fc2: false,
    });
    let last = cfgs.len() - 1;
    for (ci, cfg) in cfgs.iter().enumerate() {
        let g = henn_nn::rewrite::simplify(&kit::generated(cfg, 300 + ci as u64)).unwrap();
        let imgs = kit::images(&g, 3, ci as u64);
        let (whole, seen_w) = run_chunked(&g, &imgs, usize::MAX);
        for chunk in [1, 7] {
            let (streamed, seen_s) = run_chunked(&g, &imgs, chunk);
            // same ciphertexts through the same operations: identical values and stats
            assert_eq!(streamed.output.cts.len(), whole.output.cts.len());
            for (a, b) in streamed.output.cts.iter().zip(&whole.output.cts) {
                assert_eq!(a.v, b.v, "cfg {ci} chunk {chunk}");
            }
            assert_eq!(streamed.output.mult, whole.output.mult);
            // per layer: the same work, except rows that no consumer reads (a pooling
            // window that never reaches the last rows) which streaming does not compute
            for (s, w) in streamed.layers.iter().zip(&whole.layers) {
                assert_eq!(s.level, w.level, "cfg {ci} layer {}", s.name);
                assert_eq!(s.multiplier, w.multiplier, "cfg {ci} layer {}", s.name);
                if s.ciphertexts == w.ciphertexts {
                    assert_eq!(s.counts, w.counts, "cfg {ci} layer {}", s.name);
                } else {
                    assert!(s.ciphertexts < w.ciphertexts, "cfg {ci} layer {}", s.name);
                    assert!(s.counts.add < w.counts.add, "cfg {ci} layer {}", s.name);
                }
            }
            // the observer saw each computed element once, all of them where all are computed
            for (ni, (s, w)) in seen_s.iter().zip(&seen_w).enumerate() {
                let mut s = s.clone();
                s.sort_unstable();
                let n = s.len();
                s.dedup();
                assert_eq!(s.len(), n, "cfg {ci} node {ni}: an element seen twice");
                assert!(s.iter().all(|&f| f < w.len()), "cfg {ci} node {ni}");
                if streamed.layers[ni].ciphertexts == whole.layers[ni].ciphertexts {
                    assert_eq!(n, w.len(), "cfg {ci} node {ni}");
                }
            }
            // on tiny maps a band of rows of several layers alive at once can exceed a
            // whole-layer step a little (a padded 3x3 pooling of a 6x6 map: 2 %); never more
            // than 10 %
            assert!(
                10 * streamed.peak_bytes <= 11 * whole.peak_bytes,
                "cfg {ci}: streamed peak {} > whole {}",
                streamed.peak_bytes,
                whole.peak_bytes
            );
            if ci == last {
                assert!(
                    2 * streamed.peak_bytes < whole.peak_bytes,
                    "row streaming should at least halve the peak of a 28 x 28 network: {} vs {}",
                    streamed.peak_bytes,
                    whole.peak_bytes
                );
            }
        }
        let dec: Vec<Vec<f64>> = whole.output.cts.iter().map(|c| c.v.clone()).collect();
        for (i, want) in kit::reference(&g, &imgs).iter().enumerate() {
            let got: Vec<f64> = dec.iter().map(|v| v[i] * whole.output.mult).collect();
            assert_bits(&format!("cfg {ci} image {i}"), &got, want, 28.0);
        }
    }
}

/// More images than slots: two per complex slot (image `i` in the real part of slot `i`,
/// image `slots + i` in its imaginary part). The plan says so, the client needs the
/// conjugation key, and the encrypted outputs of every image (both halves) equal the
/// reference: square, swish (x^2, x, constants, residual), cubic (products of distinct
/// ciphertexts) and a Chebyshev series (baby-step giant-step products).
#[test]
fn two_images_per_complex_slot_equal_the_reference() {
    let slots = 1usize << 10;
    for (k, cfg) in [0usize, 1, 2, 12]
        .into_iter()
        .map(|k| (k, kit::configs()[k]))
    {
        let g = kit::generated(&cfg, 300 + k as u64);
        let d = henn_nn::plan::depth(&g, LayoutKind::Batch).unwrap();
        let lit = TestChain {
            log_n: 11,
            q0_bits: 55,
            prime_bits: 40,
            levels: d,
            p_bits: 55,
        }
        .literal();
        let imgs = kit::images(&g, slots + 37, 60 + k as u64);
        let (plan, _) = make_plan(&g, &batch_opts(imgs.len()), &imgs[..16], Some(lit)).unwrap();
        assert!(plan.layout.complex_pairs, "config {k}");
        assert_eq!(plan.layout.value_slots(), 2 * slots);
        let back = henn_nn::plan::Plan::from_json(&plan.to_json().unwrap()).unwrap();
        assert_eq!(back, plan);
        let r = run_once(&g, &plan, &imgs, false).unwrap();
        let want = kit::reference(&g, &imgs);
        let mut worst = f64::INFINITY;
        for i in [0, 1, slots - 1, slots, slots + 1, slots + 36] {
            worst = worst.min(assert_bits(
                &format!("config {k} image {i}"),
                &r.outputs[i],
                &want[i],
                14.0,
            ));
        }
        eprintln!("config {k}: depth {d}, worst {worst:.1} bits over both halves");
    }
    // fewer images than slots: one per slot, no conjugation key
    let g = kit::generated(&kit::configs()[0], 300);
    let lit = test_insecure_chain(henn_nn::plan::depth(&g, LayoutKind::Batch).unwrap()).literal();
    let imgs = kit::images(&g, 8, 1);
    let (plan, _) = make_plan(&g, &batch_opts(8), &imgs, Some(lit)).unwrap();
    assert!(!plan.layout.complex_pairs);
    assert!(!plan.to_json().unwrap().contains("complex_pairs"));
}

/// x [1, 1, 6, 6] -> conv 1->4 -> square `a` -> conv 4->8 -> polynomial `b` (`coeffs`) ->
/// flatten -> fc 288->3. `a` feeds a wider layer (144 squares, 288 outputs): relinearized as
/// usual; `b` feeds 3 outputs: its top square left unrelinearized, the fc relinearizes its 3
/// sums.
fn narrowing_graph(coeffs: &[f64]) -> (Graph, usize, usize) {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut g = Graph::new("lazy", "x", vec![1, 1, 6, 6]);
    let conv = |rng: &mut rand_chacha::ChaCha8Rng, co: usize, ci: usize| {
        Op::Conv2d(henn_nn::ir::Conv2d {
            weight: kit::rand_tensor(rng, vec![co, ci, 3, 3], 0.4),
            bias: Some(vec![0.1; co]),
            stride: [1, 1],
            pads: [1, 1, 1, 1],
        })
    };
    let x = g.input();
    let c1 = g
        .add_node("c1", conv(&mut rng, 4, 1), vec![x], "c1")
        .unwrap();
    let a = g.add_node("a", Op::Mul, vec![c1, c1], "a").unwrap();
    let c2 = g
        .add_node("c2", conv(&mut rng, 8, 4), vec![a], "c2")
        .unwrap();
    let poly = Op::Polynomial {
        coeffs: coeffs.to_vec(),
    };
    let b = g.add_node("b", poly, vec![c2], "b").unwrap();
    let f = g
        .add_node(
            "flat",
            Op::Reshape {
                shape: vec![1, 288],
            },
            vec![b],
            "f",
        )
        .unwrap();
    let fc = Op::Linear(henn_nn::ir::Linear {
        weight: kit::rand_tensor(&mut rng, vec![3, 288], 0.1),
        bias: Some(vec![0.2, -0.1, 0.0]),
    });
    let y = g.add_node("fc", fc, vec![f], "y").unwrap();
    g.set_output(y).unwrap();
    (g, a, b)
}

/// Lazy relinearization: the plan leaves exactly the activation before the narrowing fc
/// unrelinearized (swish2 `0.1 x^2 + 0.5 x + 0.24` and swish4 `-0.001328 x^4 + 0.128 x^2 +
/// 0.5 x + 0.1773`: its top square), the encrypted run relinearizes the fc's 3 sums instead of
/// 288 squares (one image per slot and two per complex slot), and the logits stay within 20
/// bits of the reference at 40-bit primes (measured >= 27: the same levels and scales as
/// relinearized squares, one key switch's noise per output).
#[test]
fn squares_before_a_narrower_linear_layer_are_relinearized_after_it() {
    let swish2 = [0.24, 0.5, 0.1];
    let swish4 = [0.1773, 0.5, 0.128, 0.0, -0.001328];
    for (coeffs, depth, b_relin) in [(&swish2[..], 5, 0), (&swish4[..], 6, 288)] {
        let (g, a, b) = narrowing_graph(coeffs);
        let d = henn_nn::plan::depth(&g, LayoutKind::Batch).unwrap();
        assert_eq!(d, depth);
        let want_relin = |layers: &[henn_nn::exec::LayerStat], name: &str| {
            layers
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.counts.relin)
                .unwrap()
        };
        let chain = TestChain {
            log_n: 11,
            ..test_insecure_chain(d)
        };
        for n in [5usize, 1024 + 9] {
            let what = format!("degree {}, {n} images", coeffs.len() - 1);
            let imgs = kit::images(&g, n, 3);
            let opts = batch_opts(imgs.len());
            let (plan, _) = make_plan(&g, &opts, &imgs[..4], Some(chain.literal())).unwrap();
            assert_eq!(plan.layout.complex_pairs, n > 1024);
            assert_eq!(
                plan.layout.lazy_relin,
                vec![b],
                "{what}: only `b` (not `a` = {a})"
            );
            let back = henn_nn::plan::Plan::from_json(&plan.to_json().unwrap()).unwrap();
            assert_eq!(back, plan);
            // a plan edited (and re-signed) to relinearize eagerly is refused by the server
            let mut edited = plan.clone();
            edited.layout.lazy_relin.clear();
            edited.fingerprint = edited.digest().unwrap();
            match henn_nn::session::Server::new(std::sync::Arc::new(g.clone()), edited) {
                Err(henn_nn::NnError::PlanMismatch { what, .. }) => {
                    assert!(what.contains("lazy relinearization"), "{what}");
                }
                Err(e) => panic!("expected a plan mismatch, got {e}"),
                Ok(_) => panic!("an edited plan was accepted"),
            }
            // the simulated counts the planner weighs: 288 relinearizations fewer, 3 more
            let mut eager = plan.layout.clone();
            eager.lazy_relin.clear();
            let lazy_counts = henn_nn::plan::plan_counts(&g, &plan.layout).unwrap();
            let eager_counts = henn_nn::plan::plan_counts(&g, &eager).unwrap();
            assert_eq!(eager_counts.relin - lazy_counts.relin, 288 - 3, "{what}");
            assert_eq!(lazy_counts.square, eager_counts.square, "{what}");
            let r = run_once(&g, &plan, &imgs, false).unwrap();
            assert_eq!(want_relin(&r.layers, "a"), 144, "{what}");
            assert_eq!(want_relin(&r.layers, "b"), b_relin, "{what}");
            assert_eq!(want_relin(&r.layers, "fc"), 3, "{what}");
            assert_eq!(r.layers.last().unwrap().level, 0, "{what}");
            let want = kit::reference(&g, &imgs);
            let mut worst = f64::INFINITY;
            for i in [0, 1, n / 2, n - 1] {
                worst = worst.min(assert_bits(
                    &format!("{what}, image {i}"),
                    &r.outputs[i],
                    &want[i],
                    20.0,
                ));
            }
            eprintln!("{what}: worst logits {worst:.1} bits");
        }
    }
}
