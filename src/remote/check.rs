//! The preflight of `shipit check`: one script, one round trip, one line per check.
//!
//! Output protocol: `check<TAB>ok|fail<TAB>detail` lines on stdout, and one
//! `@@platform <arch><TAB><os>` line. The script never stops at the first failure, so
//! every check reports.

use crate::config::ServiceManager;
use crate::remote::proxy::Slots;
use crate::ssh::quote::QuoteError;

use super::q;

pub struct CheckInput<'a> {
    pub deploy_to: &'a str,
    /// Bytes a deploy needs on the host (cached artifact + unpacked release), when known.
    pub needed_bytes: Option<u64>,
    pub manager: ServiceManager,
    pub service: &'a str,
    /// A unit file shipit will install: a unit missing on the host is then fine.
    pub unit_file: Option<&'a str>,
    pub sudo: bool,
}

pub const CHECKS: &[&str] = &["deploy_to", "disk", "tools", "systemctl", "unit", "sudo"];

/// The check added with `proxy:` in the config ([`proxy_check`]).
pub const PROXY: &str = "proxy";

pub fn script(input: &CheckInput) -> Result<String, QuoteError> {
    let mut s = String::new();
    s.push_str(&format!("d={}\n", q(input.deploy_to)?));
    s.push_str(&format!(
        "need={}\n",
        input.needed_bytes.map_or(String::new(), |n| n.to_string())
    ));
    s.push_str(&format!(
        "o=$( (. /etc/os-release && printf '%s' \"$PRETTY_NAME\") 2>/dev/null)\n\
         [ -n \"$o\" ] || o=\"$(uname -s) $(uname -r)\"\n\
         printf '{} %s\\t%s\\n' \"$(uname -m)\" \"$o\"\n",
        super::markers::PLATFORM
    ));
    s.push_str(concat!(
        r#"r() { printf '%s\t%s\t%s\n' "$1" "$2" "$3"; }
me=$(id -un)
p=$d
while [ ! -e "$p" ]; do p=$(dirname -- "$p"); done
if [ -d "$d" ]; then
  if [ -w "$d" ]; then r deploy_to ok "$d exists and $me can write to it"
  else r deploy_to fail "$d exists but $me cannot write to it"; fi
elif [ -d "$p" ] && [ -w "$p" ]; then r deploy_to ok "$d can be created by $me (under $p)"
else r deploy_to fail "$d does not exist and $me cannot create it ($p is not writable)"; fi
free=$(df -B1 --output=avail -- "$p" 2>/dev/null | tail -n 1 | tr -d ' ')
case $free in
  ''|*[!0-9]*) r disk fail "cannot read the free space at $p" ;;
  *) h() { numfmt --to=iec-i --suffix=B "$1" 2>/dev/null || printf '%s bytes' "$1"; }
     if [ -z "$need" ]; then r disk ok "$(h "$free") free at $p (no local artifact to compare with)"
     elif [ "$free" -ge "$need" ]; then r disk ok "$(h "$free") free at $p, $(h "$need") needed"
     else r disk fail "only $(h "$free") free at $p, $(h "$need") needed"; fi ;;
esac
missing=
for t in sh tar gzip sha256sum cksum head tee df ln mv mkdir; do "#,
        r#"command -v "$t" >/dev/null 2>&1 || missing="$missing $t"; done
t=$(mktemp -d 2>/dev/null) && : > "$t/a" && "#,
        r#"mv -T -- "$t/a" "$t/b" 2>/dev/null || missing="$missing mv-T"
[ -n "$t" ] && rm -rf -- "$t"
delta=
command -v find >/dev/null 2>&1 && command -v xargs >/dev/null 2>&1 || "#,
        r#"delta=" (no find/xargs: delta deploys fall back to full uploads)"
if [ -z "$missing" ]; then r tools ok "tar gzip sha256sum cksum mv -T$delta"
else r tools fail "missing:$missing"; fi
"#,
    ));
    // Read-only queries: never through sudo.
    let systemctl = super::activate::systemctl(input.manager, false);
    match systemctl {
        None => {
            s.push_str(
                "r systemctl skip \"service.manager is none\"\n\
                 r unit skip \"service.manager is none\"\n",
            );
        }
        Some(ctl) => {
            s.push_str(&format!("u={}\n", q(input.service)?));
            let install = match input.unit_file {
                Some(f) => {
                    s.push_str(&format!("uf={}\n", q(f)?));
                    "r unit ok \"$u is not on the host yet; it will be installed from $uf\""
                }
                None => {
                    "r unit fail \"$u is not known to systemd \
                     and no service.unit_file is configured\""
                }
            };
            s.push_str(&format!(
                r#"if command -v systemctl >/dev/null 2>&1; then
  r systemctl ok "$(systemctl --version | head -n 1)"
  state=$({ctl} show -p LoadState --value -- "$u" 2>/dev/null)
  case $state in
    loaded) r unit ok "$u is loaded" ;;
    not-found|'') {install} ;;
    *) r unit fail "$u load state is $state" ;;
  esac
else
  r systemctl fail "systemctl not found; set service.manager: none for hosts without systemd"
  r unit skip "no systemctl"
fi
"#
            ));
        }
    }
    if input.sudo {
        s.push_str(
            r#"if ! command -v sudo >/dev/null 2>&1; then r sudo fail "sudo is not installed"
elif sudo -n true 2>/dev/null; then r sudo ok "sudo -n works for $me"
else r sudo fail "sudo -n true fails for $me (needs a password, or not allowed)"; fi
"#,
        );
    } else {
        s.push_str("r sudo skip \"service.sudo is false\"\n");
    }
    Ok(s)
}

