//! MAST's JSON, read and written: the rows of an `invoke` page (tolerant of the older and the
//! newer column sets, odd types, and paths that could leave DIR), a `path_lookup` answer, and
//! the `Mast.Caom.Filtered` filters of a [`Query`]. Pure: the requests are `mast`'s.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use crate::query::{ProductRow, Query};

/// Instruments by mission, to read `--instrument` as a choice of collection.
const JWST_INSTRUMENTS: [&str; 5] = ["NIRCAM", "NIRSPEC", "NIRISS", "MIRI", "FGS"];
const HST_INSTRUMENTS: [&str; 12] = [
    "ACS", "WFC3", "STIS", "COS", "NICMOS", "WFPC2", "WFPC", "FOC", "FOS", "GHRS", "HSP", "FGS",
];

/// One `invoke` page, parsed.
pub(crate) struct Page {
    pub(crate) data: Vec<Value>,
    pub(crate) pages: Option<u64>,
}

pub(crate) type LookupMap = HashMap<String, Option<String>>;

pub(crate) fn parse_page(value: Value) -> Page {
    let pages = value
        .get("paging")
        .and_then(|p| p.get("pagesFiltered"))
        .and_then(as_u64);
    let data = match value {
        Value::Object(mut m) => match m.remove("data") {
            Some(Value::Array(rows)) => rows,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    Page { data, pages }
}

/// The `Mast.Caom.Filtered` filters of a query.
pub(crate) fn observation_filters(q: &Query) -> Vec<Value> {
    let mut filters = Vec::new();
    let collections = collections(q);
    if !collections.is_empty() {
        filters.push(json!({"paramName": "obs_collection", "values": collections}));
    }
    if !q.programs.is_empty() {
        let ids: Vec<String> = q.programs.iter().map(u32::to_string).collect();
        filters.push(json!({"paramName": "proposal_id", "values": ids}));
    }
    if let Some(pat) = &q.obs_id {
        let sql: String = pat
            .chars()
            .map(|c| match c {
                '*' => '%',
                '?' => '_',
                c => c,
            })
            .collect();
        filters.push(json!({"paramName": "obs_id", "values": [], "freeText": sql}));
    }
    filters
}

/// Which collections a query means (see the module notes); empty = unrestricted.
pub(crate) fn collections(q: &Query) -> Vec<&'static str> {
    if q.programs.is_empty() {
        return Vec::new();
    }
    let mut set = BTreeSet::new();
    for i in &q.instruments {
        let i = i.to_ascii_uppercase();
        if JWST_INSTRUMENTS.contains(&i.as_str()) {
            set.insert("JWST");
        }
        if HST_INSTRUMENTS.contains(&i.as_str()) {
            set.insert("HST");
        }
    }
    if set.is_empty() {
        set.insert("JWST");
    }
    set.into_iter().collect()
}

/// `NIRCAM/IMAGE` (or `NIRCAM/IMAGE;NIRISS/WFSS` for parallels) against `--instrument` names.
pub(crate) fn instrument_matches(wanted: &[String], name: Option<&str>) -> bool {
    let Some(name) = name else { return false };
    name.split([';', ','])
        .map(|part| part.split('/').next().unwrap_or("").trim())
        .any(|inst| wanted.iter().any(|w| w.eq_ignore_ascii_case(inst)))
}

pub(crate) fn str_field<'a>(row: &'a Value, name: &str) -> Option<&'a str> {
    row.get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

pub(crate) fn opt_string(row: &Value, name: &str) -> Option<String> {
    str_field(row, name).map(str::to_string)
}

/// A number that may come as an int, a float or a string (MAST's column types vary by table).
pub(crate) fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0)
                    .map(|f| f as u64)
            })
        }
        _ => None,
    }
}

pub(crate) fn int_field(row: &Value, name: &str) -> Option<u64> {
    row.get(name).and_then(as_u64)
}

