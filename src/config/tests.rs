use super::health::parse_http_url;
use super::*;
use std::collections::BTreeMap;

#[test]
fn http_urls() {
    assert_eq!(
        parse_http_url("http://127.0.0.1:8080/healthz"),
        Ok(("127.0.0.1".into(), 8080, "/healthz".into()))
    );
    assert_eq!(
        parse_http_url("http://localhost"),
        Ok(("localhost".into(), 80, "/".into()))
    );
    assert_eq!(
        parse_http_url("http://[::1]:9/x?y=1"),
        Ok(("::1".into(), 9, "/x?y=1".into()))
    );
    assert!(
        parse_http_url("https://a/")
            .unwrap_err()
            .contains("only `http://`")
    );
    assert!(
        parse_http_url("ftp://a/")
            .unwrap_err()
            .contains("not an http:// URL")
    );
    assert!(
        parse_http_url("http://u@a/")
            .unwrap_err()
            .contains("credentials")
    );
}

#[test]
fn names() {
    assert!(valid_name("hello"));
    assert!(valid_name("0x-app_2"));
    assert!(!valid_name("Hello"));
    assert!(!valid_name("-x"));
    assert!(!valid_name("a b"));
    assert!(!valid_name(""));
    assert!(valid_unit("hello@1.service"));
    assert!(!valid_unit("hello;reboot"));
}

fn roles(yaml: &str, env: Option<&str>) -> Result<Config, ConfigError> {
    let vars: BTreeMap<String, String> = BTreeMap::new();
    load_str(yaml, Path::new("deploy.yaml"), env, &vars)
}

fn problems(yaml: &str) -> Vec<String> {
    roles(yaml, None)
        .unwrap_err()
        .problems
        .into_iter()
        .map(|p| format!("{}:{}: {}", p.line, p.column, p.message))
        .collect()
}

const WEB_AND_WORKER: &str = "\
app: hello
env: { MODE: all, LEVEL: info }
service: { sudo: true }
health: { http: { url: http://127.0.0.1:8080/healthz }, timeout: 9s }
hooks:
  before_switch:
    - run: ./bin/hello migrate
      once: true
      roles: [web]
    - run: ./bin/warm-cache
      roles: [web]
    - ./bin/everywhere
roles:
  web:
    hosts: [app1, app2]
    service: { name: hello-web }
  worker:
    hosts: [app2, jobs1]
    service: { name: hello-worker }
    env: { MODE: worker }
    health: { command: ./bin/hello-worker --check }
environments:
  production: {}
  staging:
    roles:
      worker: { hosts: [stage1] }
";

#[test]
fn roles_resolve_over_the_top_level() {
    let c = roles(WEB_AND_WORKER, Some("production")).unwrap();
    let names: Vec<&str> = c.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["web", "worker"], "in the file's order");
    let hosts: Vec<&str> = c.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(hosts, ["app1", "app2", "jobs1"], "each host once");
    let web = c.role("web").unwrap();
    assert_eq!(web.deploy_to.expose(), "/opt/hello/web");
    assert_eq!(web.service.name, "hello-web");
    assert!(web.service.sudo, "the top level's service keys stay");
    assert!(web.health.http.is_some());
    assert_eq!(web.hooks.before_switch_once.len(), 1);
    let before: Vec<&str> = web.hooks.before_switch.iter().map(|t| t.expose()).collect();
    assert_eq!(before, ["./bin/warm-cache", "./bin/everywhere"]);
    let worker = c.role("worker").unwrap();
    assert_eq!(worker.deploy_to.expose(), "/opt/hello/worker");
    assert!(
        worker.health.http.is_none(),
        "a role's check replaces the top level's"
    );
    assert_eq!(worker.health.timeout.0.as_secs(), 9, "its timings merge");
    assert_eq!(worker.env["MODE"].expose(), "worker");
    assert_eq!(worker.env["LEVEL"].expose(), "info");
    assert!(worker.hooks.before_switch_once.is_empty());
    let before: Vec<&str> = worker
        .hooks
        .before_switch
        .iter()
        .map(|t| t.expose())
        .collect();
    assert_eq!(before, ["./bin/everywhere"]);
    // An environment sets a role's hosts; the other role keeps its own.
    let s = roles(WEB_AND_WORKER, Some("staging")).unwrap();
    let worker: Vec<&str> = s
        .role("worker")
        .unwrap()
        .hosts
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(worker, ["stage1"]);
    assert_eq!(s.role("worker").unwrap().service.name, "hello-worker");
    assert_eq!(s.role("web").unwrap().hosts.len(), 2);
}

#[test]
fn role_mistakes_are_reported_once_with_their_place() {
    let both = "app: a\nhosts: [x]\nroles:\n  web: { hosts: [h1] }\n";
    assert_eq!(
        problems(both),
        ["2:8: with `roles`, hosts are listed under each role, not in `hosts`"]
    );
    let unknown = "app: a\nhooks:\n  after_switch:\n    - { run: x, roles: [db] }\nroles:\n  \
                   web: { hosts: [h1] }\n  worker: { hosts: [z] }\n";
    assert_eq!(
        problems(unknown),
        ["4:25: `hooks.after_switch[0].roles`: there is no role `db`"]
    );
    let no_roles = "app: a\nhosts: [h1]\nhooks:\n  after_switch:\n    - { run: x, roles: [web] }\n";
    assert_eq!(
        problems(no_roles),
        ["5:24: `hooks.after_switch[0].roles`: no roles are defined"]
    );
    let local = "app: a\nhooks:\n  local_after:\n    - { run: x, roles: [web] }\nroles:\n  \
                 web: { hosts: [h1] }\n";
    let said = problems(local);
    assert_eq!(said.len(), 1);
    assert!(said[0].starts_with("4:24: `hooks.local_after[0].roles`: local hooks run on"));
    let clash = "app: a\nroles:\n  web: { hosts: [h1], deploy_to: /srv/a }\n  \
                 worker: { hosts: [h1], deploy_to: /srv/a }\n";
    assert_eq!(
        problems(clash),
        ["4:11: roles `web` and `worker` share hosts and the same `deploy_to` (/srv/a)"]
    );
    let differs = "app: a\nroles:\n  web: { hosts: [h1] }\n  worker: { hosts: [\"me@h1\"] }\n";
    assert!(problems(differs)[0].contains("host `h1` of role `worker` differs"));
    let bad = "app: a\nroles:\n  Web: { hosts: [h1] }\n";
    assert!(problems(bad)[0].contains("`Web` is not a valid role name"));
}
