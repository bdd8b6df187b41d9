//! Execution backends and the layer executor.
//!
//! One [`Backend`] trait, three implementations:
//!
//! * [`simulated::Simulated`]: tracks level, scale, rotation steps and op counts, no crypto
//!   (the planner runs the layer code on it);
//! * [`slots::Slots`]: cleartext slot vectors in the same layout, with the same level and
//!   scale bookkeeping (for debugging packing without crypto);
//! * [`encrypted::Encrypted`]: the CKKS evaluator with evaluation keys only.
//!
//! The layer code (`crate::pack`) is written once, generic over `B: Backend`; [`run`] replays
//! it node by node on any backend, timing each layer and recording op counts, level and
//! scale after it.

pub mod client;
pub mod encrypted;
pub mod pipeline;
pub mod simulated;
pub mod slots;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use henn_ckks::{CkksError, Scale};
use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};
use crate::ir::Graph;
use crate::pack::{CtSource, Layout, Packed, View};

/// Atomic operation counters (layer code runs under rayon).
#[derive(Debug, Default)]
pub struct OpCounts {
    /// Ciphertext x plaintext-vector products.
    pub mul_plain: AtomicU64,
    /// Ciphertext x scalar-constant products.
    pub mul_const: AtomicU64,
    /// Ciphertext x ciphertext products (not squares).
    pub mul: AtomicU64,
    /// Ciphertext squares.
    pub square: AtomicU64,
    /// Relinearizations.
    pub relin: AtomicU64,
    /// Rescales.
    pub rescale: AtomicU64,
    /// Plain rotations.
    pub rotate: AtomicU64,
    /// Hoisted rotations (each rotation of a hoisted batch counts once).
    pub rotate_hoisted: AtomicU64,
    /// Additions and subtractions (ciphertext and constant).
    pub add: AtomicU64,
}

/// A snapshot of [`OpCounts`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Ciphertext x plaintext-vector products.
    pub mul_plain: u64,
    /// Ciphertext x scalar-constant products.
    pub mul_const: u64,
    /// Ciphertext x ciphertext products (not squares).
    pub mul: u64,
    /// Ciphertext squares.
    pub square: u64,
    /// Relinearizations.
    pub relin: u64,
    /// Rescales.
    pub rescale: u64,
    /// Plain rotations.
    pub rotate: u64,
    /// Hoisted rotations.
    pub rotate_hoisted: u64,
    /// Additions.
    pub add: u64,
}

impl Counts {
    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            mul_plain: self.mul_plain.saturating_sub(earlier.mul_plain),
            mul_const: self.mul_const.saturating_sub(earlier.mul_const),
            mul: self.mul.saturating_sub(earlier.mul),
            square: self.square.saturating_sub(earlier.square),
            relin: self.relin.saturating_sub(earlier.relin),
            rescale: self.rescale.saturating_sub(earlier.rescale),
            rotate: self.rotate.saturating_sub(earlier.rotate),
            rotate_hoisted: self.rotate_hoisted.saturating_sub(earlier.rotate_hoisted),
            add: self.add.saturating_sub(earlier.add),
        }
    }
}

impl Counts {
    /// `self + other`, field by field.
    pub fn plus(&self, o: &Counts) -> Counts {
        Counts {
            mul_plain: self.mul_plain + o.mul_plain,
            mul_const: self.mul_const + o.mul_const,
            mul: self.mul + o.mul,
            square: self.square + o.square,
            relin: self.relin + o.relin,
            rescale: self.rescale + o.rescale,
            rotate: self.rotate + o.rotate,
            rotate_hoisted: self.rotate_hoisted + o.rotate_hoisted,
            add: self.add + o.add,
        }
    }
}

impl OpCounts {
    /// Adds `n` to a counter.
    pub fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> Counts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            mul_plain: g(&self.mul_plain),
            mul_const: g(&self.mul_const),
            mul: g(&self.mul),
            square: g(&self.square),
            relin: g(&self.relin),
            rescale: g(&self.rescale),
            rotate: g(&self.rotate),
            rotate_hoisted: g(&self.rotate_hoisted),
            add: g(&self.add),
        }
    }
}

/// Wraps a CKKS error (the executor adds the node name).
pub(crate) fn ckks_err(source: CkksError) -> NnError {
    NnError::Ckks {
        node: String::new(),
        source,
    }
}

/// `Scale` from a value, as a named error when it is not a valid scale.
pub(crate) fn scale_of(v: f64) -> Result<Scale> {
    Scale::new(v)
        .ok_or_else(|| NnError::Exec(format!("invalid scale {v} (must be finite and >= 1)")))
}

