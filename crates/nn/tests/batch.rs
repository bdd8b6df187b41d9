//! Batch-axis packing: the slots backend equals the f64 reference on generated graphs (varied
//! kernels, strides, paddings, pooling, PyTorch-style polynomial activations); the simulated
//! backend predicts the encrypted backend's levels and scales; encrypted inference on small
//! insecure parameters agrees with the reference; error cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// HE objects are large and short-lived: the binary's allocator, for realistic test times.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use henn_ckks::Scale;
use henn_nn::exec::slots;
use henn_nn::ir::{AvgPool, Conv2d, Linear};
use henn_nn::{Graph, Op, Tensor, ValueId, reference};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rand_tensor(rng: &mut ChaCha8Rng, shape: Vec<usize>, amp: f64) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::new(shape, (0..n).map(|_| rng.random_range(-amp..amp)).collect()).unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Act {
    Square,
    /// c2 x^2 + c1 x + c0 as Mul/Add nodes.
    Swish2,
    /// Pow(x, 3) plus x.
    Cubic,
}

/// Emits a PyTorch-style activation (Mul/Add/MulConst/AddConst/Pow nodes).
fn act(g: &mut Graph, x: ValueId, a: Act, tag: &str, rng: &mut ChaCha8Rng) -> ValueId {
    match a {
        Act::Square => g
            .add_node(
                format!("{tag}.sq"),
                Op::Mul,
                vec![x, x],
                format!("{tag}.sq"),
            )
            .unwrap(),
        Act::Swish2 => {
            let c2 = rng.random_range(0.05..0.3);
            let c1 = rng.random_range(0.3..0.7);
            let c0 = rng.random_range(-0.2..0.2);
            let x2 = g
                .add_node(
                    format!("{tag}.x2"),
                    Op::Mul,
                    vec![x, x],
                    format!("{tag}.x2"),
                )
                .unwrap();
            let t2 = g
                .add_node(
                    format!("{tag}.t2"),
                    Op::MulConst(Tensor::scalar(c2)),
                    vec![x2],
                    format!("{tag}.t2"),
                )
                .unwrap();
            let t1 = g
                .add_node(
                    format!("{tag}.t1"),
                    Op::MulConst(Tensor::scalar(c1)),
                    vec![x],
                    format!("{tag}.t1"),
                )
                .unwrap();
            let s = g
                .add_node(
                    format!("{tag}.s"),
                    Op::Add,
                    vec![t2, t1],
                    format!("{tag}.s"),
                )
                .unwrap();
            g.add_node(
                format!("{tag}.c0"),
                Op::AddConst(Tensor::scalar(c0)),
                vec![s],
                format!("{tag}.out"),
            )
            .unwrap()
        }
        Act::Cubic => {
            let p = g
                .add_node(
                    format!("{tag}.pow"),
                    Op::Pow { exponent: 3 },
                    vec![x],
                    format!("{tag}.pow"),
                )
                .unwrap();
            let p = g
                .add_node(
                    format!("{tag}.k"),
                    Op::MulConst(Tensor::scalar(0.1)),
                    vec![p],
                    format!("{tag}.k"),
                )
                .unwrap();
            g.add_node(
                format!("{tag}.add"),
                Op::Add,
                vec![p, x],
                format!("{tag}.out"),
            )
            .unwrap()
        }
    }
}

struct Cfg {
    hw: usize,
    cin: usize,
    c1: usize,
    k1: usize,
    s1: usize,
    p1: usize,
    act: Act,
    pool: Option<(usize, usize)>,
    residual: bool,
    global: bool,
}

