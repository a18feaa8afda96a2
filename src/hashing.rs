//! Digests of downloaded files, computed off the download path and many files at a time.
//!
//! Only what is inherently serial comes here: a file's bytes are hashed once, front to back, by
//! a few worker threads that read it back from the page cache: SHA-256 with `get --sha256` (or
//! when the archive's full-object checksum is a SHA-256), and MD5 where the object's ETag is a
//! single-part MD5 and nothing cheaper was published. Digests that combine (CRCs, the MD5s of
//! multipart upload parts) are taken on arrival instead (`checksum`). One MD5 stream is serial (a block depends on the one
//! before), so MD5 was the largest CPU cost of a download (1.95 CPU-s per GiB here, more than
//! everything else together). Independent files are not serial: a worker takes the files that
//! have unhashed bytes, up to three SIMD groups at once (md5-many interleaves up to three
//! chains), and feeds their MD5s side by side through the SIMD lanes of `md5-many` (0.17 CPU-s
//! per GiB with 16 files, 0.30 with 8, against 1.95 for the md-5 crate, on this machine).
//! Under load the backlog is what fills the lanes; when idle a file is hashed alone.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use md5_many::{Md5Many, Md5State};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// Bytes read back per file and round. A worker holds one such buffer per file of its largest
/// round (at most three SIMD groups: 48 files, 3 MiB, with AVX-512); 64 KiB reads keep the
/// syscall cost under 0.05 CPU-s per GiB.
const CHUNK: usize = 64 << 10;
/// How long a worker waits for more small files to hash alongside (see `worker`). In the
/// small bench set (~2,600 files/s) most rounds then held 16 to 48 files.
const GATHER: Duration = Duration::from_millis(5);

/// The worker threads and the queue of files with bytes to hash.
pub(crate) struct HashPool {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    workers: usize,
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Arc<Stream>>,
    closed: bool,
}

/// Which serial digests a stream computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Want {
    pub md5: bool,
    pub sha256: bool,
}

impl Want {
    pub(crate) fn any(self) -> bool {
        self.md5 || self.sha256
    }
}

/// A stream's digests, of the bytes it hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digests {
    pub sha256: Option<[u8; 32]>,
    pub md5: Option<[u8; 16]>,
}

/// One file's digests as its bytes become hashable.
pub(crate) struct Stream {
    file: File,
    /// What to compute, decided when the first bytes are ready (what the archive published
    /// may only be known from a response).
    want: OnceLock<Want>,
    state: Mutex<State>,
    /// Bytes hashed so far, or `None` once reading the file back failed.
    hashed: watch::Sender<Option<u64>>,
}

struct State {
    sha256: Sha256,
    md5: Md5State,
    hashed: u64,
    /// Bytes that may be hashed: a prefix of the file that is on disk.
    ready: u64,
    /// In the queue or in a worker's hands: whoever holds it is the only one hashing it.
    queued: bool,
    error: Option<io::Error>,
}

impl HashPool {
    /// Start `workers` threads (at least one).
    pub(crate) fn new(workers: usize) -> HashPool {
        let workers = workers.max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            workers,
        });
        for i in 0..workers {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("mastfetch-hash-{i}"))
                .spawn(move || worker(&shared))
                .expect("can start a hashing thread");
        }
        HashPool { shared }
    }

    /// A new stream reading `file` (its own handle: the caller keeps writing through theirs).
    pub(crate) fn stream(&self, file: File) -> Arc<Stream> {
        let (hashed, _) = watch::channel(Some(0));
        Arc::new(Stream {
            file,
            want: OnceLock::new(),
            state: Mutex::new(State {
                sha256: Sha256::new(),
                md5: Md5State::new(),
                hashed: 0,
                ready: 0,
                queued: false,
                error: None,
            }),
            hashed,
        })
    }

    /// The first `upto` bytes of the stream's file are on disk and may be hashed. `want` says
    /// which digests; the first call with bytes to hash decides (what the archive published
    /// may only be known once a response came).
    pub(crate) fn ready(&self, stream: &Arc<Stream>, upto: u64, want: Want) {
        if upto > 0 {
            let _ = stream.want.set(want);
        }
        let mut st = stream.state.lock().unwrap();
        st.ready = st.ready.max(upto);
        if st.queued || st.hashed >= st.ready || st.error.is_some() {
            return;
        }
        st.queued = true;
        drop(st);
        self.shared
            .queue
            .lock()
            .unwrap()
            .ready
            .push_back(stream.clone());
        self.shared.wake.notify_one();
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        self.shared.queue.lock().unwrap().closed = true;
        self.shared.wake.notify_all();
    }
}

