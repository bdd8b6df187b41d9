//! The layout plan: where every value of a graph lives, decided once for a [`Room`] and a
//! number of images per run, as serde data.
//!
//! The client packs inputs and unpacks outputs from a [`LayoutPlan`] alone (no graph, no
//! weights: [`LayoutPlan::pack_inputs`], [`LayoutPlan::unpack_outputs`]); the executor hands
//! each node the placements of its inputs and output from it; the server compares the plan's
//! copy with the one it computes ([`LayoutPlan::check_same`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use super::LayoutKind;
use crate::error::{ExecError, NnError, Result};
use crate::ir::Graph;
use crate::tensor::Tensor;

/// What layout decisions depend on besides the graph: the slot count and the size in bits
/// (rounded up) of the first scale-sized prime `q_1` (`q_0` when it is the only one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Room {
    /// Slots per ciphertext (N/2).
    pub slots: usize,
    /// `ceil(log2(q_1))`.
    pub prime_bits: u32,
    /// Whether poolings may fill their strided gaps with the channels of other ciphertexts
    /// (a *repacking*: masks and rotations, one more level each; the channel layout's
    /// `Grid::my`, `Grid::mx`). The planner tries the plan with and without and keeps the
    /// cheaper for its parameters.
    #[serde(default)]
    pub repack: bool,
}

impl Room {
    /// The room of a chain of data primes (`q_0` first) with `slots` slots: the one way a
    /// room is made, from real parameters ([`Room::of_params`]) or from the idealised chain the
    /// planner probes before primes exist.
    pub fn of_chain(slots: usize, primes: &[f64]) -> Self {
        let q1 = primes
            .get(1)
            .or_else(|| primes.first())
            .copied()
            .unwrap_or(2.0);
        Room {
            slots,
            prime_bits: q1.log2().ceil() as u32,
            repack: false,
        }
    }

    /// The room of a parameter set.
    pub fn of_params(p: &henn_ckks::CkksParams) -> Self {
        let primes: Vec<f64> = p.q().iter().map(|&q| q as f64).collect();
        Self::of_chain(p.slots(), &primes)
    }

    /// The same room with repacking allowed or not.
    pub fn with_repack(self, repack: bool) -> Self {
        Room { repack, ..self }
    }
}

/// A channel-layout placement: flat index `f = (c h + i) w + j` is channel `c` in ciphertext
/// `c / k`, lane `r = c % k` (slot offset [`Grid::offset`]`(r)`), slot `i ry + j rx` from the
/// lane's offset. `c h w` may exceed the element count (a partly filled last ciphertext).
///
/// The `k` lanes of a multiplexed ciphertext are blocks of `bs` slots, each holding `iy ix`
/// interleaved channels: lane `r` is block `r / (iy ix)`, sub-lane `u = r % (iy ix)` at
/// `(u / ix) dy + (u % ix) dx` within it. Interleaving fills the gaps a strided layer leaves
/// (`rx > 1`, `ry > w rx`) with other channels (Lee et al., ICML 2022).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grid {
    /// Ciphertexts.
    pub c: usize,
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
    /// Slot step between rows.
    pub ry: usize,
    /// Slot step between columns (the gap).
    pub rx: usize,
    /// Channels (lanes) per ciphertext; 1 for one channel per ciphertext.
    pub k: usize,
    /// Slot stride of the blocks (multiplexed channels or replicas).
    pub bs: usize,
    /// Copies of each ciphertext's content at slot offsets `r bs`, `r < reps` (the input is
    /// encrypted replicated so that a later convolution can put a different output channel
    /// in each block); 1 when not replicated. Only for `k = 1`.
    pub reps: usize,
    /// Interleaved rows of sub-lanes per block (1: none).
    #[serde(default = "one")]
    pub iy: usize,
    /// Interleaved columns of sub-lanes per block (1: none).
    #[serde(default = "one")]
    pub ix: usize,
    /// Slot offset between interleaved sub-lane rows.
    #[serde(default)]
    pub dy: usize,
    /// Slot offset between interleaved sub-lane columns.
    #[serde(default)]
    pub dx: usize,
    /// Rows of ciphertexts a later pooling merges into one (1: none): see [`Grid::lane_of`].
    #[serde(default = "one")]
    pub my: usize,
    /// Columns of ciphertexts a later pooling merges into one (1: none).
    #[serde(default = "one")]
    pub mx: usize,
}

