//! ONNX import: `ModelProto` (decoded by the `onnx-protobuf` crate) to an IR [`Graph`].
//!
//! Each supported ONNX op type has one importer function in a registry ([`supported_ops`]);
//! unsupported op types and attributes are reported as named errors naming the node. Constant
//! sub-expressions (initializers, `Constant` nodes, `Shape` of a static input, ...) are folded
//! at import time, so constant operands end up inside the IR ops.

pub mod edit;
mod ops;
pub mod prune;
pub mod tensor;

use std::collections::HashMap;
use std::path::Path;

pub use onnx_protobuf as proto;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{AttributeProto, Message, ModelProto, NodeProto};

use crate::error::{NnError, Result};
use crate::ir::{Graph, Op, ValueId};
use crate::tensor::Tensor;

/// Largest model file [`import_file`] reads.
pub const MAX_MODEL_BYTES: u64 = 256 * 1024 * 1024;

/// Reads and imports an ONNX model file (at most [`MAX_MODEL_BYTES`]).
pub fn import_file(path: impl AsRef<Path>) -> Result<Graph> {
    let path = path.as_ref();
    let io = |source| NnError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_MODEL_BYTES {
        return Err(NnError::FileTooLarge {
            path: path.to_path_buf(),
            size,
            limit: MAX_MODEL_BYTES,
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut g = import_bytes(&bytes)?;
    if g.name().is_empty() || g.name() == "main_graph" || g.name() == "torch_jit" {
        g = g.renamed(name);
    }
    Ok(g)
}

/// Decodes and imports a serialized ONNX model.
pub fn import_bytes(bytes: &[u8]) -> Result<Graph> {
    if bytes.len() as u64 > MAX_MODEL_BYTES {
        return Err(NnError::InvalidModel(format!(
            "model is {} bytes, more than the limit of {MAX_MODEL_BYTES}",
            bytes.len()
        )));
    }
    let model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| NnError::MalformedProtobuf(e.to_string()))?;
    import_model(&model)
}

/// The ONNX op types the importer supports, sorted.
pub fn supported_ops() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = ops::REGISTRY.iter().map(|(n, _)| *n).collect();
    v.sort_unstable();
    v
}

/// A value during import: computed at run time, or a constant folded at import time.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Dyn(ValueId),
    Const(Tensor),
}

/// Import state.
pub(crate) struct Importer {
    pub(crate) graph: Graph,
    pub(crate) env: HashMap<String, Val>,
}

/// A node being imported.
pub(crate) struct NodeCtx<'a> {
    pub(crate) node: &'a NodeProto,
    pub(crate) name: String,
}

impl NodeCtx<'_> {
    pub(crate) fn op_type(&self) -> &str {
        &self.node.op_type
    }

    pub(crate) fn unsupported(&self, detail: impl Into<String>) -> NnError {
        NnError::UnsupportedNode {
            node: self.name.clone(),
            op_type: self.node.op_type.clone(),
            detail: detail.into(),
        }
    }

    pub(crate) fn bad_attr(&self, attribute: &str, detail: impl Into<String>) -> NnError {
        NnError::UnsupportedAttribute {
            node: self.name.clone(),
            op_type: self.node.op_type.clone(),
            attribute: attribute.to_string(),
            detail: detail.into(),
        }
    }

    pub(crate) fn shape_err(&self, detail: impl Into<String>) -> NnError {
        NnError::ShapeMismatch {
            node: self.name.clone(),
            detail: detail.into(),
        }
    }

    /// Errors on any attribute not in `known`.
    pub(crate) fn check_attrs(&self, known: &[&str]) -> Result<()> {
        for a in &self.node.attribute {
            if !known.contains(&a.name.as_str()) {
                return Err(self.bad_attr(
                    &a.name,
                    format!(
                        "not supported; supported attributes: {}",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    fn typed(&self, name: &str, ty: AttributeType) -> Result<Option<&AttributeProto>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if a.type_.value() == ty as i32 => Ok(Some(a)),
            Some(a) => Err(self.bad_attr(
                name,
                format!("expected type {ty:?}, found type code {}", a.type_.value()),
            )),
        }
    }

    pub(crate) fn attr_int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self
            .typed(name, AttributeType::INT)?
            .map_or(default, |a| a.i))
    }

    pub(crate) fn attr_float(&self, name: &str, default: f64) -> Result<f64> {
        Ok(self
            .typed(name, AttributeType::FLOAT)?
            .map_or(default, |a| f64::from(a.f)))
    }

    pub(crate) fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self
            .typed(name, AttributeType::INTS)?
            .map(|a| a.ints.clone()))
    }

    pub(crate) fn attr_string(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .typed(name, AttributeType::STRING)?
            .map(|a| String::from_utf8_lossy(&a.s).into_owned()))
    }
}

