//! L1-norm filter pruning (Li et al.) on an ONNX model: the filters of one convolution with the
//! smallest L1 norms are removed, with everything that is per channel downstream of them (bias,
//! batch-norm entries, per-channel constants) up to the layers that mix channels, whose
//! matching input channels are removed too (the next convolution's input channels, or the
//! columns of a fully connected layer after a flatten).

use std::collections::{HashMap, HashSet};

use onnx_protobuf::{Message, ModelProto, NodeProto, TensorProto};

use super::tensor::{decode_tensor, float_tensor_proto};
use crate::error::{NnError, Result};
use crate::tensor::Tensor;

/// What [`prune_filters`] removed.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneReport {
    /// The pruned convolution (node name).
    pub layer: String,
    /// Its filters before pruning.
    pub channels: usize,
    /// L1 norm of every filter, by index.
    pub l1_norms: Vec<f64>,
    /// The removed filters, ascending.
    pub removed: Vec<usize>,
    /// Nodes whose input channels (or columns) were removed to match.
    pub consumers: Vec<String>,
    /// Initializers sliced.
    pub sliced: Vec<String>,
}

fn bad(msg: impl Into<String>) -> NnError {
    NnError::InvalidModel(msg.into())
}

/// Keeps the entries of `t` whose index along `axis` is not removed (in blocks of `block`
/// consecutive indices per channel: a flattened `[C, H, W]` has blocks of `H W`).
fn slice_axis(t: &Tensor, axis: usize, removed: &HashSet<usize>, block: usize) -> Result<Tensor> {
    let shape = t.shape().to_vec();
    let n = *shape
        .get(axis)
        .ok_or_else(|| bad(format!("tensor of shape {shape:?} has no axis {axis}")))?;
    if n % block != 0 {
        return Err(bad(format!(
            "axis {axis} of {n} entries is not a whole number of channels of {block}"
        )));
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let keep: Vec<usize> = (0..n).filter(|i| !removed.contains(&(i / block))).collect();
    let mut out = Vec::with_capacity(outer * keep.len() * inner);
    let d = t.data();
    for o in 0..outer {
        for &i in &keep {
            let base = (o * n + i) * inner;
            out.extend_from_slice(&d[base..base + inner]);
        }
    }
    let mut s = shape;
    s[axis] = keep.len();
    Tensor::new(s, out)
}

/// The model with the `ratio` fraction (rounded down, as the reference paper counts: 20 % of 64
/// filters removes 12; at least one, not all) of filters of the convolution named `layer`
/// removed: those of the smallest L1 norm (ties: lower index first).
pub fn prune_filters(bytes: &[u8], layer: &str, ratio: f64) -> Result<(Vec<u8>, PruneReport)> {
    if !(ratio.is_finite() && ratio > 0.0 && ratio < 1.0) {
        return Err(bad(format!("pruning ratio {ratio} must be in (0, 1)")));
    }
    let model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| NnError::MalformedProtobuf(e.to_string()))?;
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| bad("the model has no graph"))?;
    let conv = find_conv(&g.node, layer)?;
    let inits: HashMap<&str, &TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let w = decode_tensor(init(&inits, conv, 1)?)?;
    let o = w.shape()[0];
    let per = w.len() / o.max(1);
    let norms: Vec<f64> = w
        .data()
        .chunks(per.max(1))
        .map(|f| f.iter().map(|v| v.abs()).sum())
        .collect();
    // The epsilon keeps exact products (0.2 x 40 = 8) from flooring to one less.
    let k = ((ratio * o as f64 + 1e-9).floor() as usize).max(1);
    if k >= o {
        return Err(bad(format!(
            "pruning {k} of the {o} filters of '{layer}' would remove them all"
        )));
    }
    let mut order: Vec<usize> = (0..o).collect();
    order.sort_by(|&a, &b| norms[a].total_cmp(&norms[b]).then(a.cmp(&b)));
    let mut removed: Vec<usize> = order[..k].to_vec();
    removed.sort_unstable();
    prune_channels(bytes, layer, &removed).map(|(b, mut r)| {
        r.l1_norms = norms;
        (b, r)
    })
}

