//! The resume log beside a multi-part file's temporary file (see the design note in
//! `transfer`): a JSON [`StateHeader`], then `etag <value>` once the first answer pins an ETag
//! the plan did not have, then one line per part written.
//!
//! Owns opening (or continuing) a file's temporary file and log (`open_temp`), when a
//! log may be continued (`resumable`), and the digests of the parts it lists, taken again
//! from disk (`resumed_parts`): a logged part is only a promise that its bytes were written,
//! so the log never vouches for bytes nobody checked. Where the files live is `dest`'s.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checksum::{Expect, PartDigest, PartHasher};
use crate::dest::{Folders, Place};
use crate::outcome::{io_err, FinishError};

/// The resume log beside a temporary file: a JSON header, then one line per finished part.
/// Finished parts are only a promise that their bytes were written: their digests are taken
/// again from disk when a run resumes, so the log never vouches for unchecked bytes.
#[derive(Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StateHeader {
    pub(crate) size: u64,
    pub(crate) part_size: u64,
    pub(crate) etag: Option<String>,
    /// Upload part lengths, when the parts follow them (absent in older logs: uniform parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) parts: Option<Vec<u64>>,
}

/// The digests of the parts an earlier run finished (from its resume log), taken again from
/// the bytes on disk; `None` for every part still to fetch.
pub(crate) async fn resumed_parts(
    file: &File,
    state: &Path,
    bounds: &[u64],
    expect: &Expect,
) -> io::Result<Vec<Option<PartDigest>>> {
    let parts = bounds.len() - 1;
    let finished: Vec<u64> = read_done_parts(state)
        .into_iter()
        .filter(|&p| (p as usize) < parts)
        .collect();
    let (file2, bounds2, expect2) = (file.try_clone(), bounds.to_vec(), expect.clone());
    let digests = tokio::task::spawn_blocking(move || {
        let file2 = file2?;
        finished
            .into_iter()
            .map(|p| {
                let (at, len) = (bounds2[p as usize], bounds2[p as usize + 1]);
                Ok((p, PartHasher::of_range(&expect2, &file2, at, len - at)?))
            })
            .collect::<io::Result<Vec<_>>>()
    })
    .await
    .expect("re-hash task does not panic")?;
    let mut done = vec![None; parts];
    for (p, d) in digests {
        done[p as usize] = Some(d);
    }
    Ok(done)
}

/// Parts already written by an earlier run, from the resume log.
pub(crate) fn read_done_parts(state: &Path) -> std::collections::BTreeSet<u64> {
    let Ok(f) = File::open(state) else {
        return Default::default();
    };
    BufReader::new(f)
        .lines()
        .skip(1)
        .map_while(Result::ok)
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether an earlier run's temporary file can be continued; returns the ETag it was pinned to.
pub(crate) fn resumable(tmp: &Path, state: &Path, want: &StateHeader) -> Option<Option<String>> {
    let f = File::open(state).ok()?;
    let mut lines = BufReader::new(f).lines().map_while(Result::ok);
    let header: StateHeader = serde_json::from_str(&lines.next()?).ok()?;
    let learned = lines
        .filter_map(|l| l.strip_prefix("etag ").map(str::to_string))
        .last();
    let etag = header.etag.clone().or(learned);
    let same_object = match (&want.etag, &etag) {
        (Some(a), Some(b)) => a == b,
        // Without an ETag from the listing, the responses will tell (they are checked).
        _ => true,
    };
    let ok = header.size == want.size
        && header.part_size == want.part_size
        && header.parts == want.parts
        && same_object
        && fs::metadata(tmp).ok()?.len() == want.size;
    ok.then_some(want.etag.clone().or(etag))
}

/// Create the folders and the temporary file, or continue an earlier run's. `header` is
/// the resume log's of a file fetched in parts (`None`: one request, no log). Returns the
/// file, its resume log and the ETag its bytes are pinned to (`etag` unless the log says).
/// Create the folders and the temporary file, or continue an earlier run's (see the
/// doc comment above for `header`).
pub(crate) fn open_temp(
    folders: &Folders,
    place: &Place,
    header: Option<StateHeader>,
    etag: Option<String>,
) -> Result<(File, Option<File>, Option<String>), FinishError> {
    let (tmp, state) = (&place.tmp, &place.state);
    folders.make(place)?;
    let Some(header) = header else {
        let file = place.create_tmp()?;
        let _ = fs::remove_file(state); // left by a run with a smaller part size
        return Ok((file, None, etag));
    };
    if let Some(etag) = resumable(tmp, state, &header) {
        let file = place.open_tmp()?;
        let log = OpenOptions::new()
            .append(true)
            .open(state)
            .map_err(io_err("cannot open", state))?;
        return Ok((file, Some(log), etag));
    }
    let file = place.create_tmp()?;
    file.set_len(header.size)
        .map_err(io_err("cannot size", tmp))?;
    let mut log = File::create(state).map_err(io_err("cannot create", state))?;
    let mut line = serde_json::to_vec(&header).expect("header serializes");
    line.push(b'\n');
    log.write_all(&line)
        .map_err(io_err("cannot write", state))?;
    Ok((file, Some(log), etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_log_is_continued_only_for_the_same_object_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, state) = (dir.path().join("t"), dir.path().join("s"));
        let header = |etag: Option<&str>| StateHeader {
            size: 16,
            part_size: 8,
            etag: etag.map(str::to_string),
            parts: None,
        };
        std::fs::write(&tmp, [0u8; 16]).unwrap();
        let mut log = serde_json::to_string(&header(None)).unwrap();
        log.push_str("\netag \"abc\"\n1\n");
        std::fs::write(&state, log).unwrap();
        // The ETag learned in the log pins the bytes; parts written are listed.
        assert_eq!(
            resumable(&tmp, &state, &header(None)),
            Some(Some("\"abc\"".to_string()))
        );
        assert_eq!(read_done_parts(&state).into_iter().collect::<Vec<_>>(), [1]);
        // Another object (ETag), another part size or a short file: start over.
        assert_eq!(resumable(&tmp, &state, &header(Some("\"xyz\""))), None);
        let other = StateHeader {
            part_size: 4,
            ..header(None)
        };
        assert_eq!(resumable(&tmp, &state, &other), None);
        std::fs::write(&tmp, [0u8; 15]).unwrap();
        assert_eq!(resumable(&tmp, &state, &header(None)), None);
    }
}
