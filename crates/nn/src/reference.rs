//! Plaintext f64 reference forward pass over the IR.
//!
//! [`run`] returns the graph output; [`run_all`] returns every intermediate value (indexed by
//! [`ValueId`]), for per-layer error reports against an encrypted run.

use crate::error::{NnError, Result};
use crate::ir::{Activation, AvgPool, Conv2d, Graph, Linear, Op, ValueId};
use crate::tensor::{Tensor, numel};

/// Strips leading size-1 axes, so `[1, 1, 28, 28]` and `[1, 28, 28]` compare equal.
fn squeezed(s: &[usize]) -> &[usize] {
    let k = s.iter().take_while(|&&d| d == 1).count();
    &s[k..]
}

/// Whether an input of shape `given` is accepted for a model input of shape `expected`
/// (equal up to leading size-1 axes).
pub fn input_shape_matches(expected: &[usize], given: &[usize]) -> bool {
    squeezed(expected) == squeezed(given)
}

/// Runs the graph and returns the output.
pub fn run(graph: &Graph, input: &Tensor) -> Result<Tensor> {
    let mut all = run_all(graph, input)?;
    let out = graph.output();
    if out < all.len() {
        Ok(all.swap_remove(out))
    } else {
        Err(NnError::InvalidGraph("output value out of range".into()))
    }
}

/// Runs the graph and returns every value, indexed by [`ValueId`].
pub fn run_all(graph: &Graph, input: &Tensor) -> Result<Vec<Tensor>> {
    let expected = graph.input_shape();
    if !input_shape_matches(expected, input.shape()) {
        return Err(NnError::ShapeMismatch {
            node: "input".into(),
            detail: format!(
                "model expects input shape {expected:?}, got {:?}",
                input.shape()
            ),
        });
    }
    let mut vals: Vec<Option<Tensor>> = vec![None; graph.values().len()];
    vals[graph.input()] = Some(input.clone().reshape(expected.to_vec())?);
    for node in graph.nodes() {
        let mut ins = Vec::with_capacity(node.inputs.len());
        for &i in &node.inputs {
            ins.push(get(&vals, i)?);
        }
        let out = eval_op(&node.op, &ins).map_err(|e| match e {
            NnError::ShapeMismatch { detail, .. } => NnError::ShapeMismatch {
                node: node.name.clone(),
                detail,
            },
            other => other,
        })?;
        vals[node.output] = Some(out);
    }
    vals.into_iter()
        .enumerate()
        .map(|(i, v)| v.map_or_else(|| Ok(Tensor::zeros(graph.shape(i).to_vec())), Ok))
        .collect()
}

fn get(vals: &[Option<Tensor>], i: ValueId) -> Result<&Tensor> {
    vals.get(i)
        .and_then(Option::as_ref)
        .ok_or_else(|| NnError::InvalidGraph(format!("value {i} used before it is computed")))
}

fn mismatch(detail: String) -> NnError {
    NnError::ShapeMismatch {
        node: "?".into(),
        detail,
    }
}

/// Evaluates one op on input tensors.
pub fn eval_op(op: &Op, inputs: &[&Tensor]) -> Result<Tensor> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    let out_shape = crate::ir::infer_shape(op, &shapes).map_err(mismatch)?;
    let x = inputs[0];
    match op {
        Op::Conv2d(c) => conv2d(c, x, out_shape),
        Op::BatchNorm(b) => {
            let (scale, shift) = b.affine();
            Ok(per_channel(x, |c, v| scale[c] * v + shift[c]))
        }
        Op::Linear(l) => linear(l, x, out_shape),
        Op::Reshape { shape } => x.clone().reshape(shape.clone()),
        Op::AvgPool(p) => avg_pool(p, x, out_shape),
        Op::GlobalAvgPool => {
            let s = x.shape();
            let (n, c) = (s[0], s[1]);
            let area: usize = s[2..].iter().product();
            let mut out = Vec::with_capacity(n * c);
            for chunk in x.data().chunks(area.max(1)) {
                out.push(chunk.iter().sum::<f64>() / area as f64);
            }
            Tensor::new(out_shape, out)
        }
        Op::ReduceSum { axes, .. } => reduce_sum(x, axes, out_shape),
        Op::Add => x.broadcast_with(inputs[1], |a, b| a + b),
        Op::Mul => x.broadcast_with(inputs[1], |a, b| a * b),
        Op::AddConst(c) => x.broadcast_with(c, |a, b| a + b),
        Op::MulConst(c) => x.broadcast_with(c, |a, b| a * b),
        Op::Pow { exponent } => Ok(x.map(|v| v.powi(*exponent as i32))),
        Op::Activation(a) => Ok(x.map(|v| activation(*a, v))),
        Op::Polynomial { coeffs } => Ok(x.map(|v| horner(coeffs, v))),
        Op::Chebyshev { lo, hi, coeffs } => {
            Ok(x.map(|v| crate::ir::poly::chebyshev_eval(coeffs, *lo, *hi, v)))
        }
        Op::Identity => Ok(x.clone()),
    }
}

