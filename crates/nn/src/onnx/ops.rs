//! The op registry: one importer function per ONNX op type.

use super::{Importer, NodeCtx, Val};
use crate::error::{NnError, Result};
use crate::ir::{Activation, AvgPool, BatchNorm, Conv2d, Linear, Op, ValueId};
use crate::reference::eval_op;
use crate::tensor::{Tensor, numel};

/// An op importer: reads the node through the context, emits IR nodes, returns the values of
/// the node's outputs (in order).
pub(crate) type Handler = fn(&mut Importer, &NodeCtx<'_>) -> Result<Vec<Val>>;

/// The registry, one entry per ONNX op type.
pub(crate) const REGISTRY: &[(&str, Handler)] = &[
    ("Add", add),
    ("AveragePool", average_pool),
    ("BatchNormalization", batch_norm),
    ("Cast", cast),
    ("Concat", concat),
    ("Constant", constant),
    ("Conv", conv),
    ("Div", div),
    ("Dropout", identity),
    ("Erf", erf),
    ("Flatten", flatten),
    ("Gather", gather),
    ("Gelu", gelu),
    ("Gemm", gemm),
    ("GlobalAveragePool", global_average_pool),
    ("Identity", identity),
    ("MatMul", matmul),
    ("Mul", mul),
    ("Pow", pow),
    ("ReduceMean", reduce_mean),
    ("ReduceSum", reduce_sum),
    ("Relu", relu),
    ("Reshape", reshape),
    ("Shape", shape),
    ("Sigmoid", sigmoid),
    ("Squeeze", squeeze),
    ("Sub", sub),
    ("Tanh", tanh),
    ("Unsqueeze", unsqueeze),
];

fn one(v: Val) -> Result<Vec<Val>> {
    Ok(vec![v])
}

fn usizes(ctx: &NodeCtx<'_>, attr: &str, v: &[i64]) -> Result<Vec<usize>> {
    v.iter()
        .map(|&x| usize::try_from(x).map_err(|_| ctx.bad_attr(attr, format!("negative value {x}"))))
        .collect()
}

fn pair(ctx: &NodeCtx<'_>, attr: &str, v: Option<Vec<i64>>, default: usize) -> Result<[usize; 2]> {
    match v {
        None => Ok([default, default]),
        Some(v) => match usizes(ctx, attr, &v)?.as_slice() {
            [a, b] => Ok([*a, *b]),
            other => Err(ctx.bad_attr(attr, format!("expected 2 values (2-D), got {other:?}"))),
        },
    }
}

fn pads4(ctx: &NodeCtx<'_>) -> Result<[usize; 4]> {
    if let Some(p) = ctx.attr_string("auto_pad")?
        && p != "NOTSET"
        && p != "VALID"
    {
        return Err(ctx.bad_attr(
            "auto_pad",
            format!("'{p}' is not supported; use NOTSET (explicit pads) or VALID"),
        ));
    }
    match ctx.attr_ints("pads")? {
        None => Ok([0; 4]),
        Some(v) => match usizes(ctx, "pads", &v)?.as_slice() {
            [a, b, c, d] => Ok([*a, *b, *c, *d]),
            other => Err(ctx.bad_attr("pads", format!("expected 4 values for 2-D, got {other:?}"))),
        },
    }
}

fn ones(ctx: &NodeCtx<'_>, attr: &str) -> Result<()> {
    if let Some(d) = ctx.attr_ints(attr)?
        && d.iter().any(|&x| x != 1)
    {
        return Err(ctx.bad_attr(attr, format!("{d:?} is not supported; only 1 is")));
    }
    Ok(())
}

/// Normalises an axis (possibly negative) against a rank.
fn axis(ctx: &NodeCtx<'_>, a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if v < 0 || v >= r {
        return Err(ctx.bad_attr("axis", format!("axis {a} out of range for rank {rank}")));
    }
    Ok(v as usize)
}

