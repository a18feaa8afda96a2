//! `get --dest s3://BUCKET/PREFIX/` and `verify s3://...` against one local S3 server holding
//! both buckets (the public archive, read anonymously; the user's own, which wants a signature
//! for every request) and the MAST stand-in: products land with the archive's keys and bytes,
//! the server counts no object byte through the client for bucket-to-bucket copies, large
//! objects go in parts, a MAST-only product is streamed into a multipart upload, a rerun copies
//! nothing, a reprocessed source is copied again, an interrupted run leaves no multipart upload
//! behind, and a refused write names the bucket and the action.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::mast_server::{Catalog, MastServer, Observation, Product};
use crate::s3server::{Fault, TestS3, ACCESS_KEY, SECRET_KEY};
use crate::util::{self, code, show};

const ARCHIVE: &str = "stpubdata";
const MINE: &str = "mine";
const DEST: &str = "s3://mine/jwst/";
/// `get` of the test program into the destination bucket, with sizes small enough that the
/// 12 MiB product is copied in parts.
const GET: &[&str] = &[
    "get",
    "--program",
    "1234",
    "--catalog",
    "mast",
    "--dest",
    DEST,
    "--copy-threshold",
    "8MiB",
    "--copy-part-size",
    "5MiB",
    "--no-progress",
];
const MIB: usize = 1 << 20;
const TOKEN: &str = "mtk-bucket-test-token";

const CAL: &str = "jw01234001001_02101_00001_nrcb1_cal.fits";
const RATE: &str = "jw01234001001_02101_00001_nrcb1_rate.fits";
const UNCAL: &str = "jw01234001001_02101_00001_nrcb1_uncal.fits";
/// Not in the bucket yet: only MAST serves it.
const MIRI: &str = "jw01234001001_02101_00001_mirimage_cal.fits";

fn product(filename: &str, data: Vec<u8>, in_bucket: bool) -> Product {
    let d = mastfetch::names::derive("JWST", filename).unwrap();
    let suffix = mastfetch::names::suffix(filename).to_ascii_uppercase();
    Product {
        uri: format!("mast:JWST/product/{filename}"),
        filename: filename.into(),
        obs_id: d.obs_id,
        obs_collection: "JWST".into(),
        listed_under: vec![1001],
        product_type: "SCIENCE".into(),
        group: None,
        subgroup: suffix,
        calib_level: 2,
        data_rights: "PUBLIC".into(),
        proposal_id: "1234".into(),
        data,
        cloud_key: in_bucket.then_some(d.key),
    }
}

struct World {
    s3: TestS3,
    mast: MastServer,
    catalog: Catalog,
}

impl World {
    /// Program 1234: a legacy object (ETag only), a recent one (CRC-64/NVME), a 12 MiB
    /// multipart object (copied in parts with a 8 MiB threshold) and a MAST-only product.
    fn new() -> World {
        let catalog = Catalog {
            observations: vec![Observation {
                obsid: 1001,
                obs_id: "jw01234001001_02101_00001_nrcb1".into(),
                obs_collection: "JWST".into(),
                instrument_name: "NIRCAM/IMAGE".into(),
                proposal_id: "1234".into(),
                calib_level: 2,
            }],
            products: vec![
                product(CAL, util::data(1, 300_001), true),
                product(RATE, util::data(2, 2 * MIB + 5), true),
                product(UNCAL, util::data(3, 12 * MIB + 77), true),
                product(MIRI, util::data(4, 6 * MIB + 3), false),
            ],
        };
        let s3 = TestS3::start(&[ARCHIVE]);
        s3.private_bucket(MINE);
        for p in &catalog.products {
            let Some(k) = &p.cloud_key else { continue };
            match p.filename.as_str() {
                CAL => s3.put(ARCHIVE, k, &p.data),
                _ => s3.put_sdk(ARCHIVE, k, &p.data, 8 * MIB),
            }
        }
        let mast = MastServer::start(catalog.clone(), TOKEN);
        World { s3, mast, catalog }
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = util::mastfetch();
        c.args(args)
            .args(["--endpoint-url", &self.s3.endpoint])
            .args(["--mast-url", &self.mast.url])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        c
    }

