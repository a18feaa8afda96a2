//! A run into the user's bucket (`get --dest s3://BUCKET/PREFIX/`) and `verify` of such a
//! mirror, around the copy engine.
//!
//! Owns the order of a bucket run after planning: read the manifests kept under PREFIX, one
//! listing per destination folder, skip what an earlier run copied (same size, and the same
//! copy ETag where the listing states one, of a source that has not changed), adopt what is
//! there without a record once proven (one HEAD each side), abort the
//! multipart uploads an interrupted run left on the keys this run writes, copy the rest
//! (`copy`), and write this run's manifest (one per shard, named as in a folder) into the
//! bucket. And `verify s3://...`: one HEAD per recorded copy (size and CRC-64/NVME as S3
//! states them; nothing downloaded), `--remote` as for folders.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use anyhow::{Context, Result};
use futures::{stream, StreamExt};

use crate::bucket::{Bucket, Listed};
use crate::copy::Copier;
use crate::manifest::{self, Entry, Status};
use crate::outcome::Summary;
use crate::plan::{Plan, PlanEntry, Source};
use crate::progress::{FileEvent, Progress};
use crate::s3::S3;
use crate::verify::{Finding, Verdict};

/// How a bucket run is set up (from the validated flags).
pub(crate) struct Settings {
    /// Copies in flight (a server-side copy is a bulk request).
    pub requests: usize,
    pub listings: usize,
    pub retry: crate::retry::RetryPolicy,
    pub verify: bool,
    /// Copy every planned file again (`get --force`).
    pub force: bool,
    pub shard: Option<(u32, u32)>,
    pub threshold: u64,
    pub part_size: u64,
    pub progress: crate::note::Options,
}

/// Copy `plan` into `dest`; what this run settled (its exit code is the caller's to derive,
/// as for a folder).
pub(crate) async fn get(
    plan: &Plan,
    src: &S3,
    dest: Bucket,
    mast: Option<Arc<crate::https::MastHttps>>,
    set: &Settings,
) -> Result<Summary> {
    let own = manifest::manifest_name(set.shard);
    let (mut records, todo, known) = take_stock(plan, src, &dest, &own, set).await?;
    let has_token = mast.as_ref().is_some_and(|m| m.has_token());
    let progress = Progress::start(
        set.progress,
        plan.files.len() as u64 + plan.duplicates.len() as u64,
        plan.tally().bytes,
    );
    let copier = Copier::new(
        src.clone(),
        dest.clone(),
        mast,
        set.requests,
        set.retry,
        progress.clone(),
        set.verify,
        set.threshold,
        set.part_size,
    );
    let keys: HashSet<String> = todo.iter().map(|f| dest.url.key(&f.dest)).collect();
    match copier.abort_leftovers(&keys).await {
        Ok(0) => {}
        Ok(n) => progress.note(&format!(
            "aborted {n} multipart uploads an interrupted run left in {}",
            dest.url
        )),
        Err(e) => progress.error(&format!(
            "cannot clean up interrupted uploads: {}",
            crate::text::chain(&e)
        )),
    }
    let fetch = settle_uncopied(todo, known, has_token, &progress, &mut records);
    for e in copier.run(fetch).await {
        records.insert(e.path.clone(), e);
    }
    copier.abort_own().await;
    record_unfetched(plan, &progress, &mut records);
    let lines: Vec<&Entry> = records.values().collect();
    let written = dest.put_manifest(&own, &lines).await;
    progress.finish();
    summary(&dest, src, set.progress);
    written.with_context(|| format!("cannot write {}{own}", dest.url))?;
    Ok(settled(plan, &records))
}

/// Record what this run settles without a copy: exclusive-access files without a token
/// (excluded) and files already in the bucket (`known`); returns the files to copy.
fn settle_uncopied(
    todo: Vec<PlanEntry>,
    known: Vec<(PlanEntry, Entry)>,
    has_token: bool,
    progress: &Progress,
    records: &mut BTreeMap<String, Entry>,
) -> Vec<PlanEntry> {
    let mut fetch = Vec::new();
    for f in todo {
        if f.source == Source::Mast && f.is_exclusive() && !has_token {
            let msg = crate::outcome::EXCLUDED_MESSAGE.to_string();
            let e = Entry::from_plan(&f, Status::Excluded, Some(msg));
            progress.file(&event(&f, Status::Excluded, 0, e.message.as_deref()));
            records.insert(f.dest.clone(), e);
        } else {
            fetch.push(f);
        }
    }
    for (f, e) in known {
        progress.done(e.size.unwrap_or(0));
        progress.file(&event(&f, e.status, e.size.unwrap_or(0), None));
        records.insert(f.dest.clone(), e);
    }
    fetch
}

