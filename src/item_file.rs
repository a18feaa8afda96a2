//! The `@file` contents we recognise: one item per line, MAST curl download scripts (bundle
//! scripts with `Download/file?uri=` and Search UI scripts with `retrieve_product?product_name=`),
//! CSV exports with a `dataURI`/`Filename`/`productFilename` column, plan JSON lines and
//! manifests, each told from its first lines and parsed into [`Parsed`] items.
//!
//! Reading the file (its limits, binary or oversized files) is `input`'s.

use crate::item::{parse_one, product_from_url, wanted, Item, Parsed};
use crate::manifest;
use crate::names::Product;
use crate::plan::PlanEntry;
use crate::text;

/// Recognise what a file holds and parse it.
pub(crate) fn parse_file(text: &str, name: &str, out: &mut Parsed) {
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

pub(crate) const CSV_COLUMNS: [&str; 3] = ["dataURI", "productFilename", "Filename"];

pub(crate) fn is_csv_header(line: &str) -> bool {
    line.contains(',')
        && line
            .split(',')
            .any(|c| CSV_COLUMNS.contains(&c.trim().trim_matches('"')))
}

/// Curl scripts: every `curl` line (with its `\` continuations) that names a product URL;
/// the `--output` folder gives the observation id.
pub(crate) fn parse_curl_script(text: &str, name: &str, out: &mut Parsed) {
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
pub(crate) fn shell_words(line: &str) -> Vec<String> {
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
pub(crate) fn parse_jsonl(text: &str, name: &str, out: &mut Parsed) {
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

pub(crate) fn from_manifest(m: manifest::Entry, origin: &str, out: &mut Parsed) {
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
pub(crate) fn parse_csv(text: &str, name: &str, out: &mut Parsed) {
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
