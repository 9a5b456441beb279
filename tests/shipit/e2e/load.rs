//! Load for the zero-downtime tests: traffic that runs while shipit deploys, and counts
//! every request, stream and connection that did not get its full, clean answer.
//!
//! - [`HttpLoad`]: steady keep-alive HTTP load from Debian's `hey` (`apt-get install hey`),
//!   stopped with SIGINT, on which hey finishes the requests in flight and prints its report.
//! - [`Streams`]: long-lived `GET /stream?seconds=S` answers of the example app, each
//!   reopened when it ends, every one checked for all its ticks and a clean close.
//! - [`EchoLoad`]: short and long-lived connections to the example app's echo protocol
//!   (`HELLO_PROTOCOL=echo`), for the TCP mode.
//!
//! Each runs inside a network namespace (`netns`: a name under /run/netns, e.g. the
//! testbed's `client_netns`), or, with `None`, in the caller's own (for local tests).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a connect, or a read or write that should make progress, may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Moves the calling thread into network namespace `netns` (`None`: stays where it is).
pub fn enter_netns(netns: Option<&str>) {
    let Some(ns) = netns else { return };
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid namespace fd; it only changes this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

fn spawn_in<T: Send + 'static>(
    netns: Option<&str>,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let netns = netns.map(str::to_owned);
    std::thread::spawn(move || {
        enter_netns(netns.as_deref());
        f()
    })
}

/// Whether `program` is an executable file on `PATH`.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

// ------------------------------------------------------------------------------ HTTP

/// `hey`'s final report, every request it sent accounted for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpReport {
    /// Requests sent: the answered ones plus the errors (checked against hey's rate).
    pub total: u64,
    /// Answers by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// hey's "Error distribution": requests with no answer (refused, reset, timeout...).
    pub errors: Vec<(String, u64)>,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl HttpReport {
    /// Requests that failed: answers other than 2xx, and errors.
    pub fn failed(&self) -> u64 {
        let bad: u64 = self
            .by_status
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum();
        bad + self.errors.iter().map(|(_, n)| n).sum::<u64>()
    }

    /// Parses hey's summary output. Fails on output without a summary, and when the
    /// answers and errors it lists do not add up to the requests its rate implies
    /// (hey keeps the status of its first million answers only).
    pub fn parse(text: &str) -> Result<HttpReport, String> {
        let mut report = HttpReport::default();
        let (mut secs, mut rps) = (None, None);
        let mut section = "";
        for line in text.lines() {
            if !line.starts_with(' ') && line.trim_end().ends_with(':') {
                section = line.trim_end().trim_end_matches(':');
                continue;
            }
            let line = line.trim();
            let bad = || format!("hey's report: cannot read {line:?} (in {section})");
            match section {
                "Summary" => {
                    if let Some(v) = line.strip_prefix("Total:") {
                        let v = v.trim().trim_end_matches("secs").trim();
                        secs = Some(v.parse::<f64>().map_err(|_| bad())?);
                    } else if let Some(v) = line.strip_prefix("Requests/sec:") {
                        rps = Some(v.trim().parse::<f64>().map_err(|_| bad())?);
                    }
                }
                "Latency distribution" => {
                    let Some((pct, rest)) = line.split_once("% in ") else {
                        continue;
                    };
                    let v = rest.trim().trim_end_matches("secs").trim();
                    let ms = v.parse::<f64>().map_err(|_| bad())? * 1000.0;
                    match pct {
                        "50" => report.p50_ms = ms,
                        "99" => report.p99_ms = ms,
                        _ => {}
                    }
                }
                "Status code distribution" | "Error distribution" if !line.is_empty() => {
                    let (count, rest) = line
                        .strip_prefix('[')
                        .and_then(|l| l.split_once(']'))
                        .ok_or_else(bad)?;
                    let rest = rest.trim();
                    if section == "Error distribution" {
                        let n = count.parse::<u64>().map_err(|_| bad())?;
                        report.errors.push((rest.to_owned(), n));
                    } else {
                        let status = count.parse::<u16>().map_err(|_| bad())?;
                        let n = rest.trim_end_matches("responses").trim();
                        let n = n.parse::<u64>().map_err(|_| bad())?;
                        *report.by_status.entry(status).or_default() += n;
                    }
                }
                _ => {}
            }
        }
        let (Some(secs), Some(rps)) = (secs, rps) else {
            return Err(format!("no summary in hey's output:\n{text}"));
        };
        report.total = report.by_status.values().sum::<u64>()
            + report.errors.iter().map(|(_, n)| n).sum::<u64>();
        let sent = (secs * rps).round();
        if (sent - report.total as f64).abs() > 1.0 {
            return Err(format!(
                "hey's report lists {} requests, its rate says {sent}:\n{text}",
                report.total
            ));
        }
        Ok(report)
    }
}

