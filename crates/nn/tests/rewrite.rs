//! Each rewrite leaves the reference output unchanged (1e-9 relative) and does what it says.
#![allow(clippy::unwrap_used, clippy::panic)]

use henn_nn::ir::{Activation, BatchNorm, Conv2d, Linear};
use henn_nn::{Graph, Op, Tensor, reference, rewrite};

fn vals(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

fn t(shape: &[usize], seed: u64) -> Tensor {
    Tensor::new(shape.to_vec(), vals(shape.iter().product(), seed)).unwrap()
}

fn bn(c: usize, seed: u64) -> Op {
    let v = vals(4 * c, seed);
    Op::BatchNorm(BatchNorm {
        gamma: v[..c].to_vec(),
        beta: v[c..2 * c].to_vec(),
        mean: v[2 * c..3 * c].to_vec(),
        var: v[3 * c..].iter().map(|x| x.abs() + 0.1).collect(),
        eps: 1e-5,
    })
}

fn linear(o: usize, i: usize, seed: u64) -> Op {
    Op::Linear(Linear {
        weight: t(&[o, i], seed),
        bias: Some(vals(o, seed + 1)),
    })
}

/// Runs both graphs on a few inputs and checks 1e-9 relative agreement.
fn same(a: &Graph, b: &Graph) {
    b.validate().unwrap();
    for seed in 0..3 {
        let x = t(a.input_shape(), 100 + seed);
        let ya = reference::run(a, &x).unwrap();
        let yb = reference::run(b, &x).unwrap();
        let scale = ya.data().iter().fold(1e-300f64, |m, v| m.max(v.abs()));
        let err = ya.max_abs_diff(&yb).unwrap() / scale;
        assert!(err <= 1e-9, "relative difference {err:e}");
    }
}

fn kinds(g: &Graph) -> Vec<&'static str> {
    g.nodes().iter().map(|n| n.op.kind()).collect()
}

#[test]
fn conv_batchnorm_fusion_with_and_without_bias() {
    for bias in [true, false] {
        let mut g = Graph::new("g", "x", vec![1, 3, 7, 7]);
        let c = g
            .add_node(
                "conv",
                Op::Conv2d(Conv2d {
                    weight: t(&[4, 3, 3, 3], 1),
                    bias: bias.then(|| vals(4, 2)),
                    stride: [2, 1],
                    pads: [1, 0, 1, 2],
                }),
                vec![0],
                "c",
            )
            .unwrap();
        let y = g.add_node("bn", bn(4, 3), vec![c], "y").unwrap();
        g.set_output(y).unwrap();
        let f = rewrite::fuse_batchnorm(&g).unwrap();
        assert_eq!(kinds(&f), ["Conv2d"]);
        same(&g, &f);
    }
}

#[test]
fn linear_batchnorm1d_fusion_and_no_fusion_when_shared() {
    let mut g = Graph::new("g", "x", vec![1, 6]);
    let l = g.add_node("fc", linear(5, 6, 1), vec![0], "l").unwrap();
    let y = g.add_node("bn", bn(5, 2), vec![l], "y").unwrap();
    g.set_output(y).unwrap();
    let f = rewrite::fuse_batchnorm(&g).unwrap();
    assert_eq!(kinds(&f), ["Linear"]);
    same(&g, &f);

    // The linear output is also used elsewhere: no fusion.
    let mut g = Graph::new("g", "x", vec![1, 6]);
    let l = g.add_node("fc", linear(5, 6, 1), vec![0], "l").unwrap();
    let b = g.add_node("bn", bn(5, 2), vec![l], "b").unwrap();
    let y = g.add_node("add", Op::Add, vec![l, b], "y").unwrap();
    g.set_output(y).unwrap();
    let f = rewrite::fuse_batchnorm(&g).unwrap();
    assert_eq!(kinds(&f), kinds(&g));
}