fn conv(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&[
        "kernel_shape",
        "strides",
        "pads",
        "dilations",
        "group",
        "auto_pad",
    ])?;
    if ctx.attr_int("group", 1)? != 1 {
        return Err(ctx.bad_attr("group", "only group = 1 is supported"));
    }
    ones(ctx, "dilations")?;
    let x = imp.dyn_input(ctx, 0)?;
    let weight = imp.const_input(ctx, 1, "convolution kernel")?;
    let bias = imp
        .opt_const_input(ctx, 2, "convolution bias")?
        .map(Tensor::into_data);
    if weight.shape().len() != 4 {
        return Err(ctx.unsupported(format!(
            "only 2-D convolution is supported; kernel shape is {:?}",
            weight.shape()
        )));
    }
    if let Some(k) = ctx.attr_ints("kernel_shape")?
        && (k.len() != 2
            || k[0] as usize != weight.shape()[2]
            || k[1] as usize != weight.shape()[3])
    {
        return Err(ctx.shape_err(format!(
            "kernel_shape {k:?} does not match kernel {:?}",
            weight.shape()
        )));
    }
    let op = Op::Conv2d(Conv2d {
        weight,
        bias,
        stride: pair(ctx, "strides", ctx.attr_ints("strides")?, 1)?,
        pads: pads4(ctx)?,
    });
    one(Val::Dyn(imp.emit(ctx, 0, op, vec![x])?))
}

fn batch_norm(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&["epsilon", "momentum", "training_mode", "spatial"])?;
    if ctx.attr_int("training_mode", 0)? != 0 {
        return Err(ctx.bad_attr("training_mode", "only inference mode (0) is supported"));
    }
    if ctx.attr_int("spatial", 1)? != 1 {
        return Err(ctx.bad_attr("spatial", "only spatial = 1 is supported"));
    }
    let x = imp.dyn_input(ctx, 0)?;
    let op = Op::BatchNorm(BatchNorm {
        gamma: imp.const_input(ctx, 1, "batch-norm scale")?.into_data(),
        beta: imp.const_input(ctx, 2, "batch-norm bias")?.into_data(),
        mean: imp
            .const_input(ctx, 3, "batch-norm running mean")?
            .into_data(),
        var: imp
            .const_input(ctx, 4, "batch-norm running variance")?
            .into_data(),
        eps: ctx.attr_float("epsilon", 1e-5)?,
    });
    one(Val::Dyn(imp.emit(ctx, 0, op, vec![x])?))
}

fn transpose2(t: &Tensor) -> Result<Tensor> {
    let (r, c) = (t.shape()[0], t.shape()[1]);
    let d = t.data();
    let mut out = Vec::with_capacity(r * c);
    for j in 0..c {
        for i in 0..r {
            out.push(d[i * c + j]);
        }
    }
    Tensor::new(vec![c, r], out)
}

fn gemm(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&["alpha", "beta", "transA", "transB", "broadcast"])?;
    if ctx.attr_int("transA", 0)? != 0 {
        return Err(ctx.bad_attr("transA", "only transA = 0 is supported"));
    }
    let alpha = ctx.attr_float("alpha", 1.0)?;
    let beta = ctx.attr_float("beta", 1.0)?;
    let a = imp.dyn_input(ctx, 0)?;
    let b = imp.const_input(ctx, 1, "Gemm weight B")?;
    if b.shape().len() != 2 {
        return Err(ctx.shape_err(format!("Gemm B must be 2-D, got {:?}", b.shape())));
    }
    if imp.graph.shape(a).len() != 2 {
        return Err(ctx.shape_err(format!(
            "Gemm input A must be 2-D, got {:?}",
            imp.graph.shape(a)
        )));
    }
    let w = if ctx.attr_int("transB", 0)? != 0 {
        b
    } else {
        transpose2(&b)?
    };
    let n = w.shape()[0];
    let w = w.map(|v| alpha * v);
    let bias = match imp.opt_const_input(ctx, 2, "Gemm bias C")? {
        None => None,
        Some(c) => {
            let target = Tensor::zeros(vec![n]);
            let bc = target
                .broadcast_with(&c, |_, cv| beta * cv)
                .ok()
                .filter(|t| t.shape() == [n]);
            match bc {
                Some(t) => Some(t.into_data()),
                None => {
                    // C of shape [1, n] (or [m=1, n]).
                    if numel(c.shape()) == n {
                        Some(c.data().iter().map(|v| beta * v).collect())
                    } else {
                        return Err(ctx.shape_err(format!(
                            "Gemm bias C of shape {:?} does not broadcast to [{n}]",
                            c.shape()
                        )));
                    }
                }
            }
        }
    };
    let op = Op::Linear(Linear { weight: w, bias });
    one(Val::Dyn(imp.emit(ctx, 0, op, vec![a])?))
}

