//! Placement planning of the channel layout: the [`Grid`] of every value for a [`Room`],
//! including the replicated input and multiplexed convolution outputs where they pay.

use super::KIND;
use crate::error::{ExecError, NnError, Result};
use crate::ir::{Graph, Node, Op};
use crate::pack::placement::count_placement;
use crate::pack::{Grid, LayoutPlan, Placement, Room};

fn unsupported(node: &Node, hint: impl Into<String>) -> NnError {
    crate::pack::unsupported(node, KIND, hint)
}

fn check_grid(node: Option<&Node>, g: Grid, slots: Option<usize>) -> Result<()> {
    if g.rx == 0 || g.ry == 0 || (g.h > 1 && (g.w.saturating_sub(1)) * g.rx >= g.ry) {
        let msg =
            format!("output grid {g:?} overlaps itself (output larger than the input image?)");
        return Err(match node {
            Some(n) => unsupported(n, msg),
            None => input_unsupported(msg),
        });
    }
    if let Some(n) = slots
        && g.span() > n
    {
        return Err(NnError::Exec {
            node: node.map_or("input", |n| n.name.as_str()).to_string(),
            source: ExecError::SlotOverflow {
                need: g.span(),
                have: n,
            },
        });
    }
    Ok(())
}

fn input_unsupported(hint: String) -> NnError {
    NnError::UnsupportedForLayout {
        node: "input".into(),
        op: "Input".into(),
        layout: KIND.name().into(),
        hint,
    }
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
pub(super) fn fc_blocks(g: Grid, out: usize, slots: Option<usize>) -> Result<(usize, usize)> {
    let s = g.span().max(1).next_power_of_two();
    let avail = match slots {
        Some(n) => n / s,
        None => 1,
    };
    if avail == 0 {
        return Err(ExecError::SlotOverflow {
            need: s,
            have: slots.unwrap_or(0),
        }
        .into());
    }
    Ok((s, avail.min(out.max(1))))
}

/// The input's grid: one channel per ciphertext, `H x W` row-major. With the room known and
/// a first convolution that multiplexes its output (in [`Mode::Lanes`], or see
/// [`multiplexable`]), the input is replicated into `slots / bs` blocks of
/// `bs = 2^ceil(log2(H W))` slots.
fn input_grid(graph: &Graph, room: Option<Room>, mode: Mode) -> Result<Grid> {
    let s = graph.input_shape();
    let mut g = match s {
        [1, c, h, w] => Grid::plain(*c, *h, *w, *w, 1),
        [1, f] => Grid::plain(1, 1, *f, *f, 1),
        _ => {
            return Err(input_unsupported(format!(
                "input shape {s:?} is neither [1, C, H, W] nor [1, F]"
            )));
        }
    };
    let bs = g.image_span().max(1).next_power_of_two();
    if let Some(Room { slots: n, .. }) = room
        && n / bs >= 2
    {
        let mux = multiplexable(graph);
        let wanted = graph.nodes().iter().any(|node| {
            matches!(&node.op, Op::Conv2d(c) if c.weight.shape().first().copied().unwrap_or(0) >= 2)
                && match mode {
                    // the first convolution reads the input: it multiplexes from replicas
                    Mode::Lanes { .. } | Mode::Gaps => node.inputs.first() == Some(&graph.input()),
                    _ => mux.get(node.output).copied().unwrap_or(false),
                }
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
            Op::Polynomial { .. } | Op::Chebyshev { .. } | Op::Pow { .. } => (safe[out], true),
            Op::Identity | Op::Reshape { .. } => (safe[out], work[out]),
            Op::AddConst(t) | Op::MulConst(t) => {
                if t.as_uniform().is_some() {
                    (safe[out], work[out])
                } else {
                    (false, false)
                }
            }
            Op::Mul | Op::Add => {
                if node.inputs.iter().all(|&v| Some(&v) == node.inputs.first()) {
                    (safe[out], matches!(node.op, Op::Mul) || work[out])
                } else {
                    (false, false)
                }
            }
            Op::Conv2d(_)
            | Op::BatchNorm(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool
            | Op::ReduceSum { .. }
            | Op::Activation(_) => (false, false),
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

/// How much multiplexing a placement pass may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Any convolution output may take several lanes per ciphertext (blocks and interleaved
    /// sub-lanes), chosen per layer by cost; the input is replicated for its first
    /// convolution. `eager`: a convolution reading replicas always multiplexes its output
    /// (else only where [`multiplexable`] says, keeping the replicas for the next one).
    Lanes { eager: bool },
    /// As `Lanes { eager: false }`, and a convolution reading replicas keeps them and fills
    /// the gaps its stride leaves with other channels (interleaved sub-lanes at the input's
    /// own pixel spacing), or, where its output only feeds channel-uniform work up to a fully
    /// connected layer, puts channels in both the blocks and their gaps: one product then
    /// serves every lane of a block at once (each sub-lane with its own tap).
    Gaps,
    /// Only convolutions from a replicated input feeding channel-uniform work up to a fully
    /// connected layer multiplex (blocks, see [`multiplexable`]).
    Replicated,
    /// One channel per ciphertext everywhere.
    Plain,
}

/// The grid of every value (`None` for values no node computes), with `slots` known (at
/// execution) or not (structural check only). Tries the most multiplexed placement first and
/// falls back to less where a value does not fit its block or two operands of an
/// element-wise op would differ.
pub fn grids(graph: &Graph, room: Option<Room>) -> Result<Vec<Option<Grid>>> {
    candidate_grids(graph, room)?
        .into_iter()
        .next()
        .ok_or_else(|| ExecError::Internal("channel layout: no placement".into()).into())
}

/// The distinct placements the channel layout can give `graph` in `room`, most multiplexed
/// first: lanes everywhere, lanes after keeping the replicas, replicated blocks before a fully
/// connected layer only, one channel per ciphertext everywhere. The planner picks one by cost.
pub fn candidate_grids(graph: &Graph, room: Option<Room>) -> Result<Vec<Vec<Option<Grid>>>> {
    let mut out: Vec<Vec<Option<Grid>>> = Vec::new();
    if room.is_some() {
        for mode in [
            Mode::Gaps,
            Mode::Lanes { eager: true },
            Mode::Lanes { eager: false },
        ] {
            if let Ok(Some(gs)) = grids_with(graph, room, mode) {
                out.push(gs);
            }
            // the same with every pooling that can fill its gaps repacked (one level each)
            if room.is_some_and(|r| r.repack)
                && let Ok(Some(gs)) = grids_with_repack(graph, room, mode, true)
            {
                out.push(gs);
            }
        }
    }
    out.push(fallback_grids(graph, room)?);
    if let Some(plain) = grids_with(graph, room, Mode::Plain)? {
        out.push(plain);
    }
    let mut distinct: Vec<Vec<Option<Grid>>> = Vec::with_capacity(out.len());
    for gs in out {
        if !distinct.contains(&gs) {
            distinct.push(gs);
        }
    }
    Ok(distinct)
}

/// Replicated blocks where [`multiplexable`] allows, else one channel per ciphertext.
fn fallback_grids(graph: &Graph, room: Option<Room>) -> Result<Vec<Option<Grid>>> {
    match grids_with(graph, room, Mode::Replicated)? {
        Some(gs) => Ok(gs),
        // a value outgrew its replica block (an output larger than the input image): the
        // same graph without replicas and multiplexing
        None => grids_with(graph, room, Mode::Plain)?.ok_or_else(|| {
            ExecError::Internal("channel layout: replicas without replication".into()).into()
        }),
    }
}

/// Ciphertexts' worth of downstream work per output ciphertext of a convolution (its
/// activation and the next layer's reads), in plain rotations: what fewer ciphertexts save.
const DOWNSTREAM_PER_CT: f64 = 4.0;

/// The output grid of a convolution from `gi` in [`Mode::Lanes`]: the multiplexed grid
/// (blocks of `bs` slots, the strided gaps filled with interleaved sub-lanes) when its cost
/// (rotations, products and encodings of [`super::mux::conv2d_lanes`] plus the downstream
/// work per ciphertext) is below one channel per ciphertext's; `None` for the latter.
fn lanes_output(
    c: &crate::ir::Conv2d,
    gi: Grid,
    spatial: Grid,
    co: usize,
    slots: usize,
) -> Option<Grid> {
    let ws = c.weight.shape();
    let (ci, kernel) = (ws[1], [ws[2], ws[3]]);
    let (ry, rx, w) = (spatial.ry, spatial.rx, spatial.w.max(1));
    let (ix, dx) = if rx > 1 { (rx, 1) } else { (1, 0) };
    let row = w * rx;
    let (iy, dy) = if spatial.h > 1 && ry >= 2 * row {
        (ry / row, row)
    } else {
        (1, 0)
    };
    let mut g = Grid {
        iy,
        ix,
        dy,
        dx,
        k: 1,
        reps: 1,
        bs: 0,
        ..spatial
    };
    let span = g.block_span().max(1).next_power_of_two();
    let bs = if gi.k > 1 { gi.bs.max(span) } else { span };
    g.bs = bs;
    let lanes = (slots / bs.max(1)) * g.per_block();
    if lanes < 2 || bs > slots {
        return None;
    }
    let k = co.div_ceil(co.div_ceil(lanes));
    let mux = Grid {
        c: co.div_ceil(k),
        k,
        ..g
    };
    let mux_cost =
        super::mux::lanes_cost(c, gi, mux, slots).weighted() + DOWNSTREAM_PER_CT * mux.c as f64;
    let plain_cost = if gi.k > 1 {
        super::mux::lanes_cost(c, gi, spatial, slots).weighted()
    } else {
        // hoisted tap rotations per input, scalar products and additions
        let taps = (kernel[0] * kernel[1]) as f64;
        gi.c as f64 * taps * super::mux::HOISTED_COST + (co * ci) as f64 * taps * 0.03
    } + DOWNSTREAM_PER_CT * co as f64;
    (mux_cost < plain_cost).then_some(mux)
}

/// The output grid of a convolution reading replicas `g` in [`Mode::Gaps`] (`o`: its
/// output with `g`'s blocks): sub-lanes in the gaps of the strided output at the input's own
/// pixel spacing, so that one rotation of the input serves every sub-lane (each with the tap
/// that rotation brings it). `blocks`: channels in the blocks too, no replicas (for a value
/// that only feeds channel-uniform work); else the replicas stay (for a next convolution).
/// `None` where the stride leaves no gaps or the sub-lanes would collide.
fn gaps_output(g: Grid, o: Grid, co: usize, blocks: bool) -> Option<Grid> {
    let fy = if g.iy > 1 { g.dy } else { g.ry };
    let fx = if g.ix > 1 { g.dx } else { g.rx };
    if fy == 0 || fx == 0 || !o.ry.is_multiple_of(fy) || !o.rx.is_multiple_of(fx) {
        return None;
    }
    let iy = if o.h > 1 { o.ry / fy } else { 1 };
    let ix = if o.w > 1 { o.rx / fx } else { 1 };
    let pb = iy * ix;
    if pb < 2 {
        return None;
    }
    let lanes = if blocks { g.reps * pb } else { pb };
    let k = co.div_ceil(co.div_ceil(lanes));
    let m = Grid {
        c: co.div_ceil(k),
        k,
        reps: if blocks { 1 } else { g.reps },
        iy,
        ix,
        dy: if iy > 1 { fy } else { 0 },
        dx: if ix > 1 { fx } else { 0 },
        ..o
    };
    // every lane's pixels distinct and inside the block
    lanes_fit(m).then_some(m)
}

/// The average pooling `v` reaches through element-wise ops on it alone (every value on the
/// way read by one node only and not the graph output), with that pooling's output value.
fn pooled_by(graph: &Graph, mut v: usize) -> Option<(&crate::ir::AvgPool, usize)> {
    loop {
        if v == graph.output() {
            return None;
        }
        let mut readers = graph.nodes().iter().filter(|n| n.inputs.contains(&v));
        let node = readers.next()?;
        if readers.next().is_some() {
            return None;
        }
        match &node.op {
            Op::AvgPool(p) => return Some((p, node.output)),
            Op::BatchNorm(_)
            | Op::Identity
            | Op::AddConst(_)
            | Op::MulConst(_)
            | Op::Pow { .. }
            | Op::Polynomial { .. }
            | Op::Chebyshev { .. } => v = node.output,
            Op::Mul if node.inputs.iter().all(|&i| i == v) => v = node.output,
            _ => return None,
        }
    }
}

/// Whether every lane's pixels of `m` are distinct and inside its block.
fn lanes_fit(m: Grid) -> bool {
    let mut seen = std::collections::HashSet::new();
    for u in 0..m.per_block().min(m.k.max(1)) {
        for i in 0..m.h {
            for j in 0..m.w {
                let s = m.offset(u) + m.slot(i, j);
                if s >= m.bs || !seen.insert(s) {
                    return false;
                }
            }
        }
    }
    true
}

/// The output grid of an average pooling (no padding, strides `[sy, sx]`, output `h x w`)
/// of `g`: the strided (gapped) grid, or, for `g` in merge order ([`Grid::lane_of`]), the
/// grid with `my x mx` ciphertexts merged into the gaps.
fn pooled_grid(g: Grid, stride: [usize; 2], h: usize, w: usize, c: usize) -> Grid {
    let [sy, sx] = stride;
    let o = Grid {
        c: c.div_ceil(g.k.max(1)),
        h,
        w,
        ry: g.ry * sy,
        rx: g.rx * sx,
        ..g
    };
    let m = g.merged();
    if m <= 1 {
        return o;
    }
    let (iy, ix) = (g.iy.max(1) * g.my, g.ix.max(1) * g.mx);
    let mut r = Grid {
        c: g.c / m,
        k: g.k.max(1) * m,
        iy,
        ix,
        dy: if iy > 1 {
            if g.iy > 1 { g.dy } else { g.ry }
        } else {
            0
        },
        dx: if ix > 1 {
            if g.ix > 1 { g.dx } else { g.rx }
        } else {
            0
        },
        my: 1,
        mx: 1,
        reps: 1,
        ..o
    };
    if g.k <= 1 {
        r.bs = 0;
        r.bs = r.block_span().max(1).next_power_of_two();
    }
    r
}

/// The merge order (`my`, `mx`) for a value on grid `g` that average pooling `p` (output
/// `h x w`, `c` channels) reads: the ciphertexts whose channels fill the pooled gaps, the
/// merged grid checked to fit its blocks and the slots; `None` where nothing merges.
fn merge_order(
    g: Grid,
    p: &crate::ir::AvgPool,
    h: usize,
    w: usize,
    c: usize,
    slots: usize,
) -> Option<(usize, usize)> {
    if p.pads.iter().any(|&v| v != 0) || g.reps > 1 || g.merged() > 1 || g.c < 2 {
        return None;
    }
    let k = g.k.max(1);
    if !k.is_multiple_of(g.per_block()) {
        return None;
    }
    // the merged sub-lanes form one regular lattice
    if (g.iy > 1 && g.ry != g.iy * g.dy) || (g.ix > 1 && g.rx != g.ix * g.dx) {
        return None;
    }
    let [sy, sx] = p.stride;
    let sy = if h > 1 { sy } else { 1 };
    let sx = if w > 1 { sx } else { 1 };
    [(sy, sx), (1, sx), (sy, 1)]
        .into_iter()
        .filter(|&(my, mx)| my * mx >= 2 && g.c.is_multiple_of(my * mx))
        .find(|&(my, mx)| {
            let r = pooled_grid(Grid { my, mx, ..g }, p.stride, h, w, c);
            r.span() <= slots && lanes_fit(r)
        })
}

/// [`grids`], with the input replicated where that pays (`replicate`); `None` when some
/// replicated or multiplexed value's image does not fit its block.
fn grids_with(graph: &Graph, room: Option<Room>, mode: Mode) -> Result<Option<Vec<Option<Grid>>>> {
    grids_with_repack(graph, room, mode, false)
}

/// [`grids_with`]; `repack`: every convolution output that an average pooling reads through
/// element-wise ops takes the merge order where the pooling can fill its gaps with the
/// channels of other ciphertexts ([`merge_order`]), and the pooling merges them.
fn grids_with_repack(
    graph: &Graph,
    room: Option<Room>,
    mode: Mode,
    repack: bool,
) -> Result<Option<Vec<Option<Grid>>>> {
    let slots = room.map(|r| r.slots);
    let mut gs: Vec<Option<Grid>> = vec![None; graph.values().len()];
    let g0 = input_grid(graph, room.filter(|_| mode != Mode::Plain), mode)?;
    check_grid(None, g0, slots)?;
    let mux = multiplexable(graph);
    if let Some(v) = gs.get_mut(graph.input()) {
        count_placement();
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
                let legacy_mux = match mode {
                    Mode::Lanes { eager: true } => true,
                    Mode::Lanes { eager: false } | Mode::Replicated | Mode::Gaps => {
                        mux.get(node.output).copied().unwrap_or(false)
                    }
                    Mode::Plain => false,
                };
                let gapped = if mode == Mode::Gaps && g.reps >= 2 && co >= 2 {
                    gaps_output(g, o, co, legacy_mux)
                } else {
                    None
                };
                if let Some(m) = gapped {
                    o = m;
                } else if g.reps >= 2 && co >= 2 && legacy_mux {
                    // one output channel per replica block
                    let k = co.div_ceil(co.div_ceil(g.reps));
                    o = Grid {
                        c: co.div_ceil(k),
                        k,
                        reps: 1,
                        ..o
                    };
                } else if matches!(mode, Mode::Lanes { .. } | Mode::Gaps)
                    && let Some(n) = slots
                {
                    let spatial = Grid {
                        k: 1,
                        reps: 1,
                        bs: 0,
                        iy: 1,
                        ix: 1,
                        dy: 0,
                        dx: 0,
                        ..o
                    };
                    if let Some(m) = lanes_output(c, g, spatial, co, n) {
                        o = m;
                    }
                }
                if repack
                    && let Some(n) = slots
                    && let Some((p, pv)) = pooled_by(graph, node.output)
                {
                    let ps = graph.shape(pv);
                    if let Some((my, mx)) = merge_order(o, p, ps[2], ps[3], ps[1], n) {
                        o.my = my;
                        o.mx = mx;
                    }
                }
                check_grid(Some(node), o, slots)?;
                o
            }
            Op::AvgPool(p) => {
                spatial(node, in_shape, g)?;
                if g.merged() > 1 && p.pads.iter().any(|&v| v != 0) {
                    return Err(unsupported(
                        node,
                        "a padded pooling of a value in merge order",
                    ));
                }
                let o = pooled_grid(g, p.stride, out_shape[2], out_shape[3], out_shape[1]);
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
                    if g.k > 1 {
                        return Err(unsupported(
                            node,
                            "a sum over channels of a multiplexed value (several channels per \
                             ciphertext)",
                        ));
                    }
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
                super::fc::method(g, m, slots)?.output_grid(m)
            }
            Op::BatchNorm(_) => {
                spatial(node, in_shape, g)?;
                g
            }
            Op::Activation(_) => {
                return Err(unsupported(
                    node,
                    "non-polynomial activation: replace it with a fitted polynomial first (`henn approximate MODEL.onnx --calib DATASET:N --uniform 4 -o OUT.onnx`)",
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
            | Op::Polynomial { .. }
            | Op::Chebyshev { .. } => g,
        };
        if (out.reps > 1 || out.k > 1) && out.block_span() > out.bs {
            return Ok(None);
        }
        if let Some(v) = gs.get_mut(node.output) {
            count_placement();
            *v = Some(out);
        }
    }
    Ok(Some(gs))
}

/// Checks that every node of `graph` is supported by the channel layout (structure only; the
/// slot count is checked when the room is known).
pub(super) fn check_supported(graph: &Graph) -> Result<()> {
    grids(graph, None).map(|_| ())
}

/// The candidate layout plans of `graph` in `room` (one image per run), most multiplexed
/// first.
pub(super) fn candidates(graph: &Graph, room: Room) -> Result<Vec<LayoutPlan>> {
    candidate_grids(graph, Some(room))?
        .into_iter()
        .map(|gs| {
            let values = gs.into_iter().map(|g| g.map(Placement::Grid)).collect();
            LayoutPlan::assemble(KIND, room, graph, values, 1, 0)
        })
        .collect()
}

/// The layout plan of `graph` in `room` (one image per run).
pub(super) fn plan(graph: &Graph, room: Room) -> Result<LayoutPlan> {
    let values = grids(graph, Some(room))?
        .into_iter()
        .map(|g| g.map(Placement::Grid))
        .collect();
    LayoutPlan::assemble(KIND, room, graph, values, 1, 0)
}

/// The smallest slot count the layout needs for `graph` (the largest grid span).
pub(super) fn required_slots(graph: &Graph) -> Result<usize> {
    Ok(grids(graph, None)?
        .iter()
        .flatten()
        .map(Grid::span)
        .max()
        .unwrap_or(1))
}
