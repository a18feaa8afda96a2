//! The SELECTION: what the user named, parsed into items the resolver understands.
//!
//! Owns the item forms (`mast:` URIs, bare product names, `s3://` prefixes, MAST download URLs)
//! and the `@file` contents we recognise: one item per line, MAST curl download scripts (bundle
//! scripts with `Download/file?uri=` and Search UI scripts with `retrieve_product?product_name=`),
//! CSV exports with a `dataURI`/`Filename`/`productFilename` column, plan JSON lines and
//! manifests. A bad item is a problem naming its input and line; the good ones proceed.

use std::io::Read;

use percent_encoding::percent_decode_str;

use crate::manifest;
use crate::names::{self, Product};
use crate::plan::{PlanEntry, Problem};
use crate::text;

/// A product wanted by name, with whatever its input said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub product: Product,
    /// Observation id from the input (CSV row, curl script folder), for the nested layout.
    pub obs_id: Option<String>,
    pub size: Option<u64>,
    pub access: Option<String>,
    /// Where the input says it lives in a bucket (manifests), still to be confirmed.
    pub key: Option<(String, String)>,
    /// Where it was named: `argument 2`, `list.txt:14`.
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    Product(Wanted),
    /// Every object under a prefix of a bucket.
    Prefix {
        bucket: String,
        prefix: String,
        origin: String,
    },
    /// Already resolved (plan JSON lines): taken as they are, so shards agree.
    Planned(PlanEntry),
}

#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub items: Vec<Item>,
    pub problems: Vec<Problem>,
}

/// An `@FILE` that cannot be read as a file of items: the whole run stops (exit 2), since
/// whatever it was meant to select is unknown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("cannot read {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{what}: not a text file (a NUL byte at byte {offset}); @FILE takes a list of items, a \
         MAST curl script, a CSV export, a plan or a manifest"
    )]
    NotText { what: String, offset: u64 },
    #[error("{what}: larger than {limit} bytes, the most an @FILE may hold")]
    TooLarge { what: String, limit: u64 },
    #[error("{what}:{line}: a line longer than {limit} bytes: not a file of items")]
    LineTooLong { what: String, line: u64, limit: u64 },
    #[error("{what}: more than {limit} lines, the most an @FILE may hold")]
    TooManyLines { what: String, limit: u64 },
}

/// How much an `@FILE` may hold. The defaults are far above any real list (a million products
/// is ~100 MB) and far below what would exhaust memory or drown a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_bytes: u64,
    pub max_line: u64,
    pub max_lines: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 30,
            max_line: 64 << 10,
            max_lines: 10_000_000,
        }
    }
}

impl Limits {
    /// The defaults, lowered (never raised) by `MASTFETCH_INPUT_MAX_BYTES`,
    /// `MASTFETCH_INPUT_MAX_LINE` and `MASTFETCH_INPUT_MAX_LINES` (for tests and tight hosts).
    pub(crate) fn from_env() -> Limits {
        let d = Limits::default();
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(default, |v| v.clamp(1, default))
        };
        Limits {
            max_bytes: var("MASTFETCH_INPUT_MAX_BYTES", d.max_bytes),
            max_line: var("MASTFETCH_INPUT_MAX_LINE", d.max_line),
            max_lines: var("MASTFETCH_INPUT_MAX_LINES", d.max_lines),
        }
    }
}

/// Bad lines of one @FILE echoed one by one; the rest are counted in one line (a binary file
/// or a wrong file would otherwise print one error per line).
const ECHOED_BAD_LINES: usize = 5;

impl Parsed {
    /// Keep a named product, unless its name is not one MAST could have given it: a refusal
    /// here names the input line, where a bad destination later could only name the URI.
    fn push_product(&mut self, w: Wanted) {
        let path = w
            .product
            .uri
            .split_once("/product/")
            .map_or(w.product.filename.as_str(), |(_, p)| p);
        let bad = std::iter::once(w.product.filename.as_str())
            .chain(path.split('/'))
            .find_map(|part| names::check_name(part).err());
        match bad {
            Some(why) => {
                let origin = w.origin.clone();
                self.problem(
                    &origin,
                    &w.product.uri,
                    format!("not a product name: {why}"),
                );
            }
            None => self.items.push(Item::Product(w)),
        }
    }

