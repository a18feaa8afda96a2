//! Every file proven against what the archive publishes: objects seeded as a current SDK
//! uploads them (full-object CRC-64/NVME; multipart `md5-N` ETags over varied part sizes) and
//! legacy ones (ETag only), one-byte corruptions caught and fetched again for every class,
//! lying ETags and checksums ending `failed` with nothing in place, resume after kill -9 that
//! re-checks the bytes it kept, opt-in SHA-256, and `verify` through `crc64nvme`.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::s3server::{crc64nvme_b64, Fault, Meta, TestS3};
use crate::util::{self, code, data, run, stderr};

const BUCKET: &str = "stpubdata";
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn key(name: &str) -> String {
    format!("proof/{name}")
}

/// `get s3://bucket/proof/<names> --layout flat` with 1 MiB parts.
fn get(s3: &TestS3, dest: &Path, names: &[&str], extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["get".into()];
    args.extend(names.iter().map(|n| format!("s3://{BUCKET}/{}", key(n))));
    for a in [
        "--dest",
        dest.to_str().unwrap(),
        "--layout",
        "flat",
        "--part-size",
        "1MiB",
        "--s3-only",
        "--no-progress",
    ] {
        args.push(a.into());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&s3.endpoint, &refs)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn line<'a>(m: &'a [Value], name: &str) -> &'a Value {
    m.iter()
        .find(|e| e["path"] == name)
        .unwrap_or_else(|| panic!("{name} not in {m:#?}"))
}

/// What the manifest must say the file was proven against.
fn published(s3: &TestS3, name: &str, data: &[u8]) -> (String, &'static str) {
    match s3.meta(BUCKET, &key(name)) {
        Some(Meta {
            checksum: Some((alg, value)),
            ..
        }) => (format!("{alg}:{value}"), "checksum"),
        Some(m) => (format!("etag:{}", m.etag), "etag"),
        None => (format!("etag:{}", TestS3::etag_of(data)), "etag"),
    }
}

