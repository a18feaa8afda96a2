//! One S3 object's side of the part protocol (the design note in `transfer`): set a file up
//! (`prepare`, step 1), and once its parts are in, check it and rename it into place
//! (`finish`, step 4).
//!
//! Owns [`Fetcher`], what every file's protocol shares (the client, the policies, DIR's
//! folders, the read-back pool), [`FileCtx`], the state the part tasks of one file share,
//! [`Job`], where parts fall (`part_bounds`), and [`PartError`]: a part fails because of the
//! archive's answer or the connection to it, or because of the local disk, never one
//! reported as the other. It does not schedule (`transfer`), fetch a part (`part_get`), say
//! what the bytes must match (`proof`), nor what the resume log says (`resume`).

use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::checksum::{self, CrcAlg, Expect, PartDigest};
use crate::dest::{DiskError, Folders, Place};
use crate::hashing::{self, HashPool, Want};
use crate::outcome::{io_err, Done, FinishError};
use crate::plan::PlanEntry;
use crate::progress::Reporter;
use crate::proof::{compare, multi_part_expect, upload_parts, NO_LAYOUT};
use crate::resume::{open_temp, resumed_parts, StateHeader};
use crate::retry::RetryPolicy;
use crate::s3::{Detail, ErrorKind, S3Error, S3};

/// State shared by the part tasks of one file.
pub(crate) struct FileCtx {
    pub(crate) job: Job,
    pub(crate) bucket: String,
    pub(crate) key: String,
    /// Its final name, temporary file and resume log.
    pub(crate) place: Place,
    pub(crate) file: File,
    pub(crate) size: u64,
    /// Part `p` is the bytes `bounds[p]..bounds[p + 1]`: `--part-size` pieces, or the object's
    /// own upload parts when its multipart ETag is the proof (each part's MD5 on arrival).
    pub(crate) bounds: Vec<u64>,
    /// One GET for the whole object: it asks for the full-object checksum, and restarts whole.
    pub(crate) whole: bool,
    pub(crate) etag: OnceLock<String>,
    /// What the bytes must match: known before a multi-part file starts, or from the answer of
    /// a single GET.
    pub(crate) expect: OnceLock<Expect>,
    pub(crate) remaining: AtomicU64,
    pub(crate) error: Mutex<Option<PartError>>,
    /// The resume log; only multi-part files have one (a single request restarts whole).
    pub(crate) log: Option<Mutex<File>>,
    /// Digests of the parts on disk (taken as they arrived, or read back on resume); the
    /// unbroken run from the start is what the read-back pool may hash.
    pub(crate) done: Mutex<Vec<Option<PartDigest>>>,
    pub(crate) digest: Arc<hashing::Stream>,
    /// Bytes counted as done for this file (given back if it restarts).
    pub(crate) counted: AtomicU64,
    pub(crate) changed: AtomicBool,
    pub(crate) etag_logged: AtomicBool,
    pub(crate) started: Instant,
}

/// Why a part failed: the archive's answer (or the connection to it), or the local disk.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PartError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error(transparent)]
    Disk(#[from] DiskError),
}

