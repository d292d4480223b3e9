//! `arpg`: the command-line interface of ARPG Studio.

mod bench;
mod cli;
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
