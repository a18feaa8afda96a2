//! The command line as typed: the raw clap flags (ripgrep's "low-level" arguments), which
//! `config` turns into one validated configuration per command.
//!
//! Owns flag names, defaults and help text (the contract in cli.md) and the parsing clap does
//! itself (sizes). Nothing past `config` reads these.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::formats::Format;
use crate::plan::Layout;
use crate::query::Catalog;

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
    /// Requests in flight, shared by all files and parts: a number, or "auto" (384, of which
    /// 128 parts or files over 1 MiB).
    #[arg(long, default_value = "auto")]
    pub jobs: String,
    /// Ranged-GET part size (8MiB, 16MiB, ...).
    // 8 MiB: S3's guidance is 8-16 MiB ranged GETs. At ~85-90 MB/s a connection, an 8 MiB part
    // takes ~0.1 s after a 15-60 ms first byte; the lower end of the guidance gives a 16 MiB
    // file two connections (a peer gives it one) and a retried part costs little. With
    // `--jobs auto`'s 128 bulk requests, 128 parts of 8 MiB (1 GiB) are in flight.
    #[arg(long, value_parser = parse_size, default_value = "8MiB")]
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
    fn help_shows_defaults_and_plan_takes_dest() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("get")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("[default: 8MiB]"), "{help}");
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
