//! The `artifacts` section: where hosts fetch artifacts from (`store: s3://bucket/prefix/`).

use super::raw;
use super::{ArtifactsConfig, Ctx, Duration};

impl Ctx<'_> {
    pub(super) fn artifacts(&mut self, a: raw::Artifacts) -> Option<ArtifactsConfig> {
        let Some(store_s) = &a.store else {
            self.problem_at(
                (0, 0),
                "`artifacts` needs `store`".into(),
                Some("e.g. `store: s3://my-bucket/shipit/`"),
            );
            return None;
        };
        let store = self.text(store_s, "artifacts.store")?;
        let (bucket, prefix) = match parse_store(store.expose()) {
            Ok(p) => p,
            Err(e) => {
                self.problem(
                    store_s,
                    format!("`artifacts.store`: {e}"),
                    Some("e.g. `store: s3://my-bucket/shipit/`"),
                );
                return None;
            }
        };
        let endpoint = match &a.endpoint {
            Some(s) => {
                let e = self.text(s, "artifacts.endpoint")?;
                let e = e.expose().trim_end_matches('/').to_owned();
                let ok = (e.starts_with("http://") || e.starts_with("https://"))
                    && reqwest::Url::parse(&e)
                        .is_ok_and(|u| u.path() == "/" && u.query().is_none());
                if !ok {
                    self.problem(
                        s,
                        format!(
                            "`artifacts.endpoint` must be `http(s)://host[:port]`, without a \
                             path; got `{e}`"
                        ),
                        Some("e.g. `endpoint: https://minio.internal:9000`"),
                    );
                    return None;
                }
                Some(e)
            }
            None => None,
        };
        let region = match &a.region {
            Some(s) => Some(self.text(s, "artifacts.region")?.expose().to_owned()),
            None => None,
        };
        let url_ttl = self.positive(&a.url_ttl, "artifacts.url_ttl", 15 * 60_000);
        if url_ttl.0 > std::time::Duration::from_secs(7 * 24 * 3600) {
            if let Some(s) = &a.url_ttl {
                self.problem(
                    s,
                    "`artifacts.url_ttl` must be at most 7 days (S3's limit)".into(),
                    None,
                );
            }
            return None;
        }
        Some(ArtifactsConfig {
            store: store.expose().to_owned(),
            bucket,
            prefix,
            endpoint,
            region,
            url_ttl: Duration(url_ttl.0),
        })
    }
}

/// `s3://bucket/prefix/` -> (bucket, `prefix/`).
pub fn parse_store(s: &str) -> Result<(String, String), String> {
    let rest = s
        .strip_prefix("s3://")
        .ok_or_else(|| format!("`{s}` is not an `s3://bucket/prefix/` URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !valid_bucket {
        return Err(format!(
            "`{bucket}` is not a bucket name (3-63 lowercase letters, digits, `-`, `.`)"
        ));
    }
    if prefix.contains("..") || prefix.starts_with('/') || prefix.contains(['?', '#', '\\']) {
        return Err(format!("`{prefix}` is not a usable key prefix"));
    }
    let prefix = if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_owned(), prefix))
}

#[cfg(test)]
mod tests {
    use super::parse_store;

    #[test]
    fn store_urls() {
        assert_eq!(
            parse_store("s3://my-bucket/shipit/"),
            Ok(("my-bucket".into(), "shipit/".into()))
        );
        assert_eq!(
            parse_store("s3://my-bucket"),
            Ok(("my-bucket".into(), "".into()))
        );
        assert_eq!(
            parse_store("s3://b.c.d/a/b"),
            Ok(("b.c.d".into(), "a/b/".into()))
        );
        assert!(parse_store("https://x/").is_err());
        assert!(parse_store("s3://UPPER/").is_err());
        assert!(parse_store("s3://ok-bucket/../x").is_err());
    }
}
