//! The transfer engine: every byte of a `get` comes through here.
//!
//! Owns the scheduling of a run: the one request budget (`--jobs`) shared by all files and
//! parts, largest first, the early HEADs of the files ahead, one task a missing part, what
//! happens when a file's last part ends (finish, restart, or fail), restarts of an object
//! replaced mid-download, and MAST downloads (`https`). Every file it fetches ends in
//! `finish_file` (the manifest line and the report through `outcome::Ledger`, the scheduler
//! told); files settled without a transfer come through [`Engine::settle`], so the engine
//! writes every manifest line of a run. It tells what happens to a `progress::Reporter` (it
//! knows no display) and returns an `outcome::Summary`. The only module that spawns transfer
//! tasks. The part protocol it drives lives beside it, each part in its own module, none of
//! which knows the engine: `parts` (one file's shared state, set-up and finish), `part_get`
//! (one ranged GET), `proof` (what a file must match, the comparison), `resume` (the resume
//! log), `outcome` (the books).
//!
//! # The part protocol
//!
//! Design note for whoever changes the engine; these modules implement these rules.
//!
//! **Scheduling.** [`Engine::run`] takes files largest first. Requeued files (restarts) go
//! before new ones. For the next [`LOOKAHEAD`] files that will be fetched in parts, the HEAD
//! that learns their proof starts early, so the scheduler waits no round trip per file. Every
//! request (a part GET, a whole-object GET, a MAST download) holds a place in the shared
//! `--jobs` budget until it is answered, and a bulk one (over [`LATENCY_BOUND`]) a bulk place
//! too; a file holds no place of its own.
//!
//! **States of a file.** `prepare` -> parts in flight -> `finish` -> recorded, or back to the
//! queue:
//! 1. `prepare` (`parts`) learns the size (a HEAD if the plan has none) and, for a file
//!    larger than one part, what it must match first (`proof::multi_part_expect`: the
//!    full-object checksum, or a multipart ETag, whose upload parts then become the part
//!    bounds so each part's MD5 can be taken on arrival). A file of one part learns it from
//!    its GET's answer instead. It creates the temporary file under `DIR/.mastfetch/`
//!    (`dest::Place`) or continues one (below), and computes the parts not yet on disk.
//! 2. Each missing part is one task (`run_part` -> `part_get`'s `fetch_part`): a ranged GET
//!    with `If-Match` on the pinned ETag; `check_response` checks the status, the ETag and
//!    the Content-Range that answered; `stream_body` writes the bytes at their offset and
//!    feeds the part's digests as they arrive, resuming a broken body from the last byte
//!    received (retries are per request, not per file). A part that finds a sibling already
//!    failed or the object changed spends no request.
//! 3. The last part to end (a counter, `remaining`, that the scheduler also holds one unit of,
//!    so a file already complete on disk still finishes) calls `part_done`, which decides:
//!    no error -> `finish`; the object changed (`ErrorKind::Changed`: If-Match failed, or
//!    another ETag answered) -> `restart`; any other error -> recorded as failed, the
//!    temporary file and its log kept so the next run resumes.
//! 4. `finish` (`parts`) waits for the serial digests (`hashing`, read back from the page
//!    cache), learns a late upload layout if a single GET revealed a multipart ETag, then
//!    `finish_blocking` compares size and digests with the expectation (`checksum::Expect`,
//!    `proof::compare`). A match is renamed into place and recorded by `finish_file`
//!    (manifest line, report, the scheduler told: every transfer ends there once); a mismatch
//!    deletes the bytes (they never reach the final name nor a later resume) and restarts.
//!
//! **Restarts.** `restart` gives back the bytes counted for the file, deletes its temporary
//! file and log, asks the archive (HEAD) for the object's current size and ETag, and requeues
//! the file with them; at most [`MAX_RESTARTS`] times, then the last error is recorded. An
//! object gone from the bucket is recorded as failed.
//!
//! **The resume log** (`state` beside the temporary file, multi-part files only): a JSON
//! `resume::StateHeader` (size, part size, ETag, upload part lengths), then `etag <value>` once the
//! first answer pins an ETag the plan did not have, then one line per part written. A later
//! run continues the file only if the header matches what it would write now, the ETag is the
//! same and the temporary file has the full size (`resume::resumable`). A logged part is only a
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
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::checksum::Expect;
use crate::dest::{Folders, Place};
use crate::hashing::HashPool;
use crate::https::MastHttps;
use crate::manifest::{self, Entry};
use crate::net::Tally;
use crate::outcome::{Done, FinishError, Ledger, Summary};
use crate::parts::{Fetcher, FileCtx, Job};
use crate::plan::{PlanEntry, Source};
use crate::progress::Reporter;
use crate::proof::multi_part_expect;
use crate::retry::RetryPolicy;
use crate::s3::{ErrorKind, S3};