impl Stream {
    /// Wait until the first `upto` bytes are hashed.
    pub(crate) async fn wait(&self, upto: u64) -> io::Result<()> {
        let mut rx = self.hashed.subscribe();
        let res = rx.wait_for(|h| h.is_none_or(|h| h >= upto)).await;
        if matches!(res.as_deref(), Ok(Some(_))) {
            return Ok(());
        }
        let mut st = self.state.lock().unwrap();
        Err(st
            .error
            .take()
            .unwrap_or_else(|| io::Error::other("hashing stopped")))
    }

    /// Whether one round hashes all this stream has ready.
    fn one_round(&self) -> bool {
        let st = self.state.lock().unwrap();
        st.ready.saturating_sub(st.hashed) <= CHUNK as u64
    }

    /// Bytes hashed so far.
    #[cfg(test)]
    pub(crate) fn hashed(&self) -> u64 {
        self.state.lock().unwrap().hashed
    }

    /// Nothing more will be asked of this stream (its file is being thrown away).
    pub(crate) fn cancel(&self) {
        let mut st = self.state.lock().unwrap();
        st.ready = st.hashed;
    }

    /// The digests asked for, of the bytes hashed (an empty file: those of no bytes).
    pub(crate) fn finish(&self, want: Want) -> Digests {
        let st = self.state.lock().unwrap();
        let asked = self.want.get().copied().unwrap_or(want);
        Digests {
            sha256: asked.sha256.then(|| st.sha256.clone().finalize().into()),
            md5: asked.md5.then(|| st.md5.finalize()),
        }
    }
}

/// One file's share of a round: its state, taken out while the worker holds it.
struct Lane {
    stream: Arc<Stream>,
    sha256: Option<Sha256>,
    md5: Option<Md5State>,
    /// Where this round's bytes start in the file, and how many were read.
    from: u64,
    len: usize,
    result: io::Result<()>,
}

fn worker(shared: &Shared) {
    let engine = Md5Many::new();
    let simd = engine.lanes().max(1);
    let mut buffers: Vec<Vec<u8>> = Vec::new();
    while let Some(batch) = next_batch(shared, simd) {
        while buffers.len() < batch.len() {
            buffers.push(vec![0u8; CHUNK]);
        }
        let mut lanes: Vec<Lane> = batch
            .into_iter()
            .zip(&mut buffers)
            .map(|(stream, buf)| read_lane(stream, buf))
            .collect();
        for (lane, buf) in lanes.iter_mut().zip(&buffers) {
            if let (Ok(()), Some(sha)) = (&lane.result, &mut lane.sha256) {
                sha.update(&buf[..lane.len]);
            }
        }
        md5_round(&engine, simd, &mut lanes, &buffers);
        let requeue: Vec<Arc<Stream>> = lanes.into_iter().filter_map(settle_lane).collect();
        if !requeue.is_empty() {
            // Behind what others queued meanwhile: every file keeps moving.
            shared.queue.lock().unwrap().ready.extend(requeue);
            shared.wake.notify_one();
        }
    }
}

/// The streams a worker hashes next, or `None` once the pool is closed and drained.
fn next_batch(shared: &Shared, simd: usize) -> Option<Vec<Arc<Stream>>> {
    let mut q = shared.queue.lock().unwrap();
    while q.ready.is_empty() && !q.closed {
        q = shared.wake.wait(q).unwrap();
    }
    if q.ready.is_empty() {
        return None;
    }
    // Small files arrive one by one, each hashed in one round; alone, each would take
    // the slow one-stream MD5 path. Waiting a little for more costs no download time
    // (the request budget is released before hashing) and fills the lanes.
    let deadline = Instant::now() + GATHER;
    while q.ready.len() < simd && !q.closed && q.ready.iter().all(|s| s.one_round()) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        q = shared.wake.wait_timeout(q, left).unwrap().0;
    }
    // A fair share of the queue, so that SHA-256 (serial within a file) runs on every
    // worker when there are few files; under load the shares still fill the MD5 lanes.
    let n = q.ready.len().div_ceil(shared.workers).min(simd * 3);
    Some(q.ready.drain(..n).collect())
}

/// Read a stream's next chunk into `buf`, taking its digests' state along.
fn read_lane(stream: Arc<Stream>, buf: &mut [u8]) -> Lane {
    let (from, len, sha256, md5) = {
        let mut st = stream.state.lock().unwrap();
        // A stream cancelled while a worker held it can have hashed past ready.
        let len = st.ready.saturating_sub(st.hashed).min(CHUNK as u64) as usize;
        let want = stream.want.get().copied().unwrap_or_default();
        let md5 = want.md5.then_some(st.md5);
        let sha = want.sha256.then(|| std::mem::take(&mut st.sha256));
        (st.hashed, len, sha, md5)
    };
    let result = stream.file.read_exact_at(&mut buf[..len], from);
    Lane {
        stream,
        sha256,
        md5,
        from,
        len,
        result,
    }
}

