//! The intermediate representation: a typed graph of tensor ops with static shapes.
//!
//! Nothing here is cryptographic. A [`Graph`] has one input value, one output value and a list
//! of [`Node`]s in topological order; every node produces exactly one value. Values are
//! identified by [`ValueId`] (an index into [`Graph::values`]) and carry a name and a static
//! shape (NCHW for images, batch size 1). Constant operands (weights, biases, scalars) live
//! inside the [`Op`]; node inputs are always computed values.

pub mod poly;
mod shape;

use std::collections::HashMap;
use std::fmt;

use crate::error::{NnError, Result};
use crate::tensor::Tensor;

pub use shape::infer_shape;

/// Index of a value in [`Graph::values`].
pub type ValueId = usize;

/// A named value with a static shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// Name (the ONNX tensor name when imported).
    pub name: String,
    /// Static shape.
    pub shape: Vec<usize>,
}

/// 2-D convolution, groups = 1, dilation 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    /// Kernel, shape `[out_channels, in_channels, kh, kw]`.
    pub weight: Tensor,
    /// Optional bias, one per output channel.
    pub bias: Option<Vec<f64>>,
    /// Strides `[sh, sw]`.
    pub stride: [usize; 2],
    /// Zero padding `[top, left, bottom, right]` (the ONNX `pads` order).
    pub pads: [usize; 4],
}

/// Inference-mode batch normalisation over channel axis 1:
/// `y = gamma * (x - mean) / sqrt(var + eps) + beta`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    /// Scale.
    pub gamma: Vec<f64>,
    /// Shift.
    pub beta: Vec<f64>,
    /// Running mean.
    pub mean: Vec<f64>,
    /// Running variance.
    pub var: Vec<f64>,
    /// Epsilon.
    pub eps: f64,
}

impl BatchNorm {
    /// Per-channel `(scale, shift)` with `y = scale * x + shift`.
    pub fn affine(&self) -> (Vec<f64>, Vec<f64>) {
        let scale: Vec<f64> = self
            .gamma
            .iter()
            .zip(&self.var)
            .map(|(g, v)| g / (v + self.eps).sqrt())
            .collect();
        let shift = self
            .beta
            .iter()
            .zip(&self.mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        (scale, shift)
    }
}

/// Fully connected layer over the last axis: `y = x W^T + b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    /// Weight, shape `[out_features, in_features]`.
    pub weight: Tensor,
    /// Optional bias, `out_features` long.
    pub bias: Option<Vec<f64>>,
}

/// Average pooling over H and W.
#[derive(Debug, Clone, PartialEq)]
pub struct AvgPool {
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Strides `[sh, sw]`.
    pub stride: [usize; 2],
    /// Padding `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Whether padded zeros count in the divisor.
    pub count_include_pad: bool,
}

/// Non-polynomial activations; they must be approximated by polynomials before encrypted
/// evaluation (see [`Op::needs_polynomial_approximation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `x * sigmoid(x)`.
    Silu,
    /// `x * Phi(x)` (exact, erf based).
    Gelu,
    /// The error function (appears in PyTorch's exported GELU).
    Erf,
    /// Hyperbolic tangent.
    Tanh,
}

/// An operation. Constant operands are stored in the op.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Op {
    /// 2-D convolution.
    Conv2d(Conv2d),
    /// Batch normalisation (inference mode).
    BatchNorm(BatchNorm),
    /// Fully connected layer (ONNX Gemm, MatMul with a constant right operand).
    Linear(Linear),
    /// Reshape to a static shape (ONNX Flatten, Reshape).
    Reshape {
        /// Output shape.
        shape: Vec<usize>,
    },
    /// Average pooling.
    AvgPool(AvgPool),
    /// Mean over H and W, keeping them as size-1 axes.
    GlobalAvgPool,
    /// Sum over axes (sum pooling when the axes are H and W).
    ReduceSum {
        /// Axes summed over (non-negative, sorted).
        axes: Vec<usize>,
        /// Whether the summed axes stay as size-1 axes.
        keepdims: bool,
    },
    /// Element-wise sum of two values (with broadcasting), e.g. a residual connection.
    Add,
    /// Adds a constant (broadcast to the input).
    AddConst(Tensor),
    /// Element-wise product of two values (with broadcasting), e.g. `x * x`.
    Mul,
    /// Multiplies by a constant (broadcast to the input).
    MulConst(Tensor),
    /// Integer power.
    Pow {
        /// The exponent.
        exponent: u32,
    },
    /// A non-polynomial activation.
    Activation(Activation),
    /// Element-wise polynomial `sum_i coeffs[i] * x^i`.
    Polynomial {
        /// Coefficients, lowest degree first.
        coeffs: Vec<f64>,
    },
    /// Element-wise polynomial in the Chebyshev basis on `[lo, hi]`:
    /// `sum_k coeffs[k] T_k(t)`, `t = (2x - lo - hi) / (hi - lo)` (high-degree fits; evaluated
    /// by the baby-step giant-step Chebyshev circuit, stable where powers of x are not; see
    /// [`poly::polynomial_op`]).
    Chebyshev {
        /// Lower end of the interval.
        lo: f64,
        /// Upper end of the interval.
        hi: f64,
        /// Chebyshev coefficients, lowest degree first.
        coeffs: Vec<f64>,
    },
    /// Copies its input.
    Identity,
}