impl PartError {
    /// The object is no longer the one planned: the file starts again.
    pub(crate) fn changed(&self) -> bool {
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

impl FileCtx {
    pub(crate) fn parts(&self) -> u64 {
        self.bounds.len() as u64 - 1
    }

    pub(crate) fn part_range(&self, part: u64) -> (u64, u64) {
        let p = part as usize;
        (self.bounds[p], self.bounds[p + 1] - self.bounds[p])
    }

    pub(crate) fn part_len(&self, part: u64) -> u64 {
        self.part_range(part).1
    }

    /// What we found wrong with a GET's answer.
    pub(crate) fn make_error(&self, kind: ErrorKind, found: String) -> S3Error {
        S3::make_error("GET", &self.bucket, &self.key, kind, Detail::Found(found))
    }

    /// Remember in the resume log an ETag learned from a response (listing had none).
    pub(crate) fn note_etag(&self, etag: &str) {
        let Some(log) = &self.log else { return };
        if self.job.entry.etag.is_none() && !self.etag_logged.swap(true, Ordering::Relaxed) {
            let _ = log
                .lock()
                .unwrap()
                .write_all(format!("etag {etag}\n").as_bytes());
        }
    }
}

/// Where the parts of a `size`-byte object fall (part `p` is `bounds[p]..bounds[p + 1]`): the
/// object's own upload parts when they are the proof, one part for a file fetched whole, else
/// `part_size` pieces.
pub(crate) fn part_bounds(
    size: u64,
    whole: bool,
    upload_parts: Option<&[u64]>,
    part_size: u64,
) -> Vec<u64> {
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

pub(crate) struct Job {
    pub(crate) entry: PlanEntry,
    pub(crate) restarts: u32,
    /// The HEAD (and upload layout) of a file fetched in parts, started while the files
    /// before it were set up: the scheduler then waits no round trip per file.
    pub(crate) lookup: Option<Lookup>,
}

pub(crate) type Lookup = tokio::task::JoinHandle<Result<(crate::s3::ObjectInfo, Expect), S3Error>>;

/// A file set up for its parts (see [`FileCtx`] for what each is).
struct SetUp {
    bucket: String,
    key: String,
    place: Place,
    file: File,
    /// The same file, for the read-back pool.
    reader: File,
    size: u64,
    bounds: Vec<u64>,
    single: bool,
    etag: Option<String>,
    log: Option<File>,
    done: Vec<Option<PartDigest>>,
    expect: Option<Expect>,
}

/// What the part protocol of every file shares: the client, the policies, DIR and its folders,
/// and the read-back pool.
pub(crate) struct Fetcher {
    pub(crate) s3: S3,
    pub(crate) dir: PathBuf,
    pub(crate) part_size: u64,
    pub(crate) retry: RetryPolicy,
    pub(crate) report: Arc<dyn Reporter>,
    /// Check bytes against what the archive published (`--no-verify` turns it off).
    pub(crate) verify: bool,
    /// Also compute each file's SHA-256 (`--sha256`).
    pub(crate) sha256: bool,
    /// The serial digests of S3 downloads (plain-MD5 ETags, SHA-256), read back in order.
    pub(crate) hash: HashPool,
    /// Folders already created in this run.
    pub(crate) folders: Folders,
}

impl Fetcher {
    /// Open (or resume) the temporary file of an S3 object.
    pub(crate) async fn prepare(&self, mut job: Job) -> Result<FileCtx, (Job, FinishError)> {
        let s = match self.set_up(&mut job).await {
            Ok(s) => s,
            Err(e) => return Err((job, e)),
        };
        let (etag, expect) = (OnceLock::new(), OnceLock::new());
        if let Some(e) = s.etag {
            let _ = etag.set(e);
        }
        if let Some(e) = s.expect {
            let _ = expect.set(e);
        }
        Ok(FileCtx {
            job,
            bucket: s.bucket,
            key: s.key,
            place: s.place,
            file: s.file,
            size: s.size,
            bounds: s.bounds,
            whole: s.single,
            etag,
            expect,
            remaining: AtomicU64::new(0),
            error: Mutex::new(None),
            log: s.log.map(Mutex::new),
            done: Mutex::new(s.done),
            digest: self.hash.stream(s.reader),
            counted: AtomicU64::new(0),
            changed: AtomicBool::new(false),
            etag_logged: AtomicBool::new(false),
            started: Instant::now(),
        })
    }

    /// Learn what the file must match, lay out its parts, and open (or continue) its
    /// temporary file and resume log, with the digests of the parts already on disk.
    async fn set_up(&self, job: &mut Job) -> Result<SetUp, FinishError> {
        let (Some(bucket), Some(key)) = (job.entry.bucket.clone(), job.entry.key.clone()) else {
            return Err(FinishError::NoMast("entry has no bucket key"));
        };
        let (whole, expect) = self.learn_object(job, &bucket, &key).await?;
        let size = job.entry.size.unwrap_or(0);
        let place = Place::of(&self.dir, &job.entry.dest)?;
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
        let (file, log, etag) = open_temp(&self.folders, &place, header, job.entry.etag.clone())?;
        let reader = file
            .try_clone()
            .map_err(io_err("cannot open", &place.tmp))?;
        let done = match (&log, &expect) {
            (Some(_), Some(expect)) => resumed_parts(&reader, &place.state, &bounds, expect)
                .await
                .map_err(io_err("cannot read back", &place.tmp))?,
            _ => vec![None; bounds.len() - 1],
        };
        Ok(SetUp {
            bucket,
            key,
            place,
            file,
            reader,
            size,
            bounds,
            single,
            etag,
            log,
            done,
            expect,
        })
    }

    /// Learn what the plan did not say: the size (one HEAD) and, for a file fetched in parts,
    /// what it must match, before any part starts (no single answer carries the full-object
    /// checksum, and a multipart ETag decides where the parts fall). Returns whether the file
    /// is fetched whole, and what it must match when that is known now.
    pub(crate) async fn learn_object(
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
            _ => multi_part_expect(&self.s3, bucket, key, head).await,
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

    /// What a file is checked against when no answer said more (an empty object).
    pub(crate) fn expect_from_plan(&self, ctx: &FileCtx) -> Expect {
        if !self.verify {
            return Expect::Nothing;
        }
        Expect::from_etag(ctx.etag.get().map(String::as_str))
    }

    /// Wait for the serial digests, learn a late part layout, then check and rename.
    pub(crate) async fn finish(self: &Arc<Self>, ctx: &Arc<FileCtx>) -> Result<Done, FinishError> {
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
            match upload_parts(&self.s3, &ctx.bucket, &ctx.key, ctx.size, n).await {
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

    /// Check the temporary file's size and digests against `expect`, and rename it into place.
    /// Bytes that fail are removed: they never reach the final name, nor a later resume.
    pub(crate) fn finish_blocking(
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
    pub(crate) fn pool_want(&self, ctx: &FileCtx) -> Want {
        let expect = ctx.expect.get();
        Want {
            md5: matches!(expect, Some(Expect::Md5 { .. })),
            sha256: self.sha256 || matches!(expect, Some(Expect::Sha256 { .. })),
        }
    }

    /// Hand the hash pool the unbroken run of parts on disk from the start of the file.
    pub(crate) fn announce(&self, ctx: &FileCtx) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
