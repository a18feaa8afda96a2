//! The commands: `plan`, `get` and `verify`, wired from the validated configuration.
//!
//! Owns the order of a run (lock, plan, shard, skip what is complete, token check, transfer,
//! manifest), the plan summary, and the exit code: 0 all done, 1 some files failed, were
//! excluded or did not verify, 2 usage or fatal errors (returned as `Err`).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::adopt;
use crate::bucket::{Bucket, DestOptions};
use crate::checksum;
use crate::cli::{Cli, Command, Config, GetArgs, PlanArgs, VerifyConfig, VerifyFormat};
use crate::complete::{self, Known, Skipped};
use crate::https::{self, MastHttps};
use crate::input;
use crate::manifest::{self, Entry, Status};
use crate::mast::Mast;
use crate::mirror;
use crate::note;
use crate::plan::{self, Format, Plan, Source};
use crate::progress::{FileEvent, Progress};
use crate::resolve::Resolver;
use crate::s3::S3;
use crate::shard;
use crate::text;
use crate::transfer::{self, Engine};
use crate::verify::{self, Verdict};

pub async fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Plan(args) => plan_cmd(args).await,
        Command::Get(args) => get_cmd(args).await,
        Command::Verify(args) => verify_cmd(VerifyConfig::new(&args)).await,
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
    let mut plan = resolver(cfg, src).resolve(parsed).await?;
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

fn resolver<'a>(cfg: &Config, src: &'a Sources) -> Resolver<'a> {
    Resolver {
        s3: &src.s3,
        mast: src.mast.as_ref(),
        mast_base: cfg.mast_url.clone(),
        layout: cfg.layout,
        s3_only: cfg.s3_only,
        mast_only: cfg.mast_only,
        query: cfg.query.clone(),
        catalog: cfg.catalog,
        parallel: cfg.budgets.listings,
    }
}

/// The prefixes of a selection made of S3 prefixes only (no query, no shards), printed in a
/// format written row by row: such a plan is written as the listing pages arrive, holding
/// hashes of what it has written (for duplicates and clashes), not the entries.
fn streamable_prefixes(cfg: &Config, format: Format) -> Result<Option<Vec<input::Item>>> {
    let simple = cfg.shard.is_none() && !cfg.query.is_query() && plan::Rows::streams(format);
    if !simple || !cfg.items.iter().all(|i| i.starts_with("s3://")) {
        return Ok(None);
    }
    let parsed = input::parse_items(&cfg.items, &cfg.input_limits)?;
    let prefixes = parsed.problems.is_empty()
        && parsed
            .items
            .iter()
            .all(|i| matches!(i, input::Item::Prefix { .. }));
    Ok(prefixes.then_some(parsed.items))
}

/// `plan` of S3 prefixes, written as listed.
async fn stream_prefixes(
    cfg: &Config,
    src: &Sources,
    prefixes: &[input::Item],
    format: Format,
) -> Result<u8> {
    let resolver = resolver(cfg, src);
    let mut plan = Plan::default();
    let mut index = plan::PlanIndex::default();
    let mut tally = plan::Tally::default();
    let mut stdout = std::io::stdout().lock();
    let mut rows = plan::Rows::new(&mut stdout, format).context("cannot write the plan")?;
    let mut written: std::io::Result<()> = Ok(());
    for item in prefixes {
        let input::Item::Prefix {
            bucket,
            prefix,
            origin,
        } = item
        else {
            continue;
        };
        let problem = resolver
            .list_prefix_each(bucket, prefix, origin, false, |e| {
                if let Some(e) = plan.admit(e, &mut index, |_| None) {
                    tally.add(&e);
                    if written.is_ok() {
                        written = rows.row(&e);
                    }
                }
            })
            .await?;
        plan.problems.extend(problem);
        if written.is_err() {
            break;
        }
    }
    let written = written.and_then(|()| rows.finish());
    match written {
        Err(e) if note::is_broken_pipe(&e) => return Ok(0),
        res => res.context("cannot write the plan")?,
    }
    plan.streamed = Some(tally);
    if tally.files == 0 && plan.duplicates.is_empty() && plan.problems.is_empty() {
        plan.problems.push(plan::Problem {
            item: selection_name(cfg),
            message: "the selection matched nothing".into(),
            entry: None,
        });
    }
    let mut quiet = cfg.progress;
    quiet.json = false; // stdout holds the plan itself
    summarize(&plan, src, quiet);
    Ok(plan_code(&plan))
}

