//! The command line: raw clap flags, then one validated configuration per command (`Config`
//! for plan and get, `VerifyConfig`), with named budgets for what may run at once (`Budgets`).
//!
//! Owns flag names, defaults and help text (the contract in cli.md), the parsing of sizes,
//! lists and shard indices from the batch schedulers' environment, and the checks that turn bad
//! flags into one clear usage error. Nothing downstream reads raw flags. Also where the MAST
//! token comes from (`load_token`: `--token-file`, `MAST_API_TOKEN`, or a prompt without echo
//! when a person is at the terminal), the one question mastfetch asks.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use regex::Regex;
use reqwest::Url;

use crate::plan::{Format, Layout};
use crate::query::{Catalog, Query};
use crate::s3::S3Options;

/// Default part size: S3's guidance is 8-16 MiB ranged GETs (each connection sustains about
/// 85-90 MB/s, so a 16 MiB part takes ~0.2 s: long enough to amortize the request, short enough
/// that a retried part costs little and a large file spreads across many connections).
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "mastfetch",
    version,
    about = "Bulk, resumable, verifiable downloads of MAST (JWST, HST) data products, cloud-first",
    long_about = "Plans, fetches and verifies MAST data products: from the STScI open-data bucket \
                  s3://stpubdata when they are there, from MAST over HTTPS when they are not.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve a selection into a download plan and print it; downloads nothing.
    Plan(PlanArgs),
    /// Fetch a selection into DIR: resumable, idempotent, verified.
    Get(GetArgs),
    /// Check a local mirror against its manifest (and with --remote against the archive).
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct SelectionArgs {
    /// mast: URIs, product file names, s3://BUCKET/PREFIX, @FILE (a list, a MAST curl script,
    /// a CSV export, a plan or a manifest; @- reads standard input).
    #[arg(value_name = "SELECTION")]
    pub items: Vec<String>,
    /// Program (proposal) id(s), e.g. 2731 or 2731,2733.
    #[arg(long, value_delimiter = ',', help_heading = "Query")]
    pub program: Vec<u32>,
    /// Observation id pattern (* and % are wildcards), e.g. 'jw02731001*'.
    #[arg(long, help_heading = "Query")]
    pub obs_id: Option<String>,
    /// Instrument name(s): NIRCAM, MIRI, NIRSPEC, NIRISS, FGS, WFC3, ACS, ...
    #[arg(long, value_delimiter = ',', help_heading = "Query")]
    pub instrument: Vec<String>,
    /// Calibration level(s): 1 uncalibrated, 2 calibrated, 3 combined, 4 contributed.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u8).range(0..=4), help_heading = "Query")]
    pub calib_level: Vec<u8>,
    /// Product suffix(es) without `_` or extension: cal,i2d,rate,x1d,...
    #[arg(long, value_delimiter = ',', help_heading = "Query")]
    pub suffix: Vec<String>,
    /// Product type(s): SCIENCE, AUXILIARY, PREVIEW, INFO, CATALOG, THUMBNAIL.
    #[arg(long, value_delimiter = ',', help_heading = "Query")]
    pub product_type: Vec<String>,
    /// Minimum Recommended Products only.
    #[arg(long, help_heading = "Query")]
    pub recommended: bool,
    /// Include guide-star products (left out of queries by default: ~70% of a program's files).
    #[arg(long, help_heading = "Query")]
    pub include_guidestars: bool,
    /// Keep only file names matching this regular expression.
    #[arg(long = "match", value_name = "REGEX", help_heading = "Query")]
    pub match_: Option<String>,
    /// Leave out file names matching this regular expression.
    #[arg(long, value_name = "REGEX", help_heading = "Query")]
    pub exclude: Option<String>,
    /// Where a query is answered: auto (MAST, the catalog of record; bucket listings only if
    /// MAST cannot be reached, with a warning and exit 1), mast, s3 (listings only).
    #[arg(long, value_enum, default_value_t = Catalog::Auto, help_heading = "Query")]
    pub catalog: Catalog,
}

