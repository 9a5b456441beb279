//! The command line itself: help, version, completions, man page, usage errors.

use crate::support::Project;

#[test]
fn every_command_has_help_worth_reading() {
    let p = Project::new();
    for cmd in [
        "init",
        "config",
        "check",
        "build",
        "package",
        "deploy",
        "rollback",
        "status",
        "unlock",
        "completions",
        "man",
    ] {
        let out = p.run(&[cmd, "--help"]);
        out.code(0);
        assert!(
            out.stdout.lines().count() >= 8,
            "{cmd} --help is too thin:\n{}",
            out.stdout
        );
        assert!(
            out.stdout.contains("--config <FILE>"),
            "global flags shown for {cmd}"
        );
    }
    let out = p.run(&["--help"]);
    out.code(0);
    for text in [
        "init",
        "config",
        "build",
        "package",
        "completions",
        "--env <ENV>",
        "--log-format",
        "--no-progress",
        "Exit codes",
    ] {
        assert!(out.stdout.contains(text), "missing {text}:\n{}", out.stdout);
    }
}

#[test]
fn version_includes_the_commit() {
    let out = Project::new().run(&["--version"]);
    out.code(0);
    let v = out.stdout.trim();
    let re_ok =
        v.starts_with(&format!("shipit {} (", env!("CARGO_PKG_VERSION"))) && v.ends_with(')');
    assert!(re_ok, "{v}");
    let commit = &v[v.find('(').unwrap() + 1..v.len() - 1];
    assert!(
        commit == "unknown commit"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{v}"
    );
}

#[test]
fn completions_and_man_page() {
    let p = Project::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = p.run(&["completions", shell]);
        out.code(0);
        assert!(
            out.stdout.contains("shipit") && out.stdout.contains("package"),
            "{shell}"
        );
    }
    let out = p.run(&["man"]);
    out.code(0);
    assert!(
        out.stdout.starts_with(".ie \\n(.g .ds Aq") || out.stdout.contains(".TH shipit 1"),
        "{}",
        &out.stdout[..200.min(out.stdout.len())]
    );
    assert!(out.stdout.contains(".TH shipit 1"));
}

#[test]
fn usage_errors_exit_2() {
    let p = Project::new();
    assert_eq!(p.run(&["frobnicate"]).code, 2);
    assert_eq!(p.run(&["config", "--bogus"]).code, 2);
    assert_eq!(p.run(&["-q", "-v", "config"]).code, 2);
    assert_eq!(p.run(&["--log-format", "xml", "config"]).code, 2);
    assert_eq!(p.run(&[]).code, 2);
}

#[test]
fn host_lists_parse() {
    // `--hosts a,b` reaches config resolution (which then names the unknown host).
    let p = Project::new();
    p.file("deploy.yaml", "app: hello\nhosts: [a.example.com]\n");
    for cmd in [
        &["deploy", "--hosts", "x,y", "--no-build"][..],
        &["rollback", "--hosts", "x"],
        &["unlock", "--hosts", "x,y"],
        &["status", "--hosts", "x"],
        &["check", "--hosts", "x*"],
        &["exec", "--hosts", "x", "--", "true"],
        &["logs", "--hosts", "x"],
        &["lock", "-m", "m", "--hosts", "x"],
    ] {
        let out = p.run(cmd);
        out.code(2);
        assert!(
            out.stderr.contains("unknown host(s) in --hosts: x"),
            "{cmd:?}: {}",
            out.stderr
        );
    }
}

/// Every roff line of `page` between `.SH "SECTION"` and the next `.SH`, `\-` unescaped.
fn section(page: &str, name: &str) -> Vec<String> {
    let heading = if name.contains(' ') {
        format!(".SH \"{name}\"")
    } else {
        format!(".SH {name}")
    };
    page.lines()
        .skip_while(|l| *l != heading)
        .skip(1)
        .take_while(|l| !l.starts_with(".SH"))
        .map(|l| l.replace("\\-", "-"))
        .collect()
}