/// `plan @plan.jsonl` (a shard of it, or all), written row by row as the file is read.
async fn stream_plan_file(cfg: &Config, src: &Sources, path: &Path, format: Format) -> Result<u8> {
    let name = &cfg.items[0][1..];
    let shard = cfg.shard.unwrap_or((0, 1));
    let mut stdout = std::io::stdout().lock();
    let mut rows = plan::Rows::new(&mut stdout, format).context("cannot write the plan")?;
    let mut written: std::io::Result<()> = Ok(());
    let mut admitted = shard::admit_rows(path, name, shard, |_, f| {
        if written.is_ok() {
            written = rows.row(&f);
        }
    })?;
    let others = std::mem::take(&mut admitted.others);
    if !others.items.is_empty() || !others.problems.is_empty() {
        let more = resolver(cfg, src).resolve(others).await?;
        admitted.plan.problems.extend(more.problems);
        admitted.plan.notes.extend(more.notes);
        for f in more.files {
            if let (Some(f), true) = (admitted.admit(f), written.is_ok()) {
                written = rows.row(&f);
            }
        }
    }
    match written.and_then(|()| rows.finish()) {
        Err(e) if note::is_broken_pipe(&e) => return Ok(0),
        res => res.context("cannot write the plan")?,
    }
    let mut plan = admitted.plan;
    complete::shard_notes(&mut plan, name, admitted.total, shard);
    let mut quiet = cfg.progress;
    quiet.json = false; // stdout holds the plan itself
    summarize(&plan, src, quiet);
    Ok(plan_code(&plan))
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
    let tally = plan.tally();
    let (from_s3, exclusive) = (tally.from_s3, tally.exclusive);
    let from_mast = tally.files - from_s3;
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
            tally.files,
            bytesize::ByteSize(tally.bytes).display().iec()
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
            "files": tally.files,
            "bytes": tally.bytes,
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
fn print_plan(plan: &Plan, format: Format) -> Result<bool> {
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
    let mut cfg = Config::new(&args.selection, &args.sources, &args.run)?;
    let for_bucket = args
        .dest
        .as_ref()
        .is_some_and(|d| d.to_string_lossy().starts_with("s3://"));
    if for_bucket && args.run.layout.is_none() {
        // The plan `get --dest s3://...` would make: the archive's keys.
        cfg.layout = plan::Layout::Mirror;
    }
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
    let format = format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Jsonl
    });
    if let Some(prefixes) = streamable_prefixes(cfg, format)? {
        return stream_prefixes(cfg, &src, &prefixes, format).await;
    }
    if let (Some(path), true) = (streamable_plan(cfg), plan::Rows::streams(format)) {
        return stream_plan_file(cfg, &src, path, format).await;
    }
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
    let mut cfg = Config::new(&args.selection, &args.sources, &args.run)?;
    let bucket = crate::cli::dest_options(&args.dest, &args.sources, &args.bucket)?;
    if bucket.is_some() && args.run.layout.is_none() {
        // A bucket of one's own mirrors the archive's keys by default, as `aws s3 sync` would.
        cfg.layout = plan::Layout::Mirror;
    }
    note::set_wait_notes(note::Options {
        json: cfg.progress.json && !args.dry_run,
        ..cfg.progress
    });
    if args.dry_run {
        return show_plan(&cfg, args.format, Some(&args.dest)).await;
    }
    if let Some(dest) = bucket {
        return get_bucket(&cfg, &args, dest).await;
    }
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

    let tally = plan.tally();
    let progress = Progress::start(
        cfg.progress,
        tally.files as u64 + plan.duplicates.len() as u64,
        tally.bytes,
    );
    let engine = Engine::new(
        src.s3.clone(),
        mast_https,
        dir.clone(),
        cfg.budgets.requests,
        cfg.budgets.hash_threads,
        cfg.part_size,
        cfg.retry,
        progress.clone(),
        writer,
        cfg.verify,
        args.sha256,
    );
    record_known(
        &engine,
        &progress,
        &plan,
        &known,
        skipped,
        adopted,
        args.sha256,
    )?;
    drop(known);
    let (fetch, excluded) = exclude_without_token(&engine, &progress, todo, has_token)?;
    if excluded > 0 {
        progress.note(&format!(
            "{excluded} exclusive-access files excluded: no MAST token (set MAST_API_TOKEN or --token-file)"
        ));
    }
    engine.run(fetch).await;
    let counts = progress.finish();
    if counts.excluded > 0 && excluded == 0 {
        progress.note(&format!(
            "{} files excluded: MAST answered 401 (exclusive access; set MAST_API_TOKEN or --token-file)",
            counts.excluded
        ));
    }
    if let Some((files, bytes)) = engine.disk_full() {
        progress.error(&format!(
            "no space left on the device of {}: {files} files not fetched ({} in all); make up \
             to that much room and run again (complete files stay, partial ones resume)",
            text::escape(&dir.display().to_string()),
            bytesize::ByteSize(bytes).display().iec()
        ));
    }
    engine.manifest.lock().unwrap().finish()?;
    let bad = counts.failed > 0 || counts.excluded > 0 || plan_code(&plan) > 0;
    Ok(u8::from(bad))
}

