//! `henn`: command-line front end. Thin: argument parsing, rendering and I/O only;
//! every algorithm lives in the library crates.

mod cli;

// HE objects are large (megabytes) and short-lived; a caching allocator avoids the page
// faults and zeroing that the system allocator pays on every fresh mmap (measured: ct x ct
// 11x, relinearization 2.4x faster at N = 2^14).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (the same index in v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped instead of returning it to the OS (mimalloc's default purges
/// after 10 ms; a 1 s delay still left 90k page faults in 30 images). Inference frees and re-allocates the same megabyte-sized buffers every layer;
/// returning them makes every reuse a fresh page fault with the kernel zeroing 2 MiB huge
/// pages, measured at 12-27 % of the CPU time of channel-packed inference on this VM.
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide allocator option; mimalloc allows this at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

fn main() -> anyhow::Result<()> {
    tune_allocator();
    let args = cli::Cli::parse();
    // a server logs its requests (with their ids) by default; tools only warnings
    let default = if args.command.is_service() {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HENN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .init();
    cli::dispatch(args)
}
