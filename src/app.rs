//! The commands: `plan` and `get` here, `verify` in `verify_cmd` (whose `--repair` returns the
//! `get` this module runs), wired from the validated configuration.
//!
//! Owns the order of a run (lock, plan, shard, skip what is complete, token check, transfer,
//! manifest), the plan summary, and the exit code: 0 all done, 1 some files failed, were
//! excluded or did not verify, 2 usage or fatal errors (returned as `Err`). A `get` run's code
//! is its engine summary's (`outcome::Summary::exit_code`); [`get`] is the entry point that
//! lets a caller watch a run through its own `progress::Reporter`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use futures::StreamExt;
use serde_json::json;

use crate::adopt;
use crate::checksum;
use crate::cli::{Cli, Command, Config, GetArgs, PlanArgs, VerifyConfig};
use crate::https::MastHttps;
use crate::input;
use crate::manifest::{self, Entry, Status};
use crate::mast::Mast;
use crate::note;
use crate::outcome::Summary;
use crate::plan::{self, Format, Plan, Source};
use crate::progress::{Progress, Reporter};
use crate::resolve::Resolver;
use crate::s3::S3;
use crate::shard;
use crate::text;
use crate::transfer::Engine;
use crate::verify_cmd::{verify_cmd, Repair, Verified};

pub async fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Plan(args) => plan_cmd(args).await,
        Command::Get(args) => get_cmd(args).await,
        Command::Verify(args) => match verify_cmd(VerifyConfig::new(&args)).await? {
            Verified::Done(code) => Ok(code),
            Verified::Repair(repair) => {
                let Repair { get, plan } = *repair;
                let code = Box::pin(get_cmd(get)).await;
                let _ = std::fs::remove_file(&plan);
                code
            }
        },
    }
}

/// Everything planning needs, built once.
struct Sources {
    s3: S3,
    mast: Option<Mast>,
}

async fn sources(cfg: &Config) -> Result<Sources> {
    let retry = cfg.retry;
    let s3 = S3::connect(&cfg.s3, retry, cfg.budgets.requests).await;
    let mast = if cfg.s3_only && !cfg.query.is_query() {
        None
    } else {
        Some(
            Mast::new(cfg.mast_url.clone(), retry, cfg.budgets.catalog)
                .context("cannot set up the MAST client")?
                .with_deadline(cfg.mast_timeout),
        )
    };
    Ok(Sources { s3, mast })
}

async fn make_plan(cfg: &Config, src: &Sources) -> Result<Plan> {
    // A shard of a plan file reads only its own rows: memory for its share, not the plan's.
    let streamed = match (cfg.shard, streamable_plan(cfg)) {
        (Some((k, n)), Some(path)) => Some(shard::stream(path, &cfg.items[0][1..], n, k)?),
        _ => None,
    };
    let (parsed, streamed_total) = match streamed {
        Some(share) => (share.parsed, Some(share.total)),
        None => (input::parse_items(&cfg.items, &cfg.input_limits)?, None),
    };
    let resolver = Resolver {
        s3: &src.s3,
        mast: src.mast.as_ref(),
        mast_base: cfg.mast_url.clone(),
        layout: cfg.layout,
        s3_only: cfg.s3_only,
        mast_only: cfg.mast_only,
        query: cfg.query.clone(),
        catalog: cfg.catalog,
        parallel: cfg.budgets.listings,
    };
    let mut plan = resolver.resolve(parsed).await?;
    if let Some(total) = streamed_total {
        let (k, n) = cfg.shard.expect("streamed only when sharded");
        if total == 0 {
            plan.problems.push(plan::Problem {
                item: selection_name(cfg),
                message: "the selection matched nothing".into(),
                entry: None,
            });
        } else if plan.files.is_empty() {
            plan.notes.push(format!(
                "shard {k} of {n} received none of the plan's {total} files; nothing to do here"
            ));
        }
        return Ok(plan);
    }
    if plan.files.is_empty() && plan.duplicates.is_empty() && plan.problems.is_empty() {
        // Every item was read, yet none named a file (an empty list, a plan with no rows):
        // a batch job must not report success for an empty mirror.
        plan.problems.push(plan::Problem {
            item: selection_name(cfg),
            message: "the selection matched nothing".into(),
            entry: None,
        });
    }
    if let Some((k, n)) = cfg.shard {
        let total = plan.files.len();
        plan.shard(n, k);
        if plan.files.is_empty() && total > 0 {
            plan.notes.push(format!(
                "shard {k} of {n} received none of the plan's {total} files; nothing to do here"
            ));
        }
    }
    Ok(plan)
}

