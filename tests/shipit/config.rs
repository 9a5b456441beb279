//! `shipit config`: loading, the environment merge, interpolation, redaction, and every
//! validation error with its exact text.

use crate::support::Project;

/// The error `shipit config` prints for `yaml`, after checking it exits 2 and prints
/// nothing on stdout.
fn config_error(yaml: &str) -> String {
    let p = Project::new();
    p.file("deploy.yaml", yaml);
    let out = p.run(&["config"]);
    out.code(2);
    assert_eq!(out.stdout, "");
    out.stderr
}

#[test]
fn unknown_key_names_its_place_and_the_closest_key() {
    insta::assert_snapshot!(config_error("app: hello\nkeep_release: 3\n"), @r"
    error: deploy.yaml:2:1: unknown key `keep_release`
    hint: did you mean `keep_releases`?
    ");
}

#[test]
fn unknown_key_deep_inside_an_environment() {
    let yaml = "app: hello\nenvironments:\n  production:\n    ssh:\n      prot: 2222\n";
    insta::assert_snapshot!(config_error(yaml), @r"
    error: deploy.yaml:5:7: unknown key `prot`
    hint: did you mean `port`?
    ");
}

#[test]
fn unknown_key_without_a_close_match_lists_the_valid_ones() {
    let yaml = "app: hello\nrollout:\n  frobnicate: 1\n";
    insta::assert_snapshot!(config_error(yaml), @r"
    error: deploy.yaml:3:3: unknown key `frobnicate`
    hint: valid keys here: parallel, canary, max_failures, on_failure, confirm_timeout
    ");
}

#[test]
fn wrong_types() {
    insta::assert_snapshot!(config_error("app: hello\nkeep_releases: five\n"), @"error: deploy.yaml:2:16: invalid u32");
    insta::assert_snapshot!(config_error("app: [hello]\n"), @"error: deploy.yaml:1:6: expected string scalar");
    insta::assert_snapshot!(config_error("app: hello\nservice:\n  sudo: maybe\n"), @"error: deploy.yaml:3:9: invalid boolean");
}

#[test]
fn out_of_range_values_are_all_reported_in_file_order() {
    let yaml = "\
app: Hello World
deploy_to: opt/hello
keep_releases: 1
rollout:
  parallel: 0
ssh:
  port: 0
health:
  http:
    url: http://127.0.0.1:8080/healthz
    status: 1000
";
    insta::assert_snapshot!(config_error(yaml), @r"
    error: deploy.yaml:1:6: `Hello World` is not a valid app name
    hint: use lowercase letters, digits, `-` and `_`, starting with a letter or digit (at most 64)
    deploy.yaml:2:12: `deploy_to` must be an absolute path other than `/`, without `..`; got `opt/hello`
    hint: e.g. `deploy_to: /opt/hello`
    deploy.yaml:3:16: `keep_releases` must be at least 2 (the current release and one to roll back to); got 1
    deploy.yaml:5:13: `rollout.parallel` must be at least 1
    hint: `parallel: 1` deploys one host at a time
    deploy.yaml:7:9: `ssh.port` must be between 1 and 65535
    deploy.yaml:11:13: `health.http.status` must be an HTTP status (100-599); got 1000
    ");
}

#[test]
fn durations_need_a_unit() {
    insta::assert_snapshot!(config_error("app: hello\nhealth:\n  timeout: 30\n"), @"error: deploy.yaml:3:12: `30` has no unit: write `30s`, `30ms` or `30m`");
    insta::assert_snapshot!(config_error("app: hello\nhealth:\n  timeout: 3 min\n"), @"error: deploy.yaml:3:12: `3 min` has an unknown unit ` min`: use ms, s, m or h (e.g. `10s`)");
}

#[test]
fn there_is_no_mode_that_skips_host_key_checks() {
    insta::assert_snapshot!(config_error("app: hello\nssh:\n  known_hosts: off\n"), @r"
    error: deploy.yaml:3:16: `off` is not a valid value here
    hint: there is no mode that skips host-key checks: use `strict`, or `accept-new` to record keys of hosts seen for the first time
    ");
}

#[test]
fn enum_typos_get_a_suggestion() {
    insta::assert_snapshot!(config_error("app: hello\nservice:\n  manager: systemdd\n"), @r"
    error: deploy.yaml:3:12: `systemdd` is not a valid value here
    hint: did you mean `systemd`?
    ");
}

#[test]
fn a_missing_env_var_names_the_key_that_needs_it() {
    let yaml = "app: hello\nenv:\n  DATABASE_URL: ${DATABASE_URL}\n";
    insta::assert_snapshot!(config_error(yaml), @r"
    error: deploy.yaml:3:17: environment variable `DATABASE_URL` is not set (needed by `env.DATABASE_URL`)
    hint: export DATABASE_URL=..., or write `${DATABASE_URL:-default}` to give it a default
    ");
}

#[test]
fn unknown_environment_lists_the_known_ones() {
    let p = Project::new();
    p.file(
        "deploy.yaml",
        "app: hello\nenvironments:\n  staging: {hosts: [a]}\n  production: {hosts: [b]}\n",
    );
    let out = p.run(&["-e", "prod", "config"]);
    out.code(2);
    insta::assert_snapshot!(out.stderr, @r"
    error: deploy.yaml: unknown environment `prod`
    hint: known environments: production, staging
    ");
    let out = p.run(&["config"]);
    out.code(2);
    insta::assert_snapshot!(out.stderr, @r"
    error: deploy.yaml: several environments are defined (production, staging) and none was chosen
    hint: pass `-e ENV` (or set SHIPIT_ENV), or set `default_env`
    ");
}

#[test]
fn default_env_must_exist() {
    let yaml = "app: hello\ndefault_env: stagin\nenvironments:\n  staging: {hosts: [a]}\n";
    insta::assert_snapshot!(config_error(yaml), @r"
    error: deploy.yaml:2:14: `default_env` names `stagin`, which is not defined under `environments`
    hint: known environments: staging
    ");
}

#[test]
fn hosts_are_checked() {
    let yaml = "app: hello\nhosts:\n  - a.example.com\n  - a.example.com\n  - 'bad host'\n  - 'x:99999'\n  - { host: 10.0.0.7, port: 0 }\n";
    insta::assert_snapshot!(config_error(yaml), @r"
    error: deploy.yaml:4:5: host `a.example.com` is listed twice
    hint: give one of them a distinct `name:`
    deploy.yaml:5:5: `hosts[2]`: `bad host` is not a valid host name or address (write `[user@]host[:port]`)
    deploy.yaml:6:5: `hosts[3]`: `99999` is not a valid port (1-65535)
    deploy.yaml:7:29: `hosts[4].port` must be between 1 and 65535
    ");
}

#[test]
fn malformed_yaml() {
    let err = config_error("app: hello\nbuild: [a, b\n");
    assert!(err.starts_with("error: deploy.yaml:"), "{err}");
    insta::assert_snapshot!(config_error("app: hello\napp: again\n"), @"error: deploy.yaml:2:1: duplicate mapping key: app, set DuplicateKeyPolicy in Options if acceptable");
    insta::assert_snapshot!(config_error("\n\n"), @r"
    error: deploy.yaml: the file is empty
    hint: run `shipit init` elsewhere to see a starter deploy.yaml
    ");
    insta::assert_snapshot!(config_error("- a\n- b\n"), @"error: deploy.yaml:1:1: expected mapping start");
}

#[test]
fn missing_file() {
    let p = Project::new();
    let out = p.run(&["config"]);
    out.code(2);
    insta::assert_snapshot!(out.stderr, @r"
    error: deploy.yaml: no such file
    hint: run `shipit init` to write a starter deploy.yaml, or pass `-c FILE`
    ");
}

#[test]
fn missing_app() {
    insta::assert_snapshot!(config_error("deploy_to: /srv/x\n"), @r"
    error: deploy.yaml: missing required key `app`
    hint: add e.g. `app: hello` (lowercase letters, digits, `-`, `_`)
    ");
}

const MERGE: &str = "\
app: hello
keep_releases: 3
ssh:
  user: deploy
  port: 22
env:
  RUST_LOG: info
  PORT: '8080'
hosts: [top.example.com]
health:
  http: {url: 'http://127.0.0.1:8080/healthz', contains: ok}
default_env: staging
environments:
  staging:
    hosts: [staging1.example.com]
  production:
    ssh: {port: 2222}
    env: {RUST_LOG: warn, EXTRA: '1'}
    health:
      http: {status: 204}
    hosts:
      - app1.example.com
      - deploy@app2.example.com:2222
      - { host: 10.0.0.7, name: app3, user: ops, port: 22 }
      - '[::1]:2200'
";

fn resolved(p: &Project, args: &[&str]) -> serde_json::Value {
    let out = p.run(args);
    out.code(0);
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn environments_merge_deeply_over_the_top_level() {
    let p = Project::new();
    p.file("deploy.yaml", MERGE);
    let v = resolved(&p, &["-e", "production", "config", "--json"]);
    assert_eq!(v["environment"], "production");
    assert_eq!(v["keep_releases"], 3);
    // Sections merge key by key.
    assert_eq!(v["ssh"]["user"], "deploy");
    assert_eq!(v["ssh"]["port"], 2222);
    assert_eq!(v["health"]["http"]["url"], "http://127.0.0.1:8080/healthz");
    assert_eq!(v["health"]["http"]["contains"], "ok");
    assert_eq!(v["health"]["http"]["status"], 204);
    // Maps merge key by key.
    assert_eq!(
        v["env"],
        serde_json::json!({"RUST_LOG": "warn", "PORT": "8080", "EXTRA": "1"})
    );
    // Lists are replaced whole.
    assert_eq!(
        v["hosts"],
        serde_json::json!([
            {"name": "app1.example.com", "host": "app1.example.com", "user": null, "port": null},
            {"name": "app2.example.com:2222", "host": "app2.example.com", "user": "deploy", "port": 2222},
            {"name": "app3", "host": "10.0.0.7", "user": "ops", "port": 22},
            {"name": "[::1]:2200", "host": "::1", "user": null, "port": 2200},
        ])
    );
    // default_env picks staging; SHIPIT_ENV picks too.
    let v = resolved(&p, &["config", "--json"]);
    assert_eq!(v["environment"], "staging");
    assert_eq!(v["hosts"][0]["host"], "staging1.example.com");
    assert_eq!(v["ssh"]["port"], 22);
    let mut p = p;
    p.env("SHIPIT_ENV", "production");
    assert_eq!(
        resolved(&p, &["config", "--json"])["environment"],
        "production"
    );
}

#[test]
fn shipit_config_env_var_names_the_file() {
    let mut p = Project::new();
    p.file("conf/other.yaml", "app: other\n");
    p.env("SHIPIT_CONFIG", "conf/other.yaml");
    assert_eq!(resolved(&p, &["config", "--json"])["app"], "other");
}

#[test]
fn defaults_are_filled_in() {
    let p = Project::new();
    p.file("deploy.yaml", "app: hello\n");
    let v = resolved(&p, &["config", "--json"]);
    assert_eq!(v["deploy_to"], "/opt/hello");
    assert_eq!(v["keep_releases"], 5);
    assert_eq!(v["delta"], "copy");
    assert_eq!(v["ssh"]["known_hosts"], "strict");
    assert_eq!(v["ssh"]["connect_timeout"], "10s");
    assert_eq!(v["service"]["name"], "hello");
    assert_eq!(v["service"]["manager"], "systemd");
    assert_eq!(v["health"]["timeout"], "30s");
    assert_eq!(
        v["rollout"],
        serde_json::json!({
            "parallel": 10,
            "canary": 1,
            "max_failures": 0,
            "on_failure": "rollback",
            "confirm_timeout": "1m"
        })
    );
}

const CANARY: &str = "canary-s3cret-value-7c1f";

#[test]
fn values_from_the_environment_are_redacted_in_every_output() {
    let mut p = Project::new();
    p.file(
        "deploy.yaml",
        "app: hello\nenv:\n  DATABASE_URL: postgres://app:${DB_PASSWORD}@db/app\n  PORT: ${PORT:-8080}\n  LITERAL: 'a$$b'\n  PRICE: 'costs $5'\n",
    );
    p.env("DB_PASSWORD", CANARY);
    for args in [
        &["config"][..],
        &["config", "--json"],
        &["-v", "config"],
        &["--log-format", "json", "config"],
    ] {
        let out = p.run(args);
        out.code(0);
        assert!(
            !out.stdout.contains(CANARY) && !out.stderr.contains(CANARY),
            "{args:?} leaked the secret"
        );
        assert!(out.stdout.contains("[redacted]"), "{}", out.stdout);
    }
    let v = resolved(&p, &["config", "--json"]);
    assert_eq!(v["env"]["DATABASE_URL"], "[redacted]");
    // Defaults come from the file, not the environment: not secret.
    assert_eq!(v["env"]["PORT"], "8080");
    assert_eq!(v["env"]["LITERAL"], "a$b");
    assert_eq!(v["env"]["PRICE"], "costs $5");
}

#[test]
fn a_secret_in_an_invalid_value_is_redacted_in_the_error() {
    let mut p = Project::new();
    p.file("deploy.yaml", "app: hello\ndeploy_to: ${DEPLOY_TO}\n");
    p.env("DEPLOY_TO", CANARY);
    let out = p.run(&["config"]);
    out.code(2);
    assert!(!out.stderr.contains(CANARY), "{}", out.stderr);
    insta::assert_snapshot!(out.stderr, @r"
    error: deploy.yaml:2:12: `deploy_to` must be an absolute path other than `/`, without `..`; got `[redacted]`
    hint: e.g. `deploy_to: /opt/hello`
    ");
}

#[test]
fn human_output_is_yaml_with_a_header() {
    let p = Project::new();
    p.file("deploy.yaml", "app: hello\nhosts: [a.example.com]\n");
    let out = p.run(&["config"]);
    out.code(0);
    assert!(
        out.stdout
            .starts_with("# deploy.yaml (environment: (none)), resolved\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("app: hello\n"));
    assert!(out.stdout.contains("- name: a.example.com\n"));
}

#[test]
fn proxy_settings_are_checked_against_each_other_and_the_rest() {
    let yaml = "\
app: hello
env: {PORT: '8080'}
service: {name: hello.service, restart: reload, manager: systemd-user}
proxy:
  listen: 80
  slots: [80, 9002]
  steps: [50, 10]
  analysis: {max_error_rate: 2, max_response_time: 1s}
";
    let err = config_error(yaml);
    for wanted in [
        "`proxy.slots` must be two different ports",
        "`proxy.steps` must be rising percentages",
        "`proxy.analysis.max_error_rate` must be a percentage",
    ] {
        assert!(err.contains(wanted), "{wanted}:\n{err}");
    }
    let yaml = "\
app: hello
env: {PORT: '8080'}
service: {name: hello.service, restart: reload, manager: systemd-user}
proxy: {listen: 80, mode: tcp, analysis: {max_response_time: 1s}}
";
    let err = config_error(yaml);
    for wanted in [
        "needs `mode: http`",
        "needs `service.manager: systemd`",
        "without `.` or `@`",
        "`service.restart: reload` does not apply",
        "remove it from `env`",
    ] {
        assert!(err.contains(wanted), "{wanted}:\n{err}");
    }
    assert!(config_error("app: hello\nproxy: {slots: [1, 2]}\n").contains("needs `listen`"));
}

#[test]
fn a_proxy_section_resolves_with_its_defaults() {
    let p = Project::new();
    p.file("deploy.yaml", "app: hello\nproxy: {listen: 80}\n");
    let out = p.run(&["config", "--json"]);
    out.code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let proxy = &v["proxy"];
    assert_eq!(proxy["slots"], serde_json::json!([9001, 9002]), "{v:#}");
    assert_eq!(proxy["steps"], serde_json::json!([10, 50, 100]));
    assert_eq!(proxy["mode"], "http");
    assert_eq!(proxy["analysis"]["max_error_rate"], 1.0);
}

#[test]
fn before_switch_hooks_are_commands_or_objects_with_once() {
    let p = Project::new();
    p.file(
        "deploy.yaml",
        "app: hello\nhosts: [a]\nhooks:\n  before_switch:\n    - ./bin/check\n    - run: ./bin/hello migrate\n      once: true\n    - run: ./bin/warm\n",
    );
    let out = p.run(&["config", "--json"]);
    out.code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v["hooks"]["before_switch"],
        serde_json::json!(["./bin/check", "./bin/warm"])
    );
    assert_eq!(
        v["hooks"]["before_switch_once"],
        serde_json::json!(["./bin/hello migrate"])
    );
}

#[test]
fn a_hook_object_with_an_unknown_key_or_no_run_is_refused() {
    let yaml = "app: hello\nhooks:\n  before_switch:\n    - run: x\n      onse: true\n";
    insta::assert_snapshot!(config_error(yaml), @r"
    error: deploy.yaml:5:7: unknown key `onse`
    hint: did you mean `once`?
    ");
    let yaml = "app: hello\nhooks:\n  before_switch:\n    - once: true\n";
    insta::assert_snapshot!(config_error(yaml), @"error: deploy.yaml:4:7: missing field `run`");
    let yaml = "app: hello\nhooks:\n  after_switch:\n    - run: x\n      once: true\n";
    insta::assert_snapshot!(config_error(yaml), @r"
    error: deploy.yaml:5:13: `hooks.after_switch[0].once`: only `hooks.before_switch` hooks can run once
    hint: move the hook to `before_switch`, or drop `once`
    ");
}
