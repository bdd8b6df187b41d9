//! Channel-wise packing: one ciphertext per channel, the `H x W` image row-major in the slots.
//!
//! Every value has a [`Grid`]: element `(c, i, j)` of a `[1, C, H, W]` value (flat index
//! `f = (c H + i) W + j` for any other shape) lives in ciphertext `c`, slot `i ry + j rx`.
//! The input has `rx = 1`, `ry = W`. A strided convolution or pooling keeps its output where
//! its anchor pixel was (a *gapped* layout: `rx`, `ry` multiply by the strides) instead of
//! compacting; the next layer scales its rotation steps accordingly. Slots off the grid hold
//! garbage (biases, activations of it); every layer that reads across slots masks it away or
//! reads only grid positions.
//!
//! * Convolution: for each input ciphertext, one hoisted batch of rotations (one per tap
//!   `(dy, dx)`, step `dy ry + dx rx`); each output channel is `sum_{i,tap} mask ⊙ rot_i,tap`
//!   with plaintext weight masks (zero where the tap falls in the padding), accumulated at
//!   scale `Δ q_l` and rescaled once: one level.
//! * Pooling without padding and global pooling: separable rotate-and-add (no level);
//!   padded average pooling uses masks like a depthwise convolution (one level).
//! * Fully connected: reads the gapped layout directly. The input span is rounded up to a
//!   power of two `s` and each input ciphertext is replicated into `slots / s` blocks by
//!   hoisted rotations; the masks place output `j`'s partial products in its block, so one
//!   rotate-and-sum (`log2 s` rotations) reduces every output of a ciphertext at once; output
//!   `j` ends in slot `s * (j mod blocks)` of ciphertext `j / blocks`. One level.
//! * Element-wise ops (polynomials, squares, residual additions) are the batch layout's
//!   per-ciphertext code.

use std::sync::Arc;

use henn_ckks::Scale;
use rayon::prelude::*;

use super::batch::{add_aligned, polynomial};
use super::{Layout, Packed};
use crate::error::{NnError, Result};
use crate::exec::{Backend, LayerStat, scale_of};
use crate::ir::{AvgPool, Conv2d, Graph, Linear, Node, Op};
use crate::tensor::{Tensor, numel};

/// The channel-wise layout.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChannelLayout;

const LAYOUT: &str = "channel";

fn unsupported(node: &Node, hint: impl Into<String>) -> NnError {
    NnError::UnsupportedForLayout {
        node: node.name.clone(),
        op: node.op.kind().to_string(),
        layout: LAYOUT.into(),
        hint: hint.into(),
    }
}

fn exec_err(msg: impl Into<String>) -> NnError {
    NnError::Exec(msg.into())
}

/// Where a value's elements live: flat index `f = (c h + i) w + j` is in ciphertext `c`,
/// slot `i ry + j rx`. `c h w` may exceed the element count (a partly filled last
/// ciphertext after a fully connected layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Ciphertexts (channels).
    pub c: usize,
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
    /// Slot step between rows.
    pub ry: usize,
    /// Slot step between columns (the gap).
    pub rx: usize,
    /// Channels per ciphertext (multiplexed): channel `ch` is in ciphertext `ch / k`, block
    /// `ch % k` at slot offset `(ch % k) bs`. 1 for one channel per ciphertext.
    pub k: usize,
    /// Slot stride of the blocks (multiplexed channels or replicas).
    pub bs: usize,
    /// Copies of each ciphertext's content at slot offsets `r bs`, `r < reps` (the input is
    /// encrypted replicated so that a later convolution can put a different output channel
    /// in each block); 1 when not replicated. Only for `k = 1`.
    pub reps: usize,
}

impl Grid {
    /// A one-channel-per-ciphertext grid without replicas.
    pub fn plain(c: usize, h: usize, w: usize, ry: usize, rx: usize) -> Self {
        Grid {
            c,
            h,
            w,
            ry,
            rx,
            k: 1,
            bs: 0,
            reps: 1,
        }
    }

    fn slot(&self, i: usize, j: usize) -> usize {
        i * self.ry + j * self.rx
    }

    /// Slots `[0, span)` of one block hold the image grid.
    fn image_span(&self) -> usize {
        if self.h == 0 || self.w == 0 {
            0
        } else {
            self.slot(self.h - 1, self.w - 1) + 1
        }
    }

    /// Slots `[0, span)` hold every element (all blocks of a multiplexed grid; replicas, which
    /// only repeat block 0, are not counted).
    pub fn span(&self) -> usize {
        self.image_span() + (self.k.max(1) - 1) * self.bs
    }

    /// `(ciphertext, slot)` of flat element `f` (in block 0 of replicated values).
    pub fn locate(&self, f: usize) -> (usize, usize) {
        let per = (self.h * self.w).max(1);
        let r = f % per;
        let ch = f / per;
        let k = self.k.max(1);
        (
            ch / k,
            (ch % k) * self.bs + self.slot(r / self.w.max(1), r % self.w.max(1)),
        )
    }

    /// Repeats a slot vector of block 0 (at most `bs` long) into every replica.
    fn tile(&self, v: Vec<f64>) -> Vec<f64> {
        if self.reps <= 1 {
            return v;
        }
        let mut out = vec![0.0; (self.reps - 1) * self.bs + v.len()];
        for r in 0..self.reps {
            if let Some(dst) = out.get_mut(r * self.bs..r * self.bs + v.len()) {
                dst.copy_from_slice(&v);
            }
        }
        out
    }

    fn matches_nchw(&self, shape: &[usize]) -> bool {
        self.k == 1
            && shape.len() == 4
            && shape[0] == 1
            && shape[1] == self.c
            && shape[2] == self.h
            && shape[3] == self.w
    }
}

/// Smallest data prime (bits) for which convolutions multiplex their outputs: the block
/// masks split the prime between weights and mask (see [`split_scale`]); at 34 bits and
/// N = 2^14 the weights keep 14 bits relative to each channel's largest, the masks ~15.
pub const MUX_MIN_PRIME_BITS: u32 = 34;

/// Bits of the rescale prime moved from the weights to the block masks of a multiplexed
/// convolution, relative to [`split_scale`].
const MUX_MASK_EXTRA_BITS: f64 = 2.0;