fn one() -> usize {
    1
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
            iy: 1,
            ix: 1,
            dy: 0,
            dx: 0,
            my: 1,
            mx: 1,
        }
    }

    /// Ciphertexts merged into one by a later pooling (`my mx`; 1: none).
    pub fn merged(&self) -> usize {
        (self.my * self.mx).max(1)
    }

    /// Ciphertext and lane of channel `ch`. Normally `(ch / k, ch % k)`. A grid in *merge
    /// order* (`my mx > 1`) orders its channels for a pooling that fills its strided gaps with
    /// the channels of `my x mx` ciphertexts: ciphertext `p = py mx + px` of each group moves
    /// by `py ry + px rx`, every lane staying in its block, so that the merged grid (lanes
    /// `k my mx`, sub-lanes `iy my x ix mx`) holds channel `ch` where its own order (`ch / k'`,
    /// `ch % k'`) says. Sub-lane row `a' = a + iy py`, column `b' = b + ix px`.
    pub fn lane_of(&self, ch: usize) -> (usize, usize) {
        let k = self.k.max(1);
        let m = self.merged();
        if m <= 1 {
            return (ch / k, ch % k);
        }
        let (iy, ix) = (self.iy.max(1), self.ix.max(1));
        let (my, mx) = (self.my.max(1), self.mx.max(1));
        let pb = self.per_block();
        let (ct2, lane2) = (ch / (k * m), ch % (k * m));
        let (blk, u2) = (lane2 / (pb * m), lane2 % (pb * m));
        let (a2, b2) = (u2 / (ix * mx), u2 % (ix * mx));
        let (py, a) = (a2 / iy, a2 % iy);
        let (px, b) = (b2 / ix, b2 % ix);
        debug_assert!(py < my && px < mx);
        (ct2 * m + py * mx + px, blk * pb + a * ix + b)
    }

    /// The channel in lane `r` of ciphertext `ct` (the inverse of [`Grid::lane_of`]).
    pub fn channel_at(&self, ct: usize, r: usize) -> usize {
        let k = self.k.max(1);
        let m = self.merged();
        if m <= 1 {
            return ct * k + r;
        }
        let (iy, ix) = (self.iy.max(1), self.ix.max(1));
        let mx = self.mx.max(1);
        let pb = self.per_block();
        let (ct2, p) = (ct / m, ct % m);
        let (py, px) = (p / mx, p % mx);
        let (blk, u) = (r / pb, r % pb);
        let (a, b) = (u / ix, u % ix);
        let (a2, b2) = (a + iy * py, b + ix * px);
        ct2 * k * m + blk * pb * m + a2 * ix * mx + b2
    }

    /// Sub-lanes per block.
    pub fn per_block(&self) -> usize {
        (self.iy * self.ix).max(1)
    }

    /// Slot offset of lane `r` (`0 <= r < k`).
    pub fn offset(&self, r: usize) -> usize {
        let pb = self.per_block();
        let (blk, u) = (r / pb, r % pb);
        blk * self.bs + (u / self.ix.max(1)) * self.dy + (u % self.ix.max(1)) * self.dx
    }

    /// Slot offset of lane `r` within its block.
    pub fn sub_offset(&self, r: usize) -> usize {
        self.offset(r % self.per_block())
    }

    /// Block of lane `r`.
    pub fn block(&self, r: usize) -> usize {
        r / self.per_block()
    }

    /// Slot of row `i`, column `j` within a lane.
    pub fn slot(&self, i: usize, j: usize) -> usize {
        i * self.ry + j * self.rx
    }

    /// Slots `[0, span)` of one lane hold the image grid.
    pub fn image_span(&self) -> usize {
        if self.h == 0 || self.w == 0 {
            0
        } else {
            self.slot(self.h - 1, self.w - 1) + 1
        }
    }

    /// Slots `[0, span)` of one block hold its lanes' images.
    pub fn block_span(&self) -> usize {
        let pb = self.per_block().min(self.k.max(1));
        (0..pb)
            .map(|u| self.offset(u) + self.image_span())
            .max()
            .unwrap_or(0)
    }

    /// Slots `[0, span)` hold every element (all lanes of a multiplexed grid; replicas, which
    /// only repeat block 0, are not counted).
    pub fn span(&self) -> usize {
        let k = self.k.max(1);
        let pb = self.per_block();
        // the last block's lanes (offsets grow with the lane within a block)
        let last = (k - 1) / pb * pb;
        (last..k)
            .map(|r| self.offset(r) + self.image_span())
            .max()
            .unwrap_or(0)
    }

    /// `(ciphertext, slot)` of flat element `f` (in block 0 of replicated values).
    pub fn locate(&self, f: usize) -> (usize, usize) {
        let per = (self.h * self.w).max(1);
        let r = f % per;
        let ch = f / per;
        let (ct, lane) = self.lane_of(ch);
        (
            ct,
            self.offset(lane) + self.slot(r / self.w.max(1), r % self.w.max(1)),
        )
    }

    /// Repeats a slot vector of block 0 (at most `bs` long) into every replica.
    pub fn tile(&self, v: Vec<f64>) -> Vec<f64> {
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

    /// Repeats a slot vector of one lane (at lane offset 0) into every lane of a ciphertext
    /// (a pattern all channels share, e.g. a pooling mask); `v` itself for `k = 1`.
    pub fn spread(&self, v: Vec<f64>) -> Vec<f64> {
        if self.k <= 1 {
            return v;
        }
        let mut out = vec![0.0; self.span().max(v.len())];
        for r in 0..self.k {
            let o = self.offset(r);
            for (s, &x) in v.iter().enumerate() {
                if x != 0.0
                    && let Some(d) = out.get_mut(o + s)
                {
                    *d = x;
                }
            }
        }
        out
    }

    /// Whether the grid is an `[1, C, H, W]` image of `shape` (one channel per ciphertext or
    /// `k` lanes per ciphertext).
    pub fn matches_nchw(&self, shape: &[usize]) -> bool {
        shape.len() == 4
            && shape[0] == 1
            && shape[1].div_ceil(self.k.max(1)) == self.c
            && shape[2] == self.h
            && shape[3] == self.w
    }
}

