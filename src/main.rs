//! The `rill` binary: parse the command line, set up logs, map errors to exit codes.

mod cli;

use clap::Parser;
use std::process::ExitCode;

/// The allocator of the binary on Linux (the library leaves it to its
/// user): jemalloc, which keeps a growing engine state (a 30-day hopping
/// window holds every key's tiles, a few hundred megabytes) in fewer, less
/// scattered pages than the system allocator, and frees and reuses its
/// memory faster. The state's sketches (`count_distinct`, `quantile`,
/// `collect_set`) allocate per tile and gain most.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts: unused memory is given back to
/// the system after 30 s instead of 10 s, so that a state that grows reuses
/// pages instead of having them cleared again. (Transparent huge pages,
/// `thp:always`, were measured and left out: 3 % faster on a 30-day
/// hopping replay, 9 % slower on a point-in-time join, whose large
/// short-lived buffers then cost whole huge pages to clear.)
/// `_RJEM_MALLOC_CONF` in the environment overrides them.
#[cfg(target_os = "linux")]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"dirty_decay_ms:30000,muzzy_decay_ms:30000\0";

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    if !matches!(
        args.command,
        cli::Command::Run(_) | cli::Command::Serve(_) | cli::Command::Demo(_)
    ) {
        // A command whose output is piped into `head` or a pager ends
        // quietly when the reader goes, as other command-line tools do,
        // instead of failing on its next write. (Sockets are not affected:
        // the standard library sends with MSG_NOSIGNAL.) The long-running
        // commands keep the signal ignored.
        // SAFETY: setting a signal's disposition to its default, before
        // any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // RILL_LOG, else RUST_LOG, else: what a service does (start, partitions,
    // outages and recoveries, once each) for the long-running commands, and
    // warnings only for the ones that print their own summary.
    let long_running = matches!(
        args.command,
        cli::Command::Run(_) | cli::Command::Serve(_) | cli::Command::Demo(_)
    );
    let default = if long_running {
        "info"
    } else {
        "warn,rill::serve::freshness=info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RILL_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| default.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format {
        cli::LogFormat::Json => logs.json().flatten_event(true).init(),
        cli::LogFormat::Text => logs.init(),
    }
    let result = match args.command {
        cli::Command::Validate(a) => cli::validate::run(a).map(|bad| if bad == 0 { 0 } else { 1 }),
        cli::Command::Replay(a) => cli::replay::run(a).map(|_| 0),
        cli::Command::Bench(a) => cli::bench::run(a).map(|_| 0),
        cli::Command::Demo(a) => cli::demo::run(a).map(|_| 0),
        cli::Command::Run(a) => cli::run::run(a).map(|_| 0),
        cli::Command::Join(a) => cli::join::run(a).map(|_| 0),
        cli::Command::Gen(a) => cli::gen::run(a).map(|_| 0),
        cli::Command::Serve(a) => cli::serve::run(a).map(|_| 0),
        cli::Command::Features(a) => cli::features::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
