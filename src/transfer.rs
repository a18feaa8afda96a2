//! The transfer engine: every byte of a `get` comes through here.
//!
//! Owns the one request budget (`--jobs`) shared by all files and parts, the split of large
//! objects into ranged GETs written at their offsets into a temporary file in DIR's private
//! folder (`dest`), the pinning of every part to one ETag (If-Match plus a check of what answered),
//! the per-request retries that resume from the last byte received, the resume log that lets a
//! killed run continue without re-fetching finished parts, hashing, and the rename into place
//! once size and digests are right. The only module that spawns transfer tasks.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::hashing::{self, HashPool};
use crate::https::MastHttps;
use crate::manifest::{self, Entry, Status};
use crate::plan::{self, PlanEntry, Source};
use crate::progress::{FileEvent, Progress};
use crate::retry::RetryPolicy;
use crate::s3::{ErrorKind, S3Error, S3};

/// An object replaced while we fetch it is fetched again from scratch, but not forever.
const MAX_RESTARTS: u32 = 3;
/// Read size of `sha256_file`.
const HASH_BUFFER: usize = 256 << 10;
/// Why a file was not fetched without a token (manifest message).
pub const EXCLUDED_MESSAGE: &str =
    "exclusive access: needs a MAST token (--token-file or MAST_API_TOKEN)";

pub struct Engine {
    pub s3: S3,
    pub mast: Option<Arc<MastHttps>>,
    pub dir: PathBuf,
    pub part_size: u64,
    pub retry: RetryPolicy,
    pub progress: Arc<Progress>,
    pub manifest: Mutex<manifest::Writer>,
    /// Check the MD5 of files whose ETag is a plain MD5 (`--no-md5` turns it off).
    pub check_md5: bool,
    jobs: Arc<Semaphore>,
    /// Digests of S3 downloads.
    hash: HashPool,
    /// Turns for hashing MAST downloads (one file each, at its end).
    hashers: Arc<Semaphore>,
    /// Folders already created in this run: one `create_dir_all` per folder, not per file.
    made_dirs: Mutex<HashSet<PathBuf>>,
}

struct Job {
    entry: PlanEntry,
    restarts: u32,
}

enum Msg {
    Requeue(Box<Job>),
    Finished,
}

/// State shared by the part tasks of one file.
struct FileCtx {
    job: Job,
    bucket: String,
    key: String,
    tmp: PathBuf,
    state: PathBuf,
    file: File,
    size: u64,
    part_size: u64,
    parts: u64,
    etag: OnceLock<String>,
    remaining: AtomicU64,
    error: Mutex<Option<S3Error>>,
    /// The resume log; only multi-part files have one (a single request restarts whole).
    log: Option<Mutex<File>>,
    /// Parts on disk: their unbroken run from the start is what may be hashed.
    done: Mutex<Vec<bool>>,
    digest: Arc<hashing::Stream>,
    /// Bytes counted as done for this file (given back if it restarts).
    counted: AtomicU64,
    changed: AtomicBool,
    etag_logged: AtomicBool,
    started: Instant,
}

/// The resume log beside a temporary file: a JSON header, then one line per finished part.
#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct StateHeader {
    size: u64,
    part_size: u64,
    etag: Option<String>,
}

/// A plain (single-part upload) S3 ETag is the MD5 of the object.
pub fn is_md5_etag(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// SHA-256 of a whole file, lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; HASH_BUFFER];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    Ok(hashing::hex(&sha.finalize()))
}

