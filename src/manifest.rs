//! The record of a mirror: `mastfetch-manifest.jsonl` and (with `--sha256`) `SHA256SUMS`.
//!
//! Owns the manifest line format (old lines without `checksum`, `verified` or `crc64nvme` still
//! read), reading every manifest of a folder (shards included), the
//! append-as-files-complete writer (a crash loses nothing already done), the compaction to one
//! line per file at the end of a run, and the lock that keeps a second writer out. It does not
//! decide what to download or how to verify.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::{PlanEntry, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skipped,
    Duplicate,
    Excluded,
    Failed,
    /// Found in DIR, not written by mastfetch, proven to match the archive, not downloaded.
    Adopted,
}

impl Status {
    /// The name written in manifests and events (`ok`, `skipped`, ...).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skipped => "skipped",
            Status::Duplicate => "duplicate",
            Status::Excluded => "excluded",
            Status::Failed => "failed",
            Status::Adopted => "adopted",
        }
    }

    /// The file is on disk, complete, with its digests recorded.
    pub(crate) fn is_complete(self) -> bool {
        matches!(self, Status::Ok | Status::Skipped | Status::Adopted)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub uri: String,
    /// Relative to DIR.
    pub path: String,
    pub source: Source,
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub url: String,
    pub size: Option<u64>,
    /// Hex; only with `get --sha256` (and in manifests written before it became opt-in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub etag: Option<String>,
    /// The archive's value the file was proven against: `<alg>:<value>` or `etag:<etag>`.
    #[serde(default)]
    pub checksum: Option<String>,
    /// `checksum`, `etag`, `size` or `none`; absent in manifests older than the field.
    #[serde(default)]
    pub verified: Option<String>,
    /// CRC-64/NVME of the local file, base64 of its 8 big-endian bytes: what `verify` re-checks.
    #[serde(default)]
    pub crc64nvme: Option<String>,
    /// The copy's own ETag, for a bucket destination (`get --dest s3://`): what a listing of
    /// the destination is compared with on a rerun. Absent for local files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_etag: Option<String>,
    pub access: Option<String>,
    pub status: Status,
    pub message: Option<String>,
}

impl Entry {
    pub(crate) fn from_plan(p: &PlanEntry, status: Status, message: Option<String>) -> Entry {
        Entry {
            uri: p.uri.clone(),
            path: p.dest.clone(),
            source: p.source,
            bucket: p.bucket.clone(),
            key: p.key.clone(),
            url: p.url.clone(),
            size: p.size,
            sha256: None,
            etag: p.etag.clone(),
            checksum: None,
            verified: None,
            crc64nvme: None,
            copy_etag: None,
            access: p.access.clone(),
            status,
            // Messages quote inputs and servers; the manifest is read in terminals too.
            message: message.map(|m| crate::text::escape(&m).into_owned()),
        }
    }
}

/// `mastfetch-manifest.jsonl`, or one file per shard so that shards never share a writer.
pub(crate) fn manifest_name(shard: Option<(u32, u32)>) -> String {
    match shard {
        Some((k, n)) if n > 1 => format!("mastfetch-manifest.shard-{k}-of-{n}.jsonl"),
        _ => "mastfetch-manifest.jsonl".to_string(),
    }
}

/// `SHA256SUMS`, per shard for the same reason as the manifest.
pub(crate) fn sums_name(shard: Option<(u32, u32)>) -> String {
    match shard {
        Some((k, n)) if n > 1 => format!("SHA256SUMS.shard-{k}-of-{n}"),
        _ => "SHA256SUMS".to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestError {
    #[error("cannot read manifest {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}:{line}: not a manifest line")]
    Parse {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "another mastfetch is writing {path} (lock {lock} is held); wait for it to finish, \
         or give this run another --dest or its own --shard-index"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error(
        "cannot lock {lock}: the file system refused the lock (shared storage must support \
         flock: NFSv4/EFS do; mount FSx for Lustre with -o flock)"
    )]
    Lock {
        lock: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Read one manifest: the last line for a path wins (a crashed run leaves appended lines).
/// A torn last line (crash mid-write) is ignored; any other bad line is an error. Holds the
/// whole manifest: for tests (runs read manifests through the `index` module).
#[cfg(test)]
pub(crate) fn read(path: &Path) -> Result<Vec<Entry>, ManifestError> {
    use std::collections::BTreeMap;
    let file = File::open(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let mut by_path: BTreeMap<String, Entry> = BTreeMap::new();
    let last = lines.len();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(line) {
            Ok(e) => {
                by_path.insert(e.path.clone(), e);
            }
            Err(_) if i + 1 == last && !line.ends_with('}') => {}
            Err(source) => {
                return Err(ManifestError::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    source,
                })
            }
        }
    }
    Ok(by_path.into_values().collect())
}

/// Every manifest in `dir` (the plain one and each shard's).
pub(crate) fn manifests_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("mastfetch-manifest") && name.ends_with(".jsonl") {
            found.push(dir.join(name.as_ref()));
        }
    }
    found.sort();
    Ok(found)
}

/// Appends entries as files complete; [`Writer::finish`] compacts to one line per file.
pub(crate) struct Writer {
    dir: PathBuf,
    manifest_path: PathBuf,
    sums_path: PathBuf,
    manifest: File,
    /// Only with `--sha256`: without it no `SHA256SUMS` is written (nor an old one touched).
    sums: Option<File>,
    // Held for the writer's lifetime: the OS releases it if the process dies.
    _lock: File,
}

fn open_append(path: &Path) -> Result<File, ManifestError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| ManifestError::Write {
            path: path.to_path_buf(),
            source,
        })
}