/// The plan, and what of it DIR already holds. A plan file (`@plan.jsonl`) is streamed: only
/// the files to fetch are held, so a rerun over millions of complete files stays small.
async fn plan_and_split(
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

/// `get --dest s3://BUCKET/PREFIX/`: the same plan, copied server-side into the user's bucket
/// (`mirror`), MAST-only products streamed there.
async fn get_bucket(cfg: &Config, args: &GetArgs, dest: DestOptions) -> Result<u8> {
    if args.sha256 {
        bail!(
            "--sha256 needs every byte, which a copy into a bucket never brings here; the \
             manifest records each copy's CRC-64/NVME as S3 states it"
        );
    }
    let (threshold, part_size) = crate::cli::copy_sizes(args)?;
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
        requests: cfg.budgets.requests,
        listings: cfg.budgets.listings,
        retry: cfg.retry,
        verify: cfg.verify,
        force: args.force,
        shard: cfg.shard,
        threshold,
        part_size,
        progress: cfg.progress,
    };
    let bad = mirror::get(&plan, &src.s3, bucket, mast, &settings).await?;
    Ok(u8::from(bad || plan_code(&plan) > 0))
}

/// `verify s3://BUCKET/PREFIX/`: each recorded copy as the bucket states it (one HEAD each),
/// and with `--remote` against the archive.
async fn verify_bucket(cfg: &VerifyConfig, dest: DestOptions) -> Result<u8> {
    if cfg.repair || cfg.write_manifest {
        bail!(
            "--repair and --write-manifest are for folders; for a bucket, `get --dest {}` \
             copies again what is missing or altered",
            dest.url
        );
    }
    let bucket = Bucket::connect(&dest, cfg.retry).await;
    let (mut findings, entries) = mirror::verify(&bucket, cfg.budgets.requests).await?;
    if cfg.remote {
        let s3 = S3::connect(&cfg.s3()?, cfg.retry, cfg.budgets.requests).await;
        let stale = verify::verify_remote(&s3, &entries)
            .await
            .context("checking the archive failed")?;
        for s in stale {
            if let Some(f) = findings.iter_mut().find(|f| f.path == s.path) {
                if f.status == Verdict::Ok {
                    *f = s;
                }
            }
        }
    }
    findings.sort_by(|a, b| a.path.cmp(&b.path));
    report_findings(&findings, cfg.format, cfg.quiet)
}

