//! `verify`: is the mirror in DIR still what its manifests say, and is it still current?
//!
//! Owns the parallel re-hash of every manifest entry (SHA-256 and, for FITS files, the
//! DATASUM/CHECKSUM keywords, both in one read), the `ok/missing/corrupt/stale` verdicts, and the
//! remote check that compares size and ETag with the bucket's current listing (one listing per
//! folder, nothing downloaded).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::fits;
use crate::manifest::{Entry, Status};
use crate::plan;
use crate::s3::S3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Missing,
    Corrupt,
    Stale,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub path: String,
    pub status: Verdict,
    pub message: Option<String>,
}

/// A reader that hashes what passes through, so FITS checks and SHA-256 share one read.
struct Tee<R> {
    inner: R,
    sha: Sha256,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        .find(|e| checked.sha256.is_some() && e.sha256 == checked.sha256)
        .copied()
        .unwrap_or(newest);
    (checked.finding, matched)
}

struct Checked {
    finding: Finding,
    sha256: Option<String>,
}

/// Check `e`'s file; with several complete records for its path (`alike`), any may match.
fn check_one(dir: &Path, e: &Entry, alike: &[&Entry]) -> Checked {
    let finding = |status, message: Option<String>| Checked {
        finding: Finding {
            path: e.path.clone(),
            status,
            message,
        },
        sha256: None,
    };
    if !e.status.is_complete() {
        let why = e.message.clone().unwrap_or_else(|| "not downloaded".into());
        return finding(
            Verdict::Missing,
            Some(format!("manifest status {:?}: {why}", e.status).to_lowercase()),
        );
    }
    let path = match plan::dest_path(dir, &e.path) {
        Ok(p) => p,
        Err(err) => return finding(Verdict::Corrupt, Some(format!("manifest has an {err}"))),
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return finding(Verdict::Missing, None)
        }
        Err(err) => return finding(Verdict::Corrupt, Some(format!("cannot open: {err}"))),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let sizes: Vec<u64> = alike.iter().filter_map(|a| a.size).chain(e.size).collect();
    if !sizes.is_empty() && !sizes.contains(&len) {
        let size = e.size.unwrap_or(sizes[0]);
        return finding(
            Verdict::Corrupt,
            Some(format!("size {len}, manifest says {size}")),
        );
    }
    let mut tee = Tee {
        inner: io::BufReader::with_capacity(1 << 20, file),
        sha: Sha256::new(),
    };
    let mut head = [0u8; 80];
    let is_fits = e.path.to_ascii_lowercase().ends_with(".fits") || {
        let n = peek(&mut tee.inner, &mut head);
        fits::looks_like_fits(&head[..n])
    };
    let mut problem = None;
    if is_fits {
        match fits::check(&mut tee) {
            Ok(report) => {
                problem = report
                    .first_problem()
                    .map(|p| format!("FITS checksum: {p}"))
            }
            Err(fits::FitsError::NotFits) => {}
            Err(err) => problem = Some(format!("FITS structure: {err}")),
        }
    }
    if let Err(err) = io::copy(&mut tee, &mut io::sink()) {
        return finding(Verdict::Corrupt, Some(format!("cannot read: {err}")));
    }
    let sha = hex(&tee.sha.finalize());
    let matches = |x: &Entry| {
        x.sha256
            .as_ref()
            .is_some_and(|w| w.eq_ignore_ascii_case(&sha))
    };
    if let Some(want) = &e.sha256 {
        if !matches(e) && !alike.iter().any(|a| matches(a)) {
            return finding(
                Verdict::Corrupt,
                Some(format!("SHA-256 {sha}, manifest says {want}")),
            );
        }
    }
    let mut out = match problem {
        Some(p) => finding(Verdict::Corrupt, Some(p)),
        None => finding(Verdict::Ok, None),
    };
    out.sha256 = Some(sha);
    out
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

/// Each finding comes with the record that describes the file on disk.
pub fn verify_local(
    dir: &Path,
    records: &BTreeMap<String, Vec<Entry>>,
    jobs: usize,
) -> Vec<(Finding, Entry)> {
    let list: Vec<&[Entry]> = records
        .values()
        .map(Vec::as_slice)
        .filter(|r| r.iter().any(|e| e.status != Status::Duplicate))
        .collect();
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(list.len()));
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(list.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(e) = list.get(i) else { return };
                let (f, matched) = check_file(dir, e);
                out.lock().unwrap().push((f, matched.clone()));
            });
        }
    });
    let mut found = out.into_inner().unwrap();
    found.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    found
}

/// Compare each S3-sourced entry with the bucket's current listing; returns stale findings.
pub async fn verify_remote(s3: &S3, entries: &[Entry]) -> Result<Vec<Finding>, crate::s3::S3Error> {
    let mut folders: BTreeSet<(String, String)> = BTreeSet::new();
    for e in entries {
        if let (Some(b), Some(k), true) = (&e.bucket, &e.key, e.status.is_complete()) {
            folders.insert((b.clone(), k.rfind('/').map_or("", |i| &k[..=i]).to_string()));
        }
    }
    let mut current = BTreeMap::new();
    for (bucket, folder) in folders {
        for o in s3.list(&bucket, &folder, true).await? {
            current.insert((bucket.clone(), o.key.clone()), o);
        }
    }
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
                _ => None,
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
            sha256: Some(hex(&Sha256::digest(data))),
            etag: None,
            access: None,
            status: Status::Ok,
            message: None,
        }
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
        let mut m = BTreeMap::new();
        m.insert("a.fits".into(), vec![entry("a.fits", &good)]);
        m.insert("b.fits".into(), vec![entry("b.fits", &bad)]);
        m.insert("c.bin".into(), vec![entry("c.bin", b"hellO")]);
        m.insert("d.bin".into(), vec![entry("d.bin", b"x")]);
        // Two manifests disagree (a file moved shard and changed upstream): the file on disk
        // matches one record, whichever manifest holds it.
        std::fs::write(dir.path().join("e.bin"), b"new").unwrap();
        m.insert(
            "e.bin".into(),
            vec![entry("e.bin", b"new"), entry("e.bin", b"old!")],
        );
        let found = verify_local(dir.path(), &m, 2);
        assert_eq!(found[4].1.size, Some(3), "the matching record is reported");
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
}
