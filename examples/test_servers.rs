//! The local S3 server and the MAST stand-in of the integration tests, started together from a
//! catalog given as JSON, for tests that drive mastfetch from outside Rust (the Python
//! package's tests in tests/python/).
//!
//! `cargo run --example test_servers -- CATALOG.json` prints `endpoint=http://127.0.0.1:P` (S3,
//! bucket `stpubdata`) and `mast_url=http://127.0.0.1:Q/`, then `ready`, and serves until it is
//! killed or its standard input closes. Every product with a cloud key is also put in the
//! bucket, with the same bytes MAST serves. The catalog:
//!
//! ```json
//! {"token": "the one valid MAST token",
//!  "observations": [{"obsid": 1, "obs_id": "jw02731001001_02101_00001_nrcb1",
//!                    "instrument_name": "NIRCAM/IMAGE", "proposal_id": "2731", "calib_level": 2}],
//!  "products": [{"uri": "mast:JWST/product/jw02731001001_02101_00001_nrcb1_cal.fits",
//!                "listed_under": [1], "size": 3000, "data_rights": "PUBLIC"}]}
//! ```
//!
//! Omitted product fields follow the naming rules: file name from the URI, `obs_id`,
//! `obs_collection` and cloud key derived from the name, type SCIENCE, subgroup from the suffix.
//! `"in_bucket": false` keeps a product out of the bucket (MAST only); exclusive-access products
//! are never in it.

#[path = "../tests/it/mast_server.rs"]
mod mast_server;
#[path = "../tests/it/s3server.rs"]
mod s3server;

use std::io::Read;

use serde::Deserialize;

const BUCKET: &str = "stpubdata";

#[derive(Deserialize)]
struct Spec {
    #[serde(default)]
    token: String,
    #[serde(default)]
    observations: Vec<ObservationSpec>,
    products: Vec<ProductSpec>,
}

#[derive(Deserialize)]
struct ObservationSpec {
    obsid: u64,
    obs_id: String,
    #[serde(default = "jwst")]
    obs_collection: String,
    #[serde(default)]
    instrument_name: String,
    #[serde(default)]
    proposal_id: String,
    #[serde(default)]
    calib_level: u8,
}

#[derive(Deserialize)]
struct ProductSpec {
    uri: String,
    filename: Option<String>,
    obs_id: Option<String>,
    obs_collection: Option<String>,
    #[serde(default)]
    listed_under: Vec<u64>,
    product_type: Option<String>,
    group: Option<String>,
    subgroup: Option<String>,
    calib_level: Option<u8>,
    #[serde(default = "public")]
    data_rights: String,
    #[serde(default)]
    proposal_id: String,
    #[serde(default = "default_size")]
    size: usize,
    cloud_key: Option<String>,
    #[serde(default = "yes")]
    in_bucket: bool,
}

fn jwst() -> String {
    "JWST".into()
}
fn public() -> String {
    "PUBLIC".into()
}
fn default_size() -> usize {
    4096
}
fn yes() -> bool {
    true
}

/// The bytes of a product: deterministic from its URI, so reruns serve the same object.
fn bytes_of(uri: &str, size: usize) -> Vec<u8> {
    let seed = uri
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut v = vec![0u8; size];
    fastrand::Rng::with_seed(seed).fill(&mut v);
    v
}

fn product(p: ProductSpec) -> Result<mast_server::Product, String> {
    let named = mastfetch::names::Product::from_uri(&p.uri);
    let filename = p
        .filename
        .or_else(|| named.as_ref().map(|n| n.filename.clone()))
        .ok_or_else(|| format!("{}: no file name", p.uri))?;
    let collection = p
        .obs_collection
        .or_else(|| named.as_ref().map(|n| n.collection.clone()))
        .unwrap_or_else(jwst);
    let derived = mastfetch::names::derive(&collection, &filename);
    let exclusive = p.data_rights == "EXCLUSIVE_ACCESS";
    let cloud_key = if p.in_bucket && !exclusive {
        p.cloud_key
            .or_else(|| derived.as_ref().map(|d| d.key.clone()))
    } else {
        None
    };
    Ok(mast_server::Product {
        data: bytes_of(&p.uri, p.size),
        obs_id: p
            .obs_id
            .or_else(|| derived.map(|d| d.obs_id))
            .ok_or_else(|| format!("{}: no obs_id", p.uri))?,
        subgroup: p
            .subgroup
            .unwrap_or_else(|| mastfetch::names::suffix(&filename).to_ascii_uppercase()),
        uri: p.uri,
        filename,
        obs_collection: collection,
        listed_under: p.listed_under,
        product_type: p.product_type.unwrap_or_else(|| "SCIENCE".into()),
        group: p.group,
        calib_level: p.calib_level.unwrap_or(2),
        data_rights: p.data_rights,
        proposal_id: p.proposal_id,
        cloud_key,
    })
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: test_servers CATALOG.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let spec: Spec = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let catalog = mast_server::Catalog {
        observations: spec
            .observations
            .into_iter()
            .map(|o| mast_server::Observation {
                obsid: o.obsid,
                obs_id: o.obs_id,
                obs_collection: o.obs_collection,
                instrument_name: o.instrument_name,
                proposal_id: o.proposal_id,
                calib_level: o.calib_level,
            })
            .collect(),
        products: spec
            .products
            .into_iter()
            .map(product)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{path}: {e}")),
    };
    let s3 = s3server::TestS3::start(&[BUCKET]);
    for p in &catalog.products {
        if let Some(key) = &p.cloud_key {
            s3.put(BUCKET, key, &p.data);
        }
    }
    let mast = mast_server::MastServer::start(catalog, &spec.token);
    println!("endpoint={}", s3.endpoint);
    println!("mast_url={}", mast.url);
    println!("ready");
    // Serve until whoever started us closes our stdin (or kills us).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
