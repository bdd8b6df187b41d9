//! `henn bench`: micro-benchmarks. `henn bench ckks` times the CKKS core operations on a
//! parameter preset and prints the median per operation (a table, or JSON with `--json`).
//!
//! Every operation runs inside a rayon pool of `--threads` threads (default 1, the
//! configuration compared against SEAL in docs/BENCHMARKS.md).

use std::hint::black_box;
use std::ops::Sub;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use henn_ckks::prelude::*;
use henn_ring::{BasisConverter, ModDown, Poly, sample};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Arguments of `henn bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

/// What to benchmark.
#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// CKKS core operations (encode, encrypt, add, multiply, relinearize, rescale, rotate, NTT).
    Ckks(CkksArgs),
    /// Bar chart (SVG) of per-image inference latencies from a JSON list of measurements.
    Plot(super::plot::PlotArgs),
    /// Load test of a running `henn serve` on loopback (req/s, p50/p99 latency per level of
    /// concurrency, server peak RSS).
    Load(super::load::LoadArgs),
}

/// Arguments of `henn bench ckks`.
#[derive(Debug, clap::Args)]
pub struct CkksArgs {
    /// Parameter preset.
    /// `boot` (N = 2^16) also times a full-slot bootstrap and reports its precision, levels
    /// and scale after, key generation time, key memory and serialized size, peak RSS.
    #[arg(long, default_value = "resnet", value_parser = ["resnet", "small", "boot"])]
    pub preset: String,
    /// Worker threads (a dedicated rayon pool).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print JSON (a list of {op, preset, threads, median_us}) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Exact number of timed iterations per operation (default: up to 50 for cheap
    /// operations, fewer for expensive ones, within a time budget of `--budget` seconds).
    #[arg(long)]
    pub iters: Option<usize>,
    /// Time budget per operation in seconds when `--iters` is not given.
    #[arg(long, default_value_t = 1.5)]
    pub budget: f64,
    /// Measure the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID) instead of wall
    /// time: robust against other load on shared cores. Only meaningful with `--threads 1`.
    #[arg(long)]
    pub cpu_time: bool,
    /// Also time the sub-steps of relinearization (INTT, ModUp, NTT, inner product,
    /// ModDown), rebuilt from the public ring API.
    #[arg(long)]
    pub breakdown: bool,
}

/// Runs `henn bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Ckks(a) => run_ckks(a),
        What::Plot(a) => super::plot::run(a),
        What::Load(a) => super::load::run(a),
    }
}

/// One measured operation.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    op: String,
    preset: String,
    threads: usize,
    median_us: f64,
    /// "wall" or "thread_cpu".
    clock: &'static str,
    #[serde(skip)]
    iters: usize,
    #[serde(skip)]
    note: String,
    /// Bootstrapping details (op `bootstrap` only).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    boot: Option<BootInfo>,
}

/// What `henn bench ckks --preset boot` reports besides the bootstrap's median time.
#[derive(Debug, Clone, serde::Serialize)]
struct BootInfo {
    slots: usize,
    precision_mean_bits: f64,
    precision_min_bits: f64,
    levels_after: usize,
    log2_scale_after: f64,
    transforms_s: f64,
    transforms_gib: f64,
    keygen_s: f64,
    galois_keys: usize,
    key_memory_gib: f64,
    key_serialized_gib: f64,
    peak_rss_gib: f64,
    /// Median-run stage times (s): ModRaise, CoeffToSlot, EvalMod, SlotToCoeff.
    stages_s: [f64; 4],
}

/// How many times to run an operation, and with which clock.
#[derive(Debug, Clone, Copy)]
struct Plan {
    kind: PlanKind,
    cpu_time: bool,
}

#[derive(Debug, Clone, Copy)]
enum PlanKind {
    /// Exactly this many timed iterations.
    Exact(usize),
    /// Up to `max` iterations (at least 5) within `budget` (wall time).
    Budget { max: usize, budget: Duration },
}

/// CPU time consumed by the calling thread, in microseconds.
#[cfg(unix)]
fn thread_cpu_us() -> f64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    #[cfg(target_os = "linux")]
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    #[cfg(not(target_os = "linux"))]
    const CLOCK_THREAD_CPUTIME_ID: i32 = 16;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
}

#[cfg(not(unix))]
fn thread_cpu_us() -> f64 {
    f64::NAN
}

