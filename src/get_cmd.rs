//! The `get` command: lock, plan, skip what DIR already holds (`complete`), check the token,
//! fetch the rest (`transfer`), close the manifest.
//!
//! Owns the order of a `get` run and [`get`], its entry point for a caller with its own
//! `progress::Reporter`; every manifest line of the run goes through the engine
//! (`Engine::settle` for files settled without a transfer).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::bucket::{Bucket, DestOptions};
use crate::checksum;
use crate::cli::GetArgs;
use crate::complete::{self, Known, Skipped};
use crate::config::Config;
use crate::https::MastHttps;
use crate::manifest::{self, Entry, Status};
use crate::mirror;
use crate::note;
use crate::outcome::{Summary, EXCLUDED_MESSAGE};
use crate::plan::{self, Plan, Source};
use crate::planning::{
    make_plan, plan_code, resolver, show_plan, sources, streamable_plan, summarize, Sources,
};
use crate::progress::{Progress, Reporter};
use crate::text;
use crate::transfer::Engine;

pub(crate) async fn get_cmd(args: GetArgs) -> Result<u8> {
    let mut cfg = Config::new(&args.selection, &args.sources, &args.run)?;
    let bucket = crate::config::dest_options(&args.dest, &args.sources, &args.bucket)?;
    if bucket.is_some() && args.run.layout.is_none() {
        // A bucket of one's own mirrors the archive's keys by default, as `aws s3 sync` would.
        cfg.layout = plan::Layout::Mirror;
    }
    if args.dry_run {
        note::set_wait_notes(note::Options {
            json: false,
            ..cfg.progress
        });
        return show_plan(&cfg, args.format, Some(&args.dest)).await;
    }
    if let Some(dest) = bucket {
        note::set_wait_notes(cfg.progress);
        return get_bucket(&cfg, &args, dest).await;
    }
    Ok(get(&args, None).await?.exit_code())
}

/// `get --dest s3://BUCKET/PREFIX/`: the same plan, copied server-side into the user's bucket
/// (`mirror`), MAST-only products streamed there.
async fn get_bucket(cfg: &Config, args: &GetArgs, dest: DestOptions) -> Result<u8> {
    if args.sha256 {
        bail!(
            "--sha256 needs every byte, which a copy into a bucket never brings here; the \
             manifest records each copy's CRC-64/NVME as S3 states it"
        );
    }
    let (threshold, part_size) = crate::config::copy_sizes(args)?;
    let src = sources(cfg).await?;
    let bucket = Bucket::connect(&dest, cfg.retry).await;
    let plan = make_plan(cfg, &src).await?;
    if !cfg.progress.quiet {
        eprintln!("mastfetch: copying into {} (server-side)", dest.url);
    }
    summarize(&plan, &src, cfg.progress);
    let needs_token = plan
        .files
        .iter()
        .any(|f| f.source == Source::Mast && f.is_exclusive());
    let mast = mast_downloads(cfg, needs_token).await?;
    let settings = mirror::Settings {
        requests: cfg.budgets.bulk,
        listings: cfg.budgets.listings,
        retry: cfg.retry,
        verify: cfg.verify,
        force: args.force,
        shard: cfg.shard,
        threshold,
        part_size,
        progress: cfg.progress,
    };
    let summary = mirror::get(&plan, &src.s3, bucket, mast, &settings).await?;
    Ok(summary.exit_code())
}

