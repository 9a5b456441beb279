//! What shipit does on a server, as pure builders of POSIX shell text and parsers of what
//! it prints back. Nothing here touches the network: `commands/` sends the scripts over
//! a session. Every interpolated value goes through `sh_quote`.

pub mod check;
pub mod layout;
pub mod lock;
pub mod release;

use crate::ssh::quote::{QuoteError, sh_quote};

/// `sh_quote` for values that config validation already proved free of NUL bytes.
pub fn q(value: &str) -> Result<String, QuoteError> {
    sh_quote(value)
}
