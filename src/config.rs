//! The validated configuration of each command (ripgrep's "high-level" arguments): `Config`
//! for plan and get, `VerifyConfig`, with named budgets for what may run at once (`Budgets`),
//! built from the raw flags of `cli`.
//!
//! Owns the checks that turn bad flags into one clear usage error, the parsing of lists,
//! URLs and shard indices from the batch schedulers' environment, the S3 options of the
//! archive and of a destination bucket, and where the MAST token comes from (`load_token`:
//! `--token-file`, `MAST_API_TOKEN`, or a prompt without echo when a person is at the
//! terminal), the one question mastfetch asks. Nothing downstream reads raw flags.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use regex::Regex;
use reqwest::Url;

use crate::cli::{
    BucketArgs, GetArgs, RunArgs, SelectionArgs, SourceArgs, VerifyArgs, VerifyFormat,
};
use crate::plan::Layout;
use crate::query::{Catalog, Query};
use crate::s3::S3Options;

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
    /// Of those, bulk requests (more than `transfer::LATENCY_BOUND` bytes, or of unknown size)
    /// in flight, and server-side copies (`mirror`): `--jobs N` gives N, `--jobs auto`
    /// [`AUTO_BULK`] of [`AUTO_REQUESTS`].
    pub bulk: usize,
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
        Budgets::with_bulk(requests, requests, hash_threads)
    }

    /// The budgets of `--jobs`: a number is the requests in flight whatever their size; `auto`
    /// lets latency-bound requests add to the bulk ones.
    fn of_jobs(jobs: Option<usize>, hash_threads: usize) -> Budgets {
        match jobs {
            Some(n) => Budgets::new(n, hash_threads),
            None => {
                let open_files =
                    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |l| l.0);
                let requests = auto_requests(open_files);
                Budgets::with_bulk(requests, AUTO_BULK.min(requests), hash_threads)
            }
        }
    }

    fn with_bulk(requests: usize, bulk: usize, hash_threads: usize) -> Budgets {
        Budgets {
            requests,
            bulk,
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

/// `--jobs auto`: bulk requests in flight. Real S3 sustains ~85-90 MB/s per connection, so ~15
/// fill 10 Gb/s and ~145 fill 100 Gb/s; 128 of 8 MiB parts give 64 files of 16 MiB two
/// connections each where a peer's one connection a file stops (README, S3-shaped profile).
pub const AUTO_BULK: usize = 128;

/// `--jobs auto`: all requests in flight. A request of a small file waits on S3's 15-60 ms
/// first byte, not on bandwidth, so files/s grow with requests in flight until the server's
/// limit: 384 is 1.5x a peer's 256 workers. Each costs ~45 KiB of memory (a read buffer, the
/// connection, the request's task; measured 33 MiB peak RSS at 64, 49 at 384, 55 at 512) and
/// two file descriptors (`app` raises the open-file limit).
pub const AUTO_REQUESTS: usize = 384;

/// `auto`'s requests in flight under an open-file limit of `open_files`: each holds a socket
/// and often a file, and the run keeps some dozens of others (manifest, logs, listings). Where
/// the limit could not be raised (a container's hard limit), fewer requests rather than files
/// that fail to open.
fn auto_requests(open_files: u64) -> usize {
    let room = open_files.saturating_sub(64) / 2;
    AUTO_REQUESTS
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(16)
}

/// `None` for `auto`.
fn parse_jobs(s: &str) -> Result<Option<usize>, ConfigError> {
    if s == "auto" {
        return Ok(None);
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(Some(n)),
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
        let query = query(sel)?;
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
            budgets: Budgets::of_jobs(parse_jobs(&run.jobs)?, cores()),
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

/// The query of the selection flags; an error when nothing at all is selected.
fn query(sel: &SelectionArgs) -> Result<Query, ConfigError> {
    if sel.items.is_empty() && sel.program.is_empty() && sel.obs_id.is_none() {
        return Err(ConfigError::NothingSelected {
            filters: filters_alone(sel),
        });
    }
    let upper = |v: &[String]| v.iter().map(|s| s.to_ascii_uppercase()).collect();
    Ok(Query {
        programs: sel.program.clone(),
        obs_id: sel.obs_id.clone(),
        instruments: upper(&sel.instrument),
        calib_levels: sel.calib_level.clone(),
        suffixes: sel
            .suffix
            .iter()
            .map(|s| s.trim_start_matches('_').to_string())
            .collect(),
        product_types: upper(&sel.product_type),
        recommended: sel.recommended,
        include_guidestars: sel.include_guidestars,
        matches: regex("match", &sel.match_)?,
        excludes: regex("exclude", &sel.exclude)?,
    })
}

/// Filters the user did give select nothing by themselves; say so, naming only them.
fn filters_alone(sel: &SelectionArgs) -> String {
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
    match given.as_slice() {
        [] => String::new(),
        [one] => format!(" ({one} only filters a selection)"),
        many => format!(" ({} only filter a selection)", many.join(", ")),
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
        assert_eq!(parse_jobs("auto").unwrap(), None);
        assert_eq!(parse_jobs("8").unwrap(), Some(8));
        // Under this process's open-file limit: all of them where it is 832 or more.
        let auto = Budgets::of_jobs(None, 2);
        assert!(auto.requests <= AUTO_REQUESTS && auto.bulk == AUTO_BULK.min(auto.requests));
        assert_eq!(auto_requests(1024), AUTO_REQUESTS);
        assert_eq!(auto_requests(320), 128);
        assert_eq!(auto_requests(20), 16);
        let eight = Budgets::of_jobs(Some(8), 2);
        assert_eq!((eight.requests, eight.bulk), (8, 8));
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
}
