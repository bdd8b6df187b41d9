//! L1-norm filter pruning on ONNX models: the smallest-L1 filters are removed with their bias,
//! batch-norm entries and per-channel constants, and the matching input channels (or
//! flattened columns) of the next layer; the pruned model computes what the original computes
//! with those channels zeroed at the next layer's input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{M, assert_close, attr_float, attr_int, attr_ints, values};
use henn_nn::ir::Op;
use henn_nn::onnx::import_bytes;
use henn_nn::onnx::prune::{prune_channels, prune_filters};
use henn_nn::{Graph, Tensor, reference};

/// conv1 (2 -> 6, 3x3 pad 1) -> BN -> x*x -> avgpool 2 -> conv2 (6 -> 4, 3x3 pad 1) -> BN ->
/// swish-like polynomial with a per-channel scale -> flatten -> Gemm (64 -> 3). conv1's filter
/// L1 norms are set apart: filter f scaled by `scale[f]`.
fn model() -> Vec<u8> {
    let scale = [3.0f32, 0.5, 2.0, 0.1, 1.0, 0.7];
    let mut w1 = values(6 * 2 * 9, 1);
    for (i, v) in w1.iter_mut().enumerate() {
        *v *= scale[i / 18];
    }
    let mut m = M::new(&[1, 2, 8, 8]);
    m.init("W1", &[6, 2, 3, 3], &w1)
        .init("B1", &[6], &values(6, 2))
        .init("g1", &[6], &[1.1, 0.9, 1.0, 1.2, 0.8, 1.05])
        .init("b1", &[6], &values(6, 3))
        .init("m1", &[6], &values(6, 4))
        .init("v1", &[6], &[0.5, 1.0, 1.5, 2.0, 0.7, 1.2])
        .init("W2", &[4, 6, 3, 3], &values(4 * 6 * 9, 5))
        .init("B2", &[4], &values(4, 6))
        .init("g2", &[4], &[1.0, 0.9, 1.1, 0.95])
        .init("b2", &[4], &values(4, 7))
        .init("m2", &[4], &values(4, 8))
        .init("v2", &[4], &[1.0, 0.8, 1.3, 0.9])
        .init("c2", &[4, 1, 1], &[0.5, 0.25, 0.75, 1.0])
        .init("h", &[], &[0.5])
        .init("G", &[3, 64], &values(3 * 64, 9))
        .init("C", &[3], &values(3, 10));
    let conv = |m: &mut M, x: &str, w: &str, b: &str, y: &str| {
        m.node(
            "Conv",
            &[x, w, b],
            &[y],
            vec![
                attr_ints("pads", &[1, 1, 1, 1]),
                attr_ints("kernel_shape", &[3, 3]),
            ],
        );
    };
    conv(&mut m, "x", "W1", "B1", "c1");
    m.node(
        "BatchNormalization",
        &["c1", "g1", "b1", "m1", "v1"],
        &["n1"],
        vec![attr_float("epsilon", 1e-5)],
    )
    .node("Mul", &["n1", "n1"], &["a1"], vec![])
    .node(
        "AveragePool",
        &["a1"],
        &["p1"],
        vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("strides", &[2, 2]),
        ],
    );
    conv(&mut m, "p1", "W2", "B2", "c2o");
    m.node(
        "BatchNormalization",
        &["c2o", "g2", "b2", "m2", "v2"],
        &["n2"],
        vec![attr_float("epsilon", 1e-5)],
    )
    .node("Mul", &["n2", "c2"], &["s2"], vec![])
    .node("Mul", &["s2", "n2"], &["q2"], vec![])
    .node("Mul", &["n2", "h"], &["l2"], vec![])
    .node("Add", &["q2", "l2"], &["a2"], vec![])
    .node("Flatten", &["a2"], &["f"], vec![attr_int("axis", 1)])
    .node(
        "Gemm",
        &["f", "G", "C"],
        &["y"],
        vec![attr_int("transB", 1)],
    );
    m.bytes()
}