fn matmul(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&[])?;
    let a = imp.dyn_input(ctx, 0)?;
    let b = imp.const_input(ctx, 1, "MatMul right operand (weight)")?;
    if b.shape().len() != 2 {
        return Err(ctx.unsupported(format!("MatMul weight must be 2-D, got {:?}", b.shape())));
    }
    let op = Op::Linear(Linear {
        weight: transpose2(&b)?,
        bias: None,
    });
    one(Val::Dyn(imp.emit(ctx, 0, op, vec![a])?))
}

fn flatten(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&["axis"])?;
    let x = imp.input(ctx, 0)?;
    let shape = val_shape(imp, &x);
    let ax = ctx.attr_int("axis", 1)?;
    let ax = if ax == shape.len() as i64 {
        shape.len()
    } else {
        axis(ctx, ax, shape.len())?
    };
    let target = vec![numel(&shape[..ax]), numel(&shape[ax..])];
    reshape_to(imp, ctx, x, target)
}

fn val_shape(imp: &Importer, v: &Val) -> Vec<usize> {
    match v {
        Val::Dyn(id) => imp.graph.shape(*id).to_vec(),
        Val::Const(t) => t.shape().to_vec(),
    }
}

fn reshape_to(
    imp: &mut Importer,
    ctx: &NodeCtx<'_>,
    x: Val,
    target: Vec<usize>,
) -> Result<Vec<Val>> {
    match x {
        Val::Const(t) => one(Val::Const(
            t.reshape(target)
                .map_err(|e| ctx.shape_err(e.to_string()))?,
        )),
        Val::Dyn(id) => {
            if imp.graph.shape(id) == target.as_slice() {
                return one(Val::Dyn(id));
            }
            one(Val::Dyn(imp.emit(
                ctx,
                0,
                Op::Reshape { shape: target },
                vec![id],
            )?))
        }
    }
}

fn reshape(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&["allowzero"])?;
    let allowzero = ctx.attr_int("allowzero", 0)? != 0;
    let x = imp.input(ctx, 0)?;
    let spec = imp.const_input(ctx, 1, "target shape")?;
    let in_shape = val_shape(imp, &x);
    let mut target = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.data().iter().enumerate() {
        let d = d as i64;
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                target.push(1);
            }
            0 if !allowzero => target.push(
                *in_shape
                    .get(i)
                    .ok_or_else(|| ctx.shape_err("0 in target shape beyond input rank"))?,
            ),
            d if d >= 0 => target.push(d as usize),
            _ => return Err(ctx.shape_err(format!("invalid target shape {:?}", spec.data()))),
        }
    }
    if let Some(i) = infer {
        let known = numel(&target);
        if known == 0 || !numel(&in_shape).is_multiple_of(known) {
            return Err(ctx.shape_err(format!("cannot reshape {in_shape:?} to {:?}", spec.data())));
        }
        target[i] = numel(&in_shape) / known;
    }
    if numel(&target) != numel(&in_shape) {
        return Err(ctx.shape_err(format!("cannot reshape {in_shape:?} to {target:?}")));
    }
    reshape_to(imp, ctx, x, target)
}

fn squeeze_axes(imp: &Importer, ctx: &NodeCtx<'_>) -> Result<Option<Vec<i64>>> {
    if let Some(a) = ctx.attr_ints("axes")? {
        return Ok(Some(a));
    }
    Ok(imp
        .opt_const_input(ctx, 1, "axes")?
        .map(|t| t.data().iter().map(|&v| v as i64).collect()))
}

