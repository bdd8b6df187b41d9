//! Recognition of polynomial activations exported as element-wise Mul/Add/Pow chains.

use std::collections::HashMap;

use super::map_inputs;
use crate::error::Result;
use crate::ir::{Graph, Op, ValueId};

/// Highest degree a recognised polynomial may have.
pub const MAX_DEGREE: usize = 64;

#[derive(Debug, Clone)]
struct P {
    root: ValueId,
    coeffs: Vec<f64>,
    ops: usize,
}

fn trim(mut c: Vec<f64>) -> Vec<f64> {
    while c.len() > 1 && c.last() == Some(&0.0) {
        c.pop();
    }
    c
}

fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; a.len().max(b.len())];
    for (i, v) in a.iter().enumerate() {
        out[i] += v;
    }
    for (i, v) in b.iter().enumerate() {
        out[i] += v;
    }
    trim(out)
}

fn mul(a: &[f64], b: &[f64]) -> Option<Vec<f64>> {
    if a.len() + b.len() > MAX_DEGREE + 2 {
        return None;
    }
    let mut out = vec![0.0; a.len() + b.len() - 1];
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            out[i + j] += x * y;
        }
    }
    Some(trim(out))
}

fn pow(a: &[f64], e: u32) -> Option<Vec<f64>> {
    let mut out = vec![1.0];
    for _ in 0..e {
        out = mul(&out, a)?;
    }
    Some(out)
}

/// `outer(inner(x))`.
fn compose(outer: &[f64], inner: &[f64]) -> Option<Vec<f64>> {
    let mut acc = vec![0.0];
    for &c in outer.iter().rev() {
        acc = add(&mul(&acc, inner)?, &[c]);
    }
    Some(acc)
}

/// Replaces every maximal single-input element-wise subgraph of Mul/Add/Pow/Polynomial nodes
/// with scalar constants whose result has degree >= 2 by one [`Op::Polynomial`] node applied to
/// the subgraph's input.
pub fn recognize_polynomials(g: &Graph) -> Result<Graph> {
    let mut polys: HashMap<ValueId, P> = HashMap::new();
    let get = |polys: &HashMap<ValueId, P>, v: ValueId| {
        polys.get(&v).cloned().unwrap_or(P {
            root: v,
            coeffs: vec![0.0, 1.0],
            ops: 0,
        })
    };
    for n in g.nodes() {
        let out_shape = g.shape(n.output);
        if n.inputs.iter().any(|&i| g.shape(i) != out_shape) {
            continue;
        }
        let scalar = |t: &crate::tensor::Tensor| (t.len() == 1).then(|| t.data()[0]);
        let p = match (&n.op, n.inputs.as_slice()) {
            (Op::AddConst(c), [x]) => scalar(c).map(|c| {
                let p = get(&polys, *x);
                (p.root, add(&p.coeffs, &[c]), p.ops)
            }),
            (Op::MulConst(c), [x]) => scalar(c).map(|c| {
                let p = get(&polys, *x);
                (
                    p.root,
                    trim(p.coeffs.iter().map(|v| v * c).collect()),
                    p.ops,
                )
            }),
            (Op::Pow { exponent }, [x]) => {
                let p = get(&polys, *x);
                pow(&p.coeffs, *exponent).map(|c| (p.root, c, p.ops))
            }
            (Op::Polynomial { coeffs }, [x]) => {
                let p = get(&polys, *x);
                compose(coeffs, &p.coeffs).map(|c| (p.root, c, p.ops))
            }
            (Op::Identity, [x]) => {
                let p = get(&polys, *x);
                Some((p.root, p.coeffs, p.ops))
            }
            (Op::Add | Op::Mul, [a, b]) => {
                let (pa, pb) = (get(&polys, *a), get(&polys, *b));
                if pa.root != pb.root {
                    None
                } else {
                    let c = if n.op == Op::Add {
                        Some(add(&pa.coeffs, &pb.coeffs))
                    } else {
                        mul(&pa.coeffs, &pb.coeffs)
                    };
                    c.map(|c| (pa.root, c, pa.ops + pb.ops))
                }
            }
            _ => None,
        };
        if let Some((root, coeffs, ops)) = p
            && coeffs.len() <= MAX_DEGREE + 1
        {
            polys.insert(
                n.output,
                P {
                    root,
                    coeffs,
                    ops: ops + 1,
                },
            );
        }
    }
    // A value is materialised as a Polynomial node if something outside its polynomial region
    // uses it (a non-polynomial node, a node with another root, or the graph output).
    let mut boundary: HashMap<ValueId, bool> = HashMap::new();
    for n in g.nodes() {
        let inside_root = polys.get(&n.output).map(|p| p.root);
        for &i in &n.inputs {
            if let Some(p) = polys.get(&i)
                && inside_root != Some(p.root)
            {
                boundary.insert(i, true);
            }
        }
    }
    if polys.contains_key(&g.output()) {
        boundary.insert(g.output(), true);
    }
    let replace: HashMap<ValueId, P> = boundary
        .keys()
        .filter_map(|v| polys.get(v).map(|p| (*v, p.clone())))
        // Degree >= 2 from at least two ops: a lone `x * x` or `Pow` stays as it is.
        .filter(|(_, p)| p.coeffs.len() >= 3 && p.ops >= 2)
        .filter(|(v, p)| {
            // A lone Polynomial node is already what we would produce.
            !(p.ops == 1
                && g.producer(*v)
                    .and_then(|i| g.nodes().get(i))
                    .is_some_and(|n| matches!(n.op, Op::Polynomial { .. })))
        })
        .collect();
    if replace.is_empty() {
        return Ok(g.clone());
    }
    let mut out = g.empty_like();
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    map.insert(g.input(), out.input());
    for n in g.nodes() {
        let name = g
            .value(n.output)
            .map_or_else(String::new, |v| v.name.clone());
        let (op, inputs) = match replace.get(&n.output) {
            Some(p) => (
                Op::Polynomial {
                    coeffs: p.coeffs.clone(),
                },
                vec![p.root],
            ),
            None => (n.op.clone(), n.inputs.clone()),
        };
        // Inputs of interior nodes may have been skipped; only materialise what is reachable.
        let Ok(inputs) = map_inputs(&map, &inputs, &n.name) else {
            continue;
        };
        let new = out.add_node(n.name.clone(), op, inputs, name)?;
        map.insert(n.output, new);
    }
    super::finish(g, out, &map)
}
