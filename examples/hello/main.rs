//! hello: the example app shipit deploys in its demo and end-to-end tests.
//!
//! A small real HTTP server: `GET /` answers `MESSAGE`, `GET /healthz` answers `ok`, and
//! `GET /stream?seconds=N` (default 5, at most 3600) is a long-lived answer for drain tests:
//! no content-length, a `tick <i>` line every 100 ms for N seconds (N*10 lines), then the
//! close. Each connection carries one request: it is answered, then closed.
//!
//! It reads `PORT` (default 8080) and `MESSAGE` from its environment (the release's
//! `.env`, through the unit's `EnvironmentFile=`) and stops cleanly on SIGTERM or SIGINT:
//! it stops accepting, gives the connections in flight `HELLO_GRACE_SECS` (default 5) to
//! finish, and exits 0.
//!
//! `HELLO_MODE` makes a deliberately broken release for the rollback tests and the demo:
//! `crash` exits at once with status 1, `unhealthy` starts but answers 500 on /healthz,
//! `errors5` answers 500 to exactly one `GET /` in 20 (the 20th, 40th...; /healthz stays
//! ok), `slow` answers every `GET /` after 300 ms. `HELLO_START_DELAY_MS=N` waits N ms before binding the port (a slow starter).
//!
//! `HELLO_PROTOCOL=echo` makes it a line echo server on PORT instead of HTTP: every line
//! read is written back, many per connection, until the client closes.
//!
//! `hello probe` is a health check command: it connects to 127.0.0.1:$PORT and asks
//! `GET /healthz` for a 200 (with `HELLO_PROTOCOL=echo`: sends `ping` and expects it
//! back). It exits 0 on success, else 1 with a one-line reason on stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

/// What every connection of the HTTP server shares.
#[derive(Clone)]
struct App {
    message: Rc<str>,
    healthy: bool,
    /// `HELLO_MODE=errors5`: one `GET /` in 20 fails.
    errors5: bool,
    /// `GET /` requests answered so far (for errors5).
    served: Rc<Cell<u64>>,
    /// `HELLO_MODE=slow`: every `GET /` waits 300 ms before its answer.
    slow: bool,
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn port() -> u16 {
    std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080)
}

fn echo_mode() -> bool {
    std::env::var("HELLO_PROTOCOL").as_deref() == Ok("echo")
}

fn main() -> std::io::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("probe") {
        match probe(port(), echo_mode()) {
            Ok(()) => std::process::exit(0),
            Err(why) => {
                eprintln!("hello probe: {why}");
                std::process::exit(1);
            }
        }
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve_main())
}

async fn serve_main() -> std::io::Result<()> {
    let mode = std::env::var("HELLO_MODE").unwrap_or_default();
    if mode == "crash" {
        eprintln!("hello: HELLO_MODE=crash, exiting");
        std::process::exit(1);
    }
    let port = port();
    let grace = Duration::from_secs(env_num("HELLO_GRACE_SECS", 5));
    let echo = echo_mode();
    let app = App {
        message: std::env::var("MESSAGE")
            .unwrap_or_else(|_| "hello from shipit".into())
            .into(),
        healthy: mode != "unhealthy",
        errors5: mode == "errors5",
        served: Rc::new(Cell::new(0)),
        slow: mode == "slow",
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let delay = Duration::from_millis(env_num("HELLO_START_DELAY_MS", 0));
    if !delay.is_zero() {
        println!("hello: starting in {} ms", delay.as_millis());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
    // `HELLO_BIND`: the address to listen on (the benchmark's in-place setup, reached
    // from outside the host); 127.0.0.1 by default.
    let bind = std::env::var("HELLO_BIND").unwrap_or_else(|_| "127.0.0.1".into());
    let listener = TcpListener::bind((bind.as_str(), port)).await?;
    let what = if echo { "echo" } else { "http" };
    println!("hello: listening on 127.0.0.1:{port} ({what})");

    let tasks = tokio::task::LocalSet::new();
    tasks
        .run_until(async {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        if echo {
                            tokio::task::spawn_local(echo_conn(stream));
                        } else {
                            tokio::task::spawn_local(serve(stream, app.clone()));
                        }
                    }
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                }
            }
        })
        .await;
    drop(listener);
    // Connections in flight get the grace period to finish.
    if tokio::time::timeout(grace, tasks).await.is_err() {
        println!("hello: grace period over, closing what is left");
    }
    println!("hello: stopped");
    Ok(())
}