/// What the layout decisions depend on besides the graph: the slot count and the size in bits
/// (rounded up) of the first scale-sized prime `q_1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Slots per ciphertext (N/2).
    pub slots: usize,
    /// `ceil(log2(q_1))`.
    pub prime_bits: u32,
}

impl Room {
    /// The room of a parameter set.
    pub fn of_params(p: &henn_ckks::CkksParams) -> Self {
        let q1 = p.q().get(1).or_else(|| p.q().first()).copied().unwrap_or(2);
        Room {
            slots: p.slots(),
            prime_bits: (q1 as f64).log2().ceil() as u32,
        }
    }

    /// The room a backend computes in.
    pub fn of_backend<B: Backend>(b: &B) -> Self {
        let q1 = b.prime(1).or_else(|_| b.prime(0)).unwrap_or(2.0);
        Room {
            slots: b.slots(),
            prime_bits: q1.log2().ceil() as u32,
        }
    }

    fn multiplex(&self) -> bool {
        self.prime_bits >= MUX_MIN_PRIME_BITS
    }
}

fn check_grid(node: Option<&Node>, g: Grid, slots: Option<usize>) -> Result<()> {
    let name = node.map_or("input", |n| n.name.as_str());
    if g.rx == 0 || g.ry == 0 || (g.h > 1 && (g.w.saturating_sub(1)) * g.rx >= g.ry) {
        let msg =
            format!("output grid {g:?} overlaps itself (output larger than the input image?)");
        return Err(match node {
            Some(n) => unsupported(n, msg),
            None => exec_err(format!("{name}: {msg}")),
        });
    }
    if let Some(n) = slots
        && g.span() > n
    {
        return Err(exec_err(format!(
            "{name}: the channel layout needs {} slots, only {n} available",
            g.span()
        )));
    }
    Ok(())
}

fn spatial(node: &Node, shape: &[usize], g: Grid) -> Result<()> {
    if g.matches_nchw(shape) {
        Ok(())
    } else {
        Err(unsupported(
            node,
            format!("needs an NCHW input laid out as an image, got shape {shape:?} on grid {g:?}"),
        ))
    }
}

/// Block stride and blocks per ciphertext of a fully connected layer reading grid `g`.
fn fc_blocks(g: Grid, out: usize, slots: Option<usize>) -> Result<(usize, usize)> {
    let s = g.span().max(1).next_power_of_two();
    let avail = match slots {
        Some(n) => n / s,
        None => 1,
    };
    if avail == 0 {
        return Err(exec_err(format!(
            "fully connected layer over {s} slots does not fit in {slots:?} slots"
        )));
    }
    Ok((s, avail.min(out.max(1))))
}

/// The input's grid: one channel per ciphertext, `H x W` row-major. With the room known and
/// large enough (primes of at least [`MUX_MIN_PRIME_BITS`]) and a convolution that can
/// multiplex its output (see [`multiplexable`]), the input is replicated into `slots / bs`
/// blocks of `bs = 2^ceil(log2(H W))` slots.
fn input_grid(graph: &Graph, room: Option<Room>) -> Result<Grid> {
    let s = graph.input_shape();
    let mut g = match s {
        [1, c, h, w] => Grid::plain(*c, *h, *w, *w, 1),
        [1, f] => Grid::plain(1, 1, *f, *f, 1),
        _ => {
            return Err(exec_err(format!(
                "channel layout: input shape {s:?} is neither [1, C, H, W] nor [1, F]"
            )));
        }
    };
    let bs = g.image_span().max(1).next_power_of_two();
    if let Some(Room { slots: n, .. }) = room.filter(Room::multiplex)
        && n / bs >= 2
    {
        let mux = multiplexable(graph);
        let wanted = graph.nodes().iter().any(|node| {
            matches!(&node.op, Op::Conv2d(c) if c.weight.shape().first().copied().unwrap_or(0) >= 2)
                && mux.get(node.output).copied().unwrap_or(false)
        });
        if wanted {
            g.bs = bs;
            g.reps = n / bs;
        }
    }
    Ok(g)
}

/// Per value: whether it may be laid out multiplexed (several channels per ciphertext) and
/// gains from it: every consumer, transitively, is an element-wise op that treats all
/// channels alike (polynomials, powers, squares, uniform constants, reshapes) ending in a
/// fully connected layer or the graph output, with at least one polynomial, power or product
/// on the way (the work that fewer ciphertexts save).
pub fn multiplexable(graph: &Graph) -> Vec<bool> {
    let nv = graph.values().len();
    let mut safe = vec![true; nv];
    let mut work = vec![false; nv];
    for node in graph.nodes().iter().rev() {
        let out = node.output;
        let (ok, w) = match &node.op {
            Op::Linear(_) => (true, false),
            Op::Polynomial { .. } | Op::Pow { .. } => (safe[out], true),
            Op::Identity | Op::Reshape { .. } => (safe[out], work[out]),
            Op::AddConst(t) | Op::MulConst(t) if t.as_uniform().is_some() => (safe[out], work[out]),
            Op::Mul | Op::Add if node.inputs.iter().all(|&v| Some(&v) == node.inputs.first()) => {
                (safe[out], matches!(node.op, Op::Mul) || work[out])
            }
            _ => (false, false),
        };
        for &v in &node.inputs {
            if let Some(sv) = safe.get_mut(v) {
                *sv &= ok;
            }
            if let Some(wv) = work.get_mut(v) {
                *wv |= w;
            }
        }
    }
    safe.iter().zip(&work).map(|(&s, &w)| s && w).collect()
}

/// How many copies of the image the client packs into each input ciphertext (1: none): the
/// plan records it, [`pack_inputs`] needs it.
pub fn input_replicas(graph: &Graph, room: Room) -> Result<usize> {
    let gs = grids(graph, Some(room))?;
    Ok(gs
        .get(graph.input())
        .copied()
        .flatten()
        .map_or(1, |g| g.reps))
}

/// The grid of every value (`None` for values no node computes), with `slots` known (at
/// execution) or not (structural check only).
pub fn grids(graph: &Graph, room: Option<Room>) -> Result<Vec<Option<Grid>>> {
    match grids_with(graph, room, true)? {
        Some(gs) => Ok(gs),
        // a value outgrew its replica block (an output larger than the input image): the
        // same graph without replicas and multiplexing
        None => grids_with(graph, room, false)?
            .ok_or_else(|| exec_err("channel layout: replicas without replication")),
    }
}

