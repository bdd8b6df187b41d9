//! The reference engine's convolution (im2col + GEMM) against the definition, summed tap by
//! tap, on generated shapes: strides, asymmetric padding, kernels larger than the stride,
//! batch > 1, with and without bias. Bound: 1e-12 relative to the largest output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use henn_nn::ir::Conv2d;
use henn_nn::{Op, Tensor, reference};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn direct(c: &Conv2d, x: &Tensor) -> Vec<f64> {
    let (xs, ws) = (x.shape(), c.weight.shape());
    let (n, ci, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let (co, kh, kw) = (ws[0], ws[2], ws[3]);
    let [sh, sw] = c.stride;
    let [pt, pl, pb, pr] = c.pads;
    let oh = (h + pt + pb - kh) / sh + 1;
    let ow = (w + pl + pr - kw) / sw + 1;
    let mut out = Vec::new();
    for b in 0..n {
        for o in 0..co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = c.bias.as_ref().map_or(0.0, |v| v[o]);
                    for i in 0..ci {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * sh + ky) as isize - pt as isize;
                                let ix = (ox * sw + kx) as isize - pl as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    acc += x.data()
                                        [((b * ci + i) * h + iy as usize) * w + ix as usize]
                                        * c.weight.data()[((o * ci + i) * kh + ky) * kw + kx];
                                }
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
    }
    out
}

#[test]
fn gemm_convolution_equals_the_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let cases = [
        // n, ci, h, w, co, kh, kw, stride, pads, bias
        (1, 1, 28, 28, 5, 5, 5, [2, 2], [0, 0, 0, 0], true),
        (2, 3, 9, 7, 4, 3, 3, [1, 1], [1, 1, 1, 1], true),
        (1, 4, 8, 8, 6, 3, 2, [2, 1], [1, 0, 2, 1], false),
        (1, 2, 5, 6, 3, 1, 1, [2, 2], [0, 0, 0, 0], true),
        (3, 2, 6, 6, 2, 4, 4, [3, 2], [2, 2, 1, 0], true),
    ];
    for (n, ci, h, w, co, kh, kw, stride, pads, bias) in cases {
        let mut rand_vec =
            |len: usize| -> Vec<f64> { (0..len).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let c = Conv2d {
            weight: Tensor::new(vec![co, ci, kh, kw], rand_vec(co * ci * kh * kw)).unwrap(),
            bias: bias.then(|| rand_vec(co)),
            stride,
            pads,
        };
        let x = Tensor::new(vec![n, ci, h, w], rand_vec(n * ci * h * w)).unwrap();
        let got = reference::eval_op(&Op::Conv2d(c.clone()), &[&x]).unwrap();
        let want = direct(&c, &x);
        assert_eq!(got.data().len(), want.len(), "output size");
        let top = want.iter().fold(0.0f64, |a, b| a.max(b.abs()));
        let err = got
            .data()
            .iter()
            .zip(&want)
            .fold(0.0f64, |a, (g, w)| a.max((g - w).abs()));
        assert!(
            err <= 1e-12 * top,
            "case {:?}: error {err:e}",
            (n, ci, h, w, co, kh, kw)
        );
    }
}
