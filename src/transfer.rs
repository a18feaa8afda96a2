//! The transfer engine: every byte of a `get` comes through here.
//!
//! Owns the one request budget (`--jobs`) shared by all files and parts, the split of large
//! objects into ranged GETs written at their offsets into a temporary file in DIR's private
//! folder (`dest`), the pinning of every part to one ETag (If-Match plus a check of what answered),
//! the per-request retries that resume from the last byte received, the resume log that lets a
//! killed run continue without re-fetching finished parts, learning what each file must match
//! (the archive's full-object checksum from a GET's answer or one HEAD, else its ETag, with the
//! upload part layout of a multipart ETag), the per-part digests taken as bytes arrive and their
//! check once the file is complete (a mismatch fetches the file again), and the rename into
//! place (`dest`'s policy). It writes every manifest line of a run (files settled without a
//! transfer come through [`Engine::settle`]), tells what happens to a `progress::Reporter`
//! (it knows no display), and returns a [`Summary`] of what it settled. The only module that
//! spawns transfer tasks.
//!
//! # The part protocol
//!
//! Design note for whoever changes this file; the rest of it implements these rules.
//!
//! **Scheduling.** [`Engine::run`] takes files largest first. Requeued files (restarts) go
//! before new ones. For the next [`LOOKAHEAD`] files that will be fetched in parts, the HEAD
//! that learns their proof starts early, so the scheduler waits no round trip per file. Every
//! request (a part GET, a whole-object GET, a MAST download) holds one permit of the shared
//! `--jobs` semaphore until it is answered; a file holds no permit of its own.
//!
//! **States of a file.** `prepare` -> parts in flight -> `finish` -> recorded, or back to the
//! queue:
//! 1. `prepare` learns the size (a HEAD if the plan has none) and, for a file larger than one
//!    part, what it must match first (`multi_part_expect`: the full-object checksum, or a
//!    multipart ETag, whose upload parts then become the part bounds so each part's MD5 can
//!    be taken on arrival). A file of one part learns it from its GET's answer instead. It
//!    creates the temporary file under `DIR/.mastfetch/` (`dest::Place`) or continues
//!    one (below), and computes the parts not yet on disk.
//! 2. Each missing part is one task (`run_part` -> `fetch_part`): a ranged GET with
//!    `If-Match` on the pinned ETag; `check_response` checks the status, the ETag and the
//!    Content-Range that answered; `stream_body` writes the bytes at their offset and feeds
//!    the part's digests as they arrive, resuming a broken body from the last byte received
//!    (retries are per request, not per file). A part that finds a sibling already failed or
//!    the object changed spends no request.
//! 3. The last part to end (a counter, `remaining`, that the scheduler also holds one unit of,
//!    so a file already complete on disk still finishes) calls `part_done`, which decides:
//!    no error -> `finish`; the object changed (`ErrorKind::Changed`: If-Match failed, or
//!    another ETag answered) -> `restart`; any other error -> recorded as failed, the
//!    temporary file and its log kept so the next run resumes.
//! 4. `finish` waits for the serial digests (`hashing`, read back from the page cache), learns
//!    a late upload layout if a single GET revealed a multipart ETag, then `finish_blocking`
//!    compares size and digests with the expectation (`checksum::Expect`). A match is renamed
//!    into place and recorded by `finish_file` (manifest line, report, the scheduler told:
//!    every transfer ends there once); a mismatch deletes the bytes
//!    (they never reach the final name nor a later resume) and restarts.
//!
//! **Restarts.** `restart` gives back the bytes counted for the file, deletes its temporary
//! file and log, asks the archive (HEAD) for the object's current size and ETag, and requeues
//! the file with them; at most [`MAX_RESTARTS`] times, then the last error is recorded. An
//! object gone from the bucket is recorded as failed.
//!
//! **The resume log** (`state` beside the temporary file, multi-part files only): a JSON
//! [`StateHeader`] (size, part size, ETag, upload part lengths), then `etag <value>` once the
//! first answer pins an ETag the plan did not have, then one line per part written. A later
//! run continues the file only if the header matches what it would write now, the ETag is the
//! same and the temporary file has the full size (`resumable`). A logged part is only a
//! promise that its bytes were written: its digests are taken again by reading it back, so the
//! log never vouches for bytes nobody checked.
//!
//! **Proofs** (`checksum::Expect`, strongest first): the archive's full-object CRC (each
//! part's CRC taken on arrival, combined at the end) or SHA-256 (hashed in order by the
//! read-back pool); a plain-MD5 ETag (read-back pool); a multipart ETag over the object's own
//! upload parts (each part's MD5 on arrival, or read back when a single GET revealed the ETag);
//! else the size alone, with a note saying why. The size is always checked; `--no-verify`
//! (`Expect::Nothing`) skips the rest. MAST downloads (`https`) are proven by their size.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::checksum::{self, CrcAlg, Expect, PartDigest, PartHasher};
use crate::dest::{DiskError, Folders, Place};
use crate::hashing::{self, HashPool, Want};
use crate::https::MastHttps;
use crate::manifest::{self, Entry, Status};
use crate::net::{self, BodyFault, ReadFault, Tally};
use crate::plan::{PlanEntry, Source};
use crate::progress::{FileEvent, Reporter};
use crate::retry::{Backoff, RetryPolicy};
use crate::s3::{Detail, ErrorKind, S3Error, S3};
use crate::text;

/// An object replaced while we fetch it is fetched again from scratch, but not forever.
const MAX_RESTARTS: u32 = 3;
/// Upload parts beyond this many are not looked up one HEAD each (S3 allows 10,000 parts).
const MAX_PART_HEADS: u64 = 10_000;
/// Why a file was not fetched without a token (manifest message).
pub(crate) const EXCLUDED_MESSAGE: &str =
    "exclusive access: needs a MAST token (--token-file or MAST_API_TOKEN)";