/// [`grids`], with the input replicated where that pays (`replicate`); `None` when some
/// replicated or multiplexed value's image does not fit its block.
fn grids_with(
    graph: &Graph,
    room: Option<Room>,
    replicate: bool,
) -> Result<Option<Vec<Option<Grid>>>> {
    let slots = room.map(|r| r.slots);
    let mut gs: Vec<Option<Grid>> = vec![None; graph.values().len()];
    let g0 = input_grid(graph, room.filter(|_| replicate))?;
    check_grid(None, g0, slots)?;
    let mux = multiplexable(graph);
    if let Some(v) = gs.get_mut(graph.input()) {
        *v = Some(g0);
    }
    for node in graph.nodes() {
        let get = |i: usize| -> Result<Grid> {
            node.inputs
                .get(i)
                .and_then(|&v| gs.get(v).copied().flatten())
                .ok_or_else(|| {
                    NnError::InvalidGraph(format!("node '{}': input {i} has no layout", node.name))
                })
        };
        let g = get(0)?;
        let in_shape = node.inputs.first().map_or(&[][..], |&v| graph.shape(v));
        let out_shape = graph.shape(node.output);
        let out = match &node.op {
            Op::Conv2d(c) => {
                spatial(node, in_shape, g)?;
                let co = out_shape[1];
                let mut o = Grid {
                    c: co,
                    h: out_shape[2],
                    w: out_shape[3],
                    ry: g.ry * c.stride[0],
                    rx: g.rx * c.stride[1],
                    ..g
                };
                if g.reps >= 2 && co >= 2 && mux.get(node.output).copied().unwrap_or(false) {
                    // one output channel per replica block
                    let k = co.div_ceil(co.div_ceil(g.reps));
                    o = Grid {
                        c: co.div_ceil(k),
                        k,
                        reps: 1,
                        ..o
                    };
                }
                check_grid(Some(node), o, slots)?;
                o
            }
            Op::AvgPool(p) => {
                spatial(node, in_shape, g)?;
                let o = Grid {
                    c: out_shape[1],
                    h: out_shape[2],
                    w: out_shape[3],
                    ry: g.ry * p.stride[0],
                    rx: g.rx * p.stride[1],
                    ..g
                };
                check_grid(Some(node), o, slots)?;
                o
            }
            Op::GlobalAvgPool => {
                spatial(node, in_shape, g)?;
                Grid { h: 1, w: 1, ..g }
            }
            Op::ReduceSum { axes, .. } => {
                spatial(node, in_shape, g)?;
                let (h2, w2) = (axes.contains(&2), axes.contains(&3));
                if h2 != w2 {
                    return Err(unsupported(
                        node,
                        "sums over H or W alone are not supported: sum over both",
                    ));
                }
                let mut o = if h2 { Grid { h: 1, w: 1, ..g } } else { g };
                if axes.contains(&1) {
                    o.c = 1;
                }
                o
            }
            Op::Linear(l) => {
                let rows: usize = in_shape
                    .iter()
                    .take(in_shape.len().saturating_sub(1))
                    .product();
                if rows != 1 {
                    return Err(unsupported(
                        node,
                        format!(
                            "Linear over an input of shape {in_shape:?}: flatten to [1, features] first"
                        ),
                    ));
                }
                let m = l.weight.shape().first().copied().unwrap_or(0);
                let (s, bl) = fc_blocks(g, m, slots)?;
                Grid::plain(m.div_ceil(bl), 1, bl, s * bl, s)
            }
            Op::BatchNorm(_) => {
                spatial(node, in_shape, g)?;
                g
            }
            Op::Activation(_) => {
                return Err(unsupported(
                    node,
                    "non-polynomial activation: replace it with a polynomial approximation first",
                ));
            }
            Op::Add | Op::Mul => {
                let g1 = get(1)?;
                if g1 != g || graph.shape(node.inputs[1]) != in_shape {
                    return Err(unsupported(
                        node,
                        format!(
                            "element-wise op on values in different layouts ({g:?} vs {g1:?}) or shapes"
                        ),
                    ));
                }
                g
            }
            Op::Reshape { .. }
            | Op::Identity
            | Op::AddConst(_)
            | Op::MulConst(_)
            | Op::Pow { .. }
            | Op::Polynomial { .. } => g,
            #[allow(unreachable_patterns)]
            _ => return Err(unsupported(node, "op not supported by the channel layout")),
        };
        if (out.reps > 1 || out.k > 1) && out.image_span() > out.bs {
            return Ok(None);
        }
        if let Some(v) = gs.get_mut(node.output) {
            *v = Some(out);
        }
    }
    Ok(Some(gs))
}

/// Checks that every node of `graph` is supported by the channel layout (before any work;
/// the slot count is checked at execution).
pub fn check_supported(graph: &Graph) -> Result<()> {
    grids(graph, None).map(|_| ())
}

/// The smallest slot count the layout needs for `graph` (the largest grid span).
pub fn required_slots(graph: &Graph) -> Result<usize> {
    Ok(grids(graph, None)?
        .iter()
        .flatten()
        .map(Grid::span)
        .max()
        .unwrap_or(1))
}

/// Slot vectors of the channel-packed input (one per channel, `H x W` row-major, repeated
/// `replicas` times at stride `slots / replicas`, see [`input_replicas`]). Accepts
/// `[1, C, H, W]`, `[C, H, W]` or `[1, F]` tensors.
pub fn pack_inputs(image: &Tensor, replicas: usize, slots: usize) -> Result<Vec<Vec<f64>>> {
    let s = image.shape();
    let (c, hw) = match s {
        [1, c, h, w] | [c, h, w] => (*c, h * w),
        [1, f] => (1, *f),
        _ => {
            return Err(exec_err(format!(
                "channel layout: cannot pack an input of shape {s:?}"
            )));
        }
    };
    let reps = replicas.max(1);
    let bs = slots / reps;
    if reps > 1 && (bs < hw || bs * reps != slots) {
        return Err(exec_err(format!(
            "cannot replicate a {hw}-slot image {reps} times in {slots} slots"
        )));
    }
    Ok((0..c)
        .map(|i| {
            let one = &image.data()[i * hw..(i + 1) * hw];
            if reps == 1 {
                return one.to_vec();
            }
            let mut v = vec![0.0; (reps - 1) * bs + hw];
            for r in 0..reps {
                v[r * bs..r * bs + hw].copy_from_slice(one);
            }
            v
        })
        .collect())
}