#[derive(Debug, thiserror::Error)]
enum FinishError {
    #[error("{0}")]
    S3(#[from] S3Error),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("downloaded {got} bytes, expected {want}")]
    Size { got: u64, want: u64 },
    #[error("content does not match the ETag: MD5 {md5}, ETag {etag}")]
    Md5 { md5: String, etag: String },
    #[error(transparent)]
    Unsafe(#[from] plan::UnsafePath),
    #[error("not in the bucket, and no MAST download is possible here ({0})")]
    NoMast(&'static str),
    #[error("{0}")]
    Mast(#[from] crate::https::HttpsError),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FinishError + 'a {
    move |source| FinishError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Full error chain on one line, for the manifest and the error line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let next = e.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = e.source();
    }
    s
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        s3: S3,
        mast: Option<Arc<MastHttps>>,
        dir: PathBuf,
        jobs: usize,
        part_size: u64,
        retry: RetryPolicy,
        progress: Arc<Progress>,
        manifest: manifest::Writer,
        check_md5: bool,
    ) -> Arc<Engine> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(Engine {
            s3,
            mast,
            dir,
            part_size,
            retry,
            progress,
            manifest: Mutex::new(manifest),
            check_md5,
            jobs: Arc::new(Semaphore::new(jobs)),
            // Half the cores hash, the rest move bytes: on this 2-core machine one worker with
            // all 8 big files in its MD5 lanes beat two workers with 4 each (4.3 against 6.6
            // CPU-s for the big bench set; wall 4.2 against 4.2-4.6 s).
            hash: HashPool::new(cores.div_ceil(2)),
            hashers: Arc::new(Semaphore::new(cores)),
            made_dirs: Mutex::new(HashSet::new()),
        })
    }

    /// Fetch every entry; largest first so that the run does not end waiting on one big file.
    pub async fn run(self: &Arc<Self>, mut entries: Vec<PlanEntry>) {
        entries.sort_by_key(|e| std::cmp::Reverse(e.size.unwrap_or(0)));
        let mut pending: VecDeque<Job> = entries
            .into_iter()
            .map(|entry| Job { entry, restarts: 0 })
            .collect();
        let mut outstanding = pending.len();
        let (tx, mut rx) = mpsc::unbounded_channel();
        while outstanding > 0 {
            // Requeued (changed) files go first; then new files; else wait for news.
            let job = match rx.try_recv() {
                Ok(Msg::Requeue(job)) => *job,
                Ok(Msg::Finished) => {
                    outstanding -= 1;
                    continue;
                }
                Err(_) => match pending.pop_front() {
                    Some(job) => job,
                    None => match rx.recv().await {
                        Some(Msg::Requeue(job)) => *job,
                        Some(Msg::Finished) | None => {
                            outstanding -= 1;
                            continue;
                        }
                    },
                },
            };
            self.start(job, &tx).await;
        }
    }

    /// One request's place in the shared budget, held until the request is answered.
    async fn request_permit(&self) -> OwnedSemaphorePermit {
        self.jobs
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open")
    }

    /// Set up one file and spawn its requests, each holding a permit of the shared budget.
    async fn start(self: &Arc<Self>, job: Job, tx: &mpsc::UnboundedSender<Msg>) {
        if job.entry.source == Source::Mast {
            let permit = self.request_permit().await;
            let this = self.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let res = this.fetch_mast(&job.entry).await;
                drop(permit);
                this.record(&job.entry, res, started);
                let _ = tx.send(Msg::Finished);
            });
            return;
        }
        match self.prepare(job).await {
            Ok(ctx) => {
                let ctx = Arc::new(ctx);
                let pending: Vec<u64> = {
                    let done = ctx.done.lock().unwrap();
                    (0..ctx.parts).filter(|&p| !done[p as usize]).collect()
                };
                let resumed = ctx.size - pending.iter().map(|&p| ctx.part_len(p)).sum::<u64>();
                if resumed > 0 {
                    ctx.counted.fetch_add(resumed, Ordering::Relaxed);
                    self.progress.done(resumed);
                }
                ctx.remaining
                    .store(pending.len() as u64 + 1, Ordering::SeqCst);
                self.announce(&ctx);
                for part in pending {
                    let permit = self.request_permit().await;
                    let this = self.clone();
                    let ctx = ctx.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move { this.run_part(ctx, part, permit, tx).await });
                }
                // The scheduler's own reference: the file finishes when the last part does,
                // even if every part was already done (a resumed, complete download).
                self.part_done(ctx, tx.clone()).await;
            }
            Err((job, err)) => {
                self.record(&job.entry, Err(err), Instant::now());
                let _ = tx.send(Msg::Finished);
            }
        }
    }

    /// Open (or resume) the temporary file of an S3 object.
    async fn prepare(&self, job: Job) -> Result<FileCtx, (Job, FinishError)> {
        let (Some(bucket), Some(key)) = (job.entry.bucket.clone(), job.entry.key.clone()) else {
            return Err((job, FinishError::NoMast("entry has no bucket key")));
        };
        let mut job = job;
        if job.entry.size.is_none() {
            match self.s3.head(&bucket, &key).await {
                Ok(Some(info)) => {
                    job.entry.size = Some(info.size);
                    job.entry.etag = job.entry.etag.take().or(info.etag);
                }
                Ok(None) => {
                    let e =
                        S3::make_error("HEAD", &bucket, &key, ErrorKind::NotFound, String::new());
                    return Err((job, e.into()));
                }
                Err(e) => return Err((job, e.into())),
            }
        }
        let size = job.entry.size.unwrap_or(0);
        let dest = match plan::dest_path(&self.dir, &job.entry.dest) {
            Ok(d) => d,
            Err(e) => return Err((job, e.into())),
        };
        let (tmp, state) = crate::dest::temp_paths(&self.dir, &job.entry.dest);
        let parts = if size <= self.part_size {
            1
        } else {
            size.div_ceil(self.part_size)
        };
        let setup = || -> Result<(File, Option<File>, Option<String>), FinishError> {
            for parent in [dest.parent(), tmp.parent()].into_iter().flatten() {
                if !self.made_dirs.lock().unwrap().contains(parent) {
                    fs::create_dir_all(parent).map_err(io_err("cannot create folder", parent))?;
                    self.made_dirs.lock().unwrap().insert(parent.to_path_buf());
                }
            }
            // Read too: parts are hashed back from it while later parts still download.
            let create = || {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&tmp)
                    .map_err(io_err("cannot create", &tmp))
            };
            if parts == 1 {
                let file = create()?;
                let _ = fs::remove_file(&state); // left by a run with a smaller part size
                return Ok((file, None, job.entry.etag.clone()));
            }
            let header = StateHeader {
                size,
                part_size: self.part_size,
                etag: job.entry.etag.clone(),
            };
            if let Some(etag) = resumable(&tmp, &state, &header) {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&tmp)
                    .map_err(io_err("cannot open", &tmp))?;
                let log = OpenOptions::new()
                    .append(true)
                    .open(&state)
                    .map_err(io_err("cannot open", &state))?;
                return Ok((file, Some(log), etag));
            }
            let file = create()?;
            file.set_len(size).map_err(io_err("cannot size", &tmp))?;
            let mut log = File::create(&state).map_err(io_err("cannot create", &state))?;
            let mut line = serde_json::to_vec(&header).expect("header serializes");
            line.push(b'\n');
            log.write_all(&line)
                .map_err(io_err("cannot write", &state))?;
            Ok((file, Some(log), job.entry.etag.clone()))
        };
        let (file, log, etag) = match setup() {
            Ok(v) => v,
            Err(e) => return Err((job, e)),
        };
        let reader = match file.try_clone() {
            Ok(f) => f,
            Err(e) => return Err((job, io_err("cannot open", &tmp)(e))),
        };
        let pinned = OnceLock::new();
        if let Some(e) = etag {
            let _ = pinned.set(e);
        }
        let mut done = vec![false; parts as usize];
        if log.is_some() {
            for p in read_done_parts(&state) {
                if let Some(d) = done.get_mut(p as usize) {
                    *d = true;
                }
            }
        }
        Ok(FileCtx {
            job,
            bucket,
            key,
            tmp,
            state,
            file,
            size,
            part_size: self.part_size,
            parts,
            etag: pinned,
            remaining: AtomicU64::new(0),
            error: Mutex::new(None),
            log: log.map(Mutex::new),
            done: Mutex::new(done),
            digest: self.hash.stream(reader),
            counted: AtomicU64::new(0),
            changed: AtomicBool::new(false),
            etag_logged: AtomicBool::new(false),
            started: Instant::now(),
        })
    }

    async fn run_part(
        self: Arc<Self>,
        ctx: Arc<FileCtx>,
        part: u64,
        permit: OwnedSemaphorePermit,
        tx: mpsc::UnboundedSender<Msg>,
    ) {
        // A sibling part already found the object changed or failed: don't spend a request.
        let skip = ctx.changed.load(Ordering::Relaxed) || ctx.error.lock().unwrap().is_some();
        let res = if skip {
            Ok(())
        } else {
            self.fetch_part(&ctx, part).await
        };
        drop(permit);
        match res {
            Ok(()) if !skip => {
                // The resume log is what lets a killed run skip this part next time.
                if let Some(log) = &ctx.log {
                    let _ = log
                        .lock()
                        .unwrap()
                        .write_all(format!("{part}\n").as_bytes());
                }
                ctx.done.lock().unwrap()[part as usize] = true;
                self.announce(&ctx);
            }
            Ok(()) => {}
            Err(e) => {
                if e.kind == ErrorKind::Changed {
                    ctx.changed.store(true, Ordering::Relaxed);
                }
                let mut slot = ctx.error.lock().unwrap();
                // Keep the most telling error: a change beats a failure it caused.
                if slot
                    .as_ref()
                    .is_none_or(|old| old.kind != ErrorKind::Changed)
                {
                    *slot = Some(e);
                }
            }
        }
        self.part_done(ctx, tx).await;
    }

    /// One ranged GET (or the whole object), retried from the last byte received.
    async fn fetch_part(&self, ctx: &FileCtx, part: u64) -> Result<(), S3Error> {
        let start = part * ctx.part_size;
        let len = ctx.part_len(part);
        if len == 0 {
            return Ok(());
        }
        let end = start + len - 1;
        let whole = ctx.parts == 1;
        let mut pos = 0u64;
        let mut attempt = 0u32;
        loop {
            let from = start + pos;
            let range = (!whole || pos > 0).then_some((from, end));
            let err = match self
                .s3
                .get(
                    &ctx.bucket,
                    &ctx.key,
                    range,
                    ctx.etag.get().map(String::as_str),
                )
                .await
            {
                Ok(resp) => {
                    self.check_response(ctx, &resp, range)?;
                    match self.stream_body(ctx, resp.body, from, len - pos).await {
                        Ok(n) => {
                            pos += n;
                            if pos == len {
                                return Ok(());
                            }
                            ctx.make_error(
                                ErrorKind::Transient,
                                format!(": body ended after {n} bytes"),
                            )
                        }
                        Err((n, e)) => {
                            pos += n;
                            e
                        }
                    }
                }
                Err(e) => e,
            };
            if !self.retry.should_retry(&err, attempt) {
                return Err(err);
            }
            self.retry.pause(attempt, &err).await;
            attempt += 1;
        }
    }

    /// Is this the object we planned, and the bytes we asked for?
    fn check_response(
        &self,
        ctx: &FileCtx,
        resp: &crate::s3::GetResponse,
        range: Option<(u64, u64)>,
    ) -> Result<(), S3Error> {
        if let Some(got) = &resp.etag {
            let pinned = ctx.etag.get_or_init(|| got.clone());
            if pinned != got {
                return Err(ctx.make_error(
                    ErrorKind::Changed,
                    format!(": ETag {pinned} was planned, {got} answered"),
                ));
            }
            ctx.note_etag(got);
        }
        match (range, resp.content_range) {
            (Some((start, end)), Some((s, e, total))) => {
                if total != ctx.size {
                    return Err(ctx.make_error(
                        ErrorKind::Changed,
                        format!(": size {} was planned, {total} answered", ctx.size),
                    ));
                }
                if (s, e) != (start, end) {
                    return Err(ctx.make_error(
                        ErrorKind::Other,
                        format!(": asked for bytes {start}-{end}, got {s}-{e}"),
                    ));
                }
            }
            (Some((start, end)), None) => {
                // Only acceptable when the range was the whole object.
                if !(start == 0 && end + 1 == ctx.size && resp.content_length == Some(ctx.size)) {
                    return Err(ctx.make_error(
                        ErrorKind::Other,
                        format!(": asked for bytes {start}-{end}, the server ignored the range"),
                    ));
                }
            }
            (None, _) => {
                if let Some(n) = resp.content_length {
                    if n != ctx.size {
                        return Err(ctx.make_error(
                            ErrorKind::Changed,
                            format!(": size {} was planned, {n} answered", ctx.size),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Write a body at its offset as chunks arrive. Returns bytes written, or those and an error.
    async fn stream_body(
        &self,
        ctx: &FileCtx,
        mut body: crate::s3::Body,
        offset: u64,
        want: u64,
    ) -> Result<u64, (u64, S3Error)> {
        let mut got = 0u64;
        // A stalled or dripping connection is retried on a new one, resuming from `got`.
        let mut dog = crate::retry::Watchdog::new(&self.retry);
        loop {
            let chunk = match dog.next(&mut body).await {
                Err(slow) => {
                    let mut e = ctx.make_error(ErrorKind::Transient, ": body".into());
                    e.source = Some(Box::new(slow));
                    return Err((got, e));
                }
                Ok(None) => return Ok(got),
                Ok(Some(Err(e))) => {
                    let mut err = ctx.make_error(ErrorKind::Transient, ": body interrupted".into());
                    err.source = Some(e);
                    return Err((got, err));
                }
                Ok(Some(Ok(bytes))) => bytes,
            };
            let n = chunk.len() as u64;
            if got + n > want {
                let e = ctx.make_error(
                    ErrorKind::Other,
                    format!(": server sent more than the {want} bytes asked"),
                );
                return Err((got, e));
            }
            if let Err(e) = ctx.file.write_all_at(&chunk, offset + got) {
                let mut err = ctx.make_error(
                    ErrorKind::Other,
                    format!(": cannot write {}", ctx.tmp.display()),
                );
                err.source = Some(Box::new(e));
                return Err((got, err));
            }
            got += n;
            ctx.counted.fetch_add(n, Ordering::Relaxed);
            self.progress.transferred(n);
        }
    }

    /// Called once per part and once by the scheduler; the last caller finishes the file.
    async fn part_done(self: &Arc<Self>, ctx: Arc<FileCtx>, tx: mpsc::UnboundedSender<Msg>) {
        if ctx.remaining.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let err = ctx.error.lock().unwrap().take();
        match err {
            Some(e) if e.kind == ErrorKind::Changed && ctx.job.restarts < MAX_RESTARTS => {
                self.restart(&ctx, &tx, "changed in the archive while downloading")
                    .await;
            }
            Some(e) => {
                ctx.digest.cancel();
                if e.kind == ErrorKind::Changed {
                    let _ = fs::remove_file(&ctx.tmp);
                    let _ = fs::remove_file(&ctx.state);
                }
                // Other failures keep the temporary file and its log: a rerun resumes.
                self.record(&ctx.job.entry, Err(e.into()), ctx.started);
                let _ = tx.send(Msg::Finished);
            }
            None => {
                let res = match ctx.digest.wait(ctx.size).await {
                    Err(e) => Err(io_err("cannot read back", &ctx.tmp)(e)),
                    Ok(()) => {
                        let this = self.clone();
                        let ctx2 = ctx.clone();
                        tokio::task::spawn_blocking(move || this.finish_blocking(&ctx2))
                            .await
                            .expect("finish task does not panic")
                    }
                };
                if matches!(res, Err(FinishError::Md5 { .. })) && ctx.job.restarts < MAX_RESTARTS {
                    // The bytes do not hash to the ETag they were pinned to: damaged in transit
                    // or at rest. Fetch the whole file again rather than trust any part of it.
                    self.restart(&ctx, &tx, "content did not match its ETag")
                        .await;
                    return;
                }
                let mut entry = ctx.job.entry.clone();
                if entry.etag.is_none() {
                    entry.etag = ctx.etag.get().cloned();
                }
                self.record(&entry, res.map(|sha| (sha, ctx.size)), ctx.started);
                let _ = tx.send(Msg::Finished);
            }
        }
    }

    /// Throw away what a file has and queue it again, with the archive's current size and ETag.
    async fn restart(&self, ctx: &FileCtx, tx: &mpsc::UnboundedSender<Msg>, why: &str) {
        ctx.digest.cancel();
        self.progress.undone(ctx.counted.load(Ordering::Relaxed));
        let _ = fs::remove_file(&ctx.tmp);
        let _ = fs::remove_file(&ctx.state);
        let mut entry = ctx.job.entry.clone();
        match self.s3.head(&ctx.bucket, &ctx.key).await {
            Ok(Some(info)) => {
                self.progress
                    .note(&format!("{}: {why}; starting it again", entry.dest));
                entry.size = Some(info.size);
                entry.etag = info.etag;
                let restarts = ctx.job.restarts + 1;
                let _ = tx.send(Msg::Requeue(Box::new(Job { entry, restarts })));
            }
            Ok(None) => {
                let gone = ctx.make_error(
                    ErrorKind::NotFound,
                    ": removed from the bucket during download".into(),
                );
                self.record(&entry, Err(gone.into()), ctx.started);
                let _ = tx.send(Msg::Finished);
            }
            Err(e) => {
                self.record(&entry, Err(e.into()), ctx.started);
                let _ = tx.send(Msg::Finished);
            }
        }
    }

    /// Check the temporary file's size and digests, and rename it into place.
    fn finish_blocking(&self, ctx: &FileCtx) -> Result<String, FinishError> {
        let got = fs::metadata(&ctx.tmp)
            .map_err(io_err("cannot stat", &ctx.tmp))?
            .len();
        if got != ctx.size {
            return Err(FinishError::Size {
                got,
                want: ctx.size,
            });
        }
        let etag = ctx.etag.get();
        let (sha, md5) = ctx.digest.finish();
        if let (Some(etag), Some(md5)) = (etag, md5) {
            if is_md5_etag(etag) && !etag.eq_ignore_ascii_case(&md5) {
                let _ = fs::remove_file(&ctx.tmp);
                let _ = fs::remove_file(&ctx.state);
                return Err(FinishError::Md5 {
                    md5,
                    etag: etag.clone(),
                });
            }
        }
        let dest = plan::dest_path(&self.dir, &ctx.job.entry.dest).expect("checked in prepare");
        fs::rename(&ctx.tmp, &dest).map_err(io_err("cannot rename into place", &dest))?;
        let _ = fs::remove_file(&ctx.state);
        Ok(sha)
    }

    fn want_md5(&self, ctx: &FileCtx) -> bool {
        self.check_md5 && ctx.etag.get().is_some_and(|e| is_md5_etag(e))
    }

    /// Hand the hash pool the unbroken run of parts on disk from the start of the file.
    fn announce(&self, ctx: &FileCtx) {
        let end = {
            let done = ctx.done.lock().unwrap();
            let run = done.iter().take_while(|d| **d).count() as u64;
            (run * ctx.part_size).min(ctx.size)
        };
        self.hash.ready(&ctx.digest, end, self.want_md5(ctx));
    }

    async fn fetch_mast(&self, entry: &PlanEntry) -> Result<(String, u64), FinishError> {
        let Some(mast) = &self.mast else {
            return Err(FinishError::NoMast("--s3-only"));
        };
        let dest = plan::dest_path(&self.dir, &entry.dest)?;
        let hashers = self.hashers.clone();
        Ok(mast
            .download(entry, &self.dir, &dest, &self.progress, hashers)
            .await?)
    }

    /// Write the outcome of one file to the manifest and the progress stream.
    fn record(&self, entry: &PlanEntry, res: Result<(String, u64), FinishError>, started: Instant) {
        let (status, sha, message, bytes) = match res {
            Ok((sha, size)) => (Status::Ok, Some(sha), None, size),
            // MAST refusing a product to an anonymous user means exclusive access, which the
            // plan could not know for items named only by URI: excluded, not failed.
            Err(FinishError::Mast(crate::https::HttpsError::Status {
                status: 401 | 403, ..
            })) if !self.mast.as_ref().is_some_and(|m| m.has_token()) => (
                Status::Excluded,
                None,
                Some(EXCLUDED_MESSAGE.to_string()),
                0,
            ),
            Err(e) => (Status::Failed, None, Some(chain(&e)), 0),
        };
        let mut line = Entry::from_plan(entry, status, message.clone());
        line.sha256 = sha;
        if status == Status::Ok && line.size.is_none() {
            line.size = Some(bytes);
        }
        if let Err(e) = self.manifest.lock().unwrap().record(line) {
            self.progress.error(&chain(&e));
        }
        self.progress.file(&FileEvent {
            status,
            path: &entry.dest,
            uri: &entry.uri,
            source: entry.source.as_str(),
            bytes,
            seconds: started.elapsed().as_secs_f64(),
            message: message.as_deref(),
        });
    }
}

impl FileCtx {
    fn part_len(&self, part: u64) -> u64 {
        let start = part * self.part_size;
        if self.parts == 1 {
            return self.size;
        }
        self.part_size.min(self.size.saturating_sub(start))
    }

    fn make_error(&self, kind: ErrorKind, detail: String) -> S3Error {
        S3::make_error("GET", &self.bucket, &self.key, kind, detail)
    }

    /// Remember in the resume log an ETag learned from a response (listing had none).
    fn note_etag(&self, etag: &str) {
        let Some(log) = &self.log else { return };
        if self.job.entry.etag.is_none() && !self.etag_logged.swap(true, Ordering::Relaxed) {
            let _ = log
                .lock()
                .unwrap()
                .write_all(format!("etag {etag}\n").as_bytes());
        }
    }
}

/// Parts already written by an earlier run, from the resume log.
fn read_done_parts(state: &Path) -> std::collections::HashSet<u64> {
    let Ok(f) = File::open(state) else {
        return Default::default();
    };
    BufReader::new(f)
        .lines()
        .skip(1)
        .map_while(Result::ok)
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether an earlier run's temporary file can be continued; returns the ETag it was pinned to.
fn resumable(tmp: &Path, state: &Path, want: &StateHeader) -> Option<Option<String>> {
    let f = File::open(state).ok()?;
    let mut lines = BufReader::new(f).lines().map_while(Result::ok);
    let header: StateHeader = serde_json::from_str(&lines.next()?).ok()?;
    let learned = lines
        .filter_map(|l| l.strip_prefix("etag ").map(str::to_string))
        .last();
    let etag = header.etag.clone().or(learned);
    let same_object = match (&want.etag, &etag) {
        (Some(a), Some(b)) => a == b,
        // Without an ETag from the listing, the responses will tell (they are checked).
        _ => true,
    };
    let ok = header.size == want.size
        && header.part_size == want.part_size
        && same_object
        && fs::metadata(tmp).ok()?.len() == want.size;
    ok.then_some(want.etag.clone().or(etag))
}