#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Public bucket.
    #[arg(long, default_value = crate::names::ARCHIVE_BUCKET, help_heading = "Sources")]
    pub bucket: String,
    #[arg(long, default_value = "us-east-1", help_heading = "Sources")]
    pub region: String,
    /// S3 endpoint for S3-compatible mirrors and tests (path-style addressing).
    #[arg(long, env = "AWS_ENDPOINT_URL", help_heading = "Sources")]
    pub endpoint_url: Option<String>,
    /// Sign S3 requests with the standard AWS credential chain (default: anonymous).
    #[arg(long, help_heading = "Sources")]
    pub sign: bool,
    /// MAST base URL.
    #[arg(
        long,
        env = "MASTFETCH_MAST_URL",
        default_value = "https://mast.stsci.edu",
        help_heading = "Sources"
    )]
    pub mast_url: String,
    /// Longest wait, in seconds, for a MAST query that keeps answering EXECUTING.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 600,
        help_heading = "Sources"
    )]
    pub mast_timeout: u64,
    /// File holding the MAST API token (default: env MAST_API_TOKEN; needed only for
    /// exclusive-access files).
    #[arg(long, value_name = "PATH", help_heading = "Sources")]
    pub token_file: Option<PathBuf>,
    /// Only the bucket: never fall back to MAST.
    #[arg(long, conflicts_with = "mast_only", help_heading = "Sources")]
    pub s3_only: bool,
    /// Only MAST over HTTPS.
    #[arg(long, help_heading = "Sources")]
    pub mast_only: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// nested: DIR/<COLLECTION>/<obs_id>/<file>; flat: DIR/<file>; mirror: DIR/<s3 key>
    /// [default: nested for a folder, mirror for an s3:// destination].
    #[arg(long, value_enum)]
    pub layout: Option<Layout>,
    /// Requests in flight, shared by all files and parts ("auto" or a number).
    #[arg(long, default_value = "auto")]
    pub jobs: String,
    /// Ranged-GET part size (8MiB, 16MiB, ...).
    #[arg(long, value_parser = parse_size, default_value = "16MiB")]
    pub part_size: u64,
    /// Retries per request for transient failures (5xx, SlowDown, timeouts, resets, short
    /// bodies), with jittered exponential backoff.
    #[arg(long, default_value_t = 10)]
    pub retries: u32,
    /// Skip checking bytes against the archive's checksums and ETags (not recommended; for
    /// comparisons). The manifest's `crc64nvme` is still recorded.
    #[arg(long, alias = "no-md5")]
    pub no_verify: bool,
    /// Take one shard of the plan: the number of shards.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Which shard (0-based); default from AWS_BATCH_JOB_ARRAY_INDEX, JOB_COMPLETION_INDEX or
    /// SLURM_ARRAY_TASK_ID.
    #[arg(long)]
    pub shard_index: Option<u32>,
    /// Seconds in which a response body must deliver 16 KiB, else it is retried as stalled
    /// (for tests; the default suits real links).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, hide = true)]
    pub stall_timeout: u64,
    /// No progress bar or periodic lines.
    #[arg(long)]
    pub no_progress: bool,
    /// Only errors.
    #[arg(long, short)]
    pub quiet: bool,
    /// JSON-lines events on stdout (plan summary, one per file, progress, summary).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,
    #[command(flatten)]
    pub sources: SourceArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Output format (default: table on a terminal, jsonl otherwise).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// The folder the plan is for: `dest` fields stay relative to it (so the plan can be
    /// given to `get --dest` on any machine); `--format curl` fetches into it by default.
    #[arg(long, value_name = "DIR")]
    pub dest: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,
    #[command(flatten)]
    pub sources: SourceArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Destination folder, or s3://BUCKET/PREFIX/ (server-side copies into your bucket,
    /// signed with the standard AWS credential chain).
    #[arg(long, default_value = ".")]
    pub dest: PathBuf,
    #[command(flatten)]
    pub bucket: BucketArgs,
    /// Objects up to this size are copied with one CopyObject, larger ones in parallel
    /// UploadPartCopy parts (S3 allows CopyObject up to 5 GB) [default: 512MiB].
    #[arg(long, value_parser = parse_size, help_heading = "Bucket destination")]
    pub copy_threshold: Option<u64>,
    /// UploadPartCopy part size, 5MiB to 5GiB (grown for objects that would need more than
    /// 10,000 parts) [default: 128MiB].
    #[arg(long, value_parser = parse_size, help_heading = "Bucket destination")]
    pub copy_part_size: Option<u64>,
    /// Plan only, print it like `plan`.
    #[arg(long)]
    pub dry_run: bool,
    /// Also compute each file's SHA-256: manifest field `sha256` and DIR/SHA256SUMS.
    #[arg(long)]
    pub sha256: bool,
    /// Fetch every planned file again, even one already complete in DIR (what
    /// `verify --repair` does for the files it found damaged).
    #[arg(long)]
    pub force: bool,
    /// Output format of --dry-run.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

