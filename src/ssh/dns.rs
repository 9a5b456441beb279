//! Name lookups, once per name and port for the whole process, retried. A fleet deploy
//! asks for hundreds of names at the same moment; a resolver that drops some of that
//! burst answers "temporary failure", which must not fail a host. A name asked again (a
//! host in two roles, a jump host shared by many targets, a reconnect) is not looked up
//! again. Failures are not kept: the next asker tries afresh.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::OnceCell;

/// Lookups per name before its error is final (the first and two retries).
const TRIES: u32 = 3;
const FIRST_WAIT: Duration = Duration::from_millis(200);

type Cell = Arc<OnceCell<Vec<SocketAddr>>>;

fn cells() -> &'static Mutex<HashMap<(String, u16), Cell>> {
    static CELLS: OnceLock<Mutex<HashMap<(String, u16), Cell>>> = OnceLock::new();
    CELLS.get_or_init(Default::default)
}

/// The addresses of `host:port`: an IP address as it is, a name from the process's
/// cache or looked up (see [`resolve_with`]).
pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let cell = {
        let mut cells = cells().lock().unwrap_or_else(|p| p.into_inner());
        cells.entry((host.to_owned(), port)).or_default().clone()
    };
    resolve_with(&cell, FIRST_WAIT, || async move {
        tokio::net::lookup_host((host, port))
            .await
            .map(Iterator::collect)
    })
    .await
}

/// `lookup` once into `cell` (callers at the same time wait for the one lookup), tried
/// up to [`TRIES`] times, waiting `first_wait` and then twice as long each time; an empty
/// answer counts as an error.
pub async fn resolve_with<F, Fut>(
    cell: &OnceCell<Vec<SocketAddr>>,
    first_wait: Duration,
    lookup: F,
) -> io::Result<Vec<SocketAddr>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = io::Result<Vec<SocketAddr>>>,
{
    cell.get_or_try_init(|| async {
        let mut wait = first_wait;
        let mut tries = 0;
        loop {
            tries += 1;
            let error = match lookup().await {
                Ok(addrs) if !addrs.is_empty() => return Ok(addrs),
                Ok(_) => io::Error::new(io::ErrorKind::NotFound, "no addresses"),
                Err(e) => e,
            };
            if tries >= TRIES {
                return Err(error);
            }
            tracing::debug!("lookup failed ({error}); again in {wait:?}");
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    })
    .await
    .cloned()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn addr() -> SocketAddr {
        "192.0.2.7:22".parse().unwrap()
    }

    #[tokio::test]
    async fn a_failing_lookup_is_retried_and_its_answer_kept() {
        let calls = AtomicU32::new(0);
        let cell = OnceCell::new();
        let lookup = || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 | 1 => Err(io::Error::other("Temporary failure in name resolution")),
                    _ => Ok(vec![addr()]),
                }
            }
        };
        assert_eq!(resolve_with(&cell, MS, lookup).await.unwrap(), [addr()]);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Asked again: the kept answer, no lookup.
        assert_eq!(resolve_with(&cell, MS, lookup).await.unwrap(), [addr()]);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_name_that_never_resolves_fails_after_three_tries_and_is_not_kept() {
        let calls = AtomicU32::new(0);
        let cell = OnceCell::new();
        let lookup = || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(Vec::new()) }
        };
        let e = resolve_with(&cell, MS, lookup).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(resolve_with(&cell, MS, lookup).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 6, "a failure is tried afresh");
    }

    #[tokio::test]
    async fn addresses_are_taken_as_they_are() {
        let got = resolve("10.1.2.3", 2222).await.unwrap();
        assert_eq!(got, ["10.1.2.3:2222".parse::<SocketAddr>().unwrap()]);
    }
}