/// Where one value's elements live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Batch layout: element `f` is ciphertext `f`; image `i` of a run is slot `i`.
    Identity {
        /// Elements (= ciphertexts).
        elements: usize,
    },
    /// Channel layout: a [`Grid`].
    Grid(Grid),
}

impl Placement {
    /// Ciphertexts the value occupies.
    pub fn ciphertexts(&self) -> usize {
        match self {
            Placement::Identity { elements } => *elements,
            Placement::Grid(g) => g.c,
        }
    }

    /// `(ciphertext, slot)` of flat element `f` for image 0 of a run.
    pub fn locate(&self, f: usize) -> (usize, usize) {
        match self {
            Placement::Identity { .. } => (f, 0),
            Placement::Grid(g) => g.locate(f),
        }
    }

    /// The grid, for a channel placement.
    pub fn grid(&self) -> Option<Grid> {
        match self {
            Placement::Identity { .. } => None,
            Placement::Grid(g) => Some(*g),
        }
    }
}

/// How the client packs a run's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Value id of the graph input.
    pub value: usize,
    /// The model's input shape.
    pub shape: Vec<usize>,
    /// Input ciphertexts per run.
    pub ciphertexts: usize,
    /// Copies of each image in each ciphertext (1: none), `replica_stride` slots apart.
    pub replicas: usize,
    /// Slot distance between replicas.
    pub replica_stride: usize,
}