/// Bits reserved for output magnitudes by a level-0 linear layer (`|value| < 2^10`).
pub const LEVEL0_VALUE_BITS: f64 = 10.0;
/// Smallest constant scale (bits) a level-0 linear layer accepts for its weights.
pub const LEVEL0_MIN_CONST_BITS: f64 = 10.0;

/// Homomorphic arithmetic as the layer code sees it. Every method checks levels and scales
/// like the CKKS evaluator does, and counts what it does in [`Backend::counts`].
///
/// Required methods are the primitives; the provided ones (rescale-neutral constant products,
/// products with rescale, alignment) are built on them so that all backends agree on levels
/// and scales by construction.
pub trait Backend: Sync {
    /// A ciphertext (or its stand-in).
    type Ct: Clone + Send + Sync;

    /// Backend name (`simulated`, `slots`, `encrypted`).
    fn name(&self) -> &'static str;
    /// Number of slots per ciphertext.
    fn slots(&self) -> usize;
    /// The operation counters.
    fn counts(&self) -> &OpCounts;
    /// The data prime `q_level` (the one a rescale at `level` divides by).
    fn prime(&self, level: usize) -> Result<f64>;

    /// Level of `a`.
    fn level(&self, a: &Self::Ct) -> usize;
    /// Scale of `a`.
    fn scale(&self, a: &Self::Ct) -> Scale;

