//! What DIR already holds, for `get`'s skip pass: files an earlier run completed (recorded by
//! any manifest of DIR, other shards' included) and files another tool left there (proven
//! against the archive before they are adopted).
//!
//! Owns the decision for each planned file (skip, check with one HEAD, prove, fetch) and the
//! streamed form of the pass for plan files of millions of rows: the manifests are read
//! through an [`Index`] (24 bytes a record), the plan file row by row, and a file found
//! complete is kept as the offset of its row (8 bytes), so a rerun over a million-file mirror
//! holds tens of megabytes. It does not fetch and does not write the manifest: the caller
//! records what this returns.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use futures::StreamExt;

use crate::adopt::{self, LocalFile};
use crate::index::Index;
use crate::manifest::Entry;
use crate::plan::{Plan, PlanEntry, Problem, Source};
use crate::resolve::Resolver;
use crate::s3::S3;
use crate::shard;
use crate::text;

/// Files of a foreign mirror proven at once by `get`: each is a HEAD at most and one read.
const ADOPT_PROOFS_IN_FLIGHT: usize = 8;

/// The records of every manifest of DIR, read on demand.
pub(crate) struct Known {
    dir: PathBuf,
    index: Index,
    /// The file name of this run's own manifest: its record of a file comes first.
    own: String,
}

/// What to do with one planned file.
enum Decision {
    /// An earlier run completed it, and the archive still holds that object.
    Complete(Entry),
    /// An earlier run completed it, but the plan gives no ETag to tell whether the archive
    /// still holds that object: one HEAD decides (`on_disk`: the file is there at its size).
    Check {
        prev: Entry,
        on_disk: bool,
    },
    /// No manifest records it, but a file is there: proven before it is adopted.
    Foreign(LocalFile),
    Fetch,
}

impl Known {
    /// Index every manifest of `dir`; `own` is the file name of this run's manifest. Another
    /// manifest that cannot be read is passed over with a note (its files are then fetched
    /// again, never skipped unchecked); this run's own must be readable.
    pub(crate) fn open(dir: &Path, own: &str) -> Result<Known> {
        let index = Index::build_passing_over(dir, |p| p.file_name().is_none_or(|n| n != own))
            .with_context(|| format!("cannot read the manifests of {}", dir.display()))?;

        Ok(Known {
            dir: dir.to_path_buf(),
            index,
            own: own.to_string(),
        })
    }

    /// The complete record of this file (same URI) by an earlier run: this manifest's, else
    /// the last other manifest's in name order. A manifest that cannot be read here is passed
    /// over: its files are fetched again, never skipped unchecked.
    fn previous(&self, f: &PlanEntry) -> Option<Entry> {
        let found = self.index.lookup(&f.dest).unwrap_or_default();
        let complete: Vec<_> = found
            .into_iter()
            .filter(|(_, e)| e.status.is_complete() && e.uri == f.uri)
            .collect();
        let own = complete.iter().position(|(name, _)| *name == self.own);
        let pick = own.or(complete.len().checked_sub(1))?;
        complete.into_iter().nth(pick).map(|(_, e)| e)
    }

    /// What the user should know of the manifests: those passed over.
    pub(crate) fn notes(&self) -> Vec<String> {
        self.index
            .passed_over
            .iter()
            .map(|e| {
                format!(
                    "{} (passed over: files it recorded are proven against the archive again)",
                    text::chain(e)
                )
            })
            .collect()
    }

    fn decide(&self, f: &PlanEntry) -> Decision {
        let on_disk = crate::dest::dest_path(&self.dir, &f.dest)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok());
        let Some(prev) = self.previous(f) else {
            // A file at the destination that no manifest records came from elsewhere (another
            // tool's mirror): proven against the archive instead of downloaded again.
            return match on_disk {
                Some(m) if m.is_file() && f.source == Source::S3 => Decision::Foreign(LocalFile {
                    rel: f.dest.clone(),
                    size: m.len(),
                    modified: m.modified().ok(),
                }),
                _ => Decision::Fetch,
            };
        };
        let on_disk = on_disk.is_some_and(|m| Some(m.len()) == prev.size);
        let same_size = |size: Option<u64>| size.is_none_or(|s| Some(s) == prev.size);
        let unchanged = match (f.source, &f.etag, &prev.etag) {
            (Source::Mast, _, _) => same_size(f.size),
            (Source::S3, Some(now), Some(then)) => now == then && same_size(f.size),
            (Source::S3, None, Some(_)) => return Decision::Check { prev, on_disk },
            // An empty object has no bytes to differ in (and no GET ever told its ETag).
            (Source::S3, _, None) => f.size == Some(0) && prev.size == Some(0),
        };
        if on_disk && unchanged {
            Decision::Complete(prev)
        } else {
            Decision::Fetch
        }
    }
}