/// Flags of an `s3://` destination (get) or mirror (verify).
#[derive(Debug, Clone, Args)]
pub struct BucketArgs {
    /// S3 endpoint of the destination bucket, when it is not --endpoint-url's.
    #[arg(long, value_name = "URL", help_heading = "Bucket destination")]
    pub dest_endpoint_url: Option<String>,
    /// Region of the destination bucket, when it is not --region.
    #[arg(long, help_heading = "Bucket destination")]
    pub dest_region: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyFormat {
    Table,
    Jsonl,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The mirror folder (holding mastfetch-manifest*.jsonl), or s3://BUCKET/PREFIX/.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Also ask the archive whether each file is still current (reports `stale`). Implied for a
    /// folder without a manifest (a mirror made by astroquery, a MAST bundle, s5cmd or aws).
    #[arg(long)]
    pub remote: bool,
    /// For a folder without a manifest: record what was proven as a mastfetch manifest (status
    /// `adopted`), so that later runs of `verify` are local.
    #[arg(long)]
    pub write_manifest: bool,
    /// Fetch again, verified like any download, exactly the files found `corrupt` or `missing`
    /// (and with --remote `stale`); exit 0 when all were repaired.
    #[arg(long)]
    pub repair: bool,
    #[arg(long, value_enum)]
    pub format: Option<VerifyFormat>,
    /// Files hashed at once (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub sources: SourceArgs,
    #[command(flatten)]
    pub bucket: BucketArgs,
}

/// `16MiB`, `8MB`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let v: bytesize::ByteSize = s
        .trim()
        .parse()
        .map_err(|e| format!("not a size: {s:?} ({e}); use e.g. 8MiB or 16MiB"))?;
    let n = v.as_u64();
    // S3 serves ranges of any size, but below 1 MiB the request overhead dominates and above
    // 5 GiB no S3 part exists.
    if !(1 << 20..=5 << 30).contains(&n) {
        return Err(format!("part size {s} out of range: 1MiB to 5GiB"));
    }
    Ok(n)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{flag}: {message}")]
    Flag { flag: &'static str, message: String },
    /// No items and no query: no flag is to blame, only what is missing.
    #[error(
        "nothing selected{filters}: give items (mast: URIs, product file names, s3:// prefixes, \
         @FILE) or a query by program or observation id (see `mastfetch help get`)"
    )]
    NothingSelected { filters: String },
}

fn flag(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Flag {
        flag,
        message: message.into(),
    }
}

/// Validated settings shared by plan and get.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub items: Vec<String>,
    pub query: Query,
    pub catalog: Catalog,
    pub s3: S3Options,
    pub mast_url: Url,
    /// How long a MAST query may answer EXECUTING.
    pub mast_timeout: std::time::Duration,
    pub token_file: Option<PathBuf>,
    pub s3_only: bool,
    pub mast_only: bool,
    pub layout: Layout,
    /// How much may run at once, each kind of work with its own budget.
    pub budgets: Budgets,
    pub part_size: u64,
    pub shard: Option<(u32, u32)>,
    pub retry: crate::retry::RetryPolicy,
    /// Check bytes against the archive's checksums (off with `--no-verify`).
    pub verify: bool,
    pub progress: crate::note::Options,
    /// How much an @FILE may hold.
    pub input_limits: crate::input::Limits,
}

