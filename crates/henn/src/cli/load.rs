//! `henn bench load`: a bounded load test of a running `henn serve` on loopback. Every
//! client has its own keys and session and sends the same encrypted query in a closed loop;
//! per level of concurrency: requests per second, p50/p99 latency, failures by status, and
//! the server's peak RSS when its pid is given.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use henn_nn::data;
use henn_nn::session::Client;
use henn_serve::client::{ClientError, HttpClient};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

/// Arguments of `henn bench load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The server, e.g. http://127.0.0.1:8080 (loopback: this is not a remote stress tool).
    #[arg(long)]
    pub server: String,
    /// The model's name.
    #[arg(long)]
    pub model: String,
    /// An image of the model's input size (the query every request sends).
    pub image: PathBuf,
    /// Levels of concurrency (clients at once).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub clients: Vec<usize>,
    /// Requests per level (spread over its clients).
    #[arg(long, default_value_t = 48)]
    pub requests: usize,
    /// Stop a level after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub max_seconds: u64,
    /// The server's process id, to report its peak RSS (VmHWM) after each level.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Accept a plan below 128-bit security.
    #[arg(long)]
    pub allow_insecure: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `henn bench load`.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let host = args
        .server
        .trim_start_matches("http://")
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        bail!("henn bench load runs against a loopback server only, not {host}");
    }
    let http = HttpClient::new(&args.server);
    let a = http
        .client_artifact(&args.model)
        .with_context(|| format!("fetching the plan of '{}'", args.model))?;
    if !args.allow_insecure
        && !matches!(a.plan.params.security, henn_ckks::SecurityPolicy::Enforce { bits } if bits >= 128)
    {
        bail!("the plan is below 128-bit security; pass --allow-insecure");
    }
    let image = data::read_input(&args.image, &a.input.shape)?;
    let most = args.clients.iter().copied().max().unwrap_or(1);
    eprintln!("making keys and sessions for {most} clients (not timed)");
    let clients: Vec<(Client, Vec<u8>)> = (0..most)
        .into_par_iter()
        .map(|_| -> anyhow::Result<_> {
            let c = Client::new(a.plan.clone())?;
            let q = c.encrypt_query(std::slice::from_ref(&image))?.to_bytes()?;
            Ok((c, q))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut sessions = Vec::with_capacity(most);
    for (c, _) in &clients {
        let keys = c.evaluation_keys()?.to_bytes()?;
        sessions.push(http.open_session(&keys)?.session);
    }
    let mut rows = Vec::new();
    for &level in &args.clients {
        let per = args.requests.div_ceil(level.max(1));
        let bar = if args.json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new((per * level) as u64)
        };
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(format!("{level} clients"));
        let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
        let start = Instant::now();
        let results: Vec<Vec<Result<f64, u16>>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..level)
                .map(|i| {
                    let (http, bar) = (http.clone(), bar.clone());
                    let (session, query) = (&sessions[i], &clients[i].1);
                    s.spawn(move || {
                        let mut out = Vec::with_capacity(per);
                        for _ in 0..per {
                            if Instant::now() > deadline {
                                break;
                            }
                            let t = Instant::now();
                            out.push(match http.infer(session, query) {
                                Ok(_) => Ok(t.elapsed().as_secs_f64()),
                                Err(ClientError::Http { status, .. }) => Err(status),
                                Err(_) => Err(0),
                            });
                            bar.inc(1);
                        }
                        out
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let wall = start.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let mut lat: Vec<f64> = results.iter().flatten().filter_map(|r| r.ok()).collect();
        lat.sort_by(f64::total_cmp);
        let mut failures = std::collections::BTreeMap::<u16, usize>::new();
        for r in results.iter().flatten() {
            if let Err(s) = r {
                *failures.entry(*s).or_default() += 1;
            }
        }
        rows.push(serde_json::json!({
            "clients": level,
            "requests": results.iter().map(Vec::len).sum::<usize>(),
            "ok": lat.len(),
            "failures_by_status": failures,
            "wall_s": wall,
            "requests_per_s": lat.len() as f64 / wall,
            "p50_s": percentile(&lat, 0.5),
            "p99_s": percentile(&lat, 0.99),
            "server_peak_rss_mib": args.server_pid.and_then(peak_rss_kib).map(|k| k as f64 / 1024.0),
        }));
    }
    for s in &sessions {
        let _ = http.close_session(s);
    }
    let doc = serde_json::json!({
        "server": args.server, "model": args.model, "levels": rows,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{:>7} {:>8} {:>6} {:>9} {:>8} {:>8} {:>12} {:>10}",
        "clients", "requests", "ok", "req/s", "p50 s", "p99 s", "failures", "peak RSS"
    );
    for r in &rows {
        println!(
            "{:>7} {:>8} {:>6} {:>9.2} {:>8.3} {:>8.3} {:>12} {:>10}",
            r["clients"],
            r["requests"],
            r["ok"],
            r["requests_per_s"].as_f64().unwrap_or(0.0),
            r["p50_s"].as_f64().unwrap_or(f64::NAN),
            r["p99_s"].as_f64().unwrap_or(f64::NAN),
            r["failures_by_status"].to_string(),
            r["server_peak_rss_mib"]
                .as_f64()
                .map_or_else(|| "-".into(), |m| format!("{m:.0} MiB"))
        );
    }
    Ok(())
}
