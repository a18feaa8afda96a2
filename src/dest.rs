//! DIR: where a planned file's bytes live while it is fetched, and how they take its place.
//!
//! Owns the rule that a destination stays inside DIR (`safe_relative`), the private folder
//! `DIR/.mastfetch/` (temporary files, resume logs, locks, the manifest's replacement copy),
//! the names inside it, the list of destinations a plan must refuse (the manifests and
//! `SHA256SUMS*` at the top of DIR, and anything under the private folder), and the placement
//! policy every downloader follows ([`Place`]): bytes go to a temporary file named by a hash
//! of the destination (so no object key can map onto one and no two planned files share one),
//! folders are made once a run ([`Folders`]), a file is renamed into place only after its
//! downloader checked it, and bytes that failed their check are thrown away with their resume
//! log. It does not decide where a file lands (that is `plan`), nor what the resume log says
//! (each downloader keeps its own: `transfer` its parts, `https` the URL it fetched).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// The private folder at the top of DIR. A leading dot keeps it out of `ls` and globs.
pub(crate) const PRIVATE_DIR: &str = ".mastfetch";

/// Name prefixes of mastfetch's own files at the top of DIR (manifests of every shard, their
/// sums files, and the `.mastfetch-manifest*.lock` files of earlier versions, which a run of
/// such a version may still hold), compared without case so that a case-insensitive file
/// system cannot fold an object onto them.
const RESERVED_PREFIXES: [&str; 3] = ["mastfetch-manifest", "sha256sums", ".mastfetch"];

/// Why a destination is mastfetch's own, or `None` when a planned file may land there.
pub(crate) fn reserved(dest: &str) -> Option<&'static str> {
    let first = dest.split('/').next().unwrap_or(dest);
    if first.eq_ignore_ascii_case(PRIVATE_DIR) {
        return Some("mastfetch's private folder (.mastfetch/)");
    }
    if !dest.contains('/') {
        let lower = dest.to_ascii_lowercase();
        if RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p)) {
            return Some("a name mastfetch keeps for its own files (manifest, SHA256SUMS, lock)");
        }
    }
    None
}

/// `DIR/.mastfetch`.
pub(crate) fn private_dir(dir: &Path) -> PathBuf {
    dir.join(PRIVATE_DIR)
}

/// The temporary file and resume log of the planned file `dest` (relative to DIR): in the
/// private folder, named by a hash of `dest`, so distinct destinations never share them and a
/// rerun finds the same ones.
pub fn temp_paths(dir: &Path, dest: &str) -> (PathBuf, PathBuf) {
    let digest = Sha256::digest(dest.as_bytes());
    // 128 bits: collisions between the destinations of any real plan are out of reach.
    let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let tmp = private_dir(dir).join("tmp");
    (
        tmp.join(format!("{name}.part")),
        tmp.join(format!("{name}.state")),
    )
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unsafe destination {path:?}: {reason}")]
pub(crate) struct UnsafePath {
    pub path: String,
    pub reason: &'static str,
}

/// Check that a destination taken from any input stays inside DIR: relative, `/`-separated,
/// no `..`, `.`, empty component, backslash or NUL. Returns the path to join onto DIR.
pub(crate) fn safe_relative(path: &str) -> Result<PathBuf, UnsafePath> {
    let bad = |reason| UnsafePath {
        path: path.to_string(),
        reason,
    };
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if path.contains('\\') {
        return Err(bad("contains a backslash"));
    }
    if path.starts_with('/') {
        return Err(bad("absolute path"));
    }
    if path.chars().any(char::is_control) {
        return Err(bad("contains a control character"));
    }
    for part in path.split('/') {
        match part {
            "" => return Err(bad("empty path component")),
            "." | ".." => return Err(bad("`.` or `..` component")),
            _ => {}
        }
    }
    let rel = PathBuf::from(path);
    // Belt and braces: whatever the platform makes of the string, only normal components.
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad("not a plain relative path"));
    }
    Ok(rel)
}

/// Join a checked destination onto DIR.
pub(crate) fn dest_path(dir: &Path, dest: &str) -> Result<PathBuf, UnsafePath> {
    Ok(dir.join(safe_relative(dest)?))
}

/// A failed local file operation under DIR (never a network failure: a full disk is told
/// apart from the archive's answers).
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}")]
pub(crate) struct DiskError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// `map_err` for a local file operation on `path`.
pub(crate) fn disk<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> DiskError + 'a {
    move |source| DiskError {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The three paths of one planned file: its final name, its temporary file and its resume log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    pub dest: PathBuf,
    pub tmp: PathBuf,
    pub state: PathBuf,
}

impl Place {
    /// Where the planned file `dest` (relative to DIR, checked here) is fetched and lands.
    pub(crate) fn of(dir: &Path, dest: &str) -> Result<Place, UnsafePath> {
        let (tmp, state) = temp_paths(dir, dest);
        Ok(Place {
            dest: dest_path(dir, dest)?,
            tmp,
            state,
        })
    }

