//! Recognition of polynomial activations exported as element-wise Mul/Add/Pow chains.

use std::collections::HashMap;

use super::map_inputs;
use crate::error::Result;
use crate::ir::poly::{
    CHEBYSHEV_MAX_DEGREE, chebyshev_add, chebyshev_mul, chebyshev_to_power_in_x, polynomial_op,
};
use crate::ir::{Graph, Op, ValueId};

/// Highest degree a recognised polynomial may have.
pub const MAX_DEGREE: usize = 64;

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

/// A Chebyshev series in `t = s x + o` (`x` the root): `sum_k c_k T_k(t)`.
#[derive(Debug, Clone)]
struct Cheb {
    s: f64,
    o: f64,
    c: Vec<f64>,
    /// The base is the root itself (no affine map of the root started the chain).
    implicit: bool,
}

impl Cheb {
    fn same_base(&self, other: &Cheb) -> bool {
        self.s == other.s && self.o == other.o
    }

    /// The root itself as the variable (`t = x`).
    const IDENTITY: Cheb = Cheb {
        s: 1.0,
        o: 0.0,
        c: Vec::new(),
        implicit: true,
    };

    /// A power-basis polynomial in `x` in this base: `p((t - o) / s)` (Horner).
    fn rebase(&self, p: &[f64]) -> Cheb {
        let u = [-self.o / self.s, 1.0 / self.s];
        let mut acc = vec![0.0];
        for &c in p.iter().rev() {
            acc = chebyshev_add(&chebyshev_mul(&acc, &u), &[c]);
        }
        self.with(acc)
    }

    fn with(&self, c: Vec<f64>) -> Cheb {
        Cheb {
            s: self.s,
            o: self.o,
            c,
            implicit: self.implicit,
        }
    }

    /// `(lo, hi, coefficients)` with `lo < hi` (a negative `s` flips the odd terms).
    fn interval(&self) -> (f64, f64, Vec<f64>) {
        let (a, b) = ((-1.0 - self.o) / self.s, (1.0 - self.o) / self.s);
        if a < b {
            (a, b, self.c.clone())
        } else {
            let c = self
                .c
                .iter()
                .enumerate()
                .map(|(k, &v)| if k % 2 == 1 { -v } else { v })
                .collect();
            (b, a, c)
        }
    }
}

/// A value as a polynomial of `root`: in powers of x (up to [`MAX_DEGREE`]) and, where the chain
/// starts with an affine map `t = s x + o` of the root (as the Chebyshev series
/// `henn approximate` writes do), as a Chebyshev series in `t` (up to
/// [`CHEBYSHEV_MAX_DEGREE`]).
#[derive(Debug, Clone)]
struct P {
    root: ValueId,
    coeffs: Option<Vec<f64>>,
    cheb: Option<Cheb>,
    ops: usize,
}

impl P {
    fn degree(&self) -> usize {
        match (&self.cheb, &self.coeffs) {
            (Some(c), _) => c.c.len().saturating_sub(1),
            (None, Some(p)) => p.len().saturating_sub(1),
            (None, None) => 0,
        }
    }

    fn affine(&self) -> Option<(f64, f64)> {
        match self.coeffs.as_deref() {
            Some([a0]) => Some((0.0, *a0)),
            Some([a0, a1]) => Some((*a1, *a0)),
            _ => None,
        }
    }

    /// This value's Chebyshev series in `base`'s variable, when it can be had.
    fn cheb_in(&self, base: &Cheb) -> Option<Cheb> {
        match (&self.cheb, &self.coeffs) {
            (Some(c), _) if c.same_base(base) => Some(c.clone()),
            (Some(_), _) => None,
            (None, Some(p)) => Some(base.rebase(p)),
            (None, None) => None,
        }
    }
}

