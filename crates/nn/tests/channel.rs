//! Channel-wise packing: the slots backend with `ChannelLayout` equals the f64 reference on
//! generated graphs (kernels 1..5, strides 1-2, paddings 0-2, average/sum/global pooling,
//! polynomial activations, residual additions with 1x1 stride-2 skips, flatten + linear) and
//! on shipped MNIST models; the rotation steps are recorded by the simulated backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use henn_ckks::Scale;
use henn_nn::exec::simulated::Simulated;
use henn_nn::ir::{AvgPool, Conv2d, Linear};
use henn_nn::pack::Packed;
use henn_nn::pack::channel::{self, ChannelLayout};
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
    /// c2 x^2 + c1 x + c0 as Mul/MulConst/Add/AddConst nodes.
    Swish2,
    /// 0.1 x^3 + x (Pow).
    Cubic,
    /// Polynomial node.
    Poly,
}

fn act(g: &mut Graph, x: ValueId, a: Act, tag: &str, rng: &mut ChaCha8Rng) -> ValueId {
    let n = |s: &str| format!("{tag}.{s}");
    match a {
        Act::Square => g.add_node(n("sq"), Op::Mul, vec![x, x], n("sq")).unwrap(),
        Act::Swish2 => {
            let (c2, c1, c0) = (
                rng.random_range(0.05..0.3),
                rng.random_range(0.3..0.7),
                rng.random_range(-0.2..0.2),
            );
            let x2 = g.add_node(n("x2"), Op::Mul, vec![x, x], n("x2")).unwrap();
            let t2 = g
                .add_node(n("t2"), Op::MulConst(Tensor::scalar(c2)), vec![x2], n("t2"))
                .unwrap();
            let t1 = g
                .add_node(n("t1"), Op::MulConst(Tensor::scalar(c1)), vec![x], n("t1"))
                .unwrap();
            let s = g.add_node(n("s"), Op::Add, vec![t2, t1], n("s")).unwrap();
            g.add_node(n("c0"), Op::AddConst(Tensor::scalar(c0)), vec![s], n("out"))
                .unwrap()
        }
        Act::Cubic => {
            let p = g
                .add_node(n("pow"), Op::Pow { exponent: 3 }, vec![x], n("pow"))
                .unwrap();
            let p = g
                .add_node(n("k"), Op::MulConst(Tensor::scalar(0.1)), vec![p], n("k"))
                .unwrap();
            g.add_node(n("add"), Op::Add, vec![p, x], n("out")).unwrap()
        }
        Act::Poly => g
            .add_node(
                n("poly"),
                Op::Polynomial {
                    coeffs: vec![0.1, 0.5, 0.2, 0.0, 0.01],
                },
                vec![x],
                n("out"),
            )
            .unwrap(),
    }
}

#[derive(Clone, Copy, Debug)]
enum Pool {
    None,
    /// Average pooling (kernel, stride, pad, count_include_pad).
    Avg(usize, usize, usize, bool),
    /// Sum over H and W (ReduceSum), then flatten.
    Sum,
}

struct Cfg {
    hw: usize,
    cin: usize,
    c1: usize,
    k1: usize,
    s1: usize,
    p1: usize,
    act: Act,
    pool: Pool,
    residual: bool,
    global: bool,
    /// A second Linear after the first (reads the packed FC output).
    fc2: bool,
}

