//! How a run's events look: on a terminal, the live view (a row per host that changes in
//! place, as many as fit on the screen, a `+N more` row for the rest with their counts
//! and the slowest of them, and an overall row whose count and clock move); otherwise one
//! plain line (or JSON object) per event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::event::{Event, Events, Listener};

use super::Printer;

/// The events of one run, as the printer shows them. On a terminal the live view is up
/// from [`Live::start`] to [`Live::finish`], which takes it off the screen before the
/// summary: in between, nothing may write to the terminal but through [`Live::events`]
/// (a line written past the view is drawn over, and the view's own rows are left behind).
pub struct Live {
    printer: Printer,
    hosts: Vec<String>,
    hearing: Arc<Hearing>,
}

impl Live {
    /// For a run over `hosts` (their names, in order). Nothing is on the screen yet:
    /// until [`Live::start`], events are plain lines.
    pub fn new(printer: Printer, hosts: &[String]) -> Live {
        Live {
            printer,
            hosts: hosts.to_vec(),
            hearing: Arc::new(Hearing {
                lines: Lines {
                    printer,
                    started: Instant::now(),
                },
                view: OnceLock::new(),
            }),
        }
    }

    pub fn events(&self) -> Events {
        Events::new(self.hearing.clone())
    }

    /// The rollout begins: on a terminal, the live view comes up (its clock starts now).
    pub fn start(&self) {
        let p = &self.printer;
        if p.progress && p.verbosity > super::Verbosity::Quiet {
            let _ = self.hearing.view.set(View::new(&self.hosts));
        }
    }

    /// The run is over: nothing of the live view stays on the screen.
    pub fn finish(&self) {
        if let Some(view) = self.hearing.view.get() {
            view.clear();
        }
    }
}

/// Who hears a run's events: the plain lines, or the live view once it is up.
struct Hearing {
    lines: Lines,
    view: OnceLock<View>,
}

impl Listener for Hearing {
    fn hear(&self, at: Instant, event: Event) {
        match self.view.get() {
            Some(view) => view.hear(at, event),
            None => self.lines.hear(at, event),
        }
    }
}

/// Without a terminal: a line per event, with the time since the run began.
struct Lines {
    printer: Printer,
    started: Instant,
}

impl Listener for Lines {
    fn hear(&self, at: Instant, event: Event) {
        let p = &self.printer;
        match event {
            Event::Step { host, text } => {
                p.event(&host, at.saturating_duration_since(self.started), &text)
            }
            Event::Output { host, line } => p.child_line(&host, &format!("{host}: {line}")),
            Event::Warning { host, text } => p.warn(&format!("{host}: {text}")),
            Event::Note(text) => p.info(&text),
            Event::Alert(text) => p.warn(&text),
            Event::Upload { .. } | Event::Finished { .. } => {}
        }
    }
}

const ROW: &str = "{spinner} {prefix:<24} {msg}";
const UPLOAD: &str =
    "{spinner} {prefix:<24} uploading [{bar:20}] {bytes}/{total_bytes} {bytes_per_sec}";
const DONE: &str = "  {prefix:<24} {msg}";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .progress_chars("=> ")
}

/// The live view on a terminal.
struct View {
    multi: MultiProgress,
    overall: ProgressBar,
    /// Hosts finished so far, of all of them.
    finished: Mutex<u64>,
    total: u64,
    rows: HashMap<String, ProgressBar>,
    /// Hosts without a row of their own: one row with their counts and the slowest.
    more: Option<ProgressBar>,
    others: Mutex<HashMap<String, Other>>,
    uploading: Mutex<HashMap<String, bool>>,
}

/// A host without a row: where it is, since when, and how it ended.
#[derive(Debug, Clone)]
struct Other {
    step: String,
    since: Instant,
    ended: Option<&'static str>,
}

/// The row for the hosts without one: how many are at work and how many ended how, and
/// the three that have been longest at their current step.
fn others_line(others: &HashMap<String, Other>, now: Instant) -> String {
    let mut ended: Vec<(&'static str, usize)> = Vec::new();
    let mut working: Vec<(&String, &Other)> = Vec::new();
    for (name, o) in others {
        match o.ended {
            Some(word) => match ended.iter_mut().find(|(w, _)| *w == word) {
                Some((_, n)) => *n += 1,
                None => ended.push((word, 1)),
            },
            None => working.push((name, o)),
        }
    }
    ended.sort();
    let mut parts = vec![format!("{} at work", working.len())];
    parts.extend(ended.iter().map(|(w, n)| format!("{n} {w}")));
    let mut line = format!("+{} more: {}", others.len(), parts.join(", "));
    working.sort_by(|a, b| a.1.since.cmp(&b.1.since).then(a.0.cmp(b.0)));
    let slowest: Vec<String> = working
        .iter()
        .take(3)
        .map(|(name, o)| {
            let secs = now.saturating_duration_since(o.since).as_secs();
            format!("{name} ({}, {secs}s)", o.step)
        })
        .collect();
    if !slowest.is_empty() {
        line.push_str(&format!("; slowest: {}", slowest.join(", ")));
    }
    line
}

fn finished(done: u64, total: u64) -> String {
    format!("{done}/{total} hosts finished")
}

/// Rows of the terminal on stderr, if it is one.
fn terminal_rows() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own; fd 2 is stderr.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then_some(ws.ws_row as usize)
}

