//! The polling loop of the health check: when attempts start, the settle window, the
//! overall timeout, and what the outcome says. How checks are made is a [`Probe`].

use std::time::Duration;

use tokio::time::Instant;

use super::spec::{Attempt, Outcome, attempt_timeout, human};

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Pass,
    Fail(String),
    Fatal(String),
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub(super) timeout: Duration,
    pub(super) interval: Duration,
    pub(super) settle: Duration,
}

/// Runs the checks of one attempt.
pub(super) trait Probe {
    /// `budget`: the per-attempt bound; `remaining`: time left before the overall timeout.
    async fn probe(&mut self, budget: Duration, remaining: Duration) -> Step;
}

/// The polling loop, apart from how checks are made (so it can be tested without hosts).
pub(super) async fn poll<P: Probe>(
    timing: Timing,
    probe: &mut P,
    on_attempt: &mut (dyn FnMut(&Attempt) + Send),
) -> Outcome {
    let start = Instant::now();
    let deadline = start + timing.timeout;
    let per_attempt = attempt_timeout(timing.interval);
    let mut attempts = 0u32;
    let mut passing_since: Option<Instant> = None;
    let mut last_failure: Option<String> = None;
    loop {
        let began = Instant::now();
        if began >= deadline {
            break;
        }
        attempts += 1;
        let remaining = deadline - began;
        let budget = per_attempt.min(remaining);
        let step = probe.probe(budget, remaining).await;
        let elapsed = start.elapsed();
        // An attempt that ran out of the time left before the overall timeout (not of its
        // own budget) failed for that alone: it says less than the failure before it.
        let cut_short = remaining < per_attempt && began.elapsed() >= budget;
        match step {
            Step::Pass => {
                let since = *passing_since.get_or_insert(began);
                let passing_for = began - since;
                on_attempt(&Attempt {
                    number: attempts,
                    elapsed,
                    failure: None,
                    passing_for,
                });
                if passing_for >= timing.settle {
                    return Outcome::Healthy { attempts, elapsed };
                }
            }
            Step::Fail(reason) => {
                passing_since = None;
                on_attempt(&Attempt {
                    number: attempts,
                    elapsed,
                    failure: Some(reason.clone()),
                    passing_for: Duration::ZERO,
                });
                if !(cut_short && last_failure.is_some()) {
                    last_failure = Some(reason);
                }
            }
            Step::Fatal(reason) => {
                on_attempt(&Attempt {
                    number: attempts,
                    elapsed,
                    failure: Some(reason.clone()),
                    passing_for: Duration::ZERO,
                });
                return Outcome::Unhealthy {
                    reason,
                    attempts,
                    elapsed,
                };
            }
        }
        // A zero interval (not valid in deploy.yaml) must not spin.
        let mut next = began + timing.interval.max(Duration::from_millis(10));
        if let Some(since) = passing_since {
            // Check again right when the settle window closes, not an interval later.
            next = next.min(since + timing.settle);
        }
        tokio::time::sleep_until(next.min(deadline)).await;
    }
    let after = human(timing.timeout);
    let reason = match (passing_since, last_failure) {
        (Some(since), _) => format!(
            "timed out after {after}: the checks had passed for {} of the {} settle window",
            human(deadline.saturating_duration_since(since)),
            human(timing.settle)
        ),
        (None, Some(failure)) => format!("timed out after {after}: {failure}"),
        (None, None) => format!("timed out after {after} before any check finished"),
    };
    Outcome::Unhealthy {
        reason,
        attempts,
        elapsed: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A probe that replays scripted steps, each after a delay.
    struct Scripted {
        steps: VecDeque<(Duration, Step)>,
        budgets: Vec<Duration>,
    }

    impl Scripted {
        fn new(steps: &[(u64, Step)]) -> Self {
            Scripted {
                steps: steps
                    .iter()
                    .map(|(ms, s)| (Duration::from_millis(*ms), s.clone()))
                    .collect(),
                budgets: Vec::new(),
            }
        }
    }

    impl Probe for Scripted {
        async fn probe(&mut self, budget: Duration, _remaining: Duration) -> Step {
            self.budgets.push(budget);
            let (delay, step) = self
                .steps
                .pop_front()
                .unwrap_or((Duration::ZERO, Step::Fail("script ran out".into())));
            tokio::time::sleep(delay.min(budget)).await;
            step
        }
    }

    fn timing(timeout: u64, interval: u64, settle: u64) -> Timing {
        Timing {
            timeout: Duration::from_millis(timeout),
            interval: Duration::from_millis(interval),
            settle: Duration::from_millis(settle),
        }
    }

    fn run(t: Timing, probe: &mut Scripted) -> (Outcome, Vec<Attempt>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut seen = Vec::new();
        let outcome = rt.block_on(poll(t, probe, &mut |a: &Attempt| seen.push(a.clone())));
        (outcome, seen)
    }

    fn fail(r: &str) -> Step {
        Step::Fail(r.into())
    }

    #[test]
    fn healthy_after_the_settle_window() {
        let mut p = Scripted::new(&[
            (0, fail("connection refused")),
            (0, Step::Pass),
            (0, Step::Pass),
            (0, Step::Pass),
            (0, Step::Pass),
        ]);
        let (outcome, seen) = run(timing(5000, 20, 50), &mut p);
        match outcome {
            Outcome::Healthy { attempts, elapsed } => {
                // Passes at ~20, 40, 60 and ~70ms (the settle window's end).
                assert_eq!(attempts, 5, "{seen:?}");
                assert!(elapsed >= Duration::from_millis(70), "{elapsed:?}");
            }
            other => panic!("{other:?} {seen:?}"),
        }
        assert_eq!(seen[0].failure.as_deref(), Some("connection refused"));
        assert_eq!(seen[1].passing_for, Duration::ZERO);
        assert!(seen[4].passing_for >= Duration::from_millis(50));
        assert!(
            seen.iter()
                .enumerate()
                .all(|(i, a)| a.number as usize == i + 1)
        );
    }

    #[test]
    fn zero_settle_is_the_first_pass() {
        let mut p = Scripted::new(&[(0, fail("x")), (0, Step::Pass)]);
        let (outcome, _) = run(timing(5000, 10, 0), &mut p);
        assert!(
            matches!(outcome, Outcome::Healthy { attempts: 2, .. }),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_failure_inside_the_window_starts_it_over() {
        let mut p = Scripted::new(&[
            (0, Step::Pass),
            (0, fail("500")),
            (0, Step::Pass),
            (0, Step::Pass),
            (0, Step::Pass),
            (0, Step::Pass),
        ]);
        let (outcome, seen) = run(timing(5000, 20, 40), &mut p);
        assert!(
            matches!(outcome, Outcome::Healthy { attempts: 5, .. }),
            "{outcome:?} {seen:?}"
        );
        assert_eq!(seen[2].passing_for, Duration::ZERO);
    }

    #[test]
    fn fatal_stops_at_once() {
        let mut p = Scripted::new(&[
            (0, Step::Pass),
            (0, Step::Fatal("hello.service is failed (exit-code)".into())),
        ]);
        let (outcome, seen) = run(timing(60_000, 10, 5000), &mut p);
        match outcome {
            Outcome::Unhealthy {
                reason,
                attempts,
                elapsed,
            } => {
                assert_eq!(reason, "hello.service is failed (exit-code)");
                assert_eq!(attempts, 2);
                assert!(elapsed < Duration::from_secs(1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn timeout_reports_the_last_failure() {
        let steps: Vec<(u64, Step)> = (0..100)
            .map(|i| (0, fail(&format!("GET /: 500 Internal Server Error #{i}"))))
            .collect();
        let mut p = Scripted::new(&steps);
        let started = std::time::Instant::now();
        let (outcome, seen) = run(timing(200, 30, 0), &mut p);
        let took = started.elapsed();
        match outcome {
            Outcome::Unhealthy {
                reason, attempts, ..
            } => {
                let last = seen.last().unwrap().failure.clone().unwrap();
                assert_eq!(reason, format!("timed out after 200ms: {last}"));
                assert_eq!(attempts as usize, seen.len());
                assert!((6..=8).contains(&attempts), "{attempts}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(400),
            "{took:?}"
        );
    }

    /// The last attempt, started just before the timeout and stopped by it, fails with
    /// "no answer within 0ms": the outcome keeps the failure before it, which says why.
    #[test]
    fn an_attempt_cut_short_by_the_timeout_does_not_hide_the_failure_before_it() {
        let mut p = Scripted::new(&[
            (0, fail("GET /healthz: 500 Internal Server Error")),
            (
                60_000,
                fail("GET /healthz: no complete response within 0ms"),
            ),
        ]);
        let (outcome, seen) = run(timing(200, 30, 0), &mut p);
        assert_eq!(seen.len(), 2, "{seen:?}");
        match outcome {
            Outcome::Unhealthy { reason, .. } => assert_eq!(
                reason,
                "timed out after 200ms: GET /healthz: 500 Internal Server Error"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn timeout_while_settling_says_so() {
        let steps: Vec<(u64, Step)> = (0..100).map(|_| (0, Step::Pass)).collect();
        let mut p = Scripted::new(&steps);
        let (outcome, _) = run(timing(100, 20, 10_000), &mut p);
        match outcome {
            Outcome::Unhealthy { reason, .. } => assert!(
                reason.starts_with("timed out after 100ms: the checks had passed for ")
                    && reason.ends_with(" of the 10s settle window"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn attempts_never_run_past_the_timeout() {
        // Each attempt hangs until its budget runs out.
        let steps: Vec<(u64, Step)> = (0..100).map(|_| (60_000, fail("no answer"))).collect();
        let mut p = Scripted::new(&steps);
        let started = std::time::Instant::now();
        let (outcome, _) = run(timing(1500, 100, 0), &mut p);
        assert!(!outcome.is_healthy());
        assert!(
            started.elapsed() < Duration::from_millis(1800),
            "{:?}",
            started.elapsed()
        );
        // The per-attempt budget is 1s, the last one only what was left.
        assert_eq!(p.budgets[0], Duration::from_secs(1));
        assert!(
            p.budgets[1] <= Duration::from_millis(500),
            "{:?}",
            p.budgets
        );
    }
}
