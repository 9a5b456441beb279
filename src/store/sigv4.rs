//! AWS Signature Version 4 for S3: the `Authorization` header of the deployer's own
//! requests (HEAD, PUT, multipart), and presigned GET URLs handed to hosts. Pure
//! functions of their inputs (time included), checked against AWS's published examples.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::remote::layout::compact;

/// The payload hash of a request whose body is not signed (presigned URLs).
pub const UNSIGNED: &str = "UNSIGNED-PAYLOAD";

/// What signs: an access key, its secret, and a session token for temporary credentials.
#[derive(Clone)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret and the token never reach a log.
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// One request to sign. `path` is the object's path as sent (`/bucket/key`), already
/// percent-encoded by [`encode_path`]; `query` unencoded pairs.
pub struct Request<'a> {
    pub method: &'a str,
    /// `host` or `host:port`, as the `Host` header carries it.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Vec<(String, String)>,
    /// Headers besides `host` to sign (names lowercase).
    pub headers: Vec<(String, String)>,
    pub payload_sha256: &'a str,
}

/// RFC 3986 unreserved characters stay, everything else is `%XX`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path with each segment encoded and the slashes kept.
pub fn encode_path(path: &str) -> String {
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn sha256_hex(data: &str) -> String {
    hex::encode(Sha256::digest(data.as_bytes()))
}

fn canonical_query(query: &[(String, String)]) -> String {
    let mut q: Vec<(String, String)> = query.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    q.sort();
    q.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The signature of `r` at `now` (seconds since the epoch) in `region`, and the signed
/// header names.
fn signature(c: &Credentials, region: &str, r: &Request, now: u64) -> (String, String) {
    let amz_date = compact(now);
    let date = &amz_date[..8];
    let mut headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .chain([("host".to_owned(), r.host.to_owned())])
        .collect();
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
        r.method,
        r.path,
        canonical_query(&r.query),
        r.payload_sha256
    );
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(&canonical)
    );
    let key = hmac(format!("AWS4{}", c.secret_key).as_bytes(), date);
    let key = hmac(&key, region);
    let key = hmac(&key, "s3");
    let key = hmac(&key, "aws4_request");
    (hex::encode(hmac(&key, &to_sign)), signed)
}

/// The headers that authenticate `r` (add them to the request as they are):
/// `x-amz-date`, `x-amz-content-sha256`, the session token if any, `authorization`.
pub fn authorize(c: &Credentials, region: &str, r: &Request, now: u64) -> Vec<(String, String)> {
    let amz_date = compact(now);
    let mut added = vec![
        ("x-amz-date".to_owned(), amz_date.clone()),
        (
            "x-amz-content-sha256".to_owned(),
            r.payload_sha256.to_owned(),
        ),
    ];
    if let Some(t) = &c.session_token {
        added.push(("x-amz-security-token".to_owned(), t.clone()));
    }
    let full = Request {
        method: r.method,
        host: r.host,
        path: r.path,
        query: r.query.clone(),
        headers: r.headers.iter().cloned().chain(added.clone()).collect(),
        payload_sha256: r.payload_sha256,
    };
    let (sig, signed) = signature(c, region, &full, now);
    added.push((
        "authorization".to_owned(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{}/{region}/s3/aws4_request, SignedHeaders={signed}, \
             Signature={sig}",
            c.access_key,
            &amz_date[..8]
        ),
    ));
    added
}

/// The query string of a presigned GET of `path` on `host`, valid `expires` seconds from
/// `now`.
pub fn presign_get(
    c: &Credentials,
    region: &str,
    host: &str,
    path: &str,
    now: u64,
    expires: u64,
) -> String {
    let amz_date = compact(now);
    let mut query = vec![
        ("X-Amz-Algorithm".to_owned(), "AWS4-HMAC-SHA256".to_owned()),
        (
            "X-Amz-Credential".to_owned(),
            format!(
                "{}/{}/{region}/s3/aws4_request",
                c.access_key,
                &amz_date[..8]
            ),
        ),
        ("X-Amz-Date".to_owned(), amz_date.clone()),
        ("X-Amz-Expires".to_owned(), expires.to_string()),
        ("X-Amz-SignedHeaders".to_owned(), "host".to_owned()),
    ];
    if let Some(t) = &c.session_token {
        query.push(("X-Amz-Security-Token".to_owned(), t.clone()));
    }
    let r = Request {
        method: "GET",
        host,
        path,
        query: query.clone(),
        headers: Vec::new(),
        payload_sha256: UNSIGNED,
    };
    let (sig, _) = signature(c, region, &r, now);
    format!("{}&X-Amz-Signature={sig}", canonical_query(&query))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's example credentials and time (S3 API reference, "Authenticating Requests").
    fn example() -> (Credentials, u64) {
        let c = Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        // 2013-05-24T00:00:00Z
        (c, 1_369_353_600)
    }

    #[test]
    fn presigned_get_matches_aws_documentation() {
        let (c, now) = example();
        let q = presign_get(
            &c,
            "us-east-1",
            "examplebucket.s3.amazonaws.com",
            "/test.txt",
            now,
            86_400,
        );
        assert!(
            q.ends_with(
                "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
            ),
            "{q}"
        );
        assert!(q.contains("X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1"));
    }

    #[test]
    fn header_authorization_matches_aws_documentation() {
        // "GET Object" example: a range request for the first 10 bytes of test.txt.
        let (c, now) = example();
        let r = Request {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            query: Vec::new(),
            headers: vec![("range".into(), "bytes=0-9".into())],
            payload_sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        };
        let h = authorize(&c, "us-east-1", &r, now);
        let auth = &h.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/\
             aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert!(!format!("{c:?}").contains("EXAMPLEKEY"));
    }

    #[test]
    fn encoding() {
        assert_eq!(encode("a b/c~"), "a%20b%2Fc~");
        assert_eq!(
            encode_path("/bucket/dir/a b.tar.gz"),
            "/bucket/dir/a%20b.tar.gz"
        );
    }
}
