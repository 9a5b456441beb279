//! Tests of the HTTP client: the request text, response parsing, `get` over a stream.

use super::*;

fn done(raw: &str) -> Response {
    match parse(raw.as_bytes(), true) {
        Ok(Some(r)) => r,
        other => panic!("{raw:?}: {other:?}"),
    }
}

fn malformed(raw: &[u8], eof: bool) -> String {
    match parse(raw, eof) {
        Err(HttpError::Malformed(m)) => m,
        other => panic!("{raw:?}: {other:?}"),
    }
}

#[test]
fn request_has_host_and_connection_close() {
    let r = request("127.0.0.1", 8080, "/healthz?x=1");
    assert!(r.starts_with("GET /healthz?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
    assert!(r.contains("\r\nConnection: close\r\n"));
    assert!(r.ends_with("\r\n\r\n"));
    assert!(request("localhost", 80, "/").contains("\r\nHost: localhost\r\n"));
    assert!(request("::1", 9, "/").contains("\r\nHost: [::1]:9\r\n"));
}

#[test]
fn content_length_body() {
    let r = done("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(r.status, 200);
    assert_eq!(r.reason, "OK");
    assert_eq!(r.body, b"ok");
    assert!(!r.truncated);
    assert_eq!(r.status_line(), "200 OK");
}

#[test]
fn content_length_is_complete_before_eof_and_ignores_extra() {
    let raw = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 3\r\n\r\nbad and more";
    let r = parse(raw, false).unwrap().unwrap();
    assert_eq!(r.status_line(), "500 Internal Server Error");
    assert_eq!(r.body, b"bad");
    assert!(
        parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", false)
            .unwrap()
            .is_none()
    );
    assert!(
        malformed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", true)
            .contains("closed after 2 of the 5 body bytes")
    );
}

#[test]
fn incomplete_head_needs_more() {
    for raw in [
        "",
        "HTT",
        "HTTP/1.1 200 OK\r\n",
        "HTTP/1.1 200 OK\r\nA: b\r\n\r",
    ] {
        assert!(parse(raw.as_bytes(), false).unwrap().is_none(), "{raw:?}");
    }
    assert!(matches!(parse(b"", true), Err(HttpError::Closed)));
    assert!(malformed(b"HTTP/1.1 200 OK\r\n", true).contains("middle of the response headers"));
}

#[test]
fn body_until_close() {
    let raw = "HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6\r\n\r\nhello\nworld";
    assert!(parse(raw.as_bytes(), false).unwrap().is_none());
    assert_eq!(done(raw).body, b"hello\nworld");
    // HTTP/1.0 servers (python's http.server) and no reason phrase.
    let r = done("HTTP/1.0 404\r\n\r\n");
    assert_eq!(r.status_line(), "404");
    assert!(r.body.is_empty());
}

#[test]
fn bare_lf_line_ends() {
    let r = done("HTTP/1.1 200 OK\nContent-Length: 2\n\nok");
    assert_eq!(r.body, b"ok");
}

#[test]
fn chunked_body() {
    let raw = concat!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "2\r\nok\r\n7;ext=1\r\n, fine!\r\n0\r\nTrailer: x\r\n\r\n"
    );
    let r = done(raw);
    assert_eq!(r.body, b"ok, fine!");
    assert!(!r.truncated);
    // Complete without EOF as soon as the last chunk arrives.
    let r = parse(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!(r.body, b"0123456789");
    // Split anywhere: more is needed.
    let full = raw.as_bytes();
    let body_start = raw.find("\r\n\r\n").unwrap() + 4;
    for cut in body_start..raw.find("0\r\nTrailer").unwrap() {
        assert!(
            parse(&full[..cut], false).unwrap().is_none(),
            "cut at {cut}"
        );
        assert!(
            malformed(&full[..cut], true).contains("middle of the chunked body"),
            "cut at {cut}"
        );
    }
}

#[test]
fn chunked_wins_over_content_length() {
    let r = done(concat!(
        "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n",
        "2\r\nok\r\n0\r\n\r\n"
    ));
    assert_eq!(r.body, b"ok");
}

#[test]
fn bad_chunks_are_malformed() {
    assert!(
        malformed(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n",
            false
        )
        .contains("bad chunk size")
    );
    assert!(
        malformed(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokay\r\n",
            false
        )
        .contains("longer than its announced size")
    );
    let long = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        "1".repeat(2000)
    );
    assert!(malformed(long.as_bytes(), false).contains("bad chunk size line"));
}

#[test]
fn bodies_are_bounded() {
    let big = "x".repeat(BODY_LIMIT + 10);
    // By Content-Length: done as soon as the limit is reached, without EOF.
    let raw = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{big}",
        big.len()
    );
    let r = parse(&raw.as_bytes()[..raw.len() - 10], false)
        .unwrap()
        .unwrap();
    assert_eq!(r.body.len(), BODY_LIMIT);
    assert!(r.truncated);
    // Until close.
    let raw = format!("HTTP/1.1 200 OK\r\n\r\n{big}");
    let r = parse(raw.as_bytes(), false).unwrap().unwrap();
    assert_eq!(r.body.len(), BODY_LIMIT);
    assert!(r.truncated);
    // Chunked, in one huge chunk and in many small ones.
    let raw = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}",
        big.len()
    );
    let r = parse(raw.as_bytes(), false).unwrap().unwrap();
    assert_eq!(r.body.len(), BODY_LIMIT);
    assert!(r.truncated);
    let mut raw = String::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..(BODY_LIMIT / 1000 + 2) {
        raw.push_str(&format!("3e8\r\n{}\r\n", "y".repeat(1000)));
    }
    let r = parse(raw.as_bytes(), false).unwrap().unwrap();
    assert_eq!(r.body.len(), BODY_LIMIT);
    assert!(r.truncated);
    // Exactly at the limit is not truncated.
    let exact = "z".repeat(BODY_LIMIT);
    let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY_LIMIT}\r\n\r\n{exact}");
    assert!(!done(&raw).truncated);
}