/// Median wall time of `f` in microseconds, and the number of timed iterations. One
/// untimed warm-up call precedes the measurements.
fn median_us(
    plan: Plan,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, usize)> {
    f()?;
    let mut samples = Vec::new();
    let start = Instant::now();
    loop {
        if plan.cpu_time {
            let t = thread_cpu_us();
            f()?;
            samples.push(thread_cpu_us() - t);
        } else {
            let t = Instant::now();
            f()?;
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let done = match plan.kind {
            PlanKind::Exact(k) => samples.len() >= k.max(1),
            PlanKind::Budget { max, budget } => {
                samples.len() >= max || (samples.len() >= 5 && start.elapsed() >= budget)
            }
        };
        if done {
            break;
        }
    }
    samples.sort_by(f64::total_cmp);
    let m = samples.len();
    let median = if m % 2 == 1 {
        samples[m / 2]
    } else {
        (samples[m / 2 - 1] + samples[m / 2]) / 2.0
    };
    Ok((median, m))
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(120));
    pb.set_message(msg.to_string());
    pb
}

fn run_ckks(args: CkksArgs) -> anyhow::Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.max(1))
        .build()
        .context("building the thread pool")?;
    let rows = pool.install(|| bench_ckks(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let lit =
            CkksParamsLiteral::preset(&args.preset).ok_or_else(|| anyhow!("unknown preset"))?;
        println!(
            "henn bench ckks: preset {} (N = 2^{}, q bits {:?}, p bits {:?}, scale 2^{}), {} thread(s), {} time",
            args.preset,
            lit.log_n,
            lit.q_bits,
            lit.p_bits,
            lit.log_scale,
            args.threads,
            if args.cpu_time { "thread CPU" } else { "wall" }
        );
        println!("{:<16} {:>14} {:>6}  note", "op", "median (us)", "iters");
        for r in &rows {
            println!(
                "{:<16} {:>14.1} {:>6}  {}",
                r.op, r.median_us, r.iters, r.note
            );
        }
    }
    Ok(())
}