pub(crate) struct Engine {
    s3: S3,
    mast: Option<Arc<MastHttps>>,
    pub dir: PathBuf,
    part_size: u64,
    retry: RetryPolicy,
    report: Arc<dyn Reporter>,
    manifest: Mutex<manifest::Writer>,
    /// Check bytes against what the archive published (`--no-verify` turns it off).
    verify: bool,
    /// Also compute each file's SHA-256 (`--sha256`).
    sha256: bool,
    jobs: Arc<Semaphore>,
    /// The serial digests of S3 downloads (plain-MD5 ETags, SHA-256), read back in order.
    hash: HashPool,
    /// Turns for hashing MAST downloads (one file each, at its end).
    hashers: Arc<Semaphore>,
    /// Folders already created in this run.
    folders: Folders,
    /// Set by the first write that finds the disk full: no new file starts after it (each
    /// would only fail the same way), and the run ends saying what the rest needs.
    disk_full: AtomicBool,
    /// Files the full disk stopped, and their bytes.
    unfetched: (AtomicU64, AtomicU64),
    /// A manifest line that could not be written is said once, not once a file.
    manifest_error_said: AtomicBool,
    /// What the run settled so far.
    summary: Mutex<Summary>,
}

/// What a `get` run settled: files per outcome and bytes, from which [`Summary::exit_code`]
/// derives the exit code.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub ok: u64,
    pub skipped: u64,
    pub failed: u64,
    pub excluded: u64,
    pub duplicate: u64,
    pub adopted: u64,
    /// Bytes of the files fetched in this run (`ok`).
    pub bytes: u64,
    /// Files a full disk stopped, and their bytes (`None`: the disk did not fill up).
    pub disk_full: Option<(u64, u64)>,
    /// The plan named things it could not place or was cut short (see `plan::Plan`).
    pub plan_problems: bool,
}

impl Summary {
    /// 0 when every planned file is in place; 1 when any failed, was excluded, or the plan
    /// had problems. (Usage and fatal errors are 2, from `main`.)
    pub fn exit_code(&self) -> u8 {
        u8::from(self.failed > 0 || self.excluded > 0 || self.plan_problems)
    }

    fn count(&mut self, status: Status, bytes: u64) {
        match status {
            Status::Ok => {
                self.ok += 1;
                self.bytes += bytes;
            }
            Status::Skipped => self.skipped += 1,
            Status::Failed => self.failed += 1,
            Status::Excluded => self.excluded += 1,
            Status::Duplicate => self.duplicate += 1,
            Status::Adopted => self.adopted += 1,
        }
    }
}

/// Why a file was not started after the disk filled up (manifest message).
const NOT_STARTED_FULL: &str = "not started: no space left on the device";

/// Whether a failure was the disk filling up (anywhere in its chain of causes).
fn is_disk_full(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<io::Error>()
            .is_some_and(manifest::is_disk_full)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

struct Job {
    entry: PlanEntry,
    restarts: u32,
    /// The HEAD (and upload layout) of a file fetched in parts, started while the files
    /// before it were set up: the scheduler then waits no round trip per file.
    lookup: Option<Lookup>,
}

type Lookup = tokio::task::JoinHandle<Result<(crate::s3::ObjectInfo, Expect), S3Error>>;

/// Files ahead of the scheduler whose HEADs run early (at most this many HEADs at once).
const LOOKAHEAD: usize = 8;

enum Msg {
    Requeue(Box<Job>),
    Finished,
}

/// State shared by the part tasks of one file.
struct FileCtx {
    job: Job,
    bucket: String,
    key: String,
    /// Its final name, temporary file and resume log.
    place: Place,
    file: File,
    size: u64,
    /// Part `p` is the bytes `bounds[p]..bounds[p + 1]`: `--part-size` pieces, or the object's
    /// own upload parts when its multipart ETag is the proof (each part's MD5 on arrival).
    bounds: Vec<u64>,
    /// One GET for the whole object: it asks for the full-object checksum, and restarts whole.
    whole: bool,
    etag: OnceLock<String>,
    /// What the bytes must match: known before a multi-part file starts, or from the answer of
    /// a single GET.
    expect: OnceLock<Expect>,
    remaining: AtomicU64,
    error: Mutex<Option<PartError>>,
    /// The resume log; only multi-part files have one (a single request restarts whole).
    log: Option<Mutex<File>>,
    /// Digests of the parts on disk (taken as they arrived, or read back on resume); the
    /// unbroken run from the start is what the read-back pool may hash.
    done: Mutex<Vec<Option<PartDigest>>>,
    digest: Arc<hashing::Stream>,
    /// Bytes counted as done for this file (given back if it restarts).
    counted: AtomicU64,
    changed: AtomicBool,
    etag_logged: AtomicBool,
    started: Instant,
}

/// The resume log beside a temporary file: a JSON header, then one line per finished part.
/// Finished parts are only a promise that their bytes were written: their digests are taken
/// again from disk when a run resumes, so the log never vouches for unchecked bytes.
#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct StateHeader {
    size: u64,
    part_size: u64,
    etag: Option<String>,
    /// Upload part lengths, when the parts follow them (absent in older logs: uniform parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parts: Option<Vec<u64>>,
}

/// A complete file, proven (or not) as the archive allowed.
pub(crate) struct Done {
    pub size: u64,
    pub expect: Expect,
    /// CRC-64/NVME of the local file, S3's base64 form.
    pub crc64nvme: String,
    pub sha256: Option<String>,
}

/// Why a part failed: the archive's answer (or the connection to it), or the local disk.
#[derive(Debug, thiserror::Error)]
enum PartError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error(transparent)]
    Disk(#[from] DiskError),
}

impl PartError {
    /// The object is no longer the one planned: the file starts again.
    fn changed(&self) -> bool {
        matches!(self, PartError::S3(e) if e.kind == ErrorKind::Changed)
    }
}