fn generated(cfg: &Cfg, seed: u64) -> Graph {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut g = Graph::new("gen", "x", vec![1, cfg.cin, cfg.hw, cfg.hw]);
    let w = rand_tensor(&mut rng, vec![cfg.c1, cfg.cin, cfg.k1, cfg.k1], 0.5);
    let bias = Some((0..cfg.c1).map(|_| rng.random_range(-0.1..0.1)).collect());
    let p = cfg.p1;
    let conv = Conv2d {
        weight: w,
        bias,
        stride: [cfg.s1, cfg.s1],
        pads: [p, p, p, p],
    };
    let mut x = g
        .add_node("conv1", Op::Conv2d(conv), vec![g.input()], "c1")
        .unwrap();
    x = act(&mut g, x, cfg.act, "act1", &mut rng);
    match cfg.pool {
        Pool::None => {}
        Pool::Avg(k, s, p, cip) => {
            let ap = AvgPool {
                kernel: [k, k],
                stride: [s, s],
                pads: [p; 4],
                count_include_pad: cip,
            };
            x = g
                .add_node("pool", Op::AvgPool(ap), vec![x], "pool")
                .unwrap();
        }
        Pool::Sum => {
            x = g
                .add_node(
                    "sum",
                    Op::ReduceSum {
                        axes: vec![2, 3],
                        keepdims: true,
                    },
                    vec![x],
                    "sum",
                )
                .unwrap();
        }
    }
    if cfg.residual {
        let c = g.shape(x)[1];
        let c2 = c + 1;
        let w2 = rand_tensor(&mut rng, vec![c2, c, 3, 3], 0.3);
        let conv2 = Conv2d {
            weight: w2,
            bias: None,
            stride: [2, 2],
            pads: [1; 4],
        };
        let y = g
            .add_node("conv2", Op::Conv2d(conv2), vec![x], "c2")
            .unwrap();
        let y = act(&mut g, y, Act::Square, "act2", &mut rng);
        let ws = rand_tensor(&mut rng, vec![c2, c, 1, 1], 0.5);
        let skip = Conv2d {
            weight: ws,
            bias: Some(vec![0.05; c2]),
            stride: [2, 2],
            pads: [0; 4],
        };
        let s = g
            .add_node("skip", Op::Conv2d(skip), vec![x], "skip")
            .unwrap();
        x = g.add_node("res", Op::Add, vec![y, s], "res").unwrap();
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
    let m1 = if cfg.fc2 { 6 } else { 4 };
    let wl = rand_tensor(&mut rng, vec![m1, n], 0.5);
    let b1: Vec<f64> = (0..m1).map(|_| rng.random_range(-0.2..0.2)).collect();
    let mut y = g
        .add_node(
            "fc",
            Op::Linear(Linear {
                weight: wl,
                bias: Some(b1),
            }),
            vec![x],
            "fc",
        )
        .unwrap();
    if cfg.fc2 {
        y = act(&mut g, y, Act::Square, "act3", &mut rng);
        let w2 = rand_tensor(&mut rng, vec![3, m1], 0.5);
        y = g
            .add_node(
                "fc2",
                Op::Linear(Linear {
                    weight: w2,
                    bias: Some(vec![0.1, -0.2, 0.3]),
                }),
                vec![y],
                "fc2",
            )
            .unwrap();
    }
    g.set_output(y).unwrap();
    g.validate().unwrap();
    g
}

fn configs() -> Vec<Cfg> {
    use Act::*;
    #[rustfmt::skip]
    let v = vec![
        Cfg { hw: 8, cin: 1, c1: 2, k1: 3, s1: 1, p1: 1, act: Square, pool: Pool::Avg(2, 2, 0, true), residual: false, global: false, fc2: false },
        Cfg { hw: 9, cin: 2, c1: 3, k1: 5, s1: 2, p1: 2, act: Swish2, pool: Pool::None, residual: true, global: true, fc2: false },
        Cfg { hw: 7, cin: 1, c1: 2, k1: 2, s1: 1, p1: 0, act: Cubic, pool: Pool::Avg(3, 2, 0, true), residual: false, global: true, fc2: true },
        Cfg { hw: 10, cin: 3, c1: 2, k1: 4, s1: 2, p1: 1, act: Swish2, pool: Pool::None, residual: false, global: false, fc2: true },
        Cfg { hw: 8, cin: 1, c1: 3, k1: 3, s1: 1, p1: 1, act: Square, pool: Pool::Avg(2, 2, 0, true), residual: true, global: false, fc2: false },
        Cfg { hw: 6, cin: 2, c1: 2, k1: 1, s1: 1, p1: 0, act: Poly, pool: Pool::Avg(3, 1, 1, false), residual: false, global: false, fc2: false },
        Cfg { hw: 9, cin: 1, c1: 2, k1: 5, s1: 1, p1: 2, act: Square, pool: Pool::Avg(3, 2, 1, true), residual: true, global: false, fc2: true },
        Cfg { hw: 8, cin: 2, c1: 3, k1: 3, s1: 2, p1: 0, act: Poly, pool: Pool::Sum, residual: false, global: false, fc2: false },
        Cfg { hw: 11, cin: 1, c1: 2, k1: 4, s1: 2, p1: 2, act: Cubic, pool: Pool::None, residual: true, global: false, fc2: false },
    ];
    v
}

fn image(g: &Graph, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let s = g.input_shape().to_vec();
    let k: usize = s.iter().product();
    Tensor::new(s, (0..k).map(|_| rng.random_range(0.0..1.0)).collect()).unwrap()
}

fn chain(levels: usize) -> Vec<f64> {
    let mut q = vec![2f64.powi(60)];
    q.extend(std::iter::repeat_n(2f64.powi(40), levels));
    q
}

/// Tolerance of slots == reference: the slots backend rounds constants as CKKS does
/// (`round(c * scale) / scale`); weights of convolution taps that touch the padding, and all
/// weights of a convolution with multiplexed outputs (block masks), are encoded at about 2^17
/// relative to their channel's largest (a 40-bit prime less the mask's share, see
/// `split_scale`; two bits less for multiplexed outputs, whose masks get them), accumulated
/// over a few layers and squared. A layout error gives O(1) differences.
const SLOTS_TOL: f64 = 3e-4;

fn close(out: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(out.len(), want.len(), "{what}: output length");
    for (a, b) in out.iter().zip(want) {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: {a} vs {b}");
    }
}

#[test]
fn slots_backend_equals_reference_on_generated_graphs() {
    for (ci, cfg) in configs().iter().enumerate() {
        for simplify in [false, true] {
            let g0 = generated(cfg, 200 + ci as u64);
            let g = if simplify {
                henn_nn::rewrite::simplify(&g0).unwrap()
            } else {
                g0
            };
            channel::check_supported(&g).unwrap();
            // a small slot count (one FC output per ciphertext) and a large one (packed outputs)
            let need = channel::required_slots(&g).unwrap().next_power_of_two();
            for slots in [need, 1024.max(need)] {
                for im in 0..2 {
                    let x = image(&g, 10 * ci as u64 + im);
                    let (out, stats) =
                        channel::run_slots(&g, &x, chain(20), Scale::from_log2(40.0), slots)
                            .unwrap();
                    let want = reference::run(&g, &x).unwrap();
                    close(
                        &out,
                        want.data(),
                        SLOTS_TOL,
                        &format!("cfg {ci} simplify {simplify} slots {slots} image {im}"),
                    );
                    if im == 0 {
                        let depth = 20 - stats.last().unwrap().level;
                        let rot: u64 = stats
                            .iter()
                            .map(|s| s.counts.rotate + s.counts.rotate_hoisted)
                            .sum();
                        eprintln!(
                            "cfg {ci} simplify {simplify} slots {slots}: depth {depth}, {rot} rotations, {} layers",
                            stats.len()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn simulated_backend_records_the_rotation_steps() {
    let g = henn_nn::rewrite::simplify(&generated(&configs()[1], 201)).unwrap();
    let sim = Simulated::new(chain(20), 1024);
    let cts = vec![
        henn_nn::exec::simulated::SimCt {
            level: 20,
            scale: Scale::from_log2(40.0)
        };
        g.input_shape()[1]
    ];
    let input = Packed {
        shape: g.input_shape().to_vec(),
        cts,
        mult: 1.0,
    };
    henn_nn::exec::run(&sim, &ChannelLayout, &g, input, |_, _| Ok(())).unwrap();
    let rots = sim.rotations();
    assert!(!rots.is_empty());
    assert!(!rots.contains(&0));
    // 5x5 pad 2 on a 9x9 image: taps (-2..=2) x (-2..=2) at row stride 9 (steps mod slots)
    for dy in -2i64..=2 {
        for dx in -2i64..=2 {
            if (dy, dx) != (0, 0) {
                let k = dy * 9 + dx;
                let found = rots.contains(&k) || rots.contains(&k.rem_euclid(1024));
                assert!(found, "missing conv tap step {k}");
            }
        }
    }
    eprintln!("rotation steps: {rots:?}");
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
    let e = channel::check_supported(&g).unwrap_err().to_string();
    assert!(e.contains("channel"), "{e}");
    // too few slots
    let g = generated(&configs()[0], 1);
    let e = channel::run_slots(&g, &image(&g, 0), chain(20), Scale::from_log2(40.0), 32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("slots"), "{e}");
}

fn mnist() -> henn_nn::data::LabeledImages {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    henn_nn::data::read_idx(
        &data.join("mnist-t10k-first100-images-idx3-ubyte"),
        &data.join("mnist-t10k-first100-labels-idx1-ubyte"),
    )
    .unwrap()
}

fn shipped(name: &str) -> Graph {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../models/{name}.onnx"));
    henn_nn::rewrite::simplify(&henn_nn::onnx::import_file(&path).unwrap()).unwrap()
}

#[test]
fn shipped_models_slots_backend_equals_reference() {
    let data = mnist();
    for name in ["mnist_cnn3_square", "mnist_tenseal"] {
        let g = shipped(name);
        channel::check_supported(&g).unwrap();
        for slots in [1024, 8192] {
            for i in 0..3 {
                let x = data.image(i).unwrap();
                let (out, stats) =
                    channel::run_slots(&g, &x, chain(20), Scale::from_log2(40.0), slots).unwrap();
                let want = reference::run(&g, &x).unwrap();
                close(
                    &out,
                    want.data(),
                    SLOTS_TOL,
                    &format!("{name} slots {slots} image {i}"),
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
                if i == 0 {
                    let rot: u64 = stats
                        .iter()
                        .map(|s| s.counts.rotate + s.counts.rotate_hoisted)
                        .sum();
                    let mp: u64 = stats.iter().map(|s| s.counts.mul_plain).sum();
                    eprintln!(
                        "{name} slots {slots}: depth {}, {rot} rotations, {mp} plaintext products, {} output ciphertexts",
                        20 - stats.last().unwrap().level,
                        stats.last().unwrap().ciphertexts
                    );
                }
            }
        }
    }
}

#[test]
fn encrypted_channel_inference_agrees_with_reference() {
    use henn_nn::exec::client::Client;
    use henn_nn::exec::encrypted::Encrypted;
    use henn_nn::pack::LayoutKind;
    use henn_nn::plan::{PlanOptions, make_plan};
    let g = henn_nn::rewrite::simplify(&generated(&configs()[0], 200)).unwrap();
    let depth = henn_nn::plan::depth(&g, LayoutKind::Channel).unwrap();
    let lit = henn_ckks::CkksParamsLiteral {
        log_n: 12,
        q_bits: std::iter::once(55)
            .chain(std::iter::repeat_n(40, depth))
            .collect(),
        p_bits: vec![55],
        log_scale: 40.0,
        dnum: None,
        secret: henn_ckks::SecretDistribution::Ternary,
        security: henn_ckks::SecurityPolicy::InsecureAllowed {
            reason: "henn-nn channel packing test".into(),
        },
    };
    let opts = PlanOptions {
        layout: LayoutKind::Channel,
        batch: 1,
        ..PlanOptions::default()
    };
    let (plan, params) = make_plan(&g, &opts, Some(lit)).unwrap();
    assert!(!plan.rotations.is_empty());
    let client = Client::new(&params).unwrap();
    let (rlk, gk) = client.evaluation_keys(&plan).unwrap();
    let be = Encrypted::new(&params, rlk, gk);
    let x = image(&g, 7);
    let input = client
        .encrypt(&plan, g.input_shape(), std::slice::from_ref(&x))
        .unwrap();
    let (out, layers) = henn_nn::exec::run(&be, &ChannelLayout, &g, input, |_, _| Ok(())).unwrap();
    for (p, e) in plan.layers.iter().zip(&layers) {
        assert_eq!(p.level, e.level, "layer {}", p.name);
        assert!(
            (p.log2_scale - e.log2_scale).abs() < 1e-9,
            "layer {}",
            p.name
        );
    }
    let dec = client.decrypt_slots(&out.cts).unwrap();
    let got =
        channel::unpack_outputs(&g, channel::Room::of_params(&params), &dec, out.mult).unwrap();
    let want = reference::run(&g, &x).unwrap();
    close(&got, want.data(), 1e-4, "encrypted");
    let top = |v: &[f64]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0
    };
    assert_eq!(top(&got), top(want.data()));
    eprintln!(
        "encrypted channel: depth {depth}, {} rotation keys, output {got:?}",
        plan.rotations.len()
    );
    // one session (keys once) for several images: per-layer errors against the reference
    // are small, and the second image reuses the cached mask plaintexts
    let session = henn_nn::exec::pipeline::Session::new(&g, &plan, &params).unwrap();
    for seed in [8, 9] {
        let x = image(&g, seed);
        let r = session.run(std::slice::from_ref(&x), true).unwrap();
        let errs = r.layer_errors.unwrap();
        assert_eq!(errs.len(), g.nodes().len());
        assert!(errs.iter().all(|&e| e < 1e-4), "image {seed}: {errs:?}");
        let want = reference::run(&g, &x).unwrap();
        close(&r.outputs[0], want.data(), 1e-4, "session");
    }
    assert!(session.backend().pt_cache_bytes() > 0);
}
