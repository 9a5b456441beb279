//! What hosts and the rollout report while they work. Decisions flow down, events flow
//! up: nothing that works on hosts formats output; the printer alone decides what a
//! person (the live view on a terminal) or a program (plain lines, JSON) sees of them.

use std::sync::Arc;
use std::time::Instant;

use crate::outcome::Outcome;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A host reached a step: `staged release …`, `healthy after 1.2s`.
    Step { host: String, text: String },
    /// An upload to a host: `sent` of `total` bytes so far.
    Upload { host: String, sent: u64, total: u64 },
    /// A line a script printed on the host (a hook's output).
    Output { host: String, line: String },
    /// Something about one host the operator should know.
    Warning { host: String, text: String },
    /// A host is done with this run.
    Finished { host: String, outcome: Outcome },
    /// The rollout's own news: `canary: switching app1`.
    Note(String),
    /// The rollout's own warnings: `the rollout stopped: …`.
    Alert(String),
}

/// Who hears the events of a run (the printer's live view or its line writer; a test's
/// recorder).
pub trait Listener: Send + Sync {
    /// `at`: when the event happened.
    fn hear(&self, at: Instant, event: Event);
}

/// The handle hosts and the rollout report through; cheap to clone.
#[derive(Clone)]
pub struct Events(Arc<dyn Listener>);

impl Events {
    pub fn new(listener: Arc<dyn Listener>) -> Events {
        Events(listener)
    }

    /// Events that nobody hears.
    pub fn none() -> Events {
        struct Deaf;
        impl Listener for Deaf {
            fn hear(&self, _: Instant, _: Event) {}
        }
        Events(Arc::new(Deaf))
    }

    pub fn send(&self, event: Event) {
        self.0.hear(Instant::now(), event);
    }

    pub fn step(&self, host: &str, text: impl Into<String>) {
        self.send(Event::Step {
            host: host.to_owned(),
            text: text.into(),
        });
    }

    pub fn warning(&self, host: &str, text: impl Into<String>) {
        self.send(Event::Warning {
            host: host.to_owned(),
            text: text.into(),
        });
    }

    pub fn note(&self, text: impl Into<String>) {
        self.send(Event::Note(text.into()));
    }

    pub fn alert(&self, text: impl Into<String>) {
        self.send(Event::Alert(text.into()));
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}