    /// A new, empty temporary file (an earlier one is cut to nothing), opened to write and to
    /// read back (parts are hashed from it while later ones still arrive).
    pub(crate) fn create_tmp(&self) -> Result<File, DiskError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.tmp)
            .map_err(disk("cannot create", &self.tmp))
    }

    /// The temporary file an earlier run left, to continue it.
    pub(crate) fn open_tmp(&self) -> Result<File, DiskError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.tmp)
            .map_err(disk("cannot open", &self.tmp))
    }

    /// Rename the checked temporary file into place; its resume log goes with it. Only after
    /// the downloader's check: unchecked bytes never reach the final name.
    pub(crate) fn put_in_place(&self) -> Result<(), DiskError> {
        fs::rename(&self.tmp, &self.dest).map_err(disk("cannot rename into place", &self.dest))?;
        let _ = fs::remove_file(&self.state);
        Ok(())
    }

    /// Throw away bytes that failed their check (or belong to another object), with their
    /// resume log, so that no later run resumes from them.
    pub(crate) fn discard(&self) {
        let _ = fs::remove_file(&self.tmp);
        let _ = fs::remove_file(&self.state);
    }
}

/// The folders made in this run: one `create_dir_all` per folder, not one per file.
#[derive(Debug, Default)]
pub(crate) struct Folders(Mutex<HashSet<PathBuf>>);

impl Folders {
    /// Make the folders a file's final name and temporary file need.
    pub(crate) fn make(&self, place: &Place) -> Result<(), DiskError> {
        for parent in [place.dest.parent(), place.tmp.parent()]
            .into_iter()
            .flatten()
        {
            if !self.0.lock().unwrap().contains(parent) {
                fs::create_dir_all(parent).map_err(disk("cannot create folder", parent))?;
                self.0.lock().unwrap().insert(parent.to_path_buf());
            }
        }
        Ok(())
    }
}

/// The lock file of a manifest.
pub(crate) fn lock_path(dir: &Path, manifest_name: &str) -> PathBuf {
    private_dir(dir).join(format!("{manifest_name}.lock"))
}

/// Where a manifest (or sums file) is written before it is renamed over the old one.
pub(crate) fn replacement_path(dir: &Path, name: &str) -> PathBuf {
    private_dir(dir).join(format!("{name}.new"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_names_are_reserved() {
        for d in [
            "SHA256SUMS",
            "sha256sums.shard-0-of-2",
            "mastfetch-manifest.jsonl",
            "mastfetch-manifest.shard-1-of-4.jsonl",
            ".mastfetch",
            ".mastfetch/tmp/x.part",
            ".MASTFETCH/lock",
            ".mastfetch-manifest.jsonl.lock",
        ] {
            assert!(reserved(d).is_some(), "{d} not reserved");
        }
        for d in [
            "JWST/o/SHA256SUMS",
            "x.fits",
            ".X.mastfetch",
            "a/.mastfetch/b",
        ] {
            assert!(reserved(d).is_none(), "{d} reserved");
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a\\..\\b",
            "a\0b",
            "a/",
            "..",
        ] {
            assert!(safe_relative(p).is_err(), "{p:?} accepted");
        }
        assert_eq!(
            safe_relative("JWST/jw1/x.fits").unwrap(),
            PathBuf::from("JWST/jw1/x.fits")
        );
        assert_eq!(safe_relative("a..b/c").unwrap(), PathBuf::from("a..b/c"));
    }

    #[test]
    fn a_place_is_checked_and_renamed_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Place::of(dir.path(), "../x").is_err());
        let place = Place::of(dir.path(), "a/b.fits").unwrap();
        assert_eq!(place.dest, dir.path().join("a/b.fits"));
        let folders = Folders::default();
        folders.make(&place).unwrap();
        folders.make(&place).unwrap();
        std::fs::write(&place.tmp, b"bytes").unwrap();
        std::fs::write(&place.state, b"log").unwrap();
        place.put_in_place().unwrap();
        assert_eq!(std::fs::read(&place.dest).unwrap(), b"bytes");
        assert!(!place.tmp.exists() && !place.state.exists());
        std::fs::write(&place.tmp, b"bad").unwrap();
        std::fs::write(&place.state, b"log").unwrap();
        place.discard();
        assert!(!place.tmp.exists() && !place.state.exists());
        assert_eq!(std::fs::read(&place.dest).unwrap(), b"bytes");
        let err = Place::of(dir.path(), "c")
            .unwrap()
            .put_in_place()
            .unwrap_err();
        assert!(err.to_string().starts_with("cannot rename into place"));
    }

    #[test]
    fn temp_names_are_private_and_distinct() {
        let dir = Path::new("/d");
        let (a, sa) = temp_paths(dir, "X");
        let (b, _) = temp_paths(dir, ".X.mastfetch");
        assert_ne!(a, b);
        assert_ne!(a, sa);
        assert!(a.starts_with("/d/.mastfetch/"));
        assert_eq!(temp_paths(dir, "X"), (a, sa), "stable across runs");
    }
}