/// Unpacks the decrypted output slot vectors of `graph` (executed with `slots` slots) into the
/// flat output, applying the multiplier.
pub fn unpack_outputs(
    graph: &Graph,
    room: Room,
    decoded: &[Vec<f64>],
    mult: f64,
) -> Result<Vec<f64>> {
    unpack_value(graph, graph.output(), room, decoded, mult)
}

/// Unpacks the decrypted slot vectors of value `value` of `graph` (any node's output) into
/// its flat elements, applying the multiplier.
pub fn unpack_value(
    graph: &Graph,
    value: usize,
    room: Room,
    decoded: &[Vec<f64>],
    mult: f64,
) -> Result<Vec<f64>> {
    let gs = grids(graph, Some(room))?;
    let g = gs
        .get(value)
        .copied()
        .flatten()
        .ok_or_else(|| exec_err(format!("value {value} has no layout")))?;
    (0..numel(graph.shape(value)))
        .map(|f| {
            let (c, s) = g.locate(f);
            decoded
                .get(c)
                .and_then(|v| v.get(s))
                .map(|v| v * mult)
                .ok_or_else(|| {
                    exec_err(format!(
                        "element {f} of value {value} (ciphertext {c}, slot {s}) missing"
                    ))
                })
        })
        .collect()
}

fn par_map<T: Send>(n: usize, f: impl Fn(usize) -> Result<T> + Sync + Send) -> Result<Vec<T>> {
    (0..n).into_par_iter().map(f).collect()
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

/// The rotated copies of `x`, one per step (zero steps reuse `x`), one hoisted batch.
fn rotations<B: Backend>(b: &B, x: &B::Ct, steps: &[i64]) -> Result<Vec<B::Ct>> {
    let nz: Vec<i64> = steps.iter().copied().filter(|&k| k != 0).collect();
    let mut rots = if nz.is_empty() {
        Vec::new()
    } else {
        b.rotate_hoisted(x, &nz)?
    }
    .into_iter();
    steps
        .iter()
        .map(|&k| {
            if k == 0 {
                Ok(x.clone())
            } else {
                rots.next().ok_or_else(|| exec_err("missing rotation"))
            }
        })
        .collect()
}

/// A window tap: its rotation step and, per output position, the output slot and whether
/// the tapped input pixel is inside the image.
struct Tap {
    ky: usize,
    kx: usize,
    step: i64,
    /// `(output slot, inside)` for every output pixel.
    cover: Vec<(usize, bool)>,
}

/// Taps of a `kh x kw` window with `stride` and `pads` from grid `gi` to grid `go`.
fn taps(gi: Grid, go: Grid, kernel: [usize; 2], stride: [usize; 2], pads: [usize; 4]) -> Vec<Tap> {
    let mut v = Vec::with_capacity(kernel[0] * kernel[1]);
    for ky in 0..kernel[0] {
        for kx in 0..kernel[1] {
            let dy = ky as i64 - pads[0] as i64;
            let dx = kx as i64 - pads[1] as i64;
            let step = dy * gi.ry as i64 + dx * gi.rx as i64;
            let mut cover = Vec::with_capacity(go.h * go.w);
            for oy in 0..go.h {
                for ox in 0..go.w {
                    let iy = (oy * stride[0]) as i64 + dy;
                    let ix = (ox * stride[1]) as i64 + dx;
                    let inside = iy >= 0 && iy < gi.h as i64 && ix >= 0 && ix < gi.w as i64;
                    cover.push((go.slot(oy, ox), inside));
                }
            }
            v.push(Tap {
                ky,
                kx,
                step,
                cover,
            });
        }
    }
    v.retain(|t| t.cover.iter().any(|c| c.1));
    v
}

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
    b.mul_const_scaled_assign(&mut ones, 0.0, scale_of(1.0)?)?;
    b.add_const_assign(&mut ones, 1.0)?;
    b.mul_plain_scaled_assign(&mut ones, v, cs)?;
    b.add_assign(acc, &ones)
}

/// A ciphertext of zeros at the level and scale a one-level linear layer on `x` produces.
fn zero_like<B: Backend>(b: &B, x: &B::Ct) -> Result<B::Ct> {
    b.mul_const(x, 0.0)
}

/// Splits the rescale-neutral constant scale `q` of a masked border tap into a scale for the
/// (normalised) scalar weights and one for the 0/1 mask plaintext, balancing the weight
/// rounding error `1 / (2 wc)` against the mask encoding error `~ sqrt(N / 12) / ms`.
fn split_scale(q: f64, slots: usize) -> Result<(Scale, Scale)> {
    let n = (2 * slots.max(1)) as f64;
    let k = ((q.log2() - (2.0 * (n / 12.0).sqrt()).log2()) / 2.0)
        .round()
        .max(1.0);
    let wc = k.exp2();
    Ok((scale_of(wc)?, scale_of(q / wc)?))
}