/// The plan file of `SELECTION = @plan.jsonl` alone (no query), which shards read as a stream.
fn streamable_plan(cfg: &Config) -> Option<&Path> {
    let [item] = cfg.items.as_slice() else {
        return None;
    };
    let path = Path::new(item.strip_prefix('@')?);
    (path != Path::new("-") && !cfg.query.is_query() && shard::is_plan_file(path)).then_some(path)
}

/// The selection as the user gave it, for a message about all of it.
fn selection_name(cfg: &Config) -> String {
    let mut parts: Vec<String> = cfg.items.clone();
    if cfg.query.is_query() {
        parts.push(cfg.query.describe());
    }
    parts.join(" ")
}

/// The human summary of a plan (stderr) and its `--json` event.
fn summarize(plan: &Plan, src: &Sources, opts: note::Options) {
    let from_s3 = plan.files.iter().filter(|f| f.source == Source::S3).count();
    let from_mast = plan.files.len() - from_s3;
    let exclusive = plan.files.iter().filter(|f| f.is_exclusive()).count();
    let stats = &src.s3.stats;
    let lists = stats.lists.load(std::sync::atomic::Ordering::Relaxed);
    let heads = stats.heads.load(std::sync::atomic::Ordering::Relaxed);
    let mast = src.mast.as_ref().map(Mast::stats).unwrap_or_default();
    for p in &plan.problems {
        eprintln!(
            "mastfetch: error: {}: {}",
            text::escape(&p.item),
            text::escape(&p.message)
        );
    }
    // Said even with --quiet: a plan that may be short is what a batch job must not miss.
    if let Some(why) = &plan.incomplete {
        eprintln!("mastfetch: warning: {why}");
    }
    if !opts.quiet {
        for n in &plan.notes {
            eprintln!("mastfetch: note: {}", text::escape(n));
        }
    }
    if !opts.quiet {
        let mut line = format!(
            "plan: {} files, {}: {from_s3} from S3, {from_mast} from MAST",
            plan.files.len(),
            bytesize::ByteSize(plan.total_bytes()).display().iec()
        );
        if exclusive > 0 {
            line.push_str(&format!(" ({exclusive} exclusive access)"));
        }
        if !plan.duplicates.is_empty() {
            line.push_str(&format!(", {} duplicates", plan.duplicates.len()));
        }
        if !plan.problems.is_empty() {
            line.push_str(&format!(", {} not planned", plan.problems.len()));
        }
        if let Some(c) = &plan.catalog {
            line.push_str(&format!("; query answered by {c}"));
            if plan.incomplete.is_some() {
                line.push_str(" (MAST unreachable: may be incomplete)");
            }
        }
        line.push_str(&format!(
            "; requests: {lists} S3 list, {heads} S3 head, {} MAST observation, {} MAST product, {} MAST path lookup",
            mast.observation_requests, mast.product_requests, mast.path_lookups
        ));
        eprintln!("mastfetch: {line}");
    }
    if opts.json {
        note::emit(&json!({
            "event": "plan",
            "files": plan.files.len(),
            "bytes": plan.total_bytes(),
            "from_s3": from_s3,
            "from_mast": from_mast,
            "exclusive_access": exclusive,
            "duplicates": plan.duplicates.len(),
            "problems": plan.problems.len(),
            "catalog": plan.catalog,
            "incomplete": plan.incomplete.is_some(),
            "warning": plan.incomplete,
            "requests": {"s3_list": lists, "s3_head": heads,
                         "mast_observations": mast.observation_requests,
                         "mast_products": mast.product_requests,
                         "mast_path_lookups": mast.path_lookups},
        }));
    }
}

/// Print the plan; `Ok(false)` when the reader closed stdout early (`plan | head`), which is
/// not an error.
fn print_plan(plan: &Plan, format: Option<Format>) -> Result<bool> {
    let format = format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Jsonl
    });
    let mut out = std::io::stdout().lock();
    let res = plan::write_plan(&mut out, plan, format).and_then(|()| out.flush());
    match res {
        Err(e) if note::is_broken_pipe(&e) => Ok(false),
        res => res.map(|()| true).context("cannot write the plan"),
    }
}

/// 1 when the plan leaves something out: problems, or a catalog that may have missed products.
fn plan_code(plan: &Plan) -> u8 {
    u8::from(!plan.problems.is_empty() || plan.incomplete.is_some())
}

async fn plan_cmd(args: PlanArgs) -> Result<u8> {
    let cfg = Config::new(&args.selection, &args.sources, &args.run)?;
    // stdout holds the plan: notes go to stderr only.
    note::set_wait_notes(note::Options {
        json: false,
        ..cfg.progress
    });
    show_plan(&cfg, args.format, args.dest.as_deref()).await
}

