//! The `verify` command: a folder's files checked against its manifests (and, `--remote`,
//! against the archive), or against the archive by name for a folder another tool made, and
//! with `--repair` the damaged files' `get`.
//!
//! Owns the order of a verify run, the findings' report (table or JSON lines, the counts) and
//! its exit code: 0 all ok (or unknown), 1 anything missing, corrupt or stale. The checks are
//! `verify`'s and `adopt`'s; the repair's `get` is run by `app`, which this module does not
//! know.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::adopt;
use crate::bucket::{Bucket, DestOptions};
use crate::cli::{Cli, Command, GetArgs, VerifyFormat};
use crate::config::VerifyConfig;
use crate::manifest::{self, Entry};
use crate::mast::Mast;
use crate::mirror;
use crate::note;
use crate::plan;
use crate::resolve::Resolver;
use crate::s3::S3;
use crate::text;
use crate::verify::{self, Verdict};

/// What `verify` came to: its exit code, or (`--repair`) the `get` that fetches the damaged
/// files again, which the caller runs.
pub(crate) enum Verified {
    Done(u8),
    Repair(Box<Repair>),
}

/// The `get --force` of a repair, and its plan file (removed once the get has run).
pub(crate) struct Repair {
    pub get: GetArgs,
    pub plan: PathBuf,
}

pub(crate) async fn verify_cmd(cfg: VerifyConfig) -> Result<Verified> {
    if let Some(dest) = crate::config::dest_options(&cfg.dir, cfg.sources(), &cfg.bucket)? {
        return verify_bucket(&cfg, dest).await.map(Verified::Done);
    }
    let dir = &cfg.dir;
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let index = crate::index::Index::build(dir)?;
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
        return Ok(Verified::Done(1));
    }
    if index.is_empty() {
        return verify_foreign(&cfg).await.map(Verified::Done);
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
        mark_stale(&cfg, &mut findings, &matched).await?;
    }
    let code = report_findings(&findings, cfg.format, cfg.quiet)?;
    if cfg.repair {
        return repair(&cfg, &findings, &matched);
    }
    Ok(Verified::Done(code.max(u8::from(torn > 0))))
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

/// `--remote`: the files whose record matched on disk compared with the archive's objects now;
/// an ok finding becomes `stale` where the archive has written another object since.
async fn mark_stale(
    cfg: &VerifyConfig,
    findings: &mut [verify::Finding],
    matched: &[Entry],
) -> Result<()> {
    let s3 = S3::connect(&cfg.s3()?, cfg.retry, cfg.budgets.requests).await;
    // Each file is compared with the archive through the record that matches it on disk.
    let stale = verify::verify_remote(&s3, matched)
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
    Ok(())
}

/// `verify --repair`: the records of the damaged files become a plan, to be fetched again with
/// `get --force` into DIR (verified like any download; a file's old bytes are replaced only by
/// proven new ones).
fn repair(cfg: &VerifyConfig, findings: &[verify::Finding], records: &[Entry]) -> Result<Verified> {
    let damaged: BTreeSet<&str> = findings
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
        return Ok(Verified::Done(0));
    }
    let dir = cfg.dir.clone();
    let plan_path = crate::dest::private_dir(&dir).join("repair-plan.jsonl");
    std::fs::create_dir_all(crate::dest::private_dir(&dir))
        .with_context(|| format!("cannot create {}", crate::dest::private_dir(&dir).display()))?;
    let text = repair_plan(records, &damaged)?;
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
    Ok(Verified::Repair(Box::new(Repair {
        get,
        plan: plan_path,
    })))
}

/// The plan (JSON lines) of the `damaged` files' records.
fn repair_plan(records: &[Entry], damaged: &BTreeSet<&str>) -> Result<String> {
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
    Ok(text)
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
