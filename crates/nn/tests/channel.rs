//! Channel-wise packing: the rotation steps a plan records, graphs the layout cannot hold are
//! explained, shipped MNIST models on the slots backend at 1024 and 8192 slots (at 8192,
//! conv1 in the gaps of its replicas, conv2's 50 channels in one ciphertext), and an encrypted shipped model
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
    // 5x5 pad 2 on a 9x9 image: taps (-2..=2) x (-2..=2) at row stride 9 (steps mod slots),
    // each a recorded step or a giant step plus a baby step (a multiplexed convolution may
    // regroup the rotations: rows giant, columns baby)
    let reach = |k: i64| {
        rots.contains(&k)
            || rots
                .iter()
                .any(|&a| rots.contains(&(k - a).rem_euclid(slots)))
    };
    for dy in -2i64..=2 {
        for dx in -2i64..=2 {
            if (dy, dx) != (0, 0) {
                let k = (dy * 9 + dx).rem_euclid(slots);
                assert!(reach(k), "conv tap step {k} not reachable: {rots:?}");
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
                if i == 0 && name == "mnist_cnn3_square" && slots == 8192 {
                    // 8192 slots hold 8 replicas of the 28 x 28 image: conv1 keeps them and
                    // puts its 5 channels 3 to a ciphertext (in the gaps of its stride), conv2
                    // puts all 50 channels in one (blocks and gaps), the FC all 10 outputs
                    let cts = |n: &str| {
                        stats
                            .iter()
                            .find(|s| s.name.starts_with(n))
                            .map(|s| s.ciphertexts)
                    };
                    assert_eq!(cts("/conv1"), Some(2), "{name}: conv1 {stats:?}");
                    assert_eq!(cts("/conv2"), Some(1), "{name}: conv2 multiplexed");
                    assert_eq!(cts("/fc"), Some(1), "{name}: one output ciphertext");
                }
            }
        }
    }
}

/// mnist_cnn3_square on a 36-bit `TEST_INSECURE_CHAIN` at N = 2^14: the plan is the cheapest
/// of the layout's candidates, multiplexes conv1 (3 channels in the gaps of each replica) and
/// conv2 (50 channels in one ciphertext) and the encrypted logits of 3 images are within 10 bits
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
    // the planner's choice (the cheapest candidate on the simulated backend): conv1 keeps the
    // replicas and fills the gaps of its stride with 3 of its 5 channels per ciphertext;
    // conv2 reads them and puts all 50 channels in one ciphertext (blocks and gaps)
    assert_eq!(mux, [3, 3, 50, 50, 50], "{mux:?}");
    let conv1 = plan.layout.values[g.nodes()[0].output]
        .and_then(|p| p.grid())
        .unwrap();
    assert!(conv1.reps > 1 && conv1.iy * conv1.ix == 4, "{conv1:?}");
    let room = plan.layout.room;
    let cands = KIND.rules().candidates(&g, room, 1).unwrap();
    assert!(cands.len() >= 2, "several placements to choose from");
    let cost = |l| henn_nn::plan::plan_cost(&g, l).unwrap();
    let chosen = cost(&plan.layout);
    assert!(
        cands.iter().all(|c| cost(c) >= chosen),
        "the cheapest candidate"
    );
    assert!(cands.contains(&plan.layout));
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

/// A CIFAR-shaped network at 16 x 16: three blocks of conv 3x3 pad 1 -> square -> average
/// pool 2x2 (3 -> 6 -> 12 -> 24 channels, the last two through a residual block whose skip is a
/// 1x1 stride-2 convolution), global average pooling and a linear layer. Its strided values
/// leave gaps the multiplexed placement fills with interleaved channels.
fn cifar_like(seed: u64) -> Graph {
    cifar_like_with(seed, [6, 12, 24])
}