fn bench_ckks(args: &CkksArgs) -> anyhow::Result<Vec<Row>> {
    let lit = CkksParamsLiteral::preset(&args.preset)
        .ok_or_else(|| anyhow!("unknown preset {}", args.preset))?;
    let params = CkksParams::new(lit)?;
    let level = params.max_level();
    let scale = params.default_scale();
    let mut rng = ChaCha20Rng::from_os_rng();

    if args.cpu_time && args.threads > 1 {
        anyhow::bail!("--cpu-time measures one thread: use it with --threads 1");
    }
    let kg = KeyGenerator::new(&params);
    let sk = kg.secret_key(&mut rng)?;
    let clock = if args.cpu_time { "thread_cpu" } else { "wall" };
    // the bootstrap first, so that the peak RSS it reports is its own
    let boot_row = if args.preset == "boot" {
        Some(bench_bootstrap(args, &params, &sk, &mut rng, clock)?)
    } else {
        None
    };
    let pb = spinner("generating keys (public, relinearization, 9 Galois)");
    let pk = kg.public_key(&sk, &mut rng)?;
    let rlk = kg.relin_key(&sk, &mut rng)?;
    let steps: Vec<i64> = (1..=9).collect();
    let gk = kg.galois_keys(&sk, &steps, false, &mut rng)?;
    pb.finish_and_clear();

    let enc = Encoder::new(&params);
    let encryptor = Encryptor::new(&params);
    let dec = Decryptor::new(&params);
    let ev = Evaluator::new(&params);
    let slots = params.slots();
    let vals = |rng: &mut ChaCha20Rng| -> Vec<f64> {
        (0..slots).map(|_| rng.random_range(-1.0..=1.0)).collect()
    };
    let v1 = vals(&mut rng);
    let v2 = vals(&mut rng);
    let pt1 = enc.encode(&v1, level, scale)?;
    let pt2 = enc.encode(&v2, level, scale)?;
    let ct1 = encryptor.encrypt_pk(&pt1, &pk, &mut rng)?;
    let ct2 = encryptor.encrypt_pk(&pt2, &pk, &mut rng)?;
    let prod = ev.mul_relin(&ct1, &ct2, &rlk)?;
    let const_scale = ev.rescale_neutral_scale(&ct1)?;

    let cheap = |max: usize| Plan {
        kind: match args.iters {
            Some(k) => PlanKind::Exact(k),
            None => PlanKind::Budget {
                max,
                budget: Duration::from_secs_f64(args.budget),
            },
        },
        cpu_time: args.cpu_time,
    };
    let mut rows = Vec::new();
    let pb = ProgressBar::new(if args.breakdown { 19 } else { 13 });
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut record =
        |op: &str, note: &str, plan: Plan, f: &mut dyn FnMut() -> anyhow::Result<()>| {
            pb.set_message(op.to_string());
            let r = median_us(plan, f);
            pb.inc(1);
            r.map(|(median_us, iters)| {
                rows.push(Row {
                    op: op.into(),
                    preset: args.preset.clone(),
                    threads: args.threads,
                    median_us,
                    clock,
                    iters,
                    note: note.to_string(),
                    boot: None,
                });
            })
        };

    record("encode", "N/2 reals", cheap(50), &mut || {
        black_box(enc.encode(black_box(&v1), level, scale)?);
        Ok(())
    })?;
    let mut erng = ChaCha20Rng::from_rng(&mut rng);
    record("encrypt", "public key", cheap(50), &mut || {
        black_box(encryptor.encrypt_pk(&pt1, &pk, &mut erng)?);
        Ok(())
    })?;
    record("decrypt", "decrypt + decode", cheap(50), &mut || {
        black_box(enc.decode(&dec.decrypt(&ct1, &sk)?)?);
        Ok(())
    })?;
    record("add", "out of place", cheap(200), &mut || {
        black_box(ev.add(&ct1, &ct2)?);
        Ok(())
    })?;
    record("mul_plain", "out of place", cheap(200), &mut || {
        black_box(ev.mul_plain(&ct1, &pt2)?);
        Ok(())
    })?;
    record("mul_const", "integer scalar", cheap(200), &mut || {
        black_box(ev.mul_const(&ct1, 0.7, const_scale)?);
        Ok(())
    })?;
    record("mul_relin", "", cheap(50), &mut || {
        black_box(ev.mul_relin(&ct1, &ct2, &rlk)?);
        Ok(())
    })?;
    record("square_relin", "", cheap(50), &mut || {
        black_box(ev.square_relin(&ct1, &rlk)?);
        Ok(())
    })?;
    record("rescale", "top level", cheap(100), &mut || {
        black_box(ev.rescale(&prod)?);
        Ok(())
    })?;
    record("rotate", "by 1", cheap(50), &mut || {
        black_box(ev.rotate(&ct1, 1, &gk)?);
        Ok(())
    })?;
    let (hoisted, it) = median_us(cheap(20), || {
        black_box(ev.rotate_hoisted(&ct1, &steps, &gk)?);
        Ok(())
    })?;
    pb.inc(1);
    rows.push(Row {
        op: "rotate_hoisted".into(),
        preset: args.preset.clone(),
        threads: args.threads,
        median_us: hoisted / steps.len() as f64,
        clock,
        iters: it,
        note: "per rotation, batch of 9".into(),
        boot: None,
    });
    let mut record =
        |op: &str, note: &str, plan: Plan, f: &mut dyn FnMut() -> anyhow::Result<()>| {
            pb.set_message(op.to_string());
            let r = median_us(plan, f);
            pb.inc(1);
            r.map(|(median_us, iters)| {
                rows.push(Row {
                    op: op.into(),
                    preset: args.preset.clone(),
                    threads: args.threads,
                    median_us,
                    clock,
                    iters,
                    note: note.to_string(),
                    boot: None,
                });
            })
        };
    for (op, idx) in [("ntt", 1usize), ("ntt_q0", 0)] {
        let table = params.ring().ntt_table(idx)?;
        let q = table.modulus().value();
        let mut buf: Vec<u64> = (0..params.n()).map(|_| rng.random_range(0..q)).collect();
        let note = format!(
            "forward, {} ({:?})",
            if idx == 0 { "base prime q_0" } else { "q_1" },
            table.backend()
        );
        record(op, &note, cheap(500), &mut || {
            table.forward(black_box(&mut buf));
            Ok(())
        })?;
    }
    if args.breakdown {
        breakdown(&params, &ev, &ct1, &ct2, &mut rng, cheap(50), &mut record)?;
    }
    pb.finish_and_clear();
    if let Some(b) = boot_row {
        rows.push(b);
    }
    Ok(rows)
}

