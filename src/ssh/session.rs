//! One authenticated SSH connection and the channels opened on it: shell scripts
//! ([`Session::exec`]), scripts with a byte stream on their stdin
//! ([`Session::exec_with_data`]) and TCP tunnels to ports on the host
//! ([`Session::tunnel`]). Channels are independent, so
//! several can run at once on one `Session`.
//!
//! How scripts are sent: `exec` runs `sh -s` and writes the script to its stdin, then EOF,
//! rather than putting the script in the exec request. Long scripts never hit ARG_MAX, and
//! nothing of the script (paths, env values) shows up in the server's process list. The
//! script is wrapped as `{ <script> } </dev/null`: the shell must read the whole brace
//! group before it runs any of it, so a syntax error anywhere means nothing runs, and
//! commands in the script read /dev/null instead of swallowing the rest of the script.
//! The cost: the whole script is one compound command, and dash (Debian's `sh`) crashes
//! on one of more than about 100,000 commands; shipit's scripts are a few hundred lines.
//!
//! Output is read until the channel is closed, not until `exit-status` arrives: OpenSSH
//! may send the status before the last output, or the other way round.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use russh::client::Msg;
use russh::{Channel, ChannelMsg, ChannelOpenFailure, ChannelStream, Disconnect, Sig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::error::Error;
use super::handler::ClientHandle;

/// Bytes of stdout kept by [`Session::exec`]; more is dropped and flagged.
const STDOUT_LIMIT: usize = 16 * 1024 * 1024;
/// Lines and bytes of stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 40;
const STDERR_TAIL_BYTES: usize = 8 * 1024;
/// Size of each read from a data source and write into the channel; russh splits it
/// into packets and waits for window space as needed.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What a script did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status; `None` when the process died from a signal or sent none.
    pub status: Option<u32>,
    /// Signal name (`TERM`, `KILL`, ...) when the process was killed by one.
    pub signal: Option<String>,
    /// All of stdout (lossy UTF-8), up to 16 MiB.
    pub stdout: String,
    pub stdout_truncated: bool,
    /// The last lines of stderr (up to 40 lines / 8 KiB).
    pub stderr_tail: String,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0) && self.signal.is_none()
    }
}

/// The exec request of [`Session::exec_with_data`]: reads the script's length (20 bytes,
/// decimal) and the script from stdin, and runs it. GNU `head -c` never reads past its
/// count, so the data after the script stays on stdin.
pub const BOOTSTRAP: &str = "sh -c 'read -r n && s=$(head -c \"$n\") && eval \"$s\"'";

/// What [`BOOTSTRAP`] reads before the data: the script's length, then the script.
pub fn frame(script: &str) -> Vec<u8> {
    let body = format!("{{\n{script}\n}}\n").into_bytes();
    let mut head = format!("{:019}\n", body.len()).into_bytes();
    head.extend_from_slice(&body);
    head
}

/// What [`Session::exec_with_data`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataOutput {
    pub exec: ExecOutput,
    /// Bytes of data sent (the script not counted).
    pub bytes: u64,
    /// Whether all of the data went in before the script ended.
    pub complete: bool,
}

/// A direct-tcpip channel to a port on the host, as a byte stream. Dropping it closes
/// the channel.
pub struct Tunnel {
    inner: ChannelStream<Msg>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel").finish_non_exhaustive()
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Sends EOF to the far end (the tunnel can still be read).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How long [`Session::close`] waits for a connection to end after saying goodbye.
pub const GOODBYE_WAIT: Duration = Duration::from_secs(1);

/// One connection to one host. Keeps the jump-host connection (if any) alive under it.
pub struct Session {
    name: String,
    handle: ClientHandle,
    jump: Option<std::sync::Arc<Session>>,
    /// Whether tunnels were opened through this connection (it is a jump host's).
    carries_tunnels: AtomicBool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("name", &self.name)
            .field("jump", &self.jump)
            .finish()
    }
}

impl Session {
    pub(crate) fn new(
        name: String,
        handle: ClientHandle,
        jump: Option<std::sync::Arc<Session>>,
    ) -> Self {
        Session {
            name,
            handle,
            jump,
            carries_tunnels: AtomicBool::new(false),
        }
    }

    /// A tunnel to a target behind this jump host is open.
    pub(crate) fn tunnel_opened(&self) {
        self.carries_tunnels.store(true, Ordering::Relaxed);
    }

    pub(crate) fn handle(&self) -> &ClientHandle {
        &self.handle
    }

