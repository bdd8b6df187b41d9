//! Post-training approximation: the reference fits, distribution-aware fits, the degree
//! allocation by dynamic programming, the influence estimate and the graph rewrite.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use common::{M, assert_close, attr_int, values};

use henn_nn::approx::{self, LayerOption};
use henn_nn::ir::{Activation, Linear};
use henn_nn::{Graph, Op, Tensor, reference};

/// The reference papers' table (Ishiyama et al.): least-squares fits on [-R, R], in powers of
/// x, as printed (rounded): the discrete fit on 1001 evenly spaced points reproduces every
/// printed digit; the continuous fit is within 1e-3 of it.
#[test]
fn uniform_fits_equal_the_reference_table() {
    // coefficients as printed; each must round to the printed digits (half a unit of the
    // last printed decimal, plus float slack)
    let table: [(Activation, f64, usize, &[&str]); 4] = [
        (Activation::Relu, 5.0, 2, &["0.47", "0.5", "0.09"]),
        (
            Activation::Relu,
            7.0,
            4,
            &["0.41056", "0.5", "0.11707", "0", "-0.00119"],
        ),
        (Activation::Silu, 5.0, 2, &["0.24", "0.5", "0.1"]),
        (
            Activation::Silu,
            7.0,
            4,
            &["0.1773", "0.5", "0.128", "0", "-0.001328"],
        ),
    ];
    for (a, r, d, want) in table {
        let f = approx::fit_grid(a, -r, r, d, approx::REFERENCE_GRID_POINTS).unwrap();
        eprintln!("{a:?} rg{r} deg{d}: {:?} rms {:.4}", f.coeffs, f.rms_error);
        assert_eq!(f.coeffs.len(), d + 1);
        for (k, (&got, w)) in f.coeffs.iter().zip(want).enumerate() {
            let decimals = w.split('.').nth(1).map_or(0, str::len) as i32;
            let tol = 0.5 * 10f64.powi(-decimals) + 1e-12;
            let w: f64 = w.parse().unwrap();
            assert!(
                (got - w).abs() <= tol,
                "{a:?} rg{r} deg{d}: x^{k} coefficient {got} vs {w}"
            );
        }
        let c = approx::fit_uniform(a, -r, r, d).unwrap();
        for (x, y) in c.coeffs.iter().zip(&f.coeffs) {
            assert!(
                (x - y).abs() < 1e-3,
                "continuous {:?} vs grid {:?}",
                c.coeffs,
                f.coeffs
            );
        }
        // the least-squares optimum: a small change of any coefficient raises the error
        for k in 0..=d {
            let mut p = c.coeffs.clone();
            p[k] += 1e-3;
            let worse = approx::fit_uniform(a, -r, r, d).unwrap();
            assert!(rms_uniform(a, r, &p) > worse.rms_error);
        }
    }
}

/// RMS error of `coeffs` against `a` on [-r, r] (fine midpoint rule).
fn rms_uniform(a: Activation, r: f64, coeffs: &[f64]) -> f64 {
    let n = 200_000;
    let s: f64 = (0..n)
        .map(|i| {
            let x = -r + 2.0 * r * (i as f64 + 0.5) / n as f64;
            (reference::activation(a, x) - reference::horner(coeffs, x)).powi(2)
        })
        .sum();
    (s / n as f64).sqrt()
}

/// The dynamic program returns the allocation of least total error within the budget, equal
/// to exhaustive search on small random cases (ties broken by error only).
#[test]
fn allocation_is_optimal_by_brute_force() {
    let mut seed = 7u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as f64 / (1u64 << 31) as f64
    };
    for case in 0..40 {
        let layers = 1 + case % 5;
        let opts: Vec<Vec<LayerOption>> = (0..layers)
            .map(|_| {
                (0..4)
                    .map(|d| LayerOption {
                        degree: 1 << (d + 1),
                        cost: 1 + (next() * 9.0) as u64,
                        error: next() * 10.0,
                    })
                    .collect()
            })
            .collect();
        let min_cost: u64 = opts
            .iter()
            .map(|o| o.iter().map(|x| x.cost).min().unwrap())
            .sum();
        let budget = min_cost + (next() * 12.0) as u64;
        let got = approx::allocate(&opts, budget).unwrap();
        let total = |pick: &[usize]| -> (u64, f64) {
            pick.iter()
                .zip(&opts)
                .fold((0, 0.0), |(c, e), (&p, o)| (c + o[p].cost, e + o[p].error))
        };
        let (gc, ge) = total(&got);
        assert!(gc <= budget, "case {case}: cost {gc} over budget {budget}");
        // exhaustive search over 4^layers allocations
        let mut best = f64::INFINITY;
        for code in 0..4usize.pow(layers as u32) {
            let pick: Vec<usize> = (0..layers)
                .map(|l| (code / 4usize.pow(l as u32)) % 4)
                .collect();
            let (c, e) = total(&pick);
            if c <= budget && e < best {
                best = e;
            }
        }
        assert!(
            (ge - best).abs() < 1e-9,
            "case {case}: {ge} vs optimum {best}"
        );
    }
    // a budget below the cheapest allocation is an error naming the cheapest cost
    let opts = vec![
        vec![LayerOption {
            degree: 2,
            cost: 3,
            error: 1.0
        }];
        2
    ];
    let e = approx::allocate(&opts, 5).unwrap_err().to_string();
    assert!(e.contains("cheapest allocation (6)"), "{e}");
}

