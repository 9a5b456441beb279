//! The exit codes (docs/operations.md), and the one place where an error or the hosts'
//! outcomes become one.

use crate::config::ConfigError;
use crate::outcome::Outcome;

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

/// How far a deploy or rollback got: it decides between codes that the hosts' outcomes
/// alone cannot tell apart (a host rolled back within `max_failures` while the others
/// went on is exit 1; the same host when the rollout stopped is exit 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Before any host switched: connecting, locking, surveying, staging, a dry run.
    Early,
    /// Every batch ran; failures, if any, were within `max_failures`.
    Completed,
    /// The rollout stopped (too many failures, or a signal): hosts it switched were put
    /// back (`on_failure: rollback`) or kept (`halt`).
    Stopped,
}

/// The exit code of a run from where its hosts ended up: the one table.
///
/// | outcomes (first match wins) | early | completed | stopped |
/// |---|---|---|---|
/// | any `broken` | 6 | 6 | 6 |
/// | any `done` | - | - | 6 (halted: mixed) |
/// | any `rolled-back` | 5 | 1 | 5 |
/// | any `unreachable` | 4 | 4 | 1 |
/// | any `locked` | 3 | 3 | 1 |
/// | any `failed` or `interrupted` | 1 | 1 | 1 |
/// | otherwise | 0 | 0 | 1 |
pub fn for_hosts<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>, ending: Ending) -> Exit {
    let outcomes: Vec<&Outcome> = outcomes.into_iter().collect();
    let any = |f: fn(&Outcome) -> bool| outcomes.iter().any(|o| f(o));
    if any(|o| matches!(o, Outcome::Broken { .. })) {
        return Exit::Mixed;
    }
    let rolled_back = any(|o| matches!(o, Outcome::RolledBack { .. }));
    match ending {
        Ending::Stopped if any(|o| matches!(o, Outcome::Done)) => Exit::Mixed,
        Ending::Stopped if rolled_back => Exit::RolledBack,
        Ending::Stopped => Exit::Failed,
        Ending::Completed if rolled_back => Exit::Failed,
        Ending::Early if rolled_back => Exit::RolledBack,
        Ending::Early | Ending::Completed => {
            if any(|o| matches!(o, Outcome::Unreachable { .. })) {
                Exit::Unreachable
            } else if any(|o| matches!(o, Outcome::Locked { .. })) {
                Exit::Locked
            } else if any(|o| matches!(o, Outcome::Failed { .. } | Outcome::Interrupted { .. })) {
                Exit::Failed
            } else {
                Exit::Ok
            }
        }
    }
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

    #[test]
    fn host_outcomes_follow_the_table() {
        use Ending::*;
        let rolled = Outcome::RolledBack { reason: "x".into() };
        let broken = Outcome::Broken { reason: "x".into() };
        let skipped = Outcome::Skipped {
            reason: "same".into(),
        };
        let failed = Outcome::Failed {
            step: "s".into(),
            reason: "r".into(),
        };
        let locked = Outcome::Locked { holder: "h".into() };
        let unreachable = Outcome::Unreachable { reason: "r".into() };
        let cases: &[(&[&Outcome], Ending, Exit)] = &[
            (&[&Outcome::Done, &skipped], Completed, Exit::Ok),
            (&[&Outcome::Done, &rolled], Completed, Exit::Failed),
            (&[&Outcome::Done, &rolled], Stopped, Exit::Mixed),
            (&[&rolled, &rolled], Stopped, Exit::RolledBack),
            (&[&rolled, &broken], Stopped, Exit::Mixed),
            (&[&rolled, &broken], Completed, Exit::Mixed),
            (&[&locked, &Outcome::Pending], Early, Exit::Locked),
            (&[&unreachable, &locked], Early, Exit::Unreachable),
            (&[&failed, &Outcome::Pending], Early, Exit::Failed),
            (&[&Outcome::Pending], Stopped, Exit::Failed),
            (&[&skipped], Early, Exit::Ok),
        ];
        for (outcomes, ending, exit) in cases {
            assert_eq!(
                for_hosts(outcomes.iter().copied(), *ending),
                *exit,
                "{outcomes:?} {ending:?}"
            );
        }
    }
}