/// An id column that may be a number or a string (`obsid`).
pub(crate) fn id_field(row: &Value, name: &str) -> Option<String> {
    match row.get(name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A file name fit to be a path component: MAST's answer is untrusted input.
pub(crate) fn safe_filename(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// One `Mast.Caom.Products` row, whatever column set and types its table uses. Rows without a
/// `dataURI` or a usable file name are dropped.
/// A product row that cannot be used, named for the user by what it has (cut short: a hostile
/// answer may be long).
pub(crate) fn describe_row(row: &Value) -> String {
    let name = str_field(row, "dataURI")
        .or_else(|| str_field(row, "productFilename"))
        .map_or_else(|| "(no dataURI)".to_string(), |s| format!("{s:?}"));
    name.chars().take(200).collect()
}

pub(crate) fn parse_product_row(row: &Value) -> Option<ProductRow> {
    let data_uri = str_field(row, "dataURI")?.to_string();
    let from_uri = data_uri.rsplit('/').next().unwrap_or("");
    let filename = str_field(row, "productFilename")
        .filter(|f| safe_filename(f))
        .or_else(|| Some(from_uri).filter(|f| safe_filename(f)))?
        .to_string();
    Some(ProductRow {
        filename,
        obs_id: opt_string(row, "obs_id"),
        obs_collection: opt_string(row, "obs_collection"),
        size: int_field(row, "size"),
        product_type: opt_string(row, "productType"),
        group: opt_string(row, "productGroupDescription"),
        subgroup: opt_string(row, "productSubGroupDescription"),
        calib_level: int_field(row, "calib_level").and_then(|l| u8::try_from(l).ok()),
        data_rights: opt_string(row, "dataRights").map(|s| s.to_ascii_uppercase()),
        data_uri,
    })
}

/// A `path_lookup` path as a bucket key, or `None` when it is not a plain relative key.
pub(crate) fn cloud_key(path: &str) -> Option<String> {
    let key = path.strip_prefix('/').unwrap_or(path);
    let ok = !key.is_empty()
        && !key.contains(['\\', '\0'])
        && key
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    ok.then(|| key.to_string())
}

/// A `path_lookup` answer for the URIs asked: found keys, `None` for the rest it answers.
pub(crate) fn parse_lookup(value: &Value, asked: &[String]) -> LookupMap {
    let mut out = HashMap::with_capacity(asked.len());
    let Some(obj) = value.as_object() else {
        return out;
    };
    for uri in asked {
        let Some(entry) = obj.get(uri) else {
            continue;
        };
        let found = entry.get("status_code").and_then(as_u64) == Some(200);
        let key = entry
            .get("path")
            .and_then(Value::as_str)
            .filter(|_| found)
            .and_then(cloud_key);
        out.insert(uri.clone(), key);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn hst_products_with_the_older_column_set() {
        let page = parse_page(fixture("products.json"));
        assert_eq!(page.pages, Some(1));
        let rows: Vec<ProductRow> = page.data.iter().filter_map(parse_product_row).collect();
        assert_eq!(rows.len(), 22);
        let first = &rows[0];
        assert_eq!(first.data_uri, "mast:HST/product/u9o40504m_c3m.fits");
        assert_eq!(first.filename, "u9o40504m_c3m.fits");
        assert_eq!(first.obs_id.as_deref(), Some("U9O40504M"));
        assert_eq!(first.obs_collection.as_deref(), Some("HST"));
        assert_eq!(first.size, Some(207_360));
        assert_eq!(first.product_type.as_deref(), Some("AUXILIARY"));
        assert_eq!(first.group, None);
        assert_eq!(first.subgroup.as_deref(), Some("C3M"));
        assert_eq!(first.calib_level, None);
        assert_eq!(first.data_rights, None);
        let science = rows
            .iter()
            .filter(|r| r.product_type.as_deref() == Some("SCIENCE"))
            .count();
        assert_eq!(science, 7);
    }

    #[test]
    fn jwst_level3_rows() {
        let v = fixture("viz_products_jw01039-o004_t001_miri_ch3-long_level3.json");
        let rows: Vec<ProductRow> = v["jw01039-o004_t001_miri_ch3-long"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(parse_product_row)
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            ProductRow {
                data_uri: "mast:JWST/product/jw01039-o004_t001_miri_ch3-long_s3d.fits".into(),
                filename: "jw01039-o004_t001_miri_ch3-long_s3d.fits".into(),
                obs_id: Some("jw01039-o004_t001_miri_ch3-long".into()),
                obs_collection: Some("JWST".into()),
                size: Some(370_405_440),
                product_type: Some("SCIENCE".into()),
                group: Some("Minimum Recommended Products".into()),
                subgroup: Some("S3D".into()),
                calib_level: Some(3),
                data_rights: Some("PUBLIC".into()),
            }
        );
        let q = Query {
            recommended: true,
            suffixes: vec!["x1d".into()],
            ..Default::default()
        };
        assert_eq!(rows.iter().filter(|r| q.accepts_row(r)).count(), 1);
    }

    #[test]
    fn odd_types_are_tolerated() {
        let row = json!({
            "dataURI": "mast:JWST/product/a_cal.fits",
            "size": "1234", "calib_level": "2", "dataRights": "exclusive_access",
            "somethingNew": [1, 2], "productGroupDescription": ""
        });
        let r = parse_product_row(&row).unwrap();
        assert_eq!(r.filename, "a_cal.fits");
        assert_eq!(r.size, Some(1234));
        assert_eq!(r.calib_level, Some(2));
        assert_eq!(r.data_rights.as_deref(), Some("EXCLUSIVE_ACCESS"));
        assert_eq!(r.group, None);
        let r = parse_product_row(&json!({"dataURI": "mast:X/product/b", "size": 5.0e3})).unwrap();
        assert_eq!(r.size, Some(5000));
        let r = parse_product_row(&json!({"dataURI": "mast:X/product/b", "size": null})).unwrap();
        assert_eq!(r.size, None);
        let r = parse_product_row(&json!({"dataURI": "mast:X/product/b", "size": -1})).unwrap();
        assert_eq!(r.size, None);
        assert!(parse_product_row(&json!({"productFilename": "x.fits"})).is_none());
        // A hostile file name falls back to the URI's last component, or drops the row.
        let r = parse_product_row(&json!({
            "dataURI": "mast:JWST/product/c.fits", "productFilename": "../../c.fits"
        }))
        .unwrap();
        assert_eq!(r.filename, "c.fits");
        assert!(parse_product_row(&json!({"dataURI": "mast:JWST/product/.."})).is_none());
    }

    #[test]
    fn path_lookup_answer() {
        let asked = vec![
            "mast:HST/product/u9o40504m_c3m.fits".to_string(),
            "mast:HST/product/does_not_exist.fits".to_string(),
            "mast:HST/product/not_answered.fits".to_string(),
        ];
        let m = parse_lookup(&fixture("mast_relative_path.json"), &asked);
        assert_eq!(
            m[&asked[0]].as_deref(),
            Some("hst/public/u9o4/u9o40504m/u9o40504m_c3m.fits")
        );
        assert_eq!(m[&asked[1]], None);
        assert!(!m.contains_key(&asked[2]));
    }

    #[test]
    fn untrusted_paths_are_refused() {
        for bad in [
            "/jwst/public/../../etc/passwd",
            "/jwst//x.fits",
            "/",
            "",
            "/jwst/a\\b.fits",
            "/jwst/a\0b",
            "/jwst/./x",
            "/jwst/x/",
        ] {
            assert_eq!(cloud_key(bad), None, "{bad:?}");
        }
        assert_eq!(
            cloud_key("/jwst/public/jw01/jw01..x.fits").as_deref(),
            Some("jwst/public/jw01/jw01..x.fits")
        );
        let v = json!({"u": {"status_code": 200, "path": "/jwst/../x"}});
        assert_eq!(parse_lookup(&v, &["u".into()])["u"], None);
        let v = json!({"u": {"status_code": "200", "path": "/jwst/x"}});
        assert_eq!(
            parse_lookup(&v, &["u".into()])["u"].as_deref(),
            Some("jwst/x")
        );
    }

    #[test]
    fn query_filters() {
        let q = Query {
            programs: vec![2733, 1039],
            obs_id: Some("jw02733*_?".into()),
            ..Default::default()
        };
        let f = observation_filters(&q);
        assert_eq!(
            f[0],
            json!({"paramName": "obs_collection", "values": ["JWST"]})
        );
        assert_eq!(
            f[1],
            json!({"paramName": "proposal_id", "values": ["2733", "1039"]})
        );
        assert_eq!(
            f[2],
            json!({"paramName": "obs_id", "values": [], "freeText": "jw02733%__"})
        );
        let hst = Query {
            programs: vec![8880],
            instruments: vec!["STIS".into()],
            ..Default::default()
        };
        assert_eq!(collections(&hst), ["HST"]);
        let both = Query {
            programs: vec![1],
            instruments: vec!["fgs".into()],
            ..Default::default()
        };
        assert_eq!(collections(&both), ["HST", "JWST"]);
        let by_obs = Query {
            obs_id: Some("u9o4*".into()),
            ..Default::default()
        };
        assert!(collections(&by_obs).is_empty());
    }

    #[test]
    fn instruments_match_by_prefix() {
        let want = vec!["NIRCAM".to_string(), "MIRI".to_string()];
        assert!(instrument_matches(&want, Some("NIRCAM/IMAGE")));
        assert!(instrument_matches(&want, Some("miri/ifu")));
        assert!(instrument_matches(&want, Some("NIRISS/WFSS;NIRCAM/IMAGE")));
        assert!(instrument_matches(&want, Some("MIRI")));
        assert!(!instrument_matches(&want, Some("NIRSPEC/MSA")));
        assert!(!instrument_matches(&want, Some("MIRIX/IMAGE")));
        assert!(!instrument_matches(&want, None));
    }
}
