//! ONNX import + reference engine on models built here with the protobuf types, checked
//! against straightforward hand computations; malformed and unsupported models.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_arguments
)]

mod common;

use common::*;
use henn_nn::ir::Op;
use henn_nn::onnx::{import_bytes, import_file};
use henn_nn::{NnError, Tensor, reference, rewrite};

/// Hand-written conv: x [C,H,W], w [O,C,K,K], stride s, symmetric pad p.
fn conv_hand(
    x: &[f64],
    c: usize,
    h: usize,
    w: &[f64],
    o: usize,
    k: usize,
    b: &[f64],
    s: usize,
    p: usize,
) -> (Vec<f64>, usize) {
    let oh = (h + 2 * p - k) / s + 1;
    let mut out = vec![0.0; o * oh * oh];
    for oc in 0..o {
        for y in 0..oh {
            for xx in 0..oh {
                let mut acc = b[oc];
                for ic in 0..c {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (y * s + ky) as i64 - p as i64;
                            let ix = (xx * s + kx) as i64 - p as i64;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < h {
                                acc += x[ic * h * h + iy as usize * h + ix as usize]
                                    * w[((oc * c + ic) * k + ky) * k + kx];
                            }
                        }
                    }
                }
                out[oc * oh * oh + y * oh + xx] = acc;
            }
        }
    }
    (out, oh)
}

fn conv_bn_model() -> (M, Vec<f32>) {
    let mut m = M::new(&[-1, 2, 5, 5]);
    m.init("W", &[3, 2, 3, 3], &values(54, 1))
        .init("B", &[3], &values(3, 2))
        .init("g", &[3], &[1.5, 0.5, -1.0])
        .init("beta", &[3], &[0.1, -0.2, 0.3])
        .init("mean", &[3], &[0.05, -0.1, 0.2])
        .init("var", &[3], &[0.5, 2.0, 1.0])
        .init("two", &[], &[2.0])
        .init("G", &[12, 4], &values(48, 3))
        .init("C", &[4], &values(4, 4));
    m.node(
        "Conv",
        &["x", "W", "B"],
        &["c"],
        vec![
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_ints("strides", &[2, 2]),
            attr_ints("kernel_shape", &[3, 3]),
        ],
    )
    .node(
        "BatchNormalization",
        &["c", "g", "beta", "mean", "var"],
        &["bn"],
        vec![attr_float("epsilon", 1e-3)],
    )
    .node("Pow", &["bn", "two"], &["sq"], vec![])
    .node(
        "AveragePool",
        &["sq"],
        &["ap"],
        vec![attr_ints("kernel_shape", &[2, 2])],
    )
    .node("Flatten", &["ap"], &["f"], vec![attr_int("axis", 1)])
    .node(
        "Gemm",
        &["f", "G", "C"],
        &["y"],
        vec![attr_float("alpha", 0.5), attr_float("beta", 2.0)],
    );
    (m, values(50, 9))
}

fn conv_bn_hand(xv: &[f32]) -> Vec<f64> {
    let x = f64s(xv);
    let (c, oh) = conv_hand(
        &x,
        2,
        5,
        &f64s(&values(54, 1)),
        3,
        3,
        &f64s(&values(3, 2)),
        2,
        1,
    );
    assert_eq!(oh, 3);
    let (g, be, mu, var) = (
        [1.5, 0.5, -1.0],
        [0.1f32, -0.2, 0.3],
        [0.05f32, -0.1, 0.2],
        [0.5, 2.0, 1.0],
    );
    let mut bn = vec![0.0; 27];
    for ch in 0..3 {
        for i in 0..9 {
            let v = (c[ch * 9 + i] - f64::from(mu[ch])) / (var[ch] + f64::from(1e-3f32)).sqrt()
                * g[ch]
                + f64::from(be[ch]);
            bn[ch * 9 + i] = v * v;
        }
    }
    let mut ap = [0.0; 12];
    for ch in 0..3 {
        for y in 0..2 {
            for xx in 0..2 {
                let s: f64 = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .iter()
                    .map(|(dy, dx)| bn[ch * 9 + (y + dy) * 3 + xx + dx])
                    .sum();
                ap[ch * 4 + y * 2 + xx] = s / 4.0;
            }
        }
    }
    let gw = f64s(&values(48, 3));
    let cb = f64s(&values(4, 4));
    (0..4)
        .map(|j| 0.5 * (0..12).map(|i| ap[i] * gw[i * 4 + j]).sum::<f64>() + 2.0 * cb[j])
        .collect()
}

