//! Issue 16's small breaks of trust: output cut short by its reader (`| head`) ends quietly
//! with exit 0, and HST association products are found in their association's folder by the
//! naming rules alone (no MAST path lookup).

use std::process::Command;
use std::time::Duration;

use crate::mast_server::{Catalog, MastServer};
use crate::s3server::{Fault, TestS3};
use crate::util;

/// Run `mastfetch ARGS | head -1` under `pipefail`: the pipeline's status is mastfetch's.
fn piped_to_head(args: &[String]) -> (i32, String) {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let script = format!(
        "set -o pipefail; '{}' {} | head -1",
        env!("CARGO_BIN_EXE_mastfetch"),
        quoted.join(" ")
    );
    let mut c = Command::new("bash");
    c.args(["-c", &script]);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("MAST") {
            c.env_remove(k);
        }
    }
    let out = c.env("AWS_EC2_METADATA_DISABLED", "true").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A plan of `n` files, far more than a pipe buffer holds once printed.
fn big_plan(n: usize) -> String {
    (0..n)
        .map(|i| {
            let name = format!("jw01234001001_02101_{i:05}_nrcb1_cal.fits");
            let key = format!("jwst/public/jw01234/jw01234001001/{name}");
            serde_json::json!({
                "uri": format!("mast:JWST/product/{name}"), "filename": name, "source": "s3",
                "bucket": "stpubdata", "key": key,
                "url": format!("https://stpubdata.s3.amazonaws.com/{key}"),
                "size": 1000 + i, "etag": null, "access": "PUBLIC",
                "dest": format!("JWST/jw01234001001_02101_{i:05}_nrcb1/{name}"),
            })
            .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn plan_and_verify_cut_short_by_head_exit_0_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.jsonl");
    std::fs::write(&plan, big_plan(20_000)).unwrap();
    let at = format!("@{}", plan.display());
    let (code, err) = piped_to_head(&["plan".into(), at, "--format".into(), "jsonl".into()]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("error"), "{err}");

    // A manifest of files that are all missing: verify has 20,000 lines to say, and exit 1
    // if it said them all; cut short, it says nothing more and exits 0.
    let mirror = dir.path().join("mirror");
    std::fs::create_dir_all(&mirror).unwrap();
    let manifest: String = util::jsonl(&big_plan(20_000))
        .into_iter()
        .map(|mut e| {
            e["path"] = e["dest"].clone();
            e["status"] = "ok".into();
            e["sha256"] = serde_json::Value::Null;
            e["message"] = serde_json::Value::Null;
            e.to_string() + "\n"
        })
        .collect();
    std::fs::write(mirror.join("mastfetch-manifest.jsonl"), manifest).unwrap();
    let (code, err) = piped_to_head(&[
        "verify".into(),
        mirror.display().to_string(),
        "--format".into(),
        "jsonl".into(),
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn get_json_cut_short_by_head_exits_0() {
    let s3 = TestS3::start(&["stpubdata"]);
    let key = "jwst/public/jw01234/jw01234001001/jw01234001001_02101_00001_nrcb1_cal.fits";
    s3.put("stpubdata", key, &util::data(1, 5000));
    // The file's events come after head has gone; the unknown name alone would make it exit 1.
    s3.inject("GET", key, 1000, Fault::Delay(Duration::from_millis(500)));
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = piped_to_head(&[
        "get".into(),
        format!("s3://stpubdata/{key}"),
        "not-a-product-name".into(),
        "--json".into(),
        "--s3-only".into(),
        "--dest".into(),
        dir.path().display().to_string(),
        "--endpoint-url".into(),
        s3.endpoint.clone(),
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn hst_association_products_are_found_in_the_association_folder() {
    let s3 = TestS3::start(&["stpubdata"]);
    let mast = MastServer::start(Catalog::default(), "unused-token");
    let key = "hst/public/j8ck/j8ck01040/j8ck01041_drz.fits";
    s3.put("stpubdata", key, &util::data(2, 4000));
    s3.put(
        "stpubdata",
        "hst/public/j8ck/j8ck01040/j8ck01040_asn.fits",
        &util::data(3, 100),
    );
    let out = util::run(
        &s3.endpoint,
        &[
            "plan",
            "j8ck01041_drz.fits",
            "mast:HST/product/j8ck01040_asn.fits",
            "--format",
            "jsonl",
            "--mast-url",
            &mast.url,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", util::stderr(&out));
    let plan = util::jsonl(&util::stdout(&out));
    assert_eq!(plan.len(), 2, "{plan:#?}");
    let drz = plan
        .iter()
        .find(|e| e["filename"] == "j8ck01041_drz.fits")
        .unwrap();
    assert_eq!(drz["source"], "s3");
    assert_eq!(drz["key"], key);
    assert_eq!(drz["dest"], "HST/J8CK01040/j8ck01041_drz.fits");
    // One listing of the two candidate folders answered it: MAST was not asked.
    assert!(mast.path_lookups().is_empty(), "{:?}", mast.path_lookups());
    assert!(util::stderr(&out).contains("0 MAST path lookup"));
}
