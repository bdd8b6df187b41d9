//! Edits of an ONNX model in place of re-export: activations replaced by polynomials written
//! as Mul/Add chains (Horner's rule) that the importer recognizes as one polynomial again.

use std::collections::{HashMap, HashSet};

use onnx_protobuf::{Message, ModelProto, NodeProto};

use super::tensor::float_tensor_proto;
use crate::error::{NnError, Result};

/// One replacement: the tensor `output` is recomputed as `sum_k coeffs[k] * input^k`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolyReplacement {
    /// The activation's input tensor.
    pub input: String,
    /// The activation's output tensor (its producer is removed).
    pub output: String,
    /// Coefficients in powers of the input, lowest first (degree >= 1).
    pub coeffs: Vec<f64>,
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
/// removed, a Horner chain of Mul/Add nodes with float32 scalar initializers computes the
/// polynomial from `input` into `output`, and nodes whose outputs no longer feed anything
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
        let base = format!("{}__poly", r.output);
        let c = |k: usize| format!("{base}_c{k}");
        for (k, &v) in r.coeffs.iter().enumerate() {
            inits.push(float_tensor_proto(&c(k), &[], &[v as f32]));
        }
        // t = c_d x + c_{d-1}; then t = t x + c_k down to k = 0
        let mut t = format!("{base}_m{d}");
        nodes.push(node("Mul", t.clone(), [&r.input, &c(d)], t.clone()));
        for k in (0..d).rev() {
            if k + 1 < d {
                let m = format!("{base}_m{k}");
                nodes.push(node("Mul", m.clone(), [&t, &r.input], m.clone()));
                t = m;
            }
            let out = if k == 0 {
                r.output.clone()
            } else {
                format!("{base}_a{k}")
            };
            nodes.push(node(
                "Add",
                format!("{base}_a{k}"),
                [&t, &c(k)],
                out.clone(),
            ));
            t = out;
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