/// Peak resident set size of this process in GiB (`VmHWM`), 0 where unknown.
fn peak_rss_gib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / (1024.0 * 1024.0)
}

const GIB: f64 = (1u64 << 30) as f64;

/// Full-slot bootstrap at the `boot` preset: median time over the timed runs, precision on
/// values uniform in [-1, 1] (real and imaginary parts), keys and memory.
fn bench_bootstrap(
    args: &CkksArgs,
    params: &Arc<CkksParams>,
    sk: &SecretKey,
    rng: &mut ChaCha20Rng,
    clock: &'static str,
) -> anyhow::Result<Row> {
    use henn_ckks::bootstrap::{BootstrapConfig, Bootstrapper};
    let cfg = BootstrapConfig::boot();
    let pb = spinner("bootstrapping: encoding the transforms");
    let t = Instant::now();
    let boot = Bootstrapper::new(params, cfg, params.default_scale())?;
    let transforms_s = t.elapsed().as_secs_f64();
    pb.set_message("bootstrapping: generating the keys");
    let t = Instant::now();
    let keys = boot.generate_keys(sk, rng)?;
    let keygen_s = t.elapsed().as_secs_f64();
    // give the set-up's temporaries back to the OS (mimalloc keeps freed memory mapped in
    // this binary): the bootstrap then reuses its own buffers
    // SAFETY: a plain allocator call, allowed at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
    let enc = Encoder::new(params);
    let v: Vec<Complex> = (0..params.slots())
        .map(|_| Complex::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)))
        .collect();
    let pt = enc.encode_complex(&v, Level(0), params.default_scale())?;
    let ct = Encryptor::new(params).encrypt_sk(&pt, sk, rng)?;
    pb.set_message("bootstrapping: warm-up");
    let mut out = boot.bootstrap(&ct, &keys)?;
    let iters = args.iters.unwrap_or(3).max(1);
    let mut times = Vec::with_capacity(iters);
    for i in 0..iters {
        pb.set_message(format!("bootstrapping: run {}/{iters}", i + 1));
        let t0 = if args.cpu_time { thread_cpu_us() } else { 0.0 };
        let t = Instant::now();
        let (o, st) = boot.bootstrap_timed(&ct, &keys)?;
        out = black_box(o);
        let us = if args.cpu_time {
            thread_cpu_us() - t0
        } else {
            t.elapsed().as_secs_f64() * 1e6
        };
        times.push((us, st));
    }
    pb.finish_and_clear();
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median_us, st) = times.get(times.len() / 2).copied().unwrap_or_default();
    let got = enc.decode_complex(&Decryptor::new(params).decrypt(&out, sk)?)?;
    let errs: Vec<f64> = got.iter().zip(&v).map(|(a, b)| a.sub(*b).abs()).collect();
    let mean = errs.iter().sum::<f64>() / errs.len() as f64;
    let max = errs.iter().copied().fold(0.0, f64::max);
    let info = BootInfo {
        slots: params.slots(),
        precision_mean_bits: -mean.log2(),
        precision_min_bits: -max.log2(),
        levels_after: out.level().0,
        log2_scale_after: out.scale().log2(),
        transforms_s,
        transforms_gib: boot.memory_bytes() as f64 / GIB,
        keygen_s,
        galois_keys: keys.galois.len(),
        key_memory_gib: keys.memory_bytes() as f64 / GIB,
        key_serialized_gib: henn_ckks::serial::bootstrap_keys_size(&keys) as f64 / GIB,
        peak_rss_gib: peak_rss_gib(),
        stages_s: [
            st.mod_raise.as_secs_f64(),
            st.coeff_to_slot.as_secs_f64(),
            st.eval_mod.as_secs_f64(),
            st.slot_to_coeff.as_secs_f64(),
        ],
    };
    let note = format!(
        "{} slots, {:.1}/{:.1} bits mean/min, {} levels at 2^{:.1} after; keys {:.1} s, {:.2} GiB ({:.2} GiB serialized); transforms {:.2} GiB; peak RSS {:.2} GiB",
        info.slots,
        info.precision_mean_bits,
        info.precision_min_bits,
        info.levels_after,
        info.log2_scale_after,
        info.keygen_s,
        info.key_memory_gib,
        info.key_serialized_gib,
        info.transforms_gib,
        info.peak_rss_gib
    );
    Ok(Row {
        op: "bootstrap".into(),
        preset: args.preset.clone(),
        threads: args.threads,
        median_us,
        clock,
        iters,
        note,
        boot: Some(info),
    })
}

