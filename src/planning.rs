//! What `plan` and `get` share: the sources (S3 client, MAST catalog), the plan made from a
//! selection (or streamed: a plan file, S3 prefixes), its summary on stderr and `--json`, and
//! printing it.
//!
//! Owns the plan summary and the plan's exit code (1 when it leaves something out). It fetches
//! nothing (`get_cmd`).

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::config::Config;
use crate::formats::{self, Format, Rows};
use crate::input;
use crate::mast::Mast;
use crate::note;
use crate::plan::{self, Plan};
use crate::resolve::Resolver;
use crate::s3::S3;
use crate::shard;
use crate::text;

/// Everything planning needs, built once.
pub(crate) struct Sources {
    pub(crate) s3: S3,
    pub(crate) mast: Option<Mast>,
}

pub(crate) async fn sources(cfg: &Config) -> Result<Sources> {
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

pub(crate) async fn make_plan(cfg: &Config, src: &Sources) -> Result<Plan> {
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

pub(crate) fn resolver<'a>(cfg: &Config, src: &'a Sources) -> Resolver<'a> {
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
pub(crate) fn streamable_prefixes(
    cfg: &Config,
    format: Format,
) -> Result<Option<Vec<input::Item>>> {
    let simple = cfg.shard.is_none() && !cfg.query.is_query() && Rows::streams(format);
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

/// Rows written as a streamed plan admits them. After a failed write (the reader went away,
/// the disk is full) no more rows are written; the error is reported once, at the end.
struct Out<'a> {
    rows: Rows<'a>,
    written: std::io::Result<()>,
}

impl Out<'_> {
    fn row(&mut self, f: &plan::PlanEntry) {
        if self.written.is_ok() {
            self.written = self.rows.row(f);
        }
    }

    /// The end of a streamed `plan`: the rows flushed, the summary on stderr, the exit code.
    /// A reader that went away (`plan | head`) ends it quietly.
    fn finish(self, cfg: &Config, src: &Sources, plan: &Plan) -> Result<u8> {
        match self.written.and_then(|()| self.rows.finish()) {
            Err(e) if note::is_broken_pipe(&e) => return Ok(0),
            res => res.context("cannot write the plan")?,
        }
        let mut quiet = cfg.progress;
        quiet.json = false; // stdout holds the plan itself
        summarize(plan, src, quiet);
        Ok(plan_code(plan))
    }
}

/// `plan` of S3 prefixes, written as listed.
pub(crate) async fn stream_prefixes(
    cfg: &Config,
    src: &Sources,
    prefixes: &[input::Item],
    format: Format,
) -> Result<u8> {
    let resolver = resolver(cfg, src);
    let mut plan = Plan {
        streamed: Some(plan::Tally::default()),
        ..Plan::default()
    };
    let mut index = plan::PlanIndex::default();
    let mut stdout = std::io::stdout().lock();
    let mut out = Out {
        rows: Rows::new(&mut stdout, format).context("cannot write the plan")?,
        written: Ok(()),
    };
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
                if let Some(e) = plan.admit_streamed(e, &mut index, |_| None) {
                    out.row(&e);
                }
            })
            .await?;
        plan.problems.extend(problem);
        if out.written.is_err() {
            break;
        }
    }
    if plan.tally().files == 0 && plan.duplicates.is_empty() && plan.problems.is_empty() {
        plan.problems.push(plan::Problem {
            item: selection_name(cfg),
            message: "the selection matched nothing".into(),
            entry: None,
        });
    }
    out.finish(cfg, src, &plan)
}

/// `plan @plan.jsonl` (a shard of it, or all), written row by row as the file is read.
async fn stream_plan_file(cfg: &Config, src: &Sources, path: &Path, format: Format) -> Result<u8> {
    let name = &cfg.items[0][1..];
    let shard = cfg.shard.unwrap_or((0, 1));
    let mut stdout = std::io::stdout().lock();
    let mut out = Out {
        rows: Rows::new(&mut stdout, format).context("cannot write the plan")?,
        written: Ok(()),
    };
    let mut admitted = shard::admit_rows(path, name, shard, |_, f| out.row(&f))?;
    let others = std::mem::take(&mut admitted.others);
    if !others.items.is_empty() || !others.problems.is_empty() {
        let more = resolver(cfg, src).resolve(others).await?;
        admitted.plan.problems.extend(more.problems);
        admitted.plan.notes.extend(more.notes);
        for f in more.files {
            if let Some(f) = admitted.admit(f) {
                out.row(&f);
            }
        }
    }
    let mut plan = admitted.plan;
    crate::complete::shard_notes(&mut plan, name, admitted.total, shard);
    out.finish(cfg, src, &plan)
}