/// An object replaced while we fetch it is fetched again from scratch, but not forever.
pub(crate) const MAX_RESTARTS: u32 = 3;

pub(crate) struct Engine {
    /// What every file fetched from the bucket shares: the part protocol's side.
    parts: Arc<Fetcher>,
    mast: Option<Arc<MastHttps>>,
    report: Arc<dyn Reporter>,
    /// The manifest, the report of outcomes, the summary.
    ledger: Ledger,
    /// The one request budget (`--jobs`): permits held until the request is answered.
    jobs: Budget,
    /// Turns for hashing MAST downloads (one file each, at its end).
    hashers: Arc<Semaphore>,
}

/// Files ahead of the scheduler whose HEADs run early (at most this many HEADs at once).
const LOOKAHEAD: usize = 8;

/// A request for at most this many bytes is latency-bound and does not count against the bulk
/// budget: at S3's ~85-90 MB/s a connection, 1 MiB arrives in ~12 ms, less than the 15-60 ms
/// its first byte takes, so more of them in flight add files/s without crowding the link.
pub(crate) const LATENCY_BOUND: u64 = 1 << 20;

/// The request budget: every request holds a permit of `all`; bulk ones (larger than
/// [`LATENCY_BOUND`], or of unknown size) one of `bulk` too.
struct Budget {
    all: Arc<Semaphore>,
    bulk: Arc<Semaphore>,
}

/// One request's place in the budget, given back when dropped.
pub(crate) struct Permit {
    _all: OwnedSemaphorePermit,
    _bulk: Option<OwnedSemaphorePermit>,
}

impl Budget {
    fn new(requests: usize, bulk: usize) -> Budget {
        Budget {
            all: Arc::new(Semaphore::new(requests)),
            bulk: Arc::new(Semaphore::new(bulk)),
        }
    }

    async fn permit(&self, len: Option<u64>) -> Permit {
        // Bulk first: a bulk request waiting for a bulk slot holds no general one meanwhile,
        // so small files keep flowing past it.
        let bulk = match len {
            Some(n) if n <= LATENCY_BOUND => None,
            _ => Some(acquire(&self.bulk).await),
        };
        Permit {
            _all: acquire(&self.all).await,
            _bulk: bulk,
        }
    }
}