fn squeeze(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&["axes"])?;
    let x = imp.input(ctx, 0)?;
    let shape = val_shape(imp, &x);
    let axes = match squeeze_axes(imp, ctx)? {
        Some(a) => a
            .iter()
            .map(|&a| axis(ctx, a, shape.len()))
            .collect::<Result<Vec<_>>>()?,
        None => (0..shape.len()).filter(|&i| shape[i] == 1).collect(),
    };
    if axes.iter().any(|&a| shape[a] != 1) {
        return Err(ctx.shape_err(format!("cannot squeeze axes {axes:?} of {shape:?}")));
    }
    let target = shape
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .collect();
    reshape_to(imp, ctx, x, target)
}

fn unsqueeze(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&["axes"])?;
    let x = imp.input(ctx, 0)?;
    let shape = val_shape(imp, &x);
    let axes = squeeze_axes(imp, ctx)?.ok_or_else(|| ctx.unsupported("Unsqueeze needs axes"))?;
    let rank = shape.len() + axes.len();
    let mut axes = axes
        .iter()
        .map(|&a| axis(ctx, a, rank))
        .collect::<Result<Vec<_>>>()?;
    axes.sort_unstable();
    let mut target = shape.clone();
    for a in axes {
        if a > target.len() {
            return Err(ctx.shape_err("Unsqueeze axis out of range"));
        }
        target.insert(a, 1);
    }
    reshape_to(imp, ctx, x, target)
}

fn average_pool(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&[
        "kernel_shape",
        "strides",
        "pads",
        "count_include_pad",
        "ceil_mode",
        "auto_pad",
        "dilations",
    ])?;
    if ctx.attr_int("ceil_mode", 0)? != 0 {
        return Err(ctx.bad_attr("ceil_mode", "only ceil_mode = 0 is supported"));
    }
    ones(ctx, "dilations")?;
    let x = imp.dyn_input(ctx, 0)?;
    let kernel = pair(ctx, "kernel_shape", ctx.attr_ints("kernel_shape")?, 0)?;
    if kernel.contains(&0) {
        return Err(ctx.bad_attr(
            "kernel_shape",
            "missing or zero; a 2-D kernel_shape is required",
        ));
    }
    let op = Op::AvgPool(AvgPool {
        kernel,
        stride: pair(ctx, "strides", ctx.attr_ints("strides")?, 1)?,
        pads: pads4(ctx)?,
        count_include_pad: ctx.attr_int("count_include_pad", 0)? != 0,
    });
    one(Val::Dyn(imp.emit(ctx, 0, op, vec![x])?))
}

fn global_average_pool(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&[])?;
    let x = imp.dyn_input(ctx, 0)?;
    one(Val::Dyn(imp.emit(ctx, 0, Op::GlobalAvgPool, vec![x])?))
}

/// Reduction axes from the attribute (opset < 13 for ReduceSum, < 18 for others) or input 1.
fn reduce_axes(imp: &Importer, ctx: &NodeCtx<'_>, rank: usize) -> Result<Vec<usize>> {
    let raw = match ctx.attr_ints("axes")? {
        Some(a) => Some(a),
        None => imp
            .opt_const_input(ctx, 1, "reduction axes")?
            .map(|t| t.data().iter().map(|&v| v as i64).collect()),
    };
    let mut axes = match raw {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|&a| axis(ctx, a, rank))
            .collect::<Result<Vec<_>>>()?,
        _ => {
            if ctx.attr_int("noop_with_empty_axes", 0)? != 0 {
                Vec::new()
            } else {
                (0..rank).collect()
            }
        }
    };
    axes.sort_unstable();
    axes.dedup();
    Ok(axes)
}

