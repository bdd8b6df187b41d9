//! Packing layouts: where every value lives in the ciphertext slots, decided once, and the
//! layer code of each op under each layout, written once and generic over
//! [`crate::backend::Backend`].
//!
//! A layout has two halves:
//!
//! * [`LayoutRules`] (no backend): which graphs it supports and the [`LayoutPlan`] of a graph
//!   for a [`Room`] (slots, prime size) and a number of images per run: the input spec, the
//!   [`Placement`] of every value, the output map. The planner computes it once, the plan
//!   carries it, the client packs and unpacks from it alone, and the server checks that the
//!   plan's copy is what it computes.
//! * [`Layout`] (per backend): evaluation of one node given the placements of its inputs and
//!   output ([`NodeCtx`]), and optionally row by row (the executor's streaming).
//!
//! Layouts:
//!
//! * [`batch`]: batch-axis packing (slot `i` holds image `i`; one ciphertext per tensor
//!   element; weights are scalar constants; no rotations).
//! * [`channel`]: channel-wise packing (one ciphertext per channel, `H x W` row-major, gapped
//!   after strides; convolutions by hoisted rotations; multiplexed outputs where they pay).
//!
//! Element-wise layer code shared by both lives in [`elementwise`].
//!
//! This floor knows the backend trait below it, never the executor, planner or sessions.

pub mod batch;
pub mod channel;
pub mod elementwise;
pub mod placement;

use std::ops::Range;

pub use placement::{Grid, InputSpec, LayoutPlan, OutputMap, Placement, Room};

use crate::backend::Backend;
use crate::error::{ExecError, NnError, Result};
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
            ExecError::Internal(format!(
                "ciphertext {flat} out of range ({} held)",
                self.len()
            ))
            .into()
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

/// A node as layer code sees it: the graph, the node, and the layout plan holding the
/// placements of its inputs and output (decided once by the planner, never recomputed here).
#[derive(Debug, Clone, Copy)]
pub struct NodeCtx<'a> {
    /// The graph.
    pub graph: &'a Graph,
    /// The node.
    pub node: &'a Node,
    /// The layout plan the graph runs under.
    pub plan: &'a LayoutPlan,
}

impl<'a> NodeCtx<'a> {
    /// Placement of input `k` of the node.
    pub fn input(&self, k: usize) -> Result<&'a Placement> {
        let v = *self.node.inputs.get(k).ok_or_else(|| {
            NnError::InvalidGraph(format!("node '{}' has no input {k}", self.node.name))
        })?;
        self.plan.placement(v)
    }

    /// Placement of the node's output.
    pub fn output(&self) -> Result<&'a Placement> {
        self.plan.placement(self.node.output)
    }

    /// IR shape of the node's output.
    pub fn out_shape(&self) -> &'a [usize] {
        self.graph.shape(self.node.output)
    }

    /// The "not supported by this layout" error for this node.
    pub fn unsupported(&self, layout: LayoutKind, hint: impl Into<String>) -> NnError {
        unsupported(self.node, layout, hint)
    }
}

/// The "not supported by this layout" error for `node`.
pub fn unsupported(node: &Node, layout: LayoutKind, hint: impl Into<String>) -> NnError {
    NnError::UnsupportedForLayout {
        node: node.name.clone(),
        op: node.op.kind().to_string(),
        layout: layout.name().into(),
        hint: hint.into(),
    }
}

/// The backend-independent half of a layout: support, slot needs and the placement of every
/// value.
pub trait LayoutRules: Sync {
    /// The layout.
    fn kind(&self) -> LayoutKind;
    /// Checks that every node is supported (structure only, before any parameters exist).
    fn check_supported(&self, graph: &Graph) -> Result<()>;
    /// The smallest slot count the layout needs for `images` images per run.
    fn required_slots(&self, graph: &Graph, images: usize) -> Result<usize>;
    /// Images of one run this layout packs when `wanted` are asked for and ciphertexts have
    /// `slots` slots.
    fn images_per_run(&self, wanted: usize, slots: usize) -> usize;
    /// The placement of every value of `graph` in `room`, with `images` images per run (the
    /// first of [`LayoutRules::candidates`]).
    fn plan(&self, graph: &Graph, room: Room, images: usize) -> Result<LayoutPlan>;
    /// Every placement the layout offers for `graph` in `room` (distinct, in a fixed order);
    /// the planner picks the cheapest on the simulated backend (`plan::layout_plan`).
    fn candidates(&self, graph: &Graph, room: Room, images: usize) -> Result<Vec<LayoutPlan>> {
        Ok(vec![self.plan(graph, room, images)?])
    }
    /// Slots a cleartext replay of `plan` needs to see every distinct slot value of a run of
    /// `images` images (all of them when slots mix through rotations).
    fn slots_for_magnitudes(&self, plan: &LayoutPlan, images: usize) -> usize;
}

/// Layer code of a layout on one backend.
///
/// A layout may also compute some nodes row by row (NCHW outputs, `H` rows of `C x W`
/// elements): [`Layout::input_rows`] says which rows of each input an output row reads and
/// [`Layout::eval_rows`] computes a range of output rows from bands of input rows. The
/// executor then streams such nodes so that only bands of the large early feature maps are
/// alive at once (see the executor, `exec`). `eval_node` and `eval_rows` share the layer code.
pub trait Layout<B: Backend>: Sync {
    /// Evaluates one node on packed inputs.
    fn eval_node(
        &self,
        backend: &B,
        at: NodeCtx<'_>,
        inputs: &[&Packed<B::Ct>],
    ) -> Result<Packed<B::Ct>>;
    /// For a node computed row by row: the inclusive range of rows of input `input` that
    /// output row `row` reads. `None`: the node is computed whole by `eval_node`.
    fn input_rows(&self, _at: NodeCtx<'_>, _input: usize, _row: usize) -> Option<(usize, usize)> {
        None
    }
    /// Computes output rows `rows` of a node for which [`Layout::input_rows`] is `Some`,
    /// reading its inputs through views that hold at least the rows it asked for. Returns
    /// one vector per row (`C x W` ciphertexts, channel-major) and the output multiplier.
    fn eval_rows(
        &self,
        _backend: &B,
        at: NodeCtx<'_>,
        _inputs: &[View<'_, B::Ct>],
        _rows: Range<usize>,
    ) -> Result<(Vec<Vec<B::Ct>>, f64)> {
        Err(ExecError::Internal(format!(
            "node '{}' is not computed row by row in this layout",
            at.node.name
        ))
        .into())
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    /// Batch-axis packing.
    Batch,
    /// Channel-wise packing.
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

    /// How the layout packs images, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            LayoutKind::Batch => "batch packing, slot i = image i",
            LayoutKind::Channel => {
                "channel packing, channels per ciphertext (multiplexed where it pays), image by image"
            }
        }
    }

    /// The layout's backend-independent rules.
    pub fn rules(self) -> &'static dyn LayoutRules {
        match self {
            LayoutKind::Batch => &batch::BatchLayout,
            LayoutKind::Channel => &channel::ChannelLayout,
        }
    }

    /// The layout's layer code on backend `B`.
    pub fn layout<B: Backend>(self) -> &'static dyn Layout<B> {
        match self {
            LayoutKind::Batch => &batch::BatchLayout,
            LayoutKind::Channel => &channel::ChannelLayout,
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