impl View {
    fn new(hosts: &[String]) -> View {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        // Keep a few rows for the overall row, the `+N more` row and the prompt.
        let room = terminal_rows().unwrap_or(24).saturating_sub(4).max(3);
        let mut rows = HashMap::new();
        for name in hosts.iter().take(room) {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style(ROW));
            bar.set_prefix(name.clone());
            bar.set_message("connecting");
            bar.enable_steady_tick(Duration::from_millis(120));
            rows.insert(name.clone(), bar);
        }
        let now = Instant::now();
        let others: HashMap<String, Other> = hosts
            .iter()
            .skip(room)
            .map(|name| {
                let o = Other {
                    step: "connecting".into(),
                    since: now,
                    ended: None,
                };
                (name.clone(), o)
            })
            .collect();
        let more = (hosts.len() > room).then(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style("  {msg}"));
            bar.set_message(others_line(&others, now));
            bar
        });
        let total = hosts.len() as u64;
        let overall = multi.add(ProgressBar::new(total));
        // The count is the message: a bar with a steady tick redraws on a new message at
        // once, but a new position only at its next tick.
        overall.set_style(style("  {prefix:<24} [{bar:30}] {msg}, {elapsed}"));
        overall.set_prefix("overall");
        overall.set_message(finished(0, total));
        // The clock moves even while no host reports anything.
        overall.enable_steady_tick(Duration::from_millis(500));
        View {
            multi,
            overall,
            finished: Mutex::new(0),
            total,
            rows,
            more,
            others: Mutex::new(others),
            uploading: Mutex::new(HashMap::new()),
        }
    }

    fn println(&self, line: &str) {
        let _ = self.multi.println(crate::redact::scrub(line));
    }

    fn clear(&self) {
        for bar in self.rows.values().chain(&self.more).chain([&self.overall]) {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }

    /// A host without a row moved on (a step, or its end): its row of counts follows.
    fn other(&self, host: &str, step: Option<&str>, ended: Option<&'static str>) {
        let Some(more) = &self.more else { return };
        let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        let Some(o) = others.get_mut(host) else {
            return;
        };
        if let Some(step) = step {
            // The step's first words: "staged release ..." reads as "staged release".
            let short: Vec<&str> = step.split_whitespace().take(2).collect();
            o.step = short.join(" ");
            o.since = Instant::now();
        }
        if ended.is_some() {
            o.ended = ended;
        }
        more.set_message(others_line(&others, Instant::now()));
    }

    fn uploading(&self, host: &str, now: bool) -> bool {
        let mut map = self.uploading.lock().unwrap_or_else(|e| e.into_inner());
        let was = map.get(host).copied().unwrap_or(false);
        map.insert(host.to_owned(), now);
        was
    }
}

impl Listener for View {
    fn hear(&self, _: Instant, event: Event) {
        match event {
            Event::Step { host, text } => {
                if let Some(row) = self.rows.get(&host) {
                    if self.uploading(&host, false) {
                        row.set_style(style(ROW));
                    }
                    row.set_message(text);
                } else {
                    self.other(&host, Some(&text), None);
                }
            }
            Event::Upload { host, sent, total } => {
                if let Some(row) = self.rows.get(&host) {
                    if !self.uploading(&host, true) {
                        row.set_style(style(UPLOAD));
                        row.set_length(total);
                    }
                    row.set_position(sent);
                }
            }
            Event::Output { host, line } => self.println(&format!("{host}: {line}")),
            Event::Warning { host, text } => self.println(&format!("warning: {host}: {text}")),
            Event::Note(text) => self.println(&text),
            Event::Alert(text) => self.println(&format!("warning: {text}")),
            Event::Finished { host, outcome } => {
                // One host at a time: the last one's count is the last word.
                let mut done = self.finished.lock().unwrap_or_else(|e| e.into_inner());
                *done = (*done + 1).min(self.total);
                self.overall.set_position(*done);
                let text = finished(*done, self.total);
                if *done == self.total {
                    // Drawn now, whatever the rate limit: all hosts finished is on the
                    // screen before the view goes.
                    self.overall.finish_with_message(text);
                } else {
                    self.overall.set_message(text);
                }
                drop(done);
                // Finishing draws at once, the overall row's new count with it.
                if let Some(row) = self.rows.get(&host) {
                    row.set_style(style(DONE));
                    row.finish_with_message(outcome.word());
                } else {
                    self.other(&host, None, Some(outcome.word()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_for_the_rest_counts_them_and_names_the_slowest() {
        let now = Instant::now();
        let at = |secs: u64, step: &str, ended: Option<&'static str>| Other {
            step: step.into(),
            since: now - Duration::from_secs(secs),
            ended,
        };
        let mut others = HashMap::new();
        others.insert("app10".to_owned(), at(3, "staged release", None));
        others.insert("app11".to_owned(), at(40, "uploading", None));
        others.insert("app12".to_owned(), at(12, "switching to", None));
        others.insert("app13".to_owned(), at(1, "connecting", None));
        others.insert("app14".to_owned(), at(0, "x", Some("done")));
        others.insert("app15".to_owned(), at(0, "x", Some("done")));
        others.insert("app16".to_owned(), at(0, "x", Some("failed")));
        assert_eq!(
            others_line(&others, now),
            "+7 more: 4 at work, 2 done, 1 failed; slowest: app11 (uploading, 40s), \
             app12 (switching to, 12s), app10 (staged release, 3s)"
        );
    }
}
