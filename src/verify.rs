//! `verify`: is the mirror in DIR still what its manifests say, and is it still current?
//!
//! Owns the parallel re-hash of every manifest entry (CRC-64/NVME, SHA-256 where recorded and,
//! for FITS files, the DATASUM/CHECKSUM keywords, all in one read), the
//! `ok/missing/corrupt/stale` verdicts, and the remote check that compares size, ETag and the
//! recorded checksum with the bucket (one listing per folder, a HEAD only where the listing
//! cannot tell; nothing downloaded).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::checksum::{self, CrcAlg};
use crate::fits;
use crate::index::Index;
use crate::manifest::{Entry, ManifestError, Status};
use crate::names;
use crate::s3::S3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    Ok,
    Missing,
    Corrupt,
    Stale,
    /// A file of a foreign mirror that is no archive product (or not one the archive can prove).
    Unknown,
}

impl Verdict {
    /// The name in reports (`ok`, `missing`, ...), as serialized.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Missing => "missing",
            Verdict::Corrupt => "corrupt",
            Verdict::Stale => "stale",
            Verdict::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Finding {
    pub path: String,
    pub status: Verdict,
    pub message: Option<String>,
}

/// A reader that hashes what passes through, so FITS checks and digests share one read.
/// CRC-64/NVME always (memory speed); SHA-256 only where a record holds one.
struct Tee<R> {
    inner: R,
    crc: crc_fast::Digest,
    sha: Option<Sha256>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        if let Some(sha) = &mut self.sha {
            sha.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// A file's digests, as recorded or as computed.
#[derive(Clone, PartialEq, Eq)]
struct Digests {
    crc64nvme: String,
    sha256: Option<String>,
}

impl Digests {
    /// Whether a record describes these bytes: every digest it holds must agree, and it must
    /// hold one (a record without digests describes nothing).
    fn matches(&self, e: &Entry) -> bool {
        let crc = e.crc64nvme.as_ref().map(|c| *c == self.crc64nvme);
        let sha = match (&e.sha256, &self.sha256) {
            (Some(w), Some(g)) => Some(w.eq_ignore_ascii_case(g)),
            _ => None,
        };
        (crc.is_some() || sha.is_some()) && crc != Some(false) && sha != Some(false)
    }
}

/// Check one file on disk against its records; returns the verdict and the record that the file
/// matches (or the newest complete one when none does).
fn check_file<'a>(dir: &Path, records: &'a [Entry]) -> (Finding, &'a Entry) {
    let last = records.last().expect("a path has at least one record");
    let complete: Vec<&Entry> = records.iter().filter(|e| e.status.is_complete()).collect();
    let Some(&newest) = complete.last() else {
        return (check_one(dir, last, &[]).finding, last);
    };
    let checked = check_one(dir, newest, &complete);
    // The record whose digest the file has is the one that describes it.
    let matched = complete
        .iter()
        .rev()
        .find(|e| checked.digests.as_ref().is_some_and(|d| d.matches(e)))
        .copied()
        .unwrap_or(newest);
    (checked.finding, matched)
}

struct Checked {
    finding: Finding,
    digests: Option<Digests>,
}

/// Check `e`'s file; with several complete records for its path (`alike`), any may match.
fn check_one(dir: &Path, e: &Entry, alike: &[&Entry]) -> Checked {
    let finding = |status, message: Option<String>| Checked {
        finding: Finding {
            path: e.path.clone(),
            status,
            message,
        },
        digests: None,
    };
    let file = match open_recorded(dir, e, alike) {
        Ok(f) => f,
        Err((status, message)) => return finding(status, message),
    };
    let want_sha = e.sha256.is_some() || alike.iter().any(|a| a.sha256.is_some());
    let mut tee = Tee {
        inner: io::BufReader::with_capacity(1 << 20, file),
        crc: CrcAlg::Crc64Nvme.digest(),
        sha: want_sha.then(Sha256::new),
    };
    let problem = fits_problem(&e.path, &mut tee);
    if let Err(err) = io::copy(&mut tee, &mut io::sink()) {
        return finding(Verdict::Corrupt, Some(format!("cannot read: {err}")));
    }
    let got = Digests {
        crc64nvme: checksum::crc64_b64(tee.crc.finalize()),
        sha256: tee.sha.map(|s| checksum::hex(&s.finalize())),
    };
    let recorded = |x: &Entry| x.crc64nvme.is_some() || x.sha256.is_some();
    if recorded(e) && !got.matches(e) && !alike.iter().any(|a| got.matches(a)) {
        return finding(Verdict::Corrupt, Some(mismatch(e, &got)));
    }
    let mut out = match problem {
        Some(p) => finding(Verdict::Corrupt, Some(p)),
        None => finding(Verdict::Ok, None),
    };
    out.digests = Some(got);
    out
}

/// The file of a complete record, when it is there at a size some record gives; else the
/// verdict (and why) that ends its check.
fn open_recorded(
    dir: &Path,
    e: &Entry,
    alike: &[&Entry],
) -> Result<File, (Verdict, Option<String>)> {
    if !e.status.is_complete() {
        let why = e.message.clone().unwrap_or_else(|| "not downloaded".into());
        let msg = format!("manifest status {}: {why}", e.status.as_str());
        return Err((Verdict::Missing, Some(msg)));
    }
    let path = crate::dest::dest_path(dir, &e.path)
        .map_err(|err| (Verdict::Corrupt, Some(format!("manifest has an {err}"))))?;
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Err((Verdict::Missing, None)),
        Err(err) => return Err((Verdict::Corrupt, Some(format!("cannot open: {err}")))),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let sizes: Vec<u64> = alike.iter().filter_map(|a| a.size).chain(e.size).collect();
    if !sizes.is_empty() && !sizes.contains(&len) {
        let size = e.size.unwrap_or(sizes[0]);
        let msg = format!("size {len}, manifest says {size}");
        return Err((Verdict::Corrupt, Some(msg)));
    }
    Ok(file)
}

/// What is wrong with a FITS file's own checksums or structure, read through `tee` (which
/// hashes the same bytes); `None` for a sound FITS file or another kind of file.
fn fits_problem(path: &str, tee: &mut Tee<io::BufReader<File>>) -> Option<String> {
    let mut head = [0u8; 80];
    let is_fits = path.to_ascii_lowercase().ends_with(".fits") || {
        let n = peek(&mut tee.inner, &mut head);
        fits::looks_like_fits(&head[..n])
    };
    if !is_fits {
        return None;
    }
    match fits::check(tee) {
        Ok(report) => report
            .first_problem()
            .map(|p| format!("FITS checksum: {p}")),
        Err(fits::FitsError::NotFits) => None,
        Err(err) => Some(format!("FITS structure: {err}")),
    }
}

/// Why a file's digests do not match its record, naming both values.
fn mismatch(e: &Entry, got: &Digests) -> String {
    match (&e.crc64nvme, &e.sha256) {
        (Some(want), _) if *want != got.crc64nvme => {
            format!("CRC-64/NVME {}, manifest says {want}", got.crc64nvme)
        }
        (_, Some(want)) => format!(
            "SHA-256 {}, manifest says {want}",
            got.sha256.as_deref().unwrap_or("")
        ),
        _ => "does not match any manifest record".to_string(),
    }
}

/// The first bytes of a buffered file, without consuming them (the hash must still see them).
fn peek<R: Read>(reader: &mut io::BufReader<R>, out: &mut [u8]) -> usize {
    use io::BufRead;
    match reader.fill_buf() {
        Ok(buf) => {
            let n = buf.len().min(out.len());
            out[..n].copy_from_slice(&buf[..n]);
            n
        }
        Err(_) => 0,
    }
}

/// A finding and, when asked for, the record that describes the file on disk (boxed: an absent
/// record then costs 8 bytes a file, not a whole Entry).
pub(crate) type FileVerdict = (Finding, Option<Box<Entry>>);

/// Check every file the manifests of DIR record, `jobs` at a time, reading each record only
/// when its file is checked (memory: the index, and one finding a file). Each finding comes
/// with the record that describes the file on disk when `keep_records` (for `--remote`).
pub(crate) fn verify_local(
    dir: &Path,
    index: &Index,
    jobs: usize,
    keep_records: bool,
) -> Result<Vec<FileVerdict>, ManifestError> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(index.len()));
    let failed = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(index.len().max(1)) {
            s.spawn(|| loop {
                let g = next.fetch_add(1, Ordering::Relaxed);
                if g >= index.len() {
                    return;
                }
                let paths = match index.group(g) {
                    Ok(p) => p,
                    Err(e) => return *failed.lock().unwrap() = Some(e),
                };
                for records in paths {
                    if records.iter().all(|e| e.status == Status::Duplicate) {
                        continue;
                    }
                    let (f, matched) = check_file(dir, &records);
                    let kept = keep_records.then(|| Box::new(matched.clone()));
                    out.lock().unwrap().push((f, kept));
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(e);
    }
    let mut found = out.into_inner().unwrap();
    found.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    Ok(found)
}

/// Compare each S3-sourced entry with the bucket's current listing; returns stale findings.
pub(crate) async fn verify_remote(
    s3: &S3,
    entries: &[Entry],
) -> Result<Vec<Finding>, crate::s3::S3Error> {
    let mut folders: BTreeSet<(String, String)> = BTreeSet::new();
    for e in entries {
        if let (Some(b), Some(k), true) = (&e.bucket, &e.key, e.status.is_complete()) {
            folders.insert((b.clone(), names::folder_of(k).to_string()));
        }
    }
    // One folder at a time, as before: `verify --remote` keeps a light touch on the bucket.
    let current = s3.list_folders(folders, 1).await?;
    let mut stale = Vec::new();
    for e in entries {
        let (Some(b), Some(k), true) = (&e.bucket, &e.key, e.status.is_complete()) else {
            continue;
        };
        let msg = match current.get(&(b.clone(), k.clone())) {
            None => Some("no longer in the bucket".to_string()),
            Some(o) if Some(o.size) != e.size => {
                Some(format!("archive size {} differs from {:?}", o.size, e.size))
            }
            Some(o) => match (&o.etag, &e.etag) {
                (Some(now), Some(then)) if now != then => {
                    Some(format!("reprocessed: archive ETag {now}, mirror {then}"))
                }
                (Some(_), Some(_)) => None,
                // The listing cannot tell (no ETag in it): one HEAD compares a recorded
                // full-object checksum. ETag-proven records keep to the listing (size): a HEAD
                // each would turn one listing per folder into one request per file.
                _ => match e.checksum.as_ref().filter(|c| !c.starts_with("etag:")) {
                    Some(recorded) => match s3.head(b, k).await? {
                        None => Some("no longer in the bucket".to_string()),
                        Some(h) => stale_by_head(recorded, &h),
                    },
                    None => None,
                },
            },
        };
        if let Some(m) = msg {
            stale.push(Finding {
                path: e.path.clone(),
                status: Verdict::Stale,
                message: Some(m),
            });
        }
    }
    Ok(stale)
}

/// Whether a HEAD shows another object than the one whose `checksum` was recorded.
fn stale_by_head(recorded: &str, h: &crate::s3::ObjectInfo) -> Option<String> {
    let (alg, value) = recorded.split_once(':')?;
    let now = if alg == "etag" {
        h.etag.clone()?
    } else {
        let c = h.checksum.as_ref().filter(|c| c.alg == alg)?;
        c.value.clone()
    };
    (!now.eq_ignore_ascii_case(value))
        .then(|| format!("reprocessed: archive {alg} {now}, mirror {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Source;

    fn entry(path: &str, data: &[u8]) -> Entry {
        Entry {
            uri: path.into(),
            path: path.into(),
            source: Source::S3,
            bucket: None,
            key: None,
            url: String::new(),
            size: Some(data.len() as u64),
            sha256: Some(checksum::hex(&Sha256::digest(data))),
            etag: None,
            checksum: None,
            verified: None,
            crc64nvme: None,
            copy_etag: None,
            access: None,
            status: Status::Ok,
            message: None,
        }
    }

    /// Write `manifests` (file name, records) into `dir` and index them.
    fn index(dir: &Path, manifests: &[(&str, Vec<Entry>)]) -> Index {
        for (name, records) in manifests {
            let text: String = records
                .iter()
                .map(|e| serde_json::to_string(e).unwrap() + "\n")
                .collect();
            std::fs::write(dir.join(name), text).unwrap();
        }
        Index::build(dir).unwrap()
    }

    #[test]
    fn names_are_the_serialized_ones_and_messages_keep_their_case() {
        for v in [
            Verdict::Ok,
            Verdict::Missing,
            Verdict::Corrupt,
            Verdict::Stale,
            Verdict::Unknown,
        ] {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
        for s in [
            Status::Ok,
            Status::Skipped,
            Status::Duplicate,
            Status::Excluded,
            Status::Failed,
            Status::Adopted,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        let dir = tempfile::tempdir().unwrap();
        let mut failed = entry("jw/A.fits", b"x");
        failed.status = Status::Failed;
        failed.message = Some("GET s3://STScI-JWST/Key: 403".into());
        let (finding, _) = check_file(dir.path(), &[failed]);
        assert_eq!(finding.status, Verdict::Missing);
        assert_eq!(
            finding.message.as_deref(),
            Some("manifest status failed: GET s3://STScI-JWST/Key: 403")
        );
    }

    #[test]
    fn verdicts() {
        let dir = tempfile::tempdir().unwrap();
        let good = fits::build_test_fits(&[7u8; 5000], &[("TELESCOP", "JWST")]);
        std::fs::write(dir.path().join("a.fits"), &good).unwrap();
        // Same size and SHA-256 recorded for the damaged file: only the FITS check can tell.
        let mut bad = good.clone();
        bad[2880 + 10] ^= 1;
        std::fs::write(dir.path().join("b.fits"), &bad).unwrap();
        std::fs::write(dir.path().join("c.bin"), b"hello").unwrap();
        // Two manifests disagree (a file moved shard and changed upstream): the file on disk
        // matches one record, whichever manifest holds it.
        std::fs::write(dir.path().join("e.bin"), b"new").unwrap();
        let m = index(
            dir.path(),
            &[
                (
                    "mastfetch-manifest.jsonl",
                    vec![
                        entry("a.fits", &good),
                        entry("b.fits", &bad),
                        entry("c.bin", b"hellO"),
                        // An earlier line for the same path: the last line wins.
                        entry("d.bin", b"earlier"),
                        entry("d.bin", b"x"),
                        entry("e.bin", b"new"),
                    ],
                ),
                (
                    "mastfetch-manifest.shard-0-of-2.jsonl",
                    vec![entry("e.bin", b"old!")],
                ),
            ],
        );
        assert_eq!(m.len(), 5);
        let found = verify_local(dir.path(), &m, 2, true).unwrap();
        let matched = found[4].1.as_ref().unwrap();
        assert_eq!(matched.size, Some(3), "the matching record is reported");
        assert_eq!(
            found[3].1.as_ref().unwrap().size,
            Some(1),
            "the last line won"
        );
        let f: Vec<Finding> = found.into_iter().map(|(f, _)| f).collect();
        let v: Vec<_> = f.iter().map(|f| (f.path.as_str(), f.status)).collect();
        assert_eq!(
            v,
            [
                ("a.fits", Verdict::Ok),
                ("b.fits", Verdict::Corrupt),
                ("c.bin", Verdict::Corrupt),
                ("d.bin", Verdict::Missing),
                ("e.bin", Verdict::Ok),
            ]
        );
        assert!(
            f[1].message.as_deref().unwrap().contains("FITS"),
            "{:?}",
            f[1]
        );
    }

    /// Records that hold only a CRC-64/NVME (no SHA-256) are checked by it.
    #[test]
    fn crc64nvme_alone_catches_a_flipped_byte() {
        let dir = tempfile::tempdir().unwrap();
        let body = vec![5u8; 10_000];
        let mut e = entry("x.bin", &body);
        e.sha256 = None;
        e.crc64nvme = Some(checksum::digest_reader(&body[..], false).unwrap().0);
        let m = index(dir.path(), &[("mastfetch-manifest.jsonl", vec![e])]);
        std::fs::write(dir.path().join("x.bin"), &body).unwrap();
        assert_eq!(
            verify_local(dir.path(), &m, 1, false).unwrap()[0].0.status,
            Verdict::Ok
        );
        let mut bad = body.clone();
        bad[4321] ^= 0x80;
        std::fs::write(dir.path().join("x.bin"), &bad).unwrap();
        let f = &verify_local(dir.path(), &m, 1, false).unwrap()[0].0;
        assert_eq!(f.status, Verdict::Corrupt);
        assert!(
            f.message.as_deref().unwrap().contains("CRC-64/NVME"),
            "{f:?}"
        );
    }
}
