//! Hostile config values against a real host: quotes, `$(...)`, backticks, `;`, `&&`, `|`,
//! newlines, `\`, globs, leading `-`, spaces and UTF-8 in every value that reaches the
//! server (deploy_to, shared dirs and files, artifact file names, env values written
//! literally or pulled from the environment, hook arguments, `${VAR}` interpolated into a
//! hook). One deploy carries them all; the host is then read back byte for byte (the
//! hooks' recordings, `.env` as `sh` and as systemd read it, the paths made), and no
//! marker file from an injected command may exist anywhere, on the host or here.

use std::collections::BTreeMap;

use shipit::ssh::quote::sh_quote;

use crate::e2e::Testbed;
use crate::hostile::{yaml_literal, yaml_quoted};
use crate::support::{Output, Project};

/// Where the hooks record what they received, on the host.
const OUT: &str = "/tmp/hostile-out";

/// The hostile values, each named by the env key that carries it. `m` prefixes the marker
/// files an injected command would create.
fn values(m: &str) -> Vec<(&'static str, String)> {
    [
        ("Q1", "it's".to_owned()),
        ("Q2", "\"double\" and 'single' and ''".to_owned()),
        ("SUB", format!("$(touch {m}-sub)")),
        ("BT", format!("`touch {m}-bt`")),
        ("SEMI", format!("; touch {m}-semi; #")),
        ("AND", format!("&& touch {m}-and || touch {m}-or")),
        ("PIPE", format!("| touch {m}-pipe")),
        ("NL", format!("line1\ntouch {m}-nl\n$(touch {m}-nl2)\n")),
        ("BS", "back\\slash \\n \\\\ \\' \\\" \\$ end\\".to_owned()),
        ("GLOB", "* ? [a-z]* ~ {a,b} /etc/* .*".to_owned()),
        ("DASH", "-n".to_owned()),
        ("DASH2", "--version -e \\c".to_owned()),
        ("SPACE", "  two  spaces  ".to_owned()),
        ("UTF", "ünïcödé ☃ 日本語 \u{1F680}".to_owned()),
        (
            "DOLLAR",
            "$HOME ${HOME} $$ $1 $@ $(( 1 + 1 )) ${X:-y}".to_owned(),
        ),
        ("PCT", "%s %d %% %n %b".to_owned()),
        ("CTRL", "tab\there\rcr\u{1b}[31mred".to_owned()),
        ("EMPTY", String::new()),
        (
            "MIX",
            format!("'$(touch {m}-mix1)'\"`touch {m}-mix2`\"\\\n'\""),
        ),
        (
            "REL",
            "$(touch shipit-pwned-rel)`touch shipit-pwned-rel2`".to_owned(),
        ),
        ("EQ", "A=B C=D export E=F".to_owned()),
        ("HASH", "#not a comment".to_owned()),
        ("TRAIL", "trailing newlines\n\n".to_owned()),
    ]
    .into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The host's bytes of `path`, through `od` (no transcoding on the way).
fn host_bytes(tb: &Testbed, path: &str) -> String {
    tb.root(
        0,
        &format!("od -An -v -tx1 {} | tr -d ' \\n'", sh_quote(path).unwrap()),
    )
}

fn no_secret_or_marker(out: &Output) {
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(crate::e2e::CANARY), "{text}");
    }
}

