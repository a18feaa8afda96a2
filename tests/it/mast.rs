//! Issue 3, the MAST side, end to end: the real binary against the in-process S3 server and the
//! MAST stand-in. Queries answered by MAST (observations, then products), downloads split
//! between the bucket and MAST HTTPS, the token's path (only to MAST's downloads and whoami,
//! never into any output), batched path lookups, EXECUTING/paging/5xx handling, the query
//! filters, the `auto` catalog, and curl-script/CSV inputs.

use std::path::Path;
use std::process::Output;
use std::time::Instant;

use serde_json::Value;

use crate::mast_server::{Catalog, Fault, Kind, MastServer, Observation, Product, Target};
use crate::s3server::TestS3;
use crate::util::{self, code, show};

const TOKEN: &str = "mtk-7f3a9c0e5b1d42f8a6e2-SECRET";
const BUCKET: &str = "stpubdata";
const OBSERVATIONS: &str = "Mast.Caom.Filtered";
const PRODUCTS: &str = "Mast.Caom.Products";

// Observations of program 1234 (and neighbours that a query for it must not pick up).
const O_NRC1: u64 = 1001;
const O_NRC2: u64 = 1002;
const O_MIRI: u64 = 1003;
const O_L3: u64 = 1100;
const O_HST: u64 = 2001;
const O_OTHER: u64 = 3001;

const NRC1_CAL: &str = "jw01234001001_02101_00001_nrcb1_cal.fits";
const NRC2_CAL: &str = "jw01234001001_02101_00002_nrcb1_cal.fits";
const MIRI_CAL: &str = "jw01234002001_02101_00001_mirimage_cal.fits";
const GS_CAL: &str = "jw01234001001_gs-fg_2022166062113_cal.fits";
const L3_I2D: &str = "jw01234-o001_t001_nircam_clear-f200w_i2d.fits";

/// The query most tests ask: program 1234's level-2 cal files, answered by MAST.
const CAL_QUERY: [&str; 8] = [
    "--program",
    "1234",
    "--calib-level",
    "2",
    "--suffix",
    "cal",
    "--catalog",
    "mast",
];

/// `command` with `CAL_QUERY`, then `rest`.
fn cal_args<'a>(command: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    std::iter::once(command)
        .chain(CAL_QUERY)
        .chain(rest.iter().copied())
        .collect()
}

fn uri(filename: &str) -> String {
    format!("mast:JWST/product/{filename}")
}

fn obs(obsid: u64, obs_id: &str, instrument: &str, level: u8) -> Observation {
    Observation {
        obsid,
        obs_id: obs_id.into(),
        obs_collection: "JWST".into(),
        instrument_name: instrument.into(),
        proposal_id: "1234".into(),
        calib_level: level,
    }
}

/// A public JWST product in the bucket at its derived key, typed the way MAST types its suffix.
fn jwst(filename: &str, listed_under: &[u64]) -> Product {
    let d = mastfetch::names::derive("JWST", filename).expect("a JWST name");
    let suffix = mastfetch::names::suffix(filename).to_ascii_uppercase();
    let level = match suffix.as_str() {
        "UNCAL" => 1,
        "I2D" | "CAT" | "SEGM" | "S3D" | "X1D" => 3,
        _ => 2,
    };
    let recommended = matches!(suffix.as_str(), "CAL" | "I2D" | "X1D" | "S3D");
    let seed = filename
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    Product {
        uri: uri(filename),
        filename: filename.into(),
        obs_id: d.obs_id,
        obs_collection: "JWST".into(),
        listed_under: listed_under.to_vec(),
        product_type: if suffix == "CAT" {
            "CATALOG"
        } else {
            "SCIENCE"
        }
        .into(),
        group: recommended.then(|| "Minimum Recommended Products".to_string()),
        subgroup: suffix,
        calib_level: level,
        data_rights: "PUBLIC".into(),
        proposal_id: "1234".into(),
        data: util::data(seed, 3000 + (seed % 5000) as usize),
        cloud_key: Some(d.key),
    }
}

fn exclusive(mut p: Product) -> Product {
    p.data_rights = "EXCLUSIVE_ACCESS".into();
    p.cloud_key = None;
    p
}

fn not_in_bucket(mut p: Product) -> Product {
    p.cloud_key = None;
    p
}

/// Program 1234: two NIRCam exposures (the second exclusive access), a MIRI exposure whose cal
/// file is not in the bucket yet, a level-3 observation relisting a cal file (a duplicate), a
/// guide-star file, previews; plus an HST observation sharing the proposal id and another
/// program, which a query for JWST program 1234 must leave out.
fn catalog() -> Catalog {
    let mut gs = jwst(GS_CAL, &[O_NRC1]);
    gs.product_type = "AUXILIARY".into();
    gs.subgroup = "GS-FG".into();
    gs.group = None;
    let mut thumb = jwst("jw01234001001_02101_00001_nrcb1_cal_thumb.jpg", &[O_NRC1]);
    thumb.product_type = "THUMBNAIL".into();
    thumb.group = None;
    let mut hst = jwst("jw01234003001_02101_00001_nrcb1_cal.fits", &[O_HST]);
    hst.uri = "mast:HST/product/u9o40504m_c0m.fits".into();
    hst.filename = "u9o40504m_c0m.fits".into();
    hst.obs_id = "U9O40504M".into();
    hst.obs_collection = "HST".into();
    hst.subgroup = "C0M".into();
    hst.cloud_key = Some("hst/public/u9o4/u9o40504m/u9o40504m_c0m.fits".into());
    let mut other = jwst("jw09999001001_02101_00001_nrca1_cal.fits", &[O_OTHER]);
    other.proposal_id = "9999".into();
    Catalog {
        observations: vec![
            obs(O_NRC1, "jw01234001001_02101_00001_nrcb1", "NIRCAM/IMAGE", 2),
            obs(O_NRC2, "jw01234001001_02101_00002_nrcb1", "NIRCAM/IMAGE", 2),
            obs(
                O_MIRI,
                "jw01234002001_02101_00001_mirimage",
                "MIRI/IMAGE",
                2,
            ),
            obs(
                O_L3,
                "jw01234-o001_t001_nircam_clear-f200w",
                "NIRCAM/IMAGE",
                3,
            ),
            Observation {
                obs_collection: "HST".into(),
                instrument_name: "WFPC2/WFC".into(),
                ..obs(O_HST, "U9O40504M", "", 2)
            },
            Observation {
                proposal_id: "9999".into(),
                ..obs(
                    O_OTHER,
                    "jw09999001001_02101_00001_nrca1",
                    "NIRCAM/IMAGE",
                    2,
                )
            },
        ],
        products: vec![
            jwst("jw01234001001_02101_00001_nrcb1_uncal.fits", &[O_NRC1]),
            jwst("jw01234001001_02101_00001_nrcb1_rate.fits", &[O_NRC1]),
            jwst(NRC1_CAL, &[O_NRC1, O_L3]),
            gs,
            thumb,
            exclusive(jwst("jw01234001001_02101_00002_nrcb1_rate.fits", &[O_NRC2])),
            exclusive(jwst(NRC2_CAL, &[O_NRC2])),
            jwst("jw01234002001_02101_00001_mirimage_rate.fits", &[O_MIRI]),
            not_in_bucket(jwst(MIRI_CAL, &[O_MIRI])),
            jwst(L3_I2D, &[O_L3]),
            jwst("jw01234-o001_t001_nircam_clear-f200w_cat.ecsv", &[O_L3]),
            hst,
            other,
        ],
    }
}

