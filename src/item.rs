//! One item of a SELECTION: `mast:` URIs, bare product names, `s3://` prefixes and MAST
//! download URLs, parsed into what the resolver understands.
//!
//! Owns [`Wanted`], [`Item`] and [`Parsed`] (items and problems, a bad item a problem naming
//! its input and line), and the rule that a product name is one MAST could have given. Where
//! items come from (arguments, `@files`) is `input`'s; the `@file` formats are `item_file`'s.

use percent_encoding::percent_decode_str;

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

impl Parsed {
    /// Keep a named product, unless its name is not one MAST could have given it: a refusal
    /// here names the input line, where a bad destination later could only name the URI.
    pub(crate) fn push_product(&mut self, w: Wanted) {
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

    pub(crate) fn problem(&mut self, origin: &str, item: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            item: format!("{}: {}", text::escape(origin), text::shown(item)),
            message: message.into(),
            entry: None,
        });
    }
}

/// One item string: `mast:` URI, `s3://` URL, MAST download URL, or bare product name.
pub(crate) fn parse_one(raw: &str, origin: &str, out: &mut Parsed) {
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
pub(crate) fn parse_s3(item: &str, rest: &str, origin: &str, out: &mut Parsed) {
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
pub(crate) fn parse_name(item: &str, origin: &str, out: &mut Parsed) {
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

pub(crate) fn wanted(product: Product, origin: &str) -> Wanted {
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
pub(crate) fn product_from_url(url: &str) -> Option<(Product, Option<String>)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
