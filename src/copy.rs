//! The copy engine of `get --dest s3://BUCKET/PREFIX/`: the selection lands in the user's
//! bucket without its bytes passing through this machine.
//!
//! Owns, per planned file: the HEAD that learns the source's size, ETag and full-object
//! checksum; the server-side copy (CopyObject up to [`COPY_THRESHOLD`], else a multipart upload
//! of [`COPY_PART_SIZE`] UploadPartCopy ranges in parallel), every request pinned to the
//! source's ETag (`x-amz-copy-source-if-match`: a 412 means the archive reprocessed the object
//! meanwhile, which is then looked up again and copied again); the stream of a MAST-only
//! product into a multipart upload; the check of each copy's CRC-64/NVME (asked of the
//! destination) against the source's; and the bookkeeping that leaves no multipart upload
//! behind (each run aborts the uploads an interrupted run left on the keys it writes, and its
//! own when a copy fails). Every request holds one permit of the run's request budget
//! (`--jobs`), like downloads. It neither plans (`resolve`) nor talks to the destination other
//! than through `bucket`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_s3::types::CompletedPart;
use futures::{stream, StreamExt, TryStreamExt};
use tokio::sync::Semaphore;

use crate::bucket::{Bucket, Stored};
use crate::checksum;
use crate::https::{HttpsError, MastHttps};
use crate::manifest::{Entry, Status};
use crate::net::Tally;
use crate::plan::{PlanEntry, Source};
use crate::progress::{FileEvent, Reporter};
use crate::retry::{RetryPolicy, Transient};
use crate::s3::{ErrorKind, ObjectInfo, S3Error, S3};

/// Objects up to this size are copied with one CopyObject; larger ones in parallel parts.
/// S3 allows CopyObject up to 5 GB, but one CopyObject is one server-side stream: a 5 GB copy
/// is one long request that, if it fails, starts over. Up to 512 MiB one request costs least
/// (1 request, against 3 + parts) and takes seconds; above it, parts copied at once finish a
/// multi-GB `uncal` product in the time of one part, and a failed part costs one part.
pub(crate) const COPY_THRESHOLD: u64 = 512 << 20;
/// UploadPartCopy range size: 128 MiB gives a 5 GB object 40 parts (40 requests in flight
/// under the budget), while the 10,000-part limit is only reached at 1.25 TiB (larger
/// objects get larger parts, [`part_size_for`]). S3's part bounds are 5 MiB to 5 GiB.
pub(crate) const COPY_PART_SIZE: u64 = 128 << 20;
/// MAST streams at once: memory is one part each (`mast_stream`), and MAST is one shared
/// service.
const MAST_STREAMS: usize = 8;
/// A source reprocessed mid-copy is looked up and copied again, but not forever.
const MAX_RESTARTS: u32 = 3;
/// S3's limits on a multipart upload.
const MAX_PARTS: u64 = 10_000;
const MIN_PART: u64 = 5 << 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CopyError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error(transparent)]
    Mast(#[from] HttpsError),
    #[error("{what}: the copy's {field} {got} differs from the source's {want}")]
    Mismatch {
        what: String,
        field: &'static str,
        got: String,
        want: String,
    },
    #[error("{uri}: only MAST serves it, and this run has no MAST client (--s3-only)")]
    NoMast { uri: String },
}

