//! The JSON contract (docs/json.md): the envelope of every `--json` document on stdout,
//! the document a run that fails before its summary prints instead, and the one shape of
//! a `--log-format json` line on stderr. Every string in them is scrubbed of registered
//! secrets; keys and numbers are left alone, so a scrubbed document still parses.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::redact::scrub;

/// The version of every `--json` document's shape; it changes only when a field is
/// removed or changes meaning (new fields may appear without it).
pub const SCHEMA_VERSION: u32 = 1;

/// A `--json` document: `schema_version` first, then the command's own fields.
#[derive(Serialize)]
pub(crate) struct Document<'a, T: Serialize> {
    pub schema_version: u32,
    #[serde(flatten)]
    pub body: &'a T,
}

/// What a run that failed before its document prints instead, under `--json`.
#[derive(Serialize)]
pub(crate) struct Failed<'a> {
    pub ok: bool,
    pub exit_code: u8,
    pub action: &'a str,
    pub error: ErrorJson<'a>,
}

#[derive(Serialize)]
pub(crate) struct ErrorJson<'a> {
    /// The error and its causes, one per line.
    pub message: &'a str,
    pub hint: Option<&'a str>,
    /// Each problem of an invalid configuration file, in file order; null for other errors.
    pub problems: Option<Vec<ProblemJson<'a>>>,
}

#[derive(Serialize)]
pub(crate) struct ProblemJson<'a> {
    pub file: String,
    /// 1-based; null when the problem has no place in the file (a missing key).
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: &'a str,
    pub hint: Option<&'a str>,
}

impl<'a> ProblemJson<'a> {
    pub fn all(err: &'a crate::config::ConfigError) -> Vec<ProblemJson<'a>> {
        err.problems
            .iter()
            .map(|p| ProblemJson {
                file: err.file.display().to_string(),
                line: (p.line > 0).then_some(p.line),
                column: (p.line > 0).then_some(p.column),
                message: &p.message,
                hint: p.hint.as_deref(),
            })
            .collect()
    }
}

/// One `--log-format json` line on stderr, whoever writes it: a message, a host's step, a
/// child process's output line, or a tracing debug line (`-v`).
#[derive(Debug, Default, Serialize)]
pub(crate) struct LogLine<'a> {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: &'a str,
    /// When the line was written: RFC 3339, UTC, milliseconds.
    pub time: String,
    pub message: &'a str,
    /// The host a step or an output line is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<&'a str>,
    /// Milliseconds since the run began, on a host's step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// What printed an output line: a build step, a hook, a host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'a str>,
    /// What the user can do about an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<&'a str>,
    /// On a tracing line: the module it comes from (`shipit::ssh::session`, `russh::client`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<&'a str>,
    /// On a tracing line: its other fields (`op`, `ms`, ...).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl LogLine<'_> {
    /// The line as written, without its newline: one JSON object, scrubbed.
    pub fn render(&self) -> String {
        scrub_strings(&serde_json::to_string(self).unwrap_or_default())
    }
}

/// A document as written to stdout: pretty JSON, scrubbed.
pub(crate) fn render<T: Serialize>(body: &T) -> serde_json::Result<String> {
    let doc = Document {
        schema_version: SCHEMA_VERSION,
        body,
    };
    Ok(scrub_strings(&serde_json::to_string_pretty(&doc)?))
}

/// Now, as `2026-11-22T05:12:33.042Z`.
pub(crate) fn now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = crate::remote::layout::iso8601(since.as_secs());
    format!(
        "{}.{:03}Z",
        secs.trim_end_matches('Z'),
        since.subsec_millis()
    )
}

