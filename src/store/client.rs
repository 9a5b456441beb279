//! The few S3 requests shipit makes, signed with [`super::sigv4`]: HEAD (is the artifact
//! there already?), PUT (one request up to [`MULTIPART_OVER`]), multipart upload above
//! it, and presigned GET URLs for hosts.

use std::time::Duration;

use reqwest::{Method, Url};
use sha2::{Digest, Sha256};

use super::sigv4::{self, Credentials, Request};

/// Artifacts larger than this go up in parts.
pub const MULTIPART_OVER: u64 = 64 << 20;
/// The size of each part of a multipart upload (S3's minimum is 5 MiB).
pub const PART: usize = 16 << 20;

/// A bucket, where it is, and how to sign for it.
pub struct Bucket {
    /// Requests go to `base` (scheme, host, port; with `path_style`, `/<bucket>` too).
    base: Url,
    path_style: bool,
    pub bucket: String,
    pub region: String,
    creds: Credentials,
    http: reqwest::Client,
}

/// What HEAD said of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub size: u64,
    /// The `x-amz-meta-sha256` shipit stores with each artifact.
    pub sha256: Option<String>,
}

impl Bucket {
    /// `endpoint`: an S3-compatible server (path-style requests, `http(s)://host[:port]`);
    /// `None`: AWS S3 in `region` (virtual-hosted style).
    pub fn new(
        endpoint: Option<&str>,
        bucket: &str,
        region: &str,
        creds: Credentials,
    ) -> Result<Bucket, String> {
        let (base, path_style) = match endpoint {
            Some(e) => (
                Url::parse(e).map_err(|err| format!("`artifacts.endpoint` `{e}`: {err}"))?,
                true,
            ),
            None => (
                Url::parse(&format!("https://{bucket}.s3.{region}.amazonaws.com"))
                    .map_err(|e| e.to_string())?,
                false,
            ),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Bucket {
            base,
            path_style,
            bucket: bucket.to_owned(),
            region: region.to_owned(),
            creds,
            http,
        })
    }

    /// `host[:port]` as the Host header carries it.
    fn host(&self) -> String {
        let host = self.base.host_str().unwrap_or_default();
        match self.base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        }
    }

    /// The object's path on the wire, encoded.
    fn path(&self, key: &str) -> String {
        if self.path_style {
            sigv4::encode_path(&format!("/{}/{key}", self.bucket))
        } else {
            sigv4::encode_path(&format!("/{key}"))
        }
    }

    fn url(&self, path: &str, query: &str) -> String {
        let origin = self.base.origin().ascii_serialization();
        if query.is_empty() {
            format!("{origin}{path}")
        } else {
            format!("{origin}{path}?{query}")
        }
    }

    /// A presigned GET of `key`, valid for `ttl`. A bearer credential until it expires:
    /// never printed.
    pub fn presign_get(&self, key: &str, ttl: Duration) -> String {
        let path = self.path(key);
        let q = sigv4::presign_get(
            &self.creds,
            &self.region,
            &self.host(),
            &path,
            crate::remote::layout::now(),
            ttl.as_secs().max(1),
        );
        self.url(&path, &q)
    }

    async fn send(
        &self,
        method: Method,
        key: &str,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, String> {
        let payload = hex::encode(Sha256::digest(&body));
        let path = self.path(key);
        let host = self.host();
        let req = Request {
            method: method.as_str(),
            host: &host,
            path: &path,
            query: query.clone(),
            headers: headers.clone(),
            payload_sha256: &payload,
        };
        let auth = sigv4::authorize(
            &self.creds,
            &self.region,
            &req,
            crate::remote::layout::now(),
        );
        let q: Vec<String> = query
            .iter()
            .map(|(k, v)| {
                if v.is_empty() && k == "uploads" {
                    k.clone()
                } else {
                    format!("{}={}", sigv4::encode(k), sigv4::encode(v))
                }
            })
            .collect();
        let mut r = self
            .http
            .request(method.clone(), self.url(&path, &q.join("&")));
        for (k, v) in headers.iter().chain(&auth) {
            r = r.header(k, v);
        }
        let resp = r
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{} {}: {}", method, self.url(&path, ""), e.without_url()))?;
        Ok(resp)
    }

    /// The object `key`, if it exists.
    pub async fn head(&self, key: &str) -> Result<Option<Head>, String> {
        let r = self
            .send(Method::HEAD, key, Vec::new(), Vec::new(), Vec::new())
            .await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(refused("HEAD", key, r.status(), ""));
        }
        let h = r.headers();
        Ok(Some(Head {
            size: h
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            sha256: h
                .get("x-amz-meta-sha256")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }))
    }

    /// Upload `body` as `key`, recording `sha256` with it.
    pub async fn put(&self, key: &str, body: Vec<u8>, sha256: &str) -> Result<(), String> {
        let meta = vec![("x-amz-meta-sha256".to_owned(), sha256.to_owned())];
        let r = self.send(Method::PUT, key, Vec::new(), meta, body).await?;
        check(r, "PUT", key).await.map(|_| ())
    }

    /// Upload the file at `path` as `key` in parts of [`PART`] bytes.
    pub async fn put_multipart(
        &self,
        key: &str,
        path: &std::path::Path,
        sha256: &str,
    ) -> Result<(), String> {
        use tokio::io::AsyncReadExt;
        let meta = vec![("x-amz-meta-sha256".to_owned(), sha256.to_owned())];
        let uploads = vec![("uploads".to_owned(), String::new())];
        let r = self
            .send(Method::POST, key, uploads, meta, Vec::new())
            .await?;
        let text = check(r, "POST ?uploads", key).await?;
        let id = xml_value(&text, "UploadId").ok_or("no UploadId in the store's answer")?;
        let result: Result<Vec<String>, String> = async {
            let mut file = tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let mut etags = Vec::new();
            for n in 1.. {
                let mut part = vec![0u8; PART];
                let mut len = 0;
                while len < PART {
                    let got = file
                        .read(&mut part[len..])
                        .await
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    if got == 0 {
                        break;
                    }
                    len += got;
                }
                if len == 0 {
                    break;
                }
                part.truncate(len);
                let q = vec![
                    ("partNumber".to_owned(), n.to_string()),
                    ("uploadId".to_owned(), id.clone()),
                ];
                let r = self.send(Method::PUT, key, q, Vec::new(), part).await?;
                let etag = r
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                check(r, "PUT part", key).await?;
                etags.push(etag.ok_or("a part's answer has no ETag")?);
                if len < PART {
                    break;
                }
            }
            Ok(etags)
        }
        .await;
        let etags = match result {
            Ok(e) => e,
            Err(e) => {
                let q = vec![("uploadId".to_owned(), id.clone())];
                let _ = self
                    .send(Method::DELETE, key, q, Vec::new(), Vec::new())
                    .await;
                return Err(e);
            }
        };
        let mut body = String::from("<CompleteMultipartUpload>");
        for (i, e) in etags.iter().enumerate() {
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{e}</ETag></Part>",
                i + 1
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let q = vec![("uploadId".to_owned(), id)];
        let r = self
            .send(Method::POST, key, q, Vec::new(), body.into_bytes())
            .await?;
        let text = check(r, "POST ?uploadId", key).await?;
        if text.contains("<Error>") {
            return Err(format!("completing the upload of {key}: {text}"));
        }
        Ok(())
    }
}

