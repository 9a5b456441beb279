//! What shipit does on a server, as pure builders of POSIX shell text and parsers of what
//! it prints back. Nothing here touches the network: `commands/` sends the scripts over
//! a session. Every interpolated value goes through `sh_quote`.

pub mod check;
pub mod layout;
pub mod lock;
pub mod release;
pub mod unit;

use crate::ssh::quote::{QuoteError, sh_quote};

/// Runs the shell text in `$SHIPIT_CMD`, which the caller has exported, with `sh`. User
/// commands (hooks, the health command) may hold secrets interpolated with `${VAR}`, and
/// `ps` shows every process's argv to every user of the host, while a process's
/// environment is readable only by its owner and root: so the text travels in the
/// environment, never in an argv. It is unset before it runs, so nothing it starts
/// inherits it.
pub const SH_FROM_ENV: &str = "sh -c 'c=$SHIPIT_CMD; unset SHIPIT_CMD; eval \"$c\"'";

/// `sh_quote` for values that config validation already proved free of NUL bytes.
pub fn q(value: &str) -> Result<String, QuoteError> {
    sh_quote(value)
}
