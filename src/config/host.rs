//! Host strings: `[user@]host[:port]`, with IPv6 addresses in brackets (`[::1]:2222`) or
//! bare (`::1`, no port then).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl serde::Serialize for HostSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for HostSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        match (self.host.contains(':'), self.port) {
            (true, Some(port)) => write!(f, "[{}]:{port}", self.host),
            (false, Some(port)) => write!(f, "{}:{port}", self.host),
            (_, None) => f.write_str(&self.host),
        }
    }
}

pub fn valid_user(user: &str) -> bool {
    let mut chars = user.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphanumeric())
        && chars.all(|c| c == '_' || c == '-' || c == '.' || c.is_ascii_alphanumeric())
        && user.len() <= 64
}

/// Host names and IP addresses: letters, digits, `-`, `.`, `_`, and for IPv6 `:` and a
/// `%zone`. Nothing a shell or an ssh option parser could read as syntax. One `:` alone is
/// neither a name nor an IPv6 address (those have two or more), and would print as
/// `host:port`.
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && !host.starts_with('-')
        && host.len() <= 253
        && host.matches(':').count() != 1
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '%'))
}

pub fn parse(text: &str) -> Result<HostSpec, String> {
    let (user, rest) = match text.rsplit_once('@') {
        Some((user, rest)) => {
            if !valid_user(user) {
                return Err(format!("`{user}` is not a valid user name"));
            }
            (Some(user.to_owned()), rest)
        }
        None => (None, text),
    };
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("`{text}`: missing `]` after the IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("`{text}`: expected `:port` after `]`"))?,
            ),
        };
        (host, port)
    } else if rest.matches(':').count() > 1 {
        // A bare IPv6 address: no port can be told apart from it.
        (rest, None)
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if !valid_host(host) {
        return Err(format!(
            "`{host}` is not a valid host name or address (write `[user@]host[:port]`)"
        ));
    }
    let port = port
        .map(|p| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("`{p}` is not a valid port (1-65535)")),
            Ok(port) => Ok(port),
        })
        .transpose()?;
    Ok(HostSpec {
        user,
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(user: Option<&str>, host: &str, port: Option<u16>) -> HostSpec {
        HostSpec {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn forms() {
        assert_eq!(
            parse("app1.example.com"),
            Ok(spec(None, "app1.example.com", None))
        );
        assert_eq!(
            parse("deploy@app2:2222"),
            Ok(spec(Some("deploy"), "app2", Some(2222)))
        );
        assert_eq!(parse("10.0.0.7:22"), Ok(spec(None, "10.0.0.7", Some(22))));
        assert_eq!(parse("[::1]:2222"), Ok(spec(None, "::1", Some(2222))));
        assert_eq!(
            parse("ops@[fe80::1%eth0]"),
            Ok(spec(Some("ops"), "fe80::1%eth0", None))
        );
        assert_eq!(parse("::1"), Ok(spec(None, "::1", None)));
    }

    #[test]
    fn round_trips_through_display() {
        for text in ["a", "u@a", "u@a:1", "[::1]:2222", "u@[::1]:2", "::1"] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn rejects() {
        assert!(parse("").unwrap_err().contains("not a valid host"));
        assert!(parse("a:0").unwrap_err().contains("not a valid port"));
        assert!(parse("a:70000").unwrap_err().contains("not a valid port"));
        assert!(parse("a:").unwrap_err().contains("not a valid port"));
        assert!(parse("[::1").unwrap_err().contains("missing `]`"));
        assert!(parse("[::1]x").unwrap_err().contains("expected `:port`"));
        assert!(
            parse("-oProxyCommand=x")
                .unwrap_err()
                .contains("not a valid host")
        );
        assert!(
            parse("a;rm -rf /")
                .unwrap_err()
                .contains("not a valid host")
        );
        assert!(parse("$(id)@h").unwrap_err().contains("not a valid user"));
        // Found by fuzz/host_parse: printed as `fe80:21%eth0`, which reads back as a port.
        assert!(
            parse("[fe80:21%eth0]")
                .unwrap_err()
                .contains("not a valid host")
        );
        assert!(!valid_host("a:b"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(input in ".*") {
            let _ = parse(&input);
        }

        #[test]
        fn accepted_hosts_carry_no_shell_syntax(input in ".*") {
            if let Ok(spec) = parse(&input) {
                proptest::prop_assert!(valid_host(&spec.host));
                proptest::prop_assert!(spec.user.as_deref().is_none_or(valid_user));
            }
        }
    }
}