#[test]
fn conv_bn_pow_pool_gemm_matches_hand_computation() {
    let (m, x) = conv_bn_model();
    let g = import_bytes(&m.bytes()).unwrap();
    assert_eq!(g.input_shape(), &[1, 2, 5, 5]);
    assert_eq!(g.output_shape(), &[1, 4]);
    assert_eq!(g.opset(), 13);
    let kinds: Vec<&str> = g.nodes().iter().map(|n| n.op.kind()).collect();
    assert_eq!(
        kinds,
        ["Conv2d", "BatchNorm", "Pow", "AvgPool", "Reshape", "Linear"]
    );
    let input = Tensor::new(vec![1, 2, 5, 5], f64s(&x)).unwrap();
    let out = reference::run(&g, &input).unwrap();
    assert_close(out.data(), &conv_bn_hand(&x), 1e-12);

    // Intermediates are available per value.
    let all = reference::run_all(&g, &input).unwrap();
    assert_eq!(all.len(), g.values().len());
    assert_eq!(all[g.nodes()[0].output].shape(), &[1, 3, 3, 3]);

    // The rewrites keep the output.
    let s = rewrite::simplify(&g).unwrap();
    assert!(
        s.nodes().len() < g.nodes().len(),
        "BatchNorm should fuse into the conv"
    );
    assert!(!s.nodes().iter().any(|n| matches!(n.op, Op::BatchNorm(_))));
    assert_close(reference::run(&s, &input).unwrap().data(), out.data(), 1e-9);
}

#[test]
fn initializers_listed_as_graph_inputs_and_constant_nodes() {
    let (mut m, x) = conv_bn_model();
    m.inits_as_inputs = true;
    // Replace the exponent initializer by a Constant node.
    m.inits.retain(|t| t.name != "two");
    m.nodes.insert(
        0,
        node(
            "Constant",
            "k",
            &[],
            &["two"],
            vec![attr_tensor(
                "value",
                henn_nn::onnx::tensor::float_tensor_proto("", &[], &[2.0]),
            )],
        ),
    );
    let g = import_bytes(&m.bytes()).unwrap();
    let out = reference::run(&g, &Tensor::new(vec![1, 2, 5, 5], f64s(&x)).unwrap()).unwrap();
    assert_close(out.data(), &conv_bn_hand(&x), 1e-12);
}

