//! OpenSSH host patterns: `*` and `?` wildcards and `!` negation, as used by `Host`
//! lines in `ssh_config` and by host fields in `known_hosts`. Pure functions only.

/// Whether `text` matches the wildcard `pattern` (`*` any run, `?` any one character).
/// Hostnames are compared without regard to ASCII case, as OpenSSH does.
pub(crate) fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().map(|c| c.to_ascii_lowercase()).collect();
    let t: Vec<char> = text.chars().map(|c| c.to_ascii_lowercase()).collect();
    // Iterative matcher with single backtrack point: linear in practice, no recursion.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// OpenSSH pattern-list semantics: a matching negated pattern (`!pat`) rejects the host
/// outright; otherwise the host matches when any positive pattern matches.
pub(crate) fn match_pattern_list<'a>(
    patterns: impl IntoIterator<Item = &'a str>,
    host: &str,
) -> bool {
    let mut matched = false;
    for pattern in patterns {
        if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard_match(negated, host) {
                return false;
            }
        } else if wildcard_match(pattern, host) {
            matched = true;
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("*.example.com", "app1.example.com"));
        assert!(!wildcard_match("*.example.com", "example.com"));
        assert!(wildcard_match("app?", "app1"));
        assert!(!wildcard_match("app?", "app12"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
        assert!(wildcard_match("APP1", "app1"));
        assert!(wildcard_match("10.0.0.*", "10.0.0.7"));
        assert!(wildcard_match("[db]:2222", "[db]:2222"));
    }

    #[test]
    fn negation_wins_over_a_positive_match() {
        assert!(match_pattern_list(
            ["*.example.com", "!bastion.example.com"],
            "app.example.com"
        ));
        assert!(!match_pattern_list(
            ["*.example.com", "!bastion.example.com"],
            "bastion.example.com"
        ));
        assert!(
            !match_pattern_list(["!foo"], "bar"),
            "only negations never match"
        );
    }
}