/// `(a, b)` combined by `f` in a common Chebyshev base: either's, or for a product of two
/// values without one the root itself (a chain whose affine start was folded into the layer
/// before it computes in the root directly).
fn combine(a: &P, b: &P, f: impl Fn(&[f64], &[f64]) -> Vec<f64>, product: bool) -> Option<Cheb> {
    let base = match (a.cheb.as_ref().or(b.cheb.as_ref()), product) {
        (Some(b), _) => b,
        (None, true) => &Cheb::IDENTITY,
        (None, false) => return None,
    };
    let (ca, cb) = (a.cheb_in(base)?, b.cheb_in(base)?);
    let c = f(&ca.c, &cb.c);
    (c.len() <= CHEBYSHEV_MAX_DEGREE + 1).then(|| base.with(c))
}

fn scale(c: &[f64], k: f64) -> Vec<f64> {
    trim(c.iter().map(|v| v * k).collect())
}

/// The node a recognized polynomial becomes.
fn poly_op(p: &P) -> Op {
    let norm = |c: &[f64]| c.iter().map(|v| v.abs()).sum::<f64>();
    match (&p.cheb, &p.coeffs) {
        // in the root itself, the series only where it is the better-conditioned form
        (Some(ch), Some(c)) if ch.implicit && norm(c) <= norm(&ch.c) => {
            Op::Polynomial { coeffs: c.clone() }
        }
        (Some(ch), power) => {
            let (lo, hi, c) = ch.interval();
            let sound =
                lo.is_finite() && hi.is_finite() && lo < hi && c.iter().all(|v| v.is_finite());
            match (sound, power) {
                (true, _) => polynomial_op(&c, lo, hi),
                (false, Some(p)) => Op::Polynomial { coeffs: p.clone() },
                (false, None) => Op::Identity,
            }
        }
        (None, Some(c)) => Op::Polynomial { coeffs: c.clone() },
        (None, None) => Op::Identity,
    }
}

