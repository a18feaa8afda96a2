//! Sharding: which files of a plan one of N processes takes.
//!
//! The partition rule is `plan::partition` (largest first, each file to the shard with the
//! fewest bytes so far), the same in every process that reads the same plan. This module owns
//! its streaming form for plan files of millions of rows: two passes over the file, keeping 24
//! bytes a row in the first (its size and the hashes of its URI and destination) and 5 in the
//! second (the row it is tied to, whether it is this shard's) instead of the rows; the rows of
//! the shard are handed over one at a time.
//! It does not decide what a row means (that is `input` and `plan`).

use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use std::cell::RefCell;

use crate::input::{self, Item, Parsed};
use crate::plan::{partition, Plan, PlanEntry, PlanIndex, Tally};

#[derive(Debug, thiserror::Error)]
#[error("cannot read the plan {}", path.display())]
pub(crate) struct StreamError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// One shard's rows of a plan file, and the size of the whole plan.
#[derive(Debug, Default)]
pub(crate) struct Share {
    pub parsed: Parsed,
    /// Files (distinct rows) in the whole plan.
    pub total: usize,
}

/// The fields of a plan row that the partition needs, read without building the row.
#[derive(Deserialize)]
struct RowKey<'a> {
    #[serde(borrow)]
    uri: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    dest: std::borrow::Cow<'a, str>,
    size: Option<u64>,
}

/// Every row of a plan file, with its line number and byte offset: the same rows in both
/// passes.
fn rows(path: &Path, mut each: impl FnMut(usize, u64, &str)) -> Result<(), StreamError> {
    let err = |source| StreamError {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(err)?);
    let mut line = String::new();
    let (mut number, mut offset) = (0, 0u64);
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(err)?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        let text = line.trim();
        if !text.is_empty() && !text.starts_with('#') {
            each(number, offset, text);
        }
        offset += n as u64;
    }
}

/// The row of a plan file that starts at `offset` (from [`each_row`]).
pub(crate) fn row_at(
    reader: &mut BufReader<File>,
    path: &Path,
    offset: u64,
) -> Result<String, StreamError> {
    use std::io::{Seek, SeekFrom};
    let err = |source| StreamError {
        path: path.to_path_buf(),
        source,
    };
    reader.seek(SeekFrom::Start(offset)).map_err(err)?;
    let mut line = String::new();
    reader.read_line(&mut line).map_err(err)?;
    Ok(line.trim().to_string())
}

/// Whether the file is a plan (`plan --format jsonl` output): its first row reads as one.
pub(crate) fn is_plan_file(path: &Path) -> bool {
    // Only the first row is read: the file may be gigabytes, and the shard reads it twice after.
    let Ok(file) = File::open(path) else {
        return false;
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .map(|l| l.trim().to_string())
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| serde_json::from_str::<RowKey>(&l).is_ok())
}