/// A distribution-aware fit on samples spread evenly over [-R, R] is the uniform fit; on
/// samples concentrated near 0 it is more precise there than the uniform fit of the same
/// degree over their range, and the range factor widens the interval it covers.
#[test]
fn sample_fits_follow_the_distribution() {
    let even: Vec<f64> = (0..20001)
        .map(|i| -5.0 + 10.0 * i as f64 / 20000.0)
        .collect();
    let f = approx::fit_samples(Activation::Relu, &even, 1.0, 4).unwrap();
    let u = approx::fit_uniform(Activation::Relu, -5.0, 5.0, 4).unwrap();
    for (x, y) in f.coeffs.iter().zip(&u.coeffs) {
        assert!((x - y).abs() < 1e-3, "{:?} vs {:?}", f.coeffs, u.coeffs);
    }
    // a bell-shaped distribution (sum of uniforms) with rare tails up to +-6
    let mut s = 1u64;
    let mut uni = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let bell: Vec<f64> = (0..50_000)
        .map(|_| (0..6).map(|_| uni() * 2.0 - 1.0).sum::<f64>())
        .collect();
    let lo = bell.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = bell.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let d = approx::fit_samples(Activation::Relu, &bell, 1.0, 4).unwrap();
    let u = approx::fit_uniform(Activation::Relu, lo, hi, 4).unwrap();
    let mse_d = approx::mse_on(Activation::Relu, &d.coeffs, &bell);
    let mse_u = approx::mse_on(Activation::Relu, &u.coeffs, &bell);
    assert!((d.rms_error - mse_d.sqrt()).abs() < 1e-12);
    assert!(
        mse_d < 0.5 * mse_u,
        "distribution-aware {mse_d} vs uniform {mse_u}"
    );
    let wide = approx::fit_samples(Activation::Relu, &bell, 1.5, 4).unwrap();
    assert!((wide.interval.1 - 1.5 * hi).abs() < 1e-9 * hi.abs().max(1.0));
    // invalid input is a named error
    assert!(approx::fit_samples(Activation::Relu, &bell, 0.5, 4).is_err());
    assert!(approx::fit_samples(Activation::Relu, &[1.0, f64::NAN], 1.0, 1).is_err());
    assert!(approx::fit_samples(Activation::Relu, &[1.0, 1.0, 1.0], 1.0, 2).is_err());
    assert!(approx::fit_uniform(Activation::Relu, -1.0, 1.0, 0).is_err());
    assert!(approx::fit_uniform(Activation::Relu, 1.0, -1.0, 2).is_err());
}

/// Input [1, 4] -> Linear(4 -> 6) -> ReLU -> Linear(6 -> 3).
fn tiny() -> Graph {
    let w1: Vec<f64> = (0..24).map(|i| ((i * 7 % 11) as f64 - 5.0) / 4.0).collect();
    let w2: Vec<f64> = (0..18).map(|i| ((i * 5 % 13) as f64 - 6.0) / 5.0).collect();
    let mut g = Graph::new("tiny", "x", vec![1, 4]);
    let h = g
        .add_node(
            "fc1",
            Op::Linear(Linear {
                weight: Tensor::new(vec![6, 4], w1).unwrap(),
                bias: Some(vec![0.1, -0.2, 0.3, 0.0, -0.1, 0.2]),
            }),
            vec![g.input()],
            "h",
        )
        .unwrap();
    let a = g
        .add_node("act", Op::Activation(Activation::Relu), vec![h], "a")
        .unwrap();
    let y = g
        .add_node(
            "fc2",
            Op::Linear(Linear {
                weight: Tensor::new(vec![3, 6], w2).unwrap(),
                bias: None,
            }),
            vec![a],
            "y",
        )
        .unwrap();
    g.set_output(y).unwrap();
    g
}

