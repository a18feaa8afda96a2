//! What every HTTP client of mastfetch shares: how it names itself, how long it waits, how it
//! reads a `Content-Range`, and the loop that writes a response body into a file.
//!
//! Owns the user agent, what a download tells about bytes ([`Tally`]), the timeouts (each with its reason), `Content-Range` parsing and
//! [`body_to_file`], the stall-timed body loop both downloaders use (the S3 engine's ranged
//! GETs, `transfer`, and MAST downloads, `https`). The loop tells a stalled server, a broken
//! connection, an over-long body and a failed local write apart ([`BodyFault`]), so that each
//! caller can say which one happened (a full disk is never reported as a network failure). It
//! does not retry (`retry`) and does not know S3 or MAST.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use futures::Stream;

use crate::retry::{RetryPolicy, TooSlow, Watchdog};

/// How every request names the tool (server logs, the archive's support staff).
pub(crate) const USER_AGENT: &str = concat!("mastfetch/", env!("CARGO_PKG_VERSION"));

/// Connection set-up on a healthy network takes milliseconds. Ten seconds rides out three
/// lost SYNs (Linux resends at 1, 3 and 7 s) and still gives up on a black hole quickly, so
/// that the request is retried on a new connection.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for the answer (status and headers) to an S3 request. A listing page or a HEAD
/// can take seconds on a loaded server, never a minute; a GET's body is timed by the stall
/// watchdog instead, so this never cuts a long download.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait for a whole MAST catalog answer. A `Mast.Caom.Products` page of ten
/// observations takes a few seconds, a big level-3 observation tens of seconds; two minutes
/// lets those finish while a request that hangs is still given up (and retried) well before a
/// user would give up on it. MAST downloads have no such limit: their bodies are timed by the
/// stall watchdog, as S3's are.
pub(crate) const CATALOG_TIMEOUT: Duration = Duration::from_secs(120);

/// What a download tells about bytes as they happen, so that its caller can show progress
/// without the downloader knowing how.
#[derive(Debug, Clone, Copy)]
pub enum Tally {
    /// Bytes already in the temporary file from an earlier run, kept.
    Resumed(u64),
    /// Bytes received and written in this run.
    Received(u64),
    /// Bytes counted before that no longer are (the server restarted the file).
    GaveBack(u64),
    /// Bytes a server copied on our behalf (a copy into the user's bucket): done, never
    /// received here.
    Copied(u64),
}