/// Give a hashed lane's digests back to its stream; returns the stream when it has more
/// bytes ready to hash.
fn settle_lane(lane: Lane) -> Option<Arc<Stream>> {
    let mut st = lane.stream.state.lock().unwrap();
    if let Some(sha) = lane.sha256 {
        st.sha256 = sha;
    }
    match lane.result {
        Ok(()) => {
            if let Some(md5) = lane.md5 {
                st.md5 = md5;
            }
            st.hashed += lane.len as u64;
            lane.stream.hashed.send_replace(Some(st.hashed));
            if st.hashed < st.ready {
                return Some(lane.stream.clone());
            }
            st.queued = false;
        }
        Err(e) => {
            st.error = Some(e);
            st.queued = false;
            lane.stream.hashed.send_replace(None);
        }
    }
    None
}

/// MD5 of this round's bytes. md5-many is fast only for whole groups of `simd` streams fed
/// equal, block-aligned lengths (measured here: 0.30 CPU-s per GiB for 8 streams, 1.1 for 4,
/// 1.3 for one stream alone); so full chunks go through SIMD in whole groups, the last group
/// padded with throwaway lanes, and only odd lengths (a file's tail) or a lone file are hashed
/// one stream at a time.
fn md5_round(engine: &Md5Many, simd: usize, lanes: &mut [Lane], buffers: &[Vec<u8>]) {
    let mut wide = Vec::new();
    for (i, lane) in lanes.iter_mut().enumerate() {
        let Some(md5) = lane.md5.as_mut() else {
            continue;
        };
        if lane.result.is_err() {
            continue;
        }
        if lane.len == CHUNK && lane.from % 64 == 0 {
            wide.push(i);
        } else {
            md5.update(&buffers[i][..lane.len]);
        }
    }
    if wide.len() == 1 {
        let i = wide[0];
        if let Some(md5) = lanes[i].md5.as_mut() {
            md5.update(&buffers[i][..CHUNK]);
        }
        return;
    }
    for group in wide.chunks(simd * 3) {
        let width = group.len().next_multiple_of(simd);
        let mut states: Vec<Md5State> = group
            .iter()
            .map(|&i| lanes[i].md5.expect("MD5 lane"))
            .collect();
        states.resize(width, Md5State::new());
        let mut inputs: Vec<&[u8]> = group.iter().map(|&i| &buffers[i][..CHUNK]).collect();
        inputs.resize(width, &buffers[group[0]][..CHUNK]);
        engine.update_many(&mut states, &inputs);
        for (&i, state) in group.iter().zip(states) {
            lanes[i].md5 = Some(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::hex;
    use std::io::Write;

    fn reference(data: &[u8]) -> (String, String) {
        use md5::Digest as _;
        (hex(&Sha256::digest(data)), hex(&md5::Md5::digest(data)))
    }

    /// Many files of awkward sizes, made hashable in uneven steps from several threads at
    /// once, must give the digests a plain one-file-at-a-time hash gives.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_files_in_uneven_steps_hash_like_one_at_a_time() {
        let pool = Arc::new(HashPool::new(2));
        let dir = tempfile::tempdir().unwrap();
        let sizes = [
            0usize,
            1,
            63,
            64,
            65,
            1000,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK + 17,
        ];
        let mut tasks = Vec::new();
        for (n, &size) in sizes.iter().cycle().take(70).enumerate() {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 + n * 7) as u8).collect();
            let path = dir.path().join(format!("f{n}"));
            let mut f = File::create(&path).unwrap();
            f.write_all(&data).unwrap();
            let stream = pool.stream(File::open(&path).unwrap());
            let pool = pool.clone();
            let want = Want {
                md5: n % 3 != 0,
                sha256: n % 4 != 1,
            };
            tasks.push(tokio::spawn(async move {
                let mut upto = 0;
                while upto < size {
                    upto = (upto + 1 + n * 977 % 50_000).min(size);
                    pool.ready(&stream, upto as u64, want);
                    tokio::task::yield_now().await;
                }
                pool.ready(&stream, size as u64, want);
                stream.wait(size as u64).await.unwrap();
                let got = stream.finish(want);
                let (want_sha, want_md5) = reference(&data);
                let sha = got.sha256.map(|d| hex(&d));
                assert_eq!(
                    sha,
                    want.sha256.then_some(want_sha),
                    "file {n} of {size} bytes"
                );
                let md5 = got.md5.map(|d| hex(&d));
                assert_eq!(
                    md5,
                    want.md5.then_some(want_md5),
                    "file {n} of {size} bytes"
                );
                assert_eq!(stream.hashed(), size as u64);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_file_shorter_than_announced_is_an_error_not_a_digest() {
        let pool = HashPool::new(1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short");
        std::fs::write(&path, b"abc").unwrap();
        let stream = pool.stream(File::open(&path).unwrap());
        let want = Want {
            md5: true,
            sha256: true,
        };
        pool.ready(&stream, 10, want);
        let err = stream.wait(10).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