    /// `a += b` (same level and scale).
    fn add_assign(&self, a: &mut Self::Ct, b: &Self::Ct) -> Result<()>;
    /// `a -= b` (same level and scale).
    fn sub_assign(&self, a: &mut Self::Ct, b: &Self::Ct) -> Result<()>;
    /// `a = -a`.
    fn neg_assign(&self, a: &mut Self::Ct) -> Result<()>;
    /// `a += c` in every slot.
    fn add_const_assign(&self, a: &mut Self::Ct, c: f64) -> Result<()>;
    /// `a *= c` with the constant encoded at `const_scale`; no rescale (scale multiplies).
    fn mul_const_scaled_assign(&self, a: &mut Self::Ct, c: f64, const_scale: Scale) -> Result<()>;
    /// `acc += x * c` with the constant at `const_scale` (`acc` must already be at scale
    /// `x.scale * const_scale`); no rescale. Counts one constant product and one addition.
    fn mul_const_add_assign(
        &self,
        acc: &mut Self::Ct,
        x: &Self::Ct,
        c: f64,
        const_scale: Scale,
    ) -> Result<()> {
        let mut t = x.clone();
        self.mul_const_scaled_assign(&mut t, c, const_scale)?;
        self.add_assign(acc, &t)
    }
    /// A plaintext (slot vector encoded at a level and scale) or its stand-in.
    type Pt: Send + Sync;
    /// Encodes slot values `v` (zero-padded to the slot count) at `level` and `scale`.
    fn encode(&self, v: &[f64], level: usize, scale: Scale) -> Result<Self::Pt>;
    /// `a *= pt` slot-wise; no rescale (scales multiply). `pt` may sit at a higher level.
    fn mul_pt_assign(&self, a: &mut Self::Ct, pt: &Self::Pt) -> Result<()>;
    /// `acc += x * pt` (`acc` at `x`'s level and scale `x.scale * pt.scale`); no rescale.
    /// Counts one plaintext product and one addition.
    fn mul_pt_add_assign(&self, acc: &mut Self::Ct, x: &Self::Ct, pt: &Self::Pt) -> Result<()> {
        let mut t = x.clone();
        self.mul_pt_assign(&mut t, pt)?;
        self.add_assign(acc, &t)
    }
    /// [`Backend::encode`], reusing an earlier encoding of the same values at the same level
    /// and scale where the backend keeps a cache (the encrypted one does, so that weight masks
    /// are encoded once per model rather than once per image).
    fn encode_cached(&self, v: &[f64], level: usize, scale: Scale) -> Result<Arc<Self::Pt>> {
        Ok(Arc::new(self.encode(v, level, scale)?))
    }
    /// `acc += x * c` at `const_scale`, starting the sum (`x * c`) when `acc` is empty.
    fn accumulate_const(
        &self,
        acc: &mut Option<Self::Ct>,
        x: &Self::Ct,
        c: f64,
        const_scale: Scale,
    ) -> Result<()> {
        match acc.as_mut() {
            None => {
                let mut t = x.clone();
                self.mul_const_scaled_assign(&mut t, c, const_scale)?;
                *acc = Some(t);
                Ok(())
            }
            Some(a) => self.mul_const_add_assign(a, x, c, const_scale),
        }
    }
    /// `acc += x * pt`, starting the sum (`x * pt`) when `acc` is empty.
    fn accumulate_pt(&self, acc: &mut Option<Self::Ct>, x: &Self::Ct, pt: &Self::Pt) -> Result<()> {
        match acc.as_mut() {
            None => {
                let mut t = x.clone();
                self.mul_pt_assign(&mut t, pt)?;
                *acc = Some(t);
                Ok(())
            }
            Some(a) => self.mul_pt_add_assign(a, x, pt),
        }
    }
    /// `out[o] = sum_k w[o * K + k] * xs[k]` with the constants at `const_scale`, no
    /// rescale: the linear combinations of a layer's outputs over shared inputs. Zero weights
    /// are skipped; an output whose weights are all zero is `xs[0] * 0`. Counts one constant
    /// product and one addition per non-zero weight. The encrypted backend computes all
    /// outputs in one cache-tiled pass over the inputs.
    fn mul_const_matrix(
        &self,
        xs: &[&Self::Ct],
        w: &[f64],
        n_out: usize,
        const_scale: Scale,
    ) -> Result<Vec<Self::Ct>> {
        let k = xs.len();
        let x0 = *xs
            .first()
            .ok_or_else(|| NnError::Exec("linear combination without inputs".into()))?;
        if w.len() != n_out * k {
            return Err(NnError::Exec(format!(
                "{} weights for {n_out} x {k} products",
                w.len()
            )));
        }
        (0..n_out)
            .map(|o| {
                let mut acc: Option<Self::Ct> = None;
                for (kk, x) in xs.iter().enumerate() {
                    let c = w[o * k + kk];
                    if c != 0.0 {
                        self.accumulate_const(&mut acc, x, c, const_scale)?;
                    }
                }
                self.sum_or_zero(acc, x0, const_scale)
            })
            .collect()
    }
    /// A sum of products at `like.scale * const_scale` (see [`Backend::accumulate_const`]),
    /// or, when nothing was added, zeros at that level and scale (`like * 0`).
    fn sum_or_zero(
        &self,
        acc: Option<Self::Ct>,
        like: &Self::Ct,
        const_scale: Scale,
    ) -> Result<Self::Ct> {
        match acc {
            Some(a) => Ok(a),
            None => {
                let mut t = like.clone();
                self.mul_const_scaled_assign(&mut t, 0.0, const_scale)?;
                Ok(t)
            }
        }
    }
    /// `a *= v` slot-wise with `v` encoded at `pt_scale`; no rescale.
    fn mul_plain_scaled_assign(&self, a: &mut Self::Ct, v: &[f64], pt_scale: Scale) -> Result<()> {
        let pt = self.encode(v, self.level(a), pt_scale)?;
        self.mul_pt_assign(a, &pt)
    }
    /// `a * b` with relinearization, no rescale (same level).
    fn mul_relin(&self, a: &Self::Ct, b: &Self::Ct) -> Result<Self::Ct>;
    /// `a^2` with relinearization, no rescale.
    fn square_relin(&self, a: &Self::Ct) -> Result<Self::Ct>;
    /// Divides by the last prime: level - 1, scale / q_level.
    fn rescale_assign(&self, a: &mut Self::Ct) -> Result<()>;
    /// Drops primes down to `level` (scale unchanged).
    fn drop_level_to_assign(&self, a: &mut Self::Ct, level: usize) -> Result<()>;
    /// Left rotation of the slots by `k` (negative: right).
    fn rotate(&self, a: &Self::Ct, k: i64) -> Result<Self::Ct>;
    /// Several rotations of one ciphertext sharing one decomposition.
    fn rotate_hoisted(&self, a: &Self::Ct, ks: &[i64]) -> Result<Vec<Self::Ct>>;

    // ----- provided -----

    /// Bytes of `a`'s polynomials: two of `N = 2 x slots` words per prime at its level.
    fn ct_bytes(&self, a: &Self::Ct) -> u64 {
        (2 * 2 * self.slots() * (self.level(a) + 1) * 8) as u64
    }

    /// `a + b`.
    fn add(&self, a: &Self::Ct, b: &Self::Ct) -> Result<Self::Ct> {
        let mut r = a.clone();
        self.add_assign(&mut r, b)?;
        Ok(r)
    }

    /// The constant scale that makes a constant product followed by a rescale keep `a`'s
    /// scale (the prime at `a`'s level).
    fn neutral_scale(&self, a: &Self::Ct) -> Result<Scale> {
        scale_of(self.prime(self.level(a))?)
    }