/// Convolution. Taps inside the image at every output pixel are scalar products
/// (`mul_const_add`, no plaintext); a tap that falls into the padding somewhere sums its
/// scalar-weighted rotations over the inputs first and multiplies that sum once by the tap's
/// 0/1 mask (one cached plaintext per tap), the constant scale `q` split between weights and
/// mask (see [`split_scale`]). Everything accumulates at scale `x.scale * q`; one rescale.
fn conv2d<B: Backend>(
    b: &B,
    c: &Conv2d,
    x: &Packed<B::Ct>,
    gi: Grid,
    go: Grid,
) -> Result<Vec<B::Ct>> {
    let ws = c.weight.shape();
    let (co, ci, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    if x.cts.len() != ci || gi.c != ci {
        return Err(exec_err(format!(
            "convolution expects {ci} input ciphertexts, got {}",
            x.cts.len()
        )));
    }
    let x0 = x
        .cts
        .first()
        .ok_or_else(|| exec_err("convolution without input ciphertexts"))?;
    let tp = taps(gi, go, [kh, kw], c.stride, c.pads);
    let steps: Vec<i64> = tp.iter().map(|t| t.step).collect();
    let rots: Vec<Vec<B::Ct>> = par_map(ci, |i| rotations(b, &x.cts[i], &steps))?;
    let wd = c.weight.data();
    let m = x.mult;
    let weight = |o: usize, i: usize, t: &Tap| wd[((o * ci + i) * kh + t.ky) * kw + t.kx] * m;
    let level = b.level(x0);
    let cs = b.neutral_scale(x0)?;
    let (wc, ms) = split_scale(b.prime(level)?, b.slots())?;
    let wmax = wd.iter().fold(0.0f64, |a, &w| a.max((w * m).abs()));
    if go.k > 1 {
        // the block masks have many more non-zero slots than a border tap's: their encoding
        // error dominates at the border-tap split, two bits more for the mask measured best
        // (mnist_cnn3_swish4: output max error 2.6e-3 -> 1.3e-3)
        let shift = MUX_MASK_EXTRA_BITS.exp2();
        let taps = MuxTaps {
            tp: &tp,
            rots: &rots,
            weight: &weight,
            wc: scale_of(wc.value() / shift)?,
            ms: scale_of(ms.value() * shift)?,
            cs,
            level,
        };
        return conv2d_multiplexed(b, c, x0, &taps, go, co, ci);
    }
    let span = go.span();
    let masks: Vec<Option<Arc<B::Pt>>> = tp
        .iter()
        .map(|t| {
            if t.cover.iter().all(|c| c.1) || wmax == 0.0 {
                return Ok(None);
            }
            let mut v = vec![0.0; span];
            for &(s, inside) in &t.cover {
                if inside {
                    v[s] = wmax;
                }
            }
            b.encode_cached(&go.tile(v), level, ms).map(Some)
        })
        .collect::<Result<_>>()?;
    // taps inside the image: one matrix of scalar products over every (tap, input) rotation
    let full: Vec<usize> = (0..tp.len()).filter(|&t| masks[t].is_none()).collect();
    let accs: Vec<Option<B::Ct>> = if full.is_empty() {
        vec![None; co]
    } else {
        let xs: Vec<&B::Ct> = full
            .iter()
            .flat_map(|&t| rots.iter().map(move |ri| &ri[t]))
            .collect();
        let w: Vec<f64> = (0..co)
            .flat_map(|o| {
                full.iter()
                    .flat_map(move |&t| (0..ci).map(move |i| (o, i, t)))
            })
            .map(|(o, i, t)| weight(o, i, &tp[t]))
            .collect();
        b.mul_const_matrix(&xs, &w, co, cs)?
            .into_iter()
            .map(Some)
            .collect()
    };
    // taps touching the padding, per output (the partial sum stays in cache): scalar-weighted
    // sums over the inputs, then the tap's mask
    let accs: Vec<(usize, Option<B::Ct>)> = accs.into_iter().enumerate().collect();
    accs.into_par_iter()
        .map(|(o, mut acc)| {
            for (t, mask) in masks.iter().enumerate() {
                let Some(pt) = mask else { continue };
                let mut part: Option<B::Ct> = None;
                for (i, ri) in rots.iter().enumerate() {
                    let wv = weight(o, i, &tp[t]) / wmax;
                    if wv != 0.0 {
                        b.accumulate_const(&mut part, &ri[t], wv, wc)?;
                    }
                }
                if let Some(p) = part {
                    b.accumulate_pt(&mut acc, &p, pt)?;
                }
            }
            let mut out = match acc {
                Some(mut a) => {
                    b.rescale_assign(&mut a)?;
                    a
                }
                None => zero_like(b, x0)?,
            };
            let bias = bias_at(&c.bias, o);
            if bias != 0.0 {
                b.add_const_assign(&mut out, bias)?;
            }
            Ok(out)
        })
        .collect()
}

/// What [`conv2d_multiplexed`] shares with [`conv2d`]: the taps, the rotated inputs
/// (`rots[input][tap]`), the folded weights and the scales.
struct MuxTaps<'a, C, W: Fn(usize, usize, &Tap) -> f64> {
    tp: &'a [Tap],
    rots: &'a [Vec<C>],
    weight: &'a W,
    wc: Scale,
    ms: Scale,
    cs: Scale,
    level: usize,
}