    fn problem(&mut self, origin: &str, item: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            item: format!("{}: {}", text::escape(origin), text::shown(item)),
            message: message.into(),
            entry: None,
        });
    }
}

/// Read an @FILE as text within `limits`, stopping at the first byte past one: a NUL (binary),
/// too many bytes, lines or bytes in a line. Invalid UTF-8 is replaced (and then fails as a
/// name); a leading BOM is dropped.
pub(crate) fn read_text(
    mut r: impl Read,
    what: &str,
    limits: &Limits,
) -> Result<String, ReadError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let (mut line_len, mut lines) = (0u64, 0u64);
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ReadError::Io {
                    what: what.to_string(),
                    source,
                })
            }
        };
        if buf.len() as u64 + n as u64 > limits.max_bytes {
            return Err(ReadError::TooLarge {
                what: what.to_string(),
                limit: limits.max_bytes,
            });
        }
        for (i, &b) in chunk[..n].iter().enumerate() {
            match b {
                0 => {
                    return Err(ReadError::NotText {
                        what: what.to_string(),
                        offset: (buf.len() + i) as u64,
                    })
                }
                b'\n' => {
                    lines += 1;
                    line_len = 0;
                    if lines > limits.max_lines {
                        return Err(ReadError::TooManyLines {
                            what: what.to_string(),
                            limit: limits.max_lines,
                        });
                    }
                }
                _ => {
                    line_len += 1;
                    if line_len > limits.max_line {
                        return Err(ReadError::LineTooLong {
                            what: what.to_string(),
                            line: lines + 1,
                            limit: limits.max_line,
                        });
                    }
                }
            }
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.strip_prefix('\u{FEFF}').unwrap_or(&text).to_string())
}

/// Parse the positional items; `@PATH` and `@-` read files (stdin) of items.
pub(crate) fn parse_items(args: &[String], limits: &Limits) -> Result<Parsed, ReadError> {
    let mut out = Parsed::default();
    for (i, arg) in args.iter().enumerate() {
        let origin = format!("argument {}", i + 1);
        if let Some(path) = arg.strip_prefix('@') {
            let (text, name) = if path == "-" {
                let text = read_text(std::io::stdin().lock(), "standard input", limits)?;
                (text, "stdin".to_string())
            } else {
                let file = std::fs::File::open(path).map_err(|source| ReadError::Io {
                    what: path.to_string(),
                    source,
                })?;
                (read_text(file, path, limits)?, path.to_string())
            };
            let before = out.problems.len();
            parse_file(&text, &name, &mut out);
            let bad = out.problems.len() - before;
            if bad > ECHOED_BAD_LINES {
                out.problems.truncate(before + ECHOED_BAD_LINES);
                out.problems.push(Problem {
                    item: text::escape(&name).into_owned(),
                    message: format!(
                        "{} more bad lines not shown ({bad} in all; is it a file of items?)",
                        bad - ECHOED_BAD_LINES
                    ),
                    entry: None,
                });
            }
        } else {
            parse_one(arg, &origin, &mut out);
        }
    }
    Ok(out)
}

/// One item string: `mast:` URI, `s3://` URL, MAST download URL, or bare product name.
fn parse_one(raw: &str, origin: &str, out: &mut Parsed) {
    let item = raw.trim();
    if let Some(rest) = item.strip_prefix("s3://") {
        return parse_s3(item, rest, origin, out);
    }
    if item.starts_with("mast:") {
        match Product::from_uri(item) {
            Some(product) => out.push_product(wanted(product, origin)),
            None => out.problem(
                origin,
                item,
                "not a MAST product URI (mast:<MISSION>/product/<file>)",
            ),
        }
        return;
    }
    if item.starts_with("https://") || item.starts_with("http://") {
        match product_from_url(item) {
            Some((product, obs_id)) => {
                let mut w = wanted(product, origin);
                w.obs_id = obs_id;
                out.push_product(w);
            }
            None => out.problem(
                origin,
                item,
                "not a MAST download URL (no uri= or product_name=)",
            ),
        }
        return;
    }
    parse_name(item, origin, out);
}