/// `g` with the input channels `removed` of the layer consuming node `at`'s channels zeroed:
/// conv weights `[O, I, k, k]` along I, or Linear columns in blocks of `block`.
fn zeroed(g: &Graph, node: &str, removed: &[usize], block: usize) -> Graph {
    let mut out = g.empty_like();
    let mut map = std::collections::HashMap::new();
    map.insert(g.input(), out.input());
    for n in g.nodes() {
        let mut op = n.op.clone();
        if n.name == node {
            match &mut op {
                Op::Conv2d(c) => {
                    let s = c.weight.shape().to_vec();
                    let per = s[2] * s[3];
                    let d: Vec<f64> = c
                        .weight
                        .data()
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| {
                            if removed.contains(&((i / per) % s[1])) {
                                0.0
                            } else {
                                v
                            }
                        })
                        .collect();
                    c.weight = Tensor::new(s, d).unwrap();
                }
                Op::Linear(l) => {
                    let s = l.weight.shape().to_vec();
                    let d: Vec<f64> = l
                        .weight
                        .data()
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| {
                            if removed.contains(&((i % s[1]) / block)) {
                                0.0
                            } else {
                                v
                            }
                        })
                        .collect();
                    l.weight = Tensor::new(s, d).unwrap();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let ins = n.inputs.iter().map(|v| map[v]).collect();
        let name = g.value(n.output).unwrap().name.clone();
        map.insert(
            n.output,
            out.add_node(n.name.clone(), op, ins, name).unwrap(),
        );
    }
    out.set_output(map[&g.output()]).unwrap();
    out
}

fn inputs() -> Vec<Tensor> {
    (0..3)
        .map(|k| {
            Tensor::new(
                vec![1, 2, 8, 8],
                values(128, 50 + k).iter().map(|&v| f64::from(v)).collect(),
            )
            .unwrap()
        })
        .collect()
}

#[test]
fn pruning_removes_the_smallest_l1_filters_and_matching_inputs() {
    let bytes = model();
    let g = import_bytes(&bytes).unwrap();
    let conv1 = &g.nodes()[0].name.clone();
    // filter scales 3, 0.5, 2, 0.1, 1, 0.7 on similar weights: the smallest L1 are 3, 1, 5
    let (out, rep) = prune_filters(&bytes, conv1, 0.5).unwrap();
    let Op::Conv2d(c) = &g.nodes()[0].op else {
        panic!()
    };
    let norms: Vec<f64> = c
        .weight
        .data()
        .chunks(18)
        .map(|f| f.iter().map(|v| v.abs()).sum())
        .collect();
    let mut order: Vec<usize> = (0..6).collect();
    order.sort_by(|&a, &b| norms[a].total_cmp(&norms[b]));
    let mut want = order[..3].to_vec();
    want.sort_unstable();
    assert_eq!(rep.removed, want);
    assert_eq!(rep.removed, [1, 3, 5]);
    assert_eq!(rep.l1_norms.len(), 6);
    let p = import_bytes(&out).unwrap();
    // conv1 has 3 filters, BN 3 entries, conv2 3 input channels
    let Op::Conv2d(c1) = &p.nodes()[0].op else {
        panic!()
    };
    assert_eq!(c1.weight.shape(), &[3, 2, 3, 3]);
    assert_eq!(c1.bias.as_ref().unwrap().len(), 3);
    let Op::BatchNorm(bn) = &p.nodes()[1].op else {
        panic!()
    };
    assert_eq!(bn.gamma.len(), 3);
    let conv2 = p
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::Conv2d(_)))
        .nth(1)
        .unwrap();
    let Op::Conv2d(c2) = &conv2.op else { panic!() };
    assert_eq!(c2.weight.shape(), &[4, 3, 3, 3]);
    assert_eq!(rep.consumers, std::slice::from_ref(&conv2.name));
    // the pruned model equals the original with those channels zeroed at conv2's input
    let z = zeroed(&g, &conv2.name, &rep.removed, 1);
    for x in inputs() {
        assert_close(
            reference::run(&p, &x).unwrap().data(),
            reference::run(&z, &x).unwrap().data(),
            1e-9,
        );
    }
}

#[test]
fn pruning_before_a_flatten_removes_the_columns_and_per_channel_constants() {
    let bytes = model();
    let g = import_bytes(&bytes).unwrap();
    let conv2 = g
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::Conv2d(_)))
        .nth(1)
        .unwrap()
        .name
        .clone();
    let (out, rep) = prune_channels(&bytes, &conv2, &[0, 2]).unwrap();
    assert!(rep.sliced.contains(&"c2".to_string()), "{:?}", rep.sliced);
    assert!(rep.sliced.contains(&"G".to_string()));
    let p = import_bytes(&out).unwrap();
    let fc = g
        .nodes()
        .iter()
        .find(|n| matches!(n.op, Op::Linear(_)))
        .unwrap()
        .name
        .clone();
    let pl = p
        .nodes()
        .iter()
        .find(|n| matches!(n.op, Op::Linear(_)))
        .unwrap();
    let Op::Linear(l) = &pl.op else { panic!() };
    assert_eq!(l.weight.shape(), &[3, 32]);
    let z = zeroed(&g, &fc, &[0, 2], 16);
    for x in inputs() {
        assert_close(
            reference::run(&p, &x).unwrap().data(),
            reference::run(&z, &x).unwrap().data(),
            1e-9,
        );
    }
}

#[test]
fn pruning_errors_are_named() {
    let bytes = model();
    let e = prune_filters(&bytes, "nope", 0.5).unwrap_err().to_string();
    assert!(e.contains("the convolutions are"), "{e}");
    let g = import_bytes(&bytes).unwrap();
    let conv1 = g.nodes()[0].name.clone();
    assert!(prune_filters(&bytes, &conv1, 0.0).is_err());
    assert!(prune_filters(&bytes, &conv1, 1.0).is_err(), "all filters");
    // the count is rounded down (the reference paper's 58 / 52 / 45 of 64), at least one
    for (ratio, removed) in [(0.99, 5), (0.3, 1), (0.1, 1), (0.5, 3)] {
        let (_, rep) = prune_filters(&bytes, &conv1, ratio).unwrap();
        assert_eq!(rep.removed.len(), removed, "ratio {ratio} of 6 filters");
    }
    assert!(prune_channels(&bytes, &conv1, &[7]).is_err());
    let bn = g.nodes()[1].name.clone();
    assert!(
        prune_filters(&bytes, &bn, 0.5)
            .unwrap_err()
            .to_string()
            .contains("not a Conv")
    );
}
