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

/// Check one complete entry on disk.
fn check_file(dir: &Path, e: &Entry) -> Finding {
    let finding = |status, message: Option<String>| Finding {
        path: e.path.clone(),
        status,
        message,
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
    if let Some(size) = e.size {
        if len != size {
            return finding(
                Verdict::Corrupt,
                Some(format!("size {len}, manifest says {size}")),
            );
        }
    }
    let mut tee = Tee {
        inner: io::BufReader::with_capacity(1 << 20, file),
        sha: Sha256::new(),
    };
    let mut head = [0u8; 80];
    let is_fits = e.path.to_ascii_lowercase().ends_with(".fits") || {
        let n = tee.inner.fill_buf_peek(&mut head);
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
    if let Some(want) = &e.sha256 {
        if !want.eq_ignore_ascii_case(&sha) {
            return finding(
                Verdict::Corrupt,
                Some(format!("SHA-256 {sha}, manifest says {want}")),
            );
        }
    }
    match problem {
        Some(p) => finding(Verdict::Corrupt, Some(p)),
        None => finding(Verdict::Ok, None),
    }
}

trait PeekExt {
    fn fill_buf_peek(&mut self, out: &mut [u8]) -> usize;
}

impl<R: Read> PeekExt for io::BufReader<R> {
    /// Copy the first bytes without consuming them (the hash must still see them).
    fn fill_buf_peek(&mut self, out: &mut [u8]) -> usize {
        use io::BufRead;
        match self.fill_buf() {
            Ok(buf) => {
                let n = buf.len().min(out.len());
                out[..n].copy_from_slice(&buf[..n]);
                n
            }
            Err(_) => 0,
        }
    }
}

/// Re-check every entry, `jobs` files at once; results in path order.
pub fn verify_local(dir: &Path, entries: &BTreeMap<String, Entry>, jobs: usize) -> Vec<Finding> {
    let list: Vec<&Entry> = entries
        .values()
        .filter(|e| e.status != Status::Duplicate)
        .collect();
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(list.len()));
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(list.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(e) = list.get(i) else { return };
                let f = check_file(dir, e);
                out.lock().unwrap().push(f);
            });
        }
    });
    let mut found = out.into_inner().unwrap();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

/// Compare each S3-sourced entry with the bucket's current listing; returns stale findings.
pub async fn verify_remote(
    s3: &S3,
    entries: &BTreeMap<String, Entry>,
) -> Result<Vec<Finding>, crate::s3::S3Error> {
    let mut folders: BTreeSet<(String, String)> = BTreeSet::new();
    for e in entries.values() {
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
    for e in entries.values() {
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
        m.insert("a.fits".into(), entry("a.fits", &good));
        m.insert("b.fits".into(), entry("b.fits", &bad));
        m.insert("c.bin".into(), entry("c.bin", b"hellO"));
        m.insert("d.bin".into(), entry("d.bin", b"x"));
        let f = verify_local(dir.path(), &m, 2);
        let v: Vec<_> = f.iter().map(|f| (f.path.as_str(), f.status)).collect();
        assert_eq!(
            v,
            [
                ("a.fits", Verdict::Ok),
                ("b.fits", Verdict::Corrupt),
                ("c.bin", Verdict::Corrupt),
                ("d.bin", Verdict::Missing)
            ]
        );
        assert!(
            f[1].message.as_deref().unwrap().contains("FITS"),
            "{:?}",
            f[1]
        );
    }
}