#[test]
fn constant_affine_folds_into_previous_and_next_linear() {
    // x -> (x - m) * s (per channel) -> conv (no pad) -> *k (per channel) + b -> relu
    let mut g = Graph::new("g", "x", vec![1, 2, 5, 5]);
    let a = g
        .add_node(
            "sub",
            Op::AddConst(Tensor::new(vec![2, 1, 1], vec![-0.4, 0.3]).unwrap()),
            vec![0],
            "a",
        )
        .unwrap();
    let s = g
        .add_node(
            "div",
            Op::MulConst(Tensor::new(vec![1, 2, 1, 1], vec![4.0, 0.5]).unwrap()),
            vec![a],
            "s",
        )
        .unwrap();
    let conv = Op::Conv2d(Conv2d {
        weight: t(&[3, 2, 2, 2], 5),
        bias: None,
        stride: [1, 1],
        pads: [0; 4],
    });
    let c = g.add_node("conv", conv, vec![s], "c").unwrap();
    let k = g
        .add_node(
            "k",
            Op::MulConst(Tensor::new(vec![3, 1, 1], vec![2.0, -1.0, 0.5]).unwrap()),
            vec![c],
            "k",
        )
        .unwrap();
    let b = g
        .add_node("b", Op::AddConst(Tensor::scalar(0.25)), vec![k], "b")
        .unwrap();
    let y = g
        .add_node("relu", Op::Activation(Activation::Relu), vec![b], "y")
        .unwrap();
    g.set_output(y).unwrap();
    let f = rewrite::simplify(&g).unwrap();
    assert_eq!(kinds(&f), ["Conv2d", "Relu"]);
    same(&g, &f);

    // With zero padding, a shift before the conv must NOT be folded (inexact at borders).
    let mut g = Graph::new("g", "x", vec![1, 1, 4, 4]);
    let a = g
        .add_node("sub", Op::AddConst(Tensor::scalar(-0.5)), vec![0], "a")
        .unwrap();
    let conv = Op::Conv2d(Conv2d {
        weight: t(&[1, 1, 3, 3], 6),
        bias: None,
        stride: [1, 1],
        pads: [1; 4],
    });
    let y = g.add_node("conv", conv, vec![a], "y").unwrap();
    g.set_output(y).unwrap();
    let f = rewrite::fold_affine_into_next_linear(&g).unwrap();
    assert_eq!(kinds(&f), ["AddConst", "Conv2d"]);
    same(&g, &f);

    // A shift and scale before a Linear fold.
    let mut g = Graph::new("g", "x", vec![1, 4]);
    let a = g
        .add_node("sub", Op::AddConst(t(&[4], 7)), vec![0], "a")
        .unwrap();
    let s = g
        .add_node("mul", Op::MulConst(Tensor::scalar(3.0)), vec![a], "s")
        .unwrap();
    let y = g.add_node("fc", linear(2, 4, 8), vec![s], "y").unwrap();
    g.set_output(y).unwrap();
    let f = rewrite::simplify(&g).unwrap();
    assert_eq!(kinds(&f), ["Linear"]);
    same(&g, &f);
}

#[test]
fn consecutive_linears_merge_but_not_across_activation() {
    let mut g = Graph::new("g", "x", vec![1, 8]);
    let a = g.add_node("fc1", linear(6, 8, 1), vec![0], "a").unwrap();
    let b = g.add_node("fc2", linear(5, 6, 3), vec![a], "b").unwrap();
    let p = g
        .add_node("sq", Op::Pow { exponent: 2 }, vec![b], "p")
        .unwrap();
    let y = g.add_node("fc3", linear(3, 5, 5), vec![p], "y").unwrap();
    g.set_output(y).unwrap();
    let f = rewrite::merge_linear(&g).unwrap();
    assert_eq!(kinds(&f), ["Linear", "Pow", "Linear"]);
    same(&g, &f);
}