/// The check added with `artifacts:` in the config: how the host can download from the
/// store.
pub const FETCH: &str = "fetch";

/// The script's part for the `fetch` check (`artifacts:`): which download tool the host
/// has. Without one the host still gets the artifact, pushed over SSH: not a failure.
pub fn fetch_part() -> &'static str {
    "if command -v curl >/dev/null 2>&1; then \
     r fetch ok \"curl: hosts download the artifact from the store\"\n\
     elif command -v wget >/dev/null 2>&1; then \
     r fetch ok \"wget: hosts download the artifact from the store\"\n\
     else r fetch ok \"neither curl nor wget: this host gets the artifact pushed over SSH\"; fi\n"
}

/// The line of check `name` in the script's output, if it reported one.
pub fn reported(stdout: &str, name: &str) -> Option<Check> {
    stdout.lines().find_map(|line| {
        let mut parts = line.splitn(3, '\t');
        let (n, status, detail) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
        let status = match status {
            "ok" => Status::Ok,
            "fail" => Status::Fail,
            "skip" => Status::Skip,
            _ => return None,
        };
        (n == name).then(|| Check {
            name: n.to_owned(),
            status,
            detail: detail.to_owned(),
        })
    })
}

/// The script's part for the `proxy` check: the proxy's survey with `proxy:`.
pub fn proxy_part(slots: Option<&Slots>) -> Result<String, QuoteError> {
    slots.map_or(Ok(String::new()), super::proxy::survey)
}