/// Where the client finds the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputMap {
    /// The model's output shape.
    pub shape: Vec<usize>,
    /// Output ciphertexts per run.
    pub ciphertexts: usize,
    /// `(ciphertext, slot)` of each output element (logit) for image 0; image `i` of a run is
    /// `image_stride x i` slots further.
    pub positions: Vec<(usize, usize)>,
}

/// A layout decided once: the input spec, the placement of every value, the output map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutPlan {
    /// The layout.
    pub kind: LayoutKind,
    /// The room it was decided for.
    pub room: Room,
    /// Slots the layout needs (the largest span of a value, or the images of a batch).
    pub slots_needed: usize,
    /// Images packed into one run.
    pub images_per_run: usize,
    /// Slot distance between the images of a run (0 with one image per run).
    pub image_stride: usize,
    /// The input.
    pub input: InputSpec,
    /// Placement of every value of the graph, by value id (`None`: a value no node computes).
    pub values: Vec<Option<Placement>>,
    /// The output.
    pub output: OutputMap,
    /// Two real values per complex slot (the batch layout with more images than slots):
    /// value slot `s < slots` is the real part of slot `s`, value slot `slots + s` its
    /// imaginary part. Linear ops act on both at once; products of ciphertexts and constants
    /// added go through the pair operations (see `henn_ckks::Evaluator::mul_pair_relin`),
    /// and inputs are encoded at a quarter of the default scale (see [`Self::input_scale`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub complex_pairs: bool,
    /// Values left unrelinearized (*lazy relinearization*, batch layout): squares (and degree-2
    /// polynomials) whose every use is a linear layer that sums them into fewer ciphertexts
    /// than there are squares; those layers relinearize their sums instead, one key switch per
    /// output instead of one per square (see `Backend::square`). Value ids, ascending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lazy_relin: Vec<usize>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Placements computed since the process started (diagnostics: the executor never computes
/// one; see [`placements_computed`]).
static PLACEMENTS: AtomicUsize = AtomicUsize::new(0);

/// Counts one computed value placement (called by the layouts' planning code).
pub(crate) fn count_placement() {
    PLACEMENTS.fetch_add(1, Ordering::Relaxed);
}

/// Value placements computed so far in this process, by every layout plan made (planning,
/// a server checking a plan). Execution computes none: it reads them from the plan.
pub fn placements_computed() -> usize {
    PLACEMENTS.load(Ordering::Relaxed)
}

fn input_err(msg: String) -> NnError {
    ExecError::Input(msg).into()
}

impl LayoutPlan {
    /// Assembles a layout plan from the placement of every value.
    pub(crate) fn assemble(
        kind: LayoutKind,
        room: Room,
        graph: &Graph,
        values: Vec<Option<Placement>>,
        images_per_run: usize,
        image_stride: usize,
    ) -> Result<Self> {
        let get = |v: usize| {
            values.get(v).copied().flatten().ok_or_else(|| {
                NnError::InvalidGraph(format!("value {v} has no placement in the {kind} layout"))
            })
        };
        let pin = get(graph.input())?;
        let pout = get(graph.output())?;
        let (replicas, replica_stride) = match pin {
            Placement::Grid(g) if g.reps > 1 => (g.reps, g.bs),
            _ => (1, 0),
        };
        let out_len: usize = graph.output_shape().iter().product();
        let positions = (0..out_len).map(|f| pout.locate(f)).collect();
        let span = values
            .iter()
            .flatten()
            .map(|p| match p {
                Placement::Identity { .. } => images_per_run,
                Placement::Grid(g) => g.span(),
            })
            .max()
            .unwrap_or(1);
        Ok(LayoutPlan {
            kind,
            room,
            slots_needed: span.max(images_per_run).max(1),
            images_per_run,
            image_stride,
            input: InputSpec {
                value: graph.input(),
                shape: graph.input_shape().to_vec(),
                ciphertexts: pin.ciphertexts(),
                replicas,
                replica_stride,
            },
            values,
            output: OutputMap {
                shape: graph.output_shape().to_vec(),
                ciphertexts: pout.ciphertexts(),
                positions,
            },
            complex_pairs: false,
            lazy_relin: Vec::new(),
        })
    }