impl Importer {
    /// Input `i` of the node (`None` if absent or named "").
    pub(crate) fn opt_input(&self, ctx: &NodeCtx<'_>, i: usize) -> Result<Option<Val>> {
        match ctx.node.input.get(i) {
            None => Ok(None),
            Some(n) if n.is_empty() => Ok(None),
            Some(n) => self
                .env
                .get(n)
                .cloned()
                .map(Some)
                .ok_or_else(|| NnError::MissingInput {
                    node: ctx.name.clone(),
                    input: n.clone(),
                }),
        }
    }

    pub(crate) fn input(&self, ctx: &NodeCtx<'_>, i: usize) -> Result<Val> {
        self.opt_input(ctx, i)?
            .ok_or_else(|| NnError::MissingInput {
                node: ctx.name.clone(),
                input: format!("#{i} (required input slot is empty)"),
            })
    }

    /// Input `i`, which must be a constant (initializer, Constant node or folded expression).
    pub(crate) fn const_input(&self, ctx: &NodeCtx<'_>, i: usize, what: &str) -> Result<Tensor> {
        match self.opt_input(ctx, i) {
            Ok(Some(Val::Const(t))) => Ok(t),
            Ok(Some(Val::Dyn(_))) => Err(ctx.unsupported(format!(
                "input #{i} ({what}) must be a constant initializer, but it is computed from the model input"
            ))),
            Ok(None) => Err(NnError::MissingInitializer {
                node: ctx.name.clone(),
                name: String::new(),
                what: what.to_string(),
            }),
            Err(NnError::MissingInput { node, input }) => Err(NnError::MissingInitializer {
                node,
                name: input,
                what: what.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn opt_const_input(
        &self,
        ctx: &NodeCtx<'_>,
        i: usize,
        what: &str,
    ) -> Result<Option<Tensor>> {
        match self.opt_input(ctx, i)? {
            None => Ok(None),
            Some(_) => self.const_input(ctx, i, what).map(Some),
        }
    }

    /// Input `i`, which must be computed from the model input.
    pub(crate) fn dyn_input(&self, ctx: &NodeCtx<'_>, i: usize) -> Result<ValueId> {
        match self.input(ctx, i)? {
            Val::Dyn(v) => Ok(v),
            Val::Const(_) => Err(ctx.unsupported(format!(
                "input #{i} is a constant; only the data input may be computed"
            ))),
        }
    }

    /// Adds an IR node for the ONNX node's `k`-th IR node (k > 0 gets a name suffix).
    pub(crate) fn emit(
        &mut self,
        ctx: &NodeCtx<'_>,
        k: usize,
        op: Op,
        inputs: Vec<ValueId>,
    ) -> Result<ValueId> {
        let (name, out) = if k == 0 {
            (
                ctx.name.clone(),
                ctx.node
                    .output
                    .first()
                    .cloned()
                    .unwrap_or_else(|| ctx.name.clone()),
            )
        } else {
            (format!("{}/{k}", ctx.name), format!("{}/{k}", ctx.name))
        };
        self.graph.add_node(name, op, inputs, out)
    }
}

fn default_opset(model: &ModelProto) -> Result<i64> {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| {
            NnError::InvalidModel("model has no opset_import for the default ONNX domain".into())
        })
}

/// Imports a decoded ONNX model.
pub fn import_model(model: &ModelProto) -> Result<Graph> {
    let opset = default_opset(model)?;
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| NnError::InvalidModel("model has no graph".into()))?;
    let mut env: HashMap<String, Val> = HashMap::new();
    for init in &g.initializer {
        env.insert(init.name.clone(), Val::Const(tensor::decode_tensor(init)?));
    }
    if !g.sparse_initializer.is_empty() {
        return Err(NnError::InvalidModel(
            "sparse initializers are not supported".into(),
        ));
    }
    let data_inputs: Vec<_> = g
        .input
        .iter()
        .filter(|i| !env.contains_key(&i.name))
        .collect();
    let [input] = data_inputs.as_slice() else {
        return Err(NnError::InvalidModel(format!(
            "expected exactly one graph input that is not an initializer, found {} ({})",
            data_inputs.len(),
            data_inputs
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let input_shape = input_shape(input)?;
    let mut imp = Importer {
        graph: Graph::new(g.name.clone(), input.name.clone(), input_shape),
        env,
    };
    imp.graph.set_opset(opset);
    let input_id = imp.graph.input();
    imp.env.insert(input.name.clone(), Val::Dyn(input_id));
    let registry: HashMap<&str, ops::Handler> = ops::REGISTRY.iter().copied().collect();
    for (idx, node) in g.node.iter().enumerate() {
        let name = if node.name.is_empty() {
            format!("{}_{idx}", node.op_type)
        } else {
            node.name.clone()
        };
        let ctx = NodeCtx { node, name };
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(NnError::UnsupportedOp {
                node: ctx.name,
                op_type: format!("{}:{}", node.domain, node.op_type),
                supported: format!(
                    "ops of the default ONNX domain: {}",
                    supported_ops().join(", ")
                ),
            });
        }
        let handler =
            registry
                .get(node.op_type.as_str())
                .ok_or_else(|| NnError::UnsupportedOp {
                    node: ctx.name.clone(),
                    op_type: node.op_type.clone(),
                    supported: supported_ops().join(", "),
                })?;
        let outs = handler(&mut imp, &ctx)?;
        for (name, v) in node.output.iter().zip(outs) {
            if !name.is_empty() {
                imp.env.insert(name.clone(), v);
            }
        }
    }
    let [out] = g.output.as_slice() else {
        return Err(NnError::InvalidModel(format!(
            "expected exactly one graph output, found {}",
            g.output.len()
        )));
    };
    match imp.env.get(&out.name) {
        Some(Val::Dyn(v)) => {
            let v = *v;
            imp.graph.set_output(v)?;
        }
        Some(Val::Const(_)) => {
            return Err(NnError::InvalidModel(format!(
                "graph output '{}' does not depend on the input",
                out.name
            )));
        }
        None => {
            return Err(NnError::InvalidModel(format!(
                "graph output '{}' is not produced by any node",
                out.name
            )));
        }
    }
    imp.graph.pruned()
}

fn input_shape(input: &onnx_protobuf::ValueInfoProto) -> Result<Vec<usize>> {
    use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
    use onnx_protobuf::type_proto::Value as Ty;
    let err = |d: String| NnError::InvalidModel(format!("graph input '{}': {d}", input.name));
    let tt = match input.type_.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Ty::TensorType(t)) => t,
        _ => return Err(err("is not a tensor".into())),
    };
    if tt.elem_type != 1 && tt.elem_type != 11 {
        return Err(err(format!(
            "element type {} is not float32 (1) or float64 (11)",
            tt.elem_type
        )));
    }
    let shape = tt
        .shape
        .as_ref()
        .ok_or_else(|| err("has no static shape; export with a fixed input shape".into()))?;
    let mut out = Vec::with_capacity(shape.dim.len());
    for (i, d) in shape.dim.iter().enumerate() {
        match d.value {
            Some(Dim::DimValue(v)) if v > 0 => out.push(v as usize),
            _ if i == 0 => out.push(1),
            _ => {
                return Err(err(format!(
                    "dimension {i} is symbolic or not positive; only the batch axis may be dynamic"
                )));
            }
        }
    }
    Ok(out)
}

impl Graph {
    /// The same graph with another name.
    pub fn renamed(mut self, name: impl Into<String>) -> Graph {
        self.set_name(name);
        self
    }
}