#[test]
fn every_class_is_proven_and_a_flipped_byte_is_fetched_again() {
    let s3 = TestS3::start(&[BUCKET]);
    let objects: Vec<(&str, Vec<u8>)> = vec![
        // Recent, one PUT, fetched by one GET: the CRC comes with the answer.
        ("recent-small.fits", data(1, 300 * KIB + 5)),
        // Recent, multipart upload in 1 MiB parts, fetched in parts: one HEAD gives the CRC.
        ("recent-multipart.fits", data(2, 3 * MIB + 700 * KIB)),
        // Recent, one PUT but larger than a download part.
        ("recent-big-put.fits", data(3, 2 * MIB + 3)),
        // Old multipart uploads: only an `md5-N` ETag, parts of varied sizes.
        ("old-multipart-varied.fits", data(4, 3 * MIB + 200 * KIB)),
        ("old-multipart-equal.fits", data(5, 2 * MIB + 512 * KIB)),
        // An old multipart object small enough for one GET.
        ("old-multipart-small.fits", data(6, 500 * KIB)),
        // Legacy single PUTs: plain-MD5 ETag, fetched in parts and in one GET.
        ("old-put-big.fits", data(7, 2 * MIB + 100 * KIB)),
        ("old-put-small.fits", data(8, 200 * KIB)),
        // Uploaded with CRC-32C as its full-object checksum (an SDK told to use it).
        ("crc32c-multipart.fits", data(9, 2 * MIB + 999)),
    ];
    let by = |n: &str| &objects.iter().find(|(k, _)| *k == n).unwrap().1;
    s3.put_sdk(
        BUCKET,
        &key("recent-small.fits"),
        by("recent-small.fits"),
        8 * MIB,
    );
    s3.put_sdk(
        BUCKET,
        &key("recent-multipart.fits"),
        by("recent-multipart.fits"),
        MIB,
    );
    s3.put_sdk(
        BUCKET,
        &key("recent-big-put.fits"),
        by("recent-big-put.fits"),
        8 * MIB,
    );
    let varied = [
        1536 * KIB as u64,
        MIB as u64,
        300 * KIB as u64,
        412 * KIB as u64,
    ];
    s3.put_multipart(
        BUCKET,
        &key("old-multipart-varied.fits"),
        by("old-multipart-varied.fits"),
        &varied,
        false,
    );
    let equal = [MIB as u64, MIB as u64, 512 * KIB as u64];
    s3.put_multipart(
        BUCKET,
        &key("old-multipart-equal.fits"),
        by("old-multipart-equal.fits"),
        &equal,
        false,
    );
    let small = [300 * KIB as u64, 200 * KIB as u64];
    s3.put_multipart(
        BUCKET,
        &key("old-multipart-small.fits"),
        by("old-multipart-small.fits"),
        &small,
        false,
    );
    s3.put(BUCKET, &key("old-put-big.fits"), by("old-put-big.fits"));
    s3.put(BUCKET, &key("old-put-small.fits"), by("old-put-small.fits"));
    let c = by("crc32c-multipart.fits");
    s3.put_multipart(
        BUCKET,
        &key("crc32c-multipart.fits"),
        c,
        &[MIB as u64, MIB as u64, 999],
        false,
    );
    let mut m = s3.meta(BUCKET, &key("crc32c-multipart.fits")).unwrap();
    let crc32c = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, c) as u32;
    m.checksum = Some(("crc32c".into(), b64(&crc32c.to_be_bytes())));
    s3.set_meta(BUCKET, &key("crc32c-multipart.fits"), m);
    for (name, _) in &objects {
        s3.inject("GET", &key(name), 1, Fault::Corrupt);
    }
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<&str> = objects.iter().map(|(n, _)| *n).collect();
    let out = get(&s3, dir.path(), &names, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let m = util::manifest(dir.path());
    for (name, want) in &objects {
        let got = std::fs::read(dir.path().join(name)).unwrap();
        assert!(got == *want, "{name} differs");
        let e = line(&m, name);
        assert_eq!(e["status"], "ok", "{e}");
        let (checksum, verified) = published(&s3, name, want);
        assert_eq!(e["checksum"], checksum.as_str(), "{e}");
        assert_eq!(e["verified"], verified, "{e}");
        assert_eq!(e["crc64nvme"], crc64nvme_b64(want), "{e}");
        assert!(e.get("sha256").is_none(), "sha256 is opt-in: {e}");
        assert!(
            stderr(&out).contains(&format!("{name}: content did not match its")),
            "{name} not fetched again: {}",
            stderr(&out)
        );
    }
    assert!(
        !dir.path().join("SHA256SUMS").exists(),
        "SHA256SUMS is opt-in"
    );
    let log = s3.log();
    // Whole-object GETs asked for the checksum; ranged ones did not need to.
    assert!(log
        .iter()
        .filter(|r| r.is_get_object() && r.range.is_none())
        .all(|r| r
            .headers
            .iter()
            .any(|h| h == "x-amz-checksum-mode: ENABLED")));

    // A rerun skips every file and keeps what proved it.
    let again = get(&s3, dir.path(), &names, &[]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    for e in util::manifest(dir.path()) {
        assert_eq!(e["status"], "skipped", "{e}");
        assert!(
            e["crc64nvme"].is_string() && e["verified"].is_string(),
            "{e}"
        );
    }
}

#[test]
fn lying_archives_end_failed_with_nothing_in_place() {
    let s3 = TestS3::start(&[BUCKET]);
    let a = data(10, 100 * KIB);
    let b = data(11, 3 * MIB + 1);
    let c = data(12, 2 * MIB + 77);
    let d = data(13, 50 * KIB);
    // A CRC that is not the object's, on a single GET and on a multi-part file.
    s3.put_sdk(BUCKET, &key("crc-lie.fits"), &a, 8 * MIB);
    s3.put_sdk(BUCKET, &key("crc-lie-big.fits"), &b, MIB);
    for (name, body) in [("crc-lie.fits", &a), ("crc-lie-big.fits", &b)] {
        let mut m = s3.meta(BUCKET, &key(name)).unwrap();
        m.checksum = Some(("crc64nvme".into(), crc64nvme_b64(&body[1..])));
        s3.set_meta(BUCKET, &key(name), m);
    }
    // A multipart ETag over other bytes, and a plain ETag that is not the MD5.
    s3.put_multipart(
        BUCKET,
        &key("etag-lie-multipart.fits"),
        &c,
        &[MIB as u64, MIB as u64, 77],
        false,
    );
    let mut m = s3.meta(BUCKET, &key("etag-lie-multipart.fits")).unwrap();
    m.etag = crate::s3server::multipart_etag(&data(14, c.len()), m.parts.as_ref().unwrap());
    let lie_etag = m.etag.clone();
    s3.set_meta(BUCKET, &key("etag-lie-multipart.fits"), m);
    s3.put(BUCKET, &key("etag-lie.fits"), &d);
    s3.set_meta(
        BUCKET,
        &key("etag-lie.fits"),
        Meta {
            etag: TestS3::etag_of(b"something else"),
            checksum: None,
            parts: None,
        },
    );
    let good = data(15, 10 * KIB);
    s3.put_sdk(BUCKET, &key("good.fits"), &good, 8 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "crc-lie.fits",
        "crc-lie-big.fits",
        "etag-lie-multipart.fits",
        "etag-lie.fits",
        "good.fits",
    ];
    let out = get(&s3, dir.path(), &names, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let m = util::manifest(dir.path());
    for name in &names[..4] {
        let e = line(&m, name);
        assert_eq!(e["status"], "failed", "{e}");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains("does not match"), "{msg}");
        assert!(e["crc64nvme"].is_null() && e["verified"].is_null(), "{e}");
        // Nothing that failed its check is in place, nor left to be resumed.
        let left: Vec<String> = util::files_under(dir.path())
            .into_iter()
            .filter(|f| f.contains(*name))
            .collect();
        assert!(left.is_empty(), "{name}: {left:?}");
    }
    // Both values are named.
    let e = line(&m, "crc-lie.fits");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(&crc64nvme_b64(&a)) && msg.contains(&crc64nvme_b64(&a[1..])),
        "{msg}"
    );
    let msg = line(&m, "etag-lie-multipart.fits")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains(&lie_etag)
            && msg.contains(&crate::s3server::multipart_etag(
                &c,
                &[MIB as u64, MIB as u64, 77]
            )),
        "{msg}"
    );
    assert_eq!(line(&m, "good.fits")["status"], "ok");
    assert!(std::fs::read(dir.path().join("good.fits")).unwrap() == good);
}