struct World {
    s3: TestS3,
    mast: MastServer,
    catalog: Catalog,
}

impl World {
    /// Both servers, the bucket holding every product with a cloud key.
    fn new(catalog: Catalog) -> World {
        let s3 = TestS3::start(&[BUCKET]);
        for p in &catalog.products {
            if let Some(k) = &p.cloud_key {
                s3.put(BUCKET, k, &p.data);
            }
        }
        let mast = MastServer::start(catalog.clone(), TOKEN);
        World { s3, mast, catalog }
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = util::mastfetch();
        c.args(args)
            .args(["--endpoint-url", &self.s3.endpoint])
            .args(["--mast-url", &self.mast.url]);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("mastfetch runs")
    }

    fn product(&self, filename: &str) -> &Product {
        self.catalog
            .products
            .iter()
            .find(|p| p.filename == filename)
            .unwrap()
    }

    fn s3_heads(&self) -> usize {
        self.s3.log().iter().filter(|l| l.method == "HEAD").count()
    }
}

fn plan_lines(o: &Output) -> Vec<Value> {
    assert_eq!(code(o), 0, "{}", show(o));
    util::jsonl(&util::stdout(o))
}

fn filenames(plan: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = plan
        .iter()
        .map(|e| e["filename"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn by_filename<'a>(lines: &'a [Value], filename: &str) -> &'a Value {
    lines
        .iter()
        .find(|e| e["uri"].as_str().is_some_and(|u| u.ends_with(filename)))
        .unwrap_or_else(|| panic!("{filename} not in {lines:#?}"))
}

/// Every file under `dir`, read whole, must not hold `secret`.
fn assert_nowhere_under(dir: &Path, secret: &str) {
    for rel in util::files_under(dir) {
        let bytes = std::fs::read(dir.join(&rel)).unwrap();
        let hit = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!hit, "the token is in {rel}");
    }
}

/// The token went only to MAST's download and whoami endpoints, only as the header, and never
/// to the S3 server.
fn assert_token_only_where_it_belongs(w: &World) {
    for l in w.mast.log() {
        let auth = l.authorization();
        match &l.kind {
            Kind::Download { .. } | Kind::Whoami => {}
            other => assert!(auth.is_none(), "token sent with {other:?}"),
        }
        assert!(!l.query.contains(TOKEN) && !l.body.contains(TOKEN) && !l.path.contains(TOKEN));
        for (k, v) in &l.headers {
            assert!(
                k == "authorization" || !v.contains(TOKEN),
                "token in header {k}"
            );
        }
    }
    for l in w.s3.log() {
        let all = format!(
            "{} {} {} {:?} {:?} {:?}",
            l.method, l.path, l.query, l.range, l.if_match, l.headers
        );
        assert!(!all.contains(TOKEN), "token sent to S3: {all}");
    }
}