/// The answer to one request: a status and a body, or a stream of `seconds` of ticks.
#[derive(Debug, PartialEq)]
enum Answer {
    Plain(&'static str, String),
    Stream(u64),
}

/// The stream's length asked for by a `/stream` query (`seconds=N`): default 5, at most
/// 3600; `None` for a value that is no number.
fn stream_seconds(query: &str) -> Option<u64> {
    let mut seconds = 5;
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("seconds=") {
            seconds = v.parse::<u64>().ok()?;
        }
    }
    Some(seconds.min(3600))
}

fn route(app: &App, path: &str) -> Answer {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    match path {
        "/healthz" if app.healthy => Answer::Plain("200 OK", "ok\n".into()),
        "/healthz" => Answer::Plain("500 Internal Server Error", "unhealthy\n".into()),
        "/" => {
            let n = app.served.get() + 1;
            app.served.set(n);
            if app.errors5 && n.is_multiple_of(20) {
                Answer::Plain("500 Internal Server Error", "error (errors5)\n".into())
            } else {
                Answer::Plain("200 OK", format!("{}\n", app.message))
            }
        }
        "/stream" => match stream_seconds(query) {
            Some(s) => Answer::Stream(s),
            None => Answer::Plain("400 Bad Request", "seconds: not a number\n".into()),
        },
        _ => Answer::Plain("404 Not Found", "not found\n".into()),
    }
}

async fn serve(mut stream: TcpStream, app: App) {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read the request head (bounded), then answer and close.
    while len < buf.len() {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf[len..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => len += n,
        }
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    if len == 0 {
        return;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    if app.slow && path == "/" {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    match route(&app, path) {
        Answer::Plain(status, body) => {
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
        Answer::Stream(seconds) => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for i in 1..=seconds * 10 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if stream
                    .write_all(format!("tick {i}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// One echo connection: each line read is written back, until EOF.
async fn echo_conn(stream: TcpStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if write.write_all(&line).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = write.shutdown().await;
}

/// `hello probe`: one health check of the app on 127.0.0.1:`port`.
fn probe(port: u16, echo: bool) -> Result<(), String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(5);
    let mut conn = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    conn.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let ask: &[u8] = if echo {
        b"ping\n"
    } else {
        b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    };
    conn.write_all(ask)
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut got = Vec::new();
    if echo {
        let mut byte = [0u8; 1];
        while got.len() < 64 && !got.ends_with(b"\n") {
            match conn.read(&mut byte) {
                Ok(0) => break,
                Ok(_) => got.push(byte[0]),
                Err(e) => return Err(read_error(addr, &e)),
            }
        }
        return if got == b"ping\n" {
            Ok(())
        } else {
            Err(format!(
                "{addr} echoed {:?}, not \"ping\\n\"",
                String::from_utf8_lossy(&got)
            ))
        };
    }
    conn.take(64 * 1024)
        .read_to_end(&mut got)
        .map_err(|e| read_error(addr, &e))?;
    let text = String::from_utf8_lossy(&got);
    let status = text.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else if status.is_empty() {
        Err(format!("{addr} closed without an answer to GET /healthz"))
    } else {
        Err(format!("GET /healthz on {addr}: {status}"))
    }
}

fn read_error(addr: std::net::SocketAddr, e: &std::io::Error) -> String {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    if matches!(e.kind(), WouldBlock | TimedOut) {
        format!("no answer from {addr} within 5 s")
    } else {
        format!("read from {addr}: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(mode: &str) -> App {
        App {
            message: "hi".into(),
            healthy: mode != "unhealthy",
            errors5: mode == "errors5",
            served: Rc::new(Cell::new(0)),
            slow: mode == "slow",
        }
    }

    fn status(a: Answer) -> &'static str {
        match a {
            Answer::Plain(s, _) => s,
            Answer::Stream(_) => "stream",
        }
    }

    #[test]
    fn stream_lengths() {
        assert_eq!(route(&app(""), "/stream"), Answer::Stream(5));
        assert_eq!(route(&app(""), "/stream?seconds=2"), Answer::Stream(2));
        assert_eq!(route(&app(""), "/stream?x=1&seconds=0"), Answer::Stream(0));
        assert_eq!(
            route(&app(""), "/stream?seconds=99999"),
            Answer::Stream(3600)
        );
        assert_eq!(
            status(route(&app(""), "/stream?seconds=x")),
            "400 Bad Request"
        );
    }

    #[test]
    fn errors5_fails_one_root_request_in_20() {
        let a = app("errors5");
        let failed = (0..100)
            .filter(|_| status(route(&a, "/")).starts_with("500"))
            .count();
        assert_eq!(failed, 5);
        assert_eq!(status(route(&a, "/healthz")), "200 OK");
        let healthy = app("");
        assert!((0..100).all(|_| status(route(&healthy, "/")) == "200 OK"));
    }
}
