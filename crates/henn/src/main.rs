//! `henn`: command-line front end. Thin: argument parsing, rendering and I/O only;
//! every algorithm lives in the library crates.

mod cli;

// HE objects are large (megabytes) and short-lived; a caching allocator avoids the page
// faults and zeroing that the system allocator pays on every fresh mmap (measured: ct x ct
// 11x, relinearization 2.4x faster at N = 2^14).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HENN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = cli::Cli::parse();
    cli::dispatch(args)
}
