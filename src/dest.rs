//! mastfetch's own names under DIR, and the rule that no planned file may take one.
//!
//! Owns the private folder `DIR/.mastfetch/` (temporary files, resume logs, locks, the
//! manifest's replacement copy), the names inside it, and the list of destinations a plan must
//! refuse: the manifests and `SHA256SUMS*` at the top of DIR, and anything under the private
//! folder. Temporary names are derived from a hash of the destination, so that no object key can
//! map onto one and no two planned files share one. It does not decide where a file lands (that
//! is `plan`).

use std::path::{Path, PathBuf};

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
