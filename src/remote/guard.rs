//! The guard: what keeps a fleet from being left mixed when the deployer vanishes (killed,
//! a laptop closed, a link cut) after some hosts switched.
//!
//! Before a host switches, the activate script arms a guard on the host itself: a file,
//! `.shipit/guard` (`<token> <previous> <target> <timeout>`: the run's lock token, the
//! release `current` named before, the release it switches to, seconds), and a watcher, a
//! shell process started with `setsid nohup` so it outlives the SSH session. The deadline
//! is the file's modification time plus the timeout: the deployer renews it (`touch`)
//! while the rollout goes on, and confirms (removes it) only once the whole rollout has
//! succeeded. A watcher that finds its guard past the deadline claims it by renaming it
//! (a rename happens once: a guard never fires twice, and a confirm that races it either
//! wins, or learns that the host went back), then puts the previous release back: switch,
//! restart (or stop, when there was none), the target marked `failed` (not for a
//! rollback's target: an older good release stays one), a history line saying why, and
//! the dead run's lock given back, so the next deploy needs no `unlock`. A watcher whose
//! guard is gone (confirmed, or disarmed by the deployer's own revert) exits.
//!
//! A host that reboots loses its watcher (the guard file stays, overdue): `status` shows
//! it, and `shipit unlock` removes it with the lock.

use super::activate::systemctl;
use super::layout::{CURRENT, HISTORY, LOCK, RELEASE_JSON, RELEASES};
use super::markers::{self, GUARD};
use super::q;
use crate::config::ServiceManager;
use crate::ssh::quote::QuoteError;

/// Where the guard lives, in `deploy_to`.
pub const FILE: &str = ".shipit/guard";

/// What a guard does when it fires.
#[derive(Debug, Clone, Copy)]
pub struct Guard<'a> {
    /// The run's lock token: its guard, its lock.
    pub token: &'a str,
    /// The release the host switches to.
    pub target: &'a str,
    /// Mark `target` failed when it fires (a deploy's new release), or leave its state
    /// (a rollback's target, an older good release).
    pub mark_failed: bool,
    /// Seconds without a renewal after which it fires.
    pub timeout: u64,
    /// How often the watcher looks, in seconds.
    pub every: u64,
    pub manager: ServiceManager,
    pub sudo: bool,
    pub service: &'a str,
    /// What the history line says (`deploy` or `rollback`).
    pub action: &'a str,
    /// With `proxy:`: the slots, the live slot before (if any) and the one started.
    pub slots: Option<(super::proxy::Slots<'a>, Option<u16>, u16)>,
}

/// Arm the guard (in `deploy_to`, before the switch): write the guard file with the
/// release `current` names now, and start its watcher.
pub fn arm(g: &Guard) -> Result<String, QuoteError> {
    let watcher = watcher(g)?;
    Ok(format!(
        "p=$(readlink {CURRENT} 2>/dev/null); p=${{p#{RELEASES}/}}\n\
         printf '%s %s %s %s{slots}\\n' {token} \"${{p:--}}\" {target} {timeout} > {FILE}.tmp \
         && mv -f -- {FILE}.tmp {FILE} || exit 1\n\
         setsid nohup sh -c {watcher} shipit-guard >/dev/null 2>&1 </dev/null &\n\
         echo '{GUARD} armed'\n",
        token = q(g.token)?,
        target = q(g.target)?,
        timeout = g.timeout,
        watcher = q(&watcher)?,
        slots = match g.slots {
            Some((_, live, idle)) =>
                format!(" {} {idle}", live.map_or("-".to_owned(), |l| l.to_string())),
            None => String::new(),
        },
    ))
}

/// The watcher's own script: look every `every` seconds; exit when the guard is gone or
/// is another run's; fire once it is overdue.
fn watcher(g: &Guard) -> Result<String, QuoteError> {
    let token = q(g.token)?;
    Ok(format!(
        "while sleep {every}; do\n\
         \x20 g=; {{ read -r g < {FILE}; }} 2>/dev/null || exit 0\n\
         \x20 case \"$g\" in {token}' '*) ;; *) exit 0 ;; esac\n\
         \x20 m=$(stat -c %Y {FILE} 2>/dev/null) || exit 0\n\
         \x20 [ $(( $(date +%s) - m )) -lt {timeout} ] && continue\n\
         \x20 mv -- {FILE} {FILE}.firing.$$ 2>/dev/null || exit 0\n\
         {revert}\
         \x20 rm -f -- {FILE}.firing.$$\n\
         \x20 exit 0\n\
         done\n",
        every = g.every.max(1),
        timeout = g.timeout,
        revert = revert(g)?,
    ))
}