/// Steady HTTP load: `hey` with `workers` keep-alive connections, each sending
/// `qps_per_worker` requests a second, until [`HttpLoad::stop`].
pub struct HttpLoad {
    child: Option<Child>,
    started: Instant,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    what: String,
}

impl HttpLoad {
    /// The zero-downtime test's load: 10 workers of 20 requests a second (200/s).
    pub fn steady(netns: Option<&str>, url: &str) -> HttpLoad {
        HttpLoad::start(netns, url, 10, 20)
    }

    /// Starts hey against `url` (e.g. `http://10.200.1.11:8080/`). Panics when hey is not
    /// installed.
    pub fn start(netns: Option<&str>, url: &str, workers: u32, qps_per_worker: u32) -> HttpLoad {
        assert!(
            on_path("hey"),
            "hey is not installed: the HTTP load is Debian's hey (apt-get install hey)"
        );
        let hey = [
            "hey",
            "-z",
            "24h",
            "-c",
            &workers.to_string(),
            "-q",
            &qps_per_worker.to_string(),
            "-t",
            "10",
            "-disable-compression",
            url,
        ];
        let mut cmd = match netns {
            // `ip netns exec` execs hey in its place: the child's pid is hey's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).args(hey);
                c
            }
            None => {
                let mut c = Command::new(hey[0]);
                c.args(&hey[1..]);
                c
            }
        };
        let what = hey.join(" ");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let read_all = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let stdout = read_all(Box::new(child.stdout.take().unwrap()));
        let stderr = read_all(Box::new(child.stderr.take().unwrap()));
        HttpLoad {
            child: Some(child),
            started: Instant::now(),
            stdout: Some(stdout),
            stderr: Some(stderr),
            what,
        }
    }

    /// SIGINT to hey, which lets the requests in flight finish (at most its 10 s request
    /// timeout) and prints its report; the parsed report. Panics when there is none.
    pub fn stop(mut self) -> HttpReport {
        // hey catches SIGINT once its runtime is up: not in its first milliseconds.
        let up = Duration::from_millis(500);
        if let Some(rest) = up.checked_sub(self.started.elapsed()) {
            std::thread::sleep(rest);
        }
        let mut child = self.child.take().unwrap();
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        let early = child.try_wait().unwrap();
        if early.is_none() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not stop within 30 s of SIGINT", self.what);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = self.stdout.take().unwrap().join().unwrap();
        let err = self.stderr.take().unwrap().join().unwrap();
        if let Some(early) = early {
            panic!("{} ended by itself ({early}):\n{out}{err}", self.what);
        }
        HttpReport::parse(&out)
            .unwrap_or_else(|e| panic!("{} ({status}): {e}\nstderr: {err}", self.what))
    }
}

impl Drop for HttpLoad {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------- streams

/// What became of the streams: how many got every tick and a clean close, and why each
/// other one did not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamsReport {
    pub completed: u64,
    /// One line per stream that was cut (or never opened): why, ticks, elapsed time.
    pub cut: Vec<String>,
}

/// `n` long-lived `GET /stream?seconds=S` connections, each reopened when it ends, until
/// [`Streams::stop`].
pub struct Streams {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<StreamsReport>>,
}

impl Streams {
    pub fn start(netns: Option<&str>, addr: SocketAddr, n: usize, seconds: u64) -> Streams {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                spawn_in(netns, move || {
                    let mut report = StreamsReport::default();
                    while !stop.load(Ordering::Relaxed) {
                        match one_stream(addr, seconds) {
                            Ok(()) => report.completed += 1,
                            Err(why) => {
                                report.cut.push(why);
                                // No busy loop against a port that refuses.
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                    }
                    report
                })
            })
            .collect();
        Streams { stop, threads }
    }

    /// Opens no more streams, waits for those in progress to end (at most S seconds and
    /// the read timeout), and reports them all.
    pub fn stop(self) -> StreamsReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = StreamsReport::default();
        for t in self.threads {
            let r = t.join().expect("a stream thread panicked");
            all.completed += r.completed;
            all.cut.extend(r.cut);
        }
        all
    }
}

