//! Packing layouts: how tensors map to ciphertext slots, and the layer code for each op,
//! written once per layout and generic over [`crate::exec::Backend`].
//!
//! * [`batch`]: batch-axis packing (slot `i` holds image `i`; one ciphertext per tensor
//!   element; weights are scalar constants; no rotations).
//! * [`channel`]: channel-wise packing (one ciphertext per channel, `H x W` row-major, gapped
//!   after strides; convolutions by hoisted rotations and plaintext weight masks).

pub mod batch;
pub mod channel;

use std::ops::Range;

use crate::error::{NnError, Result};
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

/// Read access to a value's ciphertexts by flat index (in the layout's order): a whole
/// packed value, or the band of rows of an NCHW value that row streaming keeps alive.
pub trait CtSource<C>: Sync {
    /// The ciphertext at flat index `flat`; an error when it is not held.
    fn at(&self, flat: usize) -> Result<&C>;
}

impl<C: Sync> CtSource<C> for Vec<C> {
    fn at(&self, flat: usize) -> Result<&C> {
        self.get(flat).ok_or_else(|| {
            NnError::Exec(format!(
                "ciphertext {flat} out of range ({} held)",
                self.len()
            ))
        })
    }
}

/// A value as layer code reads it: IR shape, plaintext multiplier and ciphertext access.
pub struct View<'a, C> {
    /// IR shape of the whole value.
    pub shape: &'a [usize],
    /// Multiplier still to apply to the slot values.
    pub mult: f64,
    /// The ciphertexts (possibly only a band of rows).
    pub src: &'a dyn CtSource<C>,
}

impl<C> std::fmt::Debug for View<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("shape", &self.shape)
            .field("mult", &self.mult)
            .finish_non_exhaustive()
    }
}

impl<C> Clone for View<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C> Copy for View<'_, C> {}

impl<'a, C: Sync> View<'a, C> {
    /// A view of a whole packed value.
    pub fn of(p: &'a Packed<C>) -> Self {
        View {
            shape: &p.shape,
            mult: p.mult,
            src: &p.cts,
        }
    }
}

/// A packing layout: layer code for every supported op.
///
/// A layout may also compute some nodes row by row (NCHW outputs, `H` rows of `C x W`
/// elements): [`Layout::input_rows`] says which rows of each input an output row reads and
/// [`Layout::eval_rows`] computes a range of output rows from bands of input rows. The
/// executor then streams such nodes so that only bands of the large early feature maps are
/// alive at once (see [`crate::exec::run`]). `eval_node` and `eval_rows` share the layer code.
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
    /// For a node computed row by row: the inclusive range of rows of input `input` that
    /// output row `row` reads. `None`: the node is computed whole by `eval_node`.
    fn input_rows(
        &self,
        _graph: &Graph,
        _node: &Node,
        _input: usize,
        _row: usize,
    ) -> Option<(usize, usize)> {
        None
    }
    /// Computes output rows `rows` of a node for which [`Layout::input_rows`] is `Some`,
    /// reading its inputs through views that hold at least the rows it asked for. Returns
    /// one vector per row (`C x W` ciphertexts, channel-major) and the output multiplier.
    fn eval_rows(
        &self,
        _backend: &B,
        _graph: &Graph,
        node: &Node,
        _inputs: &[View<'_, B::Ct>],
        _rows: Range<usize>,
    ) -> Result<(Vec<Vec<B::Ct>>, f64)> {
        Err(NnError::Exec(format!(
            "node '{}' is not computed row by row in this layout",
            node.name
        )))
    }
}

/// Flat NCHW indices of the elements of rows `rows` of an `[.., C, H, W]` value, row by row
/// and channel-major within a row (the order of [`Layout::eval_rows`]).
pub fn row_flats(shape: &[usize], rows: Range<usize>) -> Vec<usize> {
    let n = shape.len();
    let (c, h, w) = if n >= 3 {
        (shape[n - 3], shape[n - 2], shape[n - 1])
    } else {
        (1, 1, shape.iter().product())
    };
    let mut v = Vec::with_capacity(rows.len() * c * w);
    for y in rows {
        for ch in 0..c {
            for x in 0..w {
                v.push((ch * h + y) * w + x);
            }
        }
    }
    v
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
