//! Where every record of every manifest of a folder is, without holding the records: the
//! index `verify` and `get`'s skip pass read manifests of millions of files through.
//!
//! Owns the index (24 bytes a record: its path's hash, its manifest, its offset), reading a
//! record back (positional reads through the handles indexed, so a manifest replaced
//! meanwhile cannot shift offsets), and which unreadable manifests may be passed over. It does
//! not write manifests or decide what a record means (that is `manifest`, `verify`,
//! `complete`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::manifest::{manifests_in, parse, Entry, ManifestError};

/// Where every record of every manifest of a folder is, without holding the records: 24 bytes
/// a record (its path's hash, its file, its offset), so `verify` of millions of files reads each
/// record when it checks that file. Within one manifest the last line for a path wins, as in
/// `manifest::read`; a path recorded by several manifests has several records.
pub(crate) struct Index {
    files: Vec<PathBuf>,
    /// The manifests as they were indexed: records are read back through these (positional
    /// reads, any thread), so a manifest another shard replaces meanwhile (its compaction
    /// renames a new file into place) cannot shift the offsets under us.
    handles: Vec<File>,
    /// (hash of the path, manifest, byte offset of the line), sorted.
    records: Vec<(u64, u32, u64)>,
    /// Where each path's records start in `records` (the last is its end).
    groups: Vec<usize>,
    /// Manifests whose last line cannot be read (cut short by a crash), with its number: the
    /// file it recorded is not checked, and `verify` says so.
    pub torn: Vec<(PathBuf, usize)>,
    /// Manifests that could not be read and were passed over ([`Index::build_passing_over`]).
    pub passed_over: Vec<ManifestError>,
}

/// Index one manifest's lines into `records` (as file `f`); a torn last line goes to `torn`.
/// Returns the handle the records are to be read back through.
fn index_file(
    f: u32,
    path: &Path,
    records: &mut Vec<(u64, u32, u64)>,
    torn: &mut Vec<(PathBuf, usize)>,
) -> Result<File, ManifestError> {
    let read_err = |source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    };
    let handle = File::open(path).map_err(read_err)?;
    let mut reader = BufReader::with_capacity(1 << 20, handle.try_clone().map_err(read_err)?);
    let mut line = String::new();
    let (mut offset, mut number) = (0u64, 0usize);
    let mut bad = None;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(read_err)?;
        if n == 0 {
            break;
        }
        number += 1;
        let text = line.trim();
        if !text.is_empty() {
            // Read whole, so a bad line is reported here with its number.
            // A bad line is an error unless it is the last (a crash cut it short).
            if let Some((line, source)) = bad.take() {
                return Err(ManifestError::Parse {
                    path: path.to_path_buf(),
                    line,
                    source,
                });
            }
            match serde_json::from_str::<Entry>(text) {
                Ok(p) => records.push((path_hash(&p.path), f, offset)),
                Err(source) => bad = Some((number, source)),
            }
        }
        offset += n as u64;
    }
    if let Some((line, _)) = bad {
        torn.push((path.to_path_buf(), line));
    }
    Ok(handle)
}

fn path_hash(path: &str) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

impl Index {
    /// Index every manifest in `dir`. A torn last line (a crash mid-write) is ignored; any
    /// other unreadable line is an error naming it.
    pub(crate) fn build(dir: &Path) -> Result<Index, ManifestError> {
        Index::build_passing_over(dir, |_| false)
    }

