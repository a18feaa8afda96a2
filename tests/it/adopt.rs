//! Mirrors mastfetch did not write (issue 10): an astroquery-shaped tree, a copy of the
//! bucket's keys (s5cmd, `aws s3 sync`) and a flat folder, each with one corrupted file, one
//! whose object the archive replaced since (stale) and one that is no product. `verify` names
//! exactly those, downloads nothing, and `get` into the tree fetches only them and adopts the
//! rest.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::s3server::TestS3;
use crate::util::{self, data, run, stderr, stdout};

const BUCKET: &str = "stpubdata";
const MIB: usize = 1 << 20;

/// An object of the test archive.
struct Object {
    key: &'static str,
    data: Vec<u8>,
}

const CAL: &str = "jwst/public/jw01234/jw01234001001/jw01234001001_02101_00001_nrcb1_cal.fits";
const RATE: &str = "jwst/public/jw01234/jw01234001001/jw01234001001_02101_00001_nrcb1_rate.fits";
const I2D: &str = "jwst/public/jw01234/L3/t/o001/jw01234-o001_t001_nircam_clear-f200w_i2d.fits";
const UNCAL: &str = "jwst/public/jw01234/jw01234001001/jw01234001001_02101_00001_nrcb1_uncal.fits";
const HST: &str = "hst/public/u9o4/u9o40504m/u9o40504m_c0m.fits";

/// The archive: a small recent upload (plain MD5 + CRC-64/NVME), a large recent multipart one
/// (md5-N + CRC), a large old multipart one (md5-N only: proven over its own parts), and two
/// legacy single-part objects (ETag only).
fn archive() -> (TestS3, Vec<Object>) {
    let s3 = TestS3::start(&[BUCKET]);
    let objects = vec![
        Object {
            key: CAL,
            data: data(1, 300_000),
        },
        Object {
            key: RATE,
            data: data(2, 5 * MIB + 123),
        },
        Object {
            key: I2D,
            data: data(3, 3 * MIB + 7),
        },
        Object {
            key: UNCAL,
            data: data(4, 200_000),
        },
        Object {
            key: HST,
            data: data(5, 100_000),
        },
    ];
    s3.put_sdk(BUCKET, CAL, &objects[0].data, 8 * MIB);
    s3.put_sdk(BUCKET, RATE, &objects[1].data, 2 * MIB);
    let n = objects[2].data.len() as u64;
    let parts = [MIB as u64 + 5, MIB as u64 + 5, n - 2 * (MIB as u64 + 5)];
    s3.put_multipart(BUCKET, I2D, &objects[2].data, &parts, false);
    for o in &objects[3..] {
        s3.put(BUCKET, o.key, &o.data);
    }
    (s3, objects)
}

fn filename(key: &str) -> &str {
    key.rsplit('/').next().unwrap()
}

/// The nested place (`<COLLECTION>/<obs_id>/<file>`) of a key, as astroquery and `get` lay
/// them out.
fn nested(key: &str) -> String {
    let coll = if key.starts_with("hst/") {
        "HST"
    } else {
        "JWST"
    };
    let d = mastfetch::names::derive(coll, filename(key)).unwrap();
    format!("{coll}/{}/{}", d.obs_id, filename(key))
}

/// Write the archive's objects as another tool did, an hour ago; then damage one local file
/// (CAL), and let the archive replace one object (UNCAL: reprocessed), and add a stray file.
fn make_tree(s3: &TestS3, objects: &[Object], root: &Path, place: impl Fn(&str) -> String) {
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for o in objects {
        let p = root.join(place(o.key));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &o.data).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(an_hour_ago).unwrap();
    }
    let cal = root.join(place(CAL));
    let mut bytes = std::fs::read(&cal).unwrap();
    bytes[1234] ^= 0x40;
    std::fs::write(&cal, bytes).unwrap();
    s3.put(BUCKET, UNCAL, &data(44, 200_000));
    std::fs::write(root.join("notes.txt"), b"my notes\n").unwrap();
}

