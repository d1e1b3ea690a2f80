//! The `leadline` binary: parse arguments, run the command, exit with its code.

use clap::Parser;
use std::process::ExitCode;

// The server allocates many small, short-lived buffers per request; mimalloc handles that
// pattern markedly faster than glibc's allocator (measured with `leadline bench ingest`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = leadline::cli::Cli::parse();
    match leadline::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