/// A convolution whose output is multiplexed (`go.k` channels per ciphertext, channel
/// `g k + r` in block `r`) from a replicated input: every block of a rotated input holds the
/// same image, so output channel `o`'s scalar tap sums (weights normalised by `wmax`, at
/// scale `wc`) are computed as in [`conv2d`] and then multiplied by a 0/1 mask (`wmax` at
/// scale `ms`) of block `o mod k`'s output pixels, per tap for taps touching the padding.
/// All products are at `x.scale * wc * ms = x.scale * q`: still one rescale, one level.
/// Biases go in through an all-ones ciphertext times the per-block bias vector.
fn conv2d_multiplexed<B: Backend, W: Fn(usize, usize, &Tap) -> f64 + Sync>(
    b: &B,
    c: &Conv2d,
    x0: &B::Ct,
    t: &MuxTaps<'_, B::Ct, W>,
    go: Grid,
    co: usize,
    ci: usize,
) -> Result<Vec<B::Ct>> {
    let (k, bs) = (go.k, go.bs);
    let inside_all = |tap: &Tap| tap.cover.iter().all(|c| c.1);
    let full: Vec<usize> = (0..t.tp.len()).filter(|&i| inside_all(&t.tp[i])).collect();
    // each output channel's weights are normalised by their own largest magnitude (the
    // mask carries it), so that small channels keep their relative precision at scale wc
    let wmax: Vec<f64> = (0..co)
        .map(|o| {
            t.tp.iter()
                .flat_map(|tap| (0..ci).map(move |j| (t.weight)(o, j, tap).abs()))
                .fold(0.0f64, f64::max)
        })
        .collect();
    let norm = |o: usize| if wmax[o] == 0.0 { 0.0 } else { 1.0 / wmax[o] };
    let parts: Vec<Option<B::Ct>> = if full.is_empty() || wmax.iter().all(|&w| w == 0.0) {
        vec![None; co]
    } else {
        let xs: Vec<&B::Ct> = full
            .iter()
            .flat_map(|&i| t.rots.iter().map(move |ri| &ri[i]))
            .collect();
        let w: Vec<f64> = (0..co)
            .flat_map(|o| {
                full.iter()
                    .flat_map(move |&i| (0..ci).map(move |j| (o, j, i)))
            })
            .map(|(o, j, i)| (t.weight)(o, j, &t.tp[i]) * norm(o))
            .collect();
        b.mul_const_matrix(&xs, &w, co, t.wc)?
            .into_iter()
            .map(Some)
            .collect()
    };
    // output o's mask in block r: its wmax at the output pixels (all, or where the tap is
    // inside the image)
    let mask = |o: usize, r: usize, tap: &Tap, all: bool| -> Result<Arc<B::Pt>> {
        let mut v = vec![0.0; r * bs + go.image_span()];
        for &(s, inside) in &tap.cover {
            if all || inside {
                v[r * bs + s] = wmax[o];
            }
        }
        b.encode_cached(&v, t.level, t.ms)
    };
    let tap0 =
        t.tp.first()
            .ok_or_else(|| exec_err("convolution without taps"))?;
    par_map(go.c, |g| {
        let mut acc: Option<B::Ct> = None;
        let mut bias = vec![0.0; go.span()];
        let mut any_bias = false;
        for r in 0..k {
            let o = g * k + r;
            if o >= co {
                break;
            }
            if let Some(p) = &parts[o] {
                b.accumulate_pt(&mut acc, p, &*mask(o, r, tap0, true)?)?;
            }
            for (i, tap) in t.tp.iter().enumerate() {
                if inside_all(tap) || wmax[o] == 0.0 {
                    continue;
                }
                let mut part: Option<B::Ct> = None;
                for (j, rj) in t.rots.iter().enumerate() {
                    let wv = (t.weight)(o, j, tap) * norm(o);
                    if wv != 0.0 {
                        b.accumulate_const(&mut part, &rj[i], wv, t.wc)?;
                    }
                }
                if let Some(p) = part {
                    b.accumulate_pt(&mut acc, &p, &*mask(o, r, tap, false)?)?;
                }
            }
            let bv = bias_at(&c.bias, o);
            if bv != 0.0 {
                any_bias = true;
                for &(s, _) in &tap0.cover {
                    bias[r * bs + s] = bv;
                }
            }
        }
        let mut acc = b.sum_or_zero(acc, x0, t.cs)?;
        if any_bias {
            add_slot_constants(b, &mut acc, x0, &bias, t.cs)?;
        }
        b.rescale_assign(&mut acc)?;
        Ok(acc)
    })
}

/// Average pooling: rotate-and-add without padding (no level, multiplier `1/k^2`); with
/// padding, masked taps like a depthwise convolution (one level).
fn avg_pool<B: Backend>(
    b: &B,
    p: &AvgPool,
    x: &Packed<B::Ct>,
    gi: Grid,
    go: Grid,
) -> Result<(Vec<B::Ct>, f64)> {
    let [kh, kw] = p.kernel;
    let full = (kh * kw) as f64;
    if p.pads.iter().all(|&v| v == 0) {
        let cols: Vec<i64> = (0..kw).map(|kx| (kx * gi.rx) as i64).collect();
        let rows: Vec<i64> = (0..kh).map(|ky| (ky * gi.ry) as i64).collect();
        let cts = par_map(x.cts.len(), |i| {
            let r = rot_sum(b, &x.cts[i], &cols)?;
            rot_sum(b, &r, &rows)
        })?;
        return Ok((cts, x.mult / full));
    }
    let tp = taps(gi, go, p.kernel, p.stride, p.pads);
    let npix = go.h * go.w;
    let mut count = vec![0usize; npix];
    for t in &tp {
        for (k, c) in t.cover.iter().enumerate() {
            count[k] += usize::from(c.1);
        }
    }
    if count.contains(&0) {
        return Err(exec_err("average pooling window entirely in the padding"));
    }
    let div: Vec<f64> = count
        .iter()
        .map(|&c| if p.count_include_pad { full } else { c as f64 })
        .collect();
    let steps: Vec<i64> = tp.iter().map(|t| t.step).collect();
    let span = go.span();
    let m = x.mult;
    let x0 = x
        .cts
        .first()
        .ok_or_else(|| exec_err("pooling without input ciphertexts"))?;
    let (level, cs) = (b.level(x0), b.neutral_scale(x0)?);
    let masks: Vec<Arc<B::Pt>> = tp
        .iter()
        .map(|t| {
            let mut mask = vec![0.0; span];
            for (k, &(s, inside)) in t.cover.iter().enumerate() {
                if inside {
                    mask[s] = m / div[k];
                }
            }
            b.encode_cached(&go.tile(mask), level, cs)
        })
        .collect::<Result<_>>()?;
    let cts = par_map(x.cts.len(), |i| {
        let rots = rotations(b, &x.cts[i], &steps)?;
        let mut acc: Option<B::Ct> = None;
        for (pt, r) in masks.iter().zip(&rots) {
            b.accumulate_pt(&mut acc, r, pt)?;
        }
        let mut a = acc.ok_or_else(|| exec_err("empty pooling window"))?;
        b.rescale_assign(&mut a)?;
        Ok(a)
    })?;
    Ok((cts, 1.0))
}

/// Sum over the `h x w` grid of each ciphertext into slot 0 (separable rotate-and-add).
fn spatial_sum<B: Backend>(b: &B, x: &[B::Ct], g: Grid) -> Result<Vec<B::Ct>> {
    let cols: Vec<i64> = (0..g.w).map(|j| (j * g.rx) as i64).collect();
    let rows: Vec<i64> = (0..g.h).map(|i| (i * g.ry) as i64).collect();
    par_map(x.len(), |i| {
        let r = rot_sum(b, &x[i], &cols)?;
        rot_sum(b, &r, &rows)
    })
}

fn sum_all<B: Backend>(b: &B, x: &[B::Ct]) -> Result<B::Ct> {
    let (first, rest) = x.split_first().ok_or_else(|| exec_err("empty sum"))?;
    let mut acc = first.clone();
    for c in rest {
        b.add_assign(&mut acc, c)?;
    }
    Ok(acc)
}

