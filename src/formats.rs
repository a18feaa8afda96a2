//! How a plan is printed: `--format table|jsonl|csv|curl|urls`.
//!
//! Owns the formats: the table, the JSON lines (the exchange format `@plan.jsonl` reads back),
//! CSV, URLs, and the curl script; and which of them can be written row by row as a plan
//! streams. It does not decide what is in the plan (`plan`, `resolve`, `shard`).

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::plan::{Plan, PlanEntry, Source};
use crate::text;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Jsonl,
    Csv,
    Curl,
    Urls,
}

/// Print the plan in `format`. `curl` needs the MAST base URL for token-bearing requests.
pub(crate) fn write_plan(out: &mut dyn Write, plan: &Plan, format: Format) -> io::Result<()> {
    match format {
        Format::Jsonl | Format::Urls | Format::Csv => {
            let mut rows = Rows::new(out, format)?;
            for f in &plan.files {
                rows.row(f)?;
            }
            rows.finish()?;
        }
        Format::Table => {
            let width = plan
                .files
                .iter()
                .map(|f| text::escape(&f.dest).chars().count())
                .max()
                .unwrap_or(4)
                .max(4);
            writeln!(
                out,
                "{:<width$}  {:>12}  {:<6}  ACCESS",
                "DEST", "SIZE", "SOURCE"
            )?;
            for f in &plan.files {
                let size = f.size.map_or("?".to_string(), |s| s.to_string());
                let access = f.access.as_deref().unwrap_or("-");
                writeln!(
                    out,
                    "{:<width$}  {size:>12}  {:<6}  {access}",
                    text::escape(&f.dest),
                    f.source.as_str()
                )?;
            }
        }
        Format::Curl => write_curl(out, plan)?,
    }
    Ok(())
}

/// The formats written a row at a time, so a plan can be printed while it is listed.
pub(crate) enum Rows<'a> {
    Jsonl(&'a mut dyn Write),
    Urls(&'a mut dyn Write),
    Csv(Box<csv::Writer<&'a mut dyn Write>>),
}

impl<'a> Rows<'a> {
    /// Whether `format` can be written as rows come (a table needs its width, a script its
    /// whole list first).
    pub(crate) fn streams(format: Format) -> bool {
        matches!(format, Format::Jsonl | Format::Urls | Format::Csv)
    }

    pub(crate) fn new(out: &'a mut dyn Write, format: Format) -> io::Result<Rows<'a>> {
        Ok(match format {
            Format::Urls => Rows::Urls(out),
            Format::Csv => {
                let mut w = csv::Writer::from_writer(out);
                w.write_record([
                    "uri", "filename", "source", "bucket", "key", "url", "size", "etag", "access",
                    "dest",
                ])?;
                Rows::Csv(Box::new(w))
            }
            _ => Rows::Jsonl(out),
        })
    }

    pub(crate) fn row(&mut self, f: &PlanEntry) -> io::Result<()> {
        match self {
            Rows::Jsonl(out) => {
                serde_json::to_writer(&mut **out, f)?;
                out.write_all(b"\n")
            }
            Rows::Urls(out) => writeln!(out, "{}", f.url),
            Rows::Csv(w) => Ok(w.write_record([
                f.uri.as_str(),
                &f.filename,
                f.source.as_str(),
                f.bucket.as_deref().unwrap_or(""),
                f.key.as_deref().unwrap_or(""),
                &f.url,
                &f.size.map(|s| s.to_string()).unwrap_or_default(),
                f.etag.as_deref().unwrap_or(""),
                f.access.as_deref().unwrap_or(""),
                &f.dest,
            ])?),
        }
    }

    pub(crate) fn finish(self) -> io::Result<()> {
        match self {
            Rows::Jsonl(out) | Rows::Urls(out) => out.flush(),
            Rows::Csv(mut w) => w.flush(),
        }
    }
}

/// Quote a string for bash in single quotes.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn write_curl(out: &mut dyn Write, plan: &Plan) -> io::Result<()> {
    let mut s = String::new();
    s.push_str("#!/usr/bin/env bash\n");
    s.push_str("# Written by mastfetch: fetches the same plan with curl. Rerun to resume.\n");
    s.push_str(
        "# Files from MAST send the token in MAST_API_TOKEN (needed for exclusive access).\n",
    );
    s.push_str("# Usage: bash this-script [DIR]\n");
    s.push_str("set -euo pipefail\n");
    s.push_str("type -P curl >/dev/null || { echo 'This script requires curl.' >&2; exit 1; }\n");
    // The folder `plan --dest` named (else `.`), unless the script is given another.
    s.push_str("DIR=${1:-}\n");
    let _ = writeln!(
        s,
        "[ -n \"$DIR\" ] || DIR={}",
        sh_quote(plan.dir.as_deref().unwrap_or("."))
    );
    s.push_str("failed=0\n");
    s.push_str("fetch() { # dest url [token]\n");
    s.push_str("  local dest=\"$DIR/$1\"\n");
    s.push_str("  mkdir -p \"$(dirname \"$dest\")\"\n");
    s.push_str("  local auth=()\n");
    s.push_str("  if [ \"${3:-}\" = token ] && [ -n \"${MAST_API_TOKEN:-}\" ]; then\n");
    s.push_str("    auth=(-H \"Authorization: token $MAST_API_TOKEN\")\n");
    s.push_str("  fi\n");
    s.push_str("  curl --globoff --location --fail --retry 5 --retry-all-errors -C - \\\n");
    s.push_str(
        "    \"${auth[@]}\" --output \"$dest\" \"$2\" || { echo \"failed: $1\" >&2; failed=1; }\n",
    );
    s.push_str("}\n");
    for f in &plan.files {
        let token = if f.source == Source::Mast {
            " token"
        } else {
            ""
        };
        let _ = writeln!(s, "fetch {} {}{token}", sh_quote(&f.dest), sh_quote(&f.url));
    }
    s.push_str("exit $failed\n");
    out.write_all(s.as_bytes())
}
