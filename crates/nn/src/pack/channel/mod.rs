//! Channel-wise packing: one ciphertext per channel (or several, multiplexed), the `H x W`
//! image row-major in the slots.
//!
//! Every value has a [`Grid`] (decided once in `place`, stored in the layout plan): element
//! `(c, i, j)` of a `[1, C, H, W]` value (flat index `f = (c H + i) W + j` for any other shape)
//! is channel `c` in ciphertext `c / k`, lane `c % k` (a slot offset: a block of `bs` slots,
//! and within it an interleaved sub-lane), slot `i ry + j rx` from the lane's offset. The input
//! has `rx = 1`, `ry = W`. A strided convolution or pooling keeps its output where its anchor
//! pixel was (a *gapped* layout: `rx`, `ry` multiply by the strides) instead of compacting;
//! the next layer scales its rotation steps accordingly, and a multiplexed convolution output
//! fills the gaps with other channels (interleaved sub-lanes, Lee et al., ICML 2022). Slots off
//! the grid hold garbage (biases, activations of it); every layer that reads across slots
//! masks it away or reads only grid positions, and the planner's magnitudes include it.
//!
//! The planner chooses between placements by cost on the simulated backend
//! (`plan::layout_plan` over [`candidate_grids`]): multiplexed lanes wherever a convolution's
//! rotations, products and encodings plus the downstream work per ciphertext are cheaper than
//! one channel per ciphertext, or one channel per ciphertext everywhere.
//!
//! * Convolution (`conv`, one channel per ciphertext on both sides): for each input
//!   ciphertext, one hoisted batch of rotations (one per tap `(dy, dx)`, step `dy ry + dx rx`);
//!   taps inside the image at every output pixel are scalar products, taps touching the
//!   padding are masked; accumulated at scale `Δ q_l` and rescaled once: one level.
//! * Multiplexed convolution (`mux`, several lanes on either side, a replicated input
//!   included): plaintexts of per-lane weights times baby-step rotations of each input,
//!   giant-step rotations per output ciphertext; one level. The gap placement (`place`,
//!   `Mode::Gaps`) keeps the replicas through a strided convolution with its channels in the
//!   gaps of each replica, so that one rotation of the input feeds every sub-lane.
//! * Pooling without padding and global pooling (`pool`): separable rotate-and-add (no
//!   level); padded average pooling uses masks like a depthwise convolution (one level).
//! * Fully connected (`fc`): reads the gapped layout directly. The input span is rounded up
//!   to a power of two `s` and the masks place output `j`'s partial products in its block, so
//!   one rotate-and-sum (`log2 s` rotations) reduces every output of a ciphertext at once;
//!   output `j` ends in slot `s * (j mod blocks)` of ciphertext `j / blocks`. Or, when
//!   cheaper (`fc::method`), *residue packing*: every output in one ciphertext, output `j` in
//!   slot `j` (hoisted input rotations `0..-(m' - 1)`, one product per rotation carrying each
//!   output's weights to the slots `= j mod m'`, one rotate-and-sum from `m'` up). One level.
//! * Element-wise ops (polynomials, squares, residual additions, constants): the shared code
//!   of [`crate::pack::elementwise`], constants mapped per ciphertext (a scalar where the
//!   constant is uniform over the ciphertext's elements, else a slot vector).

mod conv;
mod fc;
mod mux;
mod place;
mod pool;

pub use mux::{MuxCost, lanes_cost};
pub use place::{candidate_grids, grids, multiplexable};

use henn_ckks::Scale;

use super::elementwise::{self, ConstPlacer, CtConst, Elementwise, full_constant};
use super::{Grid, Layout, LayoutKind, LayoutPlan, LayoutRules, NodeCtx, Packed, Room, View};
use crate::backend::{Backend, scale_of};
use crate::error::{ExecError, NnError, Result};
use crate::ir::{Graph, Op};
use crate::tensor::Tensor;

/// The channel-wise layout.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChannelLayout;

const KIND: LayoutKind = LayoutKind::Channel;

/// An executor invariant broken inside the channel layer code (a bug, never bad input).
fn exec_err(msg: impl Into<String>) -> NnError {
    ExecError::Internal(msg.into()).into()
}

fn par_map<T: Send>(n: usize, f: impl Fn(usize) -> Result<T> + Sync + Send) -> Result<Vec<T>> {
    elementwise::par_map(n, f)
}