/// `plan`, and `get --dry-run`: print the plan, its summary to stderr, exit 1 on problems.
async fn show_plan(cfg: &Config, format: Option<Format>, dir: Option<&Path>) -> Result<u8> {
    let src = sources(cfg).await?;
    let mut plan = make_plan(cfg, &src).await?;
    plan.dir = dir.map(|d| d.to_string_lossy().into_owned());
    if !print_plan(&plan, format)? {
        return Ok(0);
    }
    let mut quiet = cfg.progress;
    quiet.json = false; // stdout holds the plan itself
    summarize(&plan, &src, quiet);
    Ok(plan_code(&plan))
}

async fn get_cmd(args: GetArgs) -> Result<u8> {
    if args.dry_run {
        let cfg = Config::new(&args.selection, &args.sources, &args.run)?;
        note::set_wait_notes(note::Options {
            json: false,
            ..cfg.progress
        });
        return show_plan(&cfg, args.format, Some(&args.dest)).await;
    }
    Ok(get(&args, None).await?.exit_code())
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
    let plan = make_plan(&cfg, &src).await?;
    summarize(&plan, &src, cfg.progress);

    let own_manifest = manifest::manifest_name(cfg.shard);
    let (todo, skipped, adopted) = if args.force {
        (plan.files.clone(), Vec::new(), Vec::new())
    } else {
        split_complete(&dir, &plan, &writer, &own_manifest, &src.s3).await
    };
    let needs_token = todo
        .iter()
        .any(|f| f.source == Source::Mast && f.is_exclusive());
    let mast_https = mast_downloads(&cfg, needs_token).await?;
    let has_token = mast_https.as_ref().is_some_and(|m| m.has_token());

    let (progress, report) = match report {
        Some(report) => (None, report),
        None => {
            let files = plan.files.len() as u64 + plan.duplicates.len() as u64;
            let p = Progress::start(cfg.progress, files, plan.total_bytes());
            (Some(p.clone()), p as Arc<dyn Reporter>)
        }
    };
    let engine = Engine::new(
        src.s3.clone(),
        mast_https,
        dir.clone(),
        cfg.budgets.requests,
        cfg.budgets.hash_threads,
        cfg.part_size,
        cfg.retry,
        report.clone(),
        writer,
        cfg.verify,
        args.sha256,
    );
    record_known(&engine, &plan, skipped, adopted, args.sha256)?;
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
fn say_after(report: &dyn Reporter, summary: &Summary, excluded_without_token: usize, dir: &Path) {
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

/// The MAST download client (none with `--s3-only`), its token read and, when exclusive files
/// need it, checked once before anything is downloaded.
async fn mast_downloads(cfg: &Config, needs_token: bool) -> Result<Option<Arc<MastHttps>>> {
    if cfg.s3_only {
        return Ok(None);
    }
    let token = crate::cli::load_token(cfg.token_file.as_deref(), needs_token)
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
fn record_known(
    engine: &Engine,
    plan: &Plan,
    skipped: Vec<(plan::PlanEntry, Entry)>,
    adopted: Vec<(plan::PlanEntry, Entry)>,
    sha256: bool,
) -> Result<()> {
    let dir = engine.dir();
    for (entry, prev) in &skipped {
        let line = skipped_line(dir, entry, prev, sha256)?;
        engine.settle(entry, line, Some((entry.size.unwrap_or(0), None)))?;
    }
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
fn skipped_line(dir: &Path, entry: &plan::PlanEntry, prev: &Entry, sha256: bool) -> Result<Entry> {
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
fn exclude_without_token(
    engine: &Engine,
    todo: Vec<plan::PlanEntry>,
    has_token: bool,
) -> Result<(Vec<plan::PlanEntry>, usize)> {
    let mut excluded = 0;
    let mut fetch = Vec::with_capacity(todo.len());
    for f in todo {
        if f.source == Source::Mast && f.is_exclusive() && !has_token {
            excluded += 1;
            let msg = crate::outcome::EXCLUDED_MESSAGE;
            let line = Entry::from_plan(&f, Status::Excluded, Some(msg.into()));
            engine.settle(&f, line, Some((0, None)))?;
        } else {
            fetch.push(f);
        }
    }
    Ok((fetch, excluded))
}

/// What to fetch, what an earlier run completed (with its record), and what was already in DIR
/// from elsewhere and proven (with the record that adopts it).
type Split = (
    Vec<plan::PlanEntry>,
    Vec<(plan::PlanEntry, Entry)>,
    Vec<(plan::PlanEntry, Entry)>,
);

/// Split the plan into what to fetch and what an earlier run already completed: same size and
/// ETag as the manifest recorded, file present with that size. Without a listing ETag, one HEAD
/// for such a candidate tells whether the archive still holds the same object.
///
/// The record may come from another manifest of DIR (another shard, another shard count, an
/// unsharded run): a re-planned plan moves files between shards, and the new shard takes them
/// over without a download.
async fn split_complete(
    dir: &Path,
    plan: &Plan,
    writer: &manifest::Writer,
    own_manifest: &str,
    s3: &S3,
) -> Split {
    let mut todo = Vec::new();
    let mut skipped = Vec::new();
    let mut foreign = Vec::new();
    let complete = |p: &&Entry, f: &plan::PlanEntry| p.status.is_complete() && p.uri == f.uri;
    let mut elsewhere: Option<BTreeMap<String, Entry>> = None;
    for f in &plan.files {
        let own = writer.previous(&f.dest).filter(|p| complete(p, f));
        let prev = match own {
            Some(p) => Some(p),
            None => elsewhere
                .get_or_insert_with(|| recorded_elsewhere(dir, own_manifest))
                .get(&f.dest)
                .filter(|p| complete(p, f)),
        };
        let Some(prev) = prev else {
            // A file at the destination that no manifest records came from elsewhere (another
            // tool's mirror): proven against the archive below instead of downloaded again.
            match crate::dest::dest_path(dir, &f.dest)
                .ok()
                .map(std::fs::metadata)
            {
                Some(Ok(m)) if m.is_file() && f.source == Source::S3 => foreign.push((
                    f.clone(),
                    adopt::LocalFile {
                        rel: f.dest.clone(),
                        size: m.len(),
                        modified: m.modified().ok(),
                    },
                )),
                _ => todo.push(f.clone()),
            }
            continue;
        };
        let on_disk = crate::dest::dest_path(dir, &f.dest)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len());
        let on_disk_ok = on_disk.is_some() && on_disk == prev.size;
        let (current, unchanged) = current_object(f, prev, s3).await;
        if on_disk_ok && unchanged {
            skipped.push((current, prev.clone()));
        } else {
            todo.push(current);
        }
    }
    let proofs: Vec<_> = futures::stream::iter(&foreign)
        .map(|(f, local)| adopt::prove(dir, local, f, s3))
        .buffered(ADOPT_PROOFS_IN_FLIGHT)
        .collect()
        .await;
    let mut adopted = Vec::new();
    for ((f, _), proof) in foreign.into_iter().zip(proofs) {
        match proof.record {
            Some(record) => adopted.push((f, record)),
            // Not the archive's bytes: fetched again, and only verified bytes replace them.
            None => todo.push(f),
        }
    }
    (todo, skipped, adopted)
}

/// The planned file as the archive holds it now, as far as this run can tell, and whether
/// that is what an earlier run completed (`prev`): the plan's size and ETag, or, for a plan
/// without an ETag (a listing that gave none), one HEAD. Then a stale size in the plan neither
/// hides a replaced object nor re-fetches one already replaced.
async fn current_object(f: &plan::PlanEntry, prev: &Entry, s3: &S3) -> (plan::PlanEntry, bool) {
    let same_size = |size: Option<u64>| size.is_none_or(|s| Some(s) == prev.size);
    let mut current = f.clone();
    let unchanged = match (f.source, &f.etag, &prev.etag) {
        (Source::Mast, _, _) => same_size(f.size),
        (Source::S3, Some(now), Some(then)) => now == then && same_size(f.size),
        (Source::S3, None, Some(then)) => {
            let (Some(b), Some(k)) = (&f.bucket, &f.key) else {
                return (current, false);
            };
            match s3.head(b, k).await {
                Ok(Some(info)) => {
                    // Fetch what the archive holds, not the planned size (which would fail on
                    // the first answer and cost a second GET).
                    current.size = Some(info.size);
                    current.etag = info.etag;
                    current.etag.as_deref() == Some(then) && same_size(current.size)
                }
                _ => false,
            }
        }
        // An empty object has no bytes to differ in (and no GET ever told its ETag).
        (Source::S3, _, None) => f.size == Some(0) && prev.size == Some(0),
    };
    (current, unchanged)
}

/// Files of a foreign mirror proven at once by `get`: each is a HEAD at most and one read.
const ADOPT_PROOFS_IN_FLIGHT: usize = 8;

/// The complete files recorded by the other manifests of DIR. Another shard may be writing one
/// right now: its unfinished last line is ignored, and a manifest that cannot be read is passed
/// over (its files are then fetched again, never skipped unchecked).
fn recorded_elsewhere(dir: &Path, own_manifest: &str) -> BTreeMap<String, Entry> {
    let mut found = BTreeMap::new();
    for path in manifest::manifests_in(dir).unwrap_or_default() {
        if path.file_name().is_some_and(|n| n == own_manifest) {
            continue;
        }
        for e in manifest::read(&path).unwrap_or_default() {
            if e.status.is_complete() {
                found.insert(e.path.clone(), e);
            }
        }
    }
    found
}
