//! Product names: what a MAST product URI or a JWST/HST file name tells us without asking anyone.
//!
//! Owns the naming rules that map a product file name to its MAST URI, its probable key in the
//! open-data bucket, its observation id (for the nested layout) and its product suffix (for
//! `--suffix`). A derived key is only a guess until a listing confirms it; this module never
//! talks to the network and never decides where a file lands on disk (that is `plan`).

use std::sync::LazyLock;

use regex::Regex;

/// The STScI open-data bucket, where the naming rules' keys live.
pub const ARCHIVE_BUCKET: &str = "stpubdata";

/// A product as named by the user or by MAST, before anything is confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// `mast:JWST/product/<file>` style URI.
    pub uri: String,
    /// Mission collection as MAST spells it (`JWST`, `HST`, ...).
    pub collection: String,
    pub filename: String,
}

/// What the naming rules derive for a known mission's file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// Probable key in the open-data bucket.
    pub key: String,
    /// Observation id as MAST shows it (the folder of the nested layout).
    pub obs_id: String,
}

/// JWST exposure-level products and guide-star files: `jw<ppppp><ooo><vvv>_...`.
static JWST_EXPOSURE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^jw(\d{5})(\d{3})(\d{3})_([^/]+)$").unwrap());
/// JWST level-3 products: `jw<ppppp>-<acid>_...` with `acid` `o###`, `c####`, `a####`, `r####`.
static JWST_LEVEL3: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^jw(\d{5})-([a-z]\d{3,4})_([^/]+)$").unwrap());
/// HST products: a 9-character dataset name, `_`, a suffix.
static HST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([a-z][a-z0-9]{8})_([a-z0-9_]+)\.([a-z0-9.]+)$").unwrap());
static MAST_URI: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^mast:([A-Za-z0-9_-]+)/product/(.+)$").unwrap());

/// Longest product name accepted: a file name on every file system we write to.
const MAX_NAME: usize = 255;

/// Whether `name` can be a MAST product file name (or one folder of a product URI's path):
/// MAST's names use letters, digits, `.`, `_`, `-` and `+`. Anything else (spaces, quotes,
/// control characters, a CSV row run together by an unterminated quote) is not one of its
/// products, and a leading dot or `..` would be a hidden or escaping path.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is a path, not a name"));
    }
    if name.starts_with('.') {
        return Err("starts with a dot".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("longer than {MAX_NAME} bytes"));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')))
    {
        Some(c) => Err(format!(
            "{} is not a character of MAST product names",
            crate::text::escape(&format!("{c:?}"))
        )),
        None => Ok(()),
    }
}

impl Product {
    /// Parse a `mast:<COLLECTION>/product/<file>` URI.
    pub fn from_uri(uri: &str) -> Option<Product> {
        let caps = MAST_URI.captures(uri)?;
        let path = &caps[2];
        // Some URIs carry a sub-path; the file name is what ends up on disk.
        let filename = path.rsplit('/').next().unwrap_or(path).to_string();
        Some(Product {
            uri: uri.to_string(),
            collection: caps[1].to_ascii_uppercase(),
            filename,
        })
    }

    /// A bare file name; the mission is inferred from the name (`jw...` is JWST).
    pub fn from_filename(filename: &str) -> Option<Product> {
        let collection = mission_of(filename)?;
        Some(Product {
            uri: format!("mast:{collection}/product/{filename}"),
            collection: collection.to_string(),
            filename: filename.to_string(),
        })
    }

    /// Derived key and observation id, for the missions whose naming rules we know.
    pub fn derive(&self) -> Option<Derived> {
        derive(&self.collection, &self.filename)
    }
}

/// The mission a bare file name belongs to, if its shape says so.
pub(crate) fn mission_of(filename: &str) -> Option<&'static str> {
    if JWST_EXPOSURE.is_match(filename) || JWST_LEVEL3.is_match(filename) {
        Some("JWST")
    } else if HST.is_match(&filename.to_ascii_lowercase()) {
        Some("HST")
    } else {
        None
    }
}

/// Key and observation id from the published naming rules (see mast-archive.md).
pub fn derive(collection: &str, filename: &str) -> Option<Derived> {
    match collection {
        "JWST" => {
            if let Some(c) = JWST_EXPOSURE.captures(filename) {
                let folder = format!("jw{}{}{}", &c[1], &c[2], &c[3]);
                return Some(Derived {
                    key: format!("jwst/public/jw{}/{folder}/{filename}", &c[1]),
                    obs_id: jwst_obs_id(filename),
                });
            }
            let c = JWST_LEVEL3.captures(filename)?;
            Some(Derived {
                key: format!("jwst/public/jw{}/L3/t/{}/{filename}", &c[1], &c[2]),
                obs_id: jwst_obs_id(filename),
            })
        }
        "HST" => {
            let lower = filename.to_ascii_lowercase();
            let c = HST.captures(&lower)?;
            let dataset = &c[1];
            Some(Derived {
                key: format!("hst/public/{}/{dataset}/{lower}", &dataset[..4]),
                obs_id: dataset.to_ascii_uppercase(),
            })
        }
        _ => None,
    }
}

