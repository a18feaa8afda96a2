//! `get`, `plan` and `verify` against the in-process S3 server: byte-identical mirrors,
//! multi-part and empty files, resume after kill -9, objects replaced mid-download, injected
//! faults, verification, path safety and the one-writer lock.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::s3server::{Fault, TestS3};
use crate::util::{self, code, data, files_under, manifest, run, stderr};

const BUCKET: &str = "stpubdata";
const MIB: usize = 1 << 20;

const CAL: &str = "jw02731001001_02101_00001_nrcb1_cal.fits";
const RATE: &str = "jw02731001001_02101_00001_nrcb1_rate.fits";
const UNCAL: &str = "jw02731001001_02101_00002_nrcb2_uncal.fits";
const I2D: &str = "jw02731-o001_t017_nircam_clear-f090w_i2d.fits";
const EMPTY: &str = "jw02731001001_02101_00003_nrcb1_x1d.fits";
const HST: &str = "u9o40504m_c3m.fits";

fn key(file: &str) -> String {
    mastfetch::names::Product::from_filename(file)
        .unwrap()
        .derive()
        .unwrap()
        .key
}

/// A bucket with JWST- and HST-shaped objects whose sizes are not multiples of 1 MiB.
fn seeded() -> (TestS3, Vec<(&'static str, Vec<u8>)>) {
    let s3 = TestS3::start(&[BUCKET]);
    let files = vec![
        (CAL, data(1, 3 * MIB + 17)),
        (RATE, data(2, 2 * MIB)),
        (UNCAL, data(3, MIB - 1)),
        (I2D, data(4, 5 * MIB + 12345)),
        (EMPTY, Vec::new()),
        (HST, data(5, 207_360)),
    ];
    for (f, d) in &files {
        s3.put(BUCKET, &key(f), d);
    }
    (s3, files)
}

fn nested(file: &str) -> String {
    let p = mastfetch::names::Product::from_filename(file).unwrap();
    format!("{}/{}/{file}", p.collection, p.derive().unwrap().obs_id)
}

#[test]
fn mixed_selection_mirrors_byte_identical_and_rerun_transfers_nothing() {
    let (s3, files) = seeded();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    std::fs::write(
        &list,
        format!("# a list\n{UNCAL}\n\nmast:HST/product/{HST}\n"),
    )
    .unwrap();
    let dest = dir.path().join("mirror");
    let args = [
        "get",
        &format!("mast:JWST/product/{CAL}"),
        RATE,
        &format!("@{}", list.display()),
        &format!("s3://{BUCKET}/jwst/public/jw02731/L3/"),
        EMPTY,
        CAL, // asked twice: fetched once
        "--dest",
        dest.to_str().unwrap(),
        "--part-size",
        "1MiB",
        "--s3-only",
        // SHA-256 and SHA256SUMS are opt-in.
        "--sha256",
    ];
    let out = run(&s3.endpoint, &args);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for (f, d) in &files {
        let got = std::fs::read(dest.join(nested(f))).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(got == *d, "{f} differs");
    }
    // Nothing but the six files and the two records.
    let mut want: Vec<String> = files.iter().map(|(f, _)| nested(f)).collect();
    want.extend(["SHA256SUMS".into(), "mastfetch-manifest.jsonl".into()]);
    want.sort();
    let mut got = files_under(&dest);
    got.retain(|f| !f.starts_with('.'));
    assert_eq!(got, want);

    let m = manifest(&dest);
    assert_eq!(m.len(), 6);
    for e in &m {
        assert_eq!(e["status"], "ok", "{e}");
        assert_eq!(e["source"], "s3");
        for k in [
            "uri",
            "path",
            "bucket",
            "key",
            "url",
            "size",
            "sha256",
            "etag",
            "checksum",
            "verified",
            "crc64nvme",
            "access",
            "message",
        ] {
            assert!(e.get(k).is_some(), "{k} missing in {e}");
        }
        let local = std::fs::read(dest.join(e["path"].as_str().unwrap())).unwrap();
        assert_eq!(e["sha256"], util::sha256_hex(&local));
        // Legacy objects (ETag only): proven by their plain-MD5 ETag; the empty object is
        // fetched by no request (nothing published about it is seen, no byte can differ).
        if local.is_empty() {
            assert_eq!(e["verified"], "size", "{e}");
        } else {
            assert_eq!(e["verified"], "etag", "{e}");
            assert_eq!(e["checksum"], format!("etag:{}", TestS3::etag_of(&local)));
        }
        assert_eq!(e["crc64nvme"], crate::s3server::crc64nvme_b64(&local));
    }
    // Multi-part files were fetched as ranged GETs; a HEAD only for each of them (to learn
    // whether the archive holds a full-object checksum), none for single-GET files.
    let log = s3.log();
    assert!(log.iter().any(|r| r.range.is_some()), "no ranged GET seen");
    assert!(
        log.iter().filter(|r| r.method == "HEAD").count() <= 3,
        "HEAD per file"
    );
    // One listing per distinct folder: jw02731001001/, L3/t/o001/ (and the L3 prefix), HST.
    let lists = log.iter().filter(|r| r.is_list()).count();
    assert!(lists <= 4, "{lists} listings");

    // sha256sum -c accepts SHA256SUMS.
    if Path::new("/usr/bin/sha256sum").exists() {
        let ok = std::process::Command::new("sha256sum")
            .args(["-c", "--quiet", "SHA256SUMS"])
            .current_dir(&dest)
            .status()
            .unwrap();
        assert!(ok.success());
    }

    // A rerun transfers nothing and says so. Listings carry no ETag on this server, so each
    // skip candidate costs one HEAD, and no GET is made.
    s3.clear_log();
    let again = run(&s3.endpoint, &args);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(stderr(&again).contains("6 skipped"), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("nothing to transfer"),
        "{}",
        stderr(&again)
    );
    assert_eq!(s3.log().iter().filter(|r| r.is_get_object()).count(), 0);
    assert_eq!(manifest(&dest).len(), 6, "manifest stays one line per file");
    assert!(manifest(&dest)
        .iter()
        .all(|e| e["status"] == "skipped" && e["sha256"].is_string()));
}

#[test]
fn plan_formats_and_not_in_cloud() {
    let (s3, _) = seeded();
    let out = run(
        &s3.endpoint,
        &[
            "plan",
            CAL,
            "jw09999001001_02101_00001_nrcb1_cal.fits",
            "--format",
            "jsonl",
            "--s3-only",
        ],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let lines = util::jsonl(&util::stdout(&out));
    assert_eq!(lines.len(), 1);
    let e = &lines[0];
    assert_eq!(e["key"], key(CAL));
    assert_eq!(e["size"], 3 * MIB as u64 + 17);
    assert_eq!(e["dest"], nested(CAL));
    assert!(stderr(&out).contains("jw09999001001_02101_00001_nrcb1_cal.fits"));
    assert!(stderr(&out).contains("not in cloud"), "{}", stderr(&out));

    for (fmt, check) in [
        ("csv", "uri,filename,source"),
        ("urls", "/stpubdata/jwst/public/"),
        ("table", "DEST"),
    ] {
        let out = run(&s3.endpoint, &["plan", CAL, "--format", fmt, "--s3-only"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(
            util::stdout(&out).contains(check),
            "{fmt}: {}",
            util::stdout(&out)
        );
    }
    // Plans round-trip: a jsonl plan is a valid selection giving the same plan.
    let first = run(
        &s3.endpoint,
        &["plan", CAL, RATE, I2D, "--format", "jsonl", "--s3-only"],
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("plan.jsonl");
    std::fs::write(&p, &first.stdout).unwrap();
    let second = run(
        &s3.endpoint,
        &[
            "plan",
            &format!("@{}", p.display()),
            "--format",
            "jsonl",
            "--s3-only",
        ],
    );
    assert_eq!(first.stdout, second.stdout);

    // get --dry-run prints the same plan and writes nothing.
    let dest = dir.path().join("dry");
    let dry = run(
        &s3.endpoint,
        &[
            "get",
            CAL,
            RATE,
            I2D,
            "--dry-run",
            "--format",
            "jsonl",
            "--s3-only",
            "--dest",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&dry), 0, "{}", stderr(&dry));
    assert_eq!(dry.stdout, first.stdout);
    assert!(!dest.exists(), "--dry-run created {}", dest.display());
}

#[test]
fn layouts_flat_and_mirror() {
    let (s3, _) = seeded();
    let dir = tempfile::tempdir().unwrap();
    for (layout, want) in [("flat", CAL.to_string()), ("mirror", key(CAL))] {
        let dest = dir.path().join(layout);
        let out = run(
            &s3.endpoint,
            &[
                "get",
                CAL,
                "--layout",
                layout,
                "--dest",
                dest.to_str().unwrap(),
                "--s3-only",
            ],
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(
            dest.join(&want).is_file(),
            "{layout}: {:?}",
            files_under(&dest)
        );
    }
}

#[test]
fn faults_are_retried_to_success() {
    let (s3, files) = seeded();
    let k = key(I2D);
    s3.inject("GET", &k, 2, Fault::SlowDown);
    s3.inject("GET", &k, 2, Fault::Reset);
    s3.inject("GET", &k, 2, Fault::Truncate(100_000));
    s3.inject("GET", &k, 1, Fault::InternalError);
    s3.inject("GET", &key(HST), 2, Fault::Truncate(10));
    s3.inject("GET", "list-type", 1, Fault::SlowDown);
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &s3.endpoint,
        &[
            "get",
            I2D,
            HST,
            "--dest",
            dir.path().to_str().unwrap(),
            "--part-size",
            "1MiB",
            "--s3-only",
            "--jobs",
            "4",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let want = &files.iter().find(|(f, _)| *f == I2D).unwrap().1;
    assert!(std::fs::read(dir.path().join(nested(I2D))).unwrap() == *want);
    let hst = &files.iter().find(|(f, _)| *f == HST).unwrap().1;
    assert!(std::fs::read(dir.path().join(nested(HST))).unwrap() == *hst);
    // 6 parts + 7 faulted attempts on the big file at least.
    let gets = s3
        .log()
        .iter()
        .filter(|r| r.is_get_object() && r.path.ends_with(I2D))
        .count();
    assert!(gets >= 13, "{gets} GETs");
    // A truncated part resumes from the last byte received instead of starting over: some
    // range starts inside a part, not on a 1 MiB boundary.
    let starts: Vec<u64> = s3
        .log()
        .iter()
        .filter(|r| r.path.ends_with(I2D))
        .filter_map(|r| r.range.clone())
        .filter_map(|r| r.strip_prefix("bytes=")?.split('-').next()?.parse().ok())
        .collect();
    assert!(starts.iter().any(|s| s % MIB as u64 != 0), "{starts:?}");
}

#[test]
fn persistent_failure_keeps_the_rest_and_exits_1() {
    let (s3, _) = seeded();
    // More failures than retries: this file fails, the other completes.
    s3.inject("GET", &key(RATE), 100, Fault::InternalError);
    let dir = tempfile::tempdir().unwrap();
    let out = util::mastfetch()
        .args([
            "get",
            RATE,
            CAL,
            "--dest",
            dir.path().to_str().unwrap(),
            "--s3-only",
            "--part-size",
            "1MiB",
        ])
        .args(["--endpoint-url", &s3.endpoint, "--retries", "2"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(
        err.matches("mastfetch: error:").count(),
        1,
        "errors print once: {err}"
    );
    assert!(
        err.contains(RATE) && err.contains("InternalError") || err.contains("500"),
        "{err}"
    );
    let m = manifest(dir.path());
    let rate = m
        .iter()
        .find(|e| e["path"].as_str().unwrap().ends_with(RATE))
        .unwrap();
    assert_eq!(rate["status"], "failed");
    assert!(
        !dir.path().join(nested(RATE)).exists(),
        "no partial file in place"
    );
    assert!(dir.path().join(nested(CAL)).is_file());
}

#[test]
fn object_replaced_mid_download_restarts_cleanly() {
    for honor in [false, true] {
        let s3 = TestS3::start(&[BUCKET]);
        let k = key(I2D);
        s3.put(BUCKET, &k, &data(10, 6 * MIB));
        let new = data(11, 6 * MIB + 5);
        s3.replace_after(&k, 2, new.clone());
        s3.honor_if_match(honor);
        let dir = tempfile::tempdir().unwrap();
        let out = run(
            &s3.endpoint,
            &[
                "get",
                I2D,
                "--dest",
                dir.path().to_str().unwrap(),
                "--part-size",
                "1MiB",
                "--jobs",
                "1",
                "--s3-only",
            ],
        );
        assert_eq!(code(&out), 0, "honor={honor}: {}", stderr(&out));
        assert!(
            std::fs::read(dir.path().join(nested(I2D))).unwrap() == new,
            "mixed versions (honor={honor})"
        );
        assert!(stderr(&out).contains("changed"), "{}", stderr(&out));
        let m = manifest(dir.path());
        assert_eq!(m[0]["etag"], TestS3::etag_of(&new));
        assert_eq!(m[0]["size"], new.len() as u64);
    }
}

#[test]
fn resume_after_kill_does_not_refetch_finished_parts() {
    let s3 = TestS3::start(&[BUCKET]);
    let k = key(I2D);
    let body = data(20, 24 * MIB + 3);
    s3.put(BUCKET, &k, &body);
    // Slow every part so the run can be killed half way.
    s3.inject("GET", &k, 1000, Fault::Delay(Duration::from_millis(150)));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().to_str().unwrap();
    let args = [
        "get",
        I2D,
        "--dest",
        dest,
        "--part-size",
        "1MiB",
        "--jobs",
        "2",
        "--s3-only",
        "--endpoint-url",
        &s3.endpoint,
    ];
    let mut child = util::mastfetch()
        .args(args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let final_path = dir.path().join(nested(I2D));
    let (_, state) = mastfetch::dest::temp_paths(dir.path(), &nested(I2D));
    let t = Instant::now();
    let done_parts = |s: &Path| -> Vec<u64> {
        std::fs::read_to_string(s)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    while done_parts(&state).len() < 6 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no progress before kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let finished = done_parts(&state);
    assert!(finished.len() < 25, "killed too late to test anything");
    assert!(
        !final_path.exists(),
        "a partial file was renamed into place"
    );

    s3.clear_faults();
    s3.clear_log();
    let out = run(&s3.endpoint, &args[..9]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(std::fs::read(&final_path).unwrap() == body);
    let ranges: Vec<String> = s3
        .log()
        .iter()
        .filter(|r| r.is_get_object())
        .filter_map(|r| r.range.clone())
        .collect();
    for p in &finished {
        let start = p * MIB as u64;
        assert!(
            !ranges
                .iter()
                .any(|r| r.starts_with(&format!("bytes={start}-"))),
            "part {p} fetched again: {ranges:?}"
        );
    }
    assert_eq!(ranges.len(), 25 - finished.len(), "{ranges:?}");
    assert!(!state.exists(), "resume log removed after completion");
}

#[test]
fn verify_catches_flipped_bytes_and_bad_fits_checksums() {
    let s3 = TestS3::start(&[BUCKET]);
    let good = mastfetch::fits::build_test_fits(&data(30, 40_000), &[("TELESCOP", "JWST")]);
    // The archive's own copy is damaged inside: SHA-256 matches what we fetch, FITS does not.
    let mut damaged = mastfetch::fits::build_test_fits(&data(31, 40_000), &[("TELESCOP", "JWST")]);
    damaged[2880 + 100] ^= 0x10;
    s3.put(BUCKET, &key(CAL), &good);
    s3.put(BUCKET, &key(RATE), &damaged);
    s3.put(BUCKET, &key(HST), &data(32, 5000));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run(
        &s3.endpoint,
        &["get", CAL, HST, "--dest", d.to_str().unwrap(), "--s3-only"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let verify = |d: &Path| {
        util::mastfetch()
            .args(["verify", d.to_str().unwrap(), "--format", "jsonl"])
            .output()
            .unwrap()
    };
    let ok = verify(d);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    assert_eq!(util::jsonl(&util::stdout(&ok)).len(), 2);

    // Flip one byte of the HST file: corrupt, named, exit 1.
    let hst = d.join(nested(HST));
    let mut bytes = std::fs::read(&hst).unwrap();
    bytes[1234] ^= 1;
    std::fs::write(&hst, bytes).unwrap();
    let bad = verify(d);
    assert_eq!(code(&bad), 1);
    let findings = util::jsonl(&util::stdout(&bad));
    let f = findings
        .iter()
        .find(|f| f["path"] == nested(HST).as_str())
        .unwrap();
    assert_eq!(f["status"], "corrupt");

    // Missing file.
    std::fs::remove_file(&hst).unwrap();
    let missing = verify(d);
    assert_eq!(code(&missing), 1);
    assert!(util::stdout(&missing).contains("\"missing\""));

    // A FITS file whose checksum keywords disagree with its data.
    let d2 = dir.path().join("two");
    let out = run(
        &s3.endpoint,
        &["get", RATE, "--dest", d2.to_str().unwrap(), "--s3-only"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let fits_bad = verify(&d2);
    assert_eq!(code(&fits_bad), 1);
    let out = util::stdout(&fits_bad);
    assert!(out.contains("corrupt") && out.contains("DATASUM"), "{out}");
}

#[test]
fn unsafe_destinations_are_refused_and_the_rest_proceeds() {
    let (s3, _) = seeded();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d");
    let k = key(CAL);
    let entry = |d: &str| {
        serde_json::json!({"uri": format!("mast:JWST/product/x{}", d.len()), "filename": "x", "source": "s3",
            "bucket": BUCKET, "key": k, "url": "u", "size": 3 * MIB + 17, "etag": null,
            "access": "PUBLIC", "dest": d})
        .to_string()
    };
    let mut lines: Vec<String> = [
        "../escape.fits",
        "/tmp/abs.fits",
        "a\\..\\b.fits",
        "a//b.fits",
        "a/./b",
        "ok/x\u{0}y",
    ]
    .iter()
    .map(|d| entry(d))
    .collect();
    lines.push(entry("good/file.fits"));
    let plan = dir.path().join("evil.jsonl");
    std::fs::write(&plan, lines.join("\n")).unwrap();
    let out = run(
        &s3.endpoint,
        &[
            "get",
            &format!("@{}", plan.display()),
            "mast:JWST/product/..",
            "--dest",
            dest.to_str().unwrap(),
            "--s3-only",
        ],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("unsafe destination"), "{err}");
    assert!(err.contains("escape.fits"), "{err}");
    assert!(dest.join("good/file.fits").is_file());
    // Nothing appeared beside the destination.
    let beside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside.len(), 2, "{beside:?}");
    assert!(!Path::new("/tmp/abs.fits").exists());
}

#[test]
fn a_second_writer_is_refused() {
    let s3 = TestS3::start(&[BUCKET]);
    s3.put(BUCKET, &key(I2D), &data(40, 4 * MIB));
    s3.inject(
        "GET",
        &key(I2D),
        100,
        Fault::Delay(Duration::from_millis(300)),
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().to_str().unwrap();
    let args = [
        "get",
        I2D,
        "--dest",
        dest,
        "--part-size",
        "1MiB",
        "--jobs",
        "1",
        "--s3-only",
        "--endpoint-url",
        &s3.endpoint,
    ];
    let mut first = util::mastfetch()
        .args(args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first run holds the lock and is downloading.
    let t = Instant::now();
    while !s3.log().iter().any(|r| r.is_get_object()) {
        assert!(t.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = util::mastfetch().args(args).output().unwrap();
    assert_eq!(code(&second), 2, "{}", stderr(&second));
    assert!(
        stderr(&second).contains("another mastfetch"),
        "{}",
        stderr(&second)
    );
    assert!(first.wait().unwrap().success());
    // Different shards of one plan may share the folder.
    let s0 = run(
        &s3.endpoint,
        &[
            "get",
            I2D,
            "--dest",
            dest,
            "--s3-only",
            "--shards",
            "2",
            "--shard-index",
            "0",
        ],
    );
    assert_eq!(code(&s0), 0, "{}", stderr(&s0));
}

#[test]
fn bad_input_is_a_clear_error() {
    let (s3, _) = seeded();
    let missing = run(&s3.endpoint, &["plan", "@/nonexistent/list.txt"]);
    assert_eq!(code(&missing), 2);
    assert!(
        stderr(&missing).contains("/nonexistent/list.txt"),
        "{}",
        stderr(&missing)
    );
    let size = run(&s3.endpoint, &["get", CAL, "--part-size", "huge"]);
    assert_eq!(code(&size), 2);
    assert!(stderr(&size).contains("huge"));
    let nothing = run(&s3.endpoint, &["plan"]);
    assert_eq!(code(&nothing), 2);
    let unknown = run(
        &s3.endpoint,
        &["plan", "README.md", CAL, "--s3-only", "--format", "jsonl"],
    );
    assert_eq!(code(&unknown), 1);
    assert!(
        stderr(&unknown).contains("README.md"),
        "{}",
        stderr(&unknown)
    );
    assert_eq!(
        util::jsonl(&util::stdout(&unknown)).len(),
        1,
        "the good item is still planned"
    );
}

#[test]
fn json_events_parse_line_by_line() {
    let (s3, _) = seeded();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &s3.endpoint,
        &[
            "get",
            CAL,
            RATE,
            "--dest",
            dir.path().to_str().unwrap(),
            "--s3-only",
            "--json",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let events = util::jsonl(&util::stdout(&out));
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"plan"));
    assert_eq!(kinds.last(), Some(&"summary"));
    assert_eq!(kinds.iter().filter(|k| **k == "file").count(), 2);
    assert_eq!(events.last().unwrap()["ok"], 2);
}

#[test]
fn content_that_does_not_match_its_md5_etag_is_fetched_again_or_fails() {
    let (s3, files) = seeded();
    let dir = tempfile::tempdir().unwrap();
    // Once damaged: the MD5 check catches it and the file is fetched again.
    s3.inject("GET", &key(HST), 1, Fault::Corrupt);
    let out = run(
        &s3.endpoint,
        &[
            "get",
            HST,
            "--dest",
            dir.path().to_str().unwrap(),
            "--s3-only",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did not match its ETag"),
        "{}",
        stderr(&out)
    );
    let want = &files.iter().find(|(f, _)| *f == HST).unwrap().1;
    assert!(std::fs::read(dir.path().join(nested(HST))).unwrap() == *want);

    // Always damaged: the file fails, nothing damaged is put in place.
    s3.inject("GET", &key(CAL), 100, Fault::Corrupt);
    let d2 = dir.path().join("two");
    let out = run(
        &s3.endpoint,
        &[
            "get",
            CAL,
            "--dest",
            d2.to_str().unwrap(),
            "--s3-only",
            "--part-size",
            "1MiB",
        ],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not match the ETag"),
        "{}",
        stderr(&out)
    );
    assert!(!d2.join(nested(CAL)).exists());

    // With --no-md5 the damage goes unnoticed at download time (SHA-256 is of what arrived).
    s3.clear_faults();
    s3.inject("GET", &key(RATE), 1, Fault::Corrupt);
    let d3 = dir.path().join("three");
    let out = run(
        &s3.endpoint,
        &[
            "get",
            RATE,
            "--dest",
            d3.to_str().unwrap(),
            "--s3-only",
            "--no-md5",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let want = &files.iter().find(|(f, _)| *f == RATE).unwrap().1;
    assert!(std::fs::read(d3.join(nested(RATE))).unwrap() != *want);
}

/// S3's request-rate limit, scaled down: above 40 requests/s (a burst of 4) the server answers
/// 503 SlowDown. With `--retries 0` a request that backed off on its own would fail its file at
/// the first one; the run's shared rate sends it again, paced, while others get through.
#[test]
fn a_request_rate_limit_slows_the_run_and_fails_no_file() {
    let s3 = TestS3::start(&[BUCKET]);
    let mut files = vec![("limited/big.fits".to_string(), data(7, 3 * MIB + 5))];
    for i in 0..100 {
        files.push((format!("limited/small_{i:03}.fits"), data(100 + i, 20_000)));
    }
    for (k, d) in &files {
        s3.put(BUCKET, k, d);
    }
    s3.limit_rate(Some(40.0), 4.0);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let out = run(
        &s3.endpoint,
        &[
            "get",
            &format!("s3://{BUCKET}/limited/"),
            "--layout",
            "mirror",
            "--dest",
            dest.to_str().unwrap(),
            "--part-size",
            "1MiB",
            "--jobs",
            "16",
            "--retries",
            "0",
        ],
    );
    let slowdowns = s3.slowdowns();
    eprintln!("503 SlowDown answers: {slowdowns}");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for (k, d) in &files {
        assert!(std::fs::read(dest.join(k)).unwrap() == *d, "{k}");
    }
    assert_eq!(manifest(&dest).len(), files.len());
    assert!(
        slowdowns > 0,
        "the limit was never reached: the test proves nothing"
    );
}

/// A GET answered far later than its peers (here: held 3 s, its peers answer in milliseconds)
/// is sent once more after the hedge threshold; the first answer wins and the file verifies.
#[test]
fn a_slow_answer_is_hedged_and_the_file_verifies() {
    let s3 = TestS3::start(&[BUCKET]);
    // Fetched largest first: the slow one is last, after enough answers to know the peers'.
    let mut files = vec![("hedged/slow.fits".to_string(), data(8, 5_000))];
    for i in 0..40 {
        files.push((format!("hedged/peer_{i:02}.fits"), data(200 + i, 10_000)));
    }
    for (k, d) in &files {
        s3.put(BUCKET, k, d);
    }
    s3.inject(
        "GET",
        "hedged/slow.fits",
        1,
        Fault::Delay(Duration::from_secs(3)),
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let out = run(
        &s3.endpoint,
        &[
            "get",
            &format!("s3://{BUCKET}/hedged/"),
            "--layout",
            "mirror",
            "--dest",
            dest.to_str().unwrap(),
            "--jobs",
            "4",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for (k, d) in &files {
        assert!(std::fs::read(dest.join(k)).unwrap() == *d, "{k}");
    }
    let gets = |k: &str| {
        s3.log()
            .iter()
            .filter(|r| r.is_get_object() && r.path.ends_with(k))
            .count()
    };
    assert_eq!(gets("hedged/slow.fits"), 2, "the slow GET was hedged once");
    assert_eq!(
        gets("hedged/peer_00.fits"),
        1,
        "answers in time are not hedged"
    );
}

#[test]
fn signed_requests_go_through_the_sdk_with_the_same_checks() {
    let (s3, files) = seeded();
    let k = key(I2D);
    s3.inject("GET", &k, 1, Fault::SlowDown);
    s3.inject("GET", &k, 1, Fault::Truncate(50_000));
    let dir = tempfile::tempdir().unwrap();
    let out = util::mastfetch()
        .args([
            "get",
            I2D,
            "--dest",
            dir.path().to_str().unwrap(),
            "--s3-only",
            "--sign",
        ])
        .args(["--part-size", "1MiB", "--endpoint-url", &s3.endpoint])
        .env("AWS_ACCESS_KEY_ID", crate::s3server::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", crate::s3server::SECRET_KEY)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let want = &files.iter().find(|(f, _)| *f == I2D).unwrap().1;
    assert!(std::fs::read(dir.path().join(nested(I2D))).unwrap() == *want);
    let gets: Vec<_> = s3.log().into_iter().filter(|r| r.is_get_object()).collect();
    let ranges: Vec<_> = gets.iter().map(|r| r.range.clone()).collect();
    assert!(
        gets.len() >= 8,
        "6 parts and 2 faulted attempts: {ranges:?}"
    );
    assert!(
        gets.iter().all(|r| r
            .headers
            .iter()
            .any(|h| h.starts_with("authorization: AWS4-HMAC-SHA256"))),
        "every GET is signed"
    );
    // Anonymous runs send no Authorization header at all.
    s3.clear_log();
    let d2 = dir.path().join("anon");
    let out = run(
        &s3.endpoint,
        &["get", I2D, "--dest", d2.to_str().unwrap(), "--s3-only"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(s3
        .log()
        .iter()
        .all(|r| !r.headers.iter().any(|h| h.starts_with("authorization"))));
}

/// Small files wait on the first byte, not on bandwidth: `--jobs auto` keeps more of them in
/// flight than its bulk budget (128 requests), while `--jobs N` keeps to N whatever the size.
#[test]
fn small_files_are_in_flight_beyond_the_bulk_budget() {
    let s3 = TestS3::start(&[BUCKET]);
    let files: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("many/f_{i:03}.fits"), data(300 + i, 2_000)))
        .collect();
    for (k, d) in &files {
        s3.put(BUCKET, k, d);
    }
    let fetch = |dest: &Path, extra: &[&str]| {
        let mut args = vec![
            "get",
            "--layout",
            "mirror",
            "--dest",
            dest.to_str().unwrap(),
        ];
        let item = format!("s3://{BUCKET}/many/");
        args.push(&item);
        args.extend_from_slice(extra);
        let out = run(&s3.endpoint, &args);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        for (k, d) in &files {
            assert!(std::fs::read(dest.join(k)).unwrap() == *d, "{k}");
        }
    };
    let dir = tempfile::tempdir().unwrap();
    s3.delay_gets(Some(Duration::from_secs(1)));
    fetch(&dir.path().join("auto"), &[]);
    let auto = s3.most_gets_in_flight();
    assert!(auto > 128, "at most {auto} GETs in flight with --jobs auto");

    s3.delay_gets(Some(Duration::from_millis(50)));
    fetch(&dir.path().join("eight"), &["--jobs", "8"]);
    let eight = s3.most_gets_in_flight();
    // A GET answered far later than its peers may be sent once more (hedged): at most 2 more.
    assert!(
        (8..=10).contains(&eight),
        "{eight} GETs in flight with --jobs 8"
    );
}