/// The acceptance run: level-2 cal files of program 1234, public ones in the bucket from S3,
/// exclusive-access and not-yet-mirrored ones from MAST with the token; byte-identical; the
/// manifest names each source; the cal file relisted by the level-3 observation comes once.
fn fetch_program(token_args: &[&str], env: &[(&str, &str)]) {
    let w = World::new(catalog());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let dest_s = dest.to_str().unwrap().to_string();
    // SHA-256 and SHA256SUMS are opt-in (checked below).
    let mut args = cal_args("get", &["--no-progress", "--dest", &dest_s, "--sha256"]);
    args.extend_from_slice(token_args);
    let started = Instant::now();
    let out = w.run(&args, env);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(code(&out), 0, "{}", show(&out));

    let manifest = util::manifest(&dest);
    assert_eq!(manifest.len(), 3, "{manifest:#?}");
    for (file, source, access) in [
        (NRC1_CAL, "s3", "PUBLIC"),
        (NRC2_CAL, "mast", "EXCLUSIVE_ACCESS"),
        (MIRI_CAL, "mast", "PUBLIC"),
    ] {
        let m = by_filename(&manifest, file);
        assert_eq!(m["status"], "ok", "{m}");
        assert_eq!(m["source"], source, "{m}");
        assert_eq!(m["access"], access, "{m}");
        let p = w.product(file);
        let got = std::fs::read(dest.join(m["path"].as_str().unwrap())).unwrap();
        assert!(got == p.data, "{file} differs");
        assert_eq!(m["sha256"], util::sha256_hex(&p.data));
        assert_eq!(m["crc64nvme"], crate::s3server::crc64nvme_b64(&p.data));
        assert_eq!(
            m["path"],
            format!("JWST/{}/{file}", p.obs_id),
            "nested layout under the product's obs_id"
        );
    }
    assert!(by_filename(&manifest, NRC1_CAL)["key"]
        .as_str()
        .unwrap()
        .ends_with(NRC1_CAL));
    assert!(by_filename(&manifest, NRC2_CAL)["key"].is_null());

    // Requests: one observation query, one product request (4 observations), one lookup of the
    // one public file the bucket lacks, one token check, two MAST downloads, no HEAD.
    let stderr = util::stderr(&out);
    assert_eq!(w.mast.invokes(OBSERVATIONS), 1);
    assert_eq!(w.mast.invokes(PRODUCTS), 1);
    assert_eq!(w.mast.path_lookups(), [1]);
    assert_eq!(w.mast.whoamis(), 1);
    let mut downloads = w.mast.downloads();
    downloads.sort();
    assert_eq!(downloads, [uri(NRC2_CAL), uri(MIRI_CAL)]);
    assert_eq!(w.s3_heads(), 0, "no HEAD per file");
    let s3_gets: Vec<_> =
        w.s3.log()
            .into_iter()
            .filter(|l| l.is_get_object())
            .collect();
    assert_eq!(s3_gets.len(), 1, "{s3_gets:#?}");
    let lists = w.s3.log().iter().filter(|l| l.is_list()).count();
    eprintln!(
        "acceptance: {secs:.2} s; MAST: {} observation, {} product, {:?} path lookup, {} whoami, \
         {} download; S3: {lists} list, {} get, 0 head\nstderr: {stderr}",
        w.mast.invokes(OBSERVATIONS),
        w.mast.invokes(PRODUCTS),
        w.mast.path_lookups(),
        w.mast.whoamis(),
        w.mast.downloads().len(),
        s3_gets.len()
    );
    assert!(stderr.contains("query answered by mast"), "{stderr}");

    // The token: nowhere in the output, the files or any request but MAST's downloads/whoami.
    assert!(!stderr.contains(TOKEN) && !util::stdout(&out).contains(TOKEN));
    assert_nowhere_under(&dest, TOKEN);
    assert!(util::files_under(&dest).iter().any(|f| f == "SHA256SUMS"));
    assert_token_only_where_it_belongs(&w);
    let authorized: Vec<_> = w
        .mast
        .log()
        .into_iter()
        .filter(|l| l.authorization().is_some())
        .collect();
    assert!(authorized
        .iter()
        .all(|l| l.authorization() == Some(&format!("token {TOKEN}"))));
}

#[test]
fn get_program_from_s3_and_mast_with_token_from_env() {
    fetch_program(&[], &[("MAST_API_TOKEN", TOKEN)]);
}

#[test]
fn get_program_with_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    fetch_program(&["--token-file", file.to_str().unwrap()], &[]);
}

#[test]
fn without_a_token_exclusive_files_are_excluded_and_the_rest_completes() {
    let w = World::new(catalog());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().to_str().unwrap();
    let out = w.run(&cal_args("get", &["--no-progress", "--dest", dest]), &[]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let manifest = util::manifest(dir.path());
    assert_eq!(by_filename(&manifest, NRC2_CAL)["status"], "excluded");
    assert_eq!(by_filename(&manifest, NRC1_CAL)["status"], "ok");
    assert_eq!(by_filename(&manifest, MIRI_CAL)["status"], "ok");
    assert!(!dir
        .path()
        .join("JWST/jw01234001001_02101_00002_nrcb1")
        .join(NRC2_CAL)
        .exists());
    let stderr = util::stderr(&out);
    let about: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("excluded") && l.contains("token"))
        .collect();
    assert_eq!(
        about.len(),
        1,
        "one summary line about the exclusion:\n{stderr}"
    );
    assert!(
        !stderr.contains(NRC2_CAL),
        "no line per excluded file:\n{stderr}"
    );
    assert_eq!(w.mast.whoamis(), 0);
    assert_eq!(w.mast.downloads(), [uri(MIRI_CAL)]);
    assert!(w.mast.log().iter().all(|l| l.authorization().is_none()));
}

#[test]
fn an_invalid_token_stops_before_any_download() {
    for (how, whoami_401) in [("env", false), ("file", true)] {
        let w = World::new(catalog());
        w.mast.whoami_401(whoami_401);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let bad = "mtk-expired-0000-SECRET";
        let tf = dir.path().join("token");
        std::fs::write(&tf, bad).unwrap();
        let mut args = cal_args("get", &["--no-progress", "--dest", dest.to_str().unwrap()]);
        let env: Vec<(&str, &str)> = if how == "env" {
            vec![("MAST_API_TOKEN", bad)]
        } else {
            args.extend(["--token-file", tf.to_str().unwrap()]);
            vec![]
        };
        let out = w.run(&args, &env);
        assert_eq!(code(&out), 2, "{how}: {}", show(&out));
        let stderr = util::stderr(&out);
        assert!(
            stderr.contains("expire"),
            "{how}: the message says tokens expire: {stderr}"
        );
        assert!(!stderr.contains(bad) && !util::stdout(&out).contains(bad));
        assert_eq!(w.mast.whoamis(), 1, "{how}");
        assert!(w.mast.downloads().is_empty(), "{how}: no MAST download");
        assert!(
            !w.s3.log().iter().any(|l| l.is_get_object()),
            "{how}: no S3 download"
        );
        if dest.exists() {
            assert_nowhere_under(&dest, bad);
        }
    }
}

