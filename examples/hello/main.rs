//! hello: the example app shipit deploys in its demo and end-to-end tests.
//!
//! A small real HTTP server: `GET /` answers `MESSAGE`, `GET /healthz` answers `ok`. It
//! reads `PORT` (default 8080) and `MESSAGE` from its environment (the release's `.env`,
//! through the unit's `EnvironmentFile=`) and stops cleanly on SIGTERM or SIGINT:
//! it stops accepting, lets requests in flight finish, and exits 0.
//!
//! `HELLO_MODE` makes a deliberately broken release for the rollback tests and the demo:
//! `crash` exits at once with status 1, `unhealthy` starts but answers 500 on /healthz.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mode = std::env::var("HELLO_MODE").unwrap_or_default();
    if mode == "crash" {
        eprintln!("hello: HELLO_MODE=crash, exiting");
        std::process::exit(1);
    }
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let message = std::env::var("MESSAGE").unwrap_or_else(|_| "hello from shipit".into());
    let healthy = mode != "unhealthy";
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("hello: listening on 127.0.0.1:{port}");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let tasks = tokio::task::LocalSet::new();
    tasks
        .run_until(async {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            let message = message.clone();
                            tokio::task::spawn_local(serve(stream, message, healthy));
                        }
                    }
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                }
            }
        })
        .await;
    drop(listener);
    // Requests in flight get a moment to finish.
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks).await;
    println!("hello: stopped");
    Ok(())
}

async fn serve(mut stream: TcpStream, message: String, healthy: bool) {
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
    let head = String::from_utf8_lossy(&buf[..len]);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/healthz" if healthy => ("200 OK", "ok\n".to_owned()),
        "/healthz" => ("500 Internal Server Error", "unhealthy\n".to_owned()),
        "/" => ("200 OK", format!("{message}\n")),
        _ => ("404 Not Found", "not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