#[test]
fn polynomial_activation_chain_and_matmul_add() {
    // y = 0.125 x^2 + 0.5 x + 0.25 applied to MatMul(x, W) + b, then x*x as a tensor product.
    let mut m = M::new(&[1, 3]);
    m.init("W", &[3, 2], &[1.0, 2.0, -1.0, 0.5, 0.25, -2.0])
        .init("b", &[2], &[0.5, -0.5])
        .init("a2", &[], &[0.125])
        .init("a1", &[], &[0.5])
        .init("a0", &[1], &[0.25]);
    m.node("MatMul", &["x", "W"], &["mm"], vec![])
        .node("Add", &["mm", "b"], &["h"], vec![])
        .node("Mul", &["h", "h"], &["h2"], vec![])
        .node("Mul", &["h2", "a2"], &["t2"], vec![])
        .node("Mul", &["a1", "h"], &["t1"], vec![])
        .node("Add", &["t2", "t1"], &["s"], vec![])
        .node("Add", &["s", "a0"], &["y"], vec![]);
    let g = import_bytes(&m.bytes()).unwrap();
    let xin = [0.3, -1.2, 2.0];
    let out = reference::run(&g, &Tensor::new(vec![1, 3], xin.to_vec()).unwrap()).unwrap();
    let w = [[1.0, 2.0], [-1.0, 0.5], [0.25, -2.0]];
    let hand: Vec<f64> = (0..2)
        .map(|j| {
            let h = (0..3).map(|i| xin[i] * w[i][j]).sum::<f64>() + [0.5, -0.5][j];
            0.125 * h * h + 0.5 * h + 0.25
        })
        .collect();
    assert_close(out.data(), &hand, 1e-12);

    let s = rewrite::simplify(&g).unwrap();
    let kinds: Vec<&str> = s.nodes().iter().map(|n| n.op.kind()).collect();
    assert_eq!(kinds, ["Linear", "Polynomial"], "{s:#?}");
    match &s.nodes()[1].op {
        // 0.125 h^2 + 0.5 h + 0.25, with the Linear scaled by t = sqrt(0.125) so that the
        // leading coefficient is 1 (rewrite::normalize_polynomial_inputs)
        Op::Polynomial { coeffs } => {
            let t = 0.125f64.sqrt();
            assert_close(coeffs, &[0.25, 0.5 / t, 1.0], 1e-15)
        }
        other => panic!("{other:?}"),
    }
    assert_close(
        reference::run(&s, &Tensor::new(vec![1, 3], xin.to_vec()).unwrap())
            .unwrap()
            .data(),
        &hand,
        1e-9,
    );
}

#[test]
fn reduce_sum_axes_attribute_and_input() {
    for opset in [11, 13] {
        let mut m = M::new(&[1, 2, 2, 3]);
        m.opset = opset;
        if opset >= 13 {
            m.init_i64("axes", &[2], &[2, -1]);
            m.node(
                "ReduceSum",
                &["x", "axes"],
                &["y"],
                vec![attr_int("keepdims", 1)],
            );
        } else {
            m.node(
                "ReduceSum",
                &["x"],
                &["y"],
                vec![attr_ints("axes", &[2, 3])],
            );
        }
        let g = import_bytes(&m.bytes()).unwrap();
        assert_eq!(g.output_shape(), &[1, 2, 1, 1]);
        let x: Vec<f64> = (0..12).map(f64::from).collect();
        let out = reference::run(&g, &Tensor::new(vec![1, 2, 2, 3], x).unwrap()).unwrap();
        assert_eq!(out.data(), &[15.0, 51.0]);
    }
}

#[test]
fn normalisation_sub_div_and_global_pool_residual() {
    // (x - 0.5) / 0.25 -> Conv (no pad) -> residual add with itself*3 -> GlobalAveragePool -> Flatten
    let mut m = M::new(&[1, 1, 4, 4]);
    m.init("mean", &[], &[0.5])
        .init("std", &[1], &[0.25])
        .init("W", &[2, 1, 2, 2], &values(8, 5))
        .init("three", &[], &[3.0]);
    m.node("Sub", &["x", "mean"], &["a"], vec![])
        .node("Div", &["a", "std"], &["n"], vec![])
        .node("Conv", &["n", "W"], &["c"], vec![])
        .node("Mul", &["c", "three"], &["c3"], vec![])
        .node("Add", &["c", "c3"], &["r"], vec![])
        .node("GlobalAveragePool", &["r"], &["gp"], vec![])
        .node("Flatten", &["gp"], &["y"], vec![]);
    let g = import_bytes(&m.bytes()).unwrap();
    assert_eq!(g.output_shape(), &[1, 2]);
    let x: Vec<f64> = (0..16).map(|i| f64::from(i) / 16.0).collect();
    let out = reference::run(&g, &Tensor::new(vec![1, 1, 4, 4], x.clone()).unwrap()).unwrap();
    let wv = f64s(&values(8, 5));
    let n: Vec<f64> = x.iter().map(|v| (v - 0.5) / 0.25).collect();
    let hand: Vec<f64> = (0..2)
        .map(|o| {
            let mut s = 0.0;
            for y in 0..3 {
                for xx in 0..3 {
                    let c: f64 = (0..2)
                        .flat_map(|ky| (0..2).map(move |kx| (ky, kx)))
                        .map(|(ky, kx)| n[(y + ky) * 4 + xx + kx] * wv[o * 4 + ky * 2 + kx])
                        .sum();
                    s += 4.0 * c;
                }
            }
            s / 9.0
        })
        .collect();
    assert_close(out.data(), &hand, 1e-12);
    let s = rewrite::simplify(&g).unwrap();
    assert_eq!(
        s.nodes()[0].op.kind(),
        "Conv2d",
        "normalisation folds into the conv: {s:#?}"
    );
    assert_close(
        reference::run(&s, &Tensor::new(vec![1, 1, 4, 4], x).unwrap())
            .unwrap()
            .data(),
        out.data(),
        1e-9,
    );
}