fn event<'a>(
    e: &'a plan::PlanEntry,
    status: Status,
    bytes: u64,
    message: Option<&'a str>,
) -> FileEvent<'a> {
    FileEvent {
        status,
        path: &e.dest,
        uri: &e.uri,
        source: e.source.as_str(),
        bytes,
        seconds: 0.0,
        message,
        quiet: false,
    }
}

/// The MAST download client (none with `--s3-only`), its token read and, when exclusive files
/// need it, checked once before anything is downloaded.
async fn mast_downloads(cfg: &Config, needs_token: bool) -> Result<Option<Arc<MastHttps>>> {
    if cfg.s3_only {
        return Ok(None);
    }
    let token = https::load_token(cfg.token_file.as_deref(), needs_token)
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
    progress: &Progress,
    plan: &Plan,
    known: &Known,
    skipped: Skipped,
    adopted: Vec<(plan::PlanEntry, Entry)>,
    sha256: bool,
) -> Result<()> {
    let dir = &engine.dir;
    let mut w = engine.manifest.lock().unwrap();
    skipped.for_each(known, |entry, prev| {
        w.record(skipped_line(dir, &entry, &prev, sha256)?)?;
        progress.file(&event(
            &entry,
            Status::Skipped,
            entry.size.unwrap_or(0),
            None,
        ));
        Ok(())
    })?;
    for (entry, mut line) in adopted {
        if sha256 {
            let path = plan::dest_path(dir, &entry.dest)?;
            let (_, sha) = checksum::digest_file(&path, true)
                .with_context(|| format!("cannot read {}", path.display()))?;
            line.sha256 = sha;
        }
        let size = line.size.unwrap_or(0);
        w.record(line)?;
        progress.file(&event(&entry, Status::Adopted, size, None));
    }
    for d in &plan.duplicates {
        let msg = format!("same URI as {}", d.first_dest);
        w.record(Entry::from_plan(
            &d.entry,
            Status::Duplicate,
            Some(msg.clone()),
        ))?;
        progress.file(&event(&d.entry, Status::Duplicate, 0, Some(&msg)));
    }
    for p in &plan.problems {
        if let Some(entry) = &p.entry {
            w.record(Entry::from_plan(
                entry,
                Status::Failed,
                Some(p.message.clone()),
            ))?;
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
        let path = plan::dest_path(dir, &entry.dest)?;
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
    progress: &Progress,
    todo: Vec<plan::PlanEntry>,
    has_token: bool,
) -> Result<(Vec<plan::PlanEntry>, usize)> {
    let mut excluded = 0;
    let mut fetch = Vec::with_capacity(todo.len());
    for f in todo {
        if f.source == Source::Mast && f.is_exclusive() && !has_token {
            excluded += 1;
            let msg = transfer::EXCLUDED_MESSAGE;
            engine.manifest.lock().unwrap().record(Entry::from_plan(
                &f,
                Status::Excluded,
                Some(msg.into()),
            ))?;
            progress.file(&event(&f, Status::Excluded, 0, None));
        } else {
            fetch.push(f);
        }
    }
    Ok((fetch, excluded))
}

async fn verify_cmd(cfg: VerifyConfig) -> Result<u8> {
    if let Some(dest) = crate::cli::dest_options(&cfg.dir, cfg.sources(), &cfg.bucket)? {
        return verify_bucket(&cfg, dest).await;
    }
    let dir = &cfg.dir;
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let index = manifest::Index::build(dir)?;
    // A line cut short by a crash is passed over when reading; verify must still say so.
    for (path, line) in &index.torn {
        eprintln!(
            "mastfetch: error: {}:{line}: unreadable manifest line (cut short by a crash?); \
             the file it recorded is not checked",
            text::escape(&path.display().to_string())
        );
    }
    let torn = index.torn.len();
    if index.is_empty() && torn > 0 {
        return Ok(1);
    }
    if index.is_empty() {
        return verify_foreign(&cfg).await;
    }
    if cfg.write_manifest {
        bail!(
            "--write-manifest is for a folder without a manifest; {} has one",
            dir.display()
        );
    }
    if cfg.repair && index.is_empty() {
        bail!(
            "--repair needs a mastfetch manifest; for a mirror made by another tool, `mastfetch \
             get` into {} adopts what matches and fetches the rest",
            dir.display()
        );
    }
    let dir2 = dir.clone();
    let remote = cfg.remote;
    let keep = remote || cfg.repair;
    let threads = cfg.budgets.hash_threads;
    let checked =
        tokio::task::spawn_blocking(move || verify::verify_local(&dir2, &index, threads, keep))
            .await
            .context("verify worker failed")??;
    let (mut findings, matched): (Vec<_>, Vec<_>) = checked.into_iter().unzip();
    let matched: Vec<Entry> = matched.into_iter().flatten().map(|e| *e).collect();
    if remote {
        let s3 = S3::connect(&cfg.s3()?, cfg.retry, cfg.budgets.requests).await;
        // Each file is compared with the archive through the record that matches it on disk.
        let stale = verify::verify_remote(&s3, &matched)
            .await
            .context("checking the archive failed")?;
        // Findings are sorted by path: find each by binary search, not a scan per file.
        for s in stale {
            if let Ok(i) = findings.binary_search_by(|f| f.path.as_str().cmp(&s.path)) {
                if findings[i].status == Verdict::Ok {
                    findings[i] = s;
                }
            }
        }
    }
    let code = report_findings(&findings, cfg.format, cfg.quiet)?;
    if cfg.repair {
        return repair(&cfg, &findings, &matched).await;
    }
    Ok(code.max(u8::from(torn > 0)))
}

/// `verify --repair`: the records of the damaged files become a plan, fetched again with
/// `get --force` into DIR (verified like any download; a file's old bytes are replaced only by
/// proven new ones).
async fn repair(cfg: &VerifyConfig, findings: &[verify::Finding], records: &[Entry]) -> Result<u8> {
    let damaged: std::collections::BTreeSet<&str> = findings
        .iter()
        .filter(|f| {
            matches!(
                f.status,
                Verdict::Corrupt | Verdict::Missing | Verdict::Stale
            )
        })
        .map(|f| f.path.as_str())
        .collect();
    if damaged.is_empty() {
        return Ok(0);
    }
    let dir = cfg.dir.clone();
    let plan_path = crate::dest::private_dir(&dir).join("repair-plan.jsonl");
    std::fs::create_dir_all(crate::dest::private_dir(&dir))
        .with_context(|| format!("cannot create {}", crate::dest::private_dir(&dir).display()))?;
    let mut text = String::new();
    for r in records.iter().filter(|r| damaged.contains(r.path.as_str())) {
        let entry = plan::PlanEntry {
            uri: r.uri.clone(),
            filename: r.path.rsplit('/').next().unwrap_or(&r.path).to_string(),
            source: r.source,
            bucket: r.bucket.clone(),
            key: r.key.clone(),
            url: r.url.clone(),
            // What the archive holds now is asked again: a stale record's size and ETag would
            // only fail the new download.
            size: None,
            etag: None,
            access: r.access.clone(),
            dest: r.path.clone(),
        };
        text.push_str(&serde_json::to_string(&entry).context("plan line")?);
        text.push('\n');
    }
    std::fs::write(&plan_path, text)
        .with_context(|| format!("cannot write {}", plan_path.display()))?;
    if !cfg.quiet {
        eprintln!(
            "mastfetch: verify --repair: fetching {} files again into {}",
            damaged.len(),
            dir.display()
        );
    }
    let at = format!("@{}", plan_path.display());
    let dest = dir.display().to_string();
    let mut get = match <Cli as clap::Parser>::try_parse_from([
        "mastfetch",
        "get",
        &at,
        "--dest",
        &dest,
        "--force",
    ])
    .context("repair plan")?
    .command
    {
        Command::Get(g) => g,
        _ => unreachable!("parsed as get"),
    };
    get.sources = cfg.sources().clone();
    get.run.quiet = cfg.quiet;
    let code = Box::pin(get_cmd(get)).await;
    let _ = std::fs::remove_file(&plan_path);
    code
}

/// `verify` of a folder mastfetch did not write: every file recognised by name and place,
/// proven against the archive (which makes `--remote` implied), nothing downloaded.
async fn verify_foreign(cfg: &VerifyConfig) -> Result<u8> {
    let dir = &cfg.dir;
    let files = adopt::walk(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if files.is_empty() {
        bail!("{} holds no files and no mastfetch manifest", dir.display());
    }
    let s3 = S3::connect(&cfg.s3()?, cfg.retry, cfg.budgets.requests).await;
    let mast_url = cfg.mast_url()?;
    let mast = Mast::new(mast_url.clone(), cfg.retry, cfg.budgets.catalog)
        .context("cannot set up the MAST client")?;
    let resolver = Resolver {
        s3: &s3,
        mast: Some(&mast),
        mast_base: mast_url,
        layout: plan::Layout::Mirror,
        s3_only: false,
        mast_only: false,
        query: crate::query::Query::default(),
        catalog: crate::query::Catalog::Mast,
        parallel: cfg.budgets.listings,
    };
    let proofs = adopt::prove_tree(&files, dir, &resolver, &s3, cfg.budgets.hash_threads)
        .await
        .context("finding the files' archive objects failed")?;
    if !cfg.quiet {
        let lists = s3.stats.lists.load(std::sync::atomic::Ordering::Relaxed);
        let heads = s3.stats.heads.load(std::sync::atomic::Ordering::Relaxed);
        let lookups = mast.stats().path_lookups;
        eprintln!(
            "mastfetch: verify: no manifest in {}: {} files checked against the archive by name \
             ({lists} S3 list, {heads} S3 head, {lookups} MAST path lookup requests; nothing \
             downloaded)",
            dir.display(),
            files.len()
        );
    }
    if cfg.write_manifest {
        let mut w = manifest::Writer::open(dir, None, false)?;
        for r in proofs.iter().filter_map(|p| p.record.clone()) {
            w.record(r)?;
        }
        w.finish()?;
    }
    let findings: Vec<verify::Finding> = proofs.into_iter().map(|p| p.finding).collect();
    report_findings(&findings, cfg.format, cfg.quiet)
}

/// Print the findings and their counts; exit 1 on anything that is neither ok nor unknown.
fn report_findings(
    findings: &[verify::Finding],
    format: Option<VerifyFormat>,
    quiet: bool,
) -> Result<u8> {
    let format = format.unwrap_or(if std::io::stdout().is_terminal() {
        VerifyFormat::Table
    } else {
        VerifyFormat::Jsonl
    });
    let mut counts = std::collections::BTreeMap::new();
    for f in findings {
        *counts.entry(f.status.as_str()).or_insert(0u64) += 1;
    }
    match write_findings(findings, format) {
        // `verify | head`: the reader has what it wanted.
        Err(e) if note::is_broken_pipe(&e) => return Ok(0),
        res => res.context("cannot write the verify report")?,
    }
    if !quiet {
        let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        eprintln!(
            "mastfetch: verify: {} files: {}",
            findings.len(),
            parts.join(", ")
        );
    }
    let bad = findings
        .iter()
        .any(|f| !matches!(f.status, Verdict::Ok | Verdict::Unknown));
    Ok(u8::from(bad))
}

/// One line per finding (jsonl), or the problems only (table).
fn write_findings(findings: &[verify::Finding], format: VerifyFormat) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for f in findings {
        match format {
            VerifyFormat::Jsonl => {
                serde_json::to_writer(&mut out, f)?;
                writeln!(out)?;
            }
            VerifyFormat::Table if f.status != Verdict::Ok => {
                let status = f.status.as_str();
                writeln!(
                    out,
                    "{status:<8} {}  {}",
                    text::escape(&f.path),
                    text::escape(f.message.as_deref().unwrap_or(""))
                )?;
            }
            VerifyFormat::Table => {}
        }
    }
    out.flush()
}