/// Fully connected layer on the gapped layout (see the module docs).
fn linear<B: Backend>(
    b: &B,
    l: &Linear,
    x: &Packed<B::Ct>,
    gi: Grid,
    go: Grid,
) -> Result<Vec<B::Ct>> {
    let ws = l.weight.shape();
    let (m_out, k) = (ws[0], ws[1]);
    if x.cts.len() != gi.c {
        return Err(exec_err(format!(
            "fully connected layer expects {} input ciphertexts, got {}",
            gi.c,
            x.cts.len()
        )));
    }
    let (s, bl) = (go.rx, go.w);
    // input element positions, per input ciphertext
    let mut pos: Vec<Vec<(usize, usize)>> = vec![Vec::new(); gi.c];
    for f in 0..k {
        let (c, slot) = gi.locate(f);
        pos.get_mut(c)
            .ok_or_else(|| exec_err(format!("input element {f} outside the grid")))?
            .push((f, slot));
    }
    let wd = l.weight.data();
    let m = x.mult;
    let span_in = gi.span();
    let bias_of = |j: usize| bias_at(&l.bias, j);
    // Output j of a group goes to block j (slot j s). Two ways to get it there, rotations
    // being linear: rotate every input ciphertext into every block once (hoisted, shared by
    // all output groups: inputs x (blocks - 1) rotations), or sum output j's masked products
    // at block 0 and rotate that sum (groups x (blocks - 1) plain rotations). The second wins
    // when there are fewer groups than half the inputs (a wide layer to few outputs).
    let per_output = 2 * go.c < gi.c;
    let reps: Vec<Vec<B::Ct>> = if per_output {
        Vec::new()
    } else {
        let steps: Vec<i64> = (0..bl).map(|blk| -((blk * s) as i64)).collect();
        par_map(gi.c, |c| rotations(b, &x.cts[c], &steps))?
    };
    par_map(go.c, |g| {
        let x0 = &x.cts[0];
        let cs = b.neutral_scale(x0)?;
        let level = b.level(x0);
        let outs: Vec<usize> = (0..bl)
            .map(|blk| g * bl + blk)
            .filter(|&j| j < m_out)
            .collect();
        let parts: Vec<Option<B::Ct>> = (0..outs.len())
            .into_par_iter()
            .map(|blk| -> Result<Option<B::Ct>> {
                let j = outs[blk];
                let base = if per_output { 0 } else { blk * s };
                let mut acc: Option<B::Ct> = None;
                for (c, xc) in x.cts.iter().enumerate() {
                    let mut mask = vec![0.0; base + span_in];
                    let mut any = false;
                    for &(f, slot) in &pos[c] {
                        let wv = wd[j * k + f] * m;
                        if wv != 0.0 {
                            mask[base + slot] = wv;
                            any = true;
                        }
                    }
                    if !any {
                        continue;
                    }
                    let pt = b.encode_cached(&mask, level, cs)?;
                    let src = if per_output {
                        xc
                    } else {
                        reps.get(c)
                            .and_then(|r| r.get(blk))
                            .ok_or_else(|| exec_err("missing input replica"))?
                    };
                    b.accumulate_pt(&mut acc, src, &pt)?;
                }
                match acc {
                    Some(a) if per_output && blk > 0 => {
                        Ok(Some(b.rotate(&a, -((blk * s) as i64))?))
                    }
                    other => Ok(other),
                }
            })
            .collect::<Result<_>>()?;
        let mut acc: Option<B::Ct> = None;
        for p in parts.into_iter().flatten() {
            match acc.as_mut() {
                None => acc = Some(p),
                Some(a) => b.add_assign(a, &p)?,
            }
        }
        let packed_bias = outs.len() > 1 && outs.iter().any(|&j| bias_of(j) != 0.0);
        let mut acc = b.sum_or_zero(acc, x0, cs)?;
        if packed_bias {
            // biases placed at the block starts before the reduction
            let mut bv = vec![0.0; outs.len() * s];
            for (blk, &j) in outs.iter().enumerate() {
                bv[blk * s] = bias_of(j);
            }
            add_slot_constants(b, &mut acc, x0, &bv, cs)?;
        }
        b.rescale_assign(&mut acc)?;
        let mut t = 1;
        while t < s {
            let r = b.rotate(&acc, t as i64)?;
            b.add_assign(&mut acc, &r)?;
            t *= 2;
        }
        if let Some(&j) = outs.first()
            && !packed_bias
            && bias_of(j) != 0.0
        {
            b.add_const_assign(&mut acc, bias_of(j))?;
        }
        Ok(acc)
    })
}

