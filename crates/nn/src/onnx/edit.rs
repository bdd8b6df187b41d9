//! Edits of an ONNX model in place of re-export: activations replaced by polynomials written
//! as Mul/Add/Sub chains (Clenshaw's recurrence for a Chebyshev series) that the importer
//! recognizes as one polynomial again.

use std::collections::{HashMap, HashSet};

use onnx_protobuf::{Message, ModelProto, NodeProto};

use super::tensor::float_tensor_proto;
use crate::error::{NnError, Result};

/// One replacement: the tensor `output` is recomputed as the Chebyshev series
/// `sum_k coeffs[k] T_k(t)` of `t = (input - mid) / half` on the interval `[lo, hi]`
/// (`mid`, `half` its centre and half-width).
///
/// The file stores the Chebyshev coefficients, not powers of the input: they stay of the size
/// of the function, where power coefficients of a high-degree fit cancel by many orders of
/// magnitude and float32 initializers could not hold them (a degree-24 ReLU fit on [-16, 16]
/// in powers is off by 3e-3 after rounding its coefficients to float32).
#[derive(Debug, Clone, PartialEq)]
pub struct PolyReplacement {
    /// The activation's input tensor.
    pub input: String,
    /// The activation's output tensor (its producer is removed).
    pub output: String,
    /// Chebyshev coefficients `c_0..c_d` (degree d >= 1).
    pub coeffs: Vec<f64>,
    /// The interval `[lo, hi]` mapped onto `[-1, 1]`.
    pub interval: (f64, f64),
}

fn node(op: &str, name: String, inputs: [&str; 2], output: String) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.to_string();
    n.name = name;
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = vec![output];
    n
}

/// The serialized model with every replacement applied: the producer of each `output` is
/// removed, Clenshaw's recurrence (`b_k = c_k + 2 t b_(k+1) - b_(k+2)`, `y = c_0 + t b_1 - b_2`)
/// as Mul/Add/Sub nodes with float32 scalar initializers computes the series from `input`
/// into `output`, and nodes whose outputs no longer feed anything
/// are removed (e.g. the Sigmoid of a fused SiLU). The graph stays topologically sorted (the
/// chain takes the removed node's place).
pub fn replace_with_polynomials(bytes: &[u8], reps: &[PolyReplacement]) -> Result<Vec<u8>> {
    let mut model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| NnError::MalformedProtobuf(e.to_string()))?;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| NnError::InvalidModel("the model has no graph".into()))?;
    let by_out: HashMap<&str, &PolyReplacement> =
        reps.iter().map(|r| (r.output.as_str(), r)).collect();
    let mut found: HashSet<&str> = HashSet::new();
    let mut nodes: Vec<NodeProto> = Vec::with_capacity(graph.node.len() + reps.len() * 8);
    let mut inits = Vec::new();
    for n in graph.node.drain(..) {
        let Some(r) = n
            .output
            .iter()
            .find_map(|o| by_out.get(o.as_str()).copied())
        else {
            nodes.push(n);
            continue;
        };
        if n.output.len() != 1 {
            return Err(NnError::InvalidModel(format!(
                "node '{}' producing '{}' has {} outputs; only single-output activations are replaced",
                n.name,
                r.output,
                n.output.len()
            )));
        }
        found.insert(r.output.as_str());
        let d = r.coeffs.len().saturating_sub(1);
        if d == 0 {
            return Err(NnError::InvalidModel(format!(
                "the polynomial for '{}' has degree 0",
                r.output
            )));
        }
        let (lo, hi) = r.interval;
        let half = (hi - lo) / 2.0;
        if !(lo.is_finite() && hi.is_finite() && half > 0.0) {
            return Err(NnError::InvalidModel(format!(
                "the polynomial for '{}' has the empty or infinite interval [{lo}, {hi}]",
                r.output
            )));
        }
        let base = format!("{}__poly", r.output);
        let c = |k: usize| format!("{base}_c{k}");
        for (k, &v) in r.coeffs.iter().enumerate() {
            inits.push(float_tensor_proto(&c(k), &[], &[v as f32]));
        }
        let (s_name, o_name, two) = (
            format!("{base}_scale"),
            format!("{base}_offset"),
            format!("{base}_two"),
        );
        inits.push(float_tensor_proto(&s_name, &[], &[(1.0 / half) as f32]));
        inits.push(float_tensor_proto(
            &o_name,
            &[],
            &[(-(lo + hi) / 2.0 / half) as f32],
        ));
        inits.push(float_tensor_proto(&two, &[], &[2.0]));
        // t = input / half - mid / half, t2 = 2 t
        let (ts, t, t2) = (
            format!("{base}_ts"),
            format!("{base}_t"),
            format!("{base}_t2"),
        );
        nodes.push(node("Mul", ts.clone(), [&r.input, &s_name], ts.clone()));
        nodes.push(node("Add", t.clone(), [&ts, &o_name], t.clone()));
        nodes.push(node("Mul", t2.clone(), [&t, &two], t2.clone()));
        // b[k] for k = 1..=d (b[d] = c_d, an initializer), b[d + 1] = 0
        let b_name = |k: usize| if k == d { c(d) } else { format!("{base}_b{k}") };
        // b_k = c_k + 2 t b_(k+1) - b_(k+2) for k = d-1..1; y = c_0 + t b_1 - b_2 (k = 0)
        for k in (0..d).rev() {
            let m = format!("{base}_p{k}");
            let factor = if k == 0 { &t } else { &t2 };
            nodes.push(node("Mul", m.clone(), [factor, &b_name(k + 1)], m.clone()));
            let diff = if k + 2 <= d {
                let sname = format!("{base}_s{k}");
                nodes.push(node(
                    "Sub",
                    sname.clone(),
                    [&m, &b_name(k + 2)],
                    sname.clone(),
                ));
                sname
            } else {
                m
            };
            let (name, out) = if k == 0 {
                (format!("{base}_out"), r.output.clone())
            } else {
                (b_name(k), b_name(k))
            };
            nodes.push(node("Add", name, [&diff, &c(k)], out));
        }
    }
    if let Some(missing) = reps.iter().find(|r| !found.contains(r.output.as_str())) {
        return Err(NnError::InvalidModel(format!(
            "no node produces '{}' to replace",
            missing.output
        )));
    }
    // dead-node removal, last to first
    let outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    loop {
        let used: HashSet<&str> = nodes
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .collect();
        let before = nodes.len();
        let keep: Vec<bool> = nodes
            .iter()
            .map(|n| {
                n.output
                    .iter()
                    .any(|o| used.contains(o.as_str()) || outputs.contains(o))
            })
            .collect();
        let mut it = keep.into_iter();
        nodes.retain(|_| it.next().unwrap_or(true));
        if nodes.len() == before {
            break;
        }
    }
    graph.node = nodes;
    graph.initializer.extend(inits);
    model
        .write_to_bytes()
        .map_err(|e| NnError::InvalidModel(format!("cannot serialize the edited model: {e}")))
}