/// One stream, start to end: `Ok` when it got its S*10 ticks (±1) and a clean close.
fn one_stream(addr: SocketAddr, seconds: u64) -> Result<(), String> {
    let started = Instant::now();
    let expected = seconds * 10;
    let mut ticks = 0u64;
    let cut = |why: String, ticks: u64| {
        let s = started.elapsed().as_secs_f64();
        format!("{why} after {ticks} of {expected} ticks, {s:.1} s")
    };
    let mut conn = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| cut(format!("connect to {addr}: {e}"), 0))?;
    let set = conn
        .set_read_timeout(Some(IO_TIMEOUT))
        .and(conn.set_write_timeout(Some(IO_TIMEOUT)));
    set.map_err(|e| cut(format!("socket options: {e}"), 0))?;
    let ask = format!(
        "GET /stream?seconds={seconds} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    );
    conn.write_all(ask.as_bytes())
        .map_err(|e| cut(format!("send the request: {e}"), 0))?;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    let mut head = true;
    let mut status = None;
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Err(e) => return Err(cut(format!("read: {}", io_why(&e)), ticks)),
            Ok(0) => break,
            Ok(_) if !line.ends_with('\n') => {
                return Err(cut(format!("closed inside a line ({line:?})"), ticks));
            }
            Ok(_) if head && status.is_none() => status = Some(line.trim_end().to_owned()),
            Ok(_) if head => head = line.trim_end() != "",
            Ok(_) if line == format!("tick {}\n", ticks + 1) => ticks += 1,
            Ok(_) => return Err(cut(format!("unexpected line {line:?}"), ticks)),
        }
    }
    let status = status.unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(cut(format!("answer {status:?}, not 200"), ticks));
    }
    if head {
        return Err(cut("closed inside the answer's head".into(), ticks));
    }
    if ticks.abs_diff(expected) > 1 {
        return Err(cut("closed early".into(), ticks));
    }
    Ok(())
}

fn io_why(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            format!("nothing for {} s (timed out)", IO_TIMEOUT.as_secs())
        }
        _ => e.to_string(),
    }
}

// ------------------------------------------------------------------------------- echo

/// What became of the echo load's connections.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EchoReport {
    /// Connections that got every line back and a clean close (short ones, and
    /// long-lived ones closed at `stop`).
    pub ok: u64,
    /// Connects refused.
    pub refused: u64,
    /// Connections reset by the peer (or a write into a reset one).
    pub reset: u64,
    /// Everything else that went wrong, one line each.
    pub other: Vec<String>,
}

impl EchoReport {
    pub fn failed(&self) -> u64 {
        self.refused + self.reset + self.other.len() as u64
    }

    fn add(&mut self, r: EchoReport) {
        self.ok += r.ok;
        self.refused += r.refused;
        self.reset += r.reset;
        self.other.extend(r.other);
    }

    fn count(&mut self, result: Result<(), EchoFail>) {
        match result {
            Ok(()) => self.ok += 1,
            Err(EchoFail::Refused) => self.refused += 1,
            Err(EchoFail::Reset) => self.reset += 1,
            Err(EchoFail::Other(why)) => self.other.push(why),
        }
    }
}

enum EchoFail {
    Refused,
    Reset,
    Other(String),
}

fn echo_fail(what: &str, e: &std::io::Error) -> EchoFail {
    match e.kind() {
        ErrorKind::ConnectionRefused => EchoFail::Refused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            EchoFail::Reset
        }
        _ => EchoFail::Other(format!("{what}: {}", io_why(e))),
    }
}

/// Load on a line echo server: `per_sec` short connections a second (connect, 3 lines
/// sent and echoed, close) and `long_lived` connections that send a line every 100 ms,
/// until [`EchoLoad::stop`].
pub struct EchoLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<EchoReport>>,
}

/// Threads the short connections are spread over, so one slow connection does not hold
/// up the rate.
const SHORT_WORKERS: u32 = 4;

impl EchoLoad {
    pub fn start(netns: Option<&str>, addr: SocketAddr, per_sec: u32, long_lived: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let workers = SHORT_WORKERS.min(per_sec);
        let period = Duration::from_secs(1) / per_sec.max(1);
        let t0 = Instant::now();
        for k in 0..workers {
            let stop = stop.clone();
            threads.push(spawn_in(netns, move || {
                let mut report = EchoReport::default();
                let mut next = t0 + period * k;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else if now - next > period * workers {
                        next = now; // fell behind: keep the rate, no burst
                    }
                    next += period * workers;
                    i += 1;
                    report.count(short_echo(addr, &format!("w{k}-{i}")));
                }
                report
            }));
        }
        for k in 0..long_lived {
            let stop = stop.clone();
            threads.push(spawn_in(netns, move || {
                let mut report = EchoReport::default();
                while !stop.load(Ordering::Relaxed) {
                    let result = long_echo(addr, &format!("long{k}"), &stop);
                    let failed = result.is_err();
                    report.count(result);
                    if failed {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                report
            }));
        }
        EchoLoad { stop, threads }
    }

    /// Stops the load (long-lived connections are closed cleanly) and reports it.
    pub fn stop(self) -> EchoReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = EchoReport::default();
        for t in self.threads {
            all.add(t.join().expect("an echo thread panicked"));
        }
        all
    }
}

