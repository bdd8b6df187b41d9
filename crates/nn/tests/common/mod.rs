//! Builders for small ONNX models made with the protobuf types.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use henn_nn::onnx::proto::attribute_proto::AttributeType;
use henn_nn::onnx::proto::tensor_shape_proto::Dimension;
use henn_nn::onnx::proto::tensor_shape_proto::dimension::Value as Dim;
use henn_nn::onnx::proto::type_proto::{Tensor as TypeTensor, Value as TypeValue};
use henn_nn::onnx::proto::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use henn_nn::onnx::tensor::{float_tensor_proto, int64_tensor_proto};

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = v;
    a
}

pub fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::TENSOR.into();
    a.t = Some(t).into();
    a
}

pub fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.name = name.into();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = outputs.iter().map(|s| s.to_string()).collect();
    n.attribute = attrs;
    n
}

pub fn value_info(name: &str, shape: &[i64]) -> ValueInfoProto {
    let mut tt = TypeTensor::new();
    tt.elem_type = 1;
    let mut s = TensorShapeProto::new();
    for (i, &d) in shape.iter().enumerate() {
        let mut dim = Dimension::new();
        dim.value = Some(if i == 0 && d < 0 {
            Dim::DimParam("N".into())
        } else {
            Dim::DimValue(d)
        });
        s.dim.push(dim);
    }
    tt.shape = Some(s).into();
    let mut tp = TypeProto::new();
    tp.value = Some(TypeValue::TensorType(tt));
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v.type_ = Some(tp).into();
    v
}

/// Model builder.
pub struct M {
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    pub input_shape: Vec<i64>,
    pub output: String,
    pub opset: i64,
    pub inits_as_inputs: bool,
}

impl M {
    pub fn new(input_shape: &[i64]) -> Self {
        M {
            nodes: vec![],
            inits: vec![],
            input_shape: input_shape.to_vec(),
            output: "y".into(),
            opset: 13,
            inits_as_inputs: false,
        }
    }
    pub fn init(&mut self, name: &str, shape: &[usize], v: &[f32]) -> &mut Self {
        self.inits.push(float_tensor_proto(name, shape, v));
        self
    }
    pub fn init_i64(&mut self, name: &str, shape: &[usize], v: &[i64]) -> &mut Self {
        self.inits.push(int64_tensor_proto(name, shape, v));
        self
    }
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> &mut Self {
        let name = format!("{op}_{}", self.nodes.len());
        self.nodes.push(node(op, &name, inputs, outputs, attrs));
        self
    }
    pub fn model(&self) -> ModelProto {
        let mut g = GraphProto::new();
        g.name = "test".into();
        g.node = self.nodes.clone();
        g.initializer = self.inits.clone();
        g.input.push(value_info("x", &self.input_shape));
        if self.inits_as_inputs {
            for t in &self.inits {
                let dims: Vec<i64> = t.dims.clone();
                g.input.push(value_info(&t.name, &dims));
            }
        }
        g.output.push(value_info(&self.output, &[]));
        let mut m = ModelProto::new();
        m.ir_version = 8;
        let mut o = OperatorSetIdProto::new();
        o.version = self.opset;
        m.opset_import.push(o);
        m.graph = Some(g).into();
        m
    }
    pub fn bytes(&self) -> Vec<u8> {
        self.model().write_to_bytes().unwrap()
    }
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

pub fn assert_close(a: &[f64], b: &[f64], rel: f64) {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = b.iter().fold(1e-12_f64, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= rel * scale,
            "element {i}: {x} vs {y} (rel tol {rel}, scale {scale})"
        );
    }
}
