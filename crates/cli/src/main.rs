//! The `gatekeeper` binary.

#![forbid(unsafe_code)]

use std::io::{self, BufWriter};
use std::process::ExitCode;

fn main() -> ExitCode {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    // Not locked for the whole run: `serve` logs to standard error from other threads.
    // Buffered: `check` and `explain` flush whenever they are about to wait for input, so
    // each answer leaves before the next request is read, without a write per line.
    let mut output = BufWriter::new(io::stdout());
    let mut errors = io::stderr();
    let code = cli::run_with(
        std::env::args_os(),
        &mut input,
        &mut output,
        &mut errors,
        cli::Terminal::detect(),
    );
    ExitCode::from(code)
}