fn reduce(imp: &mut Importer, ctx: &NodeCtx<'_>, mean: bool) -> Result<Vec<Val>> {
    ctx.check_attrs(&["axes", "keepdims", "noop_with_empty_axes"])?;
    let x = imp.dyn_input(ctx, 0)?;
    let shape = imp.graph.shape(x).to_vec();
    let axes = reduce_axes(imp, ctx, shape.len())?;
    if axes.is_empty() {
        return one(Val::Dyn(x));
    }
    let keepdims = ctx.attr_int("keepdims", 1)? != 0;
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let s = imp.emit(ctx, 0, Op::ReduceSum { axes, keepdims }, vec![x])?;
    if mean {
        let m = imp.emit(
            ctx,
            1,
            Op::MulConst(Tensor::scalar(1.0 / count as f64)),
            vec![s],
        )?;
        return one(Val::Dyn(m));
    }
    one(Val::Dyn(s))
}

fn reduce_sum(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    reduce(imp, ctx, false)
}

fn reduce_mean(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    reduce(imp, ctx, true)
}

#[derive(Clone, Copy, PartialEq)]
enum Bin {
    Add,
    Sub,
    Mul,
    Div,
}

fn fold2(ctx: &NodeCtx<'_>, a: &Tensor, b: &Tensor, f: impl Fn(f64, f64) -> f64) -> Result<Tensor> {
    a.broadcast_with(b, f)
        .map_err(|e| ctx.shape_err(e.to_string()))
}

fn binary(imp: &mut Importer, ctx: &NodeCtx<'_>, kind: Bin) -> Result<Vec<Val>> {
    ctx.check_attrs(&["broadcast", "axis"])?;
    if ctx.attr("axis").is_some() {
        return Err(ctx.bad_attr(
            "axis",
            "legacy (opset < 7) broadcasting with axis is not supported",
        ));
    }
    let a = imp.input(ctx, 0)?;
    let b = imp.input(ctx, 1)?;
    let v = match (a, b) {
        (Val::Const(a), Val::Const(b)) => Val::Const(match kind {
            Bin::Add => fold2(ctx, &a, &b, |x, y| x + y)?,
            Bin::Sub => fold2(ctx, &a, &b, |x, y| x - y)?,
            Bin::Mul => fold2(ctx, &a, &b, |x, y| x * y)?,
            Bin::Div => fold2(ctx, &a, &b, |x, y| x / y)?,
        }),
        (Val::Dyn(x), Val::Const(c)) => {
            let op = match kind {
                Bin::Add => Op::AddConst(c),
                Bin::Sub => Op::AddConst(c.map(|v| -v)),
                Bin::Mul => Op::MulConst(c),
                Bin::Div => {
                    if c.data().contains(&0.0) {
                        return Err(ctx.unsupported("division by a constant containing zero"));
                    }
                    Op::MulConst(c.map(|v| 1.0 / v))
                }
            };
            Val::Dyn(imp.emit(ctx, 0, op, vec![x])?)
        }
        (Val::Const(c), Val::Dyn(x)) => match kind {
            Bin::Add => Val::Dyn(imp.emit(ctx, 0, Op::AddConst(c), vec![x])?),
            Bin::Mul => Val::Dyn(imp.emit(ctx, 0, Op::MulConst(c), vec![x])?),
            Bin::Sub => {
                let neg = imp.emit(ctx, 1, Op::MulConst(Tensor::scalar(-1.0)), vec![x])?;
                Val::Dyn(imp.emit(ctx, 0, Op::AddConst(c), vec![neg])?)
            }
            Bin::Div => {
                return Err(ctx.unsupported(
                    "division by a computed value is not supported (only by constants)",
                ));
            }
        },
        (Val::Dyn(x), Val::Dyn(y)) => match kind {
            Bin::Add => Val::Dyn(imp.emit(ctx, 0, Op::Add, vec![x, y])?),
            Bin::Mul => Val::Dyn(silu_or_mul(imp, ctx, x, y)?),
            Bin::Sub => {
                let neg = imp.emit(ctx, 1, Op::MulConst(Tensor::scalar(-1.0)), vec![y])?;
                Val::Dyn(imp.emit(ctx, 0, Op::Add, vec![x, neg])?)
            }
            Bin::Div => {
                return Err(ctx.unsupported(
                    "division by a computed value is not supported (only by constants)",
                ));
            }
        },
    };
    one(v)
}