fn find_conv<'a>(nodes: &'a [NodeProto], layer: &str) -> Result<&'a NodeProto> {
    let n = nodes.iter().find(|n| n.name == layer).ok_or_else(|| {
        let convs: Vec<&str> = nodes
            .iter()
            .filter(|n| n.op_type == "Conv")
            .map(|n| n.name.as_str())
            .collect();
        bad(format!(
            "no node named '{layer}'; the convolutions are: {}",
            convs.join(", ")
        ))
    })?;
    if n.op_type != "Conv" {
        return Err(bad(format!(
            "'{layer}' is a {}, not a Conv: filter pruning applies to convolutions",
            n.op_type
        )));
    }
    if group(n) != 1 {
        return Err(bad(format!(
            "'{layer}' is a grouped convolution; only group = 1 is pruned"
        )));
    }
    Ok(n)
}

fn group(n: &NodeProto) -> i64 {
    n.attribute
        .iter()
        .find(|a| a.name == "group")
        .map_or(1, |a| a.i)
}

fn init<'a>(
    inits: &HashMap<&str, &'a TensorProto>,
    n: &NodeProto,
    i: usize,
) -> Result<&'a TensorProto> {
    let name = n
        .input
        .get(i)
        .ok_or_else(|| bad(format!("node '{}' has no input {i}", n.name)))?;
    inits.get(name.as_str()).copied().ok_or_else(|| {
        bad(format!(
            "input '{name}' of '{}' is not an initializer; re-export the model with its weights as initializers",
            n.name
        ))
    })
}