/// The perturbation estimate of a layer's influence equals sum_j (dL/da_j)^2 computed
/// analytically (W2^T (softmax - onehot)) within 15 %.
#[test]
fn influence_estimate_equals_the_squared_gradient() {
    let g = tiny();
    let imgs: Vec<Tensor> = (0..4)
        .map(|k| {
            Tensor::new(
                vec![1, 4],
                (0..4)
                    .map(|i| ((i + 3 * k) % 5) as f64 / 2.0 - 1.0)
                    .collect(),
            )
            .unwrap()
        })
        .collect();
    let labels = [Some(0), Some(2), None, Some(1)];
    let est = approx::influence(&g, &imgs, &labels, 1e-3, 400, 11).unwrap();
    let act = approx::activation_nodes(&g)[0].0;
    let Op::Linear(l2) = &g.nodes()[2].op else {
        panic!()
    };
    let w2 = l2.weight.data();
    let mut want = 0.0;
    for (x, lab) in imgs.iter().zip(labels) {
        let z = reference::run(&g, x).unwrap();
        let z = z.data();
        let label = lab.unwrap_or_else(|| (0..3).max_by(|&a, &b| z[a].total_cmp(&z[b])).unwrap());
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let d: Vec<f64> = (0..3)
            .map(|o| e[o] / s - f64::from(u8::from(o == label)))
            .collect();
        for j in 0..6 {
            let gj: f64 = (0..3).map(|o| w2[o * 6 + j] * d[o]).sum();
            want += gj * gj;
        }
    }
    want /= imgs.len() as f64;
    let got = est[&act];
    assert!(
        (got - want).abs() < 0.15 * want,
        "estimate {got} vs gradient {want}"
    );
}

/// The rewrite puts the polynomial in place of the activation: the new graph's reference
/// output is the original's with the activation replaced, and a node that is not an
/// activation is refused.
#[test]
fn replaced_activations_evaluate_the_polynomial() {
    let g = tiny();
    let act = approx::activation_nodes(&g)[0].0;
    let fit = approx::fit_grid(Activation::Relu, -5.0, 5.0, 2, 1001).unwrap();
    let polys: HashMap<usize, Vec<f64>> = [(act, fit.coeffs.clone())].into();
    let p = approx::replace_activations(&g, &polys).unwrap();
    assert!(approx::activation_nodes(&p).is_empty());
    assert!(matches!(p.nodes()[act].op, Op::Polynomial { .. }));
    let x = Tensor::new(vec![1, 4], vec![0.5, -1.0, 0.25, 2.0]).unwrap();
    let vals = reference::run_all(&g, &x).unwrap();
    let h = &vals[g.nodes()[act].inputs[0]];
    let a: Vec<f64> = h
        .data()
        .iter()
        .map(|&v| reference::horner(&fit.coeffs, v))
        .collect();
    let Op::Linear(l2) = &g.nodes()[2].op else {
        panic!()
    };
    let want = reference::eval_op(
        &Op::Linear(l2.clone()),
        &[&Tensor::new(vec![1, 6], a).unwrap()],
    )
    .unwrap();
    let got = reference::run(&p, &x).unwrap();
    for (u, v) in got.data().iter().zip(want.data()) {
        assert!((u - v).abs() < 1e-12);
    }
    let bad: HashMap<usize, Vec<f64>> = [(0, vec![0.0, 1.0])].into();
    assert!(approx::replace_activations(&g, &bad).is_err());
}

/// A model with a ReLU and a fused SiLU (Sigmoid + Mul) between Gemms, as an exporter writes it.
fn relu_silu_model() -> Vec<u8> {
    let mut m = M::new(&[1, 6]);
    m.init("W1", &[8, 6], &values(48, 21))
        .init("B1", &[8], &values(8, 22))
        .init("W2", &[8, 8], &values(64, 23))
        .init("W3", &[3, 8], &values(24, 24));
    m.node(
        "Gemm",
        &["x", "W1", "B1"],
        &["h1"],
        vec![attr_int("transB", 1)],
    )
    .node("Relu", &["h1"], &["a1"], vec![])
    .node("Gemm", &["a1", "W2"], &["h2"], vec![attr_int("transB", 1)])
    .node("Sigmoid", &["h2"], &["s2"], vec![])
    .node("Mul", &["h2", "s2"], &["a2"], vec![])
    .node("Gemm", &["a2", "W3"], &["y"], vec![attr_int("transB", 1)]);
    m.bytes()
}