/// An `s3://bucket/prefix` item (`rest` is what follows `s3://`): every object under it.
fn parse_s3(item: &str, rest: &str, origin: &str, out: &mut Parsed) {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        out.problem(
            origin,
            item,
            "an s3:// item needs a bucket: s3://stpubdata/jwst/...",
        );
        return;
    }
    // The archive's bucket holds petabytes: all of it is never what was meant. Another
    // bucket (a mirror, a test server) may be taken whole.
    if prefix.trim_matches('/').is_empty() && bucket == crate::names::ARCHIVE_BUCKET {
        out.problem(
            origin,
            item,
            "a whole bucket (petabytes, for stpubdata): name a prefix, e.g. \
             s3://stpubdata/jwst/public/jw02731/",
        );
        return;
    }
    out.items.push(Item::Prefix {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        origin: origin.to_string(),
    });
}

/// A bare product file name.
fn parse_name(item: &str, origin: &str, out: &mut Parsed) {
    if item.contains('/') || item.contains('\\') {
        out.problem(
            origin,
            item,
            "not a product file name, mast: URI or s3:// URL (a path? give the file name alone)",
        );
        return;
    }
    if let Err(why) = names::check_name(item) {
        out.problem(origin, item, format!("not a product name: {why}"));
        return;
    }
    match Product::from_filename(item) {
        Some(product) => out.push_product(wanted(product, origin)),
        None => out.problem(
            origin,
            item,
            "cannot tell the mission from this file name; give a mast:<MISSION>/product/<file> URI",
        ),
    }
}

fn wanted(product: Product, origin: &str) -> Wanted {
    Wanted {
        product,
        obs_id: None,
        size: None,
        access: None,
        key: None,
        origin: origin.to_string(),
    }
}

/// A product named by a MAST download URL: `...Download/file?...uri=<uri>` or
/// `.../search/<mission>/api/.../retrieve_product?product_name=<DATASET>%2F<file>`.
fn product_from_url(url: &str) -> Option<(Product, Option<String>)> {
    let (path, query) = url.split_once('?')?;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode_str(v).decode_utf8_lossy();
        if k == "uri" {
            return Product::from_uri(&v).map(|p| (p, None));
        }
        if k == "product_name" {
            let (dataset, file) = v.split_once('/')?;
            let mission = path.split('/').skip_while(|s| *s != "search").nth(1)?;
            let collection = mission.to_ascii_uppercase();
            let product = Product {
                uri: format!("mast:{collection}/product/{file}"),
                collection,
                filename: file.to_string(),
            };
            return Some((product, Some(dataset.to_string())));
        }
    }
    None
}

/// Recognise what a file holds and parse it.
fn parse_file(text: &str, name: &str, out: &mut Parsed) {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && (!l.starts_with('#') || l.starts_with("#!")))
        .unwrap_or("");
    if text.lines().any(|l| l.trim_start().starts_with("curl ")) || first.starts_with("#!") {
        parse_curl_script(text, name, out);
    } else if first.starts_with('{') {
        parse_jsonl(text, name, out);
    } else if is_csv_header(first) {
        parse_csv(text, name, out);
    } else {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let origin = format!("{name}:{}", i + 1);
            if line.starts_with('@') {
                out.problem(&origin, line, "@files inside @files are not followed");
                continue;
            }
            parse_one(line, &origin, out);
        }
    }
}

const CSV_COLUMNS: [&str; 3] = ["dataURI", "productFilename", "Filename"];

fn is_csv_header(line: &str) -> bool {
    line.contains(',')
        && line
            .split(',')
            .any(|c| CSV_COLUMNS.contains(&c.trim().trim_matches('"')))
}