impl From<PartError> for FinishError {
    fn from(e: PartError) -> FinishError {
        match e {
            PartError::S3(e) => FinishError::S3(e),
            PartError::Disk(e) => FinishError::Disk(e),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum FinishError {
    #[error("{0}")]
    S3(#[from] S3Error),
    #[error("downloaded {got} bytes, expected {want}")]
    Size { got: u64, want: u64 },
    /// The bytes are not what the archive says the object is (both values named).
    #[error("content does not match the {what}: got {got}, the archive has {want}")]
    Mismatch {
        what: &'static str,
        got: String,
        want: String,
    },
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Unsafe(#[from] crate::dest::UnsafePath),
    #[error("not in the bucket, and no MAST download is possible here ({0})")]
    NoMast(&'static str),
    #[error("{0}")]
    Mast(#[from] crate::https::HttpsError),
    #[error("{NOT_STARTED_FULL}")]
    NotStarted,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FinishError + 'a {
    move |source| FinishError::Disk(crate::dest::disk(what, path)(source))
}

impl Engine {
    /// Files a full disk stopped and their bytes, if the disk filled up.
    fn disk_full(&self) -> Option<(u64, u64)> {
        self.disk_full.load(Ordering::Relaxed).then(|| {
            (
                self.unfetched.0.load(Ordering::Relaxed),
                self.unfetched.1.load(Ordering::Relaxed),
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        s3: S3,
        mast: Option<Arc<MastHttps>>,
        dir: PathBuf,
        requests: usize,
        hash_threads: usize,
        part_size: u64,
        retry: RetryPolicy,
        report: Arc<dyn Reporter>,
        manifest: manifest::Writer,
        verify: bool,
        sha256: bool,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            s3,
            mast,
            dir,
            part_size,
            retry,
            report,
            manifest: Mutex::new(manifest),
            verify,
            sha256,
            jobs: Arc::new(Semaphore::new(requests)),
            // `hash_threads` (the cores): half of them hash, the rest move bytes. On this 2-core
            // machine one worker with all 8 big files in its MD5 lanes beat two workers with 4
            // each (4.3 against 6.6 CPU-s for the big bench set; wall 4.2 against 4.2-4.6 s).
            hash: HashPool::new(hash_threads.div_ceil(2)),
            hashers: Arc::new(Semaphore::new(hash_threads)),
            folders: Folders::default(),
            disk_full: AtomicBool::new(false),
            unfetched: (AtomicU64::new(0), AtomicU64::new(0)),
            manifest_error_said: AtomicBool::new(false),
            summary: Mutex::default(),
        })
    }

    /// Record a file the run settles without a transfer (complete before, adopted, a duplicate,
    /// excluded, a plan problem): its manifest line, counted in the summary, and reported as
    /// `shown` (its bytes and message) unless that is `None`.
    pub(crate) fn settle(
        &self,
        entry: &PlanEntry,
        line: Entry,
        shown: Option<(u64, Option<&str>)>,
    ) -> Result<(), manifest::ManifestError> {
        let status = line.status;
        self.manifest.lock().unwrap().record(line)?;
        self.summary.lock().unwrap().count(status, 0);
        if let Some((bytes, message)) = shown {
            self.report.file_done(&FileEvent {
                status,
                path: &entry.dest,
                uri: &entry.uri,
                source: entry.source.as_str(),
                bytes,
                seconds: 0.0,
                message,
                quiet: false,
            });
        }
        Ok(())
    }

    /// Write the manifest's last state (compacted, with its sums file) once the run is over.
    pub(crate) fn finish_manifest(&self) -> Result<(), manifest::ManifestError> {
        self.manifest.lock().unwrap().finish()
    }

    /// Fetch every entry; largest first so that the run does not end waiting on one big file.
    /// Returns what the run settled (files settled before through [`Engine::settle`] included).
    pub(crate) async fn run(self: &Arc<Self>, entries: Vec<PlanEntry>) -> Summary {
        self.schedule(entries).await;
        let mut summary = *self.summary.lock().unwrap();
        summary.disk_full = self.disk_full();
        summary
    }

    async fn schedule(self: &Arc<Self>, mut entries: Vec<PlanEntry>) {
        entries.sort_by_key(|e| std::cmp::Reverse(e.size.unwrap_or(0)));
        let mut pending: VecDeque<Job> = entries
            .into_iter()
            .map(|entry| Job {
                entry,
                restarts: 0,
                lookup: None,
            })
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
            for next in pending.iter_mut().take(LOOKAHEAD) {
                self.look_ahead(next);
            }
            self.start(job, &tx).await;
        }
    }

    /// Start the HEAD of a file that will be fetched in parts, if it needs one and has none.
    fn look_ahead(self: &Arc<Self>, job: &mut Job) {
        let e = &job.entry;
        let multi_part = e.size.is_some_and(|s| s > self.part_size);
        if job.lookup.is_some() || !self.verify || e.source != Source::S3 || !multi_part {
            return;
        }
        let (Some(bucket), Some(key)) = (e.bucket.clone(), e.key.clone()) else {
            return;
        };
        let this = self.clone();
        job.lookup = Some(tokio::spawn(async move {
            this.multi_part_expect(&bucket, &key, None).await
        }));
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
        self.report.started(&job.entry.dest, job.entry.size);
        if self.disk_full.load(Ordering::Relaxed) {
            self.finish_file(&job.entry, Err(FinishError::NotStarted), Instant::now(), tx);
            return;
        }
        if job.entry.source == Source::Mast {
            let permit = self.request_permit().await;
            let this = self.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let res = this.fetch_mast(&job.entry).await;
                drop(permit);
                this.finish_file(&job.entry, res, started, &tx);
            });
            return;
        }
        match self.prepare(job).await {
            Ok(ctx) => {
                let ctx = Arc::new(ctx);
                let pending: Vec<u64> = {
                    let done = ctx.done.lock().unwrap();
                    (0..ctx.parts())
                        .filter(|&p| done[p as usize].is_none())
                        .collect()
                };
                let resumed = ctx.size - pending.iter().map(|&p| ctx.part_len(p)).sum::<u64>();
                if resumed > 0 {
                    ctx.counted.fetch_add(resumed, Ordering::Relaxed);
                    self.report.bytes(Tally::Resumed(resumed));
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
                self.finish_file(&job.entry, Err(err), Instant::now(), tx);
            }
        }
    }

    /// The lengths of an object's upload parts (`HEAD ?partNumber=N`), or `None` when the
    /// server does not tell them (it ignores or refuses `partNumber`) or they do not add up to
    /// `size`.
    async fn upload_parts(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        etag_parts: u64,
    ) -> Option<Vec<u64>> {
        // A server that refuses partNumber outright (an error, not the whole object) cannot
        // tell the layout either: the file is kept on its size, never failed for it.
        let Ok(Some(first)) = self.s3.head_part(bucket, key, 1).await else {
            return None;
        };
        let count = first.parts_count?;
        if count != etag_parts || count > MAX_PART_HEADS {
            return None;
        }
        if let Some(parts) = checksum::equal_parts(size, first.len, count) {
            return Some(parts);
        }
        // Not equal but the last: ask for each part.
        let mut parts = vec![first.len];
        for n in 2..=count {
            let Ok(Some(p)) = self.s3.head_part(bucket, key, n).await else {
                return None;
            };
            parts.push(p.len);
        }
        (parts.iter().sum::<u64>() == size && !parts.contains(&0)).then_some(parts)
    }

    /// What a multi-part file must match, from one HEAD with checksum mode (and, for a
    /// multipart ETag without a full-object checksum, the upload part layout). Returns the
    /// object's current size and ETag too.
    async fn multi_part_expect(
        &self,
        bucket: &str,
        key: &str,
        head: Option<crate::s3::ObjectInfo>,
    ) -> Result<(crate::s3::ObjectInfo, Expect), S3Error> {
        let info = match head {
            Some(h) => h,
            None => self.s3.head(bucket, key).await?.ok_or_else(|| {
                S3::make_error("HEAD", bucket, key, ErrorKind::NotFound, Detail::None)
            })?,
        };
        let expect = Expect::from_published(info.checksum.as_ref(), info.etag.as_deref());
        let Expect::Md5PartsLater { etag } = expect else {
            return Ok((info, expect));
        };
        let n = checksum::multipart_etag_parts(&etag).expect("a multipart ETag");
        let expect = match self.upload_parts(bucket, key, info.size, n).await {
            Some(parts) => Expect::Md5Parts { etag, parts },
            None => Expect::Size {
                note: Some(NO_LAYOUT.to_string()),
            },
        };
        Ok((info, expect))
    }

    /// Open (or resume) the temporary file of an S3 object.
    async fn prepare(&self, job: Job) -> Result<FileCtx, (Job, FinishError)> {
        let (Some(bucket), Some(key)) = (job.entry.bucket.clone(), job.entry.key.clone()) else {
            return Err((job, FinishError::NoMast("entry has no bucket key")));
        };
        let mut job = job;
        let (whole, expect) = match self.learn_object(&mut job, &bucket, &key).await {
            Ok(v) => v,
            Err(e) => return Err((job, e)),
        };
        let size = job.entry.size.unwrap_or(0);
        let place = match Place::of(&self.dir, &job.entry.dest) {
            Ok(p) => p,
            Err(e) => return Err((job, e.into())),
        };
        let upload_parts = match &expect {
            Some(Expect::Md5Parts { parts, .. }) => Some(parts.clone()),
            _ => None,
        };
        let bounds = part_bounds(size, whole, upload_parts.as_deref(), self.part_size);
        let single = whole && upload_parts.is_none();
        let header = (!single).then(|| StateHeader {
            size,
            part_size: self.part_size,
            etag: job.entry.etag.clone(),
            parts: upload_parts,
        });
        let opened = self.open_temp(&place, header, job.entry.etag.clone());
        let (file, log, etag) = match opened {
            Ok(v) => v,
            Err(e) => return Err((job, e)),
        };
        let reader = match file.try_clone() {
            Ok(f) => f,
            Err(e) => return Err((job, io_err("cannot open", &place.tmp)(e))),
        };
        let pinned = OnceLock::new();
        if let Some(e) = etag {
            let _ = pinned.set(e);
        }
        let done = match (&log, &expect) {
            (Some(_), Some(expect)) => {
                match resumed_parts(&reader, &place.state, &bounds, expect).await {
                    Ok(done) => done,
                    Err(e) => return Err((job, io_err("cannot read back", &place.tmp)(e))),
                }
            }
            _ => vec![None; bounds.len() - 1],
        };
        let expect_lock = OnceLock::new();
        if let Some(e) = expect {
            let _ = expect_lock.set(e);
        }
        Ok(FileCtx {
            job,
            bucket,
            key,
            place,
            file,
            size,
            bounds,
            whole: single,
            etag: pinned,
            expect: expect_lock,
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

    /// Learn what the plan did not say: the size (one HEAD) and, for a file fetched in parts,
    /// what it must match, before any part starts (no single answer carries the full-object
    /// checksum, and a multipart ETag decides where the parts fall). Returns whether the file
    /// is fetched whole, and what it must match when that is known now.
    async fn learn_object(
        &self,
        job: &mut Job,
        bucket: &str,
        key: &str,
    ) -> Result<(bool, Option<Expect>), FinishError> {
        let mut head = None;
        if job.entry.size.is_none() {
            let Some(info) = self.s3.head(bucket, key).await? else {
                let e = S3::make_error("HEAD", bucket, key, ErrorKind::NotFound, Detail::None);
                return Err(e.into());
            };
            job.entry.size = Some(info.size);
            job.entry.etag = job.entry.etag.take().or(info.etag.clone());
            head = Some(info);
        }
        if job.entry.size.unwrap_or(0) <= self.part_size {
            return Ok((true, None));
        }
        if !self.verify {
            return Ok((false, Some(Expect::Nothing)));
        }
        let looked = match job.lookup.take() {
            Some(early) if head.is_none() => early.await.expect("HEAD task does not panic"),
            _ => self.multi_part_expect(bucket, key, head).await,
        };
        match looked {
            Ok((info, e)) => {
                // The archive's object now: a replacement since planning is what we fetch.
                job.entry.size = Some(info.size);
                job.entry.etag = info.etag.or(job.entry.etag.take());
                Ok((false, Some(e)))
            }
            // A server that cannot answer a HEAD at all (not "missing", not "denied"): the
            // first GET's answer decides, as for a single GET, and nothing is failed for want
            // of a HEAD the download itself does not need.
            Err(e) if e.kind == ErrorKind::Other => Ok((false, None)),
            Err(e) => Err(e.into()),
        }
    }

    /// Create the folders and the temporary file, or continue an earlier run's. `header` is
    /// the resume log's of a file fetched in parts (`None`: one request, no log). Returns the
    /// file, its resume log and the ETag its bytes are pinned to (`etag` unless the log says).
    fn open_temp(
        &self,
        place: &Place,
        header: Option<StateHeader>,
        etag: Option<String>,
    ) -> Result<(File, Option<File>, Option<String>), FinishError> {
        let (tmp, state) = (&place.tmp, &place.state);
        self.folders.make(place)?;
        let Some(header) = header else {
            let file = place.create_tmp()?;
            let _ = fs::remove_file(state); // left by a run with a smaller part size
            return Ok((file, None, etag));
        };
        if let Some(etag) = resumable(tmp, state, &header) {
            let file = place.open_tmp()?;
            let log = OpenOptions::new()
                .append(true)
                .open(state)
                .map_err(io_err("cannot open", state))?;
            return Ok((file, Some(log), etag));
        }
        let file = place.create_tmp()?;
        file.set_len(header.size)
            .map_err(io_err("cannot size", tmp))?;
        let mut log = File::create(state).map_err(io_err("cannot create", state))?;
        let mut line = serde_json::to_vec(&header).expect("header serializes");
        line.push(b'\n');
        log.write_all(&line)
            .map_err(io_err("cannot write", state))?;
        Ok((file, Some(log), etag))
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
            None
        } else {
            Some(self.fetch_part(&ctx, part).await)
        };
        drop(permit);
        match res {
            Some(Ok(digest)) => {
                // The resume log is what lets a killed run skip this part next time.
                if let Some(log) = &ctx.log {
                    let _ = log
                        .lock()
                        .unwrap()
                        .write_all(format!("{part}\n").as_bytes());
                }
                ctx.done.lock().unwrap()[part as usize] = Some(digest);
                self.announce(&ctx);
            }
            None => {}
            Some(Err(e)) => {
                if e.changed() {
                    ctx.changed.store(true, Ordering::Relaxed);
                }
                let mut slot = ctx.error.lock().unwrap();
                // Keep the most telling error: a change beats a failure it caused.
                if slot.as_ref().is_none_or(|old| !old.changed()) {
                    *slot = Some(e);
                }
            }
        }
        self.part_done(ctx, tx).await;
    }

    /// What a file is checked against when no answer said more (an empty object).
    fn expect_from_plan(&self, ctx: &FileCtx) -> Expect {
        if !self.verify {
            return Expect::Nothing;
        }
        Expect::from_etag(ctx.etag.get().map(String::as_str))
    }

    /// One ranged GET (or the whole object), retried from the last byte received; returns the
    /// digests of its bytes, taken as they arrived.
    async fn fetch_part(&self, ctx: &FileCtx, part: u64) -> Result<PartDigest, PartError> {
        let (start, len) = ctx.part_range(part);
        if len == 0 {
            let expect = ctx.expect.get_or_init(|| self.expect_from_plan(ctx));
            return Ok(PartHasher::new(expect).finish());
        }
        let end = start + len - 1;
        let mut pos = 0u64;
        let mut backoff = Backoff::new(&self.retry);
        // Made at the first answer: a single GET learns there what to hash.
        let mut hasher: Option<PartHasher> = None;
        loop {
            let from = start + pos;
            let range = (!ctx.whole || pos > 0).then_some((from, end));
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
                    let h = hasher.get_or_insert_with(|| {
                        let expect = ctx.expect.get_or_init(|| {
                            if !self.verify {
                                return Expect::Nothing;
                            }
                            let etag = resp.etag.as_deref().or(ctx.etag.get().map(String::as_str));
                            Expect::from_published(resp.checksum.as_ref(), etag)
                        });
                        PartHasher::new(expect)
                    });
                    let (n, end) = self.stream_body(ctx, resp.body, from, len - pos, h).await;
                    pos += n;
                    match end {
                        // Every byte arrived; an error after them (a client layer's own
                        // checksum check at the end of a body) leaves the file's check to
                        // decide, and a retry would ask for an empty range.
                        _ if pos == len => return Ok(h.finish()),
                        Ok(()) => ctx.make_error(
                            ErrorKind::Transient,
                            format!("body ended after {n} bytes"),
                        ),
                        Err(PartError::S3(e)) => e,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => e,
            };
            if !backoff.wait(&err).await {
                return Err(err.into());
            }
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
                    format!("ETag {pinned} was planned, {got} answered"),
                ));
            }
            ctx.note_etag(got);
        }
        match (range, resp.content_range) {
            (Some((start, end)), Some((s, e, total))) => {
                if total != ctx.size {
                    return Err(ctx.make_error(
                        ErrorKind::Changed,
                        format!("size {} was planned, {total} answered", ctx.size),
                    ));
                }
                if (s, e) != (start, end) {
                    return Err(ctx.make_error(
                        ErrorKind::Other,
                        format!("asked for bytes {start}-{end}, got {s}-{e}"),
                    ));
                }
            }
            (Some((start, end)), None) => {
                // Only acceptable when the range was the whole object.
                if !(start == 0 && end + 1 == ctx.size && resp.content_length == Some(ctx.size)) {
                    return Err(ctx.make_error(
                        ErrorKind::Other,
                        format!("asked for bytes {start}-{end}, the server ignored the range"),
                    ));
                }
            }
            (None, _) => {
                if let Some(n) = resp.content_length {
                    if n != ctx.size {
                        return Err(ctx.make_error(
                            ErrorKind::Changed,
                            format!("size {} was planned, {n} answered", ctx.size),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Write a body at its offset as chunks arrive, hashing each chunk on the way (the bytes
    /// are in cache now; reading them back later would cost a second pass). Returns the bytes
    /// written, and why the body stopped short if it did.
    async fn stream_body(
        &self,
        ctx: &FileCtx,
        mut body: crate::s3::Body,
        offset: u64,
        want: u64,
        hasher: &mut PartHasher,
    ) -> (u64, Result<(), PartError>) {
        let (got, end) = net::body_to_file(
            &self.retry,
            &mut body,
            &ctx.file,
            offset,
            Some(want),
            |chunk| {
                hasher.update(chunk);
                let n = chunk.len() as u64;
                ctx.counted.fetch_add(n, Ordering::Relaxed);
                self.report.bytes(Tally::Received(n));
            },
        )
        .await;
        let fault = match end {
            Ok(()) => return (got, Ok(())),
            Err(fault) => fault,
        };
        // A stalled, dripping or broken connection is retried on a new one, resuming from `got`.
        let err = match fault {
            BodyFault::Read(ReadFault::TooSlow(slow)) => {
                let mut e = ctx.make_error(ErrorKind::Transient, "body".into());
                e.source = Some(Box::new(slow));
                e.into()
            }
            BodyFault::Read(ReadFault::Broken(cause)) => {
                let mut e = ctx.make_error(ErrorKind::Transient, "body interrupted".into());
                e.source = Some(cause);
                e.into()
            }
            BodyFault::TooLong { limit } => ctx
                .make_error(
                    ErrorKind::Other,
                    format!("server sent more than the {limit} bytes asked"),
                )
                .into(),
            BodyFault::Disk(e) => crate::dest::disk("cannot write", &ctx.place.tmp)(e).into(),
        };
        (got, Err(err))
    }

    /// Called once per part and once by the scheduler; the last caller finishes the file.
    async fn part_done(self: &Arc<Self>, ctx: Arc<FileCtx>, tx: mpsc::UnboundedSender<Msg>) {
        if ctx.remaining.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let err = ctx.error.lock().unwrap().take();
        match err {
            Some(e) if e.changed() && ctx.job.restarts < MAX_RESTARTS => {
                self.restart(&ctx, &tx, "changed in the archive while downloading")
                    .await;
            }
            Some(e) => {
                ctx.digest.cancel();
                if e.changed() {
                    ctx.place.discard();
                }
                // Other failures keep the temporary file and its log: a rerun resumes.
                self.finish_file(&ctx.job.entry, Err(e.into()), ctx.started, &tx);
            }
            None => {
                let res = self.finish(&ctx).await;
                if let Err(FinishError::Mismatch { what, .. }) = &res {
                    if ctx.job.restarts < MAX_RESTARTS {
                        // The bytes are not the archive's: damaged in transit or at rest. No
                        // part is known to be the bad one (a full-object value does not say),
                        // so the whole file is fetched again rather than any part trusted.
                        let why = format!("content did not match its {what}");
                        self.restart(&ctx, &tx, &why).await;
                        return;
                    }
                }
                let mut entry = ctx.job.entry.clone();
                if entry.etag.is_none() {
                    entry.etag = ctx.etag.get().cloned();
                }
                self.finish_file(&entry, res, ctx.started, &tx);
            }
        }
    }

    /// Wait for the serial digests, learn a late part layout, then check and rename.
    async fn finish(self: &Arc<Self>, ctx: &Arc<FileCtx>) -> Result<Done, FinishError> {
        let want = self.pool_want(ctx);
        if want.any() {
            ctx.digest
                .wait(ctx.size)
                .await
                .map_err(io_err("cannot read back", &ctx.place.tmp))?;
        }
        let mut expect = ctx
            .expect
            .get()
            .cloned()
            .unwrap_or_else(|| self.expect_from_plan(ctx));
        // A multipart ETag learned from a single GET's answer: its layout now, then the
        // parts are hashed back from disk (small files only: larger ones learn it first).
        let mut layout = None;
        if let Expect::Md5PartsLater { etag } = &expect {
            let n = checksum::multipart_etag_parts(etag).expect("a multipart ETag");
            match self.upload_parts(&ctx.bucket, &ctx.key, ctx.size, n).await {
                Some(parts) => layout = Some(parts),
                None => {
                    expect = Expect::Size {
                        note: Some(NO_LAYOUT.to_string()),
                    }
                }
            }
        }
        let this = self.clone();
        let ctx2 = ctx.clone();
        tokio::task::spawn_blocking(move || this.finish_blocking(&ctx2, expect, layout, want))
            .await
            .expect("finish task does not panic")
    }

    /// Throw away what a file has and queue it again, with the archive's current size and ETag.
    async fn restart(&self, ctx: &FileCtx, tx: &mpsc::UnboundedSender<Msg>, why: &str) {
        ctx.digest.cancel();
        self.report
            .bytes(Tally::GaveBack(ctx.counted.load(Ordering::Relaxed)));
        ctx.place.discard();
        let mut entry = ctx.job.entry.clone();
        match self.s3.head(&ctx.bucket, &ctx.key).await {
            Ok(Some(info)) => {
                self.report
                    .note(&format!("{}: {why}; starting it again", entry.dest));
                entry.size = Some(info.size);
                entry.etag = info.etag;
                let restarts = ctx.job.restarts + 1;
                let _ = tx.send(Msg::Requeue(Box::new(Job {
                    entry,
                    restarts,
                    lookup: None,
                })));
            }
            Ok(None) => {
                let gone = ctx.make_error(
                    ErrorKind::NotFound,
                    "removed from the bucket during download".into(),
                );
                self.finish_file(&entry, Err(gone.into()), ctx.started, tx);
            }
            Err(e) => {
                self.finish_file(&entry, Err(e.into()), ctx.started, tx);
            }
        }
    }

    /// Check the temporary file's size and digests against `expect`, and rename it into place.
    /// Bytes that fail are removed: they never reach the final name, nor a later resume.
    fn finish_blocking(
        &self,
        ctx: &FileCtx,
        expect: Expect,
        layout: Option<Vec<u64>>,
        want: Want,
    ) -> Result<Done, FinishError> {
        let got = fs::metadata(&ctx.place.tmp)
            .map_err(io_err("cannot stat", &ctx.place.tmp))?
            .len();
        if got != ctx.size {
            return Err(FinishError::Size {
                got,
                want: ctx.size,
            });
        }
        let parts: Vec<(PartDigest, u64)> = {
            let done = ctx.done.lock().unwrap();
            done.iter()
                .enumerate()
                .map(|(p, d)| (d.expect("every part is done"), ctx.part_len(p as u64)))
                .collect()
        };
        let crc64 = CrcAlg::Crc64Nvme.combine(parts.iter().map(|(d, len)| (d.crc64, *len)));
        let serial = ctx.digest.finish(want);
        let expect = match compare(expect, &parts, crc64, &serial, layout, &ctx.place.tmp) {
            Err(e @ FinishError::Mismatch { .. }) => {
                ctx.place.discard();
                return Err(e);
            }
            res => res?,
        };
        ctx.place.put_in_place()?;
        Ok(Done {
            size: ctx.size,
            expect,
            crc64nvme: checksum::crc64_b64(crc64),
            sha256: self
                .sha256
                .then(|| serial.sha256.map(|d| checksum::hex(&d)))
                .flatten(),
        })
    }

    /// The serial digests a file needs from the read-back pool (none for most).
    fn pool_want(&self, ctx: &FileCtx) -> Want {
        let expect = ctx.expect.get();
        Want {
            md5: matches!(expect, Some(Expect::Md5 { .. })),
            sha256: self.sha256 || matches!(expect, Some(Expect::Sha256 { .. })),
        }
    }

    /// Hand the hash pool the unbroken run of parts on disk from the start of the file.
    fn announce(&self, ctx: &FileCtx) {
        let want = self.pool_want(ctx);
        if !want.any() {
            return;
        }
        let end = {
            let done = ctx.done.lock().unwrap();
            let run = done.iter().take_while(|d| d.is_some()).count();
            ctx.bounds[run]
        };
        self.hash.ready(&ctx.digest, end, want);
    }

    async fn fetch_mast(&self, entry: &PlanEntry) -> Result<Done, FinishError> {
        let Some(mast) = &self.mast else {
            return Err(FinishError::NoMast("--s3-only"));
        };
        let place = Place::of(&self.dir, &entry.dest)?;
        let hashers = self.hashers.clone();
        let (size, crc64nvme, sha256) = mast
            .download(
                entry,
                &place,
                &self.folders,
                &|t| self.report.bytes(t),
                hashers,
                self.sha256,
            )
            .await?;
        Ok(Done {
            size,
            // MAST publishes no checksum: the size (checked by the download) is the proof.
            expect: if self.verify {
                Expect::Size { note: None }
            } else {
                Expect::Nothing
            },
            crc64nvme,
            sha256,
        })
    }

    /// The end of one file the engine fetched (or could not): its manifest line, its report,
    /// and the scheduler told that it is settled. Every transfer ends here, once.
    fn finish_file(
        &self,
        entry: &PlanEntry,
        res: Result<Done, FinishError>,
        started: Instant,
        tx: &mpsc::UnboundedSender<Msg>,
    ) {
        self.record(entry, res, started);
        let _ = tx.send(Msg::Finished);
    }

    /// Write the outcome of one file to the manifest and the report.
    fn record(&self, entry: &PlanEntry, res: Result<Done, FinishError>, started: Instant) {
        let res_kind = res
            .as_ref()
            .err()
            .map(|e| matches!(e, FinishError::NotStarted) || is_disk_full(e));
        let (status, done, message) = match res {
            Ok(done) => {
                let note = match &done.expect {
                    Expect::Size { note: Some(n) } => Some(n.clone()),
                    _ => None,
                };
                (Status::Ok, Some(done), note)
            }
            // MAST refusing a product to an anonymous user means exclusive access, which the
            // plan could not know for items named only by URI: excluded, not failed.
            Err(FinishError::Mast(crate::https::HttpsError::Status {
                status: 401 | 403, ..
            })) if !self.mast.as_ref().is_some_and(|m| m.has_token()) => {
                (Status::Excluded, None, Some(EXCLUDED_MESSAGE.to_string()))
            }
            Err(e) => (Status::Failed, None, Some(text::chain(&e))),
        };
        let full = matches!(&res_kind, Some(e) if *e);
        if full {
            self.disk_full.store(true, Ordering::Relaxed);
            self.unfetched.0.fetch_add(1, Ordering::Relaxed);
            self.unfetched
                .1
                .fetch_add(entry.size.unwrap_or(0), Ordering::Relaxed);
        }
        let mut line = Entry::from_plan(entry, status, message.clone());
        let bytes = done.as_ref().map_or(0, |d| d.size);
        if let Some(d) = done {
            line.checksum = d.expect.manifest_checksum();
            line.verified = Some(d.expect.verified().to_string());
            line.crc64nvme = Some(d.crc64nvme);
            line.sha256 = d.sha256;
            if line.size.is_none() {
                line.size = Some(d.size);
            }
        }
        if let (Status::Ok, Some(note)) = (status, &message) {
            self.report.note(&format!("{}: {note}", entry.dest));
        }
        if let Err(e) = self.manifest.lock().unwrap().record(line) {
            if !self.manifest_error_said.swap(true, Ordering::Relaxed) {
                self.report.error(&text::chain(&e));
            }
        }
        self.summary.lock().unwrap().count(status, bytes);
        self.report.file_done(&FileEvent {
            status,
            path: &entry.dest,
            uri: &entry.uri,
            source: entry.source.as_str(),
            bytes,
            seconds: started.elapsed().as_secs_f64(),
            message: message.as_deref(),
            quiet: full,
        });
    }
}

/// Why a multipart ETag could not be checked (manifest message of a size-only file).
const NO_LAYOUT: &str = "multipart ETag not checked: the server did not give the upload part \
     layout (HEAD ?partNumber=1); verified by size only";

/// How a mismatch names the value it missed.
fn checksum_name(alg: CrcAlg) -> &'static str {
    match alg {
        CrcAlg::Crc64Nvme => "crc64nvme checksum",
        CrcAlg::Crc32c => "crc32c checksum",
        CrcAlg::Crc32 => "crc32 checksum",
    }
}

impl FileCtx {
    fn parts(&self) -> u64 {
        self.bounds.len() as u64 - 1
    }

    fn part_range(&self, part: u64) -> (u64, u64) {
        let p = part as usize;
        (self.bounds[p], self.bounds[p + 1] - self.bounds[p])
    }

    fn part_len(&self, part: u64) -> u64 {
        self.part_range(part).1
    }

    /// What we found wrong with a GET's answer.
    fn make_error(&self, kind: ErrorKind, found: String) -> S3Error {
        S3::make_error("GET", &self.bucket, &self.key, kind, Detail::Found(found))
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

/// Compare a complete temporary file's digests with what it must match: the per-part digests
/// (`parts`, with their lengths, and their combined CRC-64/NVME), the serial ones, or the file
/// read back along a late upload `layout`. Returns the proof as recorded (a late layout filled
/// in), or [`FinishError::Mismatch`] naming both values.
fn compare(
    expect: Expect,
    parts: &[(PartDigest, u64)],
    crc64: u64,
    serial: &hashing::Digests,
    layout: Option<Vec<u64>>,
    tmp: &Path,
) -> Result<Expect, FinishError> {
    let mismatch = |what: &'static str, got: String, want: &str| {
        Err(FinishError::Mismatch {
            what,
            got,
            want: want.to_string(),
        })
    };
    match &expect {
        Expect::Crc { alg, value } => {
            let crc = match alg {
                CrcAlg::Crc64Nvme => crc64,
                _ => alg.combine(
                    parts
                        .iter()
                        .map(|(d, len)| (d.extra.expect("extra CRC taken"), *len)),
                ),
            };
            let got = alg.encode(crc);
            if got != *value {
                return mismatch(checksum_name(*alg), format!("{} {got}", alg.name()), value);
            }
        }
        Expect::Sha256 { value } => {
            let got = checksum::b64(&serial.sha256.expect("SHA-256 taken"));
            if got != *value {
                return mismatch("sha256 checksum", format!("sha256 {got}"), value);
            }
        }
        Expect::Md5 { etag } => {
            let md5 = checksum::hex(&serial.md5.expect("MD5 taken"));
            if !md5.eq_ignore_ascii_case(etag) {
                return mismatch("ETag", format!("MD5 {md5}"), etag);
            }
        }
        Expect::Md5Parts { etag, .. } => {
            let md5s: Vec<[u8; 16]> = parts
                .iter()
                .map(|(d, _)| d.md5.expect("part MD5 taken"))
                .collect();
            let got = checksum::multipart_etag(&md5s);
            if !got.eq_ignore_ascii_case(etag) {
                return mismatch("ETag", format!("part MD5s {got}"), etag);
            }
        }
        Expect::Md5PartsLater { etag } => {
            let upload = layout.expect("layout learned");
            let got = checksum::multipart_etag_of_file(tmp, &upload)
                .map_err(io_err("cannot read back", tmp))?;
            if !got.eq_ignore_ascii_case(etag) {
                return mismatch("ETag", format!("part MD5s {got}"), etag);
            }
            return Ok(Expect::Md5Parts {
                etag: etag.clone(),
                parts: upload,
            });
        }
        Expect::Size { .. } | Expect::Nothing => {}
    }
    Ok(expect)
}

/// Where the parts of a `size`-byte object fall (part `p` is `bounds[p]..bounds[p + 1]`): the
/// object's own upload parts when they are the proof, one part for a file fetched whole, else
/// `part_size` pieces.
fn part_bounds(size: u64, whole: bool, upload_parts: Option<&[u64]>, part_size: u64) -> Vec<u64> {
    match upload_parts {
        Some(parts) => std::iter::once(0)
            .chain(parts.iter().scan(0u64, |at, len| {
                *at += len;
                Some(*at)
            }))
            .collect(),
        None if whole => vec![0, size],
        None => (0..size.div_ceil(part_size))
            .map(|p| p * part_size)
            .chain([size])
            .collect(),
    }
}

/// The digests of the parts an earlier run finished (from its resume log), taken again from
/// the bytes on disk; `None` for every part still to fetch.
async fn resumed_parts(
    file: &File,
    state: &Path,
    bounds: &[u64],
    expect: &Expect,
) -> io::Result<Vec<Option<PartDigest>>> {
    let parts = bounds.len() - 1;
    let finished: Vec<u64> = read_done_parts(state)
        .into_iter()
        .filter(|&p| (p as usize) < parts)
        .collect();
    let (file2, bounds2, expect2) = (file.try_clone(), bounds.to_vec(), expect.clone());
    let digests = tokio::task::spawn_blocking(move || {
        let file2 = file2?;
        finished
            .into_iter()
            .map(|p| {
                let (at, len) = (bounds2[p as usize], bounds2[p as usize + 1]);
                Ok((p, PartHasher::of_range(&expect2, &file2, at, len - at)?))
            })
            .collect::<io::Result<Vec<_>>>()
    })
    .await
    .expect("re-hash task does not panic")?;
    let mut done = vec![None; parts];
    for (p, d) in digests {
        done[p as usize] = Some(d);
    }
    Ok(done)
}

/// Parts already written by an earlier run, from the resume log.
fn read_done_parts(state: &Path) -> std::collections::BTreeSet<u64> {
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
        && header.parts == want.parts
        && same_object
        && fs::metadata(tmp).ok()?.len() == want.size;
    ok.then_some(want.etag.clone().or(etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_names_both_values_and_keeps_the_proof() {
        let serial = hashing::Digests {
            sha256: None,
            md5: Some([0xab; 16]),
        };
        let tmp = Path::new("unused");
        let md5 = |etag: &str| Expect::Md5 { etag: etag.into() };
        let same = "ab".repeat(16);
        // ETags are compared without regard to case.
        let ok = compare(md5(&same.to_uppercase()), &[], 0, &serial, None, tmp).unwrap();
        assert_eq!(ok, md5(&same.to_uppercase()));
        let other = "cd".repeat(16);
        match compare(md5(&other), &[], 0, &serial, None, tmp) {
            Err(FinishError::Mismatch { what, got, want }) => {
                assert_eq!((what, want), ("ETag", other));
                assert_eq!(got, format!("MD5 {same}"));
            }
            r => panic!("expected a mismatch, got {:?}", r.map(|_| ())),
        }
        let size = Expect::Size { note: None };
        assert_eq!(
            compare(size.clone(), &[], 0, &serial, None, tmp).unwrap(),
            size
        );
    }

    #[test]
    fn parts_fall_on_upload_parts_part_size_or_one_whole() {
        // The object's own upload parts, when its multipart ETag is the proof.
        assert_eq!(
            part_bounds(25, false, Some(&[10, 10, 5]), 8),
            [0, 10, 20, 25]
        );
        // A file fetched whole: one part, whatever the part size.
        assert_eq!(part_bounds(7, true, None, 8), [0, 7]);
        assert_eq!(part_bounds(0, true, None, 8), [0, 0]);
        // Otherwise `part_size` pieces, the last one short.
        assert_eq!(part_bounds(20, false, None, 8), [0, 8, 16, 20]);
        assert_eq!(part_bounds(16, false, None, 8), [0, 8, 16]);
    }

    #[test]
    fn a_resume_log_is_continued_only_for_the_same_object_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, state) = (dir.path().join("t"), dir.path().join("s"));
        let header = |etag: Option<&str>| StateHeader {
            size: 16,
            part_size: 8,
            etag: etag.map(str::to_string),
            parts: None,
        };
        std::fs::write(&tmp, [0u8; 16]).unwrap();
        let mut log = serde_json::to_string(&header(None)).unwrap();
        log.push_str("\netag \"abc\"\n1\n");
        std::fs::write(&state, log).unwrap();
        // The ETag learned in the log pins the bytes; parts written are listed.
        assert_eq!(
            resumable(&tmp, &state, &header(None)),
            Some(Some("\"abc\"".to_string()))
        );
        assert_eq!(read_done_parts(&state).into_iter().collect::<Vec<_>>(), [1]);
        // Another object (ETag), another part size or a short file: start over.
        assert_eq!(resumable(&tmp, &state, &header(Some("\"xyz\""))), None);
        let other = StateHeader {
            part_size: 4,
            ..header(None)
        };
        assert_eq!(resumable(&tmp, &state, &other), None);
        std::fs::write(&tmp, [0u8; 15]).unwrap();
        assert_eq!(resumable(&tmp, &state, &header(None)), None);
    }
}