/// 90 level-3 products of an association (`c1001`) that live where the naming rules do not
/// predict: the plan asks MAST where they are in at most ceil(90/40) = 3 lookups, then confirms
/// them with one more listing, never a HEAD.
fn association_catalog(n: usize) -> Catalog {
    let o = Observation {
        proposal_id: "1235".into(),
        ..obs(
            5001,
            "jw01235-c1001_t001_nircam_clear-f200w",
            "NIRCAM/IMAGE",
            3,
        )
    };
    let products = (1..=n)
        .map(|i| {
            let name = format!("jw01235-c1001_t{i:03}_nircam_clear-f200w_i2d.fits");
            let mut p = jwst(&name, &[5001]);
            p.proposal_id = "1235".into();
            p.obs_id = "jw01235-c1001_t001_nircam_clear-f200w".into();
            p.cloud_key = Some(format!("jwst/public/jw01235/L3/c/c1001/{name}"));
            p
        })
        .collect();
    Catalog {
        observations: vec![o],
        products,
    }
}

#[test]
fn path_lookups_are_batched_by_40_and_no_head_is_made() {
    let w = World::new(association_catalog(90));
    let started = Instant::now();
    let out = w.run(
        &[
            "plan",
            "--program",
            "1235",
            "--catalog",
            "mast",
            "--format",
            "jsonl",
        ],
        &[],
    );
    let secs = started.elapsed().as_secs_f64();
    let plan = plan_lines(&out);
    assert_eq!(plan.len(), 90);
    for e in &plan {
        assert_eq!(e["source"], "s3", "{e}");
        assert!(e["key"]
            .as_str()
            .unwrap()
            .starts_with("jwst/public/jw01235/L3/c/c1001/"));
        assert!(e["size"].as_u64().unwrap() > 0);
    }
    let mut lookups = w.mast.path_lookups();
    lookups.sort();
    assert_eq!(lookups, [10, 40, 40], "ceil(90/40) lookups");
    assert_eq!(w.s3_heads(), 0);
    let lists = w.s3.log().iter().filter(|l| l.is_list()).count();
    assert_eq!(lists, 2, "the predicted folder, then the folder MAST named");
    eprintln!(
        "lookups: plan of 90 in {secs:.2} s; path lookups {lookups:?}; {lists} S3 lists; {}",
        util::stderr(&out)
    );
}

#[test]
fn a_414_splits_the_lookup_batch_instead_of_failing() {
    let w = World::new(association_catalog(40));
    w.mast.inject(Target::PathLookup, 1, Fault::Status(414));
    let out = w.run(
        &[
            "plan",
            "--program",
            "1235",
            "--catalog",
            "mast",
            "--format",
            "jsonl",
        ],
        &[],
    );
    let plan = plan_lines(&out);
    assert_eq!(plan.len(), 40);
    assert!(plan.iter().all(|e| e["source"] == "s3"), "{plan:#?}");
    assert_eq!(w.mast.path_lookups(), [40, 20, 20]);
}

#[test]
fn executing_paging_and_server_errors_are_ridden_out() {
    let w = World::new(catalog());
    w.mast.max_page_size(2);
    w.mast.executing(OBSERVATIONS, 2);
    w.mast.executing(PRODUCTS, 1);
    w.mast
        .inject(Target::Invoke(PRODUCTS), 2, Fault::Status(503));
    w.mast
        .inject(Target::Invoke(OBSERVATIONS), 1, Fault::Status(500));
    w.mast.inject(Target::PathLookup, 1, Fault::Status(502));
    w.mast.inject(Target::PathLookup, 1, Fault::Reset);
    let args = cal_args("plan", &["--format", "jsonl"]);
    let started = Instant::now();
    let plan = plan_lines(&w.run(&args, &[]));
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(filenames(&plan), [NRC1_CAL, NRC2_CAL, MIRI_CAL]);
    assert_eq!(by_filename(&plan, MIRI_CAL)["source"], "mast");
    // 4 observations in pages of 2: each page polled twice, then answered; one 500 before.
    let log = w.mast.log();
    let pages = |service: &str| {
        let mut p: Vec<u64> = log
            .iter()
            .filter_map(|l| match &l.kind {
                Kind::Invoke {
                    service: s, page, ..
                } if s == service => Some(*page),
                _ => None,
            })
            .collect();
        p.dedup();
        p
    };
    assert_eq!(pages(OBSERVATIONS), [1, 2]);
    assert_eq!(w.mast.invokes(OBSERVATIONS), 1 + 2 * 3);
    // 12 product rows (the relisted cal included) in pages of 2.
    assert_eq!(pages(PRODUCTS), [1, 2, 3, 4, 5, 6]);
    assert_eq!(w.mast.invokes(PRODUCTS), 2 + 6 * 2);
    assert_eq!(w.mast.path_lookups(), [1, 1, 1]);
    eprintln!("faults: plan in {secs:.2} s with EXECUTING, paging, 5xx and a reset");
}