    /// The host's display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the connection has gone away (e.g. keepalives went unanswered).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Runs `script` with `sh` on the host, calling `on_line` for every line of stdout and
    /// stderr as it arrives (without the newline; lossy UTF-8). A non-zero exit status is
    /// not an error: check [`ExecOutput::success`].
    pub async fn exec(
        &self,
        script: &str,
        mut on_line: impl FnMut(Stream, &str) + Send,
    ) -> Result<ExecOutput, Error> {
        let what = "running a script";
        let mut channel = self.open_command("sh -s", what).await?;
        let input = format!("{{\n{script}\n}} </dev/null\n").into_bytes();
        let mut writer = channel.make_writer();
        let feed = async move {
            writer.write_all(&input).await.map_err(Fed::Remote)?;
            writer.shutdown().await.map_err(Fed::Remote)?;
            Ok::<u64, Fed>(input.len() as u64)
        };
        let (out, _fed) = self.collect(&mut channel, feed, what, &mut on_line).await?;
        Ok(ExecOutput {
            status: out.status,
            signal: out.signal,
            stdout: out.stdout.text(),
            stdout_truncated: out.stdout.truncated,
            stderr_tail: out.stderr.text(),
        })
    }

    /// Runs `script` like [`Session::exec`], with `data` on its stdin: one channel for a
    /// script and the bytes it consumes (e.g. unpacking an upload), so a deploy needs no
    /// second round trip. The exec request carries only [`BOOTSTRAP`], a fixed text that
    /// reads a 20-byte length line (`read`: no process) and exactly that many bytes of
    /// script from stdin and runs them; whatever the script then reads from stdin is `data`.
    /// (`sh -s` cannot do this: dash reads its script from a pipe in blocks, swallowing the
    /// data after it.)
    /// The script is wrapped in `{ }`, so a syntax error anywhere means nothing runs.
    /// `progress` gets the total of `data` bytes sent so far. If the script exits before
    /// reading all of `data`, that is not an error: [`DataOutput::complete`] says so, and
    /// the exit status says why.
    pub async fn exec_with_data<R>(
        &self,
        script: &str,
        mut data: R,
        mut progress: impl FnMut(u64) + Send,
        mut on_line: impl FnMut(Stream, &str) + Send,
    ) -> Result<DataOutput, Error>
    where
        R: AsyncRead + Unpin,
    {
        let what = "running a script with data";
        let mut channel = self.open_command(BOOTSTRAP, what).await?;
        let head = frame(script);
        let mut writer = channel.make_writer();
        let sent = AtomicU64::new(0);
        let feed = async {
            writer.write_all(&head).await.map_err(Fed::Remote)?;
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            let mut total = 0u64;
            loop {
                let n = data.read(&mut buf).await.map_err(Fed::Local)?;
                if n == 0 {
                    break;
                }
                writer.write_all(&buf[..n]).await.map_err(Fed::Remote)?;
                total += n as u64;
                sent.store(total, Ordering::Relaxed);
                progress(total);
            }
            writer.shutdown().await.map_err(Fed::Remote)?;
            Ok::<u64, Fed>(total)
        };
        let (out, fed) = self.collect(&mut channel, feed, what, &mut on_line).await?;
        let complete = match fed {
            Some(Ok(_)) => true,
            Some(Err(Fed::Local(source))) => {
                return Err(Error::Io {
                    host: self.name.clone(),
                    what: "reading the data to send".into(),
                    source,
                });
            }
            Some(Err(Fed::Remote(_))) | None => false,
        };
        Ok(DataOutput {
            exec: ExecOutput {
                status: out.status,
                signal: out.signal,
                stdout: out.stdout.text(),
                stdout_truncated: out.stdout.truncated,
                stderr_tail: out.stderr.text(),
            },
            bytes: sent.load(Ordering::Relaxed),
            complete,
        })
    }