    /// `a * c` at the rescale-neutral constant scale, without the rescale: the start of a
    /// sum of products that is rescaled once.
    fn mul_const_no_rescale(&self, a: &Self::Ct, c: f64) -> Result<Self::Ct> {
        let s = self.neutral_scale(a)?;
        let mut r = a.clone();
        self.mul_const_scaled_assign(&mut r, c, s)?;
        Ok(r)
    }

    /// Constant scale for a linear layer on a ciphertext at level 0, where no prime is left
    /// to rescale by: the largest power of two that keeps values up to
    /// `2^LEVEL0_VALUE_BITS` below `q_0 / 2` at the product's scale (the layer then skips its
    /// rescale). `None` when that leaves less than `2^LEVEL0_MIN_CONST_BITS` for the
    /// constants. This lets a model whose last op is linear use one prime fewer (the
    /// reference ResNet's `[60, 35 x 8]` chain holds its 9 multiplicative layers this way).
    fn level0_const_scale(&self, a: &Self::Ct) -> Result<Option<Scale>> {
        if self.level(a) != 0 {
            return Ok(None);
        }
        let room = self.prime(0)?.log2() - 1.0 - self.scale(a).log2() - LEVEL0_VALUE_BITS;
        let bits = room.floor();
        if bits < LEVEL0_MIN_CONST_BITS {
            return Ok(None);
        }
        Ok(Some(scale_of(bits.exp2())?))
    }

    /// `a * c`, rescaled: one level consumed, scale unchanged.
    fn mul_const(&self, a: &Self::Ct, c: f64) -> Result<Self::Ct> {
        let mut r = self.mul_const_no_rescale(a, c)?;
        self.rescale_assign(&mut r)?;
        Ok(r)
    }

    /// `a * c` landing exactly at `level` (< level(a)) and `scale`: drops `a` to `level + 1`,
    /// multiplies by `c` at the constant scale `scale * q_{level+1} / scale(a)` and rescales.
    /// Used to align branches and to fold constants into alignment for free.
    fn mul_const_to(&self, a: &Self::Ct, c: f64, level: usize, scale: Scale) -> Result<Self::Ct> {
        let la = self.level(a);
        if la <= level {
            return Err(NnError::Exec(format!(
                "cannot bring a ciphertext at level {la} to level {level} with a constant product"
            )));
        }
        let mut r = a.clone();
        if la > level + 1 {
            self.drop_level_to_assign(&mut r, level + 1)?;
        }
        let cs = scale_of(scale.value() * self.prime(level + 1)? / self.scale(&r).value())?;
        self.mul_const_scaled_assign(&mut r, c, cs)?;
        self.rescale_assign(&mut r)?;
        Ok(r)
    }

    /// `a * v` slot-wise at the rescale-neutral scale, rescaled.
    fn mul_plain(&self, a: &Self::Ct, v: &[f64]) -> Result<Self::Ct> {
        let s = self.neutral_scale(a)?;
        let mut r = a.clone();
        self.mul_plain_scaled_assign(&mut r, v, s)?;
        self.rescale_assign(&mut r)?;
        Ok(r)
    }

    /// `a * b` with relinearization and rescale (the higher operand is dropped first).
    fn mul(&self, a: &Self::Ct, b: &Self::Ct) -> Result<Self::Ct> {
        let (la, lb) = (self.level(a), self.level(b));
        let mut r = if la == lb {
            self.mul_relin(a, b)?
        } else if la > lb {
            let mut a2 = a.clone();
            self.drop_level_to_assign(&mut a2, lb)?;
            self.mul_relin(&a2, b)?
        } else {
            let mut b2 = b.clone();
            self.drop_level_to_assign(&mut b2, la)?;
            self.mul_relin(a, &b2)?
        };
        self.rescale_assign(&mut r)?;
        Ok(r)
    }

    /// `a^2` with relinearization and rescale.
    fn square(&self, a: &Self::Ct) -> Result<Self::Ct> {
        let mut r = self.square_relin(a)?;
        self.rescale_assign(&mut r)?;
        Ok(r)
    }

    /// Brings `a` to `level` and `scale` (free when only the level differs and the scale
    /// already matches; otherwise one constant product by 1).
    fn align_to(&self, a: &Self::Ct, level: usize, scale: Scale) -> Result<Self::Ct> {
        let la = self.level(a);
        if self.scale(a).matches(scale) && la >= level {
            let mut r = a.clone();
            if la > level {
                self.drop_level_to_assign(&mut r, level)?;
            }
            return Ok(r);
        }
        self.mul_const_to(a, 1.0, level, scale)
    }
}