/// Evaluates `sum_i coeffs[i] * x^i`.
pub fn horner(coeffs: &[f64], x: f64) -> f64 {
    coeffs.iter().rev().fold(0.0, |acc, &c| acc * x + c)
}

/// The exact value of a non-polynomial activation.
pub fn activation(a: Activation, v: f64) -> f64 {
    match a {
        Activation::Relu => v.max(0.0),
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        Activation::Silu => v / (1.0 + (-v).exp()),
        Activation::Gelu => 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2)),
        Activation::Erf => libm::erf(v),
        Activation::Tanh => v.tanh(),
    }
}

fn per_channel(x: &Tensor, f: impl Fn(usize, f64) -> f64) -> Tensor {
    let s = x.shape();
    let c = s.get(1).copied().unwrap_or(1).max(1);
    let inner: usize = s.iter().skip(2).product();
    let inner = inner.max(1);
    x.map_indexed(|i, v| f((i / inner) % c, v))
}

impl Tensor {
    fn map_indexed(&self, f: impl Fn(usize, f64) -> f64) -> Tensor {
        let mut t = self.clone();
        for (i, v) in t.data_mut().iter_mut().enumerate() {
            *v = f(i, *v);
        }
        t
    }
}

/// `c = a b` for row-major `a` `[m, k]`, `b` `[k, n]`, `c` `[m, n]` (overwritten), by the
/// `matrixmultiply` crate's cache-blocked, vectorised GEMM.
fn matmul(a: &[f64], b: &[f64], c: &mut [f64], m: usize, k: usize, n: usize) -> Result<()> {
    if a.len() != m * k || b.len() != k * n || c.len() != m * n {
        return Err(mismatch(format!(
            "matrix product [{m}, {k}] x [{k}, {n}] with buffers of {}, {}, {}",
            a.len(),
            b.len(),
            c.len()
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        c.fill(0.0);
        return Ok(());
    }
    let (Ok(ki), Ok(ni)) = (isize::try_from(k), isize::try_from(n)) else {
        return Err(mismatch("matrix dimensions overflow".into()));
    };
    // SAFETY: the three buffers hold exactly m x k, k x n and m x n elements (checked above),
    // row-major with the given strides, so every index the kernel forms is in bounds; `c`
    // is a unique borrow and does not alias `a` or `b`.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            ki,
            1,
            b.as_ptr(),
            ni,
            1,
            0.0,
            c.as_mut_ptr(),
            ni,
            1,
        );
    }
    Ok(())
}

/// Convolution as a matrix product: the input windows unrolled into a `[ci kh kw, oh ow]`
/// matrix (im2col; padding as zeros) times the weights `[co, ci kh kw]`, per image.
fn conv2d(c: &Conv2d, x: &Tensor, out_shape: Vec<usize>) -> Result<Tensor> {
    let xs = x.shape();
    let ws = c.weight.shape();
    let (n, ci, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let (co, kh, kw) = (ws[0], ws[2], ws[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let (sh, sw) = (c.stride[0], c.stride[1]);
    let (pt, pl) = (c.pads[0], c.pads[1]);
    let xd = x.data();
    let wd = c.weight.data();
    let (k, p) = (ci * kh * kw, oh * ow);
    let mut out = vec![0.0; numel(&out_shape)];
    let mut cols = vec![0.0; k * p];
    for b in 0..n {
        for i in 0..ci {
            let xbase = (b * ci + i) * h * w;
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = &mut cols[((i * kh + ky) * kw + kx) * p..][..p];
                    for oy in 0..oh {
                        let iy = (oy * sh + ky) as isize - pt as isize;
                        let dst = &mut row[oy * ow..(oy + 1) * ow];
                        if iy < 0 || iy >= h as isize {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = xbase + iy as usize * w;
                        for (ox, d) in dst.iter_mut().enumerate() {
                            let ix = (ox * sw + kx) as isize - pl as isize;
                            *d = if ix < 0 || ix >= w as isize {
                                0.0
                            } else {
                                xd[src + ix as usize]
                            };
                        }
                    }
                }
            }
        }
        let ob = &mut out[b * co * p..(b + 1) * co * p];
        matmul(wd, &cols, ob, co, k, p)?;
        if let Some(bias) = c.bias.as_ref() {
            for (o, chunk) in ob.chunks_mut(p.max(1)).enumerate() {
                let bv = bias.get(o).copied().unwrap_or(0.0);
                chunk.iter_mut().for_each(|v| *v += bv);
            }
        }
    }
    Tensor::new(out_shape, out)
}

fn linear(l: &Linear, x: &Tensor, out_shape: Vec<usize>) -> Result<Tensor> {
    let ws = l.weight.shape();
    let (m, k) = (ws[0], ws[1]);
    let wd = l.weight.data();
    let mut out = Vec::with_capacity(numel(&out_shape));
    for row in x.data().chunks(k.max(1)) {
        for o in 0..m {
            let wr = &wd[o * k..(o + 1) * k];
            let dot: f64 = row.iter().zip(wr).map(|(a, b)| a * b).sum();
            out.push(dot + l.bias.as_ref().map_or(0.0, |b| b[o]));
        }
    }
    Tensor::new(out_shape, out)
}

fn avg_pool(p: &AvgPool, x: &Tensor, out_shape: Vec<usize>) -> Result<Tensor> {
    let xs = x.shape();
    let (nc, h, w) = (xs[0] * xs[1], xs[2], xs[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.stride;
    let (pt, pl) = (p.pads[0] as isize, p.pads[1] as isize);
    let xd = x.data();
    let mut out = Vec::with_capacity(numel(&out_shape));
    for ch in 0..nc {
        let base = ch * h * w;
        for oy in 0..oh {
            for ox in 0..ow {
                let y0 = (oy * sh) as isize - pt;
                let x0 = (ox * sw) as isize - pl;
                let mut acc = 0.0;
                let mut inside = 0usize;
                let mut padded_count = 0usize;
                for ky in 0..kh as isize {
                    for kx in 0..kw as isize {
                        let (iy, ix) = (y0 + ky, x0 + kx);
                        // Positions in the padded image (excluding anything beyond the pads).
                        if iy >= -(p.pads[0] as isize)
                            && iy < (h + p.pads[2]) as isize
                            && ix >= -(p.pads[1] as isize)
                            && ix < (w + p.pads[3]) as isize
                        {
                            padded_count += 1;
                        }
                        if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                            acc += xd[base + iy as usize * w + ix as usize];
                            inside += 1;
                        }
                    }
                }
                let div = if p.count_include_pad {
                    padded_count
                } else {
                    inside
                };
                out.push(if div == 0 { 0.0 } else { acc / div as f64 });
            }
        }
    }
    Tensor::new(out_shape, out)
}

fn reduce_sum(x: &Tensor, axes: &[usize], out_shape: Vec<usize>) -> Result<Tensor> {
    let s = x.shape();
    // Output index: the input index with reduced axes set to 0.
    let kept: Vec<usize> = s
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let kst = crate::tensor::strides(&kept);
    let ist = crate::tensor::strides(s);
    let mut out = vec![0.0; numel(&kept)];
    for (flat, &v) in x.data().iter().enumerate() {
        let mut rem = flat;
        let mut o = 0;
        for d in 0..s.len() {
            let idx = rem / ist[d];
            rem %= ist[d];
            if !axes.contains(&d) {
                o += idx * kst[d];
            }
        }
        out[o] += v;
    }
    Tensor::new(out_shape, out)
}