/// conv -> act -> [avg pool] -> [residual conv block with 1x1 skip] -> [global avg pool |
/// flatten] -> linear.
fn generated(cfg: &Cfg, seed: u64) -> Graph {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut g = Graph::new("gen", "x", vec![1, cfg.cin, cfg.hw, cfg.hw]);
    let w = rand_tensor(&mut rng, vec![cfg.c1, cfg.cin, cfg.k1, cfg.k1], 0.5);
    let bias = Some((0..cfg.c1).map(|_| rng.random_range(-0.1..0.1)).collect());
    let p = cfg.p1;
    let mut x = g
        .add_node(
            "conv1",
            Op::Conv2d(Conv2d {
                weight: w,
                bias,
                stride: [cfg.s1, cfg.s1],
                pads: [p, p, p, p],
            }),
            vec![g.input()],
            "c1",
        )
        .unwrap();
    x = act(&mut g, x, cfg.act, "act1", &mut rng);
    if let Some((k, s)) = cfg.pool {
        x = g
            .add_node(
                "pool",
                Op::AvgPool(AvgPool {
                    kernel: [k, k],
                    stride: [s, s],
                    pads: [0; 4],
                    count_include_pad: true,
                }),
                vec![x],
                "pool",
            )
            .unwrap();
    }
    if cfg.residual {
        let c = g.shape(x)[1];
        let c2 = c + 1;
        let w2 = rand_tensor(&mut rng, vec![c2, c, 3, 3], 0.3);
        let y = g
            .add_node(
                "conv2",
                Op::Conv2d(Conv2d {
                    weight: w2,
                    bias: None,
                    stride: [2, 2],
                    pads: [1; 4],
                }),
                vec![x],
                "c2",
            )
            .unwrap();
        let y = act(&mut g, y, Act::Square, "act2", &mut rng);
        let ws = rand_tensor(&mut rng, vec![c2, c, 1, 1], 0.5);
        let skip = g
            .add_node(
                "skip",
                Op::Conv2d(Conv2d {
                    weight: ws,
                    bias: Some(vec![0.05; c2]),
                    stride: [2, 2],
                    pads: [0; 4],
                }),
                vec![x],
                "skip",
            )
            .unwrap();
        x = g.add_node("res", Op::Add, vec![y, skip], "res").unwrap();
    }
    if cfg.global {
        x = g
            .add_node("gap", Op::GlobalAvgPool, vec![x], "gap")
            .unwrap();
    }
    let n: usize = g.shape(x).iter().product();
    x = g
        .add_node(
            "flatten",
            Op::Reshape { shape: vec![1, n] },
            vec![x],
            "flat",
        )
        .unwrap();
    let wl = rand_tensor(&mut rng, vec![4, n], 0.5);
    let y = g
        .add_node(
            "fc",
            Op::Linear(Linear {
                weight: wl,
                bias: Some(vec![0.1, -0.1, 0.0, 0.2]),
            }),
            vec![x],
            "logits",
        )
        .unwrap();
    g.set_output(y).unwrap();
    g.validate().unwrap();
    g
}

fn configs() -> Vec<Cfg> {
    vec![
        Cfg {
            hw: 8,
            cin: 1,
            c1: 2,
            k1: 3,
            s1: 1,
            p1: 1,
            act: Act::Square,
            pool: Some((2, 2)),
            residual: false,
            global: false,
        },
        Cfg {
            hw: 9,
            cin: 2,
            c1: 3,
            k1: 5,
            s1: 2,
            p1: 2,
            act: Act::Swish2,
            pool: None,
            residual: true,
            global: true,
        },
        Cfg {
            hw: 7,
            cin: 1,
            c1: 2,
            k1: 2,
            s1: 1,
            p1: 0,
            act: Act::Cubic,
            pool: Some((3, 2)),
            residual: false,
            global: true,
        },
        Cfg {
            hw: 10,
            cin: 3,
            c1: 2,
            k1: 4,
            s1: 3,
            p1: 1,
            act: Act::Swish2,
            pool: None,
            residual: false,
            global: false,
        },
        Cfg {
            hw: 8,
            cin: 1,
            c1: 3,
            k1: 3,
            s1: 1,
            p1: 1,
            act: Act::Square,
            pool: Some((2, 2)),
            residual: true,
            global: false,
        },
    ]
}

fn images(g: &Graph, n: usize, seed: u64) -> Vec<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let s = g.input_shape().to_vec();
            let k: usize = s.iter().product();
            Tensor::new(s, (0..k).map(|_| rng.random_range(0.0..1.0)).collect()).unwrap()
        })
        .collect()
}

fn chain(levels: usize) -> Vec<f64> {
    let mut q = vec![2f64.powi(60)];
    q.extend(std::iter::repeat_n(2f64.powi(40), levels));
    q
}

#[test]
fn slots_backend_equals_reference_on_generated_graphs() {
    for (ci, cfg) in configs().iter().enumerate() {
        for simplify in [false, true] {
            let g0 = generated(cfg, 100 + ci as u64);
            let g = if simplify {
                henn_nn::rewrite::simplify(&g0).unwrap()
            } else {
                g0
            };
            let imgs = images(&g, 5, ci as u64);
            let (out, stats) =
                slots::run_batch(&g, &imgs, chain(20), Scale::from_log2(40.0)).unwrap();
            for (i, x) in imgs.iter().enumerate() {
                let r = reference::run(&g, x).unwrap();
                for (a, b) in out[i].iter().zip(r.data()) {
                    assert!(
                        (a - b).abs() <= 1e-9 * (1.0 + b.abs()),
                        "cfg {ci} simplify {simplify} image {i}: {a} vs {b}"
                    );
                }
            }
            let depth = 20 - stats.last().unwrap().level;
            eprintln!(
                "cfg {ci} simplify {simplify}: depth {depth}, {} layers",
                stats.len()
            );
        }
    }
}