#[test]
fn heads_are_bounded() {
    let raw = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(HEAD_LIMIT));
    assert!(malformed(raw.as_bytes(), false).contains("longer than 16 KiB"));
}

#[test]
fn interim_responses_are_skipped() {
    let r = done(concat!(
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
        "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    ));
    assert_eq!(r.status, 201);
}

#[test]
fn no_body_statuses() {
    let r = parse(
        b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
}

#[test]
fn not_http_is_said_early() {
    // An SSH server on the port: its banner has no blank line, so do not wait for one.
    let m = malformed(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n", false);
    assert_eq!(
        m,
        r#"not an HTTP response (it starts with "SSH-2.0-OpenSSH_9.2p1 Debian\r\n")"#
    );
    assert!(malformed(b"ok\n", true).starts_with("not an HTTP response"));
    assert!(malformed(b"HTTP/2 200\r\n\r\n", true).starts_with("bad HTTP status line"));
    assert!(malformed(b"HTTP/1.1 20 OK\r\n\r\n", true).starts_with("bad HTTP status line"));
    assert!(malformed(b"HTTP/1.1 700 Odd\r\n\r\n", true).starts_with("bad HTTP status line"));
    assert!(
        malformed(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", true)
            .contains("bad Content-Length")
    );
    assert!(
        malformed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            true
        )
        .contains("conflicting")
    );
    // Repeated equal lengths are fine.
    assert_eq!(
        done("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok").body,
        b"ok"
    );
}

#[tokio::test]
async fn get_over_a_stream() {
    let (mut client, mut server) = tokio::io::duplex(1024);
    let serve = async move {
        let mut req = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = server.read(&mut req).await.unwrap();
            got.extend_from_slice(&req[..n]);
        }
        // Dribble the response in small pieces.
        for piece in [
            "HTTP/1.1 200 OK\r\nTransfer-",
            "Encoding: chunked\r\n\r\n",
            "2\r\no",
            "k\r\n",
            "0\r\n\r\n",
        ] {
            server.write_all(piece.as_bytes()).await.unwrap();
            tokio::task::yield_now().await;
        }
        String::from_utf8(got).unwrap()
    };
    let (response, request) = tokio::join!(get(&mut client, "127.0.0.1", 8080, "/healthz"), serve);
    let response = response.unwrap();
    assert_eq!(response.body, b"ok");
    assert!(request.starts_with("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
}

#[tokio::test]
async fn get_when_the_server_closes_at_once() {
    let (mut client, server) = tokio::io::duplex(1024);
    drop(server);
    let err = get(&mut client, "h", 80, "/").await.unwrap_err();
    assert!(
        matches!(err, HttpError::Io(_) | HttpError::Closed),
        "{err:?}"
    );
}