#[test]
fn gemm_trans_b_and_reshape_with_shape_subgraph() {
    // Flatten the PyTorch-old way: Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
    let mut m = M::new(&[-1, 2, 2, 2]);
    m.opset = 11;
    m.init_i64("zero", &[], &[0])
        .init_i64("minus1", &[1], &[-1])
        .init("W", &[3, 8], &values(24, 7))
        .init("b", &[1, 3], &values(3, 8));
    m.node("Shape", &["x"], &["s"], vec![])
        .node("Gather", &["s", "zero"], &["n"], vec![attr_int("axis", 0)])
        .node("Unsqueeze", &["n"], &["n1"], vec![attr_ints("axes", &[0])])
        .node(
            "Concat",
            &["n1", "minus1"],
            &["shape"],
            vec![attr_int("axis", 0)],
        )
        .node("Reshape", &["x", "shape"], &["f"], vec![])
        .node(
            "Gemm",
            &["f", "W", "b"],
            &["y"],
            vec![attr_int("transB", 1)],
        );
    let g = import_bytes(&m.bytes()).unwrap();
    assert_eq!(g.output_shape(), &[1, 3]);
    let x: Vec<f64> = (0..8).map(|i| f64::from(i) - 3.0).collect();
    let out = reference::run(&g, &Tensor::new(vec![1, 2, 2, 2], x.clone()).unwrap()).unwrap();
    let w = f64s(&values(24, 7));
    let b = f64s(&values(3, 8));
    let hand: Vec<f64> = (0..3)
        .map(|o| (0..8).map(|i| w[o * 8 + i] * x[i]).sum::<f64>() + b[o])
        .collect();
    assert_close(out.data(), &hand, 1e-12);
}

#[test]
fn silu_and_relu_are_flagged() {
    let mut m = M::new(&[1, 4]);
    m.node("Sigmoid", &["x"], &["s"], vec![])
        .node("Mul", &["x", "s"], &["m"], vec![])
        .node("Relu", &["m"], &["y"], vec![]);
    let g = import_bytes(&m.bytes()).unwrap();
    let kinds: Vec<&str> = g.nodes().iter().map(|n| n.op.kind()).collect();
    assert_eq!(kinds, ["SiLU", "Relu"]);
    assert_eq!(g.nodes_needing_approximation().len(), 2);
    let out = reference::run(
        &g,
        &Tensor::new(vec![1, 4], vec![-2.0, -0.5, 0.0, 1.5]).unwrap(),
    )
    .unwrap();
    let silu = |v: f64| v / (1.0 + (-v).exp());
    assert_close(out.data(), &[0.0, 0.0, 0.0, silu(1.5)], 1e-15);
}