type Recorder<'a> =
    dyn FnMut(&str, &str, Plan, &mut dyn FnMut() -> anyhow::Result<()>) -> anyhow::Result<()> + 'a;

/// Sub-steps of `mul_relin` at the top level, rebuilt from the public ring API with the
/// same digit layout as henn-ckks (alpha consecutive data primes per digit) and random
/// key-shaped polynomials. Mirrors `keyswitch::decompose` / `apply_key`.
fn breakdown(
    params: &Arc<CkksParams>,
    ev: &Evaluator,
    ct1: &Ciphertext,
    ct2: &Ciphertext,
    rng: &mut ChaCha20Rng,
    plan: Plan,
    record: &mut Recorder<'_>,
) -> anyhow::Result<()> {
    let ctx = params.ring();
    let level = params.max_level();
    let q_idx = params.q_limbs(level);
    let p_idx = params.p_limbs();
    let qp: Vec<usize> = q_idx.iter().chain(&p_idx).copied().collect();
    let digits: Vec<Vec<usize>> = q_idx
        .chunks(params.alpha())
        .map(<[usize]>::to_vec)
        .collect();
    let convs = digits
        .iter()
        .map(|d| {
            let comp: Vec<usize> = qp.iter().copied().filter(|i| !d.contains(i)).collect();
            BasisConverter::new(ctx, d, &comp)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mod_down = ModDown::new(ctx, &q_idx, &p_idx)?;
    let c3 = ev.mul(ct1, ct2)?;
    let c2 = c3.parts().get(2).ok_or_else(|| anyhow!("no c2"))?.clone();

    record("ks.mul3", "tensor product (3 parts)", plan, &mut || {
        black_box(ev.mul(ct1, ct2)?);
        Ok(())
    })?;
    record("ks.intt", "INTT of c2 (L+1 limbs)", plan, &mut || {
        black_box(c2.clone().intt());
        Ok(())
    })?;
    let c2_coeff = c2.clone().intt();
    record("ks.modup", "all digits: BConv only", plan, &mut || {
        for (d, conv) in digits.iter().zip(&convs) {
            black_box(conv.convert_centered(&c2_coeff.select_limbs(d)?)?);
        }
        Ok(())
    })?;
    let exts = digits
        .iter()
        .zip(&convs)
        .map(|(d, conv)| conv.convert_centered(&c2_coeff.select_limbs(d)?))
        .collect::<Result<Vec<_>, _>>()?;
    record(
        "ks.modup_ntt",
        "all digits: NTT of BConv output",
        plan,
        &mut || {
            for e in &exts {
                black_box(e.clone().ntt());
            }
            Ok(())
        },
    )?;
    let dec: Vec<Poly<henn_ring::Ntt>> = (0..digits.len())
        .map(|_| sample::uniform_ntt(ctx, &qp, rng))
        .collect::<Result<_, _>>()?;
    let key_b: Vec<Poly<henn_ring::Ntt>> = (0..digits.len())
        .map(|_| sample::uniform_ntt(ctx, &params.all_limbs(), rng))
        .collect::<Result<_, _>>()?;
    let key_a = key_b.clone();
    record(
        "ks.inner",
        "inner product, 2 x dnum mul-adds",
        plan,
        &mut || {
            let mut acc0 = Poly::<henn_ring::Ntt>::zero(ctx, &qp)?;
            let mut acc1 = Poly::<henn_ring::Ntt>::zero(ctx, &qp)?;
            for ((d, b), a) in dec.iter().zip(&key_b).zip(&key_a) {
                acc0.mul_add_assign_subset(d, b)?;
                acc1.mul_add_assign_subset(d, a)?;
            }
            black_box((acc0, acc1));
            Ok(())
        },
    )?;
    let acc = dec.first().ok_or_else(|| anyhow!("no digit"))?.clone();
    record("ks.moddown", "ModDown of both parts", plan, &mut || {
        black_box(mod_down.apply(acc.clone())?);
        black_box(mod_down.apply(acc.clone())?);
        Ok(())
    })?;
    Ok(())
}