/// [`cifar_like`] with the three blocks' output channels `widths`.
fn cifar_like_with(seed: u64, widths: [usize; 3]) -> Graph {
    use henn_nn::ir::{AvgPool, Linear};
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut g = Graph::new("cifar_like", "x", vec![1, 3, 16, 16]);
    let conv = |rng: &mut rand_chacha::ChaCha8Rng, co: usize, ci: usize, k: usize, s: usize| {
        let p = k / 2;
        Op::Conv2d(Conv2d {
            weight: kit::rand_tensor(rng, vec![co, ci, k, k], 1.0 / (ci * k * k) as f64),
            bias: Some((0..co).map(|o| 0.01 * o as f64 - 0.05).collect()),
            stride: [s, s],
            pads: [p; 4],
        })
    };
    let pool = || {
        Op::AvgPool(AvgPool {
            kernel: [2, 2],
            stride: [2, 2],
            pads: [0; 4],
            count_include_pad: true,
        })
    };
    let sq = |g: &mut Graph, x, tag: &str| g.add_node(tag, Op::Mul, vec![x, x], tag).unwrap();
    let mut x = g.input();
    let mut ci = 3;
    for (b, co) in widths.into_iter().enumerate() {
        let c = g
            .add_node(
                format!("conv{b}"),
                conv(&mut rng, co, ci, 3, 1),
                vec![x],
                format!("c{b}"),
            )
            .unwrap();
        let a = sq(&mut g, c, &format!("sq{b}"));
        x = g
            .add_node(format!("pool{b}"), pool(), vec![a], format!("p{b}"))
            .unwrap();
        ci = co;
    }
    // residual block with a downsampling skip: 24 x 2 x 2 -> 32 x 1 x 1
    let y = g
        .add_node("res.conv", conv(&mut rng, 32, ci, 3, 2), vec![x], "rc")
        .unwrap();
    let y = sq(&mut g, y, "res.sq");
    let s = g
        .add_node("res.skip", conv(&mut rng, 32, ci, 1, 2), vec![x], "rs")
        .unwrap();
    let y = g.add_node("res.add", Op::Add, vec![y, s], "ra").unwrap();
    let y = g
        .add_node("gap", Op::GlobalAvgPool, vec![y], "gap")
        .unwrap();
    let y = g
        .add_node("flat", Op::Reshape { shape: vec![1, 32] }, vec![y], "flat")
        .unwrap();
    let fc = Op::Linear(Linear {
        weight: kit::rand_tensor(&mut rng, vec![10, 32], 0.3),
        bias: Some(vec![0.1; 10]),
    });
    let y = g.add_node("fc", fc, vec![y], "logits").unwrap();
    g.set_output(y).unwrap();
    g.validate().unwrap();
    g
}

/// The grid of value `name` under layout plan `l`.
fn grid_of(g: &Graph, l: &henn_nn::pack::LayoutPlan, name: &str) -> henn_nn::pack::Grid {
    let v = g.values().iter().position(|v| v.name == name).unwrap();
    l.values[v].and_then(|p| p.grid()).unwrap()
}

/// The grids of every value of layout plan `l`.
fn grids(l: &henn_nn::pack::LayoutPlan) -> impl Iterator<Item = henn_nn::pack::Grid> + '_ {
    l.values.iter().flatten().filter_map(|p| p.grid())
}

/// The outputs of `g` on image `x` under layout plan `l`, on the slots backend.
fn run_on_slots(
    g: &Graph,
    l: &henn_nn::pack::LayoutPlan,
    x: &Tensor,
    primes: &[f64],
    slots: usize,
) -> Vec<f64> {
    let be = henn_nn::backend::slots::Slots::new(primes.to_vec(), slots);
    let input =
        henn_nn::plan::slots_input(&be, l, g, std::slice::from_ref(x), Scale::from_log2(40.0))
            .unwrap();
    let (out, _) = henn_nn::exec::run(&be, l, g, input, |_, _| Ok(())).unwrap();
    let dec: Vec<Vec<f64>> = out.cts.iter().map(|c| c.v.clone()).collect();
    l.unpack_outputs(&dec, out.mult, 1).unwrap().remove(0)
}