    /// Real values one ciphertext holds: the slots, twice them with [`Self::complex_pairs`].
    pub fn value_slots(&self) -> usize {
        if self.complex_pairs {
            2 * self.room.slots
        } else {
            self.room.slots
        }
    }

    /// The scale inputs are encoded at, from the parameters' default: a quarter of it with
    /// complex pairs, where every pair product multiplies the scale by 4 on top of the
    /// product of the scales (`s -> 4 s^2 / q`): at `q / 4` that keeps the scale steady
    /// through the network as `s -> s^2 / q` does at `q` (2 bits of precision for twice the
    /// images).
    pub fn input_scale(&self, default: henn_ckks::Scale) -> henn_ckks::Scale {
        if self.complex_pairs {
            henn_ckks::Scale::new(default.value() / 4.0).unwrap_or(default)
        } else {
            default
        }
    }

    /// Placement of value `v`.
    pub fn placement(&self, v: usize) -> Result<&Placement> {
        self.values.get(v).and_then(Option::as_ref).ok_or_else(|| {
            ExecError::Internal(format!("value {v} has no placement in the layout plan")).into()
        })
    }

    /// Placement of the input.
    fn input_placement(&self) -> Result<Placement> {
        self.placement(self.input.value).copied()
    }

    /// Slot vectors of the input ciphertexts of one run (at most `images_per_run` images of
    /// the model's input shape, up to leading size-1 axes): element `f` of image `i` goes to
    /// its placement's ciphertext and slot, `i x image_stride` further, repeated `replicas`
    /// times `replica_stride` apart.
    pub fn pack_inputs(&self, images: &[Tensor]) -> Result<Vec<Vec<f64>>> {
        if images.is_empty() {
            return Err(input_err("no input images".into()));
        }
        if images.len() > self.images_per_run {
            return Err(input_err(format!(
                "{} images in one run; the plan packs at most {}",
                images.len(),
                self.images_per_run
            )));
        }
        let numel: usize = self.input.shape.iter().product();
        if let Some(bad) = images
            .iter()
            .find(|t| !crate::reference::input_shape_matches(&self.input.shape, t.shape()))
        {
            return Err(input_err(format!(
                "image of shape {:?} for a model input of shape {:?}",
                bad.shape(),
                self.input.shape
            )));
        }
        let place = self.input_placement()?;
        let reps = self.input.replicas.max(1);
        let mut v: Vec<Vec<f64>> = vec![Vec::new(); self.input.ciphertexts];
        for (i, img) in images.iter().enumerate() {
            for (f, &x) in img.data().iter().enumerate().take(numel) {
                let (c, s) = place.locate(f);
                let dst = v.get_mut(c).ok_or_else(|| {
                    ExecError::Internal(format!("input element {f} in ciphertext {c}"))
                })?;
                for r in 0..reps {
                    let slot = s + r * self.input.replica_stride + i * self.image_stride;
                    if slot >= self.value_slots() {
                        return Err(ExecError::SlotOverflow {
                            need: slot + 1,
                            have: self.value_slots(),
                        }
                        .into());
                    }
                    if dst.len() <= slot {
                        dst.resize(slot + 1, 0.0);
                    }
                    dst[slot] = x;
                }
            }
        }
        Ok(v)
    }

    /// The outputs (logits) of `images` images of a run from the decrypted output slot
    /// vectors, the multiplier applied: one vector per image.
    pub fn unpack_outputs(
        &self,
        decoded: &[Vec<f64>],
        mult: f64,
        images: usize,
    ) -> Result<Vec<Vec<f64>>> {
        if decoded.len() != self.output.ciphertexts {
            return Err(ExecError::CiphertextCount {
                what: "output",
                expected: self.output.ciphertexts,
                got: decoded.len(),
            }
            .into());
        }
        (0..images)
            .map(|i| {
                self.output
                    .positions
                    .iter()
                    .map(|&(c, s)| {
                        let slot = s + i * self.image_stride;
                        decoded
                            .get(c)
                            .and_then(|v| v.get(slot))
                            .map(|v| v * mult)
                            .ok_or_else(|| {
                                input_err(format!(
                                    "output slot {slot} of ciphertext {c} missing from the decryption"
                                ))
                            })
                    })
                    .collect()
            })
            .collect()
    }