/// `x + sum_k rot(x, k)` over `steps` (a zero step means `x` itself), one hoisted batch.
fn rot_sum<B: Backend>(b: &B, x: &B::Ct, steps: &[i64]) -> Result<B::Ct> {
    let nz: Vec<i64> = steps.iter().copied().filter(|&k| k != 0).collect();
    let rots = if nz.is_empty() {
        Vec::new()
    } else {
        b.rotate_hoisted(x, &nz)?
    };
    let mut it = rots.into_iter();
    let mut acc = if steps.contains(&0) {
        x.clone()
    } else {
        it.next().ok_or_else(|| exec_err("empty rotation sum"))?
    };
    for r in it {
        b.add_assign(&mut acc, &r)?;
    }
    Ok(acc)
}

use crate::backend::bsgs::rotations;

/// Entry `o` of an optional bias vector (0 without one).
fn bias_at(bias: &Option<Vec<f64>>, o: usize) -> f64 {
    bias.as_ref().and_then(|v| v.get(o)).copied().unwrap_or(0.0)
}

/// `acc += v` slot-wise for a plaintext vector `v`, with `acc` at scale `x0.scale * cs` (a
/// one-level linear layer's products, before the rescale): an all-ones ciphertext
/// (`0 x0 + 1` at `x0`'s scale) times `v` at scale `cs`.
fn add_slot_constants<B: Backend>(
    b: &B,
    acc: &mut B::Ct,
    x0: &B::Ct,
    v: &[f64],
    cs: Scale,
) -> Result<()> {
    let mut ones = x0.clone();
    b.mul_const_assign(&mut ones, 0.0, scale_of(1.0)?)?;
    b.add_const_assign(&mut ones, 1.0)?;
    b.mul_slots_assign(&mut ones, v, cs)?;
    b.add_assign(acc, &ones)
}

/// Per-element constant of `t` broadcast to `shape`, as one slot vector per ciphertext.
fn const_vectors(shape: &[usize], t: &Tensor, g: Grid) -> Result<Vec<Vec<f64>>> {
    let full = full_constant(shape, t)?;
    let mut v = vec![vec![0.0; g.span()]; g.c];
    for (f, &c) in full.iter().enumerate() {
        let (ci, s) = g.locate(f);
        if let Some(slot) = v.get_mut(ci).and_then(|x| x.get_mut(s)) {
            *slot = c;
        }
    }
    Ok(v.into_iter().map(|x| g.tile(x)).collect())
}

/// Per ciphertext, the constant of `t` if it is the same on every grid element of it.
fn per_ct_uniform(shape: &[usize], t: &Tensor, g: Grid) -> Result<Vec<Option<f64>>> {
    let full = full_constant(shape, t)?;
    let mut u: Vec<Option<Option<f64>>> = vec![None; g.c];
    for (f, &c) in full.iter().enumerate() {
        let (ci, _) = g.locate(f);
        if let Some(e) = u.get_mut(ci) {
            *e = match *e {
                None => Some(Some(c)),
                Some(Some(p)) if p == c => Some(Some(p)),
                _ => Some(None),
            };
        }
    }
    Ok(u.into_iter().map(|e| e.flatten()).collect())
}

/// Constants of the channel layout on grid `g`: a scalar per ciphertext where the constant is
/// the same on every element the ciphertext holds, else its slot vector (tiled into replicas).
struct ChannelConsts {
    g: Grid,
}

impl ConstPlacer for ChannelConsts {
    fn layout(&self) -> LayoutKind {
        KIND
    }
    fn place(&self, t: &Tensor, shape: &[usize], flats: &[usize]) -> Result<Vec<CtConst>> {
        let u = per_ct_uniform(shape, t, self.g)?;
        let mut vs: Option<Vec<Vec<f64>>> = None;
        flats
            .iter()
            .map(|&i| match u.get(i).copied().flatten() {
                Some(c) => Ok(CtConst::Scalar(c)),
                None => {
                    if vs.is_none() {
                        vs = Some(const_vectors(shape, t, self.g)?);
                    }
                    vs.as_ref()
                        .and_then(|v| v.get(i))
                        .map(|v| CtConst::Slots(v.clone()))
                        .ok_or_else(|| exec_err(format!("constant for ciphertext {i} missing")))
                }
            })
            .collect()
    }
}