#[test]
fn a_server_without_part_numbers_leaves_size_only_never_a_false_failure() {
    let s3 = TestS3::start(&[BUCKET]);
    let body = data(20, 2 * MIB + 5);
    s3.put_multipart(
        BUCKET,
        &key("old.fits"),
        &body,
        &[MIB as u64, MIB as u64, 5],
        false,
    );
    s3.ignore_part_number(true);
    let dir = tempfile::tempdir().unwrap();
    let out = get(&s3, dir.path(), &["old.fits"], &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let e = util::manifest(dir.path()).remove(0);
    assert_eq!(e["status"], "ok", "{e}");
    assert_eq!(e["verified"], "size", "{e}");
    assert!(e["checksum"].is_null(), "{e}");
    assert!(e["message"].as_str().unwrap().contains("partNumber"), "{e}");
    assert_eq!(e["crc64nvme"], crc64nvme_b64(&body));
    assert!(std::fs::read(dir.path().join("old.fits")).unwrap() == body);

    // A server that refuses partNumber with an error: the same, for a file fetched in parts
    // and for one small enough for a single GET.
    s3.ignore_part_number(false);
    s3.refuse_part_number(true);
    let small = data(21, 300 * KIB);
    s3.put_multipart(
        BUCKET,
        &key("old-small.fits"),
        &small,
        &[200 * KIB as u64, 100 * KIB as u64],
        false,
    );
    let d2 = dir.path().join("two");
    let out = get(&s3, &d2, &["old.fits", "old-small.fits"], &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for e in util::manifest(&d2) {
        assert_eq!(e["status"], "ok", "{e}");
        assert_eq!(e["verified"], "size", "{e}");
    }
    assert!(std::fs::read(d2.join("old-small.fits")).unwrap() == small);

    // A server that answers no HEAD at all: files fetched in parts are proven by what the GETs
    // show (here a plain-MD5 ETag), or kept on their size, never failed.
    s3.refuse_head(true);
    let plain = data(22, 2 * MIB + 9);
    s3.put(BUCKET, &key("plain.fits"), &plain);
    let d3 = dir.path().join("three");
    let out = get(&s3, &d3, &["old.fits", "plain.fits"], &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let m = util::manifest(&d3);
    assert_eq!(line(&m, "plain.fits")["verified"], "etag");
    assert_eq!(line(&m, "old.fits")["verified"], "size");
    assert!(std::fs::read(d3.join("plain.fits")).unwrap() == plain);
    assert!(std::fs::read(d3.join("old.fits")).unwrap() == body);
}

/// Parts finished before a kill -9 are re-read on resume: a byte damaged on disk meanwhile is
/// caught by the full-object checksum and the file is fetched again, not renamed into place.
#[test]
fn resume_after_kill_is_still_verified() {
    for (name, recent) in [("resume-recent.fits", true), ("resume-old.fits", false)] {
        let s3 = TestS3::start(&[BUCKET]);
        let body = data(30, 16 * MIB + 3);
        if recent {
            s3.put_sdk(BUCKET, &key(name), &body, 5 * MIB);
        } else {
            let parts = [
                3 * MIB as u64,
                5 * MIB as u64,
                4 * MIB as u64,
                4 * MIB as u64 + 3,
            ];
            s3.put_multipart(BUCKET, &key(name), &body, &parts, false);
        }
        s3.inject(
            "GET",
            &key(name),
            1000,
            Fault::Delay(Duration::from_millis(300)),
        );
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().to_str().unwrap();
        let uri = format!("s3://{BUCKET}/{}", key(name));
        let args = [
            "get",
            &uri,
            "--dest",
            dest,
            "--layout",
            "flat",
            "--part-size",
            "1MiB",
            "--jobs",
            "1",
            "--s3-only",
            "--endpoint-url",
            &s3.endpoint,
        ];
        let mut child = util::mastfetch()
            .args(args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let final_path = dir.path().join(name);
        let (tmp, state) = mastfetch::dest::temp_paths(dir.path(), name);
        let done = |s: &Path| -> Vec<u64> {
            std::fs::read_to_string(s)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        };
        let t = Instant::now();
        while done(&state).is_empty() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no progress before kill"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let finished = done(&state);
        assert!(
            !final_path.exists(),
            "a partial file was renamed into place"
        );
        // Damage a byte of a finished part in the kept temporary file.
        let mut kept = std::fs::read(&tmp).unwrap();
        kept[100] ^= 0x40;
        std::fs::write(&tmp, &kept).unwrap();
        assert!(finished.contains(&0), "{finished:?}");

        s3.clear_faults();
        let out = run(&s3.endpoint, &args[..11]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(std::fs::read(&final_path).unwrap() == body, "{name}");
        assert!(stderr(&out).contains("did not match"), "{}", stderr(&out));
        let e = util::manifest(dir.path()).remove(0);
        assert_eq!(
            e["verified"],
            if recent { "checksum" } else { "etag" },
            "{e}"
        );
        assert_eq!(e["crc64nvme"], crc64nvme_b64(&body));
        assert!(!state.exists() && !tmp.exists());
    }
}

#[test]
fn sha256_is_opt_in_and_sha256sum_accepts_it() {
    let s3 = TestS3::start(&[BUCKET]);
    let files = [
        ("a.fits", data(40, 3 * MIB + 9)),
        ("b.fits", data(41, 1000)),
    ];
    for (n, d) in &files {
        s3.put_sdk(BUCKET, &key(n), d, MIB);
    }
    let dir = tempfile::tempdir().unwrap();
    // First without: no SHA-256 anywhere.
    let out = get(&s3, dir.path(), &["a.fits", "b.fits"], &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(util::manifest(dir.path())
        .iter()
        .all(|e| e.get("sha256").is_none()));
    assert!(!dir.path().join("SHA256SUMS").exists());
    // A rerun with --sha256 transfers nothing: the skipped files are hashed from disk.
    s3.clear_log();
    let out = get(&s3, dir.path(), &["a.fits", "b.fits"], &["--sha256"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!s3.log().iter().any(|r| r.is_get_object()));
    for (n, d) in &files {
        let e = line(&util::manifest(dir.path()), n).clone();
        assert_eq!(e["status"], "skipped", "{e}");
        assert_eq!(e["sha256"], util::sha256_hex(d));
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("SHA256SUMS"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    let dir = tempfile::tempdir().unwrap();
    s3.clear_log();
    let out = get(&s3, dir.path(), &["a.fits", "b.fits"], &["--sha256"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for (n, d) in &files {
        let e = line(&util::manifest(dir.path()), n).clone();
        assert_eq!(e["sha256"], util::sha256_hex(d));
        assert_eq!(e["verified"], "checksum");
    }
    // A multi-part file costs one HEAD (its full-object checksum); a single GET none.
    let heads: Vec<String> = s3
        .log()
        .into_iter()
        .filter(|r| r.method == "HEAD")
        .map(|r| r.path)
        .collect();
    assert_eq!(heads, [format!("/{BUCKET}/{}", key("a.fits"))]);
    let sums = std::fs::read_to_string(dir.path().join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 2);
    if Path::new("/usr/bin/sha256sum").exists() {
        let ok = std::process::Command::new("sha256sum")
            .args(["-c", "--quiet", "SHA256SUMS"])
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

#[test]
fn verify_catches_a_flipped_byte_through_crc64nvme_and_remote_change() {
    let s3 = TestS3::start(&[BUCKET]);
    let body = data(50, 2 * MIB + 1);
    let small = data(51, 4000);
    s3.put_sdk(BUCKET, &key("v.bin"), &body, MIB);
    s3.put_sdk(BUCKET, &key("w.bin"), &small, MIB);
    let dir = tempfile::tempdir().unwrap();
    let out = get(&s3, dir.path(), &["v.bin", "w.bin"], &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let verify = |extra: &[&str]| {
        util::mastfetch()
            .args(["verify", dir.path().to_str().unwrap(), "--format", "jsonl"])
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = verify(&[]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    let remote = ["--remote", "--endpoint-url", &s3.endpoint];
    let ok = verify(&remote);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));

    // One flipped byte, same size, no FITS keywords to tell: the CRC does.
    let p = dir.path().join("v.bin");
    let mut b = std::fs::read(&p).unwrap();
    b[MIB + 17] ^= 0x02;
    std::fs::write(&p, &b).unwrap();
    let bad = verify(&[]);
    assert_eq!(code(&bad), 1);
    let f = util::jsonl(&util::stdout(&bad));
    let v = f.iter().find(|f| f["path"] == "v.bin").unwrap();
    assert_eq!(v["status"], "corrupt", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("CRC-64/NVME"),
        "{v}"
    );

    // Reprocessed upstream at the same size: the recorded checksum no longer matches.
    let mut m = s3.meta(BUCKET, &key("w.bin")).unwrap();
    m.checksum = Some(("crc64nvme".into(), crc64nvme_b64(&data(52, 4000))));
    s3.set_meta(BUCKET, &key("w.bin"), m);
    let stale = verify(&remote);
    assert_eq!(code(&stale), 1);
    let f = util::jsonl(&util::stdout(&stale));
    let w = f.iter().find(|f| f["path"] == "w.bin").unwrap();
    assert_eq!(w["status"], "stale", "{w}");
}

/// Signed requests go through the AWS SDK, which validates a whole-object checksum itself:
/// the same proofs, the same refetch of a damaged answer.
#[test]
fn signed_requests_are_proven_the_same_way() {
    let s3 = TestS3::start(&[BUCKET]);
    let small = data(60, 70 * KIB);
    let big = data(61, 2 * MIB + 4321);
    let old = data(62, 2 * MIB + 10);
    s3.put_sdk(BUCKET, &key("s-small.fits"), &small, 8 * MIB);
    s3.put_sdk(BUCKET, &key("s-big.fits"), &big, MIB);
    let parts = [1200 * KIB as u64, 848 * KIB as u64, 10];
    s3.put_multipart(BUCKET, &key("s-old.fits"), &old, &parts, false);
    for n in ["s-small.fits", "s-big.fits", "s-old.fits"] {
        s3.inject("GET", &key(n), 1, Fault::Corrupt);
    }
    let dir = tempfile::tempdir().unwrap();
    let uris: Vec<String> = ["s-small.fits", "s-big.fits", "s-old.fits"]
        .iter()
        .map(|n| format!("s3://{BUCKET}/{}", key(n)))
        .collect();
    let out = util::mastfetch()
        .arg("get")
        .args(&uris)
        .args(["--dest", dir.path().to_str().unwrap(), "--layout", "flat"])
        .args(["--s3-only", "--sign", "--part-size", "1MiB"])
        .args(["--endpoint-url", &s3.endpoint])
        .env("AWS_ACCESS_KEY_ID", crate::s3server::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", crate::s3server::SECRET_KEY)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let m = util::manifest(dir.path());
    for (n, body, verified) in [
        ("s-small.fits", &small, "checksum"),
        ("s-big.fits", &big, "checksum"),
        ("s-old.fits", &old, "etag"),
    ] {
        assert!(std::fs::read(dir.path().join(n)).unwrap() == *body, "{n}");
        let e = line(&m, n);
        assert_eq!(e["verified"], verified, "{e}");
        assert_eq!(e["checksum"], published(&s3, n, body).0.as_str(), "{e}");
    }
    assert!(s3
        .log()
        .iter()
        .filter(|r| r.method == "GET" || r.method == "HEAD")
        .all(|r| r
            .headers
            .iter()
            .any(|h| h.starts_with("authorization: AWS4"))));
}