/// Removes the output channels `removed` of convolution `layer` and everything that matches
/// them downstream (see the module docs). Errors name what stops the propagation (a residual
/// addition with another branch, the graph output, an op that mixes channels unknown here).
pub fn prune_channels(
    bytes: &[u8],
    layer: &str,
    removed: &[usize],
) -> Result<(Vec<u8>, PruneReport)> {
    let mut model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| NnError::MalformedProtobuf(e.to_string()))?;
    let shapes: HashMap<String, Vec<usize>> = {
        let ir = super::import_model(&model)?;
        ir.values()
            .iter()
            .map(|v| (v.name.clone(), v.shape.clone()))
            .collect()
    };
    let g = model
        .graph
        .as_mut()
        .ok_or_else(|| bad("the model has no graph"))?;
    let conv = find_conv(&g.node, layer)?.clone();
    let inits: HashMap<&str, &TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let w0 = decode_tensor(init(&inits, &conv, 1)?)?;
    let channels = w0.shape()[0];
    let rm: HashSet<usize> = removed.iter().copied().collect();
    if rm.iter().any(|&c| c >= channels) || rm.is_empty() || rm.len() >= channels {
        return Err(bad(format!(
            "cannot remove channels {removed:?} of the {channels} of '{layer}'"
        )));
    }
    // (initializer, axis, block) to slice
    let mut cuts: Vec<(String, usize, usize)> = vec![(conv.input[1].clone(), 0, 1)];
    if let Some(b) = conv.input.get(2).filter(|b| !b.is_empty()) {
        cuts.push((b.clone(), 0, 1));
    }
    let mut consumers = Vec::new();
    // tracked tensors: name -> block (1 = channel axis 1 of NCHW; H W = flattened)
    let mut tracked: HashMap<String, usize> = HashMap::new();
    let out0 = conv
        .output
        .first()
        .ok_or_else(|| bad(format!("'{layer}' has no output")))?;
    tracked.insert(out0.clone(), 1);
    let outputs: HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    let inits_set: HashSet<&str> = inits.keys().copied().collect();
    let start = g.node.iter().position(|n| n.name == conv.name).unwrap_or(0);
    for n in g.node.iter().skip(start + 1) {
        let ins: Vec<Option<usize>> = n.input.iter().map(|i| tracked.get(i).copied()).collect();
        let Some(block) = ins.iter().flatten().next().copied() else {
            continue;
        };
        let what = |d: &str| bad(format!("'{}' ({}): {d}", n.name, n.op_type));
        let out = || -> Result<String> {
            n.output
                .first()
                .cloned()
                .ok_or_else(|| bad(format!("'{}' has no output", n.name)))
        };
        match n.op_type.as_str() {
            "BatchNormalization" => {
                for i in 1..5 {
                    cuts.push((n.input[i].clone(), 0, 1));
                }
                tracked.insert(out()?, 1);
            }
            "Relu" | "Sigmoid" | "Tanh" | "Erf" | "Identity" | "AveragePool" | "MaxPool"
            | "GlobalAveragePool" | "Neg" => {
                tracked.insert(out()?, block);
            }
            "Mul" | "Add" | "Sub" | "Div" | "Pow" => {
                // both operands carry the pruned channels, or the other is a constant that is
                // a scalar or per channel
                for (i, name) in n.input.iter().enumerate() {
                    if ins[i].is_some() {
                        continue;
                    }
                    if !inits_set.contains(name.as_str()) {
                        return Err(what(
                            "adds or multiplies the pruned channels with another computed value (a residual branch?); prune both branches together",
                        ));
                    }
                    let t = decode_tensor(inits[name.as_str()])?;
                    if t.len() > 1 {
                        if block != 1 {
                            return Err(what("per-element constant after a flatten"));
                        }
                        // broadcast from the right against [N, C, H, W]: channel axis is
                        // rank - 3 for a constant of rank >= 3
                        let r = t.shape().len();
                        if r < 3 || t.shape()[r - 3] != channels {
                            return Err(what(&format!(
                                "constant '{name}' of shape {:?} is not per channel",
                                t.shape()
                            )));
                        }
                        cuts.push((name.clone(), r - 3, 1));
                    }
                }
                tracked.insert(out()?, block);
            }
            "Flatten" => {
                let s = shapes
                    .get(&n.input[0])
                    .ok_or_else(|| what("input shape unknown"))?;
                let hw: usize = s.iter().skip(2).product();
                tracked.insert(out()?, hw.max(1) * block);
            }
            "Conv" => {
                if group(n) != 1 {
                    return Err(what("grouped convolution"));
                }
                if ins.get(1).copied().flatten().is_some() {
                    return Err(what("the pruned channels reach a weight input"));
                }
                cuts.push((n.input[1].clone(), 1, 1));
                consumers.push(n.name.clone());
            }
            "Gemm" => {
                if ins.first().copied().flatten().is_none() {
                    return Err(what("the pruned channels reach a weight input"));
                }
                let trans_a = n.attribute.iter().any(|a| a.name == "transA" && a.i != 0);
                if trans_a {
                    return Err(what("transA = 1"));
                }
                let trans_b = n.attribute.iter().any(|a| a.name == "transB" && a.i != 0);
                cuts.push((n.input[1].clone(), usize::from(trans_b), block));
                consumers.push(n.name.clone());
            }
            other => {
                return Err(what(&format!(
                    "pruned channels reach a {other}, which this pruning does not follow"
                )));
            }
        }
    }
    if let Some(o) = tracked.keys().find(|t| outputs.contains(t.as_str())) {
        return Err(bad(format!(
            "the pruned channels reach the graph output '{o}': prune a layer with a channel-mixing layer after it"
        )));
    }
    // every sliced initializer must be used only by the nodes sliced here
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for n in &g.node {
        for i in &n.input {
            *uses.entry(i.as_str()).or_default() += 1;
        }
    }
    for (name, _, _) in &cuts {
        if uses.get(name.as_str()).copied().unwrap_or(0) > 1 {
            return Err(bad(format!(
                "initializer '{name}' is shared by several nodes; pruning it would change the others"
            )));
        }
    }
    let mut sliced = Vec::with_capacity(cuts.len());
    for (name, axis, block) in &cuts {
        let pos = g
            .initializer
            .iter()
            .position(|t| &t.name == name)
            .ok_or_else(|| bad(format!("initializer '{name}' not found")))?;
        let t = decode_tensor(&g.initializer[pos])?;
        let s = slice_axis(&t, *axis, &rm, *block)?;
        let values: Vec<f32> = s.data().iter().map(|&v| v as f32).collect();
        g.initializer[pos] = float_tensor_proto(name, s.shape(), &values);
        sliced.push(name.clone());
    }
    // shapes of the tracked tensors changed: drop their stale value_info
    g.value_info.retain(|v| !tracked.contains_key(&v.name));
    let mut removed = removed.to_vec();
    removed.sort_unstable();
    removed.dedup();
    let out = model
        .write_to_bytes()
        .map_err(|e| bad(format!("cannot serialize the pruned model: {e}")))?;
    Ok((
        out,
        PruneReport {
            layer: layer.to_string(),
            channels,
            l1_norms: Vec::new(),
            removed,
            consumers,
            sliced,
        },
    ))
}