/// How much of each kind of work may run at once. Each budget is one number with one meaning;
/// the module that spends it is named on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budgets {
    /// Requests to the archive in flight (`get --jobs`; `verify --jobs` there): part GETs,
    /// whole-object GETs and MAST downloads share it (`transfer`'s semaphore), and `s3` divides
    /// its read-buffer memory by it.
    pub requests: usize,
    /// Bucket folder listings in flight while planning (`resolve`, `adopt`): the request budget,
    /// at most [`MAX_LISTINGS`].
    pub listings: usize,
    /// MAST catalog requests in flight (`mast`: product listings, path lookups):
    /// [`CATALOG_REQUESTS`], whatever `--jobs` says.
    pub catalog: usize,
    /// Files hashed at once: `verify`'s re-hash threads (`verify --jobs`, default the cores);
    /// for `get`, the cores, which size the hashing pool and the turns MAST downloads take to
    /// hash (`transfer`).
    pub hash_threads: usize,
}

/// Listings in flight at most. A listing is small and quick, and a plan's distinct folders are
/// few; more at once would only crowd the bucket (and the requests a high `--jobs` leaves for
/// data) without shortening planning, which waits on the slowest folder anyway.
pub(crate) const MAX_LISTINGS: usize = 32;

/// MAST catalog requests in flight. The catalog is one shared public service that answers a
/// product request in seconds: 8 at once list a 500-observation program's 50 product requests
/// in a few rounds without crowding it. It does not grow with `--jobs`, which is about the
/// bucket's bandwidth.
pub(crate) const CATALOG_REQUESTS: usize = 8;

impl Budgets {
    /// The budgets for `requests` archive requests and `hash_threads` hashing threads.
    pub(crate) fn new(requests: usize, hash_threads: usize) -> Budgets {
        Budgets {
            requests,
            listings: requests.min(MAX_LISTINGS),
            catalog: CATALOG_REQUESTS,
            hash_threads,
        }
    }
}

/// The machine's cores (2 when it cannot tell).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Validated settings of `verify`. The archive's addresses are checked when first needed
/// ([`VerifyConfig::s3`], [`VerifyConfig::mast_url`]): a local verify never contacts the
/// archive, so flags it does not use (or `AWS_ENDPOINT_URL` in the environment) are not held
/// against it.
#[derive(Debug, Clone)]
pub(crate) struct VerifyConfig {
    pub dir: PathBuf,
    pub remote: bool,
    pub write_manifest: bool,
    pub repair: bool,
    pub format: Option<VerifyFormat>,
    pub quiet: bool,
    /// `verify --jobs` bounds files hashed at once and, as each file checked against the
    /// archive may need a request, requests too.
    pub budgets: Budgets,
    pub retry: crate::retry::RetryPolicy,
    /// The flags of an `s3://` mirror.
    pub bucket: BucketArgs,
    sources: SourceArgs,
}

impl VerifyConfig {
    pub(crate) fn new(args: &VerifyArgs) -> VerifyConfig {
        let jobs = args.jobs.unwrap_or_else(cores);
        VerifyConfig {
            dir: args.dir.clone(),
            remote: args.remote,
            write_manifest: args.write_manifest,
            repair: args.repair,
            format: args.format,
            quiet: args.quiet,
            budgets: Budgets::new(jobs, jobs),
            retry: crate::retry::RetryPolicy::default(),
            bucket: args.bucket.clone(),
            sources: args.sources.clone(),
        }
    }

    /// The bucket to check against.
    pub(crate) fn s3(&self) -> Result<S3Options, ConfigError> {
        s3_options(&self.sources)
    }