/// Per-element constant of `t` broadcast to `shape`, as one slot vector per ciphertext.
fn const_vectors(shape: &[usize], t: &Tensor, g: Grid) -> Result<Vec<Vec<f64>>> {
    let full = Tensor::zeros(shape.to_vec())
        .broadcast_with(t, |_, c| c)?
        .into_data();
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
    let full = Tensor::zeros(shape.to_vec())
        .broadcast_with(t, |_, c| c)?
        .into_data();
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

impl<B: Backend> Layout<B> for ChannelLayout {
    fn name(&self) -> &'static str {
        LAYOUT
    }

    fn eval_node(
        &self,
        b: &B,
        graph: &Graph,
        node: &Node,
        inputs: &[&Packed<B::Ct>],
    ) -> Result<Packed<B::Ct>> {
        let gs = grids(graph, Some(Room::of_backend(b)))?;
        let grid_of = |v: usize| {
            gs.get(v)
                .copied()
                .flatten()
                .ok_or_else(|| exec_err(format!("value {v} has no layout")))
        };
        let out_shape = graph.shape(node.output).to_vec();
        let x = *inputs
            .first()
            .ok_or_else(|| NnError::InvalidGraph(format!("node '{}' has no input", node.name)))?;
        let gi = grid_of(
            *node
                .inputs
                .first()
                .ok_or_else(|| NnError::InvalidGraph("node without inputs".into()))?,
        )?;
        let go = grid_of(node.output)?;
        let same = |cts: Vec<B::Ct>, mult: f64| Packed {
            shape: out_shape.clone(),
            cts,
            mult,
        };
        match &node.op {
            Op::Conv2d(c) => Ok(same(conv2d(b, c, x, gi, go)?, 1.0)),
            Op::Linear(l) => Ok(same(linear(b, l, x, gi, go)?, 1.0)),
            Op::BatchNorm(bn) => {
                if gi.k > 1 {
                    return Err(unsupported(node, "batch norm on multiplexed channels"));
                }
                let (s, t) = bn.affine();
                let m = x.mult;
                let cts = par_map(x.cts.len(), |i| {
                    let (si, ti) = (
                        s.get(i).copied().unwrap_or(1.0),
                        t.get(i).copied().unwrap_or(0.0),
                    );
                    let mut r = b.mul_const(&x.cts[i], si * m)?;
                    b.add_const_assign(&mut r, ti)?;
                    Ok(r)
                })?;
                Ok(same(cts, 1.0))
            }
            Op::Reshape { .. } | Op::Identity => Ok(same(x.cts.clone(), x.mult)),
            Op::AvgPool(p) => {
                let (cts, m) = avg_pool(b, p, x, gi, go)?;
                Ok(same(cts, m))
            }
            Op::GlobalAvgPool => {
                let area = (gi.h * gi.w).max(1) as f64;
                Ok(same(spatial_sum(b, &x.cts, gi)?, x.mult / area))
            }
            Op::ReduceSum { axes, .. } => {
                let mut cts = if axes.contains(&2) {
                    spatial_sum(b, &x.cts, gi)?
                } else {
                    x.cts.clone()
                };
                if axes.contains(&1) {
                    cts = vec![sum_all(b, &cts)?];
                }
                Ok(same(cts, x.mult))
            }
            Op::Add => {
                let y = *inputs
                    .get(1)
                    .ok_or_else(|| NnError::InvalidGraph("Add needs two inputs".into()))?;
                if x.cts.len() != y.cts.len() {
                    return Err(unsupported(
                        node,
                        "operands with different ciphertext counts",
                    ));
                }
                let pairs: Vec<(B::Ct, f64)> = par_map(x.cts.len(), |i| {
                    add_aligned(b, &x.cts[i], x.mult, &y.cts[i], y.mult)
                })?;
                let mult = pairs.first().map_or(x.mult, |p| p.1);
                Ok(same(pairs.into_iter().map(|p| p.0).collect(), mult))
            }
            Op::Mul => {
                let y = *inputs
                    .get(1)
                    .ok_or_else(|| NnError::InvalidGraph("Mul needs two inputs".into()))?;
                if x.cts.len() != y.cts.len() {
                    return Err(unsupported(
                        node,
                        "operands with different ciphertext counts",
                    ));
                }
                if node.inputs.first() == node.inputs.get(1) {
                    Ok(same(
                        par_map(x.cts.len(), |i| b.square(&x.cts[i]))?,
                        x.mult * x.mult,
                    ))
                } else {
                    Ok(same(
                        par_map(x.cts.len(), |i| b.mul(&x.cts[i], &y.cts[i]))?,
                        x.mult * y.mult,
                    ))
                }
            }
            Op::AddConst(t) => {
                if x.mult == 0.0 {
                    return Err(exec_err(
                        "cannot add a constant to a value with multiplier 0",
                    ));
                }
                let u = per_ct_uniform(&x.shape, t, gi)?;
                let m = x.mult;
                let cts = par_map(x.cts.len(), |i| {
                    let c = u.get(i).copied().flatten().ok_or_else(|| {
                        unsupported(node, "a constant that varies within a channel cannot be added in the channel layout")
                    })?;
                    let mut r = x.cts[i].clone();
                    if c != 0.0 {
                        b.add_const_assign(&mut r, c / m)?;
                    }
                    Ok(r)
                })?;
                Ok(same(cts, m))
            }
            Op::MulConst(t) => match t.as_uniform() {
                Some(c) if c != 0.0 => Ok(same(x.cts.clone(), x.mult * c)),
                _ => {
                    let u = per_ct_uniform(&x.shape, t, gi)?;
                    let vs = const_vectors(&x.shape, t, gi)?;
                    let cts = par_map(x.cts.len(), |i| match u.get(i).copied().flatten() {
                        Some(c) => b.mul_const(&x.cts[i], c),
                        None => b.mul_plain(&x.cts[i], &vs[i]),
                    })?;
                    Ok(same(cts, x.mult))
                }
            },
            Op::Pow { exponent } => {
                let mut coeffs = vec![0.0; *exponent as usize + 1];
                if let Some(l) = coeffs.last_mut() {
                    *l = 1.0;
                }
                let r = polynomial(b, x, &coeffs)?;
                Ok(same(r.cts, r.mult))
            }
            Op::Polynomial { coeffs } => {
                let r = polynomial(b, x, coeffs)?;
                Ok(same(r.cts, r.mult))
            }
            _ => Err(unsupported(node, "op not supported by the channel layout")),
        }
    }
}

/// Runs `graph` on one image with channel packing on a slots backend over `primes` (input
/// scale `scale`, `slots` slots) and returns the flat output plus the per-layer stats.
pub fn run_slots(
    graph: &Graph,
    image: &Tensor,
    primes: Vec<f64>,
    scale: henn_ckks::Scale,
    slots: usize,
) -> Result<(Vec<f64>, Vec<LayerStat>)> {
    use crate::exec::slots::Slots;
    check_supported(graph)?;
    let room = Room {
        slots,
        prime_bits: primes.get(1).map_or(0, |q| q.log2().ceil() as u32),
    };
    let be = Slots::new(primes, slots);
    let cts = pack_inputs(image, input_replicas(graph, room)?, slots)?
        .iter()
        .map(|v| be.input(v, scale))
        .collect::<Result<Vec<_>>>()?;
    let input = Packed {
        shape: graph.input_shape().to_vec(),
        cts,
        mult: 1.0,
    };
    let (out, stats) = crate::exec::run(&be, &ChannelLayout, graph, input, |_, _| Ok(()))?;
    let decoded: Vec<Vec<f64>> = out.cts.iter().map(|c| c.v.clone()).collect();
    Ok((unpack_outputs(graph, room, &decoded, out.mult)?, stats))
}