/// The `proxy` check from what [`proxy_part`] printed.
pub fn proxy_check(stdout: &str, s: &Slots) -> Check {
    let (status, detail) = match super::proxy::Found::parse(stdout) {
        None => (Status::Fail, "the proxy survey did not report".to_owned()),
        Some(f) => {
            let problems = f.problems(s);
            if problems.is_empty() {
                let (path, version) = f.haproxy.clone().unwrap_or_default();
                (
                    Status::Ok,
                    format!(
                        "HAProxy {version} ({path}); {} {}; ports {}, {} and {} free or \
                         shipit's; admin socket {}",
                        s.proxy_unit(),
                        f.unit,
                        s.listen,
                        s.ports[0],
                        s.ports[1],
                        s.socket()
                    ),
                )
            } else {
                (Status::Fail, problems.join("; "))
            }
        }
    };
    Check {
        name: PROXY.into(),
        status,
        detail,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Fail,
    Skip,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

/// The host's architecture (normalized `uname -m`) and OS, when the script reported them.
pub fn platform(stdout: &str) -> (Option<String>, Option<String>) {
    let line = stdout.lines().find_map(|l| {
        let (key, value) = super::markers::split(l)?;
        (key == super::markers::PLATFORM).then_some(value)
    });
    let Some((arch, os)) = line.and_then(|l| l.split_once('\t')) else {
        return (None, None);
    };
    let arch = crate::artifact::native::normalize_arch(arch);
    let some = |s: String| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    (some(arch), some(os.to_owned()))
}

/// The checks the script reported, in `CHECKS` order; a check that did not report is a
/// failure (the script died before it).
pub fn parse(stdout: &str) -> Vec<Check> {
    let mut found: Vec<Check> = Vec::new();
    for line in stdout.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(name), Some(status), detail) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let status = match status {
            "ok" => Status::Ok,
            "fail" => Status::Fail,
            "skip" => Status::Skip,
            _ => continue,
        };
        if CHECKS.contains(&name) && !found.iter().any(|c| c.name == name) {
            found.push(Check {
                name: name.to_owned(),
                status,
                detail: detail.unwrap_or_default().to_owned(),
            });
        }
    }
    CHECKS
        .iter()
        .map(|name| {
            found
                .iter()
                .find(|c| c.name == *name)
                .cloned()
                .unwrap_or_else(|| Check {
                    name: (*name).to_owned(),
                    status: Status::Fail,
                    detail: "the check did not report (the script stopped early)".into(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn run_locally(input: &CheckInput) -> Vec<Check> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script(input).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse(&String::from_utf8(out.stdout).unwrap())
    }

    fn by_name<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn a_creatable_deploy_to_with_enough_disk_passes() {
        let dir = tempfile::tempdir().unwrap();
        let deploy_to = dir.path().join("a b/it's $(here)");
        let checks = run_locally(&CheckInput {
            deploy_to: deploy_to.to_str().unwrap(),
            needed_bytes: Some(1),
            manager: ServiceManager::None,
            service: "hello",
            unit_file: None,
            sudo: false,
        });
        assert_eq!(
            by_name(&checks, "deploy_to").status,
            Status::Ok,
            "{checks:?}"
        );
        assert!(
            by_name(&checks, "deploy_to")
                .detail
                .contains("can be created")
        );
        assert_eq!(by_name(&checks, "disk").status, Status::Ok, "{checks:?}");
        assert_eq!(by_name(&checks, "tools").status, Status::Ok, "{checks:?}");
        assert_eq!(by_name(&checks, "systemctl").status, Status::Skip);
        assert_eq!(by_name(&checks, "sudo").status, Status::Skip);
        assert!(!deploy_to.exists(), "check creates nothing");
    }

    #[test]
    fn the_platform_is_reported() {
        let out = Command::new("sh")
            .arg("-c")
            .arg(
                script(&CheckInput {
                    deploy_to: "/nonexistent/x",
                    needed_bytes: None,
                    manager: ServiceManager::None,
                    service: "hello",
                    unit_file: None,
                    sudo: false,
                })
                .unwrap(),
            )
            .output()
            .unwrap();
        let (arch, os) = platform(&String::from_utf8(out.stdout).unwrap());
        let uname = Command::new("uname").arg("-m").output().unwrap().stdout;
        let uname = crate::artifact::native::normalize_arch(&String::from_utf8_lossy(&uname));
        assert_eq!(arch.as_deref(), Some(uname.as_str()));
        assert!(os.is_some_and(|o| !o.is_empty()));
        assert_eq!(
            platform("x\n@@platform arm64\tDebian GNU/Linux 12 (bookworm)\n"),
            (
                Some("aarch64".into()),
                Some("Debian GNU/Linux 12 (bookworm)".into())
            )
        );
        assert_eq!(platform("deploy_to\tok\tfine\n"), (None, None));
    }

    #[test]
    fn not_enough_disk_fails() {
        let dir = tempfile::tempdir().unwrap();
        let checks = run_locally(&CheckInput {
            deploy_to: dir.path().to_str().unwrap(),
            needed_bytes: Some(u64::MAX / 2),
            manager: ServiceManager::None,
            service: "hello",
            unit_file: None,
            sudo: false,
        });
        let disk = by_name(&checks, "disk");
        assert_eq!(disk.status, Status::Fail);
        assert!(disk.detail.starts_with("only "), "{disk:?}");
    }

    #[test]
    fn hostile_values_are_quoted_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pwned");
        let evil = format!(
            "hello; touch {}; $(touch {}) `touch {}`",
            marker.display(),
            marker.display(),
            marker.display()
        );
        let s = script(&CheckInput {
            deploy_to: &format!("{}/x'; touch {} #", dir.path().display(), marker.display()),
            needed_bytes: None,
            manager: ServiceManager::Systemd,
            service: &evil,
            unit_file: Some(&evil),
            sudo: false,
        })
        .unwrap();
        let _ = Command::new("sh").arg("-c").arg(&s).output().unwrap();
        assert!(!marker.exists(), "a value was executed:\n{s}");
    }

    #[test]
    fn missing_reports_become_failures() {
        let checks = parse("deploy_to\tok\tfine\ngarbage line\ndisk\tweird\tx\n");
        assert_eq!(checks.len(), CHECKS.len());
        assert_eq!(checks[0].status, Status::Ok);
        assert_eq!(checks[1].status, Status::Fail);
        assert!(checks[1].detail.contains("did not report"));
    }

    #[test]
    fn snapshots() {
        let input = |manager, unit_file, sudo| CheckInput {
            deploy_to: "/srv/hello app",
            needed_bytes: Some(150_000_000),
            manager,
            service: "hello",
            unit_file,
            sudo,
        };
        insta::assert_snapshot!(
            "check_manager_none",
            script(&CheckInput {
                needed_bytes: None,
                ..input(ServiceManager::None, None, false)
            })
            .unwrap()
        );
        insta::assert_snapshot!(
            "check_systemd",
            script(&input(ServiceManager::Systemd, None, false)).unwrap()
        );
        insta::assert_snapshot!(
            "check_systemd_unit_file_sudo",
            script(&input(
                ServiceManager::Systemd,
                Some("deploy/hello.service"),
                true
            ))
            .unwrap()
        );
        insta::assert_snapshot!(
            "check_systemd_user",
            script(&input(ServiceManager::SystemdUser, None, false)).unwrap()
        );
    }
}
