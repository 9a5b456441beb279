//! How a run's events look: on a terminal, the live view (a row per host that changes in
//! place, as many as fit on the screen, a `+N more` row for the rest, and an overall row
//! whose count and clock move); otherwise one plain line (or JSON object) per event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::event::{Event, Events, Listener};

use super::Printer;

/// The events of one run, as the printer shows them. [`Live::finish`] takes the live view
/// off the screen before the summary.
pub struct Live {
    listener: Arc<dyn Listener>,
    view: Option<Arc<View>>,
}

impl Live {
    /// For a run over `hosts` (their names, in order).
    pub fn new(printer: Printer, hosts: &[String]) -> Live {
        if printer.progress && printer.verbosity > super::Verbosity::Quiet {
            let view = Arc::new(View::new(hosts));
            Live {
                listener: view.clone(),
                view: Some(view),
            }
        } else {
            Live {
                listener: Arc::new(Lines {
                    printer,
                    started: Instant::now(),
                }),
                view: None,
            }
        }
    }

    pub fn events(&self) -> Events {
        Events::new(self.listener.clone())
    }

    /// The run is over: nothing of the live view stays on the screen.
    pub fn finish(&self) {
        if let Some(view) = &self.view {
            view.clear();
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
    rows: HashMap<String, ProgressBar>,
    /// Hosts without a row of their own: silent until the summary.
    more: Option<ProgressBar>,
    uploading: Mutex<HashMap<String, bool>>,
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
        let more = (hosts.len() > room).then(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style("  {msg}"));
            bar.set_message(format!(
                "+{} more host(s), in the summary at the end",
                hosts.len() - room
            ));
            bar
        });
        let overall = multi.add(ProgressBar::new(hosts.len() as u64));
        overall.set_style(style(
            "  {prefix:<24} [{bar:30}] {pos}/{len} hosts finished, {elapsed}",
        ));
        overall.set_prefix("overall");
        // The clock moves even while no host reports anything.
        overall.enable_steady_tick(Duration::from_millis(500));
        View {
            multi,
            overall,
            rows,
            more,
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
                self.overall.inc(1);
                if let Some(row) = self.rows.get(&host) {
                    row.set_style(style(DONE));
                    row.finish_with_message(outcome.word());
                }
            }
        }
    }
}