    /// Opens a TCP connection from the host to `host:port` (usually `127.0.0.1` and the
    /// app's port), carried over this SSH connection.
    pub async fn tunnel(&self, host: &str, port: u16) -> Result<Tunnel, Error> {
        let channel = self
            .handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|e| Error::Tunnel {
                host: self.name.clone(),
                to: format!("{host}:{port}"),
                reason: open_failure(&e),
            })?;
        Ok(Tunnel {
            inner: channel.into_stream(),
        })
    }

    /// Opens a Unix socket on the host (HAProxy's admin socket), carried over this SSH
    /// connection (`direct-streamlocal`; the server opens it as the login user).
    pub async fn unix_socket(&self, path: &str) -> Result<Tunnel, Error> {
        let channel = self
            .handle
            .channel_open_direct_streamlocal(path)
            .await
            .map_err(|e| Error::Tunnel {
                host: self.name.clone(),
                to: path.to_owned(),
                reason: open_failure(&e),
            })?;
        Ok(Tunnel {
            inner: channel.into_stream(),
        })
    }

    /// Says goodbye to the server (and to the jump hosts under this connection that no
    /// other connection shares), then waits, at most [`GOODBYE_WAIT`], for the connection
    /// to end: the goodbye is on the wire before the process exits, and the server logs a
    /// disconnect, not a reset.
    ///
    /// A jump host's connection first makes one round trip (a keepalive, answered; as
    /// long again, at most). Its targets' goodbyes went through it: sshd answers only
    /// after it has taken in everything sent before, and writes that out to the targets
    /// before it reads the next packet, this goodbye. Told goodbye at once, it would exit
    /// with their last bytes unsent, and the targets would log nothing. What is left: the
    /// jump host's sshd closes the tunnels once the targets are gone, and those closes
    /// can reach this connection after it has gone (russh ends it as soon as the goodbye
    /// is out). Then that sshd, writing them, logs a broken pipe instead of the goodbye,
    /// about one command in twenty-five here. Harmless: everything is done by then.
    pub async fn close(self) -> Result<(), Error> {
        let Session {
            name,
            handle,
            jump,
            carries_tunnels,
        } = self;
        if carries_tunnels.into_inner() && !handle.is_closed() {
            let _ = tokio::time::timeout(GOODBYE_WAIT, handle.send_ping()).await;
        }
        let result = if handle.is_closed() {
            Ok(())
        } else {
            handle
                .disconnect(Disconnect::ByApplication, "", "en")
                .await
                .map_err(|source| Error::Channel {
                    host: name.clone(),
                    what: "closing the connection".into(),
                    source,
                })
        };
        if result.is_ok() {
            // The handle is the connection's task: it ends once the goodbye is written.
            let _ = tokio::time::timeout(GOODBYE_WAIT, handle).await;
        }
        // A jump host shared with other targets stays open until the last one closes.
        // Exactly one of the targets sharing it gets it (`into_inner`, unlike `try_unwrap`,
        // cannot fail for all of them at once).
        if let Some(jump) = jump.and_then(std::sync::Arc::into_inner) {
            Box::pin(jump.close()).await?;
        }
        result
    }

    async fn open_command(&self, command: &str, what: &str) -> Result<Channel<Msg>, Error> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|source| self.channel_error(what, source))?;
        channel
            .exec(true, command)
            .await
            .map_err(|source| self.channel_error(what, source))?;
        Ok(channel)
    }

    fn channel_error(&self, what: &str, source: russh::Error) -> Error {
        if self.handle.is_closed() {
            Error::ConnectionLost {
                host: self.name.clone(),
                what: what.to_owned(),
            }
        } else {
            Error::Channel {
                host: self.name.clone(),
                what: what.to_owned(),
                source,
            }
        }
    }

    /// Feeds the channel with `feed` while reading everything the command sends, until
    /// the channel closes. Returns what was read and how feeding went (`None`: the
    /// channel closed before the input was all sent).
    async fn collect<F>(
        &self,
        channel: &mut Channel<Msg>,
        feed: F,
        what: &str,
        on_line: &mut (dyn FnMut(Stream, &str) + Send),
    ) -> Result<(Collected, Option<Result<u64, Fed>>), Error>
    where
        F: Future<Output = Result<u64, Fed>>,
    {
        let mut feed = std::pin::pin!(feed);
        let mut fed: Option<Result<u64, Fed>> = None;
        let mut out = Collected::default();
        let mut stdout_lines = Lines::default();
        let mut stderr_lines = Lines::default();
        let mut closed = false;
        loop {
            tokio::select! {
                result = &mut feed, if fed.is_none() => fed = Some(result),
                msg = channel.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => {
                        out.stdout.push(&data);
                        stdout_lines.feed(&data, |l| on_line(Stream::Stdout, l));
                    }
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                        stderr_lines.feed(&data, |l| {
                            out.stderr.push(l);
                            on_line(Stream::Stderr, l);
                        });
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => out.status = Some(exit_status),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        out.signal = Some(signal_text(&signal_name));
                    }
                    Some(ChannelMsg::Failure) => {
                        return Err(Error::Io {
                            host: self.name.clone(),
                            what: what.to_owned(),
                            source: std::io::Error::other("the server refused to run the command"),
                        });
                    }
                    Some(ChannelMsg::Close) => {
                        closed = true;
                        break;
                    }
                    None => break,
                    Some(_) => {}
                },
            }
        }
        stdout_lines.finish(|l| on_line(Stream::Stdout, l));
        stderr_lines.finish(|l| {
            out.stderr.push(l);
            on_line(Stream::Stderr, l);
        });
        if !closed && out.status.is_none() && out.signal.is_none() && self.handle.is_closed() {
            return Err(Error::ConnectionLost {
                host: self.name.clone(),
                what: what.to_owned(),
            });
        }
        Ok((out, fed))
    }
}

