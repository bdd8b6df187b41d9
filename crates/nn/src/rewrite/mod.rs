//! Exact graph rewrites. Each takes a graph and returns a new one that computes the same
//! function (up to floating-point rounding: the tests check 1e-9 relative agreement of the
//! reference output).
//!
//! * [`fuse_batchnorm`]: Conv2d + BatchNorm and Linear + BatchNorm1d into one layer;
//! * [`fold_affine_into_linear`]: a per-channel constant Mul/Add (also from Sub/Div) after a
//!   Conv2d/Linear folded into its weights and bias;
//! * [`fold_affine_into_next_linear`]: input normalisation (`(x - mean) / std`) before a
//!   Conv2d/Linear folded into it (shifts only where no zero padding makes it inexact);
//! * [`merge_linear`]: Linear followed directly by Linear merged into one;
//! * [`remove_identities`]: Identity nodes and no-op reshapes dropped;
//! * [`recognize_polynomials`]: a single-input element-wise Mul/Add/Pow chain with scalar
//!   constants (a polynomial activation as PyTorch exports it) replaced by one
//!   [`Op::Polynomial`];
//! * [`normalize_polynomial_inputs`]: the linear layer before a polynomial activation scaled
//!   so that the polynomial's leading coefficient is +-1 (no blow-up of stored values), or,
//!   for a Chebyshev series, so that its interval becomes `[-1, 1]` (no level for the change
//!   of interval);
//! * [`simplify`]: all of the above until nothing changes.

mod poly;

use std::collections::{HashMap, HashSet};

pub use poly::recognize_polynomials;

use crate::error::{NnError, Result};
use crate::ir::{Conv2d, Graph, Linear, Node, Op, ValueId};
use crate::tensor::Tensor;

/// A node rewrite over a producer/consumer pair: given the producer `p` (whose single use is
/// the consumer) and the consumer `c`, returns the op replacing both, or `None`.
type PairRule = fn(&Graph, &Node, &Node) -> Option<Op>;

/// Applies `rule` to every producer/consumer pair where the producer's output is used only by
/// the consumer, replacing the pair by one node (named after the consumer).
fn fuse_pairs(g: &Graph, rule: PairRule) -> Result<Graph> {
    let uses = g.use_counts();
    let nodes = g.nodes();
    let mut replace: HashMap<usize, (Op, Vec<ValueId>, String)> = HashMap::new();
    let mut removed: HashSet<usize> = HashSet::new();
    for (ci, c) in nodes.iter().enumerate() {
        let [v] = c.inputs.as_slice() else { continue };
        let Some(pi) = g.producer(*v) else { continue };
        if uses[*v] != 1 || removed.contains(&pi) || replace.contains_key(&pi) {
            continue;
        }
        let p = &nodes[pi];
        if let Some(op) = rule(g, p, c) {
            replace.insert(ci, (op, p.inputs.clone(), format!("{}+{}", p.name, c.name)));
            removed.insert(pi);
        }
    }
    if replace.is_empty() {
        return Ok(g.clone());
    }
    let mut out = g.empty_like();
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    map.insert(g.input(), out.input());
    for (i, n) in nodes.iter().enumerate() {
        if removed.contains(&i) {
            continue;
        }
        let (op, inputs, node_name) = match replace.remove(&i) {
            Some(r) => r,
            None => (n.op.clone(), n.inputs.clone(), n.name.clone()),
        };
        let inputs = map_inputs(&map, &inputs, &n.name)?;
        let name = g
            .value(n.output)
            .map_or_else(String::new, |v| v.name.clone());
        let new = out.add_node(node_name, op, inputs, name)?;
        map.insert(n.output, new);
    }
    finish(g, out, &map)
}

/// Completes a rebuilt graph: its output is the image of `g`'s output under `map`; nodes
/// that no longer lead to it are dropped.
pub(crate) fn finish(g: &Graph, mut out: Graph, map: &HashMap<ValueId, ValueId>) -> Result<Graph> {
    let o = map
        .get(&g.output())
        .copied()
        .ok_or_else(|| NnError::InvalidGraph("rewrite lost the output".into()))?;
    out.set_output(o)?;
    out.pruned()
}