impl Writer {
    /// Take the lock (what earlier runs recorded is read through an [`Index`], not held).
    /// `sums`: also write `SHA256SUMS` (`--sha256`).
    pub(crate) fn open(
        dir: &Path,
        shard: Option<(u32, u32)>,
        sums: bool,
    ) -> Result<Writer, ManifestError> {
        let manifest_path = dir.join(manifest_name(shard));
        let sums_path = dir.join(sums_name(shard));
        let lock_path = crate::dest::lock_path(dir, &manifest_name(shard));
        // The lock lives in the private folder, where no planned file may land (an object
        // named like it would otherwise replace it and let a second writer in).
        if let Some(private) = lock_path.parent() {
            fs::create_dir_all(private).map_err(|source| ManifestError::Write {
                path: private.to_path_buf(),
                source,
            })?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| ManifestError::Write {
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(ManifestError::Locked {
                    path: manifest_path,
                    lock: lock_path,
                })
            }
            // Not "someone else holds it": a file system without locks must say so.
            Err(fs::TryLockError::Error(source)) => {
                return Err(ManifestError::Lock {
                    lock: lock_path,
                    source,
                })
            }
        }
        trim_torn_tail(&manifest_path).map_err(|source| ManifestError::Write {
            path: manifest_path.clone(),
            source,
        })?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            manifest: open_append(&manifest_path)?,
            sums: if sums {
                Some(open_append(&sums_path)?)
            } else {
                None
            },
            manifest_path,
            sums_path,
            _lock: lock,
        })
    }

    /// Record one file now: one `write` per line so that a crash leaves at most a torn last line,
    /// and a write that fails part-way (a full disk) is cut back off, so no line is ever torn.
    pub(crate) fn record(&mut self, entry: Entry) -> Result<(), ManifestError> {
        let mut line = serde_json::to_vec(&entry).expect("manifest entries serialize");
        line.push(b'\n');
        let before = self.manifest.metadata().map(|m| m.len());
        if let Err(source) = self.manifest.write_all(&line) {
            if let Ok(len) = before {
                let _ = self.manifest.set_len(len);
            }
            return Err(ManifestError::Write {
                path: self.manifest_path.clone(),
                source,
            });
        }
        if let (true, Some(sha), Some(sums)) =
            (entry.status.is_complete(), &entry.sha256, &mut self.sums)
        {
            sums.write_all(format!("{sha}  {}\n", entry.path).as_bytes())
                .map_err(|source| ManifestError::Write {
                    path: self.sums_path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Rewrite both files with one line per file, atomically: the last line for each path,
    /// where it stands among the others (compaction drops superseded lines and never
    /// reorders). Streams: 32 bytes a line are held (its path's 128-bit hash and its offset), so a
    /// manifest of millions of files compacts in tens of megabytes.
    pub(crate) fn finish(&mut self) -> Result<(), ManifestError> {
        let tmp = crate::dest::replacement_path(&self.dir, &manifest_name_of(&self.manifest_path));
        let sums_tmp = crate::dest::replacement_path(&self.dir, &manifest_name_of(&self.sums_path));
        let sums = self
            .sums
            .is_some()
            .then_some((sums_tmp.as_path(), &*self.sums_path));
        match compact(&self.manifest_path, &tmp, sums) {
            // No room for the compacted copy: the appended lines are whole and read the same
            // (the last line for a path wins), so they stay as they are.
            Err(ManifestError::Write { source, .. }) if is_disk_full(&source) => {
                let _ = fs::remove_file(&tmp);
                let _ = fs::remove_file(&sums_tmp);
                return Ok(());
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                let _ = fs::remove_file(&sums_tmp);
                return Err(e);
            }
            Ok(()) => rename(&tmp, &self.manifest_path)?,
        }
        if self.sums.is_some() {
            rename(&sums_tmp, &self.sums_path)?;
        }
        Ok(())
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), ManifestError> {
    fs::rename(from, to).map_err(|source| ManifestError::Write {
        path: to.to_path_buf(),
        source,
    })
}

/// Write the compacted manifest to `tmp` (and, with `sums` = (its temporary, its name), the
/// `SHA256SUMS` of its complete files): each path's last line, in file order.
fn compact(manifest: &Path, tmp: &Path, sums: Option<(&Path, &Path)>) -> Result<(), ManifestError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ManifestError::Write { path, source }
    };
    let create = |p: &Path| {
        File::create(p)
            .map(|f| io::BufWriter::with_capacity(1 << 20, f))
            .map_err(write_err(p))
    };
    let winners = last_lines(manifest)?;
    let mut out = create(tmp)?;
    let mut sums_out = sums.map(|(t, _)| create(t)).transpose()?;
    let mut next = winners.iter().peekable();
    lines(manifest, |offset, line| {
        if next.next_if_eq(&&offset).is_none() {
            return Ok(());
        }
        out.write_all(line.as_bytes())
            .map_err(write_err(manifest))?;
        if let (Some(w), Some((_, name))) = (&mut sums_out, sums) {
            let e = parse(manifest, 0, line.trim())?;
            if let (true, Some(sha)) = (e.status.is_complete(), &e.sha256) {
                writeln!(w, "{sha}  {}", e.path).map_err(write_err(name))?;
            }
        }
        Ok(())
    })?;
    if let (Some(w), Some((_, name))) = (sums_out, sums) {
        w.into_inner()
            .map_err(|e| write_err(name)(e.into_error()))?;
    }
    out.into_inner()
        .map_err(|e| write_err(manifest)(e.into_error()))?
        .sync_data()
        .map_err(write_err(manifest))
}

/// Every line of a manifest with its byte offset (a torn last line included: the caller
/// decides). Blank lines are passed over.
fn lines(
    path: &Path,
    mut each: impl FnMut(u64, &str) -> Result<(), ManifestError>,
) -> Result<(), ManifestError> {
    let read_err = |source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(read_err)?);
    let mut line = String::new();
    let mut offset = 0u64;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(read_err)?;
        if n == 0 {
            return Ok(());
        }
        if !line.trim().is_empty() {
            each(offset, &line)?;
        }
        offset += n as u64;
    }
}