/// How feeding a channel's stdin failed.
enum Fed {
    /// Reading our own source failed.
    Local(std::io::Error),
    /// Writing into the channel failed (it was closed).
    Remote(#[allow(dead_code)] std::io::Error),
}

#[derive(Default)]
struct Collected {
    status: Option<u32>,
    signal: Option<String>,
    stdout: Captured,
    stderr: Tail,
}

/// Why the server would not open a forwarding channel, in words.
pub(crate) fn open_failure(e: &russh::Error) -> String {
    match e {
        russh::Error::ChannelOpenFailure(reason) => match reason {
            ChannelOpenFailure::ConnectFailed => {
                "the connection failed there (nothing listening, or not reachable from that host)"
                    .into()
            }
            ChannelOpenFailure::AdministrativelyProhibited => {
                "forbidden by the server (is `AllowTcpForwarding` off?)".into()
            }
            ChannelOpenFailure::ResourceShortage => "the server is out of resources".into(),
            ChannelOpenFailure::UnknownChannelType => {
                "the server does not support TCP forwarding".into()
            }
            ChannelOpenFailure::Other { reason, .. } => reason.clone(),
        },
        other => other.to_string(),
    }
}

fn signal_text(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

/// Stdout kept in full up to [`STDOUT_LIMIT`].
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Captured {
    fn push(&mut self, data: &[u8]) {
        let room = STDOUT_LIMIT.saturating_sub(self.bytes.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// The last lines of a stream, bounded in lines and bytes.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: &str) {
        let line: String = line.chars().take(STDERR_TAIL_BYTES).collect();
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.lines.len() > STDERR_TAIL_LINES || self.bytes > STDERR_TAIL_BYTES {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.len(),
                None => break,
            }
        }
    }

    fn text(&self) -> String {
        let mut s = String::with_capacity(self.bytes + self.lines.len());
        for line in &self.lines {
            s.push_str(line);
            s.push('\n');
        }
        s
    }
}

/// Splits a byte stream into lines across chunk boundaries.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    fn feed(&mut self, data: &[u8], mut emit: impl FnMut(&str)) {
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..i]);
            emit_line(&self.partial, &mut emit);
            self.partial.clear();
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.partial.is_empty() {
            emit_line(&self.partial, &mut emit);
            self.partial.clear();
        }
    }
}

fn emit_line(bytes: &[u8], emit: &mut impl FnMut(&str)) {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    emit(&String::from_utf8_lossy(bytes));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks() {
        let mut lines = Lines::default();
        let mut got = Vec::new();
        lines.feed(b"one\ntw", |l| got.push(l.to_owned()));
        lines.feed(b"o\r\n\nthr", |l| got.push(l.to_owned()));
        lines.finish(|l| got.push(l.to_owned()));
        assert_eq!(got, ["one", "two", "", "thr"]);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut tail = Tail::default();
        for i in 0..100 {
            tail.push(&format!("line {i}"));
        }
        let text = tail.text();
        assert_eq!(text.lines().count(), STDERR_TAIL_LINES);
        assert!(text.ends_with("line 99\n"));
        assert!(text.starts_with("line 60\n"));
        let mut big = Tail::default();
        big.push(&"x".repeat(100_000));
        big.push("last");
        assert!(big.text().len() <= STDERR_TAIL_BYTES + 2);
        assert!(big.text().ends_with("last\n"));
    }

    #[test]
    fn captured_stdout_is_bounded() {
        let mut c = Captured::default();
        c.push(&vec![b'a'; STDOUT_LIMIT - 1]);
        assert!(!c.truncated);
        c.push(b"bc");
        assert!(c.truncated);
        assert_eq!(c.bytes.len(), STDOUT_LIMIT);
    }
}