pub(crate) fn map_inputs(
    map: &HashMap<ValueId, ValueId>,
    inputs: &[ValueId],
    node: &str,
) -> Result<Vec<ValueId>> {
    inputs
        .iter()
        .map(|i| map.get(i).copied())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            NnError::InvalidGraph(format!("node '{node}' uses a value removed by a rewrite"))
        })
}

/// The constant as one value per index of `axis` of `shape`, if it broadcasts to `shape`
/// without enlarging it and varies only along `axis`.
fn per_axis(c: &Tensor, shape: &[usize], axis: usize) -> Option<Vec<f64>> {
    let r = shape.len();
    let cs = c.shape();
    if cs.len() > r || axis >= r {
        return None;
    }
    let aligned: Vec<usize> = std::iter::repeat_n(1, r - cs.len())
        .chain(cs.iter().copied())
        .collect();
    for (d, &n) in aligned.iter().enumerate() {
        if d != axis && n != 1 {
            return None;
        }
    }
    match aligned[axis] {
        1 => c.data().first().map(|&v| vec![v; shape[axis]]),
        n if n == shape[axis] => Some(c.data().to_vec()),
        _ => None,
    }
}

/// Channel axis of a Conv2d (1) or Linear (last) output.
fn out_axis(g: &Graph, p: &Node) -> Option<usize> {
    match p.op {
        Op::Conv2d(_) => Some(1),
        Op::Linear(_) => g.shape(p.output).len().checked_sub(1),
        _ => None,
    }
}

/// Scales output channel `o` of a Conv2d/Linear by `s[o]` and then adds `t[o]`.
fn scale_shift_out(op: &Op, s: &[f64], t: &[f64]) -> Option<Op> {
    let (weight, bias) = match op {
        Op::Conv2d(c) => (&c.weight, &c.bias),
        Op::Linear(l) => (&l.weight, &l.bias),
        _ => return None,
    };
    let co = *weight.shape().first()?;
    if s.len() != co || t.len() != co {
        return None;
    }
    let per = weight.len() / co.max(1);
    let mut w = weight.clone();
    for (i, v) in w.data_mut().iter_mut().enumerate() {
        *v *= s[i / per];
    }
    let b: Vec<f64> = (0..co)
        .map(|o| bias.as_ref().map_or(0.0, |b| b[o]) * s[o] + t[o])
        .collect();
    Some(match op {
        Op::Conv2d(c) => Op::Conv2d(Conv2d {
            weight: w,
            bias: Some(b),
            ..c.clone()
        }),
        _ => Op::Linear(Linear {
            weight: w,
            bias: Some(b),
        }),
    })
}

fn bn_rule(g: &Graph, p: &Node, c: &Node) -> Option<Op> {
    let Op::BatchNorm(bn) = &c.op else {
        return None;
    };
    let axis = out_axis(g, p)?;
    // BatchNorm normalises axis 1: for a Linear that is its feature axis only for 2-D outputs.
    if axis != 1 {
        return None;
    }
    let (s, t) = bn.affine();
    scale_shift_out(&p.op, &s, &t)
}

/// Fuses BatchNorm into a directly preceding Conv2d (or Linear with 2-D output, i.e. BatchNorm1d).
pub fn fuse_batchnorm(g: &Graph) -> Result<Graph> {
    fuse_pairs(g, bn_rule)
}

fn affine_out_rule(g: &Graph, p: &Node, c: &Node) -> Option<Op> {
    let axis = out_axis(g, p)?;
    let shape = g.shape(p.output);
    if g.shape(c.output) != shape {
        return None;
    }
    let n = *shape.get(axis)?;
    match &c.op {
        Op::MulConst(k) => scale_shift_out(&p.op, &per_axis(k, shape, axis)?, &vec![0.0; n]),
        Op::AddConst(k) => scale_shift_out(&p.op, &vec![1.0; n], &per_axis(k, shape, axis)?),
        _ => None,
    }
}

/// Folds a per-channel constant Mul/Add following a Conv2d/Linear into it (this also turns
/// ONNX MatMul + Add into one Linear with bias).
pub fn fold_affine_into_linear(g: &Graph) -> Result<Graph> {
    fuse_pairs(g, affine_out_rule)
}