/// Per-layer record of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerStat {
    /// Node name.
    pub name: String,
    /// Op kind.
    pub op: String,
    /// Wall time of the layer in seconds.
    pub time_s: f64,
    /// Operations the layer performed.
    pub counts: Counts,
    /// Level of the layer's output ciphertexts.
    pub level: usize,
    /// log2 of the output scale.
    pub log2_scale: f64,
    /// Plaintext multiplier carried with the output (true value = multiplier x slot value).
    pub multiplier: f64,
    /// Number of output ciphertexts.
    pub ciphertexts: usize,
}

/// Runs every node of `graph` on `backend` with `layout`, starting from the packed input
/// (see [`run_measured`]); returns the output and the per-layer stats.
pub fn run<B: Backend>(
    backend: &B,
    layout: &dyn Layout<B>,
    graph: &Graph,
    input: Packed<B::Ct>,
    observe: impl FnMut(usize, Observed<'_, B::Ct>) -> Result<()>,
) -> Result<(Packed<B::Ct>, Vec<LayerStat>)> {
    let r = run_measured(backend, layout, graph, input, observe)?;
    Ok((r.output, r.layers))
}

/// A layer output as an observer sees it: the whole value, or a row of it when the layer
/// is streamed.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a, C> {
    /// IR shape of the whole value.
    pub shape: &'a [usize],
    /// Ciphertexts of this part.
    pub cts: &'a [C],
    /// Flat indices of `cts` in the value, in the layout's order (`cts[i]` is element
    /// `flats[i]`).
    pub flats: &'a [usize],
    /// Multiplier still to apply to the slot values.
    pub mult: f64,
}

/// Output of [`run_measured`].
#[derive(Debug)]
pub struct RunOutput<C> {
    /// The graph output.
    pub output: Packed<C>,
    /// Per-layer stats, in node order.
    pub layers: Vec<LayerStat>,
    /// Peak bytes of the ciphertexts alive at once (a node's inputs and outputs together;
    /// temporaries inside a layer come on top).
    pub peak_bytes: u64,
}

/// Executor settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecOptions {
    /// Ciphertexts per streamed step: a streamed node computes `max(1, row_chunk_cts / row)`
    /// output rows at a time, `row` being the ciphertexts of one of its rows (enough
    /// parallel work per step, little memory per band). `usize::MAX` computes whole layers.
    pub row_chunk_cts: usize,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self { row_chunk_cts: 512 }
    }
}

/// Runs every node of `graph` on `backend` with `layout`, starting from the packed input.
/// `observe` sees each layer's output (node index, value, or each row of it for a streamed
/// layer) right after it is computed, e.g. to decrypt and compare with the reference when
/// the secret key is at hand.
///
/// Nodes the layout computes row by row ([`Layout::input_rows`]) are streamed: they are
/// pulled in chunks of output rows by their consumers, each pull computing just the input
/// rows it needs, and a row of a value is freed once no consumer will read it again. Only
/// bands of rows of the large early feature maps are then alive at once (batch packing of
/// a 28 x 28 ResNet holds a few rows per layer instead of whole maps of 12,544 ciphertexts).
/// A streamed value read by a node computed whole (or the graph output) is completed at its
/// producer's turn in node order. Every ciphertext goes through the same operations in
/// either case, so the results do not depend on the schedule.
pub fn run_measured<B: Backend>(
    backend: &B,
    layout: &dyn Layout<B>,
    graph: &Graph,
    input: Packed<B::Ct>,
    observe: impl FnMut(usize, Observed<'_, B::Ct>) -> Result<()>,
) -> Result<RunOutput<B::Ct>> {
    run_with(
        backend,
        layout,
        graph,
        input,
        ExecOptions::default(),
        observe,
    )
}

/// [`run_measured`] with explicit [`ExecOptions`].
pub fn run_with<B: Backend>(
    backend: &B,
    layout: &dyn Layout<B>,
    graph: &Graph,
    input: Packed<B::Ct>,
    opts: ExecOptions,
    mut observe: impl FnMut(usize, Observed<'_, B::Ct>) -> Result<()>,
) -> Result<RunOutput<B::Ct>> {
    let mut s = Scheduler::new(backend, layout, graph, input, &mut observe)?;
    s.row_chunk_cts = opts.row_chunk_cts.max(1);
    for n in 0..graph.nodes().len() {
        s.turn(n)?;
    }
    s.finish()
}

enum Held<C> {
    None,
    Full(Packed<C>),
    Band {
        shape: Vec<usize>,
        mult: f64,
        /// Index of the first held row.
        start: usize,
        rows: std::collections::VecDeque<Vec<C>>,
    },
}

/// Ciphertext access to a held value.
enum Src<'a, C> {
    Full(&'a Packed<C>),
    Band {
        chw: [usize; 3],
        start: usize,
        rows: &'a std::collections::VecDeque<Vec<C>>,
    },
}

impl<C: Sync> CtSource<C> for Src<'_, C> {
    fn at(&self, flat: usize) -> Result<&C> {
        match self {
            Src::Full(p) => p.cts.at(flat),
            Src::Band { chw, start, rows } => {
                let [c, h, w] = *chw;
                let (x, y, ch) = (flat % w, (flat / w) % h, (flat / (w * h)) % c);
                y.checked_sub(*start)
                    .and_then(|i| rows.get(i))
                    .and_then(|r| r.get(ch * w + x))
                    .ok_or_else(|| {
                        NnError::Exec(format!(
                            "row {y} is not held (rows {start}..{} are): streaming schedule error",
                            start + rows.len()
                        ))
                    })
            }
        }
    }
}

fn chw(shape: &[usize]) -> [usize; 3] {
    let n = shape.len();
    if n >= 3 {
        [shape[n - 3], shape[n - 2], shape[n - 1]]
    } else {
        [1, 1, shape.iter().product()]
    }
}

/// The observer callback of a run.
type Observer<'o, C> = dyn FnMut(usize, Observed<'_, C>) -> Result<()> + 'o;