impl Op {
    /// Number of value inputs the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Add | Op::Mul => 2,
            Op::Conv2d(_)
            | Op::BatchNorm(_)
            | Op::Linear(_)
            | Op::Reshape { .. }
            | Op::AvgPool(_)
            | Op::GlobalAvgPool
            | Op::ReduceSum { .. }
            | Op::AddConst(_)
            | Op::MulConst(_)
            | Op::Pow { .. }
            | Op::Activation(_)
            | Op::Polynomial { .. }
            | Op::Chebyshev { .. }
            | Op::Identity => 1,
        }
    }

    /// Short name of the op kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv2d(_) => "Conv2d",
            Op::BatchNorm(_) => "BatchNorm",
            Op::Linear(_) => "Linear",
            Op::Reshape { .. } => "Reshape",
            Op::AvgPool(_) => "AvgPool",
            Op::GlobalAvgPool => "GlobalAvgPool",
            Op::ReduceSum { .. } => "ReduceSum",
            Op::Add => "Add",
            Op::AddConst(_) => "AddConst",
            Op::Mul => "Mul",
            Op::MulConst(_) => "MulConst",
            Op::Pow { .. } => "Pow",
            Op::Activation(Activation::Relu) => "Relu",
            Op::Activation(Activation::Sigmoid) => "Sigmoid",
            Op::Activation(Activation::Silu) => "SiLU",
            Op::Activation(Activation::Gelu) => "Gelu",
            Op::Activation(Activation::Erf) => "Erf",
            Op::Activation(Activation::Tanh) => "Tanh",
            Op::Polynomial { .. } => "Polynomial",
            Op::Chebyshev { .. } => "Chebyshev",
            Op::Identity => "Identity",
        }
    }

    /// Whether the op is not a polynomial and must be replaced by a polynomial approximation
    /// before it can be evaluated on ciphertexts.
    pub fn needs_polynomial_approximation(&self) -> bool {
        matches!(self, Op::Activation(_))
    }

    /// Whether the op is element-wise on a single input (so it commutes with reshapes).
    pub fn is_elementwise_unary(&self) -> bool {
        matches!(
            self,
            Op::Pow { .. }
                | Op::Activation(_)
                | Op::Polynomial { .. }
                | Op::Chebyshev { .. }
                | Op::Identity
        ) || matches!(self, Op::AddConst(c) | Op::MulConst(c) if c.len() == 1)
    }

    /// Number of stored parameters (weights, biases, constants).
    pub fn param_count(&self) -> usize {
        match self {
            Op::Conv2d(c) => c.weight.len() + c.bias.as_ref().map_or(0, Vec::len),
            // Trainable parameters (gamma, beta), as PyTorch counts them; the running
            // statistics are buffers.
            Op::BatchNorm(b) => b.gamma.len() * 2,
            Op::Linear(l) => l.weight.len() + l.bias.as_ref().map_or(0, Vec::len),
            Op::AddConst(t) | Op::MulConst(t) => t.len(),
            Op::Polynomial { coeffs } => coeffs.len(),
            Op::Chebyshev { coeffs, .. } => coeffs.len() + 2,
            Op::Reshape { .. }
            | Op::AvgPool(_)
            | Op::GlobalAvgPool
            | Op::ReduceSum { .. }
            | Op::Add
            | Op::Mul
            | Op::Pow { .. }
            | Op::Activation(_)
            | Op::Identity => 0,
        }
    }

    /// Appends a canonical encoding of the op (kind tag, then every field; floats by their
    /// bits) to `e`.
    fn encode(&self, e: &mut Canonical) {
        match self {
            Op::Conv2d(c) => {
                e.tag(1);
                e.tensor(&c.weight);
                e.opt_vec(&c.bias);
                e.usizes(&c.stride);
                e.usizes(&c.pads);
            }
            Op::BatchNorm(b) => {
                e.tag(2);
                e.f64s(&b.gamma);
                e.f64s(&b.beta);
                e.f64s(&b.mean);
                e.f64s(&b.var);
                e.f64(b.eps);
            }
            Op::Linear(l) => {
                e.tag(3);
                e.tensor(&l.weight);
                e.opt_vec(&l.bias);
            }
            Op::Reshape { shape } => {
                e.tag(4);
                e.usizes(shape);
            }
            Op::AvgPool(p) => {
                e.tag(5);
                e.usizes(&p.kernel);
                e.usizes(&p.stride);
                e.usizes(&p.pads);
                e.tag(u8::from(p.count_include_pad));
            }
            Op::GlobalAvgPool => e.tag(6),
            Op::ReduceSum { axes, keepdims } => {
                e.tag(7);
                e.usizes(axes);
                e.tag(u8::from(*keepdims));
            }
            Op::Add => e.tag(8),
            Op::AddConst(t) => {
                e.tag(9);
                e.tensor(t);
            }
            Op::Mul => e.tag(10),
            Op::MulConst(t) => {
                e.tag(11);
                e.tensor(t);
            }
            Op::Pow { exponent } => {
                e.tag(12);
                e.u64(u64::from(*exponent));
            }
            Op::Activation(a) => {
                e.tag(13);
                e.tag(match a {
                    Activation::Relu => 1,
                    Activation::Sigmoid => 2,
                    Activation::Silu => 3,
                    Activation::Gelu => 4,
                    Activation::Erf => 5,
                    Activation::Tanh => 6,
                });
            }
            Op::Polynomial { coeffs } => {
                e.tag(14);
                e.f64s(coeffs);
            }
            Op::Identity => e.tag(15),
            Op::Chebyshev { lo, hi, coeffs } => {
                e.tag(16);
                e.f64(*lo);
                e.f64(*hi);
                e.f64s(coeffs);
            }
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Conv2d(c) => write!(
                f,
                "Conv2d(kernel={:?}, stride={:?}, pads={:?}, bias={})",
                c.weight.shape(),
                c.stride,
                c.pads,
                c.bias.is_some()
            ),
            Op::BatchNorm(b) => write!(
                f,
                "BatchNorm(channels={}, eps={:.3e})",
                b.gamma.len(),
                b.eps
            ),
            Op::Linear(l) => write!(
                f,
                "Linear({}x{}, bias={})",
                l.weight.shape().first().copied().unwrap_or(0),
                l.weight.shape().get(1).copied().unwrap_or(0),
                l.bias.is_some()
            ),
            Op::Reshape { shape } => write!(f, "Reshape({shape:?})"),
            Op::AvgPool(p) => write!(
                f,
                "AvgPool(kernel={:?}, stride={:?}, pads={:?}, count_include_pad={})",
                p.kernel, p.stride, p.pads, p.count_include_pad
            ),
            Op::ReduceSum { axes, keepdims } => {
                write!(f, "ReduceSum(axes={axes:?}, keepdims={keepdims})")
            }
            Op::AddConst(t) => match t.as_uniform() {
                Some(v) if t.len() == 1 => write!(f, "AddConst({v})"),
                _ => write!(f, "AddConst(shape={:?})", t.shape()),
            },
            Op::MulConst(t) => match t.as_uniform() {
                Some(v) if t.len() == 1 => write!(f, "MulConst({v})"),
                _ => write!(f, "MulConst(shape={:?})", t.shape()),
            },
            Op::Pow { exponent } => write!(f, "Pow({exponent})"),
            Op::Polynomial { coeffs } if coeffs.len() <= 5 => write!(f, "Polynomial({coeffs:?})"),
            Op::Polynomial { coeffs } => {
                write!(f, "Polynomial(degree={})", coeffs.len().saturating_sub(1))
            }
            Op::Chebyshev { lo, hi, coeffs } => write!(
                f,
                "Chebyshev(degree={}, interval=[{lo}, {hi}])",
                coeffs.len().saturating_sub(1)
            ),
            other => f.write_str(other.kind()),
        }
    }
}