#[allow(clippy::needless_range_loop)] // index arithmetic over weight layouts
fn affine_in_rule(g: &Graph, p: &Node, c: &Node) -> Option<Op> {
    let in_shape = g.shape(*p.inputs.first()?);
    if g.shape(p.output) != in_shape {
        return None;
    }
    let axis = match c.op {
        Op::Conv2d(_) => 1,
        Op::Linear(_) => in_shape.len().checked_sub(1)?,
        _ => return None,
    };
    let n = *in_shape.get(axis)?;
    let (s, t) = match &p.op {
        Op::MulConst(k) => (per_axis(k, in_shape, axis)?, vec![0.0; n]),
        Op::AddConst(k) => (vec![1.0; n], per_axis(k, in_shape, axis)?),
        _ => return None,
    };
    match &c.op {
        Op::Conv2d(conv) => {
            if t.iter().any(|&v| v != 0.0) && conv.pads.iter().any(|&p| p != 0) {
                // Zero padding is applied after the shift: folding would be inexact at borders.
                return None;
            }
            let ws = conv.weight.shape();
            let (co, ci, khw) = (ws[0], ws[1], ws[2] * ws[3]);
            let mut w = conv.weight.clone();
            let mut b = conv.bias.clone().unwrap_or_else(|| vec![0.0; co]);
            for o in 0..co {
                for i in 0..ci {
                    for k in 0..khw {
                        let idx = (o * ci + i) * khw + k;
                        b[o] += w.data()[idx] * t[i];
                        w.data_mut()[idx] *= s[i];
                    }
                }
            }
            Some(Op::Conv2d(Conv2d {
                weight: w,
                bias: Some(b),
                ..conv.clone()
            }))
        }
        Op::Linear(l) => {
            let ws = l.weight.shape();
            let (m, k) = (ws[0], ws[1]);
            let mut w = l.weight.clone();
            let mut b = l.bias.clone().unwrap_or_else(|| vec![0.0; m]);
            for o in 0..m {
                for i in 0..k {
                    b[o] += w.data()[o * k + i] * t[i];
                    w.data_mut()[o * k + i] *= s[i];
                }
            }
            Some(Op::Linear(Linear {
                weight: w,
                bias: Some(b),
            }))
        }
        _ => None,
    }
}

/// Folds a per-channel constant Mul/Add (input normalisation) into the Conv2d/Linear that
/// directly consumes it.
pub fn fold_affine_into_next_linear(g: &Graph) -> Result<Graph> {
    fuse_pairs(g, affine_in_rule)
}

fn linear_rule(_g: &Graph, p: &Node, c: &Node) -> Option<Op> {
    let (Op::Linear(a), Op::Linear(b)) = (&p.op, &c.op) else {
        return None;
    };
    // y = B (A x + a) + b = (B A) x + (B a + b)
    let (m, k) = (b.weight.shape()[0], b.weight.shape()[1]);
    let n = a.weight.shape()[1];
    if a.weight.shape()[0] != k {
        return None;
    }
    let (bw, aw) = (b.weight.data(), a.weight.data());
    let mut w = vec![0.0; m * n];
    for o in 0..m {
        for j in 0..k {
            let f = bw[o * k + j];
            if f == 0.0 {
                continue;
            }
            for i in 0..n {
                w[o * n + i] += f * aw[j * n + i];
            }
        }
    }
    let bias = (0..m)
        .map(|o| {
            let from_a: f64 = a
                .bias
                .as_ref()
                .map_or(0.0, |ab| (0..k).map(|j| bw[o * k + j] * ab[j]).sum());
            from_a + b.bias.as_ref().map_or(0.0, |bb| bb[o])
        })
        .collect();
    Some(Op::Linear(Linear {
        weight: Tensor::new(vec![m, n], w).ok()?,
        bias: Some(bias),
    }))
}

/// Merges a Linear directly followed by another Linear (no activation between) into one.
pub fn merge_linear(g: &Graph) -> Result<Graph> {
    fuse_pairs(g, linear_rule)
}

/// Drops Identity nodes and reshapes to the same shape.
pub fn remove_identities(g: &Graph) -> Result<Graph> {
    let mut out = g.empty_like();
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    map.insert(g.input(), out.input());
    for n in g.nodes() {
        let inputs = map_inputs(&map, &n.inputs, &n.name)?;
        let noop = match &n.op {
            Op::Identity => true,
            Op::Reshape { shape } => g.shape(n.inputs[0]) == shape.as_slice(),
            _ => false,
        };
        let new = if noop {
            inputs[0]
        } else {
            let name = g
                .value(n.output)
                .map_or_else(String::new, |v| v.name.clone());
            out.add_node(n.name.clone(), n.op.clone(), inputs, name)?
        };
        map.insert(n.output, new);
    }
    finish(g, out, &map)
}

