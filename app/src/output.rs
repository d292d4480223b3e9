//! Writing to standard output and standard error without panicking.
//!
//! `println!` panics when standard output is a closed pipe (`arpg info x.pt | head -1`) or a full
//! device (`> /dev/full`). Every line the CLI prints goes through [`outln!`](crate::outln), which
//! returns the write's error as a [`StdoutError`]; `main` ends quietly with exit 0 on a closed
//! pipe (as Unix tools do) and prints one `error:` line for any other failure. Notes and warnings
//! go through [`errln!`](crate::errln), which drops a failed write: a message about the run must
//! never end the run.

use std::fmt;
use std::io::{self, Write};

/// A line could not be written to standard output.
#[derive(Debug)]
pub struct StdoutError(pub io::Error);

impl StdoutError {
    /// The reader went away (a closed pipe): not a failure of the command.
    pub fn is_closed_pipe(&self) -> bool {
        self.0.kind() == io::ErrorKind::BrokenPipe
    }
}

impl fmt::Display for StdoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write to standard output: {}", self.0)
    }
}

// The message already states the cause; a `source` would print it twice in `{:#}`.
impl std::error::Error for StdoutError {}

/// Writes one line to standard output and flushes it (so a full device is seen at this line,
/// not at exit, where the error would be lost).
pub fn write_line(args: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(StdoutError)
}

/// Writes one line to standard error; a failed write is dropped.
pub fn write_err_line(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// An error and its causes on one line, each cause that the text before it already states left
/// out (libraries often put their cause into their own message as well).
pub fn message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// The error chain's [`StdoutError`], if the command failed writing its output.
pub fn stdout_error(e: &anyhow::Error) -> Option<&StdoutError> {
    e.chain().find_map(|c| c.downcast_ref::<StdoutError>())
}

/// `println!` that returns `Result<(), StdoutError>` instead of panicking.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics (a failed write to standard error is dropped).
#[macro_export]
macro_rules! errln {
    () => {
        $crate::output::write_err_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::write_err_line(format_args!($($arg)*))
    };
}