/// Curl scripts: every `curl` line (with its `\` continuations) that names a product URL;
/// the `--output` folder gives the observation id.
fn parse_curl_script(text: &str, name: &str, out: &mut Parsed) {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let start = i;
        let mut cmd = lines[i].trim().to_string();
        while cmd.ends_with('\\') && i + 1 < lines.len() {
            cmd.pop();
            i += 1;
            cmd.push(' ');
            cmd.push_str(lines[i].trim());
        }
        i += 1;
        if !cmd.starts_with("curl ") {
            continue;
        }
        let origin = format!("{name}:{}", start + 1);
        let words = shell_words(&cmd);
        let url = words.iter().find(|w| {
            (w.starts_with("https://") || w.starts_with("http://"))
                && (w.contains("uri=") || w.contains("product_name="))
        });
        let Some(url) = url else {
            // The Search UI script's manifest-only POST and similar lines are not products.
            if !cmd.contains("manifestonly") && !cmd.contains("-X POST") {
                out.problem(&origin, &cmd, "curl line without a MAST product URL");
            }
            continue;
        };
        let Some((product, dataset)) = product_from_url(url) else {
            out.problem(&origin, url, "no MAST product URI in this URL");
            continue;
        };
        let output = words
            .iter()
            .position(|w| w == "--output" || w == "-o")
            .and_then(|p| words.get(p + 1));
        // `.../<COLLECTION>/<obs_id>/<file>`: the folder is the observation id.
        let obs_id = output
            .and_then(|o| {
                let mut parts = o.rsplit('/');
                parts.next();
                parts.next().map(str::to_string)
            })
            .filter(|o| !o.is_empty() && !o.contains('$') && o != "." && o != "..")
            .or(dataset);
        let mut w = wanted(product, &origin);
        w.obs_id = obs_id;
        out.push_product(w);
    }
}

/// Split a shell command line into words: single and double quotes, backslash escapes.
/// Enough for the scripts MAST writes; variables stay as written.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        _ => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Plan JSON lines are taken as planned; manifest lines are products to fetch again.
fn parse_jsonl(text: &str, name: &str, out: &mut Parsed) {
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        parse_jsonl_line(line, &format!("{name}:{}", i + 1), out);
    }
}

/// One line of a plan or a manifest (also used by shards that stream a plan file).
pub(crate) fn parse_jsonl_line(line: &str, origin: &str, out: &mut Parsed) {
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            out.problem(origin, line, format!("not JSON: {e}"));
            return;
        }
    };
    if value.get("dest").is_some() {
        match serde_json::from_value::<PlanEntry>(value) {
            Ok(p) => out.items.push(Item::Planned(p)),
            Err(e) => out.problem(origin, line, format!("not a plan line: {e}")),
        }
    } else if value.get("path").is_some() && value.get("status").is_some() {
        match serde_json::from_value::<manifest::Entry>(value) {
            Ok(m) => from_manifest(m, origin, out),
            Err(e) => out.problem(origin, line, format!("not a manifest line: {e}")),
        }
    } else {
        out.problem(
            origin,
            line,
            "neither a plan line (dest) nor a manifest line (path, status)",
        );
    }
}

fn from_manifest(m: manifest::Entry, origin: &str, out: &mut Parsed) {
    if let Some(product) = Product::from_uri(&m.uri) {
        let mut w = wanted(product, origin);
        // The manifest's folder is a destination, not a MAST fact; the key is worth confirming.
        w.key = m.bucket.zip(m.key);
        w.access = m.access;
        out.push_product(w);
    } else if let (Some(bucket), Some(key)) = (m.bucket, m.key) {
        out.items.push(Item::Prefix {
            bucket,
            prefix: key,
            origin: origin.to_string(),
        });
    } else {
        out.problem(
            origin,
            &m.uri,
            "manifest line with neither a mast: URI nor a bucket key",
        );
    }
}