/// Every candidate placement of a CIFAR-shaped network with a downsampling residual block,
/// on the slots backend at 1024 and 4096 slots, equals the reference; the most multiplexed
/// one interleaves channels into the gaps of strided values (several lanes per block) and
/// holds 24 channels in one ciphertext.
#[test]
fn multiplexed_candidates_equal_the_reference() {
    let g = cifar_like(3);
    let imgs = kit::images(&g, 2, 5);
    let primes = test_insecure_chain(20).ideal_primes();
    for slots in [1024usize, 4096] {
        let room = henn_nn::pack::Room::of_chain(slots, &primes);
        let cands = KIND.rules().candidates(&g, room, 1).unwrap();
        assert!(
            cands.len() >= 2,
            "slots {slots}: {} candidates",
            cands.len()
        );
        let grid = |l: &henn_nn::pack::LayoutPlan, name: &str| grid_of(&g, l, name);
        let lanes = &cands[0];
        let c2 = grid(lanes, "c2");
        assert!(c2.k >= 24 && c2.c == 1, "slots {slots}: conv2 {c2:?}");
        assert!(c2.iy * c2.ix > 1, "slots {slots}: interleaved lanes {c2:?}");
        assert!(grid(lanes, "ra").k > 1, "residual sum multiplexed");
        for (ci, l) in cands.iter().enumerate() {
            for (i, x) in imgs.iter().enumerate() {
                let got = run_on_slots(&g, l, x, &primes, slots);
                let want = kit::reference(&g, std::slice::from_ref(x));
                assert_bits(
                    &format!("slots {slots} candidate {ci} image {i}"),
                    &got,
                    &want[0],
                    SLOTS_BITS,
                );
            }
        }
    }
}

/// The CIFAR-shaped network encrypted (N = 2^12, `TEST_INSECURE_CHAIN`): the planner picks
/// the multiplexed placement (fewer ciphertexts per layer) and the logits are within 12 bits of
/// the reference.
#[test]
fn encrypted_multiplexed_residual_network() {
    let g = cifar_like(4);
    let imgs = kit::images(&g, 1, 9);
    let plan = kit::plan_on(&g, KIND, &imgs, &kit::chain_for(&g, KIND));
    let k_max = grids(&plan.layout).map(|gr| gr.k).max().unwrap();
    assert!(k_max >= 12, "multiplexed: {k_max}");
    let s = LocalSession::new(&g, &plan).unwrap();
    let r = s.run(&imgs, false).unwrap();
    let want = kit::reference(&g, &imgs);
    let bits = assert_bits("cifar_like encrypted", &r.outputs[0], &want[0], 12.0);
    eprintln!(
        "cifar_like encrypted: {bits:.1} bits, {:.3} s",
        r.timings.eval_s
    );
}

/// Two strided convolutions (`stride`, 3x3 or 5x5 kernels, with or without padding), squares,
/// optionally an average pooling, and a fully connected layer: the network shape whose
/// replicas the gap placement keeps (the first convolution's channels in the gaps of its
/// stride in every replica, the second's in blocks and gaps of one ciphertext).
fn strided_pair(seed: u64, cin: usize, kernel: usize, pad: usize, pool: bool) -> Graph {
    use henn_nn::ir::{AvgPool, Linear};
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut g = Graph::new("strided_pair", "x", vec![1, cin, 20, 20]);
    let conv = |rng: &mut rand_chacha::ChaCha8Rng, co: usize, ci: usize| {
        Op::Conv2d(Conv2d {
            weight: kit::rand_tensor(
                rng,
                vec![co, ci, kernel, kernel],
                1.0 / (ci * kernel) as f64,
            ),
            bias: Some((0..co).map(|o| 0.02 * o as f64 - 0.1).collect()),
            stride: [2, 2],
            pads: [pad; 4],
        })
    };
    let c1 = g
        .add_node("conv1", conv(&mut rng, 5, cin), vec![g.input()], "c1")
        .unwrap();
    let a1 = g.add_node("sq1", Op::Mul, vec![c1, c1], "a1").unwrap();
    let mut x = g
        .add_node("conv2", conv(&mut rng, 21, 5), vec![a1], "c2")
        .unwrap();
    x = g.add_node("sq2", Op::Mul, vec![x, x], "a2").unwrap();
    if pool {
        x = g
            .add_node(
                "pool",
                Op::AvgPool(AvgPool {
                    kernel: [2, 2],
                    stride: [2, 2],
                    pads: [0; 4],
                    count_include_pad: true,
                }),
                vec![x],
                "p",
            )
            .unwrap();
    }
    let f: usize = g.shape(x).iter().product();
    let y = g
        .add_node("flat", Op::Reshape { shape: vec![1, f] }, vec![x], "flat")
        .unwrap();
    let fc = Op::Linear(Linear {
        weight: kit::rand_tensor(&mut rng, vec![10, f], 0.3),
        bias: Some((0..10).map(|j| 0.05 * j as f64).collect()),
    });
    let y = g.add_node("fc", fc, vec![y], "logits").unwrap();
    g.set_output(y).unwrap();
    g.validate().unwrap();
    g
}