    /// The sources as given, for the `get` that `--repair` runs (which validates them).
    pub(crate) fn sources(&self) -> &SourceArgs {
        &self.sources
    }

    /// MAST's base URL, for what the bucket's keys do not say.
    pub(crate) fn mast_url(&self) -> Result<Url, ConfigError> {
        mast_base(&self.sources.mast_url)
    }
}

/// Requests in flight by default. Real S3 sustains ~85-90 MB/s per connection, so ~15 requests
/// fill 10 Gb/s and ~150 fill 100 Gb/s; small files are latency-bound and want more requests
/// than cores. 64 keeps a 25 Gb/s EC2 link full while memory stays flat (bodies stream to disk).
pub const DEFAULT_JOBS: usize = 64;

fn parse_jobs(s: &str) -> Result<usize, ConfigError> {
    if s == "auto" {
        return Ok(DEFAULT_JOBS);
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err(flag(
            "jobs",
            format!("{s:?} is not auto or a number from 1 to 4096"),
        )),
    }
}

/// The MAST base URL with a trailing `/`, so that API paths join under it.
pub fn mast_base(s: &str) -> Result<Url, ConfigError> {
    let mut url = Url::parse(s).map_err(|e| flag("mast-url", format!("{s:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(flag(
            "mast-url",
            format!("{s:?}: not an http:// or https:// URL with a host"),
        ));
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

pub(crate) fn s3_options(src: &SourceArgs) -> Result<S3Options, ConfigError> {
    if let Some(ep) = src.endpoint_url.as_ref().filter(|s| !s.is_empty()) {
        let url = Url::parse(ep).map_err(|e| flag("endpoint-url", format!("{ep:?}: {e}")))?;
        // Anything else would be retried for a minute and a half before failing.
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(flag(
                "endpoint-url",
                format!("{ep:?}: not an http:// or https:// URL with a host"),
            ));
        }
    }
    Ok(S3Options {
        bucket: src.bucket.clone(),
        region: src.region.clone(),
        endpoint_url: src.endpoint_url.clone().filter(|s| !s.is_empty()),
        sign: src.sign,
    })
}

/// The `s3://` destination of `get --dest` or `verify`, signed, with its endpoint and region
/// (the source's unless `--dest-endpoint-url`/`--dest-region` say otherwise); `None` for a
/// folder, where the bucket flags must not be given.
pub(crate) fn dest_options(
    dest: &std::path::Path,
    src: &SourceArgs,
    b: &BucketArgs,
) -> Result<Option<crate::bucket::DestOptions>, ConfigError> {
    let text = dest.to_string_lossy();
    let url = crate::bucket::DestUrl::parse(&text).map_err(|m| flag("dest", m))?;
    let Some(url) = url else {
        if b.dest_endpoint_url.is_some() || b.dest_region.is_some() {
            return Err(flag(
                "dest-endpoint-url",
                "--dest-endpoint-url and --dest-region are for an s3://BUCKET/PREFIX/ destination",
            ));
        }
        return Ok(None);
    };
    let endpoint = b.dest_endpoint_url.clone().or(src.endpoint_url.clone());
    let check = SourceArgs {
        endpoint_url: endpoint.clone(),
        ..src.clone()
    };
    s3_options(&check).map_err(|_| {
        flag(
            "dest-endpoint-url",
            "not an http:// or https:// URL with a host",
        )
    })?;
    Ok(Some(crate::bucket::DestOptions {
        url,
        region: b.dest_region.clone().unwrap_or_else(|| src.region.clone()),
        endpoint_url: endpoint.filter(|s| !s.is_empty()),
    }))
}

/// `get --copy-threshold` and `--copy-part-size`, defaulted and checked against S3's limits.
pub(crate) fn copy_sizes(args: &GetArgs) -> Result<(u64, u64), ConfigError> {
    // S3's bounds on a part; the threshold may be anything up to CopyObject's 5 GB.
    let part_size = args.copy_part_size.unwrap_or(crate::copy::COPY_PART_SIZE);
    if !(5 << 20..=5 << 30).contains(&part_size) {
        return Err(flag(
            "copy-part-size",
            "must be 5MiB to 5GiB (S3's part bounds)",
        ));
    }
    let threshold = args.copy_threshold.unwrap_or(crate::copy::COPY_THRESHOLD);
    if threshold > 5_000_000_000 {
        return Err(flag("copy-threshold", "CopyObject copies at most 5 GB"));
    }
    Ok((threshold, part_size))
}

/// The shard index from the flag or the batch scheduler's environment.
fn shard_index(given: Option<u32>, shards: u32) -> Result<u32, ConfigError> {
    const VARS: [&str; 3] = [
        "AWS_BATCH_JOB_ARRAY_INDEX",
        "JOB_COMPLETION_INDEX",
        "SLURM_ARRAY_TASK_ID",
    ];
    let (k, from) = match given {
        Some(k) => (k, "--shard-index".to_string()),
        None => {
            let found = VARS
                .iter()
                .find_map(|v| std::env::var(v).ok().map(|val| (v, val)));
            match found {
                Some((var, val)) => {
                    let k = val.trim().parse().map_err(|_| {
                        flag("shard-index", format!("{var}={val:?} is not a shard index"))
                    })?;
                    (k, var.to_string())
                }
                None if shards > 1 => return Err(flag(
                    "shard-index",
                    "--shards given without --shard-index, and none of AWS_BATCH_JOB_ARRAY_INDEX, \
                         JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID is set",
                )),
                None => (0, String::new()),
            }
        }
    };
    if k >= shards {
        return Err(flag(
            "shard-index",
            format!(
                "{from} gives {k}, but shards are numbered 0 to {} (Slurm: use --array=0-{})",
                shards - 1,
                shards - 1
            ),
        ));
    }
    Ok(k)
}

fn regex(flag_name: &'static str, s: &Option<String>) -> Result<Option<Regex>, ConfigError> {
    s.as_deref()
        .map(|r| Regex::new(r).map_err(|e| flag(flag_name, format!("bad regular expression: {e}"))))
        .transpose()
}

impl Config {
    pub fn new(
        sel: &SelectionArgs,
        src: &SourceArgs,
        run: &RunArgs,
    ) -> Result<Config, ConfigError> {
        if sel.items.is_empty() && sel.program.is_empty() && sel.obs_id.is_none() {
            // Filters the user did give select nothing by themselves; say so, naming only them.
            let given: Vec<&str> = [
                ("--instrument", !sel.instrument.is_empty()),
                ("--calib-level", !sel.calib_level.is_empty()),
                ("--suffix", !sel.suffix.is_empty()),
                ("--product-type", !sel.product_type.is_empty()),
                ("--recommended", sel.recommended),
                ("--match", sel.match_.is_some()),
                ("--exclude", sel.exclude.is_some()),
            ]
            .into_iter()
            .filter_map(|(f, on)| on.then_some(f))
            .collect();
            let filters = match given.as_slice() {
                [] => String::new(),
                [one] => format!(" ({one} only filters a selection)"),
                many => format!(" ({} only filter a selection)", many.join(", ")),
            };
            return Err(ConfigError::NothingSelected { filters });
        }
        let query = Query {
            programs: sel.program.clone(),
            obs_id: sel.obs_id.clone(),
            instruments: sel
                .instrument
                .iter()
                .map(|s| s.to_ascii_uppercase())
                .collect(),
            calib_levels: sel.calib_level.clone(),
            suffixes: sel
                .suffix
                .iter()
                .map(|s| s.trim_start_matches('_').to_string())
                .collect(),
            product_types: sel
                .product_type
                .iter()
                .map(|s| s.to_ascii_uppercase())
                .collect(),
            recommended: sel.recommended,
            include_guidestars: sel.include_guidestars,
            matches: regex("match", &sel.match_)?,
            excludes: regex("exclude", &sel.exclude)?,
        };
        if run.shards == 0 {
            return Err(flag("shards", "must be at least 1"));
        }
        let k = shard_index(run.shard_index, run.shards)?;
        Ok(Config {
            items: sel.items.clone(),
            query,
            catalog: sel.catalog,
            s3: s3_options(src)?,
            mast_url: mast_base(&src.mast_url)?,
            mast_timeout: std::time::Duration::from_secs(src.mast_timeout.max(1)),
            token_file: src.token_file.clone(),
            s3_only: src.s3_only,
            mast_only: src.mast_only,
            layout: run.layout.unwrap_or(Layout::Nested),
            budgets: Budgets::new(parse_jobs(&run.jobs)?, cores()),
            part_size: run.part_size,
            shard: (run.shards > 1).then_some((k, run.shards)),
            verify: !run.no_verify,
            retry: crate::retry::RetryPolicy {
                max_retries: run.retries,
                stall: std::time::Duration::from_secs(run.stall_timeout.max(1)),
                ..Default::default()
            },
            progress: crate::note::Options {
                quiet: run.quiet,
                no_progress: run.no_progress,
                json: run.json,
            },
            input_limits: crate::input::Limits::from_env(),
        })
    }
}

/// The token, from `--token-file`, else `MAST_API_TOKEN`, else a prompt without echo when a
/// person is at the terminal and `needed`.
pub(crate) fn load_token(
    token_file: Option<&Path>,
    needed: bool,
) -> Result<Option<crate::https::Token>, io::Error> {
    if let Some(p) = token_file {
        let mut s = String::new();
        File::open(p)
            .and_then(|mut f| f.read_to_string(&mut s))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot read token file {}: {e}", p.display()),
                )
            })?;
        return Ok(crate::https::Token::new(&s));
    }
    if let Some(t) = std::env::var("MAST_API_TOKEN")
        .ok()
        .as_deref()
        .and_then(crate::https::Token::new)
    {
        return Ok(Some(t));
    }
    use std::io::IsTerminal;
    if needed && std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        eprint!("MAST API token (input hidden; empty to skip exclusive-access files): ");
        let _ = io::stderr().flush();
        let t = rpassword::read_password()?;
        return Ok(crate::https::Token::new(&t));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("8 MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("8MB").unwrap(), 8_000_000);
        assert!(parse_size("12").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn budgets_each_have_one_meaning() {
        let b = Budgets::new(256, 4);
        assert_eq!(
            (b.requests, b.listings, b.catalog, b.hash_threads),
            (256, MAX_LISTINGS, CATALOG_REQUESTS, 4)
        );
        assert_eq!(Budgets::new(8, 2).listings, 8);
    }

    #[test]
    fn jobs() {
        assert_eq!(parse_jobs("auto").unwrap(), DEFAULT_JOBS);
        assert_eq!(parse_jobs("8").unwrap(), 8);
        assert!(parse_jobs("0").is_err());
        assert!(parse_jobs("many").is_err());
    }

    #[test]
    fn mast_urls_get_a_trailing_slash() {
        assert_eq!(
            mast_base("https://mast.stsci.edu").unwrap().as_str(),
            "https://mast.stsci.edu/"
        );
        assert_eq!(
            mast_base("http://127.0.0.1:9/x").unwrap().as_str(),
            "http://127.0.0.1:9/x/"
        );
        assert!(mast_base("ftp://x").is_err());
    }

    #[test]
    fn shard_index_must_fit() {
        assert_eq!(shard_index(Some(3), 4).unwrap(), 3);
        assert!(shard_index(Some(4), 4).is_err());
    }

    #[test]
    fn help_shows_defaults_and_plan_takes_dest() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("get")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("[default: 16MiB]"), "{help}");
        assert!(help.contains("[default: 600]"), "{help}");
        let cli = Cli::try_parse_from(["mastfetch", "plan", "x.fits", "--dest", "d"]).unwrap();
        assert!(matches!(cli.command, Command::Plan(p) if p.dest.as_deref() == Some("d".as_ref())));
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