pub(crate) enum Msg {
    Requeue(Box<Job>),
    Finished,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        s3: S3,
        mast: Option<Arc<MastHttps>>,
        dir: PathBuf,
        (requests, bulk): (usize, usize),
        hash_threads: usize,
        part_size: u64,
        retry: RetryPolicy,
        report: Arc<dyn Reporter>,
        manifest: manifest::Writer,
        verify: bool,
        sha256: bool,
    ) -> Arc<Engine> {
        let has_token = mast.as_ref().is_some_and(|m| m.has_token());
        let parts = Fetcher {
            s3,
            dir,
            part_size,
            retry,
            report: report.clone(),
            verify,
            sha256,
            // `hash_threads` (the cores): half of them hash, the rest move bytes. On this 2-core
            // machine one worker with all 8 big files in its MD5 lanes beat two workers with 4
            // each (4.3 against 6.6 CPU-s for the big bench set; wall 4.2 against 4.2-4.6 s).
            hash: HashPool::new(hash_threads.div_ceil(2)),
            folders: Folders::default(),
        };
        Arc::new(Engine {
            parts: Arc::new(parts),
            mast,
            ledger: Ledger::new(manifest, report.clone(), has_token),
            report,
            jobs: Budget::new(requests, bulk),
            hashers: Arc::new(Semaphore::new(hash_threads)),
        })
    }

    /// Record a file the run settles without a transfer (see [`Ledger::settle`]).
    pub(crate) fn settle(
        &self,
        entry: &PlanEntry,
        line: Entry,
        shown: Option<(u64, Option<&str>)>,
    ) -> Result<(), manifest::ManifestError> {
        self.ledger.settle(entry, line, shown)
    }

    /// Write the manifest's last state once the run is over.
    pub(crate) fn finish_manifest(&self) -> Result<(), manifest::ManifestError> {
        self.ledger.finish_manifest()
    }

    /// DIR, where the run's files land.
    pub(crate) fn dir(&self) -> &Path {
        &self.parts.dir
    }

    /// Fetch every entry; largest first so that the run does not end waiting on one big file.
    /// Returns what the run settled (files settled before through [`Engine::settle`] included).
    pub(crate) async fn run(self: &Arc<Self>, entries: Vec<PlanEntry>) -> Summary {
        self.schedule(entries).await;
        self.ledger.summary()
    }

    pub(crate) async fn schedule(self: &Arc<Self>, mut entries: Vec<PlanEntry>) {
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
    pub(crate) fn look_ahead(self: &Arc<Self>, job: &mut Job) {
        let e = &job.entry;
        let multi_part = e.size.is_some_and(|s| s > self.parts.part_size);
        if job.lookup.is_some() || !self.parts.verify || e.source != Source::S3 || !multi_part {
            return;
        }
        let (Some(bucket), Some(key)) = (e.bucket.clone(), e.key.clone()) else {
            return;
        };
        let parts = self.parts.clone();
        job.lookup = Some(tokio::spawn(async move {
            multi_part_expect(&parts.s3, &bucket, &key, None).await
        }));
    }

    /// One request's place in the shared budget, held until the request is answered: `len` is
    /// the bytes it asks for (`None`: unknown).
    pub(crate) async fn request_permit(&self, len: Option<u64>) -> Permit {
        self.jobs.permit(len).await
    }

    /// Set up one file and spawn its requests, each holding a permit of the shared budget.
    pub(crate) async fn start(self: &Arc<Self>, job: Job, tx: &mpsc::UnboundedSender<Msg>) {
        self.report.started(&job.entry.dest, job.entry.size);
        if self.ledger.disk_is_full() {
            self.finish_file(&job.entry, Err(FinishError::NotStarted), Instant::now(), tx);
            return;
        }
        if job.entry.source == Source::Mast {
            let permit = self.request_permit(job.entry.size).await;
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
        match self.parts.prepare(job).await {
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
                self.parts.announce(&ctx);
                for part in pending {
                    let permit = self.request_permit(Some(ctx.part_len(part))).await;
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

    pub(crate) async fn run_part(
        self: Arc<Self>,
        ctx: Arc<FileCtx>,
        part: u64,
        permit: Permit,
        tx: mpsc::UnboundedSender<Msg>,
    ) {
        // A sibling part already found the object changed or failed: don't spend a request.
        let skip = ctx.changed.load(Ordering::Relaxed) || ctx.error.lock().unwrap().is_some();
        let res = if skip {
            None
        } else {
            Some(self.parts.fetch_part(&ctx, part).await)
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
                self.parts.announce(&ctx);
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

    /// Called once per part and once by the scheduler; the last caller finishes the file.
    pub(crate) async fn part_done(
        self: &Arc<Self>,
        ctx: Arc<FileCtx>,
        tx: mpsc::UnboundedSender<Msg>,
    ) {
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
                let res = self.parts.finish(&ctx).await;
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

    /// Throw away what a file has and queue it again, with the archive's current size and ETag.
    pub(crate) async fn restart(&self, ctx: &FileCtx, tx: &mpsc::UnboundedSender<Msg>, why: &str) {
        ctx.digest.cancel();
        self.report
            .bytes(Tally::GaveBack(ctx.counted.load(Ordering::Relaxed)));
        ctx.place.discard();
        let mut entry = ctx.job.entry.clone();
        match self.parts.s3.head(&ctx.bucket, &ctx.key).await {
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

    pub(crate) async fn fetch_mast(&self, entry: &PlanEntry) -> Result<Done, FinishError> {
        let Some(mast) = &self.mast else {
            return Err(FinishError::NoMast("--s3-only"));
        };
        let place = Place::of(&self.parts.dir, &entry.dest)?;
        let hashers = self.hashers.clone();
        let (size, crc64nvme, sha256) = mast
            .download(
                entry,
                &place,
                &self.parts.folders,
                &|t| self.report.bytes(t),
                hashers,
                self.parts.sha256,
            )
            .await?;
        Ok(Done {
            size,
            // MAST publishes no checksum: the size (checked by the download) is the proof.
            expect: if self.parts.verify {
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
    pub(crate) fn finish_file(
        &self,
        entry: &PlanEntry,
        res: Result<Done, FinishError>,
        started: Instant,
        tx: &mpsc::UnboundedSender<Msg>,
    ) {
        self.ledger.record(entry, res, started);
        let _ = tx.send(Msg::Finished);
    }
}

async fn acquire(s: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    s.clone().acquire_owned().await.expect("semaphore open")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_requests_pass_a_full_bulk_budget_and_all_keep_to_the_total() {
        let budget = Budget::new(4, 2);
        let big = Some(LATENCY_BOUND + 1);
        let (_a, _b) = (budget.permit(big).await, budget.permit(None).await);
        // The bulk budget is spent: a third bulk request waits, a small one does not.
        let third = budget.permit(big);
        tokio::pin!(third);
        assert!(futures::poll!(third.as_mut()).is_pending());
        let _c = budget.permit(Some(LATENCY_BOUND)).await;
        let _d = budget.permit(Some(1)).await;
        // Four in flight: even a small one now waits for the total.
        let fifth = budget.permit(Some(1));
        tokio::pin!(fifth);
        assert!(futures::poll!(fifth.as_mut()).is_pending());
        drop(_c);
        assert!(futures::poll!(fifth.as_mut()).is_ready());
    }
}
