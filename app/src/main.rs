//! `arpg`: the command-line interface of ARPG Studio.

mod bench;
mod cli;
#[cfg(feature = "train")]
mod evaluate;

use std::process::ExitCode;

use arpg_app::{errln, output};

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        // The reader of our output went away (`arpg info x.pt | head -1`): what it wanted was
        // written, so this is not a failure.
        Err(e) if output::stdout_error(&e).is_some_and(output::StdoutError::is_closed_pipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("error: {}", output::message(&e));
            ExitCode::FAILURE
        }
    }
}