/// A held value's ciphertext access, IR shape and multiplier.
type SrcOf<'a, C> = (Src<'a, C>, &'a [usize], f64);

struct Scheduler<'r, 'o, B: Backend> {
    b: &'r B,
    layout: &'r dyn Layout<B>,
    graph: &'r Graph,
    observe: &'o mut Observer<'o, B::Ct>,
    vals: Vec<Held<B::Ct>>,
    /// Per node: computed row by row.
    streamed: Vec<bool>,
    /// Per value: all rows kept (read by a whole node, or the graph output).
    keep: Vec<bool>,
    /// Per value: (consumer node, input position).
    consumers: Vec<Vec<(usize, usize)>>,
    /// Per value: producing node.
    producer: Vec<Option<usize>>,
    /// Per node: output rows computed (streamed nodes).
    cursor: Vec<usize>,
    /// Per node: finished.
    done: Vec<bool>,
    stats: Vec<Option<LayerStat>>,
    live: u64,
    peak: u64,
    row_chunk_cts: usize,
}

impl<'r, 'o, B: Backend> Scheduler<'r, 'o, B> {
    fn new(
        b: &'r B,
        layout: &'r dyn Layout<B>,
        graph: &'r Graph,
        input: Packed<B::Ct>,
        observe: &'o mut Observer<'o, B::Ct>,
    ) -> Result<Self> {
        let nv = graph.values().len();
        let nodes = graph.nodes();
        let streamed: Vec<bool> = nodes
            .iter()
            .map(|n| {
                graph.shape(n.output).len() == 4
                    && (0..n.inputs.len()).all(|k| layout.input_rows(graph, n, k, 0).is_some())
            })
            .collect();
        let mut consumers = vec![Vec::new(); nv];
        let mut producer = vec![None; nv];
        for (ni, n) in nodes.iter().enumerate() {
            for (k, &v) in n.inputs.iter().enumerate() {
                if let Some(c) = consumers.get_mut(v) {
                    c.push((ni, k));
                }
            }
            if let Some(p) = producer.get_mut(n.output) {
                *p = Some(ni);
            }
        }
        let keep: Vec<bool> = (0..nv)
            .map(|v| {
                v == graph.output()
                    || consumers[v].is_empty()
                    || consumers[v].iter().any(|&(c, _)| !streamed[c])
            })
            .collect();
        let mut vals: Vec<Held<B::Ct>> = (0..nv).map(|_| Held::None).collect();
        let live: u64 = input.cts.iter().map(|c| b.ct_bytes(c)).sum();
        let slot = vals
            .get_mut(graph.input())
            .ok_or_else(|| NnError::InvalidGraph("graph input out of range".into()))?;
        *slot = Held::Full(input);
        Ok(Self {
            b,
            layout,
            graph,
            observe,
            vals,
            streamed,
            keep,
            consumers,
            producer,
            cursor: vec![0; nodes.len()],
            done: vec![false; nodes.len()],
            stats: vec![None; nodes.len()],
            live,
            peak: live,
            row_chunk_cts: ExecOptions::default().row_chunk_cts,
        })
    }

    fn rows_of(&self, n: usize) -> usize {
        let node = &self.graph.nodes()[n];
        self.graph.shape(node.output).get(2).copied().unwrap_or(1)
    }

