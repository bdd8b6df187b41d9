//! Static shape inference for [`Op`]s.

use super::Op;
use crate::tensor::{broadcast_shapes, numel};

fn pooled(
    len: usize,
    pad_a: usize,
    pad_b: usize,
    k: usize,
    s: usize,
    what: &str,
) -> Result<usize, String> {
    let padded = len + pad_a + pad_b;
    if k == 0 || s == 0 {
        return Err(format!("{what}: kernel and stride must be positive"));
    }
    if padded < k {
        return Err(format!(
            "{what}: kernel size {k} is larger than the padded input size {padded}"
        ));
    }
    Ok((padded - k) / s + 1)
}

/// Output shape of `op` applied to inputs of the given shapes, or a description of the mismatch.
pub fn infer_shape(op: &Op, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
    if inputs.len() != op.arity() {
        return Err(format!(
            "{} takes {} inputs, got {}",
            op.kind(),
            op.arity(),
            inputs.len()
        ));
    }
    let x = inputs[0];
    match op {
        Op::Conv2d(c) => {
            let w = c.weight.shape();
            if x.len() != 4 || w.len() != 4 {
                return Err(format!(
                    "Conv2d needs a 4-D NCHW input and 4-D kernel, got input {x:?}, kernel {w:?}"
                ));
            }
            if x[1] != w[1] {
                return Err(format!(
                    "Conv2d input has {} channels but the kernel expects {} (kernel {w:?})",
                    x[1], w[1]
                ));
            }
            if let Some(b) = &c.bias
                && b.len() != w[0]
            {
                return Err(format!(
                    "Conv2d bias has {} entries for {} output channels",
                    b.len(),
                    w[0]
                ));
            }
            let h = pooled(
                x[2],
                c.pads[0],
                c.pads[2],
                w[2],
                c.stride[0],
                "Conv2d height",
            )?;
            let wd = pooled(
                x[3],
                c.pads[1],
                c.pads[3],
                w[3],
                c.stride[1],
                "Conv2d width",
            )?;
            Ok(vec![x[0], w[0], h, wd])
        }
        Op::BatchNorm(b) => {
            let c = b.gamma.len();
            if x.len() < 2
                || x[1] != c
                || b.beta.len() != c
                || b.mean.len() != c
                || b.var.len() != c
            {
                return Err(format!(
                    "BatchNorm with {c} channels does not fit input {x:?} (or parameter lengths differ)"
                ));
            }
            Ok(x.to_vec())
        }
        Op::Linear(l) => {
            let w = l.weight.shape();
            if w.len() != 2 {
                return Err(format!("Linear weight must be 2-D, got {w:?}"));
            }
            match x.last() {
                Some(&k) if k == w[1] => {}
                _ => {
                    return Err(format!(
                        "Linear expects last axis {} but input is {x:?}",
                        w[1]
                    ));
                }
            }
            if let Some(b) = &l.bias
                && b.len() != w[0]
            {
                return Err(format!(
                    "Linear bias has {} entries for {} outputs",
                    b.len(),
                    w[0]
                ));
            }
            let mut s = x.to_vec();
            if let Some(last) = s.last_mut() {
                *last = w[0];
            }
            Ok(s)
        }
        Op::Reshape { shape } => {
            if numel(shape) != numel(x) {
                return Err(format!("cannot reshape {x:?} to {shape:?}"));
            }
            Ok(shape.clone())
        }
        Op::AvgPool(p) => {
            if x.len() != 4 {
                return Err(format!("AvgPool needs a 4-D NCHW input, got {x:?}"));
            }
            let h = pooled(
                x[2],
                p.pads[0],
                p.pads[2],
                p.kernel[0],
                p.stride[0],
                "AvgPool height",
            )?;
            let w = pooled(
                x[3],
                p.pads[1],
                p.pads[3],
                p.kernel[1],
                p.stride[1],
                "AvgPool width",
            )?;
            if p.pads[0] >= p.kernel[0]
                || p.pads[2] >= p.kernel[0]
                || p.pads[1] >= p.kernel[1]
                || p.pads[3] >= p.kernel[1]
            {
                return Err("AvgPool padding must be smaller than the kernel".into());
            }
            Ok(vec![x[0], x[1], h, w])
        }
        Op::GlobalAvgPool => {
            if x.len() < 3 {
                return Err(format!(
                    "GlobalAvgPool needs an N,C,spatial... input, got {x:?}"
                ));
            }
            let mut s = x.to_vec();
            for d in s.iter_mut().skip(2) {
                *d = 1;
            }
            Ok(s)
        }
        Op::ReduceSum { axes, keepdims } => {
            if axes.iter().any(|&a| a >= x.len()) {
                return Err(format!(
                    "ReduceSum axes {axes:?} out of range for input {x:?}"
                ));
            }
            Ok(x.iter()
                .enumerate()
                .filter_map(|(i, &d)| {
                    if axes.contains(&i) {
                        keepdims.then_some(1)
                    } else {
                        Some(d)
                    }
                })
                .collect())
        }
        Op::Add | Op::Mul => broadcast_shapes(x, inputs[1]).ok_or_else(|| {
            format!(
                "{} of shapes {x:?} and {:?} cannot broadcast",
                op.kind(),
                inputs[1]
            )
        }),
        Op::AddConst(c) | Op::MulConst(c) => {
            let s = broadcast_shapes(x, c.shape()).ok_or_else(|| {
                format!(
                    "{} constant of shape {:?} does not broadcast to {x:?}",
                    op.kind(),
                    c.shape()
                )
            })?;
            Ok(s)
        }
        Op::Pow { .. }
        | Op::Activation(_)
        | Op::Polynomial { .. }
        | Op::Chebyshev { .. }
        | Op::Identity => Ok(x.to_vec()),
    }
}