/// Every candidate placement of strided convolution pairs equals the reference on the slots
/// backend, among them the gap placement (conv1's channels in the gaps of every replica,
/// conv2's in blocks and gaps) and the fully connected layer with every output in one
/// ciphertext; the planner takes the gap placement for the unpadded 5x5 pair, with fewer
/// plaintext products than any other candidate.
#[test]
fn gap_placements_equal_the_reference() {
    let primes = test_insecure_chain(20).ideal_primes();
    let slots = 8192;
    let room = henn_nn::pack::Room::of_chain(slots, &primes);
    for (n, (cin, kernel, pad, pool)) in [(1, 5, 0, false), (2, 3, 1, false), (1, 3, 1, true)]
        .into_iter()
        .enumerate()
    {
        let g = strided_pair(n as u64, cin, kernel, pad, pool);
        let imgs = kit::images(&g, 2, 11 + n as u64);
        let want = kit::reference(&g, &imgs);
        let cands = KIND.rules().candidates(&g, room, 1).unwrap();
        let grid = |l: &henn_nn::pack::LayoutPlan, name: &str| grid_of(&g, l, name);
        let gapped = cands
            .iter()
            .position(|l| {
                let c1 = grid(l, "c1");
                // before a pooling, conv2 keeps the replicas too (gaps only)
                let c2 = grid(l, "c2");
                c1.reps > 1 && c1.iy * c1.ix == 4 && (c2.c == 1 || (pool && c2.reps > 1))
            })
            .unwrap_or_else(|| panic!("network {n}: no gap placement"));
        assert_eq!(grid(&cands[gapped], "logits").c, 1, "network {n}");
        for (ci, l) in cands.iter().enumerate() {
            for (i, x) in imgs.iter().enumerate() {
                let got = run_on_slots(&g, l, x, &primes, slots);
                assert_bits(
                    &format!("network {n} candidate {ci} image {i}"),
                    &got,
                    &want[i],
                    SLOTS_BITS,
                );
            }
        }
        if n == 0 {
            let opts = PlanOptions {
                layout: KIND,
                images: Images::Exactly(1),
                ..PlanOptions::default()
            };
            let chain = TestChain {
                log_n: 14,
                q0_bits: 50,
                prime_bits: 36,
                levels: henn_nn::plan::depth(&g, KIND).unwrap(),
                p_bits: 50,
            };
            let (plan, _) = make_plan(&g, &opts, &imgs, Some(chain.literal())).unwrap();
            let c1 = grid(&plan.layout, "c1");
            assert!(c1.reps > 1 && c1.iy * c1.ix == 4, "planner: {c1:?}");
        }
    }
}

/// With repacking allowed (`Room::repack`), the CIFAR-shaped network's poolings fill their
/// gaps with the channels of other ciphertexts (a convolution output in merge order, the
/// pooled value in fewer ciphertexts); every such candidate equals the reference on the
/// slots backend at 1024 and 2048 slots, and the merge order is a permutation of the
/// channels.
#[test]
fn repacked_poolings_equal_the_reference() {
    let primes = test_insecure_chain(20).ideal_primes();
    for (g, slots) in [
        (cifar_like_with(5, [16, 24, 24]), 1024usize),
        (cifar_like_with(5, [16, 24, 24]), 2048),
        (pool_then_conv(7), 1024),
        (pool_then_conv(7), 2048),
    ] {
        let imgs = kit::images(&g, 2, 6);
        let room = henn_nn::pack::Room::of_chain(slots, &primes).with_repack(true);
        let cands = KIND.rules().candidates(&g, room, 1).unwrap();
        let repacked: Vec<_> = cands
            .iter()
            .filter(|l| grids(l).any(|gr| gr.merged() > 1))
            .collect();
        assert!(!repacked.is_empty(), "slots {slots}: nothing repacked");
        for (ci, l) in repacked.iter().enumerate() {
            let grid = |name: &str| grid_of(&g, l, name);
            let (c0, p0) = (grid("sq0"), grid("p0"));
            if c0.merged() > 1 {
                assert_eq!(p0.c * c0.merged(), c0.c, "slots {slots}: {c0:?} -> {p0:?}");
                assert_eq!(p0.k, c0.k * c0.merged());
                let n = c0.c * c0.k;
                let mut seen = vec![false; n];
                for ch in 0..n {
                    let (ct, lane) = c0.lane_of(ch);
                    assert_eq!(c0.channel_at(ct, lane), ch);
                    assert!(ct < c0.c && lane < c0.k && !seen[ct * c0.k + lane]);
                    seen[ct * c0.k + lane] = true;
                }
            }
            for (i, x) in imgs.iter().enumerate() {
                let got = run_on_slots(&g, l, x, &primes, slots);
                let want = kit::reference(&g, std::slice::from_ref(x));
                assert_bits(
                    &format!(
                        "{} slots {slots} repacked candidate {ci} image {i}",
                        g.name()
                    ),
                    &got,
                    &want[0],
                    SLOTS_BITS,
                );
            }
        }
    }
}