/// `bytes 0-99/1234` -> (0, 99, 1234).
pub(crate) fn parse_content_range(s: &str) -> Option<(u64, u64, u64)> {
    let rest = s.trim().strip_prefix("bytes")?.trim();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((
        start.trim().parse().ok()?,
        end.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

/// Why reading a body stopped before its end.
#[derive(Debug)]
pub(crate) enum ReadFault<E> {
    /// Too few bytes within one watchdog window (see `retry::Watchdog`).
    TooSlow(TooSlow),
    /// The connection broke (a reset, a truncated chunk): the transport's own error.
    Broken(E),
}

/// A whole (small) body, read through the stall watchdog.
pub(crate) async fn read_body<S, B, E>(
    policy: &RetryPolicy,
    mut body: S,
) -> Result<Vec<u8>, ReadFault<E>>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    let mut dog = Watchdog::new(policy);
    let mut out = Vec::new();
    while let Some(chunk) = dog.next(&mut body).await.map_err(ReadFault::TooSlow)? {
        out.extend_from_slice(chunk.map_err(ReadFault::Broken)?.as_ref());
    }
    Ok(out)
}

/// Why writing a body into a file stopped before its end.
#[derive(Debug)]
pub(crate) enum BodyFault<E> {
    /// The server or the connection failed.
    Read(ReadFault<E>),
    /// More bytes came than were asked for.
    TooLong { limit: u64 },
    /// The local write failed (a full disk, a removed folder): not the network's fault.
    Disk(io::Error),
}

/// Write `body` into `file` from `offset` on, as chunks arrive, through the stall watchdog;
/// `on_chunk` sees each chunk once it is written (digests, byte counts). At most `limit` bytes
/// are taken when given. Returns the bytes written, and why it stopped if not at the body's
/// end: a caller resumes from `offset` plus what was written.
pub(crate) async fn body_to_file<S, B, E>(
    policy: &RetryPolicy,
    body: &mut S,
    file: &File,
    offset: u64,
    limit: Option<u64>,
    mut on_chunk: impl FnMut(&[u8]),
) -> (u64, Result<(), BodyFault<E>>)
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    let mut got = 0u64;
    // A stalled or dripping connection is given up, so the caller retries on a new one.
    let mut dog = Watchdog::new(policy);
    loop {
        let chunk = match dog.next(body).await {
            Err(slow) => return (got, Err(BodyFault::Read(ReadFault::TooSlow(slow)))),
            Ok(None) => return (got, Ok(())),
            Ok(Some(Err(e))) => return (got, Err(BodyFault::Read(ReadFault::Broken(e)))),
            Ok(Some(Ok(chunk))) => chunk,
        };
        let chunk = chunk.as_ref();
        let n = chunk.len() as u64;
        if let Some(limit) = limit.filter(|&l| got + n > l) {
            return (got, Err(BodyFault::TooLong { limit }));
        }
        if let Err(e) = file.write_all_at(chunk, offset + got) {
            return (got, Err(BodyFault::Disk(e)));
        }
        got += n;
        on_chunk(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(parse_content_range("bytes 0-99/1234"), Some((0, 99, 1234)));
        assert_eq!(parse_content_range("bytes 5-5/6"), Some((5, 5, 6)));
        assert_eq!(parse_content_range("bytes */1234"), None);
        assert_eq!(parse_content_range("junk"), None);
    }

    fn quick_stall() -> RetryPolicy {
        RetryPolicy {
            stall: Duration::from_millis(200),
            ..RetryPolicy::default()
        }
    }

    #[tokio::test]
    async fn a_dripping_body_is_too_slow_and_a_quick_one_is_not() {
        let drip = futures::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some((Ok::<_, std::io::Error>(vec![b'x']), n + 1))
        });
        let err = read_body(&quick_stall(), Box::pin(drip)).await.unwrap_err();
        assert!(matches!(err, ReadFault::TooSlow(TooSlow { got, .. }) if got < 20));
        let quick = futures::stream::iter((0..3).map(|_| Ok::<_, std::io::Error>(vec![7u8; 10])));
        let body = read_body(&quick_stall(), quick)
            .await
            .map_err(|_| ())
            .unwrap();
        assert_eq!(body.len(), 30);
    }

    fn chunks(
        parts: &[&'static [u8]],
    ) -> impl Stream<Item = Result<&'static [u8], String>> + Unpin {
        futures::stream::iter(parts.iter().map(|p| Ok(*p)).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn a_body_lands_at_its_offset_and_each_fault_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let policy = RetryPolicy::default();
        let mut seen = 0;
        let mut body = chunks(&[b"abc", b"de"]);
        let (n, end) =
            body_to_file(&policy, &mut body, &file, 2, Some(5), |c| seen += c.len()).await;
        assert!(end.is_ok());
        assert_eq!((n, seen), (5, 5));
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0abcde");

        // One byte more than asked: stopped before writing it.
        let mut body = chunks(&[b"abc", b"def"]);
        let (n, end) = body_to_file(&policy, &mut body, &file, 0, Some(5), |_| {}).await;
        assert_eq!(n, 3);
        assert!(matches!(end, Err(BodyFault::TooLong { limit: 5 })));

        // A broken connection after some bytes: those are kept and counted.
        let mut body = futures::stream::iter(vec![Ok(&b"xy"[..]), Err("reset".to_string())]);
        let (n, end) = body_to_file(&policy, &mut body, &file, 0, None, |_| {}).await;
        assert_eq!(n, 2);
        assert!(matches!(end, Err(BodyFault::Read(ReadFault::Broken(e))) if e == "reset"));

        // A file that cannot be written is the disk's fault, not the connection's.
        let read_only = std::fs::File::open(&path).unwrap();
        let mut body = chunks(&[b"abc"]);
        let (n, end) = body_to_file(&policy, &mut body, &read_only, 0, None, |_| {}).await;
        assert_eq!(n, 0);
        assert!(matches!(end, Err(BodyFault::Disk(_))));
    }
}