/// `json` with registered secrets scrubbed out of its string values (never its keys, or
/// its numbers and literals: a secret `8080` must not turn `18080` into invalid JSON).
pub(crate) fn scrub_strings(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut rest = json;
    while let Some(start) = rest.find('"') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        // The closing quote: the first one not escaped by a backslash.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            // Not JSON after all: leave the rest as it is.
            out.push_str(&rest[start..]);
            return out;
        };
        let literal = &rest[start..start + end + 2];
        rest = &rest[start + end + 2..];
        let is_key = rest.trim_start().starts_with(':');
        match serde_json::from_str::<String>(literal) {
            Ok(value) if !is_key => match scrub(&value) {
                std::borrow::Cow::Borrowed(_) => out.push_str(literal),
                std::borrow::Cow::Owned(clean) => {
                    out.push_str(&serde_json::to_string(&clean).unwrap_or_default())
                }
            },
            _ => out.push_str(literal),
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every key of `value`, at any depth, except below `skip` (free-form maps).
    pub(crate) fn keys(value: &serde_json::Value, skip: &[&str], out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if !out.contains(k) {
                        out.push(k.clone());
                    }
                    if !skip.contains(&k.as_str()) {
                        keys(v, skip, out);
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for v in items {
                    keys(v, skip, out);
                }
            }
            _ => {}
        }
    }

    /// Every key of `value` is named (in backquotes) in docs/json.md.
    #[track_caller]
    pub(crate) fn assert_documented(what: &str, value: &serde_json::Value, skip: &[&str]) {
        let doc = include_str!("../../docs/json.md");
        let mut found = Vec::new();
        keys(value, skip, &mut found);
        let missing: Vec<&String> = found
            .iter()
            .filter(|k| !doc.contains(&format!("`{k}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/json.md does not document these fields of {what}: {missing:?}\n{value:#}"
        );
    }

    #[test]
    fn documents_start_with_the_schema_version() {
        #[derive(Serialize)]
        struct Body {
            zzz: u32,
            aaa: &'static str,
        }
        let text = render(&Body { zzz: 1, aaa: "x" }).unwrap();
        assert!(
            text.starts_with("{\n  \"schema_version\": 1,\n  \"zzz\": 1,"),
            "{text}"
        );
    }

    #[test]
    fn secrets_leave_strings_and_the_document_still_parses() {
        crate::redact::register("90817-s3cr\"et\\");
        crate::redact::register("981723");
        let doc = serde_json::json!({
            "port": 19817234,
            "981723": "key stays",
            "url": "http://x:90817-s3cr\"et\\@db",
            "list": ["a 981723 b", "plain"],
        });
        let text = scrub_strings(&serde_json::to_string_pretty(&doc).unwrap());
        let v: serde_json::Value = serde_json::from_str(&text).expect(&text);
        assert_eq!(v["port"], 19817234);
        assert_eq!(v["981723"], "key stays");
        assert_eq!(v["url"], "http://x:[redacted]@db");
        assert_eq!(v["list"][0], "a [redacted] b");
        assert_eq!(v["list"][1], "plain");
    }

    #[test]
    fn the_clock_is_rfc3339_utc_with_milliseconds() {
        let t = now();
        assert_eq!(t.len(), "2026-11-22T05:12:33.042Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.');
    }

    #[test]
    fn every_log_line_field_is_documented() {
        let mut fields = serde_json::Map::new();
        fields.insert("op".into(), "survey".into());
        let line = LogLine {
            level: "debug",
            time: now(),
            message: "m",
            host: Some("app1"),
            elapsed_ms: Some(1),
            source: Some("s"),
            hint: Some("h"),
            target: Some("shipit"),
            fields,
        };
        let v: serde_json::Value = serde_json::from_str(&line.render()).unwrap();
        assert_documented("a log line", &v, &["fields"]);
        let failed = Failed {
            ok: false,
            exit_code: 2,
            action: "deploy",
            error: ErrorJson {
                message: "m",
                hint: None,
                problems: Some(vec![ProblemJson {
                    file: "deploy.yaml".into(),
                    line: Some(1),
                    column: Some(1),
                    message: "m",
                    hint: None,
                }]),
            },
        };
        let v: serde_json::Value = serde_json::from_str(&render(&failed).unwrap()).unwrap();
        assert_documented("the error document", &v, &[]);
    }
}
