//! [`Deadline`]: the time budget of connecting to one host (DNS, TCP, handshake and
//! authentication together).

use std::time::Duration;

use tokio::time::Instant;

use super::error::{Error, Phase};

/// The time left for connecting to one host. Time spent waiting for a person (a
/// passphrase prompt) is given back with [`Deadline::extend`].
#[derive(Debug)]
pub(crate) struct Deadline {
    host: String,
    at: Instant,
    budget: Duration,
}

impl Deadline {
    pub(crate) fn new(host: &str, budget: Duration) -> Self {
        Deadline {
            host: host.to_owned(),
            at: Instant::now() + budget,
            budget,
        }
    }

    /// Runs `fut`, or fails with [`Error::Timeout`] naming `phase` when time is up.
    pub(crate) async fn run<F: Future>(&self, phase: Phase, fut: F) -> Result<F::Output, Error> {
        tokio::time::timeout_at(self.at, fut)
            .await
            .map_err(|_| Error::Timeout {
                host: self.host.clone(),
                phase,
                after: self.budget,
            })
    }

    /// The time left.
    pub(crate) fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub(crate) fn extend(&mut self, by: Duration) {
        self.at += by;
    }
}