    fn get(&self, extra: &[&str]) -> Output {
        let mut args = GET.to_vec();
        args.extend(extra);
        self.command(&args).output().unwrap()
    }

    fn verify(&self, extra: &[&str]) -> Output {
        let mut args = vec!["verify", DEST, "--format", "jsonl"];
        args.extend(extra);
        self.command(&args).output().unwrap()
    }

    fn key(&self, filename: &str) -> String {
        mastfetch::names::derive("JWST", filename).unwrap().key
    }

    fn data(&self, filename: &str) -> &[u8] {
        let p = self
            .catalog
            .products
            .iter()
            .find(|p| p.filename == filename);
        &p.unwrap().data
    }

    fn copy_in_mine(&self, filename: &str) -> Vec<u8> {
        let path = format!("jwst/{}", self.key(filename));
        std::fs::read(self.s3.path_of(MINE, &path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn manifest(&self) -> Vec<serde_json::Value> {
        let path = self.s3.path_of(MINE, "jwst/mastfetch-manifest.jsonl");
        util::jsonl(&std::fs::read_to_string(path).unwrap())
    }

    /// Copy requests the destination saw: CopyObject and UploadPartCopy.
    fn copies(&self) -> Vec<String> {
        let log = self.s3.log();
        log.iter()
            .filter(|l| l.method == "PUT" && l.path.starts_with("/mine/"))
            .filter(|l| {
                l.headers
                    .iter()
                    .any(|h| h.starts_with("x-amz-copy-source:"))
            })
            .map(|l| format!("{}?{}", l.path, l.query))
            .collect()
    }
}

#[test]
fn program_lands_in_own_bucket_server_side_and_rerun_copies_nothing() {
    let w = World::new();
    let out = w.get(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    for f in [CAL, RATE, UNCAL, MIRI] {
        assert!(w.copy_in_mine(f) == w.data(f), "{f}: bytes differ");
    }
    // No object byte of the archive went to the client; the only bytes it sent the
    // destination are the MAST-only product's and the manifest's.
    let read: u64 = w.s3.sent(ARCHIVE).values().sum();
    assert_eq!(
        read,
        0,
        "archive bytes read by the client: {:?}",
        w.s3.sent(ARCHIVE)
    );
    let mut written = w.s3.received(MINE);
    let manifest = written.remove("jwst/mastfetch-manifest.jsonl");
    assert!(manifest.is_some_and(|n| n > 0));
    let miri = format!("jwst/{}", w.key(MIRI));
    assert_eq!(written.remove(&miri), Some(w.data(MIRI).len() as u64));
    assert!(
        written.is_empty(),
        "object bytes through the client: {written:?}"
    );
    let said = util::stderr(&out);
    let requests = said
        .lines()
        .find(|l| l.contains("CopyObject"))
        .unwrap_or("");
    println!("bucket: first run: {requests}; archive bytes read by the client: {read}");

    // The 12 MiB object in three 5 MiB parts (UploadPartCopy), the others in one CopyObject.
    let copies = w.copies();
    let uncal = format!("/mine/jwst/{}", w.key(UNCAL));
    let parts = copies
        .iter()
        .filter(|c| c.starts_with(&uncal) && c.contains("partNumber="))
        .count();
    assert_eq!(parts, 3, "{copies:#?}");
    assert_eq!(copies.len(), 3 + 2, "{copies:#?}");
    // Every copy pinned to the source's ETag.
    for l in w.s3.log().iter().filter(|l| l.path.starts_with("/mine/")) {
        let copy = l
            .headers
            .iter()
            .any(|h| h.starts_with("x-amz-copy-source:"));
        let pinned = l
            .headers
            .iter()
            .any(|h| h.starts_with("x-amz-copy-source-if-match:"));
        assert_eq!(copy, pinned, "{l:?}");
    }
    // The MAST-only product went through a multipart upload.
    let log = w.s3.log();
    let mast_parts = log.iter().filter(|l| {
        l.method == "PUT" && l.path == format!("/mine/{miri}") && l.query.contains("partNumber=")
    });
    assert!(mast_parts.count() >= 1);

    let m = w.manifest();
    assert_eq!(m.len(), 4, "{m:#?}");
    for e in &m {
        assert_eq!(e["status"], "ok", "{e}");
        let name = e["path"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        let data = w.data(&name);
        assert_eq!(e["crc64nvme"], crate::s3server::crc64nvme_b64(data), "{e}");
        assert_eq!(e["size"], data.len() as u64);
        let want = match name.as_str() {
            CAL => "etag",
            MIRI => "size",
            _ => "checksum",
        };
        assert_eq!(e["verified"], want, "{e}");
    }
    assert!(w.s3.uploads(MINE).is_empty());

    // A rerun: one listing per destination folder, no copy and no upload.
    w.s3.clear_log();
    w.s3.reset_counts();
    let again = w.get(&[]);
    assert_eq!(code(&again), 0, "{}", show(&again));
    assert!(w.copies().is_empty(), "{:#?}", w.copies());
    let puts: Vec<_> =
        w.s3.log()
            .into_iter()
            .filter(|l| l.method == "PUT")
            .collect();
    assert!(
        puts.iter()
            .all(|l| l.path.ends_with("mastfetch-manifest.jsonl")),
        "{puts:#?}"
    );
    let m = w.manifest();
    assert!(m.iter().all(|e| e["status"] == "skipped"), "{m:#?}");
    let said = util::stderr(&again);
    let requests = said
        .lines()
        .find(|l| l.contains("CopyObject"))
        .unwrap_or("");
    println!("bucket: rerun: {requests}");

    let ok = w.verify(&[]);
    assert_eq!(code(&ok), 0, "{}", show(&ok));
    let remote = w.verify(&["--remote"]);
    assert_eq!(code(&remote), 0, "{}", show(&remote));

    // A copy overwritten in the bucket (same size, other bytes): verify says so, and the next
    // run sees its new ETag in the listing and copies it again.
    let mut bad = w.copy_in_mine(RATE);
    bad[10] ^= 1;
    w.s3.overwrite(MINE, &format!("jwst/{}", w.key(RATE)), &bad);
    let found = w.verify(&[]);
    assert_eq!(code(&found), 1, "{}", show(&found));
    let lines = util::jsonl(&util::stdout(&found));
    let rate = lines
        .iter()
        .find(|l| l["path"].as_str().unwrap().ends_with(RATE));
    assert_eq!(rate.unwrap()["status"], "corrupt", "{lines:#?}");
    w.s3.clear_log();
    let mend = w.get(&[]);
    assert_eq!(code(&mend), 0, "{}", show(&mend));
    assert_eq!(w.copies().len(), 1, "{:#?}", w.copies());
    assert!(w.copy_in_mine(RATE) == w.data(RATE));
    let ok = w.verify(&[]);
    assert_eq!(code(&ok), 0, "{}", show(&ok));
}

#[test]
fn reprocessed_source_is_copied_again() {
    let w = World::new();
    let out = w.get(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    // The archive reprocesses the rate file: new bytes, new ETag and checksum.
    let new = util::data(99, 2 * MIB + 5);
    w.s3.put_sdk(ARCHIVE, &w.key(RATE), &new, 8 * MIB);
    w.s3.clear_log();
    let again = w.get(&[]);
    assert_eq!(code(&again), 0, "{}", show(&again));
    let copies = w.copies();
    assert_eq!(copies.len(), 1, "{copies:#?}");
    assert!(copies[0].contains(&w.key(RATE)));
    assert!(w.copy_in_mine(RATE) == new);
    let m = w.manifest();
    let rate = m
        .iter()
        .find(|e| e["path"].as_str().unwrap().ends_with(RATE));
    assert_eq!(rate.unwrap()["status"], "ok");
    // `--remote` tells a copy of the old object from a current one.
    w.s3.put_sdk(
        ARCHIVE,
        &w.key(UNCAL),
        &util::data(98, 12 * MIB + 77),
        8 * MIB,
    );
    let stale = w.verify(&["--remote"]);
    assert_eq!(code(&stale), 1, "{}", show(&stale));
    assert!(
        util::stdout(&stale).contains("\"stale\""),
        "{}",
        show(&stale)
    );
}

#[test]
fn source_reprocessed_mid_copy_is_looked_up_and_copied_again() {
    let w = World::new();
    let new = util::data(97, 300_001);
    w.s3.replace_on_copy(&w.key(CAL), new.clone());
    let out = w.get(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    // The first copy, pinned to the planned ETag, was refused (412); the second took the new.
    let cal: Vec<_> = w.copies().into_iter().filter(|c| c.contains(CAL)).collect();
    assert_eq!(cal.len(), 2, "{cal:#?}");
    assert!(w.copy_in_mine(CAL) == new);
    let m = w.manifest();
    let e = m
        .iter()
        .find(|e| e["path"].as_str().unwrap().ends_with(CAL));
    assert_eq!(e.unwrap()["etag"], TestS3::etag_of(&new), "{m:#?}");
}

#[test]
fn interrupted_copy_leaves_no_multipart_upload() {
    let w = World::new();
    let uncal = w.key(UNCAL);
    // Every part copy of the big object waits, so the run can be killed in the middle of it.
    w.s3.inject("PUT", &uncal, 100, Fault::Delay(Duration::from_secs(3)));
    let mut child = w
        .command(GET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while w.s3.uploads(MINE).iter().all(|(k, _)| !k.ends_with(&uncal)) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no upload started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !w.s3.uploads(MINE).is_empty(),
        "the kill left nothing to clean up"
    );
    w.s3.clear_faults();
    w.s3.clear_log();
    let again = w.get(&[]);
    assert_eq!(code(&again), 0, "{}", show(&again));
    // The big object's upload (and the MAST stream's, if it had started) are aborted.
    let said = util::stderr(&again);
    assert!(
        said.contains("multipart uploads an interrupted run left"),
        "{}",
        show(&again)
    );
    assert!(w.s3.uploads(MINE).is_empty(), "{:?}", w.s3.uploads(MINE));
    for f in [CAL, RATE, UNCAL, MIRI] {
        assert!(w.copy_in_mine(f) == w.data(f), "{f}");
    }
    // What the killed run finished is proven where it lies, not copied again.
    let m = w.manifest();
    for e in &m {
        let path = e["path"].as_str().unwrap();
        let copied = w.copies().iter().any(|c| c.contains(path));
        match e["status"].as_str().unwrap() {
            "adopted" => assert!(!copied, "{e}"),
            s => assert_eq!(s, "ok", "{e}"),
        }
    }
}

#[test]
fn refused_writes_name_the_bucket_and_the_action() {
    let w = World::new();
    w.s3.read_only(MINE, true);
    let out = w.get(&[]);
    assert_ne!(code(&out), 0, "{}", show(&out));
    let err = util::stderr(&out);
    assert!(err.contains("s3://mine/jwst/"), "{err}");
    assert!(
        err.contains("CopyObject") && err.contains("s3:PutObject"),
        "{err}"
    );
    assert!(err.contains("AccessDenied"), "{err}");
}

#[test]
fn shards_write_their_own_manifests_in_the_bucket() {
    let w = World::new();
    for k in ["0", "1"] {
        let out = w.get(&["--shards", "2", "--shard-index", k]);
        assert_eq!(code(&out), 0, "{}", show(&out));
    }
    for k in [0, 1] {
        let name = format!("jwst/mastfetch-manifest.shard-{k}-of-2.jsonl");
        assert!(w.s3.path_of(MINE, &name).exists(), "{name}");
    }
    assert!(!w.s3.path_of(MINE, "jwst/mastfetch-manifest.jsonl").exists());
    for f in [CAL, RATE, UNCAL, MIRI] {
        assert!(w.copy_in_mine(f) == w.data(f), "{f}");
    }
    let ok = w.verify(&[]);
    assert_eq!(code(&ok), 0, "{}", show(&ok));
}

#[test]
fn no_credentials_for_the_destination_is_said_at_once() {
    let w = World::new();
    let mut c = w.command(&[
        "get",
        "--program",
        "1234",
        "--catalog",
        "mast",
        "--dest",
        DEST,
    ]);
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", w.s3.root.join("nohome"))
        .env("AWS_CONFIG_FILE", w.s3.root.join("nohome/config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            w.s3.root.join("nohome/credentials"),
        );
    let out = c.output().unwrap();
    assert_eq!(code(&out), 2, "{}", show(&out));
    let err = util::stderr(&out);
    assert!(
        err.contains("s3://mine/jwst/") && err.contains("credentials"),
        "{err}"
    );
    assert!(!err.contains("retrying"), "{err}");
}

#[test]
fn copies_already_there_without_a_record_are_proven_not_copied() {
    let w = World::new();
    // Copies made before, by another tool or by a run killed before its manifest was written:
    // the legacy object (plain MD5 ETag) and a recent one (CRC-64/NVME); a third of the right
    // size but other bytes.
    for f in [CAL, RATE] {
        w.s3.overwrite(MINE, &format!("jwst/{}", w.key(f)), w.data(f));
    }
    let mut wrong = w.data(UNCAL).to_vec();
    wrong[0] ^= 1;
    w.s3.overwrite(MINE, &format!("jwst/{}", w.key(UNCAL)), &wrong);
    let out = w.get(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let copies = w.copies();
    assert!(
        copies.iter().all(|c| !c.contains(CAL) && !c.contains(RATE)),
        "{copies:#?}"
    );
    assert!(copies.iter().any(|c| c.contains(UNCAL)), "{copies:#?}");
    assert!(w.copy_in_mine(UNCAL) == w.data(UNCAL));
    let m = w.manifest();
    let status = |f: &str| {
        let e = m.iter().find(|e| e["path"].as_str().unwrap().ends_with(f));
        (e.unwrap()["status"].clone(), e.unwrap()["verified"].clone())
    };
    assert_eq!(status(CAL), ("adopted".into(), "etag".into()));
    assert_eq!(status(RATE), ("adopted".into(), "checksum".into()));
    assert_eq!(status(UNCAL).0, "ok");
    let ok = w.verify(&[]);
    assert_eq!(code(&ok), 0, "{}", show(&ok));
}

#[test]
fn bucket_flags_are_checked_before_anything_is_sent() {
    let run = |args: &[&str]| util::mastfetch().args(args).output().unwrap();
    let folder = run(&["get", CAL, "--dest", "here", "--dest-region", "eu-west-1"]);
    assert_eq!(code(&folder), 2, "{}", show(&folder));
    assert!(util::stderr(&folder).contains("s3://BUCKET/PREFIX/"));
    let sha = run(&["get", CAL, "--dest", DEST, "--sha256"]);
    assert_eq!(code(&sha), 2, "{}", show(&sha));
    assert!(util::stderr(&sha).contains("--sha256"), "{}", show(&sha));
    let part = run(&["get", CAL, "--dest", DEST, "--copy-part-size", "1MiB"]);
    assert_eq!(code(&part), 2, "{}", show(&part));
    assert!(
        util::stderr(&part).contains("5MiB to 5GiB"),
        "{}",
        show(&part)
    );
    let no_bucket = run(&["get", CAL, "--dest", "s3:///x"]);
    assert_eq!(code(&no_bucket), 2, "{}", show(&no_bucket));
}