/// Other keys the naming rules allow for a product, tried in the same listing pass as the
/// derived key. HST association products (`j8ck01041_drz.fits`) live in their association's
/// folder, whose id ends in `0` (`hst/public/j8ck/j8ck01040/`), while the name's own rootname
/// ends in another character (MAST's `get_cloud_uris` output shows this for ACS and WFC3).
pub(crate) fn alternate_keys(collection: &str, filename: &str) -> Vec<String> {
    if collection != "HST" {
        return Vec::new();
    }
    let lower = filename.to_ascii_lowercase();
    let Some(c) = HST.captures(&lower) else {
        return Vec::new();
    };
    let dataset = &c[1];
    if dataset.ends_with('0') {
        return Vec::new();
    }
    let association = format!("{}0", &dataset[..dataset.len() - 1]);
    vec![format!(
        "hst/public/{}/{association}/{lower}",
        &association[..4]
    )]
}

/// The observation a product found at `key` belongs to: an HST association product found in
/// its association's folder belongs to the association, otherwise the naming rules decide.
pub(crate) fn obs_id_at(collection: &str, filename: &str, key: &str) -> Option<String> {
    if alternate_keys(collection, filename)
        .iter()
        .any(|k| k == key)
    {
        return key.rsplit('/').nth(1).map(str::to_ascii_uppercase);
    }
    derive(collection, filename).map(|d| d.obs_id)
}

fn stem(filename: &str) -> &str {
    filename.split_once('.').map_or(filename, |(s, _)| s)
}

