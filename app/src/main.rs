//! `arpg`: the command-line interface of ARPG Studio.

mod bench;
mod cli;
#[cfg(feature = "train")]
mod evaluate;

fn main() -> std::process::ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