/// What a firing guard does (`$g` holds the guard's line).
fn revert(g: &Guard) -> Result<String, QuoteError> {
    let mut s = String::from("  set -- $g; p=$2\n");
    match &g.slots {
        Some((slots, _, _)) => s.push_str(&super::proxy::guard_back(slots)?),
        None => s.push_str(&restart_back(g)?),
    }
    s.push_str(&marked(g)?);
    Ok(s)
}

/// The plain way back: `current` on the previous release, restarted (or stopped).
fn restart_back(g: &Guard) -> Result<String, QuoteError> {
    let ctl = systemctl(g.manager, g.sudo);
    let unit = q(g.service)?;
    let mut s = String::new();
    s.push_str(&format!(
        "  if [ \"$p\" != - ] && [ -d {RELEASES}/\"$p\" ]; then\n\
         \x20   ln -s -- {RELEASES}/\"$p\" .current.tmp.$$ && mv -T -- .current.tmp.$$ {CURRENT}\n"
    ));
    if let Some(ctl) = ctl {
        s.push_str(&format!(
            "    {ctl} reset-failed -- {unit} 2>/dev/null; {ctl} restart -- {unit}\n"
        ));
    }
    s.push_str(&format!("  else\n    rm -f -- {CURRENT}\n"));
    if let Some(ctl) = ctl {
        s.push_str(&format!("    {ctl} stop -- {unit}\n"));
    }
    s.push_str("  fi\n");
    Ok(s)
}

/// After the way back: the target marked failed, the history line, the lock given back.
fn marked(g: &Guard) -> Result<String, QuoteError> {
    let target = q(g.target)?;
    let mut s = String::new();
    if g.mark_failed {
        s.push_str(&format!(
            "  f={RELEASES}/{target}/{RELEASE_JSON}\n\
             \x20 sed 's/\"state\":\"[a-z-]*\"/\"state\":\"failed\"/' \"$f\" > \"$f.tmp\" \
             && mv -f -- \"$f.tmp\" \"$f\"\n"
        ));
    }
    let reason = "the deployer did not confirm within rollout.confirm_timeout (killed, or its \
                  link was lost)";
    s.push_str(&format!(
        "  printf '{{\"time\":\"%s\",\"action\":\"%s\",\"result\":\"reverted-by-guard\",\
         \"release\":\"%s\",\"previous\":\"%s\",\"reason\":\"%s\",\"run\":\"%s\"}}\\n' \
         \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" {action} {target} \"$p\" {reason} {token} \
         >> {HISTORY}\n",
        action = q(g.action)?,
        token = q(g.token)?,
        reason = q(reason)?,
    ));
    s.push_str(&format!(
        "  o=; {{ read -r o < {LOCK}/owner.json; }} 2>/dev/null\n\
         \x20 case \"$o\" in *{}*) rm -rf -- {LOCK} ;; esac\n",
        q(&format!("\"token\":\"{}\"", g.token))?
    ));
    Ok(s)
}

/// Renew this run's guard (its deadline starts again), if it is armed: prints `GUARD
/// armed`, or `GUARD fired` when it went off, or nothing when there is none.
pub fn renew(token: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "g=; {{ read -r g < {FILE}; }} 2>/dev/null\n\
         case \"$g\" in {token}' '*) touch -- {FILE} && echo '{GUARD} armed' ;; *)\n\
         \x20 {fired}esac\n",
        token = q(token)?,
        fired = went_off(token)?,
    ))
}

/// Confirm (or disarm) this run's guard: it will not fire. Prints `GUARD confirmed`, or
/// `GUARD fired` when it already went off (the host went back by itself), or nothing
/// when there was none.
pub fn confirm(token: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "g=; {{ read -r g < {FILE}; }} 2>/dev/null\n\
         case \"$g\" in {token}' '*) mv -- {FILE} {FILE}.done.$$ 2>/dev/null \
         && rm -f -- {FILE}.done.$$ && echo '{GUARD} confirmed' ;; esac\n\
         for f in {FILE}.firing.*; do if [ -e \"$f\" ]; then echo '{GUARD} fired'; fi; done\n\
         {fired}",
        token = q(token)?,
        fired = went_off(token)?,
    ))
}