/// `get` (not `--dry-run`): plan, record what is already complete, fetch the rest. `report` is
/// told what happens as it happens (`None`: the terminal, log-lines or JSON display the flags
/// ask for, with its end summary). Returns what the run settled; its
/// [`Summary::exit_code`] is the command's.
pub async fn get(args: &GetArgs, report: Option<Arc<dyn Reporter>>) -> Result<Summary> {
    anyhow::ensure!(!args.dry_run, "a dry run fetches nothing: see `plan`");
    let cfg = Config::new(&args.selection, &args.sources, &args.run)?;
    note::set_wait_notes(cfg.progress);
    let dir = args.dest.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Lock before planning: a second writer learns at once, not after a long query.
    let writer = manifest::Writer::open(&dir, cfg.shard, args.sha256)?;
    let src = sources(&cfg).await?;
    let known = Known::open(&dir, &manifest::manifest_name(cfg.shard))?;
    let (mut plan, split) = plan_and_split(&cfg, &src, &known, args.force).await?;
    plan.notes.extend(known.notes());
    summarize(&plan, &src, cfg.progress);
    let complete::Split {
        todo,
        skipped,
        adopted,
    } = split;
    let needs_token = todo
        .iter()
        .any(|f| f.source == Source::Mast && f.is_exclusive());
    let mast_https = mast_downloads(&cfg, needs_token).await?;
    let has_token = mast_https.as_ref().is_some_and(|m| m.has_token());

    let (progress, report) = match report {
        Some(report) => (None, report),
        None => {
            let tally = plan.tally();
            let files = tally.files as u64 + plan.duplicates.len() as u64;
            let p = Progress::start(cfg.progress, files, tally.bytes);
            (Some(p.clone()), p as Arc<dyn Reporter>)
        }
    };
    let engine = Engine::new(
        src.s3.clone(),
        mast_https,
        dir.clone(),
        (cfg.budgets.requests, cfg.budgets.bulk),
        cfg.budgets.hash_threads,
        cfg.part_size,
        cfg.retry,
        report.clone(),
        writer,
        cfg.verify,
        args.sha256,
    );
    record_known(&engine, &plan, &known, skipped, adopted, args.sha256)?;
    drop(known);
    let (fetch, excluded) = exclude_without_token(&engine, todo, has_token)?;
    if excluded > 0 {
        report.note(&format!(
            "{excluded} exclusive-access files excluded: no MAST token (set MAST_API_TOKEN or --token-file)"
        ));
    }
    let mut summary = engine.run(fetch).await;
    if let Some(p) = progress {
        p.finish();
    }
    say_after(&*report, &summary, excluded, &dir);
    engine.finish_manifest()?;
    summary.plan_problems = plan_code(&plan) > 0;
    Ok(summary)
}

/// What a `get` run says after its summary: why files were excluded, what a full disk stopped.
pub(crate) fn say_after(
    report: &dyn Reporter,
    summary: &Summary,
    excluded_without_token: usize,
    dir: &Path,
) {
    if summary.excluded > 0 && excluded_without_token == 0 {
        report.note(&format!(
            "{} files excluded: MAST answered 401 (exclusive access; set MAST_API_TOKEN or --token-file)",
            summary.excluded
        ));
    }
    if let Some((files, bytes)) = summary.disk_full {
        report.error(&format!(
            "no space left on the device of {}: {files} files not fetched ({} in all); make up \
             to that much room and run again (complete files stay, partial ones resume)",
            text::escape(&dir.display().to_string()),
            bytesize::ByteSize(bytes).display().iec()
        ));
    }
}

/// The plan, and what of it DIR already holds. A plan file (`@plan.jsonl`) is streamed: only
/// the files to fetch are held, so a rerun over millions of complete files stays small.
pub(crate) async fn plan_and_split(
    cfg: &Config,
    src: &Sources,
    known: &Known,
    force: bool,
) -> Result<(Plan, complete::Split)> {
    if let Some(path) = streamable_plan(cfg) {
        let shard = cfg.shard.unwrap_or((0, 1));
        let resolver = resolver(cfg, src);
        return complete::stream_plan(path, &cfg.items[0][1..], shard, known, &resolver, force)
            .await;
    }
    let plan = make_plan(cfg, src).await?;
    let split = if force {
        complete::Split {
            todo: plan.files.clone(),
            skipped: Skipped::Held(Vec::new()),
            adopted: Vec::new(),
        }
    } else {
        complete::split(known, &plan, &src.s3).await
    };
    Ok((plan, split))
}

