//! The exit codes of SPEC.md, and the one place where an error becomes one.

use crate::config::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success, also "nothing to do".
    Ok = 0,
    /// Failed, for a reason not listed below.
    Failed = 1,
    /// Invalid command line or configuration; nothing was touched.
    Invalid = 2,
    /// A deploy lock is held by someone else.
    Locked = 3,
    /// A host could not be reached, authenticated, or its host key did not verify.
    Unreachable = 4,
    /// The new release failed its health check and every touched host was rolled back.
    RolledBack = 5,
    /// Hosts are left in a mixed or unknown state: a human must look.
    Mixed = 6,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// An error that knows its exit code and, optionally, what the user can do about it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// The exit code for an error: the first cause in its chain that has one decides.
pub fn code_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.exit;
        }
        if cause.is::<ConfigError>() {
            return Exit::Invalid;
        }
        if cause.is::<clap::Error>() {
            return Exit::Invalid;
        }
        if let Some(e) = cause.downcast_ref::<crate::ssh::Error>() {
            return if e.is_unreachable() {
                Exit::Unreachable
            } else {
                Exit::Failed
            };
        }
    }
    Exit::Failed
}

/// The hint to print after an error, from the first cause that carries one.
pub fn hint_for(err: &anyhow::Error) -> Option<&str> {
    err.chain()
        .find_map(|c| c.downcast_ref::<Failure>().and_then(|f| f.hint.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_spec_table() {
        let table = [
            (Exit::Ok, 0),
            (Exit::Failed, 1),
            (Exit::Invalid, 2),
            (Exit::Locked, 3),
            (Exit::Unreachable, 4),
            (Exit::RolledBack, 5),
            (Exit::Mixed, 6),
        ];
        for (exit, code) in table {
            assert_eq!(exit.code(), code);
        }
    }

    #[test]
    fn the_first_coded_cause_decides() {
        let err = anyhow::Error::new(Failure::new(Exit::Locked, "held")).context("deploying");
        assert_eq!(code_for(&err), Exit::Locked);
        let err = anyhow::Error::new(ConfigError {
            file: "x".into(),
            problems: vec![],
        });
        assert_eq!(code_for(&err), Exit::Invalid);
        assert_eq!(code_for(&anyhow::anyhow!("plain")), Exit::Failed);
    }
}
