//! Opt-in tests against the real `s3://stpubdata` bucket and MAST (they need the internet).
//! Ignored by default; run them with `MASTFETCH_LIVE=1 cargo test --test it -- --ignored live`.
//! They never decide whether a feature works: the offline tests do.

use crate::util::{self, stderr};

fn live() -> bool {
    std::env::var("MASTFETCH_LIVE").is_ok_and(|v| v == "1")
}

/// The real endpoints: no --endpoint-url, no MAST stand-in.
fn mastfetch(args: &[&str]) -> std::process::Output {
    assert!(live(), "set MASTFETCH_LIVE=1 to run the live tests");
    util::mastfetch()
        .args(args)
        .output()
        .expect("mastfetch runs")
}

/// A small public HST product (207,360 bytes) from astroquery's own test data.
const HST_URI: &str = "mast:HST/product/u9o40504m_c3m.fits";

#[test]
#[ignore = "live: needs the internet (MASTFETCH_LIVE=1)"]
fn live_get_from_the_bucket_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = mastfetch(&["get", HST_URI, "--dest", d, "--s3-only"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let m = util::manifest(dir.path());
    assert_eq!(m[0]["key"], "hst/public/u9o4/u9o40504m/u9o40504m_c3m.fits");
    assert_eq!(m[0]["status"], "ok");
    // What the archive's ETag looks like is one of the documented unknowns: print it.
    println!(
        "live: stpubdata ETag {} size {}",
        m[0]["etag"], m[0]["size"]
    );
    let v = mastfetch(&["verify", d, "--remote", "--format", "jsonl"]);
    assert_eq!(v.status.code(), Some(0), "{}", stderr(&v));
}

#[test]
#[ignore = "live: needs the internet (MASTFETCH_LIVE=1)"]
fn live_get_from_mast_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let out = mastfetch(&[
        "get",
        HST_URI,
        "--dest",
        dir.path().to_str().unwrap(),
        "--mast-only",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(util::manifest(dir.path())[0]["source"], "mast");
}

#[test]
#[ignore = "live: needs the internet (MASTFETCH_LIVE=1)"]
fn live_program_query_both_catalogs() {
    for catalog in ["s3", "mast"] {
        let out = mastfetch(&[
            "plan",
            "--program",
            "2731",
            "--suffix",
            "cat",
            "--catalog",
            catalog,
            "--format",
            "jsonl",
        ]);
        assert_eq!(out.status.code(), Some(0), "{catalog}: {}", stderr(&out));
        let lines = util::jsonl(&util::stdout(&out));
        assert!(
            !lines.is_empty(),
            "{catalog}: no catalogs found for program 2731"
        );
        for l in &lines {
            assert!(
                l["filename"].as_str().unwrap().ends_with("_cat.ecsv"),
                "{l}"
            );
        }
        println!(
            "live: --catalog {catalog}: {} files; {}",
            lines.len(),
            stderr(&out).trim()
        );
    }
}