    fn src(&self, v: usize) -> Result<SrcOf<'_, B::Ct>> {
        match self.vals.get(v) {
            Some(Held::Full(p)) => Ok((Src::Full(p), &p.shape, p.mult)),
            Some(Held::Band {
                shape,
                mult,
                start,
                rows,
            }) => Ok((
                Src::Band {
                    chw: chw(shape),
                    start: *start,
                    rows,
                },
                shape,
                *mult,
            )),
            _ => Err(NnError::InvalidGraph(format!(
                "value {v} used before it is computed"
            ))),
        }
    }

    fn record(
        &mut self,
        n: usize,
        time_s: f64,
        counts: Counts,
        first: Option<&B::Ct>,
        mult: f64,
        cts: usize,
    ) {
        let node = &self.graph.nodes()[n];
        let (level, log2_scale) =
            first.map_or((0, 0.0), |c| (self.b.level(c), self.b.scale(c).log2()));
        let st = self.stats[n].get_or_insert_with(|| LayerStat {
            name: node.name.clone(),
            op: node.op.kind().to_string(),
            time_s: 0.0,
            counts: Counts::default(),
            level,
            log2_scale,
            multiplier: mult,
            ciphertexts: 0,
        });
        st.time_s += time_s;
        st.counts = st.counts.plus(&counts);
        st.level = level;
        st.log2_scale = log2_scale;
        st.multiplier = mult;
        st.ciphertexts += cts;
    }

    fn bump_live(&mut self, bytes: u64) {
        self.live += bytes;
        self.peak = self.peak.max(self.live);
    }

    /// Computes rows of streamed node `n` until `upto` rows (or all) are there.
    fn ensure(&mut self, n: usize, upto: usize) -> Result<()> {
        let graph = self.graph;
        let node = &graph.nodes()[n];
        let h = self.rows_of(n);
        let [c, _, w] = chw(graph.shape(node.output));
        let chunk = (self.row_chunk_cts / (c * w).max(1)).max(1);
        while self.cursor[n] < upto.min(h) {
            let r0 = self.cursor[n];
            let r1 = (r0 + chunk).min(h);
            for (k, &v) in node.inputs.iter().enumerate() {
                if let Some(m) = self.producer.get(v).copied().flatten()
                    && self.streamed[m]
                {
                    let hi = (r0..r1)
                        .filter_map(|r| self.layout.input_rows(graph, node, k, r))
                        .map(|(_, hi)| hi)
                        .max()
                        .unwrap_or(0);
                    self.ensure(m, hi + 1)?;
                }
            }
            let before = self.b.counts().snapshot();
            let start = Instant::now();
            let (rows, mult) = {
                let srcs = node
                    .inputs
                    .iter()
                    .map(|&v| self.src(v))
                    .collect::<Result<Vec<_>>>()?;
                let views: Vec<View<'_, B::Ct>> = srcs
                    .iter()
                    .map(|(src, shape, mult)| View {
                        shape,
                        mult: *mult,
                        src: src as &dyn CtSource<B::Ct>,
                    })
                    .collect();
                self.layout
                    .eval_rows(self.b, graph, node, &views, r0..r1)
                    .map_err(|e| with_node(e, &node.name))?
            };
            let time_s = start.elapsed().as_secs_f64();
            let counts = self.b.counts().snapshot().since(&before);
            if rows.len() != r1 - r0 {
                return Err(NnError::Exec(format!(
                    "node '{}': {} rows computed for {}",
                    node.name,
                    rows.len(),
                    r1 - r0
                )));
            }
            let total: usize = rows.iter().map(Vec::len).sum();
            self.record(
                n,
                time_s,
                counts,
                rows.first().and_then(|r| r.first()),
                mult,
                total,
            );
            let shape = graph.shape(node.output);
            for (i, row) in rows.iter().enumerate() {
                let flats = crate::pack::row_flats(shape, r0 + i..r0 + i + 1);
                (self.observe)(
                    n,
                    Observed {
                        shape,
                        cts: row,
                        flats: &flats,
                        mult,
                    },
                )?;
            }
            let bytes: u64 = rows.iter().flatten().map(|c| self.b.ct_bytes(c)).sum();
            self.bump_live(bytes);
            match self.vals.get_mut(node.output) {
                Some(Held::Band { rows: held, .. }) => held.extend(rows),
                Some(slot) => {
                    *slot = Held::Band {
                        shape: shape.to_vec(),
                        mult,
                        start: r0,
                        rows: rows.into(),
                    }
                }
                None => return Err(NnError::InvalidGraph("node output out of range".into())),
            }
            self.cursor[n] = r1;
            if r1 == h {
                self.done[n] = true;
            }
            for &v in &node.inputs {
                self.release(v);
            }
        }
        Ok(())
    }

    /// Frees what no consumer of `v` will read again.
    fn release(&mut self, v: usize) {
        if v == self.graph.output() {
            return;
        }
        let graph = self.graph;
        // lowest row a consumer still needs (usize::MAX: none)
        let mut need = usize::MAX;
        for &(c, k) in &self.consumers[v] {
            if self.done[c] {
                continue;
            }
            let r = if self.streamed[c] {
                self.layout
                    .input_rows(graph, &graph.nodes()[c], k, self.cursor[c])
                    .map_or(0, |(lo, _)| lo)
            } else {
                0
            };
            need = need.min(r);
        }
        let b = self.b;
        let keep = self.keep[v];
        let Some(held) = self.vals.get_mut(v) else {
            return;
        };
        let mut freed = 0u64;
        match held {
            Held::Full(p) if need == usize::MAX => {
                freed = p.cts.iter().map(|c| b.ct_bytes(c)).sum();
                *held = Held::None;
            }
            Held::Band { start, rows, .. } if !keep => {
                while *start < need
                    && let Some(r) = rows.pop_front()
                {
                    freed += r.iter().map(|c| b.ct_bytes(c)).sum::<u64>();
                    *start += 1;
                }
            }
            _ => {}
        }
        self.live -= freed.min(self.live);
    }

    /// Node `n`'s turn in node order.
    fn turn(&mut self, n: usize) -> Result<()> {
        let graph = self.graph;
        let node = &graph.nodes()[n];
        if self.streamed[n] {
            if self.keep[node.output] {
                self.ensure(n, usize::MAX)?;
                // completed: whole value in the layout's (NCHW) order
                if let Some(slot) = self.vals.get_mut(node.output)
                    && let Held::Band {
                        shape, mult, rows, ..
                    } = std::mem::replace(slot, Held::None)
                {
                    let [c, _, w] = chw(&shape);
                    let mut its: Vec<_> = rows.into_iter().map(Vec::into_iter).collect();
                    let mut cts = Vec::with_capacity(numel_of(&shape));
                    for _ in 0..c {
                        for it in its.iter_mut() {
                            cts.extend(it.by_ref().take(w));
                        }
                    }
                    *slot = Held::Full(Packed { shape, cts, mult });
                }
            }
            return Ok(());
        }
        let before = self.b.counts().snapshot();
        let start = Instant::now();
        let out = {
            let mut ins = Vec::with_capacity(node.inputs.len());
            for &i in &node.inputs {
                match self.vals.get(i) {
                    Some(Held::Full(p)) => ins.push(p),
                    _ => {
                        return Err(NnError::InvalidGraph(format!(
                            "value {i} used before it is computed"
                        )));
                    }
                }
            }
            self.layout
                .eval_node(self.b, graph, node, &ins)
                .map_err(|e| with_node(e, &node.name))?
        };
        let time_s = start.elapsed().as_secs_f64();
        let counts = self.b.counts().snapshot().since(&before);
        self.record(n, time_s, counts, out.cts.first(), out.mult, out.cts.len());
        let flats: Vec<usize> = (0..out.cts.len()).collect();
        (self.observe)(
            n,
            Observed {
                shape: &out.shape,
                cts: &out.cts,
                flats: &flats,
                mult: out.mult,
            },
        )?;
        let bytes = out.cts.iter().map(|c| self.b.ct_bytes(c)).sum();
        self.bump_live(bytes);
        if let Some(slot) = self.vals.get_mut(node.output) {
            *slot = Held::Full(out);
        }
        self.done[n] = true;
        for &v in &node.inputs {
            self.release(v);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<RunOutput<B::Ct>> {
        let out = match self
            .vals
            .get_mut(self.graph.output())
            .map(|h| std::mem::replace(h, Held::None))
        {
            Some(Held::Full(p)) => p,
            _ => {
                return Err(NnError::InvalidGraph(
                    "graph output was not computed".into(),
                ));
            }
        };
        let layers = self
            .stats
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                s.ok_or_else(|| NnError::InvalidGraph(format!("node {i} was not computed")))
            })
            .collect::<Result<_>>()?;
        Ok(RunOutput {
            output: out,
            layers,
            peak_bytes: self.peak,
        })
    }
}

fn numel_of(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn with_node(e: NnError, node: &str) -> NnError {
    match e {
        NnError::Ckks { node: n, source } if n.is_empty() => NnError::Ckks {
            node: node.to_string(),
            source,
        },
        NnError::Exec(d) => NnError::Exec(format!("node '{node}': {d}")),
        other => other,
    }
}