/// The outcome of each planned file (and duplicate), from the records this run leaves (the
/// manifest also keeps earlier records of files no longer planned: not counted).
fn settled(plan: &Plan, records: &BTreeMap<String, Entry>) -> Summary {
    let mut summary = Summary::default();
    let planned = plan.files.iter().map(|f| &f.dest);
    for dest in planned.chain(plan.duplicates.iter().map(|d| &d.entry.dest)) {
        if let Some(e) = records.get(dest) {
            summary.count(e.status, e.size.unwrap_or(0));
        }
    }
    summary.plan_problems = !plan.problems.is_empty() || plan.incomplete.is_some();
    summary
}

/// What the destination already holds: this run's earlier records (kept, as a folder's
/// manifest keeps them), the files to copy, and the files settled without a copy (skipped as
/// recorded, or adopted once proven).
async fn take_stock(
    plan: &Plan,
    src: &S3,
    dest: &Bucket,
    own: &str,
    set: &Settings,
) -> Result<(
    BTreeMap<String, Entry>,
    Vec<PlanEntry>,
    Vec<(PlanEntry, Entry)>,
)> {
    let (mine, others) = dest
        .read_manifests(own)
        .await
        .context("cannot read the manifests in the destination bucket")?;
    if set.force {
        return Ok((mine, plan.files.clone(), Vec::new()));
    }
    let folders: BTreeSet<String> = plan
        .files
        .iter()
        .map(|f| crate::names::folder_of(&dest.url.key(&f.dest)).to_string())
        .collect();
    let listed = dest
        .list_folders(folders, set.listings)
        .await
        .context("cannot list the destination bucket")?;
    let (mut todo, mut known, found) = split(plan, dest, &listed, &mine, &others, src).await;
    let proofs: Vec<_> = stream::iter(found)
        .map(|f| async move {
            let record = adopt(&f, dest, src).await;
            (f, record)
        })
        .buffered(set.listings)
        .collect()
        .await;
    for (f, record) in proofs {
        match record {
            Some(e) => known.push((f, e)),
            None => todo.push(f),
        }
    }
    Ok((mine, todo, known))
}

/// Duplicates, and problems that name a file, recorded as a folder's manifest records them.
fn record_unfetched(plan: &Plan, progress: &Progress, records: &mut BTreeMap<String, Entry>) {
    for d in &plan.duplicates {
        let msg = format!("same URI as {}", d.first_dest);
        progress.file(&event(&d.entry, Status::Duplicate, 0, Some(&msg)));
        let e = Entry::from_plan(&d.entry, Status::Duplicate, Some(msg));
        records.insert(d.entry.dest.clone(), e);
    }
    for p in &plan.problems {
        if let Some(entry) = &p.entry {
            let e = Entry::from_plan(entry, Status::Failed, Some(p.message.clone()));
            records.insert(entry.dest.clone(), e);
        }
    }
}

fn event<'a>(f: &'a PlanEntry, status: Status, bytes: u64, msg: Option<&'a str>) -> FileEvent<'a> {
    FileEvent {
        status,
        path: &f.dest,
        uri: &f.uri,
        source: f.source.as_str(),
        bytes,
        seconds: 0.0,
        message: msg,
        quiet: false,
    }
}

/// The requests this run sent to the destination: what a bucket run costs.
fn summary(dest: &Bucket, src: &S3, opts: crate::note::Options) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &dest.stats;
    let src_heads = src.stats.heads.load(Relaxed);
    let (copies, parts, uploads) = (
        s.copies.load(Relaxed),
        s.part_copies.load(Relaxed),
        s.uploads.load(Relaxed),
    );
    let (lists, heads, other) = (
        s.lists.load(Relaxed),
        s.heads.load(Relaxed),
        s.other.load(Relaxed),
    );
    if !opts.quiet {
        eprintln!(
            "mastfetch: requests: {copies} CopyObject, {parts} UploadPartCopy, {uploads} \
             PUT/UploadPart, {lists} list, {heads} head, {other} other to the destination; \
             {src_heads} head to the archive"
        );
    }
    if opts.json {
        crate::note::emit(&serde_json::json!({
            "event": "destination_requests",
            "copy_object": copies, "upload_part_copy": parts, "put": uploads,
            "list": lists, "head": heads, "other": other, "source_head": src_heads,
        }));
    }
}

/// What to copy; what an earlier run already copied (with the record that says so); and what
/// is there with the planned size but no record (a run killed before it wrote its manifest,
/// or a copy another tool made), to be proven before it is copied again.
type Split = (Vec<PlanEntry>, Vec<(PlanEntry, Entry)>, Vec<PlanEntry>);