/// Portal and astroquery CSV exports: `dataURI` preferred, else a file name column.
fn parse_csv(text: &str, name: &str, out: &mut Parsed) {
    // Skip comment lines before the header (some exports carry them); keep line numbers right.
    let skipped = text
        .lines()
        .take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        .count();
    let body: String = text.lines().skip(skipped).collect::<Vec<_>>().join("\n");
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body.as_bytes());
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            out.problem(name, "header", format!("unreadable CSV header: {e}"));
            return;
        }
    };
    let cols = Columns::of(&headers);
    for (i, rec) in rdr.records().enumerate() {
        // The reader's own line numbers: a quoted field may span lines.
        let at = match &rec {
            Ok(r) => r.position(),
            Err(e) => e.position(),
        };
        let line = skipped + at.map_or(i + 2, |p| p.line() as usize);
        let origin = format!("{name}:{line}");
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                out.problem(&origin, "row", format!("unreadable CSV row: {e}"));
                continue;
            }
        };
        let get = |c: Option<usize>| c.and_then(|c| rec.get(c)).filter(|v| !v.is_empty());
        let named = get(cols.uri).or(get(cols.file));
        if let Some(v) = named.filter(|v| v.contains('\n')) {
            out.problem(
                &origin,
                v,
                "not a product name: it spans lines (an unterminated quote?)",
            );
            continue;
        }
        match cols.product(&get) {
            Ok(product) => {
                if product.filename.contains('\\') || product.filename.is_empty() {
                    out.problem(&origin, &product.uri, "not a usable file name");
                    continue;
                }
                let mut w = wanted(product, &origin);
                w.obs_id = get(cols.obs_id).map(str::to_string);
                w.size = get(cols.size).and_then(|s| s.parse().ok());
                w.access = get(cols.rights).map(str::to_string);
                out.push_product(w);
            }
            Err(msg) => out.problem(&origin, "row", msg),
        }
    }
}

/// Where a CSV export keeps what we read (columns by header name; any may be absent).
struct Columns {
    uri: Option<usize>,
    file: Option<usize>,
    obs_id: Option<usize>,
    size: Option<usize>,
    rights: Option<usize>,
    collection: Option<usize>,
}

impl Columns {
    fn of(headers: &csv::StringRecord) -> Columns {
        let col = |n: &str| headers.iter().position(|h| h == n);
        Columns {
            uri: col("dataURI"),
            file: col("productFilename").or_else(|| col("Filename")),
            obs_id: col("obs_id"),
            size: col("size"),
            rights: col("dataRights"),
            collection: col("obs_collection"),
        }
    }

