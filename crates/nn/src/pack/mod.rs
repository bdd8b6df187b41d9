//! Packing layouts: how tensors map to ciphertext slots, and the layer code for each op,
//! written once per layout and generic over [`crate::exec::Backend`].
//!
//! * [`batch`]: batch-axis packing (slot `i` holds image `i`; one ciphertext per tensor
//!   element; weights are scalar constants; no rotations).
//! * [`channel`]: channel-wise packing (one ciphertext per channel, `H x W` row-major, gapped
//!   after strides; convolutions by hoisted rotations and plaintext weight masks).

pub mod batch;
pub mod channel;

use crate::error::Result;
use crate::exec::Backend;
use crate::ir::{Graph, Node};

/// A packed tensor: its IR shape, its ciphertexts and a plaintext multiplier carried along
/// (true value = `mult` x slot value). The multiplier lets constants (pooling `1/k^2`, scalar
/// `Mul`s, activation leading coefficients) fold into the next linear layer for free.
#[derive(Debug, Clone)]
pub struct Packed<C> {
    /// IR shape of the value.
    pub shape: Vec<usize>,
    /// Ciphertexts, in the layout's order.
    pub cts: Vec<C>,
    /// Multiplier still to apply to the slot values.
    pub mult: f64,
}

/// A packing layout: layer code for every supported op.
pub trait Layout<B: Backend>: Sync {
    /// Layout name (`batch`, `channel`).
    fn name(&self) -> &'static str;
    /// Evaluates one node on packed inputs.
    fn eval_node(
        &self,
        backend: &B,
        graph: &Graph,
        node: &Node,
        inputs: &[&Packed<B::Ct>],
    ) -> Result<Packed<B::Ct>>;
}

/// The packing layouts henn knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    /// Batch-axis packing.
    Batch,
    /// Channel-wise packing (not implemented yet).
    Channel,
}

impl LayoutKind {
    /// Name.
    pub fn name(self) -> &'static str {
        match self {
            LayoutKind::Batch => "batch",
            LayoutKind::Channel => "channel",
        }
    }
}

impl std::fmt::Display for LayoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LayoutKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "batch" => Ok(LayoutKind::Batch),
            "channel" => Ok(LayoutKind::Channel),
            other => Err(format!("unknown packing '{other}': use batch or channel")),
        }
    }
}