/// Bootstrap-aware OLA: each layer's cost is its elements times the planner's cost of the
/// degree plus `depth / L` of a bootstrap ([`henn_nn::plan::bootstrap::BOOTSTRAP_COST`]), the
/// budget is matched the same way, and a bootstrap that leaves no level is refused.
#[test]
fn ola_with_bootstraps_charges_each_level_a_share_of_a_bootstrap() {
    let bytes = relu_silu_model();
    let g = henn_nn::onnx::import_bytes(&bytes).unwrap();
    let calib: Vec<Tensor> = (0..32)
        .map(|k| {
            let v = values(6, 300 + k)
                .iter()
                .map(|&v| 2.0 * f64::from(v))
                .collect();
            Tensor::new(vec![1, 6], v).unwrap()
        })
        .collect();
    let labels = vec![None; calib.len()];
    let ola = |levels| approx::Method::Ola {
        degrees: vec![2, 3, 4, 8, 12],
        budget: approx::Budget::UniformDegree(4),
        bootstrap_levels: levels,
    };
    let (_, choices) = approx::approximate(&g, &calib, &labels, &ola(Some(9)), 1.0).unwrap();
    let boot = henn_nn::plan::bootstrap::BOOTSTRAP_COST;
    let mut total = 0.0;
    let mut budget = 0.0;
    let (d4, per4) = approx::degree_cost(4).unwrap();
    for c in &choices {
        let n = g.nodes()[c.index].inputs[0];
        let elements: usize = g.shape(n).iter().product();
        let (depth, per) = approx::degree_cost(c.fit.degree).unwrap();
        assert_eq!(depth, c.depth);
        let want = elements as f64 * (per + depth as f64 / 9.0 * boot);
        assert!((c.cost - want).abs() < 1e-9 * want, "{} vs {want}", c.cost);
        total += c.cost;
        budget += elements as f64 * (per4 + d4 as f64 / 9.0 * boot);
    }
    // within the budget up to the DP's grid (one unit of budget / 20000 per layer)
    assert!(
        total <= budget * (1.0 + 2.0 / 20_000.0),
        "{total} > {budget}"
    );
    assert!(approx::approximate(&g, &calib, &labels, &ola(Some(0)), 1.0).is_err());
}

/// Every method end to end on an imported model: the approximated ONNX model (Clenshaw chains
/// of Mul/Add in place of the activations, the fused SiLU's Sigmoid removed) imports without
/// activations and computes what the approximated graph computes (float32 coefficients);
/// OLA stays within its budget and matched to uniform degree 4 costs no more than it.
#[test]
fn approximated_onnx_models_import_and_equal_the_rewritten_graph() {
    let bytes = relu_silu_model();
    let g = henn_nn::onnx::import_bytes(&bytes).unwrap();
    assert_eq!(approx::activation_nodes(&g).len(), 2);
    let calib: Vec<Tensor> = (0..32)
        .map(|k| {
            Tensor::new(
                vec![1, 6],
                values(6, 100 + k)
                    .iter()
                    .map(|&v| 2.0 * f64::from(v))
                    .collect(),
            )
            .unwrap()
        })
        .collect();
    let labels = vec![None; calib.len()];
    let methods = [
        approx::Method::Reference {
            range: 5.0,
            degree: 2,
        },
        approx::Method::Uniform { degree: 4 },
        approx::Method::Ola {
            degrees: vec![2, 3, 4, 6, 8],
            budget: approx::Budget::UniformDegree(4),
            bootstrap_levels: None,
        },
    ];
    let mut costs = Vec::new();
    for method in &methods {
        let (pg, choices) = approx::approximate(&g, &calib, &labels, method, 1.0).unwrap();
        assert_eq!(choices.len(), 2);
        let reps = approx::onnx_replacements(&g, &choices).unwrap();
        let out = henn_nn::onnx::edit::replace_with_polynomials(&bytes, &reps).unwrap();
        let h = henn_nn::onnx::import_bytes(&out).unwrap();
        assert!(approx::activation_nodes(&h).is_empty(), "{method:?}");
        let h = henn_nn::rewrite::simplify(&h).unwrap();
        for x in &calib[..4] {
            let want = reference::run(&pg, x).unwrap();
            let got = reference::run(&h, x).unwrap();
            assert_close(got.data(), want.data(), 1e-5);
        }
        costs.push(choices.iter().map(|c| c.cost).sum::<f64>());
        if let approx::Method::Ola { .. } = method {
            assert!(choices.iter().all(|c| c.influence.is_some_and(|a| a > 0.0)));
        }
    }
    assert!(
        costs[2] <= costs[1] * (1.0 + 1e-9),
        "OLA {} vs uniform {}",
        costs[2],
        costs[1]
    );
    // calibration is required by the distribution-aware methods
    assert!(approx::approximate(&g, &[], &[], &methods[1], 1.0).is_err());
    // a replacement whose tensor no node produces is refused
    let bad = [henn_nn::onnx::edit::PolyReplacement {
        input: "h1".into(),
        output: "nope".into(),
        coeffs: vec![0.0, 1.0, 0.5],
        interval: (-1.0, 1.0),
    }];
    assert!(henn_nn::onnx::edit::replace_with_polynomials(&bytes, &bad).is_err());
}