/// conv 3x3 (3 -> 16 channels, 16 x 16) -> square -> average pool 2x2 -> conv 3x3 (16 -> 8):
/// the pooled pixels reach the output where they are (no global pooling to hide a
/// misplaced one).
fn pool_then_conv(seed: u64) -> Graph {
    use henn_nn::ir::AvgPool;
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut g = Graph::new("pool_then_conv", "x", vec![1, 3, 16, 16]);
    let conv = |rng: &mut rand_chacha::ChaCha8Rng, co: usize, ci: usize| {
        Op::Conv2d(Conv2d {
            weight: kit::rand_tensor(rng, vec![co, ci, 3, 3], 1.0 / (ci * 9) as f64),
            bias: Some((0..co).map(|o| 0.002 * o as f64 - 0.01).collect()),
            stride: [1, 1],
            pads: [1; 4],
        })
    };
    let x = g.input();
    let c = g
        .add_node("conv0", conv(&mut rng, 16, 3), vec![x], "c0")
        .unwrap();
    let a = g.add_node("sq0", Op::Mul, vec![c, c], "sq0").unwrap();
    let pool = Op::AvgPool(AvgPool {
        kernel: [2, 2],
        stride: [2, 2],
        pads: [0; 4],
        count_include_pad: true,
    });
    let p = g.add_node("pool0", pool, vec![a], "p0").unwrap();
    let y = g
        .add_node("conv1", conv(&mut rng, 8, 16), vec![p], "c1")
        .unwrap();
    g.set_output(y).unwrap();
    g.validate().unwrap();
    g
}

/// The CIFAR-shaped network encrypted on a chain with levels to spare: the planner repacks
/// its poolings (fewer ciphertexts for the next convolutions) and the logits are within 12
/// bits of the reference; the server's check of the plan recomputes the same layout.
#[test]
fn encrypted_repacked_poolings() {
    let g = cifar_like_with(6, [16, 24, 24]);
    let imgs = kit::images(&g, 1, 10);
    let depth = henn_nn::plan::depth(&g, KIND).unwrap();
    // a chain without levels to spare: no repacking
    let tight = kit::plan_on(&g, KIND, &imgs, &test_insecure_chain(depth));
    assert!(
        !tight.layout.room.repack && grids(&tight.layout).all(|gr| gr.merged() <= 1),
        "repacked without the levels"
    );
    let plan = kit::plan_on(&g, KIND, &imgs, &test_insecure_chain(depth + 3));
    let merged = grids(&plan.layout).filter(|gr| gr.merged() > 1).count();
    assert!(merged > 0, "no repacked pooling: {:?}", plan.layout.values);
    assert!(plan.layout.room.repack && plan.depth > depth);
    // what a server receives: the plan as JSON, checked against the graph
    let plan = henn_nn::plan::Plan::from_json(&plan.to_json().unwrap()).unwrap();
    plan.check(&g).unwrap();
    let s = LocalSession::new(&g, &plan).unwrap();
    let r = s.run(&imgs, false).unwrap();
    let want = kit::reference(&g, &imgs);
    let bits = assert_bits("cifar_like repacked", &r.outputs[0], &want[0], 12.0);
    eprintln!(
        "cifar_like repacked: {bits:.1} bits, depth {} -> {}, {:.3} s",
        depth, plan.depth, r.timings.eval_s
    );
}
