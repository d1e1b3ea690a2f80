//! The `leadline` binary: parse arguments, run the command, exit with its code.

use clap::Parser;
use std::process::ExitCode;

// The server allocates many small, short-lived buffers per request: with glibc's allocator,
// malloc and free took ~10 % of the cycles of `leadline bench ingest`; mimalloc is built for
// exactly this pattern.
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