    /// Elements of value `value` held by ciphertexts `ct_index` (their indices among the
    /// value's ciphertexts) with their decrypted slots `decoded`, the multiplier applied:
    /// per image, `(flat element, value)` for every element those ciphertexts hold.
    pub fn unpack_part(
        &self,
        value: usize,
        numel: usize,
        ct_index: &[usize],
        decoded: &[Vec<f64>],
        mult: f64,
        images: usize,
    ) -> Result<Vec<Vec<(usize, f64)>>> {
        let place = self.placement(value)?;
        let mut at = std::collections::HashMap::with_capacity(ct_index.len());
        for (k, &c) in ct_index.iter().enumerate() {
            at.insert(c, k);
        }
        let mut out = vec![Vec::new(); images];
        for f in 0..numel {
            let (c, s) = place.locate(f);
            let Some(&k) = at.get(&c) else { continue };
            for (i, o) in out.iter_mut().enumerate() {
                if let Some(v) = decoded
                    .get(k)
                    .and_then(|d| d.get(s + i * self.image_stride))
                {
                    o.push((f, v * mult));
                }
            }
        }
        Ok(out)
    }

    /// Checks that this (stored) plan is the one computed for `graph` (`computed`); the first
    /// difference is a [`NnError::PlanMismatch`] naming it.
    pub fn check_same(&self, computed: &LayoutPlan, graph: &Graph) -> Result<()> {
        let diff = |what: &str, a: String, b: String| -> Result<()> {
            if a == b {
                Ok(())
            } else {
                Err(NnError::PlanMismatch {
                    what: what.to_string(),
                    stored: a,
                    computed: b,
                })
            }
        };
        diff("layout", self.kind.to_string(), computed.kind.to_string())?;
        diff(
            "layout room",
            format!("{:?}", self.room),
            format!("{:?}", computed.room),
        )?;
        diff(
            "images per run",
            self.images_per_run.to_string(),
            computed.images_per_run.to_string(),
        )?;
        diff(
            "complex pairs",
            self.complex_pairs.to_string(),
            computed.complex_pairs.to_string(),
        )?;
        diff(
            "image stride",
            self.image_stride.to_string(),
            computed.image_stride.to_string(),
        )?;
        diff(
            "input replicas",
            self.input.replicas.to_string(),
            computed.input.replicas.to_string(),
        )?;
        diff(
            "input",
            format!("{:?}", self.input),
            format!("{:?}", computed.input),
        )?;
        diff(
            "number of placed values",
            self.values.len().to_string(),
            computed.values.len().to_string(),
        )?;
        for (v, (a, b)) in self.values.iter().zip(&computed.values).enumerate() {
            let name = graph.value(v).map_or("?", |x| x.name.as_str());
            diff(
                &format!("placement of value '{name}'"),
                format!("{a:?}"),
                format!("{b:?}"),
            )?;
        }
        diff(
            "output map",
            format!("{:?}", self.output),
            format!("{:?}", computed.output),
        )?;
        let names = |vs: &[usize]| -> String {
            let n: Vec<&str> = vs
                .iter()
                .map(|&v| graph.value(v).map_or("?", |x| x.name.as_str()))
                .collect();
            format!("{n:?}")
        };
        diff(
            "values left unrelinearized (lazy relinearization)",
            names(&self.lazy_relin),
            names(&computed.lazy_relin),
        )?;
        diff(
            "slots needed",
            self.slots_needed.to_string(),
            computed.slots_needed.to_string(),
        )
    }
}