fn hash(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// For each row, the earlier row it must stay with (itself when none): a repeat of a URI is a
/// duplicate of its first copy, and a repeat of a destination collides with it, and `plan`
/// decides both only when the two rows are in one shard. Equal hashes of different strings
/// only keep two rows together (balance, not correctness).
fn leaders(uri: &[u64], dest: &[u64]) -> Vec<u32> {
    let mut leader: Vec<u32> = (0..uri.len() as u32).collect();
    for hashes in [uri, dest] {
        let mut sorted: Vec<(u64, u32)> = hashes
            .iter()
            .enumerate()
            .map(|(i, &h)| (h, i as u32))
            .collect();
        sorted.sort_unstable();
        for run in sorted.chunk_by(|a, b| a.0 == b.0) {
            let first = run[0].1;
            for &(_, i) in &run[1..] {
                // Follow to the root so chains (same URI as one row, same dest as another) hold.
                let root = root_of(&leader, first);
                let own = root_of(&leader, i);
                let (keep, moved) = (root.min(own), root.max(own));
                leader[moved as usize] = keep;
            }
        }
    }
    (0..leader.len() as u32)
        .map(|i| root_of(&leader, i))
        .collect()
}

fn root_of(leader: &[u32], mut i: u32) -> u32 {
    while leader[i as usize] != i {
        i = leader[i as usize];
    }
    i
}

/// Shard `index` of `shards` of the plan file at `path`, read as a stream. A row that does not
/// parse is given to a shard like any other, which reports it.
pub(crate) fn stream(
    path: &Path,
    name: &str,
    shards: u32,
    index: u32,
) -> Result<Share, StreamError> {
    let mut parsed = Parsed::default();
    let total = each_row(path, name, shards, index, |_, row| {
        parsed.items.extend(row.items);
        parsed.problems.extend(row.problems);
    })?;
    Ok(Share { parsed, total })
}

/// Each row of shard `index` of `shards` (1 shard: every row) of the plan file, parsed, with
/// its byte offset; returns how many files (distinct rows) the whole plan has. Holds 16
/// bytes a row between the passes, nothing of the rows themselves.
pub(crate) fn each_row(
    path: &Path,
    name: &str,
    shards: u32,
    index: u32,
    mut each: impl FnMut(u64, Parsed),
) -> Result<usize, StreamError> {
    let (mut sizes, mut uris, mut dests) = (Vec::new(), Vec::new(), Vec::new());
    rows(path, |number, _, text| {
        match serde_json::from_str::<RowKey>(text) {
            Ok(k) => {
                sizes.push(k.size.unwrap_or(0));
                uris.push(hash(&k.uri));
                dests.push(hash(&k.dest));
            }
            Err(_) => {
                // Unique placeholders: an unreadable row stays alone.
                sizes.push(0);
                uris.push(hash(&format!("\0line {number}")));
                dests.push(hash(&format!("\0line {number}")));
            }
        }
    })?;
    let leader = leaders(&uris, &dests);
    drop((uris, dests));
    // Roots are the plan's files, in plan order; the others follow their root's shard.
    let roots: Vec<u32> = (0..leader.len() as u32)
        .filter(|&i| leader[i as usize] == i)
        .collect();
    let total = roots.len();
    let root_sizes: Vec<u64> = roots.iter().map(|&i| sizes[i as usize]).collect();
    drop(sizes);
    let root_shard = partition(&root_sizes, shards.max(1));
    drop(root_sizes);
    let mut mine = vec![false; leader.len()];
    for (r, &i) in roots.iter().enumerate() {
        mine[i as usize] = root_shard[r] == index;
    }
    drop((roots, root_shard));
    let mut row = 0;
    rows(path, |number, offset, text| {
        if mine[leader[row] as usize] {
            let mut parsed = Parsed::default();
            input::parse_jsonl_line(text, &format!("{name}:{number}"), &mut parsed);
            each(offset, parsed);
        }
        row += 1;
    })?;
    Ok(total)
}

/// What a pass over a plan file found besides the files it handed over: problems and
/// duplicates (in `plan`, whose `streamed` tally counts the files), rows that were not plan
/// rows (to be resolved by the caller, then admitted with [`Admitted::admit`]), and how many
/// files the whole plan has.
pub(crate) struct Admitted {
    pub plan: Plan,
    pub others: Parsed,
    pub total: usize,
    index: PlanIndex,
}

impl Admitted {
    /// Admit a file that did not come from a plan row (no earlier row to compare with).
    pub(crate) fn admit(&mut self, f: PlanEntry) -> Option<PlanEntry> {
        self.plan.admit_streamed(f, &mut self.index, |_| None)
    }
}

/// Each file of shard `index` of `shards` of a plan file, checked as `plan` checks files
/// (unsafe destinations, duplicates, clashes) and handed to `each` with the offset of its row,
/// nothing of it held: the checks keep hashes and the offsets of admitted rows (8 bytes a
/// file), and read an earlier row back when a hash says a later one may repeat it.
pub(crate) fn admit_rows(
    path: &Path,
    name: &str,
    (index, shards): (u32, u32),
    mut each: impl FnMut(u64, PlanEntry),
) -> Result<Admitted, StreamError> {
    let mut plan = Plan {
        streamed: Some(Tally::default()),
        ..Plan::default()
    };
    let mut plan_index = PlanIndex::default();
    let mut others = Parsed::default();
    let mut admitted: Vec<u64> = Vec::new();
    let reader = RefCell::new(BufReader::new(File::open(path).map_err(|source| {
        StreamError {
            path: path.to_path_buf(),
            source,
        }
    })?));
    let total = each_row(path, name, shards, index, |offset, row| {
        plan.problems.extend(row.problems);
        for item in row.items {
            let Item::Planned(f) = item else {
                others.items.push(item);
                continue;
            };
            let earlier = |i: u32| {
                let at = *admitted.get(i as usize)?;
                let row = row_at(&mut reader.borrow_mut(), path, at).ok()?;
                serde_json::from_str(&row).ok()
            };
            if let Some(f) = plan.admit_streamed(f, &mut plan_index, earlier) {
                admitted.push(offset);
                each(offset, f);
            }
        }
    })?;
    Ok(Admitted {
        plan,
        others,
        total,
        index: plan_index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_follow_their_first_copy() {
        // Rows 0 and 2 share a URI; rows 2 and 3 a destination; row 1 stands alone.
        let l = leaders(&[1, 2, 1, 4], &[10, 20, 30, 30]);
        assert_eq!(l, [0, 1, 0, 0]);
    }

    #[test]
    fn streamed_shards_cover_the_plan_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.jsonl");
        let mut text = String::new();
        for i in 0..200u64 {
            let name = format!("jw01234001001_02101_{i:05}_nrcb1_cal.fits");
            text.push_str(
                &serde_json::json!({
                    "uri": format!("mast:JWST/product/{name}"), "filename": name,
                    "source": "s3", "bucket": "b", "key": name, "url": "u",
                    "size": (i * 7919) % 1000, "etag": null, "access": "PUBLIC", "dest": name,
                })
                .to_string(),
            );
            text.push('\n');
        }
        text.push_str("{not json\n");
        std::fs::write(&path, &text).unwrap();
        assert!(is_plan_file(&path));
        let mut seen = std::collections::HashSet::new();
        let mut problems = 0;
        for k in 0..7 {
            let share = stream(&path, "plan.jsonl", 7, k).unwrap();
            assert_eq!(share.total, 201);
            problems += share.parsed.problems.len();
            for item in share.parsed.items {
                let input::Item::Planned(p) = item else {
                    panic!("plan rows only")
                };
                assert!(seen.insert(p.uri), "a row in two shards");
            }
        }
        assert_eq!(seen.len(), 200);
        assert_eq!(problems, 1, "the bad row is reported by one shard");
    }
}