/// Files an earlier run completed: held, or (for a streamed plan file) the offsets of their
/// rows, read again when they are recorded.
pub(crate) enum Skipped {
    Held(Vec<(PlanEntry, Entry)>),
    Rows { plan: PathBuf, offsets: Vec<u64> },
}

impl Skipped {
    /// Each skipped file with its earlier record, in plan order.
    pub(crate) fn for_each(
        self,
        known: &Known,
        mut each: impl FnMut(PlanEntry, Entry) -> Result<()>,
    ) -> Result<()> {
        match self {
            Skipped::Held(v) => v.into_iter().try_for_each(|(f, prev)| each(f, prev)),
            Skipped::Rows { plan, offsets } => {
                let file = File::open(&plan)
                    .with_context(|| format!("cannot read the plan {}", plan.display()))?;
                let mut reader = BufReader::with_capacity(64 << 10, file);
                for offset in offsets {
                    let row = shard::row_at(&mut reader, &plan, offset)?;
                    let f: PlanEntry = serde_json::from_str(&row).with_context(|| {
                        format!("the plan {} changed during the run", plan.display())
                    })?;
                    let prev = known.previous(&f).with_context(|| {
                        format!("the manifest record of {} changed during the run", f.dest)
                    })?;
                    each(f, prev)?;
                }
                Ok(())
            }
        }
    }
}

/// The plan split: what to fetch, what an earlier run completed, and what was already in DIR
/// from elsewhere and proven (with the record that adopts it).
pub(crate) struct Split {
    pub todo: Vec<PlanEntry>,
    pub skipped: Skipped,
    pub adopted: Vec<(PlanEntry, Entry)>,
}

/// Decisions that need the network, taken after the pass over the plan.
#[derive(Default)]
struct Pending {
    checks: Vec<(PlanEntry, Entry, bool)>,
    foreign: Vec<(PlanEntry, LocalFile)>,
}

impl Pending {
    /// Sort one file into `todo`, `complete` (via `skip`), or the pending checks.
    fn take(&mut self, known: &Known, f: PlanEntry, todo: &mut Vec<PlanEntry>) -> Option<Entry> {
        match known.decide(&f) {
            Decision::Complete(prev) => return Some(prev),
            Decision::Check { prev, on_disk } => self.checks.push((f, prev, on_disk)),
            Decision::Foreign(local) => self.foreign.push((f, local)),
            Decision::Fetch => todo.push(f),
        }
        None
    }

    /// One HEAD for each file an earlier run completed whose plan row gave no ETag, and one
    /// proof for each foreign file.
    async fn settle(self, dir: &Path, s3: &S3, split: &mut Split) -> Vec<(PlanEntry, Entry)> {
        let mut held = Vec::new();
        for (f, prev, on_disk) in self.checks {
            let (current, unchanged) = current_object(&f, &prev, s3).await;
            if on_disk && unchanged {
                held.push((current, prev));
            } else {
                split.todo.push(current);
            }
        }
        let proofs: Vec<_> = futures::stream::iter(&self.foreign)
            .map(|(f, local)| adopt::prove(dir, local, f, s3))
            .buffered(ADOPT_PROOFS_IN_FLIGHT)
            .collect()
            .await;
        for ((f, _), proof) in self.foreign.into_iter().zip(proofs) {
            match proof.record {
                Some(record) => split.adopted.push((f, record)),
                // Not the archive's bytes: fetched again, and only verified bytes replace them.
                None => split.todo.push(f),
            }
        }
        held
    }
}

/// Split a held plan into what to fetch and what is already complete (same size and ETag as
/// a manifest recorded, file present with that size) or adoptable. The record may come from
/// another manifest of DIR (another shard, another shard count, an unsharded run): a
/// re-planned plan moves files between shards, and the new shard takes them over without a
/// download.
pub(crate) async fn split(known: &Known, plan: &Plan, s3: &S3) -> Split {
    let mut pending = Pending::default();
    let mut split = Split {
        todo: Vec::new(),
        skipped: Skipped::Held(Vec::new()),
        adopted: Vec::new(),
    };
    let mut skipped = Vec::new();
    for f in &plan.files {
        if let Some(prev) = pending.take(known, f.clone(), &mut split.todo) {
            skipped.push((f.clone(), prev));
        }
    }
    skipped.extend(pending.settle(&known.dir, s3, &mut split).await);
    split.skipped = Skipped::Held(skipped);
    split
}