/// The body of a successful answer, else why it failed.
async fn check(r: reqwest::Response, what: &str, key: &str) -> Result<String, String> {
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(text)
    } else {
        Err(refused(what, key, status, &text))
    }
}

fn refused(what: &str, key: &str, status: reqwest::StatusCode, body: &str) -> String {
    let code = xml_value(body, "Code").unwrap_or_default();
    let message = xml_value(body, "Message").unwrap_or_default();
    let hint = match status.as_u16() {
        401 | 403 => {
            "; check the deployer's credentials and that they may s3:PutObject and \
             s3:GetObject under the prefix"
        }
        404 => "; check `artifacts.store` (does the bucket exist?)",
        _ => "",
    };
    format!("the store refused {what} {key}: {status} {code} {message}{hint}").replace("  ", " ")
}

/// The text of the first `<tag>...</tag>` in `xml`.
fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    #[test]
    fn paths_and_presigned_urls() {
        let b = Bucket::new(Some("http://10.0.0.2:9000"), "bkt", "us-east-1", creds()).unwrap();
        assert_eq!(b.host(), "10.0.0.2:9000");
        assert_eq!(
            b.path("shipit/hello/ab.tar.gz"),
            "/bkt/shipit/hello/ab.tar.gz"
        );
        let url = b.presign_get("a b.tar.gz", Duration::from_secs(900));
        assert!(url.starts_with("http://10.0.0.2:9000/bkt/a%20b.tar.gz?X-Amz-Algorithm="));
        assert!(url.contains("X-Amz-Expires=900") && url.contains("X-Amz-Signature="));
        assert!(!url.contains("EXAMPLEKEY"));
        let aws = Bucket::new(None, "bkt", "eu-west-1", creds()).unwrap();
        assert_eq!(aws.host(), "bkt.s3.eu-west-1.amazonaws.com");
        assert_eq!(aws.path("k"), "/k");
    }

    #[test]
    fn errors_name_the_code_and_what_to_do() {
        let body = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        let e = refused("PUT", "k", reqwest::StatusCode::FORBIDDEN, body);
        assert!(e.contains("403") && e.contains("AccessDenied") && e.contains("s3:PutObject"));
        assert_eq!(
            xml_value("<a><UploadId>x1</UploadId></a>", "UploadId"),
            Some("x1".into())
        );
    }
}