#[test]
fn mast_downloads_retry_resume_and_a_404_fails_alone() {
    let w = World::new(catalog());
    let missing = "jw01234009001_02101_00001_nrcb1_cal.fits";
    w.mast
        .inject(Target::Download(MIRI_CAL.into()), 2, Fault::Status(503));
    w.mast
        .inject(Target::Download(MIRI_CAL.into()), 1, Fault::Truncate(1000));
    let dir = tempfile::tempdir().unwrap();
    let out = w.run(
        &[
            "get",
            &uri(MIRI_CAL),
            &uri(missing),
            NRC1_CAL,
            "--no-progress",
            "--dest",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 1, "{}", show(&out));
    let manifest = util::manifest(dir.path());
    let m = by_filename(&manifest, missing);
    assert_eq!(m["status"], "failed");
    assert!(m["message"].as_str().unwrap().contains("404"), "{m}");
    let ok = by_filename(&manifest, MIRI_CAL);
    assert_eq!(ok["status"], "ok", "{ok}");
    assert_eq!(ok["source"], "mast");
    let got = std::fs::read(dir.path().join(ok["path"].as_str().unwrap())).unwrap();
    assert!(got == w.product(MIRI_CAL).data);
    assert_eq!(by_filename(&manifest, NRC1_CAL)["status"], "ok");
    // Two 503s, one cut body, then a ranged request that resumes after the 1000 bytes kept.
    let ranges: Vec<Option<String>> = w
        .mast
        .log()
        .into_iter()
        .filter_map(|l| match l.kind {
            Kind::Download { uri: u, range } if u == uri(MIRI_CAL) => Some(range),
            _ => None,
        })
        .collect();
    assert_eq!(ranges.len(), 4, "{ranges:?}");
    assert_eq!(ranges[3].as_deref(), Some("bytes=1000-"));
    assert!(util::stderr(&out).contains(missing));
}

#[test]
fn without_range_support_a_cut_download_restarts() {
    let w = World::new(catalog());
    w.mast.range_support(false);
    w.mast
        .inject(Target::Download(MIRI_CAL.into()), 1, Fault::Truncate(700));
    let dir = tempfile::tempdir().unwrap();
    let out = w.run(
        &[
            "get",
            &uri(MIRI_CAL),
            "--no-progress",
            "--dest",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    let m = util::manifest(dir.path());
    let got = std::fs::read(dir.path().join(m[0]["path"].as_str().unwrap())).unwrap();
    assert!(got == w.product(MIRI_CAL).data);
    assert_eq!(w.mast.downloads().len(), 2);
}

#[test]
fn query_filters_guidestars_recommended_levels_instruments_duplicates() {
    let w = World::new(catalog());
    let plan = |extra: &[&str]| {
        let mut args = vec![
            "plan",
            "--program",
            "1234",
            "--catalog",
            "mast",
            "--format",
            "jsonl",
        ];
        args.extend_from_slice(extra);
        plan_lines(&w.run(&args, &[]))
    };
    let all = plan(&[]);
    let names = filenames(&all);
    // JWST program 1234 only: not the HST observation sharing the id, not program 9999.
    assert!(names.iter().all(|n| n.starts_with("jw01234")), "{names:?}");
    assert!(
        !names.contains(&GS_CAL.to_string()),
        "guide stars left out by default"
    );
    assert!(
        names.contains(&L3_I2D.to_string()),
        "level-3 products included"
    );
    assert!(names.contains(&"jw01234-o001_t001_nircam_clear-f200w_cat.ecsv".to_string()));
    assert_eq!(
        names.iter().filter(|n| *n == NRC1_CAL).count(),
        1,
        "relisted by the level-3 observation, planned once"
    );
    assert_eq!(all.len(), 10, "{names:#?}");
    let exclusive = by_filename(&all, NRC2_CAL);
    assert_eq!(exclusive["access"], "EXCLUSIVE_ACCESS");
    assert_eq!(exclusive["source"], "mast");
    assert!(exclusive["bucket"].is_null() && exclusive["key"].is_null());

    let with_gs = plan(&["--include-guidestars"]);
    assert_eq!(with_gs.len(), 11);
    assert_eq!(by_filename(&with_gs, GS_CAL)["source"], "s3");

    let recommended = filenames(&plan(&["--recommended"]));
    assert_eq!(recommended, [L3_I2D, NRC1_CAL, NRC2_CAL, MIRI_CAL]);

    w.mast.clear_log();
    let level3 = filenames(&plan(&["--calib-level", "3"]));
    assert_eq!(
        level3,
        [
            "jw01234-o001_t001_nircam_clear-f200w_cat.ecsv",
            "jw01234-o001_t001_nircam_clear-f200w_i2d.fits"
        ]
    );
    // Exposure observations (level 2) cannot hold level-3 products: not asked for.
    let asked: Vec<Value> = w
        .mast
        .log()
        .into_iter()
        .filter_map(|l| match l.kind {
            Kind::Invoke {
                service, params, ..
            } if service == PRODUCTS => Some(params),
            _ => None,
        })
        .collect();
    assert_eq!(asked, [serde_json::json!({"obsid": O_L3.to_string()})]);

    let miri = filenames(&plan(&["--instrument", "miri"]));
    assert_eq!(
        miri,
        [
            "jw01234002001_02101_00001_mirimage_cal.fits",
            "jw01234002001_02101_00001_mirimage_rate.fits"
        ]
    );

    let by_obs = filenames(&plan(&["--obs-id", "jw01234001001_*_00002_*"]));
    assert_eq!(
        by_obs,
        [NRC2_CAL, "jw01234001001_02101_00002_nrcb1_rate.fits"]
    );
    // HST via its instrument name.
    let hst = plan(&["--instrument", "WFPC2"]);
    assert_eq!(filenames(&hst), ["u9o40504m_c0m.fits"]);
    assert_eq!(hst[0]["source"], "s3");
    assert_eq!(hst[0]["dest"], "HST/U9O40504M/u9o40504m_c0m.fits");
}

#[test]
fn get_fetches_a_relisted_product_once() {
    let w = World::new(catalog());
    let dir = tempfile::tempdir().unwrap();
    let out = w.run(
        &[
            "get",
            "--program",
            "1234",
            "--catalog",
            "mast",
            "--recommended",
            "--instrument",
            "nircam",
            "--no-progress",
            "--dest",
            dir.path().to_str().unwrap(),
        ],
        &[("MAST_API_TOKEN", TOKEN)],
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    let manifest = util::manifest(dir.path());
    assert_eq!(
        filenames(&manifest_as_plan(&manifest)),
        [L3_I2D, NRC1_CAL, NRC2_CAL]
    );
    let gets =
        w.s3.log()
            .into_iter()
            .filter(|l| l.is_get_object() && l.path.ends_with(NRC1_CAL))
            .count();
    assert_eq!(gets, 1);
}

fn manifest_as_plan(manifest: &[Value]) -> Vec<Value> {
    manifest
        .iter()
        .map(|m| {
            let mut m = m.clone();
            let name = m["uri"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string();
            m["filename"] = Value::String(name);
            m
        })
        .collect()
}

#[test]
fn auto_catalog_asks_mast_even_when_names_would_suffice() {
    let w = World::new(catalog());
    // MASTFETCH_MAST_URL instead of --mast-url: the environment works too.
    let run = |args: &[&str]| {
        let mut c = util::mastfetch();
        c.args(args)
            .args(["--endpoint-url", &w.s3.endpoint])
            .env("MASTFETCH_MAST_URL", &w.mast.url);
        c.output().unwrap()
    };
    let out = run(&[
        "plan",
        "--program",
        "1234",
        "--suffix",
        "cal",
        "--format",
        "jsonl",
    ]);
    let plan = plan_lines(&out);
    assert!(
        util::stderr(&out).contains("query answered by mast"),
        "{}",
        show(&out)
    );
    assert_eq!(w.mast.invokes(OBSERVATIONS), 1);
    // MAST knows what the bucket cannot show: the exclusive-access and not-yet-mirrored files.
    assert_eq!(filenames(&plan), [NRC1_CAL, NRC2_CAL, MIRI_CAL]);
    assert_eq!(by_filename(&plan, NRC1_CAL)["source"], "s3");
    assert_eq!(by_filename(&plan, NRC2_CAL)["source"], "mast");
    assert_eq!(by_filename(&plan, NRC2_CAL)["access"], "EXCLUSIVE_ACCESS");
    assert_eq!(by_filename(&plan, MIRI_CAL)["source"], "mast");

    // `--catalog s3` is the user's explicit choice: listings only, no MAST query.
    w.mast.clear_log();
    let out = run(&[
        "plan",
        "--program",
        "1234",
        "--suffix",
        "cal",
        "--catalog",
        "s3",
        "--format",
        "jsonl",
    ]);
    let plan = plan_lines(&out);
    assert!(
        util::stderr(&out).contains("query answered by s3"),
        "{}",
        show(&out)
    );
    assert_eq!(w.mast.invokes(OBSERVATIONS), 0);
    assert_eq!(filenames(&plan), [NRC1_CAL]);
}

/// Program 4321: nothing public yet, so the bucket holds none of it.
fn exclusive_program() -> Catalog {
    let mut c = catalog();
    let mut a = exclusive(jwst("jw04321001001_02101_00001_nrca1_cal.fits", &[4001]));
    let mut b = exclusive(jwst("jw04321001001_02101_00002_nrca1_cal.fits", &[4001]));
    for p in [&mut a, &mut b] {
        p.proposal_id = "4321".into();
    }
    c.observations.push(Observation {
        proposal_id: "4321".into(),
        ..obs(4001, "jw04321001001_02101_00001_nrca1", "NIRCAM/IMAGE", 2)
    });
    c.products.extend([a, b]);
    c
}

#[test]
fn an_exclusive_access_program_is_fetched_with_a_token_and_excluded_without() {
    let w = World::new(exclusive_program());
    let query = ["--program", "4321", "--suffix", "cal"];
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("with");
    let mut args = vec!["get"];
    args.extend(query);
    args.extend(["--dest", dest.to_str().unwrap(), "--no-progress"]);
    let out = w.run(&args, &[("MAST_API_TOKEN", TOKEN)]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let m = util::manifest(&dest);
    assert_eq!(m.len(), 2, "{m:#?}");
    for e in &m {
        assert_eq!(e["status"], "ok");
        assert_eq!(e["source"], "mast");
        let name = e["uri"].as_str().unwrap().rsplit('/').next().unwrap();
        let got = std::fs::read(dest.join(e["path"].as_str().unwrap())).unwrap();
        assert_eq!(got, w.product(name).data);
    }
    assert_eq!(w.mast.downloads().len(), 2);

    let dest = dir.path().join("without");
    let mut args = vec!["get"];
    args.extend(query);
    args.extend(["--dest", dest.to_str().unwrap(), "--no-progress"]);
    let out = w.run(&args, &[]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(util::stderr(&out).contains("2 exclusive-access files excluded"));
    let m = util::manifest(&dest);
    assert_eq!(m.len(), 2, "{m:#?}");
    assert!(m.iter().all(|e| e["status"] == "excluded"), "{m:#?}");
}

#[test]
fn mast_unreachable_auto_answers_from_listings_loudly_and_exits_1() {
    let w = World::new(catalog());
    // A port nothing listens on: connection refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let plan_with = |mast: &str, catalog: &str| {
        util::mastfetch()
            .args(["plan", "--program", "1234", "--suffix", "cal"])
            .args(["--catalog", catalog, "--format", "jsonl", "--retries", "1"])
            .args(["--endpoint-url", &w.s3.endpoint, "--mast-url", mast])
            .output()
            .unwrap()
    };
    for outage in ["refused", "503"] {
        let mast = if outage == "refused" {
            dead.clone()
        } else {
            w.mast
                .inject(Target::Invoke(OBSERVATIONS), 1000, Fault::Status(503));
            w.mast.url.clone()
        };
        let out = plan_with(&mast, "auto");
        assert_eq!(code(&out), 1, "{outage}: {}", show(&out));
        let err = util::stderr(&out);
        assert!(err.contains("warning: MAST could not be reached"), "{err}");
        assert!(
            err.contains("exclusive-access and not-yet-mirrored products may be missing"),
            "{err}"
        );
        assert!(err.contains("query answered by s3"), "{err}");
        let plan = util::jsonl(&util::stdout(&out));
        assert_eq!(filenames(&plan), [NRC1_CAL], "{outage}");

        // The user asked for MAST's answer: no fallback, a fatal error naming the cause.
        let out = plan_with(&mast, "mast");
        assert_eq!(code(&out), 2, "{outage}: {}", show(&out));
        assert!(util::stderr(&out).contains("the MAST query failed"));
        assert!(util::stdout(&out).is_empty());
    }

    // `get --json`: the plan event says the plan may be short; what was found is fetched.
    let dir = tempfile::tempdir().unwrap();
    let out = util::mastfetch()
        .args([
            "get",
            "--program",
            "1234",
            "--suffix",
            "cal",
            "--json",
            "--retries",
            "1",
        ])
        .args(["--endpoint-url", &w.s3.endpoint, "--mast-url", &dead])
        .args(["--dest", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    let events = util::jsonl(&util::stdout(&out));
    let plan = events.iter().find(|e| e["event"] == "plan").unwrap();
    assert_eq!(plan["incomplete"], true, "{plan}");
    assert!(plan["warning"].as_str().unwrap().contains("may be missing"));
    assert_eq!(plan["catalog"], "s3");
    assert_eq!(util::manifest(dir.path()).len(), 1);
}

#[test]
fn a_selection_that_matches_nothing_fails() {
    let w = World::new(catalog());
    let out = w.run(
        &[
            "plan",
            "--program",
            "1234",
            "--suffix",
            "nosuch",
            "--format",
            "jsonl",
        ],
        &[],
    );
    assert_eq!(code(&out), 1, "{}", show(&out));
    let err = util::stderr(&out);
    assert!(
        err.contains("--program 1234 --suffix nosuch: the query matched no products"),
        "{err}"
    );

    let out = w.run(&["plan", "s3://stpubdata/jwst/public/jw07777/"], &[]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(util::stderr(&out).contains("no objects under this prefix"));

    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "# nothing here\n\n").unwrap();
    let arg = format!("@{}", list.display());
    let out = w.run(&["plan", &arg], &[]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(util::stderr(&out).contains("the selection matched nothing"));

    std::fs::write(&list, "not-a-product.txt\nalso_not_one\n").unwrap();
    let out = w.run(&["plan", &arg], &[]);
    assert_eq!(code(&out), 1, "{}", show(&out));

    // A shard that receives nothing of a non-empty plan has nothing to do: fine.
    let out = w.run(
        &[
            "plan",
            &uri(NRC1_CAL),
            "--shards",
            "4",
            "--shard-index",
            "3",
            "--format",
            "jsonl",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(util::stdout(&out).trim().is_empty());
    assert!(util::stderr(&out).contains("shard 3 of 4 received none"));
}

#[test]
fn mast_rows_without_a_usable_uri_are_reported_not_dropped() {
    let mut c = catalog();
    // Neither the dataURI nor the file name gives a name that is safe to write.
    let mut odd = jwst("jw01234001001_02101_00001_nrcb1_o001_cal.fits", &[O_NRC1]);
    odd.uri = "mast:JWST/product/..".into();
    odd.filename = "..".into();
    odd.cloud_key = None;
    c.products.push(odd);
    let w = World::new(c);
    let out = w.run(&cal_args("plan", &["--format", "jsonl"]), &[]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let err = util::stderr(&out);
    assert!(err.contains("MAST query:"), "{err}");
    assert!(err.contains("cannot be placed"), "{err}");
    // The rest of the plan stands.
    assert_eq!(util::jsonl(&util::stdout(&out)).len(), 3);
}

/// The fields of a plan line that say what is fetched from where to where.
fn essence(plan: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = plan
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} {} {}",
                e["uri"], e["source"], e["bucket"], e["key"], e["url"], e["dest"]
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn curl_scripts_and_portal_csv_plan_like_their_uris() {
    let w = World::new(catalog());
    let dir = tempfile::tempdir().unwrap();
    let files = [NRC1_CAL, NRC2_CAL, MIRI_CAL, L3_I2D];
    let host = w.mast.url.trim_end_matches('/');
    let plan_of = |items: &[&str]| {
        let mut args = vec!["plan", "--format", "jsonl"];
        args.extend_from_slice(items);
        plan_lines(&w.run(&args, &[]))
    };
    let uris: Vec<String> = files.iter().map(|f| uri(f)).collect();
    let by_uri = plan_of(&uris.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(by_uri.len(), 4);

    // A bundle script in the shape MAST writes (see the fixtures), one block per file; the
    // exclusive-access file with the token header, as in MAST's EAP scripts.
    let mut script = String::from(
        "#!/bin/bash\n#\n# Requires bash version >= 4\n\
         type -P curl >&/dev/null || { echo \"This script requires curl. Exiting.\" >&2; exit 1; }\n\
         FOLDER=MAST_2023-01-25T1259\nDOWNLOAD_FOLDER=$FOLDER\nmkdir -p ${DOWNLOAD_FOLDER}\n\
         cat >${DOWNLOAD_FOLDER}/MANIFEST.HTML<<EOT\n<html><body><table>\n",
    );
    for f in &files {
        let p = w.product(f);
        script.push_str(&format!(
            "<tr><td>{}</td><td>JWST/{}/{f}</td><td>{}</td><td>OK</td><td>anonymous</td></tr>\n",
            p.uri, p.obs_id, p.data_rights
        ));
    }
    script.push_str("</table></body></html>\nEOT\n\n# Download Product Files:\n");
    for f in &files {
        let p = w.product(f);
        script.push_str(&format!(
            "\ncat <<EOT\n<<< Downloading File: {u}\n                  To: ${{DOWNLOAD_FOLDER}}/JWST/{o}/{f}\nEOT\n\n",
            u = p.uri,
            o = p.obs_id
        ));
        if p.is_exclusive() {
            script.push_str(&format!(
                "curl -H \"Authorization: token $MAST_API_TOKEN\" \\\n--globoff \\\n--location-trusted \\\n-f \\\n\
                 --progress-bar \\\n--create-dirs $CONT \\\n--output ./${{DOWNLOAD_FOLDER}}'/JWST/{o}/{f}' \\\n\
                 '{host}/api/v0.1/Download/file?bundle_name=MAST_2023-01-25T1259.sh&uri={u}'\n",
                o = p.obs_id,
                u = p.uri
            ));
        } else {
            script.push_str(&format!(
                "curl --globoff --location-trusted -f --progress-bar --create-dirs $CONT --output \
                 ./${{DOWNLOAD_FOLDER}}'/JWST/{o}/{f}' \
                 '{host}/api/v0.1/Download/file?bundle_name=MAST_2023-01-25T1259.sh&uri={u}'\n",
                o = p.obs_id,
                u = p.uri
            ));
        }
    }
    script.push_str("\nexit 0\n");
    let sh = dir.path().join("mastDownload.sh");
    std::fs::write(&sh, &script).unwrap();
    let from_script = plan_of(&[&format!("@{}", sh.display())]);
    assert_eq!(essence(&from_script), essence(&by_uri), "{script}");

    // A Portal CSV export (quoted header and fields, extra columns).
    let mut csv = String::from(
        "\"obsID\",\"obs_collection\",\"dataproduct_type\",\"obs_id\",\"description\",\"type\",\
         \"dataURI\",\"productType\",\"productGroupDescription\",\"productSubGroupDescription\",\
         \"productDocumentationURL\",\"project\",\"prvversion\",\"proposal_id\",\"productFilename\",\
         \"size\",\"parent_obsid\",\"dataRights\",\"calib_level\"\n",
    );
    for f in &files {
        let p = w.product(f);
        csv.push_str(&format!(
            "\"{id}\",\"JWST\",\"image\",\"{o}\",\"exposure (L2b): calibrated\",\"S\",\"{u}\",\
             \"SCIENCE\",\"{g}\",\"{s}\",\"\",\"CALJWST\",\"1.11.4\",\"1234\",\"{f}\",\"{n}\",\"{id}\",\
             \"{r}\",\"{l}\"\n",
            id = p.listed_under[0],
            o = p.obs_id,
            u = p.uri,
            g = p.group.clone().unwrap_or_default(),
            s = p.subgroup,
            n = p.data.len(),
            r = p.data_rights,
            l = p.calib_level
        ));
    }
    let csv_path = dir.path().join("MAST_2024-01-01T0000.csv");
    std::fs::write(&csv_path, &csv).unwrap();
    let from_csv = plan_of(&[&format!("@{}", csv_path.display())]);
    assert_eq!(essence(&from_csv), essence(&by_uri), "{csv}");
    // The CSV knows more than a bare URI: sizes and access of MAST-only files.
    let ex = by_filename(&from_csv, NRC2_CAL);
    assert_eq!(ex["access"], "EXCLUSIVE_ACCESS");
    assert_eq!(ex["size"], w.product(NRC2_CAL).data.len());
    // Exclusive-access rows are not looked up: the CSV plan asks MAST about one file less.
}

#[test]
fn plan_as_curl_is_bash_and_names_the_token_only_by_variable() {
    let w = World::new(catalog());
    let out = w.run(
        &cal_args("plan", &["--format", "curl"]),
        &[("MAST_API_TOKEN", TOKEN)],
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    let script = util::stdout(&out);
    assert!(script.starts_with("#!"), "{script}");
    assert!(!script.contains(TOKEN) && !util::stderr(&out).contains(TOKEN));
    assert!(script.contains("$MAST_API_TOKEN"), "{script}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fetch.sh");
    std::fs::write(&path, &script).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash runs");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The token header goes only with MAST URLs.
    let mast_lines: Vec<&str> = script.lines().filter(|l| l.starts_with("fetch ")).collect();
    assert_eq!(mast_lines.len(), 3, "{script}");
    for l in mast_lines {
        let to_mast = l.contains(&w.mast.url);
        assert_eq!(l.ends_with(" token"), to_mast, "{l}");
    }
    assert_token_only_where_it_belongs(&w);
    assert!(
        w.mast.log().iter().all(|l| l.authorization().is_none()),
        "plan sends no token"
    );
}

#[test]
fn a_mast_error_answer_fails_the_query_clearly_and_is_not_retried() {
    let w = World::new(catalog());
    w.mast.inject(
        Target::Invoke(PRODUCTS),
        1,
        Fault::ServiceError("Request timed out: query too large"),
    );
    let out = w.run(
        &[
            "plan",
            "--program",
            "1234",
            "--catalog",
            "mast",
            "--format",
            "jsonl",
        ],
        &[],
    );
    assert_eq!(code(&out), 2, "{}", show(&out));
    let stderr = util::stderr(&out);
    assert!(
        stderr.contains("Mast.Caom.Products")
            && stderr.contains("Request timed out: query too large"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.contains("error")).count(),
        1,
        "{stderr}"
    );
    assert_eq!(w.mast.invokes(PRODUCTS), 1);
}

#[test]
fn product_requests_go_in_parallel_batches() {
    // 40 observations of one product each: 4 requests of 10 observations, each answered after
    // a second; one after the other they would take 4 s.
    let observations: Vec<Observation> = (0..40u64)
        .map(|i| {
            obs(
                7000 + i,
                &format!("jw01236{:03}001_02101_00001_nrcb1", i + 1),
                "NIRCAM/IMAGE",
                2,
            )
        })
        .map(|o| Observation {
            proposal_id: "1236".into(),
            ..o
        })
        .collect();
    let products = observations
        .iter()
        .map(|o| {
            let mut p = jwst(&format!("{}_cal.fits", o.obs_id), &[o.obsid]);
            p.proposal_id = "1236".into();
            p
        })
        .collect();
    let w = World::new(Catalog {
        observations,
        products,
    });
    w.mast.inject(
        Target::Invoke(PRODUCTS),
        4,
        Fault::Delay(std::time::Duration::from_secs(1)),
    );
    let started = Instant::now();
    let plan = plan_lines(&w.run(
        &[
            "plan",
            "--program",
            "1236",
            "--catalog",
            "mast",
            "--format",
            "jsonl",
        ],
        &[],
    ));
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(plan.len(), 40);
    assert!(plan.iter().all(|e| e["source"] == "s3"));
    let batches: Vec<usize> = w
        .mast
        .log()
        .iter()
        .filter_map(|l| match &l.kind {
            Kind::Invoke {
                service, params, ..
            } if service == PRODUCTS => Some(params["obsid"].as_str().unwrap().split(',').count()),
            _ => None,
        })
        .collect();
    assert_eq!(batches, [10, 10, 10, 10]);
    // Each product request is held 1 s by the stand-in; one after the other, never two at once.
    assert!(
        w.mast.max_in_flight() >= 2,
        "product requests ran one after the other ({secs:.2} s)"
    );
    // 40 exposure folders, each listed once; no lookup needed.
    assert!(w.mast.path_lookups().is_empty());
    assert_eq!(w.s3_heads(), 0);
}