/// The planned file as the archive holds it now, as far as this run can tell, and whether
/// that is what an earlier run completed (`prev`), for a plan row without an ETag: one HEAD.
/// Then a stale size in the plan neither hides a replaced object nor re-fetches one already
/// replaced.
async fn current_object(f: &PlanEntry, prev: &Entry, s3: &S3) -> (PlanEntry, bool) {
    let mut current = f.clone();
    let (Some(b), Some(k)) = (&f.bucket, &f.key) else {
        return (current, false);
    };
    match s3.head(b, k).await {
        Ok(Some(info)) => {
            // Fetch what the archive holds, not the planned size (which would fail on the
            // first answer and cost a second GET).
            current.size = Some(info.size);
            current.etag = info.etag;
            let same = current.etag.is_some() && current.etag == prev.etag;
            let unchanged = same && current.size == prev.size;
            (current, unchanged)
        }
        _ => (current, false),
    }
}

/// A shard (or all) of a plan file, streamed: each row checked as `plan` would (duplicates,
/// clashes, unsafe destinations) and decided on at once, so only the files to fetch are
/// held. Rows that are not plan rows (a hand-edited file) are resolved afterwards like any
/// selection. `force`: fetch everything (nothing is skipped or adopted).
pub(crate) async fn stream_plan(
    path: &Path,
    name: &str,
    (index, shards): (u32, u32),
    known: &Known,
    resolver: &Resolver<'_>,
    force: bool,
) -> Result<(Plan, Split)> {
    let mut split = Split {
        todo: Vec::new(),
        skipped: Skipped::Held(Vec::new()),
        adopted: Vec::new(),
    };
    let mut pending = Pending::default();
    let mut skipped = Vec::new();
    let mut admitted = shard::admit_rows(path, name, (index, shards), |offset, f| {
        if force {
            split.todo.push(f);
        } else if pending.take(known, f, &mut split.todo).is_some() {
            skipped.push(offset);
        }
    })?;
    let mut held = Vec::new();
    let others = std::mem::take(&mut admitted.others);
    if !others.items.is_empty() || !others.problems.is_empty() {
        let more = resolver.resolve(others).await?;
        admitted.plan.problems.extend(more.problems);
        admitted.plan.notes.extend(more.notes);
        for f in more.files {
            let Some(f) = admitted.admit(f) else { continue };
            if force {
                split.todo.push(f);
            } else if let Some(prev) = pending.take(known, f.clone(), &mut split.todo) {
                held.push((f, prev));
            }
        }
    }
    held.extend(pending.settle(&known.dir, resolver.s3, &mut split).await);
    split.skipped = skipped_rows(path, skipped, held, known)?;
    let mut plan = admitted.plan;
    shard_notes(&mut plan, name, admitted.total, (index, shards));
    Ok((plan, split))
}

/// The skipped files of a streamed plan: row offsets, unless some had to be held (rows without
/// an ETag, rows that were not plan rows; rare), and then all held so they are recorded alike.
fn skipped_rows(
    plan: &Path,
    offsets: Vec<u64>,
    held: Vec<(PlanEntry, Entry)>,
    known: &Known,
) -> Result<Skipped> {
    let rows = Skipped::Rows {
        plan: plan.to_path_buf(),
        offsets,
    };
    if held.is_empty() {
        return Ok(rows);
    }
    let mut all = Vec::new();
    rows.for_each(known, |f, prev| {
        all.push((f, prev));
        Ok(())
    })?;
    all.extend(held);
    Ok(Skipped::Held(all))
}

/// What a streamed plan says when the file or this shard of it holds nothing.
pub(crate) fn shard_notes(plan: &mut Plan, name: &str, total: usize, (index, shards): (u32, u32)) {
    if total == 0 {
        plan.problems.push(Problem {
            item: name.to_string(),
            message: "the selection matched nothing".into(),
            entry: None,
        });
    } else if plan.tally().files == 0 && plan.duplicates.is_empty() && shards > 1 {
        plan.notes.push(format!(
            "shard {index} of {shards} received none of the plan's {total} files; nothing to do here"
        ));
    }
}