/// The observation a JWST file belongs to, as MAST names the folder of its bundles:
/// exposure files keep their first four `_` fields (`jw02733002001_02103_00001_mirimage`),
/// segments fold into their exposure, level-3 files keep `jw<p>-<acid>_<target>_<instr>_<optics>`,
/// guide-star files drop only their suffix.
fn jwst_obs_id(filename: &str) -> String {
    let stem = stem(filename);
    let fields: Vec<&str> = stem.split('_').collect();
    if fields.len() > 1 && fields[1].starts_with("gs-") {
        return fields[..fields.len() - 1].join("_");
    }
    if fields.len() > 4 {
        let mut obs = fields[..4].join("_");
        if let Some(pos) = obs.find("-seg") {
            let end = obs[pos + 4..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(obs.len(), |e| pos + 4 + e);
            obs.replace_range(pos..end, "");
        }
        return obs;
    }
    stem.to_string()
}

/// The product suffix `--suffix` matches: the last `_` field of the name, without extension
/// (`cal`, `i2d`, `crf`, `x1d`, `asn`, ...).
pub fn suffix(filename: &str) -> &str {
    let stem = stem(filename);
    stem.rsplit_once('_').map_or("", |(_, s)| s)
}

/// Guide-star products (`_gs-id`, `_gs-acq1`, `_gs-fg`, ...): most of a program's files, excluded
/// unless asked for.
pub(crate) fn is_guide_star(filename: &str) -> bool {
    filename.contains("_gs-")
}

/// JWST program number a file name belongs to (`jw02731...` -> 2731).
pub fn jwst_program(filename: &str) -> Option<u32> {
    let caps = JWST_EXPOSURE
        .captures(filename)
        .or_else(|| JWST_LEVEL3.captures(filename))?;
    caps[1].parse().ok()
}

/// MAST URI for an object found in the open-data bucket, when its key is a product key.
pub(crate) fn uri_for_key(key: &str) -> Option<Product> {
    let (collection, rest) = if let Some(rest) = key.strip_prefix("jwst/public/") {
        ("JWST", rest)
    } else if let Some(rest) = key.strip_prefix("hst/public/") {
        ("HST", rest)
    } else {
        return None;
    };
    let filename = rest.rsplit('/').next()?;
    let product = Product {
        uri: format!("mast:{collection}/product/{filename}"),
        collection: collection.to_string(),
        filename: filename.to_string(),
    };
    // Only when the rules map the name back to this very key is the URI trustworthy.
    let derived = product.derive()?.key;
    let known = derived == key
        || alternate_keys(collection, filename)
            .iter()
            .any(|k| k == key);
    known.then_some(product)
}

/// The folder a bucket key sits in, with its trailing `/` (the prefix of a shallow listing).
pub(crate) fn folder_of(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwst_exposure_key_and_obs_id() {
        let p = Product::from_filename("jw02731001001_02101_00001_nrcb1_cal.fits").unwrap();
        assert_eq!(
            p.uri,
            "mast:JWST/product/jw02731001001_02101_00001_nrcb1_cal.fits"
        );
        let d = p.derive().unwrap();
        assert_eq!(
            d.key,
            "jwst/public/jw02731/jw02731001001/jw02731001001_02101_00001_nrcb1_cal.fits"
        );
        assert_eq!(d.obs_id, "jw02731001001_02101_00001_nrcb1");
    }

    #[test]
    fn obs_id_matches_mast_bundle_folders() {
        // Folders as written by MAST's own bundle script for program 2733.
        let d = derive("JWST", "jw02733002001_02103_00001_mirimage_o002_crf.fits").unwrap();
        assert_eq!(d.obs_id, "jw02733002001_02103_00001_mirimage");
        let d = derive("JWST", "jw01409-o031_t014_nircam_clear-f212n_i2d.fits").unwrap();
        assert_eq!(d.obs_id, "jw01409-o031_t014_nircam_clear-f212n");
        let d = derive("JWST", "jw01234001001_01101_00001-seg002_nrcb1_cal.fits").unwrap();
        assert_eq!(d.obs_id, "jw01234001001_01101_00001_nrcb1");
    }

    #[test]
    fn jwst_level3_key() {
        let d = derive("JWST", "jw02727-o002_t062_nircam_clear-f277w_i2d.fits").unwrap();
        assert_eq!(
            d.key,
            "jwst/public/jw02727/L3/t/o002/jw02727-o002_t062_nircam_clear-f277w_i2d.fits"
        );
    }

    #[test]
    fn guide_star_files() {
        let f = "jw02731001001_gs-fg_2022166062113_cal.fits";
        assert!(is_guide_star(f));
        let d = derive("JWST", f).unwrap();
        assert_eq!(d.key, format!("jwst/public/jw02731/jw02731001001/{f}"));
        assert_eq!(d.obs_id, "jw02731001001_gs-fg_2022166062113");
    }

    #[test]
    fn hst_key_is_lower_case() {
        let p = Product::from_uri("mast:HST/product/u9o40504m_c3m.fits").unwrap();
        let d = p.derive().unwrap();
        assert_eq!(d.key, "hst/public/u9o4/u9o40504m/u9o40504m_c3m.fits");
        assert_eq!(d.obs_id, "U9O40504M");
        assert_eq!(mission_of("IC5O01020_drz.fits"), Some("HST"));
    }

    #[test]
    fn hst_association_products_may_sit_in_the_association_folder() {
        assert_eq!(
            alternate_keys("HST", "j8ck01041_drz.fits"),
            ["hst/public/j8ck/j8ck01040/j8ck01041_drz.fits"]
        );
        assert_eq!(
            alternate_keys("HST", "IBG705081_drz.fits"),
            ["hst/public/ibg7/ibg705080/ibg705081_drz.fits"]
        );
        // Already the association's own name: its folder is the derived one.
        assert!(alternate_keys("HST", "jbeveo010_drz.fits").is_empty());
        assert!(alternate_keys("JWST", "jw02731001001_02101_00001_nrcb1_cal.fits").is_empty());
        let p = uri_for_key("hst/public/j8ck/j8ck01040/j8ck01041_drz.fits").unwrap();
        assert_eq!(p.uri, "mast:HST/product/j8ck01041_drz.fits");
        assert!(uri_for_key("hst/public/j8ck/j8ck01050/j8ck01041_drz.fits").is_none());
        let key = "hst/public/j8ck/j8ck01040/j8ck01041_drz.fits";
        assert_eq!(
            obs_id_at("HST", "j8ck01041_drz.fits", key).as_deref(),
            Some("J8CK01040")
        );
    }

    #[test]
    fn suffixes() {
        assert_eq!(suffix("jw02731001001_02101_00001_nrcb1_cal.fits"), "cal");
        assert_eq!(
            suffix("jw02733002001_02103_00001_mirimage_o002_crf.fits"),
            "crf"
        );
        assert_eq!(
            suffix("jw02733-o002_20220614t1400_image3_00001_asn.json"),
            "asn"
        );
        assert_eq!(
            jwst_program("jw02733-o002_t001_miri_f1130w_i2d.fits"),
            Some(2733)
        );
    }

    #[test]
    fn unknown_names_are_not_guessed() {
        assert_eq!(mission_of("README.txt"), None);
        assert_eq!(mission_of("jw123_cal.fits"), None);
        assert!(Product::from_uri("s3://stpubdata/x").is_none());
        let other = Product::from_uri("mast:TESS/product/tess2018_lc.fits").unwrap();
        assert_eq!(other.collection, "TESS");
        assert!(other.derive().is_none());
    }

    #[test]
    fn keys_map_back_to_uris() {
        let k = "jwst/public/jw02731/jw02731001001/jw02731001001_02101_00001_nrcb1_cal.fits";
        assert_eq!(
            uri_for_key(k).unwrap().uri,
            "mast:JWST/product/jw02731001001_02101_00001_nrcb1_cal.fits"
        );
        assert!(uri_for_key("jwst/public/jw02731/other/readme.txt").is_none());
        assert!(uri_for_key("tess/public/x.fits").is_none());
    }
}