    /// As [`Index::build`], but a manifest for which `may_skip` says so is passed over when it
    /// cannot be read (recorded in `passed_over`) instead of failing the whole index.
    pub(crate) fn build_passing_over(
        dir: &Path,
        may_skip: impl Fn(&Path) -> bool,
    ) -> Result<Index, ManifestError> {
        let files = manifests_in(dir).map_err(|source| ManifestError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut records = Vec::new();
        let mut torn = Vec::new();
        let mut passed_over = Vec::new();
        let mut handles = Vec::with_capacity(files.len());
        for (f, path) in files.iter().enumerate() {
            let before = records.len();
            match index_file(f as u32, path, &mut records, &mut torn) {
                Ok(handle) => handles.push(handle),
                Err(e) if may_skip(path) => {
                    records.truncate(before);
                    passed_over.push(e);
                    // Keeps manifests and handles aligned; no record points at it.
                    handles.push(File::open("/dev/null").map_err(|source| {
                        ManifestError::Read {
                            path: path.clone(),
                            source,
                        }
                    })?);
                }
                Err(e) => return Err(e),
            }
        }
        records.sort_unstable();
        // The last line for a path in one manifest wins: keep the largest offset per (hash, file).
        records.dedup_by(|later, earlier| {
            if (later.0, later.1) == (earlier.0, earlier.1) {
                earlier.2 = earlier.2.max(later.2);
                true
            } else {
                false
            }
        });
        let mut groups: Vec<usize> = (0..records.len())
            .filter(|&i| i == 0 || records[i].0 != records[i - 1].0)
            .collect();
        groups.push(records.len());
        Ok(Index {
            files,
            handles,
            records,
            groups,
            torn,
            passed_over,
        })
    }

    /// Paths (more exactly, path hashes) indexed.
    pub(crate) fn len(&self) -> usize {
        self.groups.len() - 1
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records of `path`, each with the file name of the manifest that holds it, in
    /// manifest name order (the last line for the path in each).
    pub(crate) fn lookup(&self, path: &str) -> Result<Vec<(&str, Entry)>, ManifestError> {
        let h = path_hash(path);
        let start = self.records.partition_point(|r| r.0 < h);
        let end = self.records.partition_point(|r| r.0 <= h);
        let mut found = Vec::new();
        for &(_, f, offset) in &self.records[start..end] {
            let e = self.read_at(f, offset)?;
            if e.path == path {
                let name = self.files[f as usize].file_name().and_then(|n| n.to_str());
                found.push((name.unwrap_or_default(), e));
            }
        }
        Ok(found)
    }

    fn read_at(&self, f: u32, offset: u64) -> Result<Entry, ManifestError> {
        let path = &self.files[f as usize];
        let line =
            line_at(&self.handles[f as usize], offset).map_err(|source| ManifestError::Read {
                path: path.clone(),
                source,
            })?;
        parse(path, 0, line.trim())
    }

    /// The records of group `g`, split by path (equal hashes of different paths are rare but
    /// possible): each inner list is one path's records, manifests in name order.
    pub(crate) fn group(&self, g: usize) -> Result<Vec<Vec<Entry>>, ManifestError> {
        let mut by_path: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for &(_, f, offset) in &self.records[self.groups[g]..self.groups[g + 1]] {
            let e = self.read_at(f, offset)?;
            by_path.entry(e.path.clone()).or_default().push(e);
        }
        Ok(by_path.into_values().collect())
    }
}

/// The line that starts at `offset`, by positional reads (no shared file position).
fn line_at(file: &File, offset: u64) -> io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        let n = file.read_at(&mut buf[len..], offset + len as u64)?;
        let newline = buf[len..len + n].iter().position(|&b| b == b'\n');
        len += n;
        if let Some(i) = newline {
            buf.truncate(len - n + i);
            break;
        }
        if n == 0 {
            buf.truncate(len);
            break;
        }
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
    }
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::manifest::{test_entry, Status};

    #[test]
    fn an_unreadable_manifest_fails_the_index_unless_it_may_be_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let good = serde_json::to_string(&test_entry("a", Status::Ok, None)).unwrap();
        let other = serde_json::to_string(&test_entry("b", Status::Ok, None)).unwrap();
        fs::write(
            dir.path().join("mastfetch-manifest.jsonl"),
            format!("{good}\n"),
        )
        .unwrap();
        let bad = dir.path().join("mastfetch-manifest.shard-1-of-2.jsonl");
        fs::write(&bad, format!("{other}\nnonsense\n{other}\n")).unwrap();
        assert!(matches!(
            Index::build(dir.path()),
            Err(ManifestError::Parse { line: 2, .. })
        ));
        let index = Index::build_passing_over(dir.path(), |p| p == bad).unwrap();
        assert_eq!(index.passed_over.len(), 1);
        assert_eq!(index.lookup("a").unwrap().len(), 1);
        assert!(index.lookup("b").unwrap().is_empty());
    }
}