impl Transient for CopyError {
    fn is_transient(&self) -> bool {
        match self {
            CopyError::S3(e) => e.is_transient(),
            CopyError::Mast(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl CopyError {
    fn changed(&self) -> bool {
        matches!(self, CopyError::S3(e) if e.kind == ErrorKind::Changed)
            || matches!(self, CopyError::Mismatch { .. })
    }
}

/// The part size for an object of `size`: at least `base`, large enough for 10,000 parts.
pub(crate) fn part_size_for(size: u64, base: u64) -> u64 {
    base.max(size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20))
        .max(MIN_PART)
}

/// `(part number, inclusive range)` of each part.
fn ranges(size: u64, part: u64) -> Vec<(i32, (u64, u64))> {
    (0..size.div_ceil(part))
        .map(|i| {
            let start = i * part;
            (i as i32 + 1, (start, (start + part).min(size) - 1))
        })
        .collect()
}

/// What a copy proved, for its manifest line.
pub(crate) struct Proof {
    pub size: u64,
    pub etag: Option<String>,
    pub checksum: Option<String>,
    pub verified: &'static str,
    pub crc64nvme: Option<String>,
    pub copy_etag: Option<String>,
}

pub(crate) struct Copier {
    pub src: S3,
    pub dest: Bucket,
    pub mast: Option<Arc<MastHttps>>,
    pub retry: RetryPolicy,
    pub report: Arc<dyn Reporter>,
    pub verify: bool,
    pub threshold: u64,
    pub part_size: u64,
    /// The run's request budget (`--jobs`): one permit per request in flight.
    pub(crate) jobs: Arc<Semaphore>,
    budget: usize,
    /// Turns for MAST streams (`mast_stream`).
    pub(crate) streams: Arc<Semaphore>,
    /// Uploads this run started and has not finished, by id: aborted if a copy fails.
    open: Mutex<HashMap<String, String>>,
}

impl Copier {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        src: S3,
        dest: Bucket,
        mast: Option<Arc<MastHttps>>,
        requests: usize,
        retry: RetryPolicy,
        report: Arc<dyn Reporter>,
        verify: bool,
        threshold: u64,
        part_size: u64,
    ) -> Copier {
        Copier {
            src,
            dest,
            mast,
            retry,
            report,
            verify,
            threshold,
            part_size,
            jobs: Arc::new(Semaphore::new(requests)),
            budget: requests,
            streams: Arc::new(Semaphore::new(MAST_STREAMS)),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Copy every file, largest first; one manifest record each.
    pub(crate) async fn run(&self, mut files: Vec<PlanEntry>) -> Vec<Entry> {
        files.sort_by_key(|f| std::cmp::Reverse(f.size.unwrap_or(0)));
        stream::iter(files)
            .map(|f| self.one(f))
            .buffer_unordered(self.budget)
            .collect()
            .await
    }

    async fn one(&self, f: PlanEntry) -> Entry {
        let start = Instant::now();
        let key = self.dest.url.key(&f.dest);
        let res = match f.source {
            Source::S3 => self.copy_from_bucket(&f, &key).await,
            Source::Mast => self.stream_from_mast(&f, &key).await,
        };
        let (entry, message) = match res {
            Ok(p) => {
                let mut e = Entry::from_plan(&f, Status::Ok, None);
                e.size = Some(p.size);
                e.etag = p.etag.or(e.etag);
                e.checksum = p.checksum;
                e.verified = Some(p.verified.to_string());
                e.crc64nvme = p.crc64nvme;
                e.copy_etag = p.copy_etag;
                (e, None)
            }
            Err(err) => {
                let msg = crate::text::chain(&err);
                (
                    Entry::from_plan(&f, Status::Failed, Some(msg.clone())),
                    Some(msg),
                )
            }
        };
        self.report.file_done(&FileEvent {
            status: entry.status,
            path: &f.dest,
            uri: &f.uri,
            source: f.source.as_str(),
            bytes: entry.size.unwrap_or(0),
            seconds: start.elapsed().as_secs_f64(),
            message: message.as_deref(),
            quiet: false,
        });
        entry
    }

    /// The source as the archive holds it now (HEAD with checksum mode).
    async fn source(&self, f: &PlanEntry) -> Result<(String, String, ObjectInfo), CopyError> {
        let (Some(b), Some(k)) = (&f.bucket, &f.key) else {
            return Err(CopyError::NoMast { uri: f.uri.clone() });
        };
        let _permit = self.jobs.acquire().await.expect("semaphore open");
        match self.src.head(b, k).await? {
            Some(info) => Ok((b.clone(), k.clone(), info)),
            None => Err(
                S3::make_error("HEAD", b, k, ErrorKind::NotFound, crate::s3::Detail::None).into(),
            ),
        }
    }

    async fn copy_from_bucket(&self, f: &PlanEntry, key: &str) -> Result<Proof, CopyError> {
        let mut restarts = 0;
        loop {
            let (b, k, info) = self.source(f).await?;
            let res = match info.etag.clone() {
                Some(etag) => self.copy(&b, &k, &etag, info.size, key).await,
                None => Err(S3::make_error(
                    "HEAD",
                    &b,
                    &k,
                    ErrorKind::Other,
                    crate::s3::Detail::Found("no ETag to pin the copy to".into()),
                )
                .into()),
            };
            let res = match res {
                Ok((etag, crc)) => self.prove(key, &info, etag, crc).await,
                Err(e) => Err(e),
            };
            match res {
                Err(e) if e.changed() && restarts < MAX_RESTARTS => restarts += 1,
                Ok(p) => {
                    self.report.bytes(Tally::Copied(p.size));
                    return Ok(p);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One CopyObject, or a multipart copy; the copy's ETag and CRC-64/NVME if S3 said them.
    async fn copy(
        &self,
        b: &str,
        k: &str,
        etag: &str,
        size: u64,
        key: &str,
    ) -> Result<(Option<String>, Option<String>), CopyError> {
        if size <= self.threshold {
            let _permit = self.jobs.acquire().await.expect("semaphore open");
            return Ok(self.dest.copy_object(b, k, etag, key).await?);
        }
        let upload = self.start_upload(key).await?;
        let part = part_size_for(size, self.part_size);
        let id = upload.as_str();
        let parts: Result<Vec<CompletedPart>, S3Error> = stream::iter(ranges(size, part))
            .map(|(n, range)| async move {
                let _permit = self.jobs.acquire().await.expect("semaphore open");
                let d = &self.dest;
                d.upload_part_copy(b, k, etag, key, id, n, range).await
            })
            .buffered(self.budget)
            .try_collect()
            .await;
        self.finish_upload(key, &upload, parts, None).await
    }

    pub(crate) async fn start_upload(&self, key: &str) -> Result<String, S3Error> {
        let _permit = self.jobs.acquire().await.expect("semaphore open");
        let id = self.dest.create_upload(key).await?;
        self.open
            .lock()
            .unwrap()
            .insert(id.clone(), key.to_string());
        Ok(id)
    }

    /// Complete the upload with its parts, or abort it when a part failed.
    pub(crate) async fn finish_upload(
        &self,
        key: &str,
        upload: &str,
        parts: Result<Vec<CompletedPart>, S3Error>,
        crc64: Option<&str>,
    ) -> Result<(Option<String>, Option<String>), CopyError> {
        let _permit = self.jobs.acquire().await.expect("semaphore open");
        let res = match parts {
            Ok(parts) => self.dest.complete(key, upload, parts, crc64).await,
            Err(e) => Err(e),
        };
        if res.is_err() {
            // Nothing half-done stays in the bucket (nor on the bill).
            let _ = self.dest.abort(key, upload).await;
        }
        self.open.lock().unwrap().remove(upload);
        Ok(res?)
    }

    /// Compare the copy with its source: the CRC-64/NVME when the archive publishes one, else
    /// a plain-MD5 ETag the copy must share, else the size.
    async fn prove(
        &self,
        key: &str,
        src: &ObjectInfo,
        copy_etag: Option<String>,
        crc: Option<String>,
    ) -> Result<Proof, CopyError> {
        let src_crc = src.checksum.as_ref().filter(|c| c.alg == "crc64nvme");
        let stored = self.copy_state(key, src, &copy_etag, crc).await?;
        let what = format!("s3://{}/{key}", self.dest.name());
        let mismatch = |field, got: &str, want: &str| CopyError::Mismatch {
            what: what.clone(),
            field,
            got: got.to_string(),
            want: want.to_string(),
        };
        let etag = src.etag.clone();
        let mut proof = Proof {
            size: src.size,
            etag: etag.clone(),
            checksum: None,
            verified: "none",
            crc64nvme: stored.crc64nvme.clone(),
            copy_etag: stored.etag.clone().or(copy_etag),
        };
        if !self.verify {
            return Ok(proof);
        }
        if stored.size != src.size {
            return Err(mismatch(
                "size",
                &stored.size.to_string(),
                &src.size.to_string(),
            ));
        }
        proof.verified = "size";
        if let Some(want) = src_crc {
            let got = stored.crc64nvme.as_deref().unwrap_or("(none)");
            if got != want.value {
                self.discard(key).await;
                return Err(mismatch("CRC-64/NVME", got, &want.value));
            }
            proof.checksum = Some(format!("crc64nvme:{}", want.value));
            proof.verified = "checksum";
        } else if let (Some(e), Some(c)) = (&etag, &stored.etag) {
            // A single-part copy of a plain-MD5 object has the same MD5 (and so ETag).
            if checksum::is_md5_etag(e) && checksum::is_md5_etag(c) {
                if e != c {
                    self.discard(key).await;
                    return Err(mismatch("ETag", c, e));
                }
                proof.checksum = Some(format!("etag:{e}"));
                proof.verified = "etag";
            }
        }
        Ok(proof)
    }

    /// What the destination holds after a copy. The copy's answer is enough when it carries
    /// what the proof compares (the CRC, or for a legacy object the same plain MD5, which fixes
    /// the size too); else a HEAD asks the destination.
    async fn copy_state(
        &self,
        key: &str,
        src: &ObjectInfo,
        copy_etag: &Option<String>,
        crc: Option<String>,
    ) -> Result<Stored, CopyError> {
        let src_crc = src.checksum.as_ref().filter(|c| c.alg == "crc64nvme");
        let same_md5 = match (&src.etag, copy_etag) {
            (Some(e), Some(c)) => checksum::is_md5_etag(e) && e == c,
            _ => false,
        };
        match crc {
            Some(c) if src_crc.is_some() || same_md5 => Ok(Stored {
                size: src.size,
                etag: copy_etag.clone(),
                crc64nvme: Some(c),
            }),
            _ => self.stored(key).await,
        }
    }

    /// What the destination holds at `key` (a copy just made: it is there).
    pub(crate) async fn stored(&self, key: &str) -> Result<Stored, CopyError> {
        let _permit = self.jobs.acquire().await.expect("semaphore open");
        match self.dest.head(key).await? {
            Some(s) => Ok(s),
            None => Err(S3::make_error(
                "HEAD",
                self.dest.name(),
                key,
                ErrorKind::NotFound,
                crate::s3::Detail::Found("the copy just made is not there".into()),
            )
            .into()),
        }
    }

    /// A copy that does not match its source must not stay where a rerun would trust it.
    pub(crate) async fn discard(&self, key: &str) {
        let _permit = self.jobs.acquire().await.expect("semaphore open");
        let _ = self.dest.delete(key).await;
    }

    /// Abort the multipart uploads left under the prefix on `keys` (the keys this run writes):
    /// an interrupted run's, which no one will complete. Returns how many.
    pub(crate) async fn abort_leftovers(
        &self,
        keys: &std::collections::HashSet<String>,
    ) -> Result<usize, S3Error> {
        let mut aborted = 0;
        if keys.is_empty() {
            return Ok(0); // nothing will be written: nothing of ours can be in progress
        }
        for (key, id) in self.dest.uploads().await? {
            if keys.contains(&key) {
                self.dest.abort(&key, &id).await?;
                aborted += 1;
            }
        }
        Ok(aborted)
    }

    /// Abort what this run started and did not finish (none, unless a task was cut short).
    pub(crate) async fn abort_own(&self) {
        let open: Vec<(String, String)> = self.open.lock().unwrap().drain().collect();
        for (id, key) in open {
            let _ = self.dest.abort(&key, &id).await;
        }
    }
}

/// The error handed to `finish_upload` when the parts failed for another reason (already
/// returned to the caller): it only makes the upload be aborted.
pub(crate) fn dummy(key: &str) -> S3Error {
    S3::make_error(
        "UploadPart",
        "",
        key,
        ErrorKind::Other,
        crate::s3::Detail::None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_object() {
        assert_eq!(ranges(10, 4), vec![(1, (0, 3)), (2, (4, 7)), (3, (8, 9))]);
        assert_eq!(ranges(8, 4), vec![(1, (0, 3)), (2, (4, 7))]);
        // 10,000 parts at most: a 5 TiB object gets parts of at least 525 MiB.
        let big = 5u64 << 40;
        let p = part_size_for(big, COPY_PART_SIZE);
        assert!(big.div_ceil(p) <= MAX_PARTS);
        assert_eq!(part_size_for(1, 1 << 20), MIN_PART);
    }
}