fn verdicts(out: &Output) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = util::jsonl(&stdout(out))
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn object_gets(s3: &TestS3) -> Vec<String> {
    s3.log()
        .iter()
        .filter(|l| l.is_get_object())
        .map(|l| l.path.clone())
        .collect()
}

/// The keys whose objects were fetched (GET), each once, sorted.
fn fetched_keys(s3: &TestS3) -> Vec<String> {
    let mut keys: Vec<String> = object_gets(s3)
        .iter()
        .map(|p| p.trim_start_matches(&format!("/{BUCKET}/")).to_string())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn verify(s3: &TestS3, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["verify", dir.to_str().unwrap(), "--format", "jsonl"];
    args.extend(extra);
    // A dead MAST: every name here is found by the naming rules alone.
    args.extend(["--mast-url", "http://127.0.0.1:9"]);
    run(&s3.endpoint, &args)
}

#[test]
fn verify_names_exactly_the_corrupt_stale_and_unknown_files_of_any_layout() {
    type Place = fn(&str) -> String;
    let layouts: [(&str, Place); 3] = [
        ("astroquery", |k| format!("mastDownload/{}", nested(k))),
        ("mirror", |k| k.to_string()),
        ("flat", |k| filename(k).to_string()),
    ];
    for (name, place) in layouts {
        let (s3, objects) = archive();
        let dir = tempfile::tempdir().unwrap();
        make_tree(&s3, &objects, dir.path(), place);
        s3.clear_log();
        let out = verify(&s3, dir.path(), &[]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        let mut want = vec![
            (place(CAL), "corrupt".to_string()),
            (place(RATE), "ok".to_string()),
            (place(I2D), "ok".to_string()),
            (place(UNCAL), "stale".to_string()),
            (place(HST), "ok".to_string()),
            ("notes.txt".to_string(), "unknown".to_string()),
        ];
        want.sort();
        assert_eq!(verdicts(&out), want, "{name}: {}", stderr(&out));
        assert!(
            object_gets(&s3).is_empty(),
            "{name}: {:?}",
            object_gets(&s3)
        );
        let log = s3.log();
        let heads = log.iter().filter(|l| l.method == "HEAD").count();
        // At most: one HEAD per object (this server's listings carry no ETag), the part
        // layout of the old multipart upload, and when-written for the two mismatches.
        assert!(heads <= objects.len() + 1 + 2, "{name}: {heads} HEADs");
        assert!(
            log.iter().any(|l| l.is_list()),
            "{name}: objects found by listing"
        );
    }
}

#[test]
fn a_multipart_etag_is_checked_over_the_objects_own_parts() {
    let (s3, objects) = archive();
    let dir = tempfile::tempdir().unwrap();
    let i2d = dir.path().join(filename(I2D));
    std::fs::write(&i2d, &objects[2].data).unwrap();
    let out = verify(&s3, dir.path(), &["--write-manifest"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let m = util::manifest(dir.path());
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["status"], "adopted");
    assert_eq!(m[0]["verified"], "etag");
    let etag = s3.meta(BUCKET, I2D).unwrap().etag;
    assert!(etag.ends_with("-3"), "{etag}");
    assert_eq!(m[0]["checksum"], format!("etag:{etag}"));
    assert_eq!(
        m[0]["crc64nvme"],
        crate::s3server::crc64nvme_b64(&objects[2].data)
    );
    // The same bytes cut elsewhere do not make that ETag: one flipped byte in part 3 is found.
    let mut bad = objects[2].data.clone();
    let last = bad.len() - 10;
    bad[last] ^= 1;
    std::fs::write(&i2d, &bad).unwrap();
    std::fs::remove_file(dir.path().join("mastfetch-manifest.jsonl")).unwrap();
    let out = verify(&s3, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = verdicts(&out);
    assert_eq!(v[0].1, "corrupt", "{v:?}");
    // Later runs with the written manifest are local and find the same.
    std::fs::write(&i2d, &objects[2].data).unwrap();
    let out = verify(&s3, dir.path(), &["--write-manifest"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(&i2d, &bad).unwrap();
    s3.clear_log();
    let out = verify(&s3, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        s3.log().is_empty(),
        "a manifest's verify asks nothing of the archive"
    );
}

#[test]
fn get_into_a_foreign_mirror_fetches_only_what_does_not_match() {
    let (s3, objects) = archive();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("mastDownload");
    make_tree(&s3, &objects, &tree, nested);
    s3.clear_log();
    let uris: Vec<String> = objects
        .iter()
        .map(|o| {
            let coll = if o.key.starts_with("hst/") {
                "HST"
            } else {
                "JWST"
            };
            format!("mast:{coll}/product/{}", filename(o.key))
        })
        .collect();
    let mut args: Vec<&str> = vec!["get"];
    args.extend(uris.iter().map(String::as_str));
    args.extend([
        "--dest",
        tree.to_str().unwrap(),
        "--s3-only",
        "--no-progress",
        "--part-size",
        "1MiB",
    ]);
    let out = run(&s3.endpoint, &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let fetched = fetched_keys(&s3);
    assert_eq!(
        fetched,
        [CAL, UNCAL],
        "only the damaged and the reprocessed file"
    );
    let m: Vec<Value> = util::manifest(&tree);
    let status = |key: &str| {
        m.iter()
            .find(|e| e["key"] == key)
            .map(|e| e["status"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(status(CAL), "ok");
    assert_eq!(status(UNCAL), "ok");
    for k in [RATE, I2D, HST] {
        assert_eq!(status(k), "adopted", "{k}");
    }
    // Every file is now the archive's.
    for o in &objects {
        let want = if o.key == UNCAL {
            data(44, 200_000)
        } else {
            o.data.clone()
        };
        assert_eq!(std::fs::read(tree.join(nested(o.key))).unwrap(), want);
    }
    // A rerun downloads nothing.
    s3.clear_log();
    let out = run(&s3.endpoint, &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(object_gets(&s3).is_empty());
    let out = verify(&s3, &tree, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn verify_repair_fetches_again_exactly_what_is_damaged() {
    let (s3, objects) = archive();
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec!["get".into()];
    args.extend(objects.iter().map(|o| format!("s3://{BUCKET}/{}", o.key)));
    args.extend(
        [
            "--dest",
            dir.path().to_str().unwrap(),
            "--s3-only",
            "--no-progress",
        ]
        .map(String::from),
    );
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&s3.endpoint, &argv);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // One file damaged in place, one deleted.
    let cal = dir.path().join(nested(CAL));
    let mut bytes = std::fs::read(&cal).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&cal, bytes).unwrap();
    std::fs::remove_file(dir.path().join(nested(HST))).unwrap();
    s3.clear_log();
    let out = verify(&s3, dir.path(), &["--repair"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let fetched = fetched_keys(&s3);
    let mut want = vec![CAL.to_string(), HST.to_string()];
    want.sort();
    assert_eq!(fetched, want, "only the damaged and the missing file");
    for o in &objects {
        assert_eq!(
            std::fs::read(dir.path().join(nested(o.key))).unwrap(),
            o.data
        );
    }
    let out = verify(&s3, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Within one second, as a quick script would do it: the copy, a damaged file, an upstream
/// replacement, each a few milliseconds apart, still tell corrupt from stale.
#[test]
fn corrupt_and_stale_are_told_apart_within_a_second() {
    let (s3, objects) = archive();
    let dir = tempfile::tempdir().unwrap();
    for o in &objects {
        let p = dir.path().join(filename(o.key));
        std::fs::write(&p, &o.data).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    let cal = dir.path().join(filename(CAL));
    let mut bytes = std::fs::read(&cal).unwrap();
    bytes[7] ^= 2;
    std::fs::write(&cal, bytes).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    s3.put(BUCKET, UNCAL, &data(45, 200_000));
    let out = verify(&s3, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = verdicts(&out);
    let status = |name: &str| v.iter().find(|(p, _)| p == name).unwrap().1.clone();
    assert_eq!(status(filename(CAL)), "corrupt", "{v:?}");
    assert_eq!(status(filename(UNCAL)), "stale", "{v:?}");
}