/// `x * sigmoid(x)` becomes a single SiLU node; any other product stays a `Mul`.
fn silu_or_mul(imp: &mut Importer, ctx: &NodeCtx<'_>, x: ValueId, y: ValueId) -> Result<ValueId> {
    let is_sigmoid_of = |s: ValueId, arg: ValueId| {
        imp.graph
            .producer(s)
            .and_then(|i| imp.graph.nodes().get(i))
            .is_some_and(|n| {
                n.op == Op::Activation(Activation::Sigmoid) && n.inputs.first() == Some(&arg)
            })
    };
    if is_sigmoid_of(y, x) || is_sigmoid_of(x, y) {
        let arg = if is_sigmoid_of(y, x) { x } else { y };
        return imp.emit(ctx, 0, Op::Activation(Activation::Silu), vec![arg]);
    }
    imp.emit(ctx, 0, Op::Mul, vec![x, y])
}

fn add(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    binary(imp, ctx, Bin::Add)
}
fn sub(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    binary(imp, ctx, Bin::Sub)
}
fn mul(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    binary(imp, ctx, Bin::Mul)
}
fn div(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    binary(imp, ctx, Bin::Div)
}

fn pow(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&[])?;
    let e = imp.const_input(ctx, 1, "exponent")?;
    let base = imp.input(ctx, 0)?;
    if let Val::Const(b) = &base {
        return one(Val::Const(fold2(ctx, b, &e, f64::powf)?));
    }
    let exp = e
        .as_uniform()
        .filter(|v| v.fract() == 0.0 && (1.0..=64.0).contains(v))
        .ok_or_else(|| {
            ctx.unsupported(format!(
                "only a constant integer exponent in 1..=64 is supported, got {:?}",
                e.data()
            ))
        })?;
    let x = imp.dyn_input(ctx, 0)?;
    let shape = imp.graph.shape(x).to_vec();
    if crate::tensor::broadcast_shapes(&shape, e.shape()).as_deref() != Some(shape.as_slice()) {
        return Err(ctx.shape_err("exponent tensor broadcasts the input to a larger shape"));
    }
    one(Val::Dyn(imp.emit(
        ctx,
        0,
        Op::Pow {
            exponent: exp as u32,
        },
        vec![x],
    )?))
}

fn unary(imp: &mut Importer, ctx: &NodeCtx<'_>, a: Activation) -> Result<Vec<Val>> {
    match imp.input(ctx, 0)? {
        Val::Const(t) => one(Val::Const(eval_op(&Op::Activation(a), &[&t])?)),
        Val::Dyn(x) => one(Val::Dyn(imp.emit(ctx, 0, Op::Activation(a), vec![x])?)),
    }
}

fn relu(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&[])?;
    unary(imp, ctx, Activation::Relu)
}
fn sigmoid(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&[])?;
    unary(imp, ctx, Activation::Sigmoid)
}
fn tanh(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&[])?;
    unary(imp, ctx, Activation::Tanh)
}
fn erf(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&[])?;
    unary(imp, ctx, Activation::Erf)
}
fn gelu(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&["approximate"])?;
    if let Some(a) = ctx.attr_string("approximate")?
        && a != "none"
    {
        return Err(ctx.bad_attr(
            "approximate",
            format!("'{a}' is not supported; only 'none' (exact GELU)"),
        ));
    }
    unary(imp, ctx, Activation::Gelu)
}

fn identity(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    // Identity and inference-mode Dropout: the output aliases the input.
    ctx.check_attrs(&["ratio", "seed"])?;
    if ctx.op_type() == "Dropout" {
        if let Some(Val::Const(t)) = imp.opt_input(ctx, 2)?
            && t.data().iter().any(|&v| v != 0.0)
        {
            return Err(ctx.unsupported("Dropout in training mode is not supported"));
        }
    } else {
        ctx.check_attrs(&[])?;
    }
    one(imp.input(ctx, 0)?)
}

