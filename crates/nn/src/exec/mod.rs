//! The executor: replays the layer code of a graph node by node on any backend, under the
//! layout plan the planner decided (each node gets the placements of its inputs and output
//! from it, nothing is recomputed), timing each layer and recording op counts, level and
//! scale after it; streams the nodes a layout computes row by row and frees rows once no
//! consumer reads them again.
//!
//! This floor sits on the layouts (`pack`) and the backends; it knows nothing of parameters,
//! keys or sessions.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Counts};
use crate::error::{ExecError, NnError, Result};
use crate::ir::{Graph, Op};
use crate::pack::{CtSource, Layout, LayoutPlan, NodeCtx, Packed, View};

/// Per-layer record of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Runs every node of `graph` on `backend` under layout plan `plan`, starting from the
/// packed input (see [`run_measured`]); returns the output and the per-layer stats.
pub fn run<B: Backend>(
    backend: &B,
    plan: &LayoutPlan,
    graph: &Graph,
    input: Packed<B::Ct>,
    observe: impl FnMut(usize, Observed<'_, B::Ct>) -> Result<()>,
) -> Result<(Packed<B::Ct>, Vec<LayerStat>)> {
    let r = run_measured(backend, plan, graph, input, observe)?;
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

/// Runs every node of `graph` on `backend` under layout plan `plan` (each node gets its
/// placements from it), starting from the packed input.
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
    plan: &LayoutPlan,
    graph: &Graph,
    input: Packed<B::Ct>,
    observe: impl FnMut(usize, Observed<'_, B::Ct>) -> Result<()>,
) -> Result<RunOutput<B::Ct>> {
    run_with(backend, plan, graph, input, ExecOptions::default(), observe)
}

/// [`run_measured`] with explicit [`ExecOptions`].
pub fn run_with<B: Backend>(
    backend: &B,
    plan: &LayoutPlan,
    graph: &Graph,
    input: Packed<B::Ct>,
    opts: ExecOptions,
    mut observe: impl FnMut(usize, Observed<'_, B::Ct>) -> Result<()>,
) -> Result<RunOutput<B::Ct>> {
    if plan.values.len() != graph.values().len() {
        return Err(NnError::PlanMismatch {
            what: "number of placed values".into(),
            stored: plan.values.len().to_string(),
            computed: graph.values().len().to_string(),
        });
    }
    if let Some(pairs) = backend.complex_pairs()
        && pairs != plan.complex_pairs
    {
        return Err(NnError::PlanMismatch {
            what: format!("complex pairs of the {} backend", backend.name()),
            stored: plan.complex_pairs.to_string(),
            computed: pairs.to_string(),
        });
    }
    if input.cts.len() != plan.input.ciphertexts {
        return Err(ExecError::CiphertextCount {
            what: "input",
            expected: plan.input.ciphertexts,
            got: input.cts.len(),
        }
        .into());
    }
    let mut s = Scheduler::new(backend, plan, graph, input, &mut observe)?;
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
                        ExecError::Internal(format!(
                            "row {y} is not held (rows {start}..{} are): streaming schedule error",
                            start + rows.len()
                        ))
                        .into()
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
    plan: &'r LayoutPlan,
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
        plan: &'r LayoutPlan,
        graph: &'r Graph,
        input: Packed<B::Ct>,
        observe: &'o mut Observer<'o, B::Ct>,
    ) -> Result<Self> {
        let layout = plan.kind.layout::<B>();
        let nv = graph.values().len();
        let nodes = graph.nodes();
        let streamed: Vec<bool> = nodes
            .iter()
            .map(|n| {
                graph.shape(n.output).len() == 4
                    && (0..n.inputs.len()).all(|k| {
                        let at = NodeCtx {
                            graph,
                            node: n,
                            plan,
                        };
                        layout.input_rows(at, k, 0).is_some()
                    })
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
            plan,
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

    fn at<'n>(&self, node: &'n crate::ir::Node) -> NodeCtx<'n>
    where
        'r: 'n,
    {
        NodeCtx {
            graph: self.graph,
            node,
            plan: self.plan,
        }
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
                        .filter_map(|r| self.layout.input_rows(self.at(node), k, r))
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
                    .eval_rows(self.b, self.at(node), &views, r0..r1)
                    .map_err(|e| with_node(e, &node.name))?
            };
            let time_s = start.elapsed().as_secs_f64();
            let counts = self.b.counts().snapshot().since(&before);
            if rows.len() != r1 - r0 {
                return Err(ExecError::Internal(format!(
                    "node '{}': {} rows computed for {}",
                    node.name,
                    rows.len(),
                    r1 - r0
                ))
                .into());
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
                    .input_rows(self.at(&graph.nodes()[c]), k, self.cursor[c])
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

    /// A reshape (or identity) that moves no slot, at the last use of its input: the
    /// ciphertexts move to the output instead of being copied (a flatten before a fully
    /// connected layer otherwise copies every ciphertext of the layer's input). Returns
    /// whether node `n` was done so.
    fn move_through(&mut self, n: usize) -> Result<bool> {
        let graph = self.graph;
        let node = &graph.nodes()[n];
        let [v] = node.inputs.as_slice() else {
            return Ok(false);
        };
        let v = *v;
        if !matches!(node.op, Op::Reshape { .. } | Op::Identity)
            || v == graph.output()
            || self.consumers[v]
                .iter()
                .any(|&(c, _)| c != n && !self.done[c])
            || self.plan.placement(v)? != self.plan.placement(node.output)?
        {
            return Ok(false);
        }
        let Some(slot) = self.vals.get_mut(v) else {
            return Ok(false);
        };
        let mut p = match std::mem::replace(slot, Held::None) {
            Held::Full(p) => p,
            other => {
                *slot = other;
                return Ok(false);
            }
        };
        p.shape = graph.shape(node.output).to_vec();
        self.complete(n, p, 0.0, Counts::default())?;
        Ok(true)
    }

    /// Node `n`'s whole output computed: its stats recorded, the observer called, the value
    /// held, the node done.
    fn complete(
        &mut self,
        n: usize,
        out: Packed<B::Ct>,
        time_s: f64,
        counts: Counts,
    ) -> Result<()> {
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
        let node = &self.graph.nodes()[n];
        if let Some(slot) = self.vals.get_mut(node.output) {
            *slot = Held::Full(out);
        }
        self.done[n] = true;
        Ok(())
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
        if self.move_through(n)? {
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
                .eval_node(self.b, self.at(node), &ins)
                .map_err(|e| with_node(e, &node.name))?
        };
        let time_s = start.elapsed().as_secs_f64();
        let counts = self.b.counts().snapshot().since(&before);
        let bytes = out.cts.iter().map(|c| self.b.ct_bytes(c)).sum();
        self.bump_live(bytes);
        self.complete(n, out, time_s, counts)?;
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
        NnError::Exec { node: n, source } if n.is_empty() => NnError::Exec {
            node: node.to_string(),
            source,
        },
        other => other,
    }
}
