//! Writing to stdout without panicking when it is a closed pipe
//! (`walg wal-verify | head`): [`out!`] and [`print_json`].
//!
//! Progress and logs go to stderr, not through here.

use anyhow::Result;

/// `println!` that does not panic when stdout is a closed pipe
/// (`walg wal-verify | head`).
macro_rules! out {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
pub(crate) use out;

/// Writes `text` as it is (no newline added) on stdout, ignoring a closed
/// pipe as [`out!`] does.
pub fn print_text(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Prints `value` as pretty JSON on stdout (through [`out!`]).
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    out!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