/// The MAST download client (none with `--s3-only`), its token read and, when exclusive files
/// need it, checked once before anything is downloaded.
pub(crate) async fn mast_downloads(
    cfg: &Config,
    needs_token: bool,
) -> Result<Option<Arc<MastHttps>>> {
    if cfg.s3_only {
        return Ok(None);
    }
    let token = crate::config::load_token(cfg.token_file.as_deref(), needs_token)
        .context("cannot read the MAST token")?;
    let m = MastHttps::new(cfg.mast_url.clone(), token, cfg.retry)
        .context("cannot set up the MAST download client")?;
    if needs_token && m.has_token() {
        m.check_token()
            .await
            .context("the MAST token was checked before downloading")?;
    }
    Ok(Some(Arc::new(m)))
}

/// Record (manifest and progress) every file the run settles without a transfer: complete
/// from an earlier run, adopted from DIR, duplicates, and plan problems that name a file.
pub(crate) fn record_known(
    engine: &Engine,
    plan: &Plan,
    known: &Known,
    skipped: Skipped,
    adopted: Vec<(plan::PlanEntry, Entry)>,
    sha256: bool,
) -> Result<()> {
    let dir = engine.dir();
    skipped.for_each(known, |entry, prev| {
        let line = skipped_line(dir, &entry, &prev, sha256)?;
        engine.settle(&entry, line, Some((entry.size.unwrap_or(0), None)))?;
        Ok(())
    })?;
    for (entry, mut line) in adopted {
        if sha256 {
            let path = crate::dest::dest_path(dir, &entry.dest)?;
            let (_, sha) = checksum::digest_file(&path, true)
                .with_context(|| format!("cannot read {}", path.display()))?;
            line.sha256 = sha;
        }
        let size = line.size.unwrap_or(0);
        engine.settle(&entry, line, Some((size, None)))?;
    }
    for d in &plan.duplicates {
        let msg = format!("same URI as {}", d.first_dest);
        let line = Entry::from_plan(&d.entry, Status::Duplicate, Some(msg.clone()));
        engine.settle(&d.entry, line, Some((0, Some(&msg))))?;
    }
    // Problems count in the exit code through the plan; their lines are not shown again.
    for p in &plan.problems {
        if let Some(entry) = &p.entry {
            let line = Entry::from_plan(entry, Status::Failed, Some(p.message.clone()));
            engine.settle(entry, line, None)?;
        }
    }
    Ok(())
}

/// The manifest line of a file an earlier run completed: its earlier record, brought up to the
/// plan (size, ETag) and to today's fields.
pub(crate) fn skipped_line(
    dir: &Path,
    entry: &plan::PlanEntry,
    prev: &Entry,
    sha256: bool,
) -> Result<Entry> {
    let mut line = Entry::from_plan(entry, Status::Skipped, None);
    line.sha256 = prev.sha256.clone();
    line.size = entry.size.or(prev.size);
    line.etag = entry.etag.clone().or(prev.etag.clone());
    line.checksum = prev.checksum.clone();
    line.verified = prev.verified.clone();
    line.crc64nvme = prev.crc64nvme.clone();
    // A file recorded before a field existed (or without --sha256) gets it from disk.
    let need_sha = sha256 && line.sha256.is_none();
    if line.crc64nvme.is_none() || need_sha {
        let path = crate::dest::dest_path(dir, &entry.dest)?;
        let (crc, sha) = checksum::digest_file(&path, need_sha)
            .with_context(|| format!("cannot read {}", path.display()))?;
        line.crc64nvme = Some(crc);
        line.sha256 = line.sha256.or(sha);
    }
    Ok(line)
}

/// Exclusive-access files from MAST cannot be fetched without a token: recorded as excluded.
/// Returns the files to fetch and how many were excluded.
pub(crate) fn exclude_without_token(
    engine: &Engine,
    todo: Vec<plan::PlanEntry>,
    has_token: bool,
) -> Result<(Vec<plan::PlanEntry>, usize)> {
    let mut excluded = 0;
    let mut fetch = Vec::with_capacity(todo.len());
    for f in todo {
        if f.source == Source::Mast && f.is_exclusive() && !has_token {
            excluded += 1;
            let line = Entry::from_plan(&f, Status::Excluded, Some(EXCLUDED_MESSAGE.into()));
            engine.settle(&f, line, Some((0, None)))?;
        } else {
            fetch.push(f);
        }
    }
    Ok((fetch, excluded))
}
