use super::*;

fn local() -> Local {
    Local {
        home: PathBuf::from("/home/me"),
        system: PathBuf::from("/etc-nowhere/ssh"),
        user: "me".into(),
    }
}

fn cfg(text: &str) -> SshConfig {
    SshConfig::parse(
        text,
        Path::new("/home/me/.ssh/config"),
        Path::new("/home/me"),
    )
    .unwrap()
}

fn target(alias: &str, explicit: &Explicit, text: &str) -> Target {
    resolve(alias, explicit, &cfg(text), &local()).unwrap()
}

#[test]
fn defaults_without_config() {
    let t = target("app1.example.com", &Explicit::default(), "");
    assert_eq!(t.name, "app1.example.com");
    assert_eq!(t.host, "app1.example.com");
    assert_eq!(t.port, 22);
    assert_eq!(t.user, "me");
    assert!(t.identity_files.is_empty());
    assert_eq!(
        t.known_hosts_files,
        vec![
            PathBuf::from("/home/me/.ssh/known_hosts"),
            PathBuf::from("/home/me/.ssh/known_hosts2"),
            PathBuf::from("/etc-nowhere/ssh/ssh_known_hosts"),
            PathBuf::from("/etc-nowhere/ssh/ssh_known_hosts2"),
        ]
    );
    assert_eq!(t.proxy_command, None);
    assert_eq!(t.identity_agent, None);
    assert_eq!(t.known_hosts, KnownHostsPolicy::Strict);
    assert_eq!(t.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert!(t.proxy_jump.is_none());
}

const CONFIG: &str = r#"
# production fleet
Host app? !app9
HostName %h.prod.example.com
User deploy
Port 2222
IdentityFile ~/.ssh/prod_%r
UserKnownHostsFile ~/.ssh/known_hosts.prod "/etc/ssh/with space"

Host app*
User ignored-because-first-wins
IdentityFile ~/.ssh/second
ProxyJump ops@bastion:2200

Host bastion
HostName bastion.example.com
IdentityFile=~/.ssh/bastion_key

Host *
User fallback
ConnectTimeout 5
"#;

#[test]
fn first_value_wins_and_identity_files_accumulate() {
    let t = target("app1", &Explicit::default(), CONFIG);
    assert_eq!(t.host, "app1.prod.example.com");
    assert_eq!(t.user, "deploy");
    assert_eq!(t.port, 2222);
    assert_eq!(
        t.identity_files,
        vec![
            PathBuf::from("/home/me/.ssh/prod_deploy"),
            PathBuf::from("/home/me/.ssh/second")
        ]
    );
    assert_eq!(
        t.known_hosts_files,
        vec![
            PathBuf::from("/home/me/.ssh/known_hosts.prod"),
            PathBuf::from("/etc/ssh/with space"),
            PathBuf::from("/etc-nowhere/ssh/ssh_known_hosts"),
            PathBuf::from("/etc-nowhere/ssh/ssh_known_hosts2"),
        ]
    );
}

#[test]
fn explicit_values_win() {
    let explicit = Explicit {
        name: Some("web".into()),
        user: Some("ci".into()),
        port: Some(22),
        identity_files: vec![PathBuf::from("~/.ssh/deploy_key")],
        known_hosts: KnownHostsPolicy::AcceptNew,
        known_hosts_file: Some(PathBuf::from("~/kh")),
        proxy_jump: Some("none".into()),
        connect_timeout: Some(Duration::from_secs(3)),
    };
    let t = target("app1", &explicit, CONFIG);
    assert_eq!(t.name, "web");
    assert_eq!(t.user, "ci");
    assert_eq!(t.port, 22);
    assert_eq!(t.host, "app1.prod.example.com", "HostName still applies");
    assert_eq!(
        t.identity_files[0],
        PathBuf::from("/home/me/.ssh/deploy_key")
    );
    assert_eq!(
        t.identity_files[1],
        PathBuf::from("/home/me/.ssh/prod_ci"),
        "%r is the final user"
    );
    assert_eq!(t.known_hosts_files, vec![PathBuf::from("/home/me/kh")]);
    assert_eq!(t.known_hosts, KnownHostsPolicy::AcceptNew);
    assert!(
        t.proxy_jump.is_none(),
        "explicit `none` disables ssh_config's ProxyJump"
    );
    assert_eq!(t.connect_timeout, Duration::from_secs(3));
}

#[test]
fn negated_pattern_excludes_a_host() {
    let t = target("app9", &Explicit::default(), CONFIG);
    assert_eq!(t.host, "app9");
    assert_eq!(t.user, "ignored-because-first-wins");
    assert_eq!(t.port, 22);
}

#[test]
fn wildcard_fallback_applies_last() {
    let t = target("db1", &Explicit::default(), CONFIG);
    assert_eq!(t.user, "fallback");
    assert!(t.proxy_jump.is_none());
}

#[test]
fn proxy_jump_is_resolved_through_the_config() {
    let explicit = Explicit {
        known_hosts: KnownHostsPolicy::AcceptNew,
        ..Explicit::default()
    };
    let t = target("app9", &explicit, CONFIG);
    let hop = t.proxy_jump.expect("jump host");
    assert_eq!(hop.name, "bastion");
    assert_eq!(hop.host, "bastion.example.com");
    assert_eq!(hop.user, "ops");
    assert_eq!(hop.port, 2200);
    assert_eq!(
        hop.identity_files,
        vec![PathBuf::from("/home/me/.ssh/bastion_key")]
    );
    assert_eq!(
        hop.known_hosts,
        KnownHostsPolicy::AcceptNew,
        "same policy as the target"
    );
    assert_eq!(hop.known_hosts_files, t.known_hosts_files);
    assert!(hop.proxy_jump.is_none());
}

#[test]
fn proxy_jump_chain_nests_hops_in_order() {
    let explicit = Explicit {
        proxy_jump: Some("a@one,two:2022".into()),
        ..Explicit::default()
    };
    let t = target("db", &explicit, "");
    let last = t.proxy_jump.expect("hop two");
    assert_eq!((last.host.as_str(), last.port), ("two", 2022));
    let first = last.proxy_jump.expect("hop one");
    assert_eq!(
        (first.host.as_str(), first.user.as_str(), first.port),
        ("one", "a", 22)
    );
    assert!(first.proxy_jump.is_none());
}

#[test]
fn proxy_jump_loop_is_an_error() {
    let err = resolve(
        "a",
        &Explicit::default(),
        &cfg("Host a\n ProxyJump b\nHost b\n ProxyJump a\n"),
        &local(),
    );
    assert!(matches!(err, Err(ConfigError::JumpLoop { .. })), "{err:?}");
}

#[test]
fn match_all_applies_other_match_blocks_do_not_and_each_is_a_warning() {
    let text = "Match host x\n User nope\nMatch all\n User yes\n";
    let t = target("x", &Explicit::default(), text);
    assert_eq!(t.user, "yes");
    let quiet = "Match final all\n Port 2200\nMatch canonical all\n User c\n";
    let t = target("x", &Explicit::default(), quiet);
    assert_eq!((t.port, t.user.as_str()), (2200, "c"));
    assert!(cfg(quiet).warnings.is_empty());
    assert_eq!(
        cfg(text).warnings,
        [
            "/home/me/.ssh/config:1: `Match host x` is not evaluated by shipit: the settings under \
          it are not applied (only `Host` blocks and `Match all` are); move them under a \
          `Host` block, or set them in deploy.yaml"
        ]
    );
}

#[test]
fn proxy_command_takes_the_rest_of_the_line_with_tokens_expanded() {
    let text = "Host app\n HostName 10.0.0.7\n User deploy\n Port 2222\n \
                ProxyCommand sh -c \"exec ssh -W '%h:%p' bastion\" %n %r %%\n";
    let t = target("app", &Explicit::default(), text);
    assert_eq!(
        t.proxy_command.as_deref(),
        Some("sh -c \"exec ssh -W '10.0.0.7:2222' bastion\" app deploy %")
    );
    assert!(t.proxy_jump.is_none());
    // The first of ProxyJump and ProxyCommand wins; deploy.yaml's proxy_jump wins over both.
    let text = "Host app\n ProxyJump b\n ProxyCommand nc %h %p\n";
    let t = target("app", &Explicit::default(), text);
    assert!(t.proxy_command.is_none() && t.proxy_jump.is_some());
    let explicit = Explicit {
        proxy_jump: Some("b".into()),
        ..Explicit::default()
    };
    let t = target("app", &explicit, "Host app\n ProxyCommand nc %h %p\n");
    assert!(t.proxy_command.is_none() && t.proxy_jump.is_some());
    let t = target(
        "app",
        &Explicit::default(),
        "Host app\n ProxyCommand none\n",
    );
    assert!(t.proxy_command.is_none());
}

#[test]
fn identity_agent_and_known_hosts_files_from_ssh_config() {
    use crate::ssh::target::IdentityAgent;
    let t = target(
        "a",
        &Explicit::default(),
        "Host a\n IdentityAgent ~/agent-%r.sock\n",
    );
    assert_eq!(
        t.identity_agent,
        Some(IdentityAgent::Socket("/home/me/agent-me.sock".into()))
    );
    let t = target("a", &Explicit::default(), "Host a\n IdentityAgent none\n");
    assert_eq!(t.identity_agent, Some(IdentityAgent::None));
    let t = target(
        "a",
        &Explicit::default(),
        "Host a\n IdentityAgent SSH_AUTH_SOCK\n",
    );
    assert_eq!(t.identity_agent, None);
    let t = target(
        "a",
        &Explicit::default(),
        "Host a\n UserKnownHostsFile ~/kh\n GlobalKnownHostsFile /etc/kh-%n\n",
    );
    assert_eq!(
        t.known_hosts_files,
        [PathBuf::from("/home/me/kh"), PathBuf::from("/etc/kh-a")]
    );
    // deploy.yaml's known_hosts_file is the one file read.
    let explicit = Explicit {
        known_hosts_file: Some("/ci/known_hosts".into()),
        ..Explicit::default()
    };
    let t = target("a", &explicit, "");
    assert_eq!(t.known_hosts_files, [PathBuf::from("/ci/known_hosts")]);
}

#[test]
fn the_system_config_follows_the_users_and_a_config_file_replaces_both() {
    let home = tempfile::tempdir().unwrap();
    let ssh = home.path().join(".ssh");
    let etc = home.path().join("etc-ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    std::fs::create_dir_all(etc.join("ssh_config.d")).unwrap();
    std::fs::write(ssh.join("config"), "Host a\n User from-user\n").unwrap();
    std::fs::write(
        etc.join("ssh_config"),
        "Include ssh_config.d/*.conf\nHost *\n User from-system\n Port 2200\n",
    )
    .unwrap();
    std::fs::write(
        etc.join("ssh_config.d/1.conf"),
        "Host b\n User from-system-d\n",
    )
    .unwrap();
    std::fs::write(home.path().join("ci_config"), "Host *\n User from-ci\n").unwrap();
    let local = Local {
        home: home.path().to_owned(),
        system: etc,
        user: "me".into(),
    };
    let config = SshConfig::load_for(&local, None).unwrap();
    let get = |alias| resolve(alias, &Explicit::default(), &config, &local).unwrap();
    assert_eq!((get("a").user, get("a").port), ("from-user".into(), 2200));
    assert_eq!(get("b").user, "from-system-d");
    assert_eq!(get("c").user, "from-system");
    let only = home.path().join("ci_config");
    let config = SshConfig::load_for(&local, Some(&only)).unwrap();
    let get = |alias| resolve(alias, &Explicit::default(), &config, &local).unwrap();
    assert_eq!((get("a").user, get("a").port), ("from-ci".into(), 22));
}

#[test]
fn keywords_are_case_insensitive_and_equals_is_allowed() {
    let t = target(
        "x",
        &Explicit::default(),
        "HOST x\n  hostname = 10.0.0.7 # trailing comment\n  PORT=2200\n",
    );
    assert_eq!(t.host, "10.0.0.7");
    assert_eq!(t.port, 2200);
}

#[test]
fn bad_port_names_file_and_line() {
    let err = cfg("Host x\n\n  Port abc\n").query("x").unwrap_err();
    assert_eq!(
        err.to_string(),
        "/home/me/.ssh/config:3: `Port abc` is not a port number"
    );
    let err = SshConfig::parse(
        "Host x\n HostName \"unterminated\n",
        Path::new("/c"),
        Path::new("/h"),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "/c:2: unterminated quote");
}

#[test]
fn include_with_glob_relative_to_dot_ssh_and_scoped_to_its_block() {
    let home = tempfile::tempdir().unwrap();
    let ssh = home.path().join(".ssh");
    std::fs::create_dir_all(ssh.join("conf.d")).unwrap();
    std::fs::write(
        ssh.join("conf.d/10-web"),
        "Host web\n  User webuser\nHost *\n  Port 2201\n",
    )
    .unwrap();
    std::fs::write(ssh.join("conf.d/20-db"), "Host db\n  User dbuser\n").unwrap();
    std::fs::write(ssh.join("conf.d/.hidden"), "Host *\n  User hidden\n").unwrap();
    std::fs::write(ssh.join("scoped"), "User scoped-user\n").unwrap();
    let text = "Include conf.d/*\nHost cache\n  Include scoped\nHost *\n  User default\n";
    std::fs::write(ssh.join("config"), text).unwrap();
    let local = Local {
        home: home.path().to_owned(),
        system: home.path().join("etc-ssh"),
        user: "me".into(),
    };
    let config = SshConfig::load_for(&local, Some(&local.home.join(".ssh/config"))).unwrap();
    let get = |alias| resolve(alias, &Explicit::default(), &config, &local).unwrap();
    assert_eq!((get("web").user, get("web").port), ("webuser".into(), 2201));
    assert_eq!(get("db").user, "dbuser");
    assert_eq!(get("cache").user, "scoped-user");
    assert_eq!(get("other").user, "default");
}

#[test]
fn missing_config_and_missing_include_are_fine() {
    let home = tempfile::tempdir().unwrap();
    let local = Local {
        home: home.path().to_owned(),
        system: home.path().join("etc-ssh"),
        user: "me".into(),
    };
    assert!(
        SshConfig::load_for(&local, Some(&local.home.join(".ssh/config")))
            .unwrap()
            .query("x")
            .unwrap()
            == HostConfig::default()
    );
    let c = SshConfig::parse(
        "Include nothing/here*\nInclude /no/such/file\n",
        Path::new("/c"),
        home.path(),
    )
    .unwrap();
    assert_eq!(c.query("x").unwrap(), HostConfig::default());
}

#[test]
fn host_specs() {
    let spec = |s| parse_host_spec(s).unwrap();
    assert_eq!(
        spec("h"),
        HostSpec {
            user: None,
            host: "h".into(),
            port: None
        }
    );
    assert_eq!(
        spec("u@h:2222"),
        HostSpec {
            user: Some("u".into()),
            host: "h".into(),
            port: Some(2222)
        }
    );
    assert_eq!(
        spec("[::1]:22"),
        HostSpec {
            user: None,
            host: "::1".into(),
            port: Some(22)
        }
    );
    assert_eq!(
        spec("u@[fe80::1]"),
        HostSpec {
            user: Some("u".into()),
            host: "fe80::1".into(),
            port: None
        }
    );
    assert_eq!(
        spec("2001:db8::7"),
        HostSpec {
            user: None,
            host: "2001:db8::7".into(),
            port: None
        }
    );
    assert_eq!(
        spec("ssh://u@h:2200"),
        HostSpec {
            user: Some("u".into()),
            host: "h".into(),
            port: Some(2200)
        }
    );
    for bad in ["", "@h", "h:0", "h:99999", "h:x", "[::1", "[::1]x", "a b"] {
        assert!(parse_host_spec(bad).is_err(), "{bad:?} should be rejected");
    }
}