/// One node: an op applied to values, producing one value.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Node name (the ONNX node name, or a generated one).
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Input values, `op.arity()` of them.
    pub inputs: Vec<ValueId>,
    /// The value this node produces.
    pub output: ValueId,
}

/// A graph with one input and one output, nodes in topological order.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    name: String,
    opset: i64,
    values: Vec<Value>,
    nodes: Vec<Node>,
    input: ValueId,
    output: ValueId,
    producers: HashMap<ValueId, usize>,
}

impl Graph {
    /// An empty graph whose output is its input.
    pub fn new(
        name: impl Into<String>,
        input_name: impl Into<String>,
        input_shape: Vec<usize>,
    ) -> Self {
        Self {
            name: name.into(),
            opset: 0,
            values: vec![Value {
                name: input_name.into(),
                shape: input_shape,
            }],
            nodes: Vec::new(),
            input: 0,
            output: 0,
            producers: HashMap::new(),
        }
    }

    /// An empty graph with the same name, opset and input as `self`.
    pub fn empty_like(&self) -> Self {
        let mut g = Self::new(
            self.name.clone(),
            self.values[self.input].name.clone(),
            self.input_shape().to_vec(),
        );
        g.opset = self.opset;
        g
    }

    /// Appends a node, inferring and checking its output shape. Returns the new value.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<ValueId>,
        output_name: impl Into<String>,
    ) -> Result<ValueId> {
        let name = name.into();
        if inputs.len() != op.arity() {
            return Err(NnError::InvalidGraph(format!(
                "node '{name}': {} takes {} inputs, got {}",
                op.kind(),
                op.arity(),
                inputs.len()
            )));
        }
        let mut shapes = Vec::with_capacity(inputs.len());
        for &i in &inputs {
            let v = self.values.get(i).ok_or_else(|| {
                NnError::InvalidGraph(format!("node '{name}': input value {i} does not exist"))
            })?;
            shapes.push(v.shape.as_slice());
        }
        let shape = infer_shape(&op, &shapes).map_err(|detail| NnError::ShapeMismatch {
            node: name.clone(),
            detail,
        })?;
        let id = self.values.len();
        self.values.push(Value {
            name: output_name.into(),
            shape,
        });
        self.producers.insert(id, self.nodes.len());
        self.nodes.push(Node {
            name,
            op,
            inputs,
            output: id,
        });
        Ok(id)
    }

    /// Sets the graph output.
    pub fn set_output(&mut self, v: ValueId) -> Result<()> {
        if v >= self.values.len() {
            return Err(NnError::InvalidGraph(format!(
                "output value {v} does not exist"
            )));
        }
        self.output = v;
        Ok(())
    }

    /// Sets the graph name.
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// Sets the opset version recorded from the source model.
    pub fn set_opset(&mut self, opset: i64) {
        self.opset = opset;
    }

    /// Graph name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Default-domain ONNX opset of the source model (0 if not imported).
    pub fn opset(&self) -> i64 {
        self.opset
    }

    /// All values.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// One value.
    pub fn value(&self, id: ValueId) -> Option<&Value> {
        self.values.get(id)
    }

    /// Shape of a value (empty for an unknown id).
    pub fn shape(&self, id: ValueId) -> &[usize] {
        self.values.get(id).map_or(&[], |v| v.shape.as_slice())
    }

    /// Nodes in topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The input value.
    pub fn input(&self) -> ValueId {
        self.input
    }

    /// The input shape.
    pub fn input_shape(&self) -> &[usize] {
        self.shape(self.input)
    }

    /// The output value.
    pub fn output(&self) -> ValueId {
        self.output
    }

    /// The output shape.
    pub fn output_shape(&self) -> &[usize] {
        self.shape(self.output)
    }

    /// Index (into [`Graph::nodes`]) of the node producing a value; `None` for the input.
    pub fn producer(&self, v: ValueId) -> Option<usize> {
        self.producers.get(&v).copied()
    }

    /// For each value, how many times it is used (node inputs, plus one for the graph output).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.values.len()];
        for n in &self.nodes {
            for &i in &n.inputs {
                c[i] += 1;
            }
        }
        c[self.output] += 1;
        c
    }

    /// A canonical byte encoding of what the graph computes (opset, values with names and
    /// shapes, nodes with names, ops, every weight by its bits, inputs and outputs; not the
    /// graph's display name): equal graphs give equal bytes, any change gives different ones.
    /// Fingerprints hash it.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut e = Canonical(Vec::new());
        e.0.extend_from_slice(b"henn-graph-v1");
        e.u64(self.opset as u64);
        e.u64(self.values.len() as u64);
        for v in &self.values {
            e.str(&v.name);
            e.usizes(&v.shape);
        }
        e.u64(self.input as u64);
        e.u64(self.output as u64);
        e.u64(self.nodes.len() as u64);
        for n in &self.nodes {
            e.str(&n.name);
            e.usizes(&n.inputs);
            e.u64(n.output as u64);
            n.op.encode(&mut e);
        }
        e.0
    }

    /// Total number of parameters.
    pub fn param_count(&self) -> usize {
        self.nodes.iter().map(|n| n.op.param_count()).sum()
    }

    /// Nodes whose op must be approximated by a polynomial before encrypted evaluation.
    pub fn nodes_needing_approximation(&self) -> Vec<&Node> {
        self.nodes
            .iter()
            .filter(|n| n.op.needs_polynomial_approximation())
            .collect()
    }

    /// A copy without nodes the output does not depend on (value ids are renumbered).
    pub fn pruned(&self) -> Result<Graph> {
        let mut live = vec![false; self.values.len()];
        live[self.output] = true;
        for n in self.nodes.iter().rev() {
            if live[n.output] {
                for &i in &n.inputs {
                    live[i] = true;
                }
            }
        }
        let mut g = self.empty_like();
        let mut map: HashMap<ValueId, ValueId> = HashMap::new();
        map.insert(self.input, g.input);
        for n in &self.nodes {
            if !live[n.output] {
                continue;
            }
            let inputs = n
                .inputs
                .iter()
                .map(|i| map.get(i).copied())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    NnError::InvalidGraph(format!("node '{}' uses an undefined value", n.name))
                })?;
            let out = g.add_node(
                n.name.clone(),
                n.op.clone(),
                inputs,
                self.values[n.output].name.clone(),
            )?;
            map.insert(n.output, out);
        }
        let out = map
            .get(&self.output)
            .copied()
            .ok_or_else(|| NnError::InvalidGraph("output is not computed by any node".into()))?;
        g.set_output(out)?;
        Ok(g)
    }

    /// Checks ids, topological order and shapes.
    pub fn validate(&self) -> Result<()> {
        let mut defined = vec![false; self.values.len()];
        defined[self.input] = true;
        for n in &self.nodes {
            let mut shapes = Vec::new();
            for &i in &n.inputs {
                if !defined.get(i).copied().unwrap_or(false) {
                    return Err(NnError::InvalidGraph(format!(
                        "node '{}' uses value {i} before it is defined",
                        n.name
                    )));
                }
                shapes.push(self.values[i].shape.as_slice());
            }
            let shape = infer_shape(&n.op, &shapes).map_err(|detail| NnError::ShapeMismatch {
                node: n.name.clone(),
                detail,
            })?;
            if shape != self.values[n.output].shape {
                return Err(NnError::InvalidGraph(format!(
                    "node '{}': stored shape differs from inferred",
                    n.name
                )));
            }
            defined[n.output] = true;
        }
        if !defined[self.output] {
            return Err(NnError::InvalidGraph("output is not computed".into()));
        }
        Ok(())
    }
}

/// Length-prefixed little-endian byte writer of [`Graph::canonical_bytes`].
struct Canonical(Vec<u8>);

impl Canonical {
    fn tag(&mut self, t: u8) {
        self.0.push(t);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn usizes(&mut self, v: &[usize]) {
        self.u64(v.len() as u64);
        for &x in v {
            self.u64(x as u64);
        }
    }
    fn f64s(&mut self, v: &[f64]) {
        self.u64(v.len() as u64);
        for &x in v {
            self.f64(x);
        }
    }
    fn tensor(&mut self, t: &Tensor) {
        self.usizes(t.shape());
        self.f64s(t.data());
    }
    fn opt_vec(&mut self, v: &Option<Vec<f64>>) {
        match v {
            None => self.tag(0),
            Some(v) => {
                self.tag(1);
                self.f64s(v);
            }
        }
    }
}