fn grid(p: &super::Placement) -> Result<Grid> {
    p.grid()
        .ok_or_else(|| exec_err("a channel-layout node with a non-grid placement"))
}

impl LayoutRules for ChannelLayout {
    fn kind(&self) -> LayoutKind {
        KIND
    }

    fn check_supported(&self, graph: &Graph) -> Result<()> {
        place::check_supported(graph)
    }

    fn required_slots(&self, graph: &Graph, _images: usize) -> Result<usize> {
        place::required_slots(graph)
    }

    fn images_per_run(&self, _wanted: usize, _slots: usize) -> usize {
        1
    }

    /// Rotations mix every slot of a ciphertext: all of them.
    fn slots_for_magnitudes(&self, plan: &LayoutPlan, _images: usize) -> usize {
        plan.room.slots
    }

    fn plan(&self, graph: &Graph, room: Room, _images: usize) -> Result<LayoutPlan> {
        place::plan(graph, room)
    }

    fn candidates(&self, graph: &Graph, room: Room, _images: usize) -> Result<Vec<LayoutPlan>> {
        place::candidates(graph, room)
    }
}

impl<B: Backend> Layout<B> for ChannelLayout {
    fn eval_node(
        &self,
        b: &B,
        at: NodeCtx<'_>,
        inputs: &[&Packed<B::Ct>],
    ) -> Result<Packed<B::Ct>> {
        let node = at.node;
        let out_shape = at.out_shape().to_vec();
        let x = *inputs
            .first()
            .ok_or_else(|| NnError::InvalidGraph(format!("node '{}' has no input", node.name)))?;
        let gi = grid(at.input(0)?)?;
        let go = grid(at.output()?)?;
        if x.cts.len() != gi.c {
            return Err(ExecError::CiphertextCount {
                what: "input",
                expected: gi.c,
                got: x.cts.len(),
            }
            .into());
        }
        let same = |cts: Vec<B::Ct>, mult: f64| Packed {
            shape: out_shape.clone(),
            cts,
            mult,
        };
        match &node.op {
            Op::Conv2d(c) => Ok(same(conv::conv2d(b, c, x, gi, go)?, 1.0)),
            Op::Linear(l) => Ok(same(fc::linear(b, l, x, gi, go)?, 1.0)),
            Op::AvgPool(p) => {
                let (cts, m) = pool::avg_pool(b, p, x, gi, go)?;
                Ok(same(cts, m))
            }
            Op::GlobalAvgPool => {
                let area = (gi.h * gi.w).max(1) as f64;
                Ok(same(pool::spatial_sum(b, &x.cts, gi)?, x.mult / area))
            }
            Op::ReduceSum { axes, .. } => {
                let mut cts = if axes.contains(&2) {
                    pool::spatial_sum(b, &x.cts, gi)?
                } else {
                    x.cts.clone()
                };
                if axes.contains(&1) {
                    cts = vec![pool::sum_all(b, &cts)?];
                }
                Ok(same(cts, x.mult))
            }
            Op::Activation(_) => Err(at.unsupported(
                KIND,
                "non-polynomial activation: replace it with a fitted polynomial first (`henn approximate MODEL.onnx --calib DATASET:N --uniform 4 -o OUT.onnx`)",
            )),
            Op::BatchNorm(_)
            | Op::Reshape { .. }
            | Op::Identity
            | Op::Add
            | Op::Mul
            | Op::AddConst(_)
            | Op::MulConst(_)
            | Op::Pow { .. }
            | Op::Polynomial { .. }
            | Op::Chebyshev { .. } => {
                if let Some(y) = inputs.get(1)
                    && y.cts.len() != x.cts.len()
                {
                    return Err(at.unsupported(KIND, "operands with different ciphertext counts"));
                }
                let op =
                    Elementwise::of(node).ok_or_else(|| exec_err("element-wise op expected"))?;
                let views: Vec<View<'_, B::Ct>> = inputs.iter().map(|p| View::of(p)).collect();
                let all: Vec<usize> = (0..x.cts.len()).collect();
                let (cts, mult) =
                    elementwise::eval(b, node, &op, &views, &all, &ChannelConsts { g: gi })?;
                Ok(same(cts, mult))
            }
        }
    }
}