#[test]
fn polynomial_recognition_composes_pow_mul_add_and_polynomials() {
    // y = 0.5 * ((x^2 + 2x)^4 - 1) via Pow, Mul, Add and a Polynomial node.
    let mut g = Graph::new("g", "x", vec![1, 2, 3, 3]);
    let x2 = g
        .add_node("pow", Op::Pow { exponent: 2 }, vec![0], "x2")
        .unwrap();
    let tx = g
        .add_node("two_x", Op::MulConst(Tensor::scalar(2.0)), vec![0], "tx")
        .unwrap();
    let s = g.add_node("sum", Op::Add, vec![x2, tx], "s").unwrap();
    let sq = g.add_node("sq", Op::Mul, vec![s, s], "sq").unwrap();
    let y = g
        .add_node(
            "p",
            Op::Polynomial {
                coeffs: vec![-1.0, 0.0, 1.0],
            },
            vec![sq],
            "p",
        )
        .unwrap();
    let y = g
        .add_node("half", Op::AddConst(Tensor::scalar(0.0)), vec![y], "h")
        .unwrap();
    let y = g
        .add_node("scale", Op::MulConst(Tensor::scalar(0.5)), vec![y], "y")
        .unwrap();
    // An unrelated consumer of x keeps x alive; a Relu after the chain is a boundary.
    let r = g
        .add_node("relu", Op::Activation(Activation::Relu), vec![y], "r")
        .unwrap();
    g.set_output(r).unwrap();
    let _ = sq;
    let f = rewrite::recognize_polynomials(&g).unwrap();
    assert_eq!(kinds(&f), ["Polynomial", "Relu"]);
    match &f.nodes()[0].op {
        Op::Polynomial { coeffs } => assert_eq!(coeffs.len(), 9, "degree 8: {coeffs:?}"),
        other => panic!("{other:?}"),
    }
    same(&g, &f);

    // Real polynomial: 0.5 * (x^2 + 2x)^2 + 0.25 x.
    let mut g = Graph::new("g", "x", vec![1, 4]);
    let x2 = g
        .add_node("pow", Op::Pow { exponent: 2 }, vec![0], "x2")
        .unwrap();
    let tx = g
        .add_node("two_x", Op::MulConst(Tensor::scalar(2.0)), vec![0], "tx")
        .unwrap();
    let s = g.add_node("sum", Op::Add, vec![x2, tx], "s").unwrap();
    let sq = g.add_node("sq", Op::Mul, vec![s, s], "sq").unwrap();
    let h = g
        .add_node("half", Op::MulConst(Tensor::scalar(0.5)), vec![sq], "h")
        .unwrap();
    let q = g
        .add_node("quarter", Op::MulConst(Tensor::scalar(0.25)), vec![0], "q")
        .unwrap();
    let y = g.add_node("out", Op::Add, vec![h, q], "y").unwrap();
    g.set_output(y).unwrap();
    let f = rewrite::recognize_polynomials(&g).unwrap();
    assert_eq!(kinds(&f), ["Polynomial"]);
    match &f.nodes()[0].op {
        Op::Polynomial { coeffs } => assert_eq!(coeffs, &[0.0, 0.25, 2.0, 2.0, 0.5]),
        other => panic!("{other:?}"),
    }
    same(&g, &f);

    // x * sigmoid(x) is not a polynomial; a lone x*x stays a Mul.
    let mut g = Graph::new("g", "x", vec![1, 4]);
    let sg = g
        .add_node("sig", Op::Activation(Activation::Sigmoid), vec![0], "s")
        .unwrap();
    let m = g.add_node("m", Op::Mul, vec![0, sg], "m").unwrap();
    let y = g.add_node("sq", Op::Mul, vec![m, m], "y").unwrap();
    g.set_output(y).unwrap();
    let f = rewrite::recognize_polynomials(&g).unwrap();
    assert_eq!(kinds(&f), ["Sigmoid", "Mul", "Mul"]);
}

#[test]
fn identities_and_noop_reshapes_are_removed() {
    let mut g = Graph::new("g", "x", vec![1, 4]);
    let a = g.add_node("id", Op::Identity, vec![0], "a").unwrap();
    let b = g
        .add_node("rs", Op::Reshape { shape: vec![1, 4] }, vec![a], "b")
        .unwrap();
    let y = g.add_node("fc", linear(2, 4, 1), vec![b], "y").unwrap();
    g.set_output(y).unwrap();
    let f = rewrite::remove_identities(&g).unwrap();
    assert_eq!(kinds(&f), ["Linear"]);
    same(&g, &f);
}

#[test]
fn polynomial_inputs_are_normalized_to_a_unit_leading_coefficient() {
    // conv -> swish-rg7-deg4 (leading coefficient -0.001328) -> linear; and a shared conv
    // output, which must stay as it is
    let swish4 = vec![0.1773, 0.5, 0.128, 0.0, -0.001328];
    for shared in [false, true] {
        let mut g = Graph::new("g", "x", vec![1, 2, 6, 6]);
        let c = g
            .add_node(
                "conv",
                Op::Conv2d(Conv2d {
                    weight: t(&[3, 2, 3, 3], 7),
                    bias: Some(vals(3, 8)),
                    stride: [1, 1],
                    pads: [1, 1, 1, 1],
                }),
                vec![0],
                "c",
            )
            .unwrap();
        let a = g
            .add_node(
                "act",
                Op::Polynomial {
                    coeffs: swish4.clone(),
                },
                vec![c],
                "a",
            )
            .unwrap();
        let a = if shared {
            g.add_node("res", Op::Add, vec![a, c], "r").unwrap()
        } else {
            a
        };
        let f = g
            .add_node(
                "flat",
                Op::Reshape {
                    shape: vec![1, 108],
                },
                vec![a],
                "f",
            )
            .unwrap();
        let y = g.add_node("fc", linear(4, 108, 9), vec![f], "y").unwrap();
        g.set_output(y).unwrap();
        let n = rewrite::normalize_polynomial_inputs(&g).unwrap();
        same(&g, &n);
        let lead = n
            .nodes()
            .iter()
            .find_map(|x| match &x.op {
                Op::Polynomial { coeffs } => coeffs.last().copied(),
                _ => None,
            })
            .unwrap();
        if shared {
            assert_eq!(lead, -0.001328, "a conv output with two uses is left alone");
        } else {
            assert!((lead + 1.0).abs() < 1e-12, "leading coefficient {lead}");
            // idempotent
            let again = rewrite::normalize_polynomial_inputs(&n).unwrap();
            assert_eq!(format!("{:?}", again.nodes()), format!("{:?}", n.nodes()));
        }
    }
}