/// Rescales the Conv2d/Linear feeding a polynomial activation (its only use) so that the
/// polynomial's leading coefficient becomes +-1: weights and bias times `t = |c_d|^(1/d)`,
/// coefficients `c_k / t^k`. Exact in real arithmetic. Under encryption the leading
/// coefficient is factored out of the stored values into the multiplier carried to the next
/// linear layer; a small one (swish-rg7-deg4: -0.001328 x^4) would blow the stored values up
/// by `1 / |c_d|` and cost that many bits of headroom in the base prime. After this rewrite
/// the stored values are the activation's own magnitude.
pub fn normalize_polynomial_inputs(g: &Graph) -> Result<Graph> {
    let uses = g.use_counts();
    let mut scaled: HashMap<usize, Op> = HashMap::new();
    let mut coeffs_of: HashMap<usize, Op> = HashMap::new();
    for (ci, c) in g.nodes().iter().enumerate() {
        let [v] = c.inputs.as_slice() else { continue };
        // per-channel scale and shift for the layer before, and the op after folding them
        let (k, shift, folded) = match &c.op {
            // the change of interval folded into the layer: the series on [-1, 1]
            Op::Chebyshev { lo, hi, coeffs } if (*lo, *hi) != (-1.0, 1.0) => (
                2.0 / (hi - lo),
                -(lo + hi) / (hi - lo),
                Op::Chebyshev {
                    lo: -1.0,
                    hi: 1.0,
                    coeffs: coeffs.clone(),
                },
            ),
            Op::Polynomial { coeffs } => {
                let Some(d) = coeffs.iter().rposition(|&x| x != 0.0) else {
                    continue;
                };
                let lead = coeffs[d].abs();
                if d < 2 || !lead.is_finite() || (lead - 1.0).abs() < 1e-12 {
                    continue;
                }
                let t = lead.powf(1.0 / d as f64);
                let coeffs = coeffs
                    .iter()
                    .enumerate()
                    .map(|(k, &x)| x / t.powi(k as i32))
                    .collect();
                (t, 0.0, Op::Polynomial { coeffs })
            }
            _ => continue,
        };
        let Some(pi) = g.producer(*v) else { continue };
        if uses[*v] != 1 || scaled.contains_key(&pi) {
            continue;
        }
        let p = &g.nodes()[pi];
        let Some(axis) = out_axis(g, p) else { continue };
        let Some(&n) = g.shape(p.output).get(axis) else {
            continue;
        };
        let Some(op) = scale_shift_out(&p.op, &vec![k; n], &vec![shift; n]) else {
            continue;
        };
        scaled.insert(pi, op);
        coeffs_of.insert(ci, folded);
    }
    if scaled.is_empty() {
        return Ok(g.clone());
    }
    let mut out = g.empty_like();
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    map.insert(g.input(), out.input());
    for (i, n) in g.nodes().iter().enumerate() {
        let op = match (scaled.remove(&i), coeffs_of.remove(&i)) {
            (Some(op), _) => op,
            (None, Some(op)) => op,
            (None, None) => n.op.clone(),
        };
        let inputs = map_inputs(&map, &n.inputs, &n.name)?;
        let name = g
            .value(n.output)
            .map_or_else(String::new, |v| v.name.clone());
        let new = out.add_node(n.name.clone(), op, inputs, name)?;
        map.insert(n.output, new);
    }
    finish(g, out, &map)
}

/// Applies all rewrites until the graph stops shrinking, then normalizes the inputs of
/// polynomial activations.
pub fn simplify(g: &Graph) -> Result<Graph> {
    let mut g = remove_identities(g)?;
    loop {
        let before = g.nodes().len();
        g = fuse_batchnorm(&g)?;
        g = fold_affine_into_linear(&g)?;
        g = fold_affine_into_next_linear(&g)?;
        g = merge_linear(&g)?;
        g = recognize_polynomials(&g)?;
        if g.nodes().len() >= before {
            return normalize_polynomial_inputs(&g);
        }
    }
}