pub(crate) fn parse(path: &Path, line: usize, text: &str) -> Result<Entry, ManifestError> {
    serde_json::from_str(text).map_err(|source| ManifestError::Parse {
        path: path.to_path_buf(),
        line,
        source,
    })
}

/// The offsets of the lines that hold each path's last record, ascending. A line that does
/// not parse (only a torn last line can be left: the writer cuts it on opening) is dropped.
fn last_lines(path: &Path) -> Result<Vec<u64>, ManifestError> {
    let mut last: Vec<(u128, u64)> = Vec::new();
    lines(path, |offset, line| {
        if let Ok(e) = serde_json::from_str::<PathOnly>(line.trim()) {
            last.push((path_hash128(&e.path), offset));
        }
        Ok(())
    })?;
    // Sort by path, later lines first, keep the first of each path.
    last.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    last.dedup_by_key(|r| r.0);
    let mut offsets: Vec<u64> = last.into_iter().map(|r| r.1).collect();
    offsets.sort_unstable();
    Ok(offsets)
}

/// The one field compaction needs, read without building the entry.
#[derive(Deserialize)]
struct PathOnly<'a> {
    #[serde(borrow)]
    path: std::borrow::Cow<'a, str>,
}

/// 128 bits: two manifest paths that shared a hash would lose one record in compaction, so
/// the hash is wide enough that millions of paths never do.
fn path_hash128(path: &str) -> u128 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut a = DefaultHasher::new();
    path.hash(&mut a);
    let mut b = DefaultHasher::new();
    (0x6d61_7374u32, path).hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// A write that failed because the disk is full (ENOSPC, or a quota).
pub fn is_disk_full(e: &io::Error) -> bool {
    // ENOSPC and EDQUOT on Linux; `StorageFull` where the platform maps them.
    e.kind() == io::ErrorKind::StorageFull || matches!(e.raw_os_error(), Some(28 | 122))
}

fn manifest_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Cut a manifest's last line if a crash left it without its newline (a torn write), so that
/// lines appended after it stay whole.
fn trim_torn_tail(path: &Path) -> io::Result<()> {
    use std::io::Read as _;
    let Ok(mut f) = OpenOptions::new().read(true).write(true).open(path) else {
        return Ok(());
    };
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    // A manifest line is well under this; look back far enough to find the last newline.
    let back = len.min(1 << 20);
    f.seek(SeekFrom::Start(len - back))?;
    let mut tail = Vec::with_capacity(back as usize);
    f.read_to_end(&mut tail)?;
    if tail.last() == Some(&b'\n') {
        return Ok(());
    }
    let keep = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) as u64;
    f.set_len(len - back + keep)
}