/// The plan file of `SELECTION = @plan.jsonl` alone (no query), which shards read as a stream.
pub(crate) fn streamable_plan(cfg: &Config) -> Option<&Path> {
    let [item] = cfg.items.as_slice() else {
        return None;
    };
    let path = Path::new(item.strip_prefix('@')?);
    (path != Path::new("-") && !cfg.query.is_query() && shard::is_plan_file(path)).then_some(path)
}

/// The selection as the user gave it, for a message about all of it.
pub(crate) fn selection_name(cfg: &Config) -> String {
    let mut parts: Vec<String> = cfg.items.clone();
    if cfg.query.is_query() {
        parts.push(cfg.query.describe());
    }
    parts.join(" ")
}

/// The human summary of a plan (stderr) and its `--json` event.
pub(crate) fn summarize(plan: &Plan, src: &Sources, opts: note::Options) {
    let stats = &src.s3.stats;
    let requests = Requests {
        lists: stats.lists.load(std::sync::atomic::Ordering::Relaxed),
        heads: stats.heads.load(std::sync::atomic::Ordering::Relaxed),
        mast: src.mast.as_ref().map(Mast::stats).unwrap_or_default(),
    };
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
        eprintln!("mastfetch: {}", summary_line(plan, &requests));
    }
    if opts.json {
        emit_plan_event(plan, &requests);
    }
}

/// The requests planning made, by kind.
struct Requests {
    lists: u64,
    heads: u64,
    mast: crate::mast::MastStats,
}

/// The plan in one line: files, bytes, sources, what was left out, and the requests made.
fn summary_line(plan: &Plan, r: &Requests) -> String {
    let tally = plan.tally();
    let (from_s3, exclusive) = (tally.from_s3, tally.exclusive);
    let from_mast = tally.files - from_s3;
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
    let m = &r.mast;
    line.push_str(&format!(
        "; requests: {} S3 list, {} S3 head, {} MAST observation, {} MAST product, {} MAST path lookup",
        r.lists, r.heads, m.observation_requests, m.product_requests, m.path_lookups
    ));
    line
}

/// The plan's `--json` event.
fn emit_plan_event(plan: &Plan, r: &Requests) {
    let tally = plan.tally();
    let m = &r.mast;
    note::emit(&json!({
        "event": "plan",
        "files": tally.files,
        "bytes": tally.bytes,
        "from_s3": tally.from_s3,
        "from_mast": tally.files - tally.from_s3,
        "exclusive_access": tally.exclusive,
        "duplicates": plan.duplicates.len(),
        "problems": plan.problems.len(),
        "catalog": plan.catalog,
        "incomplete": plan.incomplete.is_some(),
        "warning": plan.incomplete,
        "requests": {"s3_list": r.lists, "s3_head": r.heads,
                     "mast_observations": m.observation_requests,
                     "mast_products": m.product_requests,
                     "mast_path_lookups": m.path_lookups},
    }));
}

/// Print the plan; `Ok(false)` when the reader closed stdout early (`plan | head`), which is
/// not an error.
pub(crate) fn print_plan(plan: &Plan, format: Format) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    let res = formats::write_plan(&mut out, plan, format).and_then(|()| out.flush());
    match res {
        Err(e) if note::is_broken_pipe(&e) => Ok(false),
        res => res.map(|()| true).context("cannot write the plan"),
    }
}

/// 1 when the plan leaves something out: problems, or a catalog that may have missed products.
pub(crate) fn plan_code(plan: &Plan) -> u8 {
    u8::from(!plan.problems.is_empty() || plan.incomplete.is_some())
}

/// `plan`, and `get --dry-run`: print the plan, its summary to stderr, exit 1 on problems.
pub(crate) async fn show_plan(
    cfg: &Config,
    format: Option<Format>,
    dir: Option<&Path>,
) -> Result<u8> {
    let src = sources(cfg).await?;
    let format = format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Jsonl
    });
    if let Some(prefixes) = streamable_prefixes(cfg, format)? {
        return stream_prefixes(cfg, &src, &prefixes, format).await;
    }
    if let (Some(path), true) = (streamable_plan(cfg), Rows::streams(format)) {
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