fn echo_connect(addr: SocketAddr) -> Result<(TcpStream, BufReader<TcpStream>), EchoFail> {
    let conn = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| echo_fail(&format!("connect to {addr}"), &e))?;
    let set = conn
        .set_read_timeout(Some(IO_TIMEOUT))
        .and(conn.set_write_timeout(Some(IO_TIMEOUT)));
    set.map_err(|e| echo_fail("socket options", &e))?;
    let read = conn
        .try_clone()
        .map_err(|e| echo_fail("dup the socket", &e))?;
    Ok((conn, BufReader::new(read)))
}

/// Sends `line` (with its newline) and reads the same line back.
fn echo_line(
    conn: &mut TcpStream,
    r: &mut BufReader<TcpStream>,
    line: &str,
) -> Result<(), EchoFail> {
    conn.write_all(line.as_bytes())
        .map_err(|e| echo_fail("send a line", &e))?;
    let mut back = String::new();
    match r.read_line(&mut back) {
        Err(e) => Err(echo_fail("read the echo", &e)),
        Ok(_) if back == line => Ok(()),
        Ok(0) => Err(EchoFail::Other(format!(
            "closed by the server before echoing {line:?}"
        ))),
        Ok(_) => Err(EchoFail::Other(format!("sent {line:?}, got {back:?}"))),
    }
}

/// Half-closes and expects the server to close too, with nothing more said.
fn echo_close(conn: &TcpStream, r: &mut BufReader<TcpStream>) -> Result<(), EchoFail> {
    conn.shutdown(Shutdown::Write)
        .map_err(|e| echo_fail("half-close", &e))?;
    let mut rest = Vec::new();
    match r.read_to_end(&mut rest) {
        Err(e) => Err(echo_fail("wait for the close", &e)),
        Ok(0) => Ok(()),
        Ok(_) => Err(EchoFail::Other(format!(
            "unexpected {:?} before the close",
            String::from_utf8_lossy(&rest)
        ))),
    }
}

fn short_echo(addr: SocketAddr, id: &str) -> Result<(), EchoFail> {
    let (mut conn, mut r) = echo_connect(addr)?;
    for n in 1..=3 {
        echo_line(&mut conn, &mut r, &format!("{id} line {n}\n"))?;
    }
    echo_close(&conn, &mut r)
}

/// One long-lived connection: a line every 100 ms until `stop`, then a clean close.
fn long_echo(addr: SocketAddr, id: &str, stop: &AtomicBool) -> Result<(), EchoFail> {
    let started = Instant::now();
    let (mut conn, mut r) = echo_connect(addr)?;
    let mut n = 0u64;
    let with_context = |fail: EchoFail, n: u64| match fail {
        EchoFail::Other(why) => {
            let mut why = why;
            let s = started.elapsed().as_secs_f64();
            let _ = write!(why, " (long-lived, after {n} lines, {s:.1} s)");
            EchoFail::Other(why)
        }
        other => other,
    };
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        echo_line(&mut conn, &mut r, &format!("{id} line {n}\n"))
            .map_err(|f| with_context(f, n))?;
        std::thread::sleep(Duration::from_millis(100));
    }
    echo_close(&conn, &mut r).map_err(|f| with_context(f, n))
}

#[cfg(test)]
mod tests {
    use super::HttpReport;

    const HEY: &str = "\nSummary:\n  Total:\t3.0269 secs\n  Slowest:\t0.0049 secs\n  \
        Requests/sec:\t198.2238\n  \n  Total data:\t10740 bytes\n\n\
        Response time histogram:\n  0.000 [1]\t|\n  0.001 [220]\t|■■■■■\n\n\n\
        Latency distribution:\n  10% in 0.0004 secs\n  50% in 0.0007 secs\n  \
        99% in 0.0047 secs\n\nDetails (average, fastest, slowest):\n  \
        DNS+dialup:\t0.0002 secs, 0.0001 secs, 0.0049 secs\n\n\
        Status code distribution:\n  [200]\t560 responses\n  [500]\t30 responses\n\n\
        Error distribution:\n  [10]\tGet \"http://127.0.0.1:1/\": dial tcp \
        127.0.0.1:1: connect: connection refused\n\n";

    #[test]
    fn parses_hey_reports() {
        let r = HttpReport::parse(HEY).unwrap();
        assert_eq!(r.total, 600);
        assert_eq!(
            r.by_status.into_iter().collect::<Vec<_>>(),
            [(200, 560), (500, 30)]
        );
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].1, 10);
        assert!(r.errors[0].0.ends_with("connection refused"));
        assert!((r.p50_ms - 0.7).abs() < 1e-9 && (r.p99_ms - 4.7).abs() < 1e-9);
        let missing = HEY.replace("[500]\t30", "[500]\t20");
        let e = HttpReport::parse(&missing).unwrap_err();
        assert!(e.contains("lists 590 requests, its rate says 600"), "{e}");
        assert!(HttpReport::parse("Error: oops\n").is_err());
    }
}