/// Replaces every maximal single-input element-wise subgraph of Mul/Add/Pow/Polynomial nodes
/// with scalar constants whose result has degree >= 2 by one polynomial node applied to the
/// subgraph's input: [`Op::Polynomial`], or [`Op::Chebyshev`] for a Chebyshev series above
/// degree [`POWER_MAX_DEGREE`](crate::ir::poly::POWER_MAX_DEGREE) (see [`polynomial_op`]).
pub fn recognize_polynomials(g: &Graph) -> Result<Graph> {
    let mut polys: HashMap<ValueId, P> = HashMap::new();
    let get = |polys: &HashMap<ValueId, P>, v: ValueId| {
        polys.get(&v).cloned().unwrap_or(P {
            root: v,
            coeffs: Some(vec![0.0, 1.0]),
            cheb: None,
            ops: 0,
        })
    };
    for n in g.nodes() {
        let out_shape = g.shape(n.output);
        if n.inputs.iter().any(|&i| g.shape(i) != out_shape) {
            continue;
        }
        let scalar = |t: &crate::tensor::Tensor| (t.len() == 1).then(|| t.data()[0]);
        let p: Option<P> = match (&n.op, n.inputs.as_slice()) {
            (Op::AddConst(c), [x]) => scalar(c).map(|c| {
                let p = get(&polys, *x);
                let coeffs = p.coeffs.as_ref().map(|q| add(q, &[c]));
                let cheb = match (&p.cheb, p.affine()) {
                    (Some(ch), _) => Some(ch.with(chebyshev_add(&ch.c, &[c]))),
                    // an affine map of the root (`x * s + o`) fixes the Chebyshev variable
                    (None, Some((s, o))) if p.ops <= 1 && s != 0.0 && s.is_finite() => Some(Cheb {
                        s,
                        o: o + c,
                        c: vec![0.0, 1.0],
                        implicit: false,
                    }),
                    (None, _) => None,
                };
                P { coeffs, cheb, ..p }
            }),
            (Op::MulConst(c), [x]) => scalar(c).map(|c| {
                let p = get(&polys, *x);
                P {
                    coeffs: p.coeffs.as_ref().map(|q| scale(q, c)),
                    cheb: p.cheb.as_ref().map(|ch| ch.with(scale(&ch.c, c))),
                    ..p
                }
            }),
            (Op::Pow { exponent }, [x]) => {
                let p = get(&polys, *x);
                let cheb = p.cheb.as_ref().and_then(|ch| {
                    let mut out = vec![1.0];
                    for _ in 0..*exponent {
                        out = chebyshev_mul(&out, &ch.c);
                        if out.len() > CHEBYSHEV_MAX_DEGREE + 1 {
                            return None;
                        }
                    }
                    Some(ch.with(out))
                });
                let coeffs = p.coeffs.as_ref().and_then(|q| pow(q, *exponent));
                Some(P { coeffs, cheb, ..p })
            }
            (Op::Polynomial { coeffs: outer }, [x]) => {
                let p = get(&polys, *x);
                let cheb = p.cheb.as_ref().and_then(|ch| {
                    let mut acc = vec![0.0];
                    for &c in outer.iter().rev() {
                        acc = chebyshev_add(&chebyshev_mul(&acc, &ch.c), &[c]);
                    }
                    (acc.len() <= CHEBYSHEV_MAX_DEGREE + 1).then(|| ch.with(acc))
                });
                let coeffs = p.coeffs.as_ref().and_then(|q| compose(outer, q));
                Some(P { coeffs, cheb, ..p })
            }
            (Op::Chebyshev { lo, hi, coeffs }, [x]) => {
                let p = get(&polys, *x);
                // only directly on the root (a Chebyshev series of a polynomial is not kept)
                (p.ops == 0).then(|| {
                    let (s, o) = (2.0 / (hi - lo), -(lo + hi) / (hi - lo));
                    let c = trim(coeffs.clone());
                    let power = (c.len() <= MAX_DEGREE + 1)
                        .then(|| trim(chebyshev_to_power_in_x(&c, *lo, *hi)));
                    P {
                        coeffs: power,
                        cheb: Some(Cheb {
                            s,
                            o,
                            c,
                            implicit: false,
                        }),
                        ..p
                    }
                })
            }
            (Op::Identity, [x]) => Some(get(&polys, *x)),
            (Op::Add | Op::Mul, [a, b]) => {
                let (pa, pb) = (get(&polys, *a), get(&polys, *b));
                if pa.root != pb.root {
                    None
                } else {
                    let is_add = n.op == Op::Add;
                    let coeffs = match (&pa.coeffs, &pb.coeffs) {
                        (Some(x), Some(y)) if is_add => Some(add(x, y)),
                        (Some(x), Some(y)) => mul(x, y),
                        _ => None,
                    };
                    let cheb = if is_add {
                        combine(&pa, &pb, chebyshev_add, false)
                    } else {
                        combine(&pa, &pb, chebyshev_mul, true)
                    };
                    Some(P {
                        root: pa.root,
                        coeffs,
                        cheb,
                        ops: pa.ops + pb.ops,
                    })
                }
            }
            _ => None,
        };
        if let Some(p) = p
            && (p.coeffs.as_ref().is_some_and(|c| c.len() <= MAX_DEGREE + 1) || p.cheb.is_some())
        {
            polys.insert(
                n.output,
                P {
                    ops: p.ops + 1,
                    ..p
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
        .filter(|(_, p)| p.degree() >= 2 && p.ops >= 2)
        .filter(|(v, p)| {
            // A lone Polynomial node is already what we would produce.
            !(p.ops == 1
                && g.producer(*v)
                    .and_then(|i| g.nodes().get(i))
                    .is_some_and(|n| matches!(n.op, Op::Polynomial { .. } | Op::Chebyshev { .. })))
        })
        .filter(|(_, p)| !matches!(poly_op(p), Op::Identity))
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
            Some(p) => (poly_op(p), vec![p.root]),
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