fn cast(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&["to", "saturate"])?;
    let to = ctx.attr_int("to", 1)?;
    match imp.input(ctx, 0)? {
        Val::Const(t) => one(Val::Const(match to {
            6 | 7 => t.map(f64::trunc),
            _ => t,
        })),
        Val::Dyn(x) if to == 1 || to == 11 => one(Val::Dyn(x)),
        Val::Dyn(_) => Err(ctx.unsupported(format!(
            "cast of the data to type {to}; only float casts are supported"
        ))),
    }
}

fn constant(_imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&[
        "value",
        "value_float",
        "value_floats",
        "value_int",
        "value_ints",
    ])?;
    let a = ctx
        .node
        .attribute
        .first()
        .ok_or_else(|| ctx.unsupported("Constant without a value attribute"))?;
    let t = match a.name.as_str() {
        "value" => {
            let t =
                a.t.as_ref()
                    .ok_or_else(|| ctx.bad_attr("value", "missing tensor"))?;
            let mut t = t.clone();
            if t.name.is_empty() {
                t.name = ctx.name.clone();
            }
            super::tensor::decode_tensor(&t)?
        }
        "value_float" => Tensor::scalar(f64::from(a.f)),
        "value_floats" => Tensor::vector(a.floats.iter().map(|&v| f64::from(v)).collect()),
        "value_int" => Tensor::scalar(a.i as f64),
        _ => Tensor::vector(a.ints.iter().map(|&v| v as f64).collect()),
    };
    one(Val::Const(t))
}

fn shape(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&["start", "end"])?;
    let x = imp.input(ctx, 0)?;
    let s = val_shape(imp, &x);
    let r = s.len() as i64;
    let clamp = |v: i64| -> usize { (if v < 0 { v + r } else { v }).clamp(0, r) as usize };
    let start = clamp(ctx.attr_int("start", 0)?);
    let end = clamp(ctx.attr_int("end", r)?);
    let dims: Vec<f64> = s
        .get(start..end.max(start))
        .unwrap_or(&[])
        .iter()
        .map(|&d| d as f64)
        .collect();
    one(Val::Const(Tensor::vector(dims)))
}

fn gather(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&["axis"])?;
    let data = imp.const_input(
        ctx,
        0,
        "Gather data (only constant gathers, e.g. of shapes, are supported)",
    )?;
    let idx = imp.const_input(ctx, 1, "Gather indices")?;
    if data.shape().len() != 1 || ctx.attr_int("axis", 0)? != 0 {
        return Err(ctx.unsupported("only gathers from 1-D constants along axis 0 are supported"));
    }
    let n = data.len() as i64;
    let mut out = Vec::with_capacity(idx.len());
    for &i in idx.data() {
        let i = i as i64;
        let j = if i < 0 { i + n } else { i };
        let v = usize::try_from(j)
            .ok()
            .and_then(|j| data.data().get(j).copied())
            .ok_or_else(|| {
                ctx.shape_err(format!("Gather index {i} out of range for {n} elements"))
            })?;
        out.push(v);
    }
    one(Val::Const(Tensor::new(idx.shape().to_vec(), out)?))
}

fn concat(imp: &mut Importer, ctx: &NodeCtx<'_>) -> Result<Vec<Val>> {
    ctx.check_attrs(&["axis"])?;
    let mut out = Vec::new();
    for i in 0..ctx.node.input.len() {
        let t = imp.const_input(
            ctx,
            i,
            "Concat operand (only constant concatenations, e.g. of shapes, are supported)",
        )?;
        if t.shape().len() > 1 {
            return Err(ctx.unsupported("only concatenation of 1-D constants is supported"));
        }
        out.extend_from_slice(t.data());
    }
    one(Val::Const(Tensor::vector(out)))
}

impl std::fmt::Debug for NodeCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCtx")
            .field("name", &self.name)
            .field("op_type", &self.node.op_type)
            .finish()
    }
}

#[allow(dead_code)]
fn _assert_error_is_send(e: NnError) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}