    /// A row's product (`get` reads a column of it): its `dataURI`, else its file name in
    /// its collection (or the mission the name tells).
    fn product<'r>(
        &self,
        get: &impl Fn(Option<usize>) -> Option<&'r str>,
    ) -> Result<Product, String> {
        if let Some(uri) = get(self.uri) {
            return Product::from_uri(uri)
                .ok_or_else(|| format!("not a MAST product URI: {}", text::shown(uri)));
        }
        let Some(file) = get(self.file) else {
            return Err("no dataURI or file name in this row".to_string());
        };
        match get(self.collection) {
            Some(coll) => Ok(Product {
                uri: format!("mast:{}/product/{file}", coll.to_ascii_uppercase()),
                collection: coll.to_ascii_uppercase(),
                filename: file.to_string(),
            }),
            None => Product::from_filename(file)
                .ok_or_else(|| format!("cannot tell the mission of {}", text::shown(file))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn uris(p: &Parsed) -> Vec<String> {
        p.items
            .iter()
            .filter_map(|i| match i {
                Item::Product(w) => Some(w.product.uri.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn items_of_every_kind() {
        let mut p = Parsed::default();
        parse_one(
            "mast:JWST/product/jw02731001001_02101_00001_nrcb1_cal.fits",
            "a",
            &mut p,
        );
        parse_one("jw02731001001_02101_00001_nrcb1_i2d.fits", "b", &mut p);
        parse_one("s3://stpubdata/jwst/public/jw02731/", "c", &mut p);
        parse_one("../../etc/passwd", "d", &mut p);
        parse_one("notaproduct.txt", "e", &mut p);
        parse_one("s3:///x", "f", &mut p);
        assert_eq!(p.items.len(), 3);
        assert_eq!(p.problems.len(), 3);
        assert!(p.problems[0].item.starts_with("d: "));
        assert!(matches!(&p.items[2], Item::Prefix { bucket, prefix, .. }
            if bucket == "stpubdata" && prefix == "jwst/public/jw02731/"));
    }

    #[test]
    fn bundle_script() {
        let mut p = Parsed::default();
        parse_file(
            &fixture("portal_bundle_mastDownload_20230125125957_EXCERPT.sh.txt"),
            "b.sh",
            &mut p,
        );
        assert_eq!(
            uris(&p),
            [
                "mast:JWST/product/jw02733002001_02103_00001_mirimage_o002_crf.fits",
                "mast:JWST/product/jw02733002001_02103_00001_mirimage_cal.fits"
            ]
        );
        let Item::Product(w) = &p.items[0] else {
            panic!()
        };
        assert_eq!(
            w.obs_id.as_deref(),
            Some("jw02733002001_02103_00001_mirimage")
        );
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    }

    #[test]
    fn eap_script_with_continuations() {
        let mut p = Parsed::default();
        parse_file(
            &fixture("docs_example_EAP_curl_block_MAST_2022-04-30T2153.txt"),
            "e.sh",
            &mut p,
        );
        assert_eq!(
            uris(&p),
            ["mast:JWST/product/jw01409-o031_t014_nircam_clear-f212n_i2d.fits"]
        );
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    }

    #[test]
    fn search_ui_script() {
        let mut p = Parsed::default();
        parse_file(
            &fixture("mast_search_ui_hst_MAST_2024-10-01_EXCERPT.sh.txt"),
            "s.sh",
            &mut p,
        );
        assert_eq!(
            uris(&p),
            [
                "mast:HST/product/ic5o01020_asn.fits",
                "mast:HST/product/ic5o01020_drz.fits"
            ]
        );
        let Item::Product(w) = &p.items[0] else {
            panic!()
        };
        assert_eq!(w.obs_id.as_deref(), Some("IC5O01020"));
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    }

    #[test]
    fn portal_csv_with_a_bad_row() {
        let csv = "obs_id,dataURI,size,dataRights\n\
                   jw02733002001_02103_00001_mirimage,mast:JWST/product/jw02733002001_02103_00001_mirimage_cal.fits,123,PUBLIC\n\
                   x,http://nope,1,PUBLIC\n\
                   jw01,\"mast:JWST/product/jw01409-o031_t014_nircam_clear-f212n_i2d.fits\",5,EXCLUSIVE_ACCESS\n";
        let mut p = Parsed::default();
        parse_file(csv, "t.csv", &mut p);
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.problems.len(), 1);
        assert!(
            p.problems[0].item.starts_with("t.csv:3"),
            "{:?}",
            p.problems
        );
        let Item::Product(w) = &p.items[1] else {
            panic!()
        };
        assert_eq!(w.access.as_deref(), Some("EXCLUSIVE_ACCESS"));
        assert_eq!(w.size, Some(5));
    }

    #[test]
    fn filename_csv_from_astroquery() {
        let csv = "obsID,productFilename,size\n1,jw02731001001_02101_00001_nrcb1_cal.fits,10\n";
        let mut p = Parsed::default();
        parse_file(csv, "a.csv", &mut p);
        assert_eq!(
            uris(&p),
            ["mast:JWST/product/jw02731001001_02101_00001_nrcb1_cal.fits"]
        );
    }

    #[test]
    fn list_file_with_comments_and_line_numbers() {
        let mut p = Parsed::default();
        parse_file(
            "# my list\n\njw02731001001_02101_00001_nrcb1_cal.fits\nbad/name\n",
            "l.txt",
            &mut p,
        );
        assert_eq!(p.items.len(), 1);
        assert!(p.problems[0].item.starts_with("l.txt:4"));
    }

    #[test]
    fn shell_words_quotes() {
        assert_eq!(
            shell_words(
                r#"curl -H "Authorization: token $T" --output ./${D}'/JWST/o/f.fits' 'https://x?uri=mast:JWST/product/f.fits'"#
            ),
            [
                "curl",
                "-H",
                "Authorization: token $T",
                "--output",
                "./${D}/JWST/o/f.fits",
                "https://x?uri=mast:JWST/product/f.fits"
            ]
        );
    }
}