async fn split(
    plan: &Plan,
    dest: &Bucket,
    listed: &HashMap<String, Listed>,
    mine: &BTreeMap<String, Entry>,
    others: &BTreeMap<String, Entry>,
    src: &S3,
) -> Split {
    let (mut todo, mut skipped, mut found) = (Vec::new(), Vec::new(), Vec::new());
    for f in &plan.files {
        let prev = mine
            .get(&f.dest)
            .or_else(|| others.get(&f.dest))
            .filter(|p| p.status.is_complete() && p.uri == f.uri);
        let there = listed.get(&dest.url.key(&f.dest));
        let copied = match (prev, there) {
            (Some(p), Some(l)) => {
                Some(l.size) == p.size
                    && (l.etag.is_none() || p.copy_etag.is_none() || l.etag == p.copy_etag)
            }
            _ => false,
        };
        match prev {
            Some(p) if copied && unchanged(f, p, src).await => {
                let mut e = p.clone();
                e.status = Status::Skipped;
                e.message = None;
                skipped.push((f.clone(), e));
            }
            None if f.source == Source::S3
                && there.is_some_and(|l| f.size.is_none_or(|s| s == l.size)) =>
            {
                found.push(f.clone())
            }
            _ => todo.push(f.clone()),
        }
    }
    (todo, skipped, found)
}

/// The record of an object found at its destination without one, when it is proven to be the
/// archive's (its CRC-64/NVME, or a plain-MD5 ETag, as S3 states them for both): one HEAD on
/// each side, instead of a copy. `None`: not proven, copied again.
async fn adopt(f: &PlanEntry, dest: &Bucket, src: &S3) -> Option<Entry> {
    let (b, k) = (f.bucket.as_ref()?, f.key.as_ref()?);
    let info = src.head(b, k).await.ok()??;
    let there = dest.head(&dest.url.key(&f.dest)).await.ok()??;
    if there.size != info.size {
        return None;
    }
    let crc = info.checksum.as_ref().filter(|c| c.alg == "crc64nvme");
    let (checksum, verified) = match (crc, &info.etag, &there.etag) {
        (Some(c), ..) if there.crc64nvme.as_ref() == Some(&c.value) => {
            (format!("crc64nvme:{}", c.value), "checksum")
        }
        (None, Some(e), Some(t)) if crate::checksum::is_md5_etag(e) && e == t => {
            (format!("etag:{e}"), "etag")
        }
        _ => return None,
    };
    let mut e = Entry::from_plan(f, Status::Adopted, None);
    e.size = Some(info.size);
    e.etag = info.etag;
    e.checksum = Some(checksum);
    e.verified = Some(verified.into());
    e.crc64nvme = there.crc64nvme;
    e.copy_etag = there.etag;
    Some(e)
}

/// Whether the archive still holds what `prev` recorded: the plan's ETag and size, or, when
/// the listing gave no ETag, one HEAD.
async fn unchanged(f: &PlanEntry, prev: &Entry, src: &S3) -> bool {
    let same_size = |s: Option<u64>| s.is_none_or(|s| Some(s) == prev.size);
    match (f.source, &f.etag, &prev.etag, &f.bucket, &f.key) {
        (Source::Mast, ..) => same_size(f.size),
        (Source::S3, Some(now), Some(then), ..) => now == then && same_size(f.size),
        (Source::S3, None, Some(then), Some(b), Some(k)) => match src.head(b, k).await {
            Ok(Some(info)) => info.etag.as_ref() == Some(then) && same_size(Some(info.size)),
            _ => false,
        },
        _ => false,
    }
}

/// `verify s3://BUCKET/PREFIX/`: each recorded copy against its record, one HEAD each.
pub(crate) async fn verify(dest: &Bucket, parallel: usize) -> Result<(Vec<Finding>, Vec<Entry>)> {
    let (_, all) = dest
        .read_manifests("")
        .await
        .context("cannot read the manifests in the bucket")?;
    if all.is_empty() {
        anyhow::bail!("{} holds no mastfetch manifest", dest.url);
    }
    let entries: Vec<Entry> = all
        .into_values()
        .filter(|e| e.status.is_complete())
        .collect();
    let findings: Vec<Finding> = stream::iter(&entries)
        .map(|e| check(dest, e))
        .buffered(parallel.max(1))
        .collect()
        .await;
    Ok((findings, entries))
}

async fn check(dest: &Bucket, e: &Entry) -> Finding {
    let finding = |status, message: Option<String>| Finding {
        path: e.path.clone(),
        status,
        message,
    };
    match dest.head(&dest.url.key(&e.path)).await {
        Err(err) => finding(Verdict::Missing, Some(crate::text::chain(&err))),
        Ok(None) => finding(Verdict::Missing, None),
        Ok(Some(s)) if Some(s.size) != e.size => finding(
            Verdict::Corrupt,
            Some(format!(
                "size {} differs from the record's {:?}",
                s.size, e.size
            )),
        ),
        Ok(Some(s)) => match (&s.crc64nvme, &e.crc64nvme) {
            (Some(now), Some(then)) if now != then => finding(
                Verdict::Corrupt,
                Some(format!(
                    "CRC-64/NVME {now} differs from the record's {then}"
                )),
            ),
            (None, Some(_)) => finding(
                Verdict::Corrupt,
                Some("the bucket states no CRC-64/NVME for the copy".into()),
            ),
            _ => finding(Verdict::Ok, None),
        },
    }
}
