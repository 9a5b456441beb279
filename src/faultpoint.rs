//! A testing aid: stop this process at a named step so a test can hit that step with a
//! fault (SIGKILL, SIGTERM, a cut link) deterministically. See RELIABILITY.md.
//!
//! `SHIPIT_TEST_STOP_AT=STEP` (or `STEP@HOST`, HOST as named in deploy.yaml) makes the
//! process print `<FAULTPOINT> STEP@HOST pid PID` (`remote::markers::FAULTPOINT`) on
//! stderr and stop itself with SIGSTOP the first time it reaches STEP (on HOST). It only
//! ever stops the process, once; a SIGCONT resumes it exactly where it was. Unset, it
//! costs one environment lookup.
//!
//! Steps: `lock`, `upload`, `health`, `fetch` (after the store's URL is signed),
//! `traffic` (behind the proxy, after each shift of traffic; client side), and every
//! step a host script announces (`remote::markers::STEP`: `unpack`, `link`, `env`,
//! `before_switch:N`, `switch`, `unit`, `restart`, `after_switch:N`, `after_rollback:N`,
//! `cleanup`), as the marker line arrives; the host's script keeps running while the
//! client is stopped.

use std::sync::atomic::{AtomicBool, Ordering};

static FIRED: AtomicBool = AtomicBool::new(false);

/// The variable that names the step to stop at.
pub const VAR: &str = "SHIPIT_TEST_STOP_AT";

/// Whether `want` (`STEP` or `STEP@HOST`) names `step` on `host`.
fn matches(want: &str, step: &str, host: &str) -> bool {
    match want.split_once('@') {
        Some((s, h)) => s == step && h == host,
        None => want == step,
    }
}

/// Called when `step` begins on `host`: stops the process if the test asked for it.
pub fn reached(step: &str, host: &str) {
    let Some(want) = std::env::var_os(VAR) else {
        return;
    };
    if !matches(&want.to_string_lossy(), step, host) || FIRED.swap(true, Ordering::SeqCst) {
        return;
    }
    crate::printer::test_protocol_line(&format!(
        "{} {step}@{host} pid {}",
        crate::remote::markers::FAULTPOINT,
        std::process::id()
    ));
    // SAFETY: raise(2) has no preconditions; SIGSTOP stops every thread of the process.
    unsafe {
        libc::raise(libc::SIGSTOP);
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn a_step_alone_or_on_one_host() {
        assert!(matches("switch", "switch", "10.0.0.1"));
        assert!(matches("switch@10.0.0.1", "switch", "10.0.0.1"));
        assert!(!matches("switch@10.0.0.2", "switch", "10.0.0.1"));
        assert!(!matches("restart", "switch", "10.0.0.1"));
        assert!(matches("before_switch:1@h", "before_switch:1", "h"));
    }
}