/// ReLU fits on [-16, 16] up to degree 63 written into the file (Chebyshev coefficients,
/// Clenshaw's recurrence in Mul/Add/Sub nodes, float32 initializers) import as the fitted
/// polynomial to 1e-6 of the function's range (written in powers of x with float32
/// coefficients, a degree-24 fit was off by 3e-3): in powers of x up to degree 8, as a
/// Chebyshev series on the fitted interval above. A degree-1 series (no Sub nodes) and an
/// empty interval are checked too.
#[test]
fn high_degree_fits_survive_the_onnx_file() {
    let mut m = M::new(&[1, 4]);
    m.node("Relu", &["x"], &["y"], vec![]);
    let bytes = m.bytes();
    for degree in [1usize, 2, 8, 9, 24, 63] {
        let fit = approx::fit_uniform(henn_nn::ir::Activation::Relu, -16.0, 16.0, degree).unwrap();
        let rep = henn_nn::onnx::edit::PolyReplacement {
            input: "x".into(),
            output: "y".into(),
            coeffs: fit.chebyshev.clone(),
            interval: fit.interval,
        };
        let out = henn_nn::onnx::edit::replace_with_polynomials(&bytes, &[rep]).unwrap();
        let h = henn_nn::onnx::import_bytes(&out).unwrap();
        assert!(approx::activation_nodes(&h).is_empty());
        let simple = henn_nn::rewrite::simplify(&h).unwrap();
        let op = &simple.nodes().last().unwrap().op;
        if degree > 8 {
            let henn_nn::ir::Op::Chebyshev { lo, hi, coeffs } = op else {
                panic!("degree {degree} imported as {op}");
            };
            assert!(
                (lo + 16.0).abs() < 1e-5 && (hi - 16.0).abs() < 1e-5,
                "[{lo}, {hi}]"
            );
            assert_eq!(coeffs.len(), degree + 1);
        } else if degree >= 2 {
            assert!(matches!(op, henn_nn::ir::Op::Polynomial { .. }), "{op}");
        }
        let mut worst = 0.0f64;
        for k in 0..=40 {
            let x0 = -16.0 + 32.0 * f64::from(k) / 40.0;
            let xs = vec![x0, -x0, x0 / 3.0, 0.5 * x0];
            let t = Tensor::new(vec![1, 4], xs.clone()).unwrap();
            let got = reference::run(&h, &t).unwrap();
            let got_simple = reference::run(&simple, &t).unwrap();
            for ((g, s), x) in got.data().iter().zip(got_simple.data()).zip(&xs) {
                worst = worst.max((g - fit.eval(*x)).abs());
                worst = worst.max((s - fit.eval(*x)).abs());
            }
        }
        assert!(worst < 16e-6, "degree {degree}: {worst:e}");
    }
    let bad = henn_nn::onnx::edit::PolyReplacement {
        input: "x".into(),
        output: "y".into(),
        coeffs: vec![0.0, 1.0],
        interval: (1.0, 1.0),
    };
    assert!(henn_nn::onnx::edit::replace_with_polynomials(&bytes, &[bad]).is_err());
}
