//! The live view on a terminal: one line per host, as many as fit on the screen, a
//! `+N more` line for the rest, and an overall bar. Hosts without a line of their own
//! stay silent until the summary; output of hooks and warnings print above the lines.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct View {
    multi: MultiProgress,
    overall: ProgressBar,
    more: Mutex<Option<ProgressBar>>,
    /// Host lines that fit; computed from the terminal's height.
    room: usize,
    counts: Mutex<(usize, usize)>,
}

/// Rows of the terminal on stderr, if it is one.
fn rows() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own; fd 2 is stderr.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then_some(ws.ws_row as usize)
}

impl View {
    pub fn new() -> View {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(
                "  {prefix:<24} [{bar:30}] {pos}/{len} hosts finished, {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        overall.set_prefix("overall");
        // Keep a few rows for the overall bar, the `+N more` line and the prompt.
        let room = rows().unwrap_or(24).saturating_sub(4).max(3);
        View {
            multi,
            overall,
            more: Mutex::new(None),
            room,
            counts: Mutex::new((0, 0)),
        }
    }

    /// A line for one more host, or `None` when the screen is full.
    pub fn host(&self, name: &str) -> Option<ProgressBar> {
        self.overall.inc_length(1);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.0 < self.room {
            counts.0 += 1;
            let bar = self
                .multi
                .insert_before(&self.overall, ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:<24} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(name.to_owned());
            bar.set_message("connecting");
            bar.enable_steady_tick(Duration::from_millis(120));
            return Some(bar);
        }
        counts.1 += 1;
        let mut more = self.more.lock().unwrap_or_else(|e| e.into_inner());
        let line = more.get_or_insert_with(|| {
            let bar = self
                .multi
                .insert_before(&self.overall, ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        line.set_message(format!(
            "+{} more host(s), in the summary at the end",
            counts.1
        ));
        None
    }

    pub fn host_finished(&self) {
        self.overall.inc(1);
    }

    /// A line above the live lines.
    pub fn println(&self, line: &str) {
        let _ = self.multi.println(crate::redact::scrub(line));
    }
}

impl Default for View {
    fn default() -> Self {
        View::new()
    }
}