/// `GUARD fired` when the history has the line this run's guard wrote when it fired.
fn went_off(token: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "if tail -n 20 {HISTORY} 2>/dev/null | grep -q {}; then echo '{GUARD} fired'; fi\n",
        q(&format!("\"run\":\"{token}\""))?
    ))
}

/// What [`confirm`] said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// The guard was armed and is now gone.
    Yes,
    /// It fired before the confirm came: the host went back by itself.
    Fired,
    /// There was none (nothing switched, or it was disarmed).
    NoGuard,
}

/// What [`confirm`] or [`renew`] said (`Yes`: confirmed, or still armed and renewed).
pub fn confirmed(stdout: &str) -> Confirmed {
    let said: Vec<&str> = markers::values(stdout, GUARD).collect();
    if said.contains(&"confirmed") || said.contains(&"armed") {
        Confirmed::Yes
    } else if said.contains(&"fired") {
        Confirmed::Fired
    } else {
        Confirmed::NoGuard
    }
}

/// Remove any guard, whoever armed it (`shipit unlock`: its watcher is gone).
pub fn force_disarm() -> String {
    format!("if [ -e {FILE} ]; then rm -f -- {FILE} && echo '{GUARD} removed'; fi\n")
}

/// Whether [`force_disarm`] removed one.
pub fn removed(stdout: &str) -> bool {
    markers::values(stdout, GUARD).any(|v| v == "removed")
}

/// Report the guard for `status`: `GUARD state <token> <previous> <target> <timeout>
/// <mtime> <now>`.
pub fn report() -> String {
    format!(
        "if [ -f {FILE} ]; then printf '{GUARD} state %s %s %s\\n' \"$(cat {FILE})\" \
         \"$(stat -c %Y {FILE})\" \"$(date +%s)\"; fi\n"
    )
}

/// An armed guard, as [`report`] printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Armed {
    pub token: String,
    /// `None`: the host had no release before.
    pub previous: Option<String>,
    pub target: String,
    /// Seconds until it fires (negative: overdue, its watcher is gone).
    pub fires_in: i64,
}

pub fn armed(stdout: &str) -> Option<Armed> {
    let line = markers::values(stdout, GUARD).find_map(|v| v.strip_prefix("state "))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let [token, previous, target, timeout, mtime, now] = f[..] else {
        return None;
    };
    let n = |s: &str| s.parse::<i64>().ok();
    Some(Armed {
        token: token.to_owned(),
        previous: (previous != "-").then(|| previous.to_owned()),
        target: target.to_owned(),
        fires_in: n(mtime)? + n(timeout)? - n(now)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(manager: ServiceManager, mark_failed: bool) -> Guard<'static> {
        Guard {
            token: "t0k3n",
            target: "20261205T031500Z-c0ffee00",
            mark_failed,
            timeout: 60,
            every: 1,
            manager,
            sudo: true,
            service: "hello",
            action: "deploy",
            slots: None,
        }
    }

    #[test]
    fn slot_snapshots() {
        let slots = crate::remote::proxy::Slots {
            app: "hello",
            deploy_to: "/opt/hello",
            service: "hello",
            sudo: true,
            listen: 80,
            ports: [9001, 9002],
            mode: crate::config::ProxyMode::Http,
            drain_secs: 30,
        };
        let g = Guard {
            slots: Some((slots, Some(9001), 9002)),
            ..guard(ServiceManager::Systemd, true)
        };
        insta::assert_snapshot!("guard_arm_slots", arm(&g).unwrap());
    }

    #[test]
    fn snapshots() {
        insta::assert_snapshot!(
            "guard_arm",
            arm(&guard(ServiceManager::Systemd, true)).unwrap()
        );
        insta::assert_snapshot!(
            "guard_watcher_rollback_manager_none",
            watcher(&guard(ServiceManager::None, false)).unwrap()
        );
        insta::assert_snapshot!("guard_renew", renew("t0k3n").unwrap());
        insta::assert_snapshot!("guard_confirm", confirm("t0k3n").unwrap());
        insta::assert_snapshot!("guard_report", report());
    }

    #[test]
    fn what_confirm_and_report_said() {
        assert_eq!(confirmed("@@guard confirmed\n"), Confirmed::Yes);
        assert_eq!(confirmed("@@guard fired\n"), Confirmed::Fired);
        assert_eq!(confirmed(""), Confirmed::NoGuard);
        let a = armed("@@guard state t0k3n - 2026X 60 1000 1030\n").unwrap();
        assert_eq!(a.previous, None);
        assert_eq!(a.fires_in, 30);
        assert_eq!(armed("@@guard state short\n"), None);
    }
}
