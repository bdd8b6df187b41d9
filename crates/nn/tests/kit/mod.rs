//! The henn-nn test kit: a generator of small CNNs covering every op the layouts support,
//! test parameter chains from `henn-testkit`, the committed MNIST images and the shipped
//! models, and one precision assertion in bits (`henn_testkit::assert_bits`).
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::{Path, PathBuf};

use henn_nn::ir::{AvgPool, Conv2d, Linear};
use henn_nn::pack::LayoutKind;
use henn_nn::plan::{Images, Plan, PlanOptions, make_plan};
use henn_nn::{Graph, Op, Tensor, ValueId};
use henn_testkit::{TestChain, test_insecure_chain};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use henn_testkit::{assert_bits, relative_bits};

/// Both layouts.
pub const LAYOUTS: [LayoutKind; 2] = [LayoutKind::Batch, LayoutKind::Channel];

pub fn rand_tensor(rng: &mut ChaCha8Rng, shape: Vec<usize>, amp: f64) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::new(shape, (0..n).map(|_| rng.random_range(-amp..amp)).collect()).unwrap()
}

/// Activations as PyTorch exports them.
#[derive(Clone, Copy, Debug)]
pub enum Act {
    Square,
    /// c2 x^2 + c1 x + c0 as Mul/MulConst/Add/AddConst nodes.
    Swish2,
    /// 0.1 x^3 + x (Pow).
    Cubic,
    /// A degree-4 Polynomial node.
    Poly,
    /// A degree-12 Chebyshev series on [-4, 4] (a ReLU fit, as `henn approximate` makes
    /// above degree 8).
    Cheb,
}

pub fn act(g: &mut Graph, x: ValueId, a: Act, tag: &str, rng: &mut ChaCha8Rng) -> ValueId {
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
        Act::Cheb => {
            let fit =
                henn_nn::approx::fit_uniform(henn_nn::ir::Activation::Relu, -4.0, 4.0, 12).unwrap();
            g.add_node(
                n("cheb"),
                Op::Chebyshev {
                    lo: -4.0,
                    hi: 4.0,
                    coeffs: fit.chebyshev,
                },
                vec![x],
                n("out"),
            )
            .unwrap()
        }
    }
}

/// Pooling after the first activation.
#[derive(Clone, Copy, Debug)]
pub enum Pool {
    None,
    /// Average pooling (kernel, stride, pad, count_include_pad).
    Avg(usize, usize, usize, bool),
    /// Sum over H and W (ReduceSum).
    Sum,
}

/// A generated network: conv -> act -> [pool] -> [residual block: 3x3 stride-2 conv, square,
/// 1x1 stride-2 skip, add] -> [global average pool] -> flatten -> linear -> [square ->
/// linear].
#[derive(Clone, Copy, Debug)]
pub struct Cfg {
    pub hw: usize,
    pub cin: usize,
    pub c1: usize,
    pub k1: usize,
    pub s1: usize,
    pub p1: usize,
    pub act: Act,
    pub pool: Pool,
    pub residual: bool,
    pub global: bool,
    /// A second Linear after the first (reads the packed FC output).
    pub fc2: bool,
}

pub fn generated(cfg: &Cfg, seed: u64) -> Graph {
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

/// Kernels 1..5, strides 1-3, paddings 0-2, average (padded or not, counting the padding or
/// not), sum and global pooling, all activation forms, residual blocks, one or two linear
/// layers, convolutions the channel layout multiplexes (the two before the last), a
/// Chebyshev series of degree 12 (the last); every config is
/// supported by every layout.
pub fn configs() -> Vec<Cfg> {
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
        Cfg { hw: 10, cin: 3, c1: 2, k1: 4, s1: 3, p1: 1, act: Swish2, pool: Pool::None, residual: false, global: false, fc2: false },
        // convolutions whose outputs multiplex (only channel-uniform work up to the FC)
        Cfg { hw: 8, cin: 1, c1: 5, k1: 3, s1: 1, p1: 1, act: Poly, pool: Pool::None, residual: false, global: false, fc2: false },
        Cfg { hw: 7, cin: 2, c1: 3, k1: 3, s1: 2, p1: 1, act: Square, pool: Pool::None, residual: false, global: false, fc2: true },
        // a high-degree Chebyshev series (its change of interval folded into conv1 once
        // simplified, evaluated on the ciphertext before)
        Cfg { hw: 8, cin: 1, c1: 3, k1: 3, s1: 1, p1: 1, act: Cheb, pool: Pool::Avg(2, 2, 0, true), residual: true, global: false, fc2: false },
    ];
    v
}

/// `n` images of `g`'s input shape with pixels uniform in [0, 1).
pub fn images(g: &Graph, n: usize, seed: u64) -> Vec<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let s = g.input_shape().to_vec();
    let k: usize = s.iter().product();
    (0..n)
        .map(|_| {
            Tensor::new(
                s.clone(),
                (0..k).map(|_| rng.random_range(0.0..1.0)).collect(),
            )
            .unwrap()
        })
        .collect()
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The first 100 MNIST test images (committed under `tests/data/`).
pub fn mnist100() -> henn_nn::data::LabeledImages {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    henn_nn::data::read_idx(
        &data.join("mnist-t10k-first100-images-idx3-ubyte"),
        &data.join("mnist-t10k-first100-labels-idx1-ubyte"),
    )
    .unwrap()
}

/// The first `n` committed MNIST test images.
pub fn mnist_images(n: usize) -> Vec<Tensor> {
    let set = mnist100();
    (0..n.min(set.len()))
        .map(|i| set.image(i).unwrap())
        .collect()
}

/// A shipped model, imported and simplified.
pub fn shipped(name: &str) -> Graph {
    let path = repo().join(format!("models/{name}.onnx"));
    henn_nn::rewrite::simplify(&henn_nn::onnx::import_file(&path).unwrap()).unwrap()
}

/// A `TEST_INSECURE_CHAIN` with enough levels for `g` under `kind`.
pub fn chain_for(g: &Graph, kind: LayoutKind) -> TestChain {
    test_insecure_chain(henn_nn::plan::depth(g, kind).unwrap())
}

/// A plan of `g` under `kind` for `images` (one run) on `chain`.
pub fn plan_on(g: &Graph, kind: LayoutKind, images: &[Tensor], chain: &TestChain) -> Plan {
    let opts = PlanOptions {
        layout: kind,
        images: Images::Exactly(images.len()),
        ..PlanOptions::default()
    };
    make_plan(g, &opts, images, Some(chain.literal()))
        .unwrap()
        .0
}

/// Reference outputs of `g`, one vector per image.
pub fn reference(g: &Graph, images: &[Tensor]) -> Vec<Vec<f64>> {
    images
        .iter()
        .map(|x| henn_nn::reference::run(g, x).unwrap().into_data())
        .collect()
}