#[test]
fn hostile_values_arrive_byte_for_byte_and_run_nothing() {
    let Some(tb) = Testbed::up("e2e-hostile", 1) else {
        return;
    };
    let marker = format!("/tmp/shipit-pwned-{}", std::process::id());
    let values = values(&marker);
    let p = {
        let mut p = Project::new();
        for (k, v) in &values {
            p.env(&format!("HOSTILE_{k}"), v);
        }
        p
    };

    // Paths name their markers relative (a `/` would make directories): an injected
    // command would create `shipit-pwned-*` in its working directory.
    let deploy_to =
        "/opt/hostile 'q' \"d\" $(touch shipit-pwned-dt) ;&|`touch shipit-pwned-dt2` ünï \\ -n"
            .to_owned();
    let shared_dir = "log dir/it's $(touch shipit-pwned-sd) ;|& `x` ü".to_owned();
    let shared_file = "config/it's \"a\" $(touch shipit-pwned-sf) ;&| -n.toml".to_owned();
    let pkg_file = "it's \"a\" $(touch shipit-pwned-pf) ;&|`x` ü -n.txt".to_owned();

    p.file("pkg/VERSION", "1\n");
    p.file(&format!("pkg/{pkg_file}"), "weird file\n");

    // env: each value written literally, and again pulled from the environment.
    let mut env_yaml = String::new();
    for (k, v) in &values {
        env_yaml.push_str(&format!("  {k}: {}\n", yaml_literal(v)));
        env_yaml.push_str(&format!("  VIA_{k}: ${{HOSTILE_{k}}}\n"));
    }
    env_yaml.push_str("  DB_PASSWORD: ${SHIPIT_E2E_CANARY}\n");

    // Hook 1 records every env value as the hook sees "$KEY"; hook 2 passes each as an
    // argument to a command that records its "$1"; hook 3 gets each value interpolated into
    // its text with ${VAR}, inside a quoted here-document, and records what arrived.
    let mut by_env = format!("mkdir -p {OUT}\n");
    let mut by_arg = String::new();
    let mut by_interpolation = String::new();
    for (k, _) in &values {
        for key in [k.to_string(), format!("VIA_{k}")] {
            by_env.push_str(&format!("printf '%s' \"${key}\" > {OUT}/env-{key}\n"));
            by_arg.push_str(&format!(
                "sh -c 'printf \"%s\" \"$1\" > \"$2\"' argv \"${key}\" {OUT}/argv-{key}\n"
            ));
        }
        by_interpolation.push_str(&format!(
            "cat > {OUT}/interp-{k} <<'SHIPIT_HOSTILE_EOF'\n${{HOSTILE_{k}}}\nSHIPIT_HOSTILE_EOF\n"
        ));
    }

    p.file(
        "deploy.yaml",
        &format!(
            "app: hostile
deploy_to: {deploy_to}
package:
  root: pkg
  include: [VERSION, {pkg_file}]
{ssh}shared:
  dirs: [{shared_dir}]
  files: [{shared_file}]
env:
{env_yaml}service: {{manager: none}}
health:
  command: 'test -f VERSION && ps -eo args > /tmp/hostile-ps-health; : ${{SHIPIT_E2E_CANARY}}'
  timeout: 5s
  interval: 100ms
  settle: 0s
hooks:
  before_switch:
    - {by_env}
    - {by_arg}
    - {by_interpolation}
    - 'ps -eo args > /tmp/hostile-ps-hook; : ${{SHIPIT_E2E_CANARY}}'
hosts: [{ip}]
",
            deploy_to = yaml_literal(&deploy_to),
            pkg_file = yaml_literal(&pkg_file),
            ssh = tb.ssh_yaml(&tb.state.known_hosts),
            shared_dir = yaml_literal(&shared_dir),
            shared_file = yaml_literal(&shared_file),
            by_env = yaml_literal(&by_env),
            by_arg = yaml_literal(&by_arg),
            // Not escaped: its ${HOSTILE_...} are meant for the loader.
            by_interpolation = yaml_quoted(&by_interpolation),
            ip = tb.host(0).ip,
        ),
    );

    // The shared file must exist before the first deploy (shipit never makes one up).
    let q = |s: &str| sh_quote(s).unwrap();
    let shared_path = format!("{deploy_to}/shared/{shared_file}");
    tb.root(
        0,
        &format!(
            "mkdir -p -- \"$(dirname -- {p})\" && printf 'shared file' > {p} && chown -R deploy: /opt",
            p = q(&shared_path)
        ),
    );

    // What the config says, and what a dry run would do, before anything happens.
    no_secret_or_marker(tb.shipit(&p, &["config", "--json"]).code(0));
    no_secret_or_marker(
        tb.shipit(&p, &["deploy", "--dry-run", "--app-version", "1"])
            .code(0),
    );

    let out = tb.shipit(
        &p,
        &[
            "deploy",
            "--app-version",
            "1",
            "--json",
            "--log-format",
            "json",
            "--verbose",
        ],
    );
    out.code(0);
    let summary: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["hosts"][0]["result"], "done", "{summary:#}");
    let release = summary["release"].as_str().unwrap();
    let current = format!("{deploy_to}/current");
    assert_eq!(
        tb.root(0, &format!("readlink -- {}", q(&current))).trim(),
        format!("releases/{release}")
    );

    // Every value, by every route, byte for byte.
    let mut wrong = Vec::new();
    for (k, v) in &values {
        let want = hex(v.as_bytes());
        for key in [k.to_string(), format!("VIA_{k}")] {
            for route in ["env", "argv"] {
                let got = host_bytes(&tb, &format!("{OUT}/{route}-{key}"));
                if got != want {
                    wrong.push(format!("{route}-{key}: got {got}, want {want}"));
                }
            }
        }
        let got = host_bytes(&tb, &format!("{OUT}/interp-{k}"));
        if got != hex(format!("{v}\n").as_bytes()) {
            wrong.push(format!("interp-{k}: got {got} for {v:?}"));
        }
    }
    assert!(wrong.is_empty(), "values changed on the way: {wrong:#?}");

    // `.env` as systemd reads it (EnvironmentFile=), in a transient unit on the host.
    let env0 = tb.root(
        0,
        &format!(
            "mkdir -p /tmp/hostile-unit && cp -- {}/.env /tmp/hostile-unit/.env && systemd-run --quiet --wait --pipe -p EnvironmentFile=/tmp/hostile-unit/.env /usr/bin/env -0 | od -An -v -tx1 | tr -d ' \\n'; rm -rf /tmp/hostile-unit",
            q(&current)
        ),
    );
    let env0 = hex_decode(env0.trim());
    let seen: BTreeMap<String, Vec<u8>> = env0
        .split(|&b| b == 0)
        .filter_map(|kv| {
            let eq = kv.iter().position(|&b| b == b'=')?;
            Some((
                String::from_utf8_lossy(&kv[..eq]).into_owned(),
                kv[eq + 1..].to_vec(),
            ))
        })
        .collect();
    let mut wrong = Vec::new();
    for (k, v) in &values {
        for key in [k.to_string(), format!("VIA_{k}")] {
            match seen.get(&key) {
                Some(got) if got == v.as_bytes() => {}
                got => wrong.push(format!(
                    "{key}: systemd read {:?}, want {v:?}",
                    got.map(|g| String::from_utf8_lossy(g).into_owned())
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "systemd reads .env differently: {wrong:#?}"
    );

    // A secret interpolated into a hook or the health command is not in the process list
    // the host showed while they ran (argv is world-readable there).
    for file in ["/tmp/hostile-ps-hook", "/tmp/hostile-ps-health"] {
        let ps = tb.root(0, &format!("cat {file}"));
        assert!(ps.contains("ps -eo args"), "{file}: {ps}");
        assert!(!ps.contains(crate::e2e::CANARY), "{file}: {ps}");
    }

    // The paths, exactly as named: the shared dir linked into the release, the shared
    // file linked, the artifact's file unpacked.
    let checks = format!(
        "test -d {sd} && [ \"$(readlink -- {cur}/{dir})\" = {sd} ] && [ \"$(cat -- {cur}/{file})\" = 'shared file' ] && [ \"$(cat -- {cur}/{pf})\" = 'weird file' ] && echo ok",
        sd = q(&format!("{deploy_to}/shared/{shared_dir}")),
        cur = q(&current),
        dir = q(&shared_dir),
        file = q(&shared_file),
        pf = q(&pkg_file),
    );
    assert_eq!(tb.root(0, &checks).trim(), "ok", "{checks}");
    let top = &deploy_to["/opt/".len()..];
    assert!(
        tb.root(0, "ls -A /opt").lines().any(|l| l == top),
        "deploy_to is made under /opt with its exact name"
    );

    // status and rollback planning read the same hostile paths back.
    let out = tb.shipit(&p, &["status", "--json"]);
    out.code(0);
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["hosts"][0]["current"], release);

    // Nothing injected ran: no marker anywhere on the host, in /tmp here, or in the project.
    let found = tb.root(
        0,
        "find / /tmp /var/tmp /opt /home /root /run -xdev -name 'shipit-pwned*' -print 2>/dev/null; true",
    );
    assert_eq!(found.trim(), "", "an injected command ran on the host");
    let here: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .chain(std::fs::read_dir(p.path()).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("shipit-pwned"))
        .collect();
    assert!(here.is_empty(), "an injected command ran here: {here:?}");
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn hostile_names_and_archives_are_refused_before_anything_reaches_the_host() {
    let Some(tb) = Testbed::up("e2e-hostile-names", 1) else {
        return;
    };
    let ssh = tb.ssh_yaml(&tb.state.known_hosts);
    let ip = &tb.host(0).ip;
    let before = tb.root(
        0,
        "ls -A /opt; journalctl -u ssh --no-pager -o cat | grep -c Accepted; true",
    );
    for (yaml, error) in [
        (
            "service: {name: 'hello;touch /tmp/shipit-pwned-unit'}\n",
            "is not a valid systemd unit name",
        ),
        (
            "service: {name: '-H evil'}\n",
            "is not a valid systemd unit name",
        ),
        (
            "env: {'A;touch /tmp/shipit-pwned-key': x}\n",
            "is not a valid environment variable name",
        ),
        (
            "env: {'A B': x}\n",
            "is not a valid environment variable name",
        ),
        (
            "deploy_to: \"/opt/x\\ny\"\n",
            "`deploy_to` must be an absolute path",
        ),
        (
            "deploy_to: /opt/../etc\n",
            "`deploy_to` must be an absolute path",
        ),
        (
            "deploy_to: relative\n",
            "`deploy_to` must be an absolute path",
        ),
        (
            "shared: {dirs: ['../../etc']}\n",
            "entries must be relative paths without `..`",
        ),
        (
            "shared: {files: [/etc/passwd]}\n",
            "entries must be relative paths",
        ),
        (
            "hosts: [{host: HOST, user: '-oProxyCommand=touch /tmp/shipit-pwned-user'}]\n",
            "is not a valid user name",
        ),
        (
            "hosts: ['-oProxyCommand=touch /tmp/shipit-pwned-host']\n",
            "is not a valid host name",
        ),
        (
            "hosts: ['$(touch /tmp/shipit-pwned-u)@HOST']\n",
            "is not a valid user name",
        ),
    ] {
        let p = Project::new();
        p.file("pkg/VERSION", "1\n");
        let hosts = if yaml.contains("hosts:") {
            String::new()
        } else {
            format!("hosts: [{ip}]\n")
        };
        let yaml = yaml.replace("HOST", ip);
        p.file(
            "deploy.yaml",
            &format!(
                "app: hostile\npackage: {{root: pkg, include: [VERSION]}}\n{ssh}{yaml}{hosts}"
            ),
        );
        let out = tb.shipit(&p, &["deploy", "--app-version", "1"]);
        out.code(2);
        assert!(out.stderr.contains(error), "{yaml}: {}", out.stderr);
    }

    // Hostile archives given with --artifact: refused before connecting.
    use tar::EntryType::{Block, Char, Fifo, Link, Regular, Symlink};
    let good = crate::artifact::manifest_for(&[("a.txt", "hello")]);
    let archives = [
        (vec![("../x", Regular, "x")], "climbs out with `..`"),
        (vec![("a/../../x", Regular, "x")], "climbs out with `..`"),
        (
            vec![("/etc/cron.d/x", Regular, "x")],
            "the absolute path `/etc/cron.d/x`",
        ),
        (vec![("link", Symlink, "../../../etc")], "refusing"),
        (vec![("link", Symlink, "/etc/passwd")], "refusing"),
        (
            vec![("d/l", Symlink, ".."), ("e", Symlink, "d/l/..")],
            "through other links",
        ),
        (vec![(".env", Symlink, "x")], "reserved for shipit"),
        (vec![("hard", Link, "/etc/shadow")], "refusing"),
        (vec![("dev", Char, "")], "refusing"),
        (vec![("dev", Block, "")], "refusing"),
        (vec![("fifo", Fifo, "")], "refusing"),
        (
            vec![
                (".shipit/manifest.json", Regular, good.as_str()),
                ("a.txt", Regular, "HELLO"),
            ],
            "do not match its manifest",
        ),
        (
            vec![("a.txt", Regular, "hello")],
            "no `.shipit/manifest.json`",
        ),
        (
            vec![
                (".shipit/manifest.json", Regular, good.as_str()),
                ("a.txt", Regular, "hello"),
            ],
            "is an artifact of `x`, not of `hostile`",
        ),
    ];
    for (entries, error) in archives {
        let file = crate::artifact::archive(&entries);
        let p = Project::new();
        p.file(
            "deploy.yaml",
            &format!("app: hostile\n{ssh}service: {{manager: none}}\nhosts: [{ip}]\n"),
        );
        let out = tb.shipit(&p, &["deploy", "--artifact", file.path().to_str().unwrap()]);
        out.code(2);
        assert!(out.stderr.contains(error), "{entries:?}: {}", out.stderr);
    }

    let after = tb.root(
        0,
        "ls -A /opt; journalctl -u ssh --no-pager -o cat | grep -c Accepted; true",
    );
    assert_eq!(
        before, after,
        "nothing was made or uploaded, no one even logged in"
    );
    assert_eq!(
        tb.root(0, "ls /tmp | grep -c shipit-pwned; true").trim(),
        "0"
    );
}

/// The tier's canary check itself: a canary in any run's output (run by `shipit` or
/// spawned by a test) or in any host file but `.env` is found; `.env` is where it belongs.
#[test]
fn the_canary_check_finds_every_leak_it_is_meant_to() {
    let Some(tb) = Testbed::up("e2e-hostile-canary", 1) else {
        return;
    };
    use crate::e2e::CANARY;
    let p = Project::new();
    p.file(
        "deploy.yaml",
        &format!(
            "app: hostile\n{}service: {{manager: none}}\nhosts: [{}]\n",
            tb.ssh_yaml(&tb.state.known_hosts),
            tb.host(0).ip
        ),
    );
    assert_eq!(tb.canary_leaks(), Vec::<String>::new());
    // A command-line argument is echoed in the error: not a config secret, but a leak as
    // far as the check can tell, which is what this test needs.
    let out = tb.shipit(&p, &["unlock", "--hosts", CANARY]);
    assert!(out.stderr.contains(CANARY), "{}", out.stderr);
    let spawned = tb
        .shipit_command(&p, &["unlock", "--hosts", CANARY])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!spawned.success());
    tb.root(
        0,
        &format!("mkdir -p /opt/c && echo {CANARY} > /opt/c/leak && echo {CANARY} > /opt/c/.env"),
    );
    let leaks = tb.canary_leaks();
    assert_eq!(leaks.len(), 3, "{leaks:#?}");
    assert!(
        leaks[0].starts_with("the stderr of shipit [\"unlock\""),
        "{leaks:#?}"
    );
    assert!(
        leaks[1].starts_with("the stderr of shipit [\"unlock\""),
        "{leaks:#?}"
    );
    assert_eq!(leaks[2], format!("{}: /opt/c/leak", tb.host(0).name));
    // Clean up, or the drop check fails this test.
    tb.root(0, "rm -rf /opt/c");
    std::fs::remove_dir_all(tb.captures.path()).unwrap();
    std::fs::create_dir(tb.captures.path()).unwrap();
    assert_eq!(tb.canary_leaks(), Vec::<String>::new());
}