#[test]
fn unsupported_op_and_attribute_are_named() {
    let mut m = M::new(&[1, 1, 4, 4]);
    m.node(
        "MaxPool",
        &["x"],
        &["y"],
        vec![attr_ints("kernel_shape", &[2, 2])],
    );
    match import_bytes(&m.bytes()) {
        Err(e @ NnError::UnsupportedOp { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("MaxPool_0")
                    && msg.contains("'MaxPool'")
                    && msg.contains("AveragePool"),
                "{msg}"
            );
        }
        other => panic!("expected UnsupportedOp, got {other:?}"),
    }
    let mut m = M::new(&[1, 2, 4, 4]);
    m.init("W", &[2, 1, 3, 3], &values(18, 1));
    m.node("Conv", &["x", "W"], &["y"], vec![attr_int("group", 2)]);
    match import_bytes(&m.bytes()) {
        Err(NnError::UnsupportedAttribute {
            attribute, node, ..
        }) => {
            assert_eq!(attribute, "group");
            assert_eq!(node, "Conv_0");
        }
        other => panic!("expected UnsupportedAttribute, got {other:?}"),
    }
    let mut m = M::new(&[1, 4]);
    m.node("Relu", &["x"], &["y"], vec![attr_int("alpha", 1)]);
    assert!(matches!(
        import_bytes(&m.bytes()),
        Err(NnError::UnsupportedAttribute { .. })
    ));
}

#[test]
fn missing_initializer_and_shape_mismatch() {
    let mut m = M::new(&[1, 2, 4, 4]);
    m.node("Conv", &["x", "W"], &["y"], vec![]);
    assert!(
        matches!(
            import_bytes(&m.bytes()),
            Err(NnError::MissingInitializer { .. })
        ),
        "{:?}",
        import_bytes(&m.bytes())
    );

    let mut m = M::new(&[1, 2, 4, 4]);
    m.init("W", &[2, 3, 3, 3], &values(54, 1));
    m.node("Conv", &["x", "W"], &["y"], vec![]);
    match import_bytes(&m.bytes()) {
        Err(e @ NnError::ShapeMismatch { .. }) => {
            assert!(e.to_string().contains("channels"), "{e}")
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }

    let mut m = M::new(&[1, 5]);
    m.init("W", &[4, 3], &values(12, 1));
    m.node("Gemm", &["x", "W"], &["y"], vec![]);
    assert!(matches!(
        import_bytes(&m.bytes()),
        Err(NnError::ShapeMismatch { .. })
    ));

    // Raw data of the wrong length.
    let mut m = M::new(&[1, 2]);
    m.init("W", &[2, 2], &values(3, 1));
    m.node("MatMul", &["x", "W"], &["y"], vec![]);
    assert!(matches!(
        import_bytes(&m.bytes()),
        Err(NnError::BadTensor { .. })
    ));
}

#[test]
fn malformed_bytes_never_panic() {
    assert!(matches!(
        import_bytes(b"this is not an onnx file at all"),
        Err(NnError::MalformedProtobuf(_))
    ));
    assert!(import_bytes(&[]).is_err());
    let (m, _) = conv_bn_model();
    let bytes = m.bytes();
    // Every prefix and a few corruptions: errors (or, for lucky prefixes, a model), never a panic.
    for len in (0..bytes.len()).step_by(7) {
        let _ = import_bytes(&bytes[..len]);
    }
    assert!(import_bytes(&bytes[..bytes.len() / 2]).is_err());
    for i in (0..bytes.len()).step_by(13) {
        let mut b = bytes.clone();
        b[i] ^= 0xA5;
        let _ = import_bytes(&b);
    }
}

#[test]
fn import_file_errors() {
    let dir = std::env::temp_dir().join(format!("henn-nn-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(matches!(
        import_file(dir.join("absent.onnx")),
        Err(NnError::Io { .. })
    ));
    let (m, x) = conv_bn_model();
    let p = dir.join("convbn.onnx");
    std::fs::write(&p, m.bytes()).unwrap();
    let g = import_file(&p).unwrap();
    let out = reference::run(&g, &Tensor::new(vec![1, 2, 5, 5], f64s(&x)).unwrap()).unwrap();
    assert_close(out.data(), &conv_bn_hand(&x), 1e-12);
    // Wrong input shape is a named error.
    assert!(matches!(
        reference::run(&g, &Tensor::zeros(vec![1, 2, 4, 4])),
        Err(NnError::ShapeMismatch { .. })
    ));
    std::fs::remove_dir_all(&dir).ok();
}
