//! The `rill` binary: parse the command line, set up logs, map errors to exit codes.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RILL_LOG")
                .unwrap_or_else(|_| "warn,rill::serve::freshness=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