/// A manifest line for unit tests: an S3 file of 3 bytes at `path`.
#[cfg(test)]
pub(crate) fn test_entry(path: &str, status: Status, sha: Option<&str>) -> Entry {
    Entry {
        uri: format!("mast:JWST/product/{path}"),
        path: path.into(),
        source: Source::S3,
        bucket: Some("stpubdata".into()),
        key: Some(path.into()),
        url: "u".into(),
        size: Some(3),
        sha256: sha.map(Into::into),
        etag: Some("e".into()),
        checksum: None,
        verified: None,
        crc64nvme: None,
        copy_etag: None,
        access: Some("PUBLIC".into()),
        status,
        message: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_tail_is_cut_before_more_lines_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"b\":").unwrap();
        trim_torn_tail(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n");
        trim_torn_tail(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n");
        std::fs::write(&p, "torn").unwrap();
        trim_torn_tail(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
    }

    #[test]
    fn appended_lines_compact_to_the_last_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path(), None, true).unwrap();
        w.record(test_entry("a", Status::Failed, None)).unwrap();
        w.record(test_entry("b", Status::Ok, Some("bb"))).unwrap();
        w.record(test_entry("a", Status::Ok, Some("aa"))).unwrap();
        // Before finish: a crash would leave three lines; the reader keeps the last for `a`.
        let read_back = read(&dir.path().join("mastfetch-manifest.jsonl")).unwrap();
        assert_eq!(read_back.len(), 2);
        assert_eq!(read_back[0].status, Status::Ok);
        w.finish().unwrap();
        let text = fs::read_to_string(dir.path().join("mastfetch-manifest.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 2);
        // Each path's last line, where it stands: `a` was last written after `b`.
        let sums = fs::read_to_string(dir.path().join("SHA256SUMS")).unwrap();
        assert_eq!(sums, "bb  b\naa  a\n");
        let paths: Vec<Entry> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!((paths[0].status, paths[1].status), (Status::Ok, Status::Ok));
    }

    #[test]
    fn old_lines_read_and_sha256_is_written_only_when_known() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mastfetch-manifest.jsonl");
        // A line written before checksum/verified/crc64nvme existed.
        let old = r#"{"uri":"u","path":"a","source":"s3","bucket":"b","key":"k","url":"x","size":3,"sha256":"aa","etag":"e","access":null,"status":"ok","message":null}"#;
        fs::write(&p, format!("{old}\n")).unwrap();
        let e = read(&p).unwrap().remove(0);
        assert_eq!(e.sha256.as_deref(), Some("aa"));
        assert_eq!((e.checksum, e.verified, e.crc64nvme), (None, None, None));
        let mut new = test_entry("b", Status::Ok, None);
        new.crc64nvme = Some("AAAAAAAAAAA=".into());
        new.verified = Some("size".into());
        let text = serde_json::to_string(&new).unwrap();
        assert!(!text.contains("sha256"), "{text}");
        assert!(text.contains(r#""checksum":null"#), "{text}");
        // Without --sha256 no SHA256SUMS is written.
        let sums = tempfile::tempdir().unwrap();
        let mut w = Writer::open(sums.path(), None, false).unwrap();
        w.record(test_entry("c", Status::Ok, Some("cc"))).unwrap();
        w.finish().unwrap();
        assert!(!sums.path().join("SHA256SUMS").exists());
    }

    #[test]
    fn torn_last_line_is_ignored_but_garbage_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mastfetch-manifest.jsonl");
        let good = serde_json::to_string(&test_entry("a", Status::Ok, Some("aa"))).unwrap();
        fs::write(&p, format!("{good}\n{{\"uri\":\"x")).unwrap();
        assert_eq!(read(&p).unwrap().len(), 1);
        fs::write(&p, format!("nonsense\n{good}\n")).unwrap();
        let err = read(&p).unwrap_err().to_string();
        assert!(err.contains(":1:"), "{err}");
    }

    #[test]
    fn a_second_writer_is_refused_but_another_shard_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Writer::open(dir.path(), None, true).unwrap();
        let err = Writer::open(dir.path(), None, true)
            .err()
            .expect("second writer refused");
        assert!(matches!(err, ManifestError::Locked { .. }));
        let _s0 = Writer::open(dir.path(), Some((0, 2)), true).unwrap();
        let _s1 = Writer::open(dir.path(), Some((1, 2)), true).unwrap();
        assert_eq!(manifests_in(dir.path()).unwrap().len(), 3);
    }
}
