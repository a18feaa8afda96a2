//! What becomes of each file of a `get` run: its manifest line, its report, and the count in
//! the run's [`Summary`].
//!
//! Owns the engine's bookkeeping: [`Engine::settle`] for files settled without a transfer
//! (complete before, adopted, duplicates, excluded, plan problems), `finish_file` for every
//! transfer's end (the manifest line, the report, the scheduler told: once a file), the
//! [`Summary`] and its exit code, what a full disk stopped, and the errors a file can end
//! with. It fetches nothing (`transfer`, `parts`) and shows nothing (`progress`).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::checksum::Expect;
use crate::dest::DiskError;
use crate::manifest::{self, Entry, Status};
use crate::plan::PlanEntry;
use crate::progress::{FileEvent, Reporter};
use crate::s3::S3Error;
use crate::text;

/// Why a file was not fetched without a token (manifest message).
pub(crate) const EXCLUDED_MESSAGE: &str =
    "exclusive access: needs a MAST token (--token-file or MAST_API_TOKEN)";

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

    pub(crate) fn count(&mut self, status: Status, bytes: u64) {
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
pub(crate) const NOT_STARTED_FULL: &str = "not started: no space left on the device";

/// Whether a failure was the disk filling up (anywhere in its chain of causes).
pub(crate) fn is_disk_full(err: &(dyn std::error::Error + 'static)) -> bool {
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

/// A complete file, proven (or not) as the archive allowed.
pub(crate) struct Done {
    pub(crate) size: u64,
    pub(crate) expect: Expect,
    /// CRC-64/NVME of the local file, S3's base64 form.
    pub(crate) crc64nvme: String,
    pub(crate) sha256: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FinishError {
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

pub(crate) fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> FinishError + 'a {
    move |source| FinishError::Disk(crate::dest::disk(what, path)(source))
}

/// The run's books: the manifest it writes, the report it gives, and what it settled.
pub(crate) struct Ledger {
    manifest: Mutex<manifest::Writer>,
    report: Arc<dyn Reporter>,
    summary: Mutex<Summary>,
    /// Set by the first write that finds the disk full: no new file starts after it (each
    /// would only fail the same way), and the run ends saying what the rest needs.
    disk_full: AtomicBool,
    /// Files the full disk stopped, and their bytes.
    unfetched: (AtomicU64, AtomicU64),
    /// A manifest line that could not be written is said once, not once a file.
    manifest_error_said: AtomicBool,
    /// Whether MAST downloads carry a token (a 401 without one means exclusive access).
    has_token: bool,
}

impl Ledger {
    pub(crate) fn new(
        manifest: manifest::Writer,
        report: Arc<dyn Reporter>,
        has_token: bool,
    ) -> Ledger {
        Ledger {
            manifest: Mutex::new(manifest),
            report,
            summary: Mutex::default(),
            disk_full: AtomicBool::new(false),
            unfetched: (AtomicU64::new(0), AtomicU64::new(0)),
            manifest_error_said: AtomicBool::new(false),
            has_token,
        }
    }

    /// Whether a write found the disk full: no new file should start.
    pub(crate) fn disk_is_full(&self) -> bool {
        self.disk_full.load(Ordering::Relaxed)
    }

    /// What the run settled so far (with what a full disk stopped).
    pub(crate) fn summary(&self) -> Summary {
        let mut summary = *self.summary.lock().unwrap();
        summary.disk_full = self.disk_is_full().then(|| {
            (
                self.unfetched.0.load(Ordering::Relaxed),
                self.unfetched.1.load(Ordering::Relaxed),
            )
        });
        summary
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

    /// The manifest line of a file's outcome, and the bytes it fetched.
    fn line(&self, entry: &PlanEntry, res: Result<Done, FinishError>) -> (Entry, u64) {
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
            })) if !self.has_token => (Status::Excluded, None, Some(EXCLUDED_MESSAGE.to_string())),
            Err(e) => (Status::Failed, None, Some(text::chain(&e))),
        };
        let mut line = Entry::from_plan(entry, status, message);
        let Some(d) = done else {
            return (line, 0);
        };
        line.checksum = d.expect.manifest_checksum();
        line.verified = Some(d.expect.verified().to_string());
        line.crc64nvme = Some(d.crc64nvme);
        line.sha256 = d.sha256;
        if line.size.is_none() {
            line.size = Some(d.size);
        }
        (line, d.size)
    }

    /// Write the outcome of one file to the manifest and the report.
    pub(crate) fn record(
        &self,
        entry: &PlanEntry,
        res: Result<Done, FinishError>,
        started: Instant,
    ) {
        let full = res
            .as_ref()
            .is_err_and(|e| matches!(e, FinishError::NotStarted) || is_disk_full(e));
        if full {
            self.disk_full.store(true, Ordering::Relaxed);
            self.unfetched.0.fetch_add(1, Ordering::Relaxed);
            self.unfetched
                .1
                .fetch_add(entry.size.unwrap_or(0), Ordering::Relaxed);
        }
        let (line, bytes) = self.line(entry, res);
        let (status, message) = (line.status, line.message.clone());
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