fn insecure(log_n: u32, levels: usize) -> henn_ckks::CkksParamsLiteral {
    henn_ckks::CkksParamsLiteral {
        log_n,
        q_bits: std::iter::once(55)
            .chain(std::iter::repeat_n(40, levels))
            .collect(),
        p_bits: vec![55],
        log_scale: 40.0,
        dnum: None,
        secret: henn_ckks::SecretDistribution::Ternary,
        security: henn_ckks::SecurityPolicy::InsecureAllowed {
            reason: "henn-nn batch packing test".into(),
        },
    }
}

#[test]
fn encrypted_matches_reference_and_simulation_on_generated_graphs() {
    use henn_nn::pack::LayoutKind;
    use henn_nn::plan::{PlanOptions, make_plan};
    for (ci, cfg) in configs().iter().enumerate() {
        let g = henn_nn::rewrite::simplify(&generated(cfg, 100 + ci as u64)).unwrap();
        let imgs = images(&g, 4, ci as u64);
        let opts = PlanOptions {
            layout: LayoutKind::Batch,
            batch: imgs.len(),
            ..PlanOptions::default()
        };
        let (plan, params) = make_plan(&g, &opts, Some(insecure(12, plan_depth(&g)))).unwrap();
        assert!(
            plan.rotations.is_empty(),
            "batch packing needs no rotations"
        );
        let r = henn_nn::exec::pipeline::run_batch(&g, &plan, &params, &imgs, true).unwrap();
        // the simulated backend predicted every level and scale of the encrypted run
        assert_eq!(plan.layers.len(), r.layers.len());
        for (p, e) in plan.layers.iter().zip(&r.layers) {
            assert_eq!(p.level, e.level, "cfg {ci} layer {}", p.name);
            assert!(
                (p.log2_scale - e.log2_scale).abs() < 1e-9,
                "cfg {ci} layer {}",
                p.name
            );
            assert_eq!(p.counts, e.counts, "cfg {ci} layer {}", p.name);
        }
        let errs = r.layer_errors.unwrap();
        for (i, x) in imgs.iter().enumerate() {
            let want = reference::run(&g, x).unwrap();
            for (a, b) in r.outputs[i].iter().zip(want.data()) {
                assert!(
                    (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "cfg {ci} image {i}: {a} vs {b} (layer errors {errs:?})"
                );
            }
        }
        eprintln!(
            "cfg {ci}: depth {}, max layer error {:.2e}",
            plan.depth,
            errs.iter().fold(0.0f64, |m, &e| m.max(e))
        );
    }
}

fn plan_depth(g: &Graph) -> usize {
    henn_nn::plan::depth(g, henn_nn::pack::LayoutKind::Batch).unwrap()
}

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn mnist100() -> henn_nn::data::LabeledImages {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    henn_nn::data::read_idx(
        &data.join("mnist-t10k-first100-images-idx3-ubyte"),
        &data.join("mnist-t10k-first100-labels-idx1-ubyte"),
    )
    .unwrap()
}

/// Encrypted batch inference of a shipped model with automatically chosen (secure)
/// parameters: top-1 equals the plaintext top-1 on all 100 committed MNIST test images.
fn shipped_model_agrees(name: &str) {
    use henn_nn::pack::LayoutKind;
    use henn_nn::plan::{PlanOptions, make_plan, max_abs_slots};
    let g = henn_nn::onnx::import_file(repo().join(format!("models/{name}.onnx"))).unwrap();
    let g = henn_nn::rewrite::simplify(&g).unwrap();
    let set = mnist100();
    let imgs: Vec<Tensor> = (0..set.len()).map(|i| set.image(i).unwrap()).collect();
    let max_abs = max_abs_slots(&g, &imgs[..16]).unwrap();
    let opts = PlanOptions {
        layout: LayoutKind::Batch,
        batch: imgs.len(),
        max_abs,
        ..PlanOptions::default()
    };
    let (plan, params) = make_plan(&g, &opts, None).unwrap();
    let t = std::time::Instant::now();
    let r = henn_nn::exec::pipeline::run_batch(&g, &plan, &params, &imgs, false).unwrap();
    let mut agree = 0;
    let mut max_err = 0.0f64;
    for (i, x) in imgs.iter().enumerate() {
        let want = reference::run(&g, x).unwrap();
        let got = Tensor::new(want.shape().to_vec(), r.outputs[i].clone()).unwrap();
        max_err = max_err.max(got.max_abs_diff(&want).unwrap());
        if got.argmax() == want.argmax() {
            agree += 1;
        }
    }
    eprintln!(
        "{name}: depth {}, max_abs {max_abs:.3e}, params N=2^{} q {:?} p {:?} scale 2^{}, eval {:.2} s (total {:.2} s), max logit error {max_err:.2e}, agreement {agree}/100",
        plan.depth,
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

#[test]
fn shipped_cnn3_square_encrypted_top1_equals_plaintext() {
    shipped_model_agrees("mnist_cnn3_square");
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
    let e = henn_nn::plan::make_plan(&g, &henn_nn::plan::PlanOptions::default(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("depth D = 80"), "{e}");
}

#[test]
fn user_params_that_do_not_fit_are_explained() {
    let g = generated(&configs()[1], 101);
    let d = plan_depth(&g);
    let e = henn_nn::plan::check_params(
        &g,
        henn_nn::pack::LayoutKind::Batch,
        &insecure(12, d - 2),
        d,
        1,
        1.0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains(&format!("needs depth {d}")), "{e}");
    let e = henn_nn::plan::check_params(
        &g,
        henn_nn::pack::LayoutKind::Batch,
        &insecure(12, d),
        d,
        5000,
        1.0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("5000 slots"), "{e}");
    let mut lit = insecure(12, d);
    lit.security = henn_ckks::SecurityPolicy::Enforce { bits: 128 };
    let e = henn_nn::plan::check_params(&g, henn_nn::pack::LayoutKind::Batch, &lit, d, 1, 1.0)
        .unwrap_err()
        .to_string();
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
    let e = henn_nn::plan::make_plan(&g, &henn_nn::plan::PlanOptions::default(), None).unwrap_err();
    assert!(
        matches!(e, henn_nn::NnError::UnsupportedForLayout { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("ReLU"), "{e}");
    // The channel-wise layout refuses it the same way.
    let opts = henn_nn::plan::PlanOptions {
        layout: henn_nn::pack::LayoutKind::Channel,
        ..Default::default()
    };
    let e = henn_nn::plan::make_plan(&g, &opts, None).unwrap_err();
    assert!(
        matches!(e, henn_nn::NnError::UnsupportedForLayout { .. }),
        "{e}"
    );
}

#[test]
fn missing_rotation_key_is_a_clear_error() {
    use henn_ckks::{CkksParams, GaloisKeys, KeyGenerator};
    let params = CkksParams::new(insecure(12, 1)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut crng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
    let _ = rng.random::<u8>();
    let kg = KeyGenerator::new(&params);
    let sk = kg.secret_key(&mut crng).unwrap();
    let rlk = kg.relin_key(&sk, &mut crng).unwrap();
    let gk: GaloisKeys = kg.galois_keys(&sk, &[1], false, &mut crng).unwrap();
    let be = henn_nn::exec::encrypted::Encrypted::new(&params, rlk, gk);
    assert!(be.check_rotations(&[1]).is_ok());
    let e = be.check_rotations(&[1, 4]).unwrap_err().to_string();
    assert!(e.contains("[4]") && e.contains("Galois"), "{e}");
}

#[test]
fn shipped_tenseal_encrypted_top1_equals_plaintext() {
    shipped_model_agrees("mnist_tenseal");
}

/// A chain one prime short of the depth works when the last op is linear and the base prime
/// has room (the reference ResNet's `[60, 35 x 8]` situation): the final linear layer runs at
/// level 0 at a reduced constant scale without a rescale. Encrypted output == reference.
#[test]
fn last_linear_layer_at_level_zero_saves_a_prime() {
    use henn_nn::pack::LayoutKind;
    use henn_nn::plan::{PlanOptions, make_plan};
    let g = generated(&configs()[1], 101);
    assert!(matches!(
        g.nodes().last().map(|n| &n.op),
        Some(Op::Linear(_))
    ));
    let d = plan_depth(&g);
    let lit = |levels: usize, q0: u32| henn_ckks::CkksParamsLiteral {
        log_n: 12,
        q_bits: std::iter::once(q0)
            .chain(std::iter::repeat_n(35, levels))
            .collect(),
        p_bits: vec![60],
        log_scale: 35.0,
        dnum: None,
        secret: henn_ckks::SecretDistribution::Ternary,
        security: henn_ckks::SecurityPolicy::InsecureAllowed {
            reason: "henn-nn level-0 test".into(),
        },
    };
    let imgs = images(&g, 4, 40);
    let opts = PlanOptions {
        layout: LayoutKind::Batch,
        batch: imgs.len(),
        max_abs: henn_nn::plan::max_abs_slots(&g, &imgs).unwrap(),
        ..PlanOptions::default()
    };
    // two primes short, or a base prime without room: explained
    assert!(make_plan(&g, &opts, Some(lit(d - 2, 60))).is_err());
    assert!(make_plan(&g, &opts, Some(lit(d - 1, 45))).is_err());
    let (plan, params) = make_plan(&g, &opts, Some(lit(d - 1, 60))).unwrap();
    let last = plan.layers.last().unwrap();
    assert_eq!(last.level, 0);
    assert!(last.log2_scale > 35.0 + 9.0, "{}", last.log2_scale);
    let r = henn_nn::exec::pipeline::run_batch(&g, &plan, &params, &imgs, false).unwrap();
    for (i, x) in imgs.iter().enumerate() {
        let want = reference::run(&g, x).unwrap();
        let got = Tensor::new(want.shape().to_vec(), r.outputs[i].clone()).unwrap();
        let err = got.max_abs_diff(&want).unwrap();
        // scale 2^35 data, weights of the last layer at >= 2^10: about 10 bits fewer than a
        // rescaled layer; bound 2^-8 absolute on outputs of magnitude <= 4
        assert!(err < 2f64.powi(-8), "image {i}: error {err:.3e}");
    }
}

#[test]
fn plan_reports_peak_ciphertext_memory() {
    use henn_nn::pack::LayoutKind;
    use henn_nn::plan::{PlanOptions, make_plan};
    // x [1, 4] -> square -> square: the peak is a node's input and output together
    let mut g = Graph::new("sq2", "x", vec![1, 4]);
    let x = g.input();
    let a = g.add_node("sq0", Op::Mul, vec![x, x], "a").unwrap();
    let y = g.add_node("sq1", Op::Mul, vec![a, a], "y").unwrap();
    g.set_output(y).unwrap();
    let opts = PlanOptions {
        layout: LayoutKind::Batch,
        batch: 8,
        ..PlanOptions::default()
    };
    let (plan, params) = make_plan(&g, &opts, Some(insecure(12, 2))).unwrap();
    let n = params.n() as u64;
    let ct = |level: u64| 4 * 2 * n * (level + 1) * 8;
    assert_eq!(plan.peak_bytes, ct(2) + ct(1));
    let back = henn_nn::plan::Plan::from_json(&plan.to_json().unwrap()).unwrap();
    assert_eq!(back.peak_bytes, plan.peak_bytes);
}

/// Runs `g` on the slots backend with `row_chunk_cts` (1: one row per step, the most
/// streaming; `usize::MAX`: whole layers), recording which elements the observer saw.
fn run_chunked(
    g: &Graph,
    imgs: &[Tensor],
    row_chunk_cts: usize,
) -> (henn_nn::exec::RunOutput<slots::SlotCt>, Vec<Vec<usize>>) {
    use henn_nn::exec::{ExecOptions, run_with};
    use henn_nn::pack::{Packed, batch};
    let be = slots::Slots::new(chain(20), imgs.len());
    let cts = batch::pack_inputs(imgs)
        .unwrap()
        .iter()
        .map(|v| be.input(v, Scale::from_log2(40.0)))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let input = Packed {
        shape: g.input_shape().to_vec(),
        cts,
        mult: 1.0,
    };
    let mut seen = vec![Vec::new(); g.nodes().len()];
    let out = run_with(
        &be,
        &batch::BatchLayout,
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
    let mut cfgs = configs();
    cfgs.push(Cfg {
        hw: 28,
        cin: 1,
        c1: 4,
        k1: 3,
        s1: 1,
        p1: 1,
        act: Act::Square,
        pool: Some((2, 2)),
        residual: true,
        global: true,
    });
    let last = cfgs.len() - 1;
    for (ci, cfg) in cfgs.iter().enumerate() {
        let g = henn_nn::rewrite::simplify(&generated(cfg, 300 + ci as u64)).unwrap();
        let imgs = images(&g, 3, ci as u64);
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
            assert!(
                streamed.peak_bytes <= whole.peak_bytes,
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
        let got = slots::run_batch(&g, &imgs, chain(20), Scale::from_log2(40.0))
            .unwrap()
            .0;
        for (i, x) in imgs.iter().enumerate() {
            let r = reference::run(&g, x).unwrap();
            for (a, b) in got[i].iter().zip(r.data()) {
                assert!(
                    (a - b).abs() <= 1e-9 * (1.0 + b.abs()),
                    "cfg {ci}: {a} vs {b}"
                );
            }
        }
    }
}