/// The `name(1)` references in `lines`.
fn references(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .flat_map(|l| l.split([',', ' ']))
        .filter_map(|w| w.strip_suffix("(1)"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn man_dir_writes_a_page_per_command_and_see_also_names_them() {
    use clap::CommandFactory;
    let p = Project::new();
    let out = p.run(&["man", "--dir", "man/man1"]);
    out.code(0);
    let commands: Vec<String> = shipit::cli::Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| format!("shipit-{}", c.get_name()))
        .collect();
    assert!(commands.len() >= 11, "{commands:?}");
    let mut want: Vec<String> = commands.iter().map(|c| format!("{c}.1")).collect();
    want.push("shipit.1".into());
    want.sort();
    let mut written: Vec<String> = std::fs::read_dir(p.path().join("man/man1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, want, "one page per command, and shipit.1");
    let listed: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        listed.len(),
        want.len(),
        "the paths written:\n{}",
        out.stdout
    );

    let groff = std::path::Path::new("/usr/bin/groff").exists();
    for file in &written {
        let page = p.read(&format!("man/man1/{file}"));
        let name = file.trim_end_matches(".1");
        // clap_mangen's two-line preamble (the apostrophe string), then the title.
        let body: Vec<&str> = page
            .lines()
            .skip_while(|l| l.starts_with(".ie ") || l.starts_with(".el "))
            .collect();
        assert!(
            body[0].starts_with(&format!(".TH {name} 1 ")),
            "{file} starts with .TH: {:?}",
            &page[..200.min(page.len())]
        );
        for heading in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS"] {
            assert!(
                page.contains(&format!(".SH {heading}\n")),
                "{file}: {heading}"
            );
        }
        if groff {
            // -ww: every warning; -z: parse and format, print nothing.
            let out = std::process::Command::new("/usr/bin/groff")
                .args(["-man", "-Tutf8", "-ww", "-z"])
                .arg(p.path().join("man/man1").join(file))
                .output()
                .unwrap();
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "groff on {file}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if file != "shipit.1" {
            assert_eq!(
                references(&section(&page, "SEE ALSO")),
                ["shipit"],
                "{file}"
            );
        }
    }

    let main = p.read("man/man1/shipit.1");
    assert_eq!(
        references(&section(&main, "SEE ALSO")),
        commands,
        "shipit.1's SEE ALSO names exactly the other pages"
    );
    assert_eq!(
        references(&section(&main, "SUBCOMMANDS")),
        commands,
        "and so does its list of commands"
    );
    // `shipit man` alone prints the same main page.
    let out = p.run(&["man"]);
    out.code(0);
    assert_eq!(out.stdout.trim_end(), main.trim_end());
}

/// More hosts than the open-files hard limit allows is a clear error before anything
/// connects; within it, the soft limit is raised and the run goes on.
#[test]
fn too_low_an_open_files_limit_is_a_clear_error() {
    use std::os::unix::process::CommandExt;
    let p = Project::new();
    let hosts: Vec<String> = (1..=10).map(|i| format!("192.0.2.{i}")).collect();
    p.file(
        "deploy.yaml",
        &format!(
            "app: hello\nservice: {{manager: none}}\nssh: {{connect_timeout: 1s}}\nhosts: [{}]\n",
            hosts.join(", ")
        ),
    );
    let run = |soft: u64, hard: u64| {
        let mut cmd = p.command(&["status"]);
        // SAFETY: setrlimit in the child before exec, nothing else.
        unsafe {
            cmd.pre_exec(move || {
                let l = libc::rlimit {
                    rlim_cur: soft as libc::rlim_t,
                    rlim_max: hard as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.output().unwrap()
    };
    let out = run(64, 64);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("10 host(s) need about 104 open files")
            && stderr.contains("at most 64")
            && stderr.contains("hint: raise the hard limit"),
        "{stderr}"
    );
    // A hard limit that is enough: the soft one is raised, and the hosts are tried
    // (unreachable here, exit 4), not refused up front.
    let out = run(64, 4096);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(!stderr.contains("open files"), "{stderr}");
}
