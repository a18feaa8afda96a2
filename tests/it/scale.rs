//! Scale-out (issue 5): N shard processes of one shared plan file writing into one shared folder,
//! as an AWS Batch array, a Kubernetes Indexed Job or a Slurm array runs them. Covers the
//! partition (union = plan, no object twice, balanced by bytes), the scheduler environment
//! variables, per-shard manifests and checksums, `verify` over all of them, incremental reruns
//! after an object changes upstream or a new one appears (only that object is fetched), the
//! `--json` event stream with its periodic `progress`, and two shards sharing a folder at once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mastfetch::plan::{Plan, PlanEntry};
use serde_json::Value;

use crate::s3server::{Fault, TestS3};
use crate::util::{self, code, data, jsonl, stderr, stdout};

const BUCKET: &str = "stpubdata";
const SHARDS: u32 = 8;

/// `count` objects of 1-32 KiB under `scale/`, in 20 folders; returns (key, bytes). Small, so
/// that eight debug-build processes hash and move them in seconds on two cores.
fn seed(s3: &TestS3, count: usize) -> Vec<(String, Vec<u8>)> {
    let mut rng = fastrand::Rng::with_seed(5);
    (0..count)
        .map(|i| {
            let key = format!("scale/f{:02}/obj-{i:04}.dat", i % 20);
            let bytes = data(1000 + i as u64, rng.usize(1024..=32 * 1024));
            s3.put(BUCKET, &key, &bytes);
            (key, bytes)
        })
        .collect()
}

/// `mastfetch plan s3://stpubdata/scale/ --format jsonl > plan.jsonl` (dest = key).
fn write_plan(s3: &TestS3, path: &Path) -> Vec<PlanEntry> {
    let out = util::run(
        &s3.endpoint,
        &[
            "plan",
            &format!("s3://{BUCKET}/scale/"),
            "--layout",
            "mirror",
            "--format",
            "jsonl",
            "--s3-only",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    std::fs::write(path, &out.stdout).unwrap();
    read_plan(path)
}

fn read_plan(path: &Path) -> Vec<PlanEntry> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Shard `k` of `n` of `plan`, as mastfetch computes it.
fn shard_of(plan: &[PlanEntry], n: u32, k: u32) -> Vec<PlanEntry> {
    let mut p = Plan {
        files: plan.to_vec(),
        ..Plan::default()
    };
    p.shard(n, k);
    p.files
}

/// One shard process. Shards 1, 2 and 3 take their index from the environment variable that
/// AWS Batch, Kubernetes and Slurm set; the others from `--shard-index`.
fn shard_cmd(s3: &TestS3, plan: &Path, dest: &Path, k: u32) -> Command {
    let mut c = util::mastfetch();
    c.args(["get", &format!("@{}", plan.display())])
        .args(["--shards", &SHARDS.to_string(), "--dest"])
        .arg(dest)
        .args(["--s3-only", "--json", "--no-progress", "--jobs", "16"])
        // These runs check SHA256SUMS per shard and the manifests' sha256: opt-in.
        .arg("--sha256")
        .args(["--endpoint-url", &s3.endpoint]);
    match k {
        1 => c.env("AWS_BATCH_JOB_ARRAY_INDEX", "1"),
        2 => c.env("JOB_COMPLETION_INDEX", "2"),
        3 => c.env("SLURM_ARRAY_TASK_ID", "3"),
        _ => c.args(["--shard-index", &k.to_string()]),
    };
    c
}

/// Start every command at once (child processes), then collect all outputs.
fn run_parallel(cmds: Vec<Command>) -> Vec<Output> {
    let children: Vec<_> = cmds
        .into_iter()
        .map(|mut c| {
            c.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("mastfetch starts")
        })
        .collect();
    // One reader per child, so that no child waits on a full pipe.
    let waiters: Vec<_> = children
        .into_iter()
        .map(|c| std::thread::spawn(move || c.wait_with_output().unwrap()))
        .collect();
    waiters.into_iter().map(|w| w.join().unwrap()).collect()
}

fn run_shards(s3: &TestS3, plan: &Path, dest: &Path) -> Vec<Output> {
    let outs = run_parallel((0..SHARDS).map(|k| shard_cmd(s3, plan, dest, k)).collect());
    for (k, o) in outs.iter().enumerate() {
        assert_eq!(code(o), 0, "shard {k}: {}", stderr(o));
    }
    outs
}

/// The `summary` event of a `--json` run.
fn summary(o: &Output) -> Value {
    let events = jsonl(&stdout(o));
    let last = events.last().expect("events").clone();
    assert_eq!(last["event"], "summary", "{last}");
    last
}

fn sum_of(outs: &[Output], field: &str) -> u64 {
    outs.iter()
        .map(|o| summary(o)[field].as_u64().unwrap())
        .sum()
}

fn shard_manifest(dest: &Path, k: u32) -> Vec<Value> {
    let p = dest.join(format!("mastfetch-manifest.shard-{k}-of-{SHARDS}.jsonl"));
    jsonl(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

fn object_gets(s3: &TestS3) -> Vec<String> {
    s3.log()
        .iter()
        .filter(|r| r.is_get_object())
        .map(|r| r.path.clone())
        .collect()
}

fn verify(dest: &Path, extra: &[&str]) -> Output {
    util::mastfetch()
        .arg("verify")
        .arg(dest)
        .args(["--format", "jsonl"])
        .args(extra)
        .output()
        .unwrap()
}

/// The findings of a `verify` that are not `ok`, as (path, status).
fn not_ok(o: &Output) -> Vec<(String, String)> {
    jsonl(&stdout(o))
        .iter()
        .filter(|f| f["status"] != "ok")
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn eight_shards_of_one_plan_mirror_it_once_balanced_and_rerun_incrementally() {
    let t0 = Instant::now();
    let s3 = TestS3::start(&[BUCKET]);
    let mut objects = seed(&s3, 2000);
    let total: u64 = objects.iter().map(|(_, d)| d.len() as u64).sum();
    let tmp = tempfile::tempdir().unwrap();
    let plan_path = tmp.path().join("plan.jsonl");
    let dest = tmp.path().join("shared");
    let plan = write_plan(&s3, &plan_path);
    assert_eq!(plan.len(), 2000);

    // A shard index outside 0..N is a usage error, from the flag or from the environment.
    let usage = |c: &mut Command| c.output().unwrap();
    let o = usage(&mut shard_cmd(&s3, &plan_path, &dest, 8));
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--shard-index gives 8") && stderr(&o).contains("0 to 7"),
        "{}",
        stderr(&o)
    );
    let o = usage(shard_cmd(&s3, &plan_path, &dest, 3).env("SLURM_ARRAY_TASK_ID", "8"));
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("SLURM_ARRAY_TASK_ID") && stderr(&o).contains("--array=0-7"),
        "{}",
        stderr(&o)
    );
    let mut none = util::mastfetch();
    none.args(["get", "x.fits", "--shards", "8", "--s3-only"]);
    let o = usage(&mut none);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("JOB_COMPLETION_INDEX"),
        "{}",
        stderr(&o)
    );
    assert!(!dest.exists(), "a usage error wrote nothing");

    // Eight shard processes at once into one folder.
    let t = Instant::now();
    let outs = run_shards(&s3, &plan_path, &dest);
    let first_run = t.elapsed();
    assert_eq!(sum_of(&outs, "ok"), 2000);
    // Each object was fetched, once but for a hedged GET now and then (a GET answered far later
    // than its peers is sent once more: at most 5% of a process's GETs plus 2); which shard
    // fetched it is the manifests' check below.
    let gets = object_gets(&s3);
    assert!(
        gets.len() <= 2000 + 8 * (250 / 20 + 2),
        "{} GETs",
        gets.len()
    );
    assert_eq!(gets.iter().collect::<BTreeSet<_>>().len(), 2000);

    // The union of the shard manifests is the plan, no object twice; balanced by bytes.
    let want: BTreeSet<&str> = plan.iter().map(|e| e.uri.as_str()).collect();
    let mut seen = BTreeSet::new();
    let mut bytes = Vec::new();
    for k in 0..SHARDS {
        let m = shard_manifest(&dest, k);
        let expected = shard_of(&plan, SHARDS, k);
        assert_eq!(m.len(), expected.len(), "shard {k}");
        let mut b = 0;
        for e in &m {
            assert_eq!(e["status"], "ok", "{e}");
            assert!(
                seen.insert(e["uri"].as_str().unwrap().to_string()),
                "{e} twice"
            );
            b += e["size"].as_u64().unwrap();
        }
        bytes.push(b);
        let sums = std::fs::read_to_string(dest.join(format!("SHA256SUMS.shard-{k}-of-{SHARDS}")))
            .unwrap();
        assert_eq!(sums.lines().count(), m.len());
    }
    assert_eq!(
        seen.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        want
    );
    assert!(!dest.join("mastfetch-manifest.jsonl").exists());
    let mean = total as f64 / f64::from(SHARDS);
    let largest = *bytes.iter().max().unwrap();
    let over = (largest as f64 / mean - 1.0) * 100.0;
    println!(
        "scale: 2000 objects, {total} bytes, 8 shards in {:.2} s; bytes per shard {bytes:?}; \
         mean {mean:.0}; largest {over:+.3}% of the mean",
        first_run.as_secs_f64()
    );
    assert!(over <= 5.0, "largest shard {over:.2}% above the mean");

    // Every file byte-identical, and every SHA256SUMS.shard-K-of-N passes `sha256sum -c`.
    for (key, d) in &objects {
        assert!(
            std::fs::read(dest.join(key)).unwrap() == *d,
            "{key} differs"
        );
    }
    if Path::new("/usr/bin/sha256sum").exists() {
        for k in 0..SHARDS {
            let ok = Command::new("sha256sum")
                .args([
                    "-c",
                    "--quiet",
                    &format!("SHA256SUMS.shard-{k}-of-{SHARDS}"),
                ])
                .current_dir(&dest)
                .status()
                .unwrap();
            assert!(ok.success(), "sha256sum -c, shard {k}");
        }
    }

    // verify reads every shard's manifest: each file once, all ok; one flipped byte: exit 1.
    let v = verify(&dest, &[]);
    assert_eq!(code(&v), 0, "{}", stderr(&v));
    let findings = jsonl(&stdout(&v));
    assert_eq!(findings.len(), 2000);
    let paths: BTreeSet<&str> = findings
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 2000);
    assert!(stderr(&v).contains("2000 files: 2000 ok"), "{}", stderr(&v));
    let victim = dest.join(&objects[123].0);
    let mut b = std::fs::read(&victim).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x01;
    std::fs::write(&victim, &b).unwrap();
    let v = verify(&dest, &[]);
    assert_eq!(code(&v), 1, "{}", stderr(&v));
    assert_eq!(
        not_ok(&v),
        [(objects[123].0.clone(), "corrupt".to_string())]
    );
    b[mid] ^= 0x01;
    std::fs::write(&victim, &b).unwrap();

    // One object is reprocessed upstream (new bytes, new size). `verify --remote` names exactly
    // that file as stale and downloads nothing.
    let changed = 777;
    let new_bytes = data(99, objects[changed].1.len() + 1000);
    s3.put(BUCKET, &objects[changed].0, &new_bytes);
    s3.clear_log();
    let v = verify(&dest, &["--remote", "--endpoint-url", &s3.endpoint]);
    assert_eq!(code(&v), 1, "{}", stderr(&v));
    assert_eq!(
        not_ok(&v),
        [(objects[changed].0.clone(), "stale".to_string())]
    );
    assert!(object_gets(&s3).is_empty(), "verify --remote downloaded");
    assert!(s3.log().iter().all(|r| r.is_list()), "only listings");

    // The rerun from the same plan fetches only that object and skips the rest. This server's
    // listings carry no ETag, so the plan has none: each skip candidate costs one HEAD.
    s3.clear_log();
    let outs = run_shards(&s3, &plan_path, &dest);
    let gets = object_gets(&s3);
    let want_path = format!("/{BUCKET}/{}", objects[changed].0);
    assert_eq!(gets, [want_path], "GETs on rerun");
    assert_eq!(sum_of(&outs, "ok"), 1);
    assert_eq!(sum_of(&outs, "skipped"), 1999);
    assert_eq!(sum_of(&outs, "bytes_transferred"), new_bytes.len() as u64);
    let heads = s3.log().iter().filter(|r| r.method == "HEAD").count();
    println!(
        "scale: rerun after 1 upstream change: {} GET ({}), 1999 skipped, {heads} HEAD",
        gets.len(),
        objects[changed].0
    );
    objects[changed].1 = new_bytes.clone();
    assert!(std::fs::read(dest.join(&objects[changed].0)).unwrap() == new_bytes);
    let owner = (0..SHARDS)
        .find(|&k| {
            shard_of(&plan, SHARDS, k)
                .iter()
                .any(|e| e.dest == objects[changed].0)
        })
        .unwrap();
    let m = shard_manifest(&dest, owner);
    let line = m
        .iter()
        .find(|e| e["path"] == objects[changed].0.as_str())
        .unwrap();
    assert_eq!(line["status"], "ok");
    assert_eq!(line["sha256"], util::sha256_hex(&new_bytes));
    assert_eq!(line["etag"], TestS3::etag_of(&new_bytes));
    assert_eq!(line["size"], new_bytes.len() as u64);
    for k in 0..SHARDS {
        for e in shard_manifest(&dest, k) {
            if e["path"] != objects[changed].0.as_str() {
                assert_eq!(e["status"], "skipped", "{e}");
            }
        }
    }
    let v = verify(&dest, &["--remote", "--endpoint-url", &s3.endpoint]);
    assert_eq!(code(&v), 0, "{}", stderr(&v));

    // Rerunning the same (now stale) plan again transfers nothing.
    s3.clear_log();
    let outs = run_shards(&s3, &plan_path, &dest);
    assert!(object_gets(&s3).is_empty(), "{:?}", object_gets(&s3));
    assert_eq!(sum_of(&outs, "skipped"), 2000);

    // An incremental mirror: a new object appears, the plan is made again (with ETags, as a real
    // S3 listing gives them). The new plan moves files between shards; their new shard takes
    // them over from the old one's manifest, and only the new object is fetched.
    let new_key = "scale/f05/obj-new.dat".to_string();
    let new_obj = data(98, 40_000);
    s3.put(BUCKET, &new_key, &new_obj);
    objects.push((new_key.clone(), new_obj.clone()));
    let plan2_path = tmp.path().join("plan2.jsonl");
    let mut plan2 = write_plan(&s3, &plan2_path);
    assert_eq!(plan2.len(), 2001);
    let by_key: BTreeMap<&str, &Vec<u8>> = objects.iter().map(|(k, d)| (k.as_str(), d)).collect();
    let mut text = String::new();
    for e in &mut plan2 {
        e.etag = Some(TestS3::etag_of(by_key[e.key.as_deref().unwrap()]));
        text.push_str(&serde_json::to_string(e).unwrap());
        text.push('\n');
    }
    std::fs::write(&plan2_path, text).unwrap();
    let owners = |p: &[PlanEntry]| -> BTreeMap<String, u32> {
        (0..SHARDS)
            .flat_map(|k| shard_of(p, SHARDS, k).into_iter().map(move |e| (e.dest, k)))
            .collect()
    };
    let (before, after) = (owners(&plan), owners(&plan2));
    let moved = before.iter().filter(|(d, k)| after[*d] != **k).count();
    assert!(moved > 0, "the new plan moved no file: nothing tested");
    s3.clear_log();
    let outs = run_shards(&s3, &plan2_path, &dest);
    let gets = object_gets(&s3);
    assert_eq!(gets, [format!("/{BUCKET}/{new_key}")], "GETs");
    assert_eq!(sum_of(&outs, "ok"), 1);
    assert_eq!(sum_of(&outs, "skipped"), 2000);
    let heads = s3.log().iter().filter(|r| r.method == "HEAD").count();
    assert_eq!(heads, 0, "the plan's ETags need no HEAD");
    println!(
        "scale: re-planned with 1 new object: {moved} of 2000 files changed shard, 1 GET, \
         2000 skipped, {heads} HEAD"
    );
    // Each shard's manifest records its whole shard of the new plan.
    for k in 0..SHARDS {
        let m: BTreeMap<String, Value> = shard_manifest(&dest, k)
            .into_iter()
            .map(|e| (e["path"].as_str().unwrap().to_string(), e))
            .collect();
        for e in shard_of(&plan2, SHARDS, k) {
            let line = &m[&e.dest];
            assert!(line["status"] == "ok" || line["status"] == "skipped");
            assert_eq!(line["sha256"], util::sha256_hex(by_key[e.dest.as_str()]));
        }
    }
    let v = verify(&dest, &[]);
    assert_eq!(code(&v), 0, "{}", stderr(&v));
    assert_eq!(jsonl(&stdout(&v)).len(), 2001);
    println!("scale: whole test {:.1} s", t0.elapsed().as_secs_f64());
}

/// Check `--json` output line by line with `jq -c .` when jq is installed.
fn jq_parses(text: &str) {
    let child = Command::new("jq")
        .arg("-c")
        .arg(".")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        println!("note: jq is not installed; --json checked with serde_json only");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "jq: {}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().count(),
        text.lines().count(),
        "jq saw other lines"
    );
}

#[test]
fn two_shards_share_a_folder_at_once_and_json_events_include_progress() {
    let s3 = TestS3::start(&[BUCKET]);
    let objects = seed(&s3, 12);
    let tmp = tempfile::tempdir().unwrap();
    let plan_path = tmp.path().join("plan.jsonl");
    let dest = tmp.path().join("shared");
    let plan = write_plan(&s3, &plan_path);
    let shard0 = shard_of(&plan, 2, 0);
    // Shard 0 is slow (every GET waits 6 s): longer than the 5 s progress interval, and long
    // enough for shard 1 to run start to end while shard 0 holds its lock.
    for e in &shard0 {
        s3.inject(
            "GET",
            e.key.as_deref().unwrap(),
            1,
            Fault::Delay(Duration::from_secs(6)),
        );
    }
    let cmd = |k: u32| {
        let mut c = util::mastfetch();
        c.args(["get", &format!("@{}", plan_path.display())])
            .args(["--shards", "2", "--shard-index", &k.to_string(), "--dest"])
            .arg(&dest)
            .args(["--s3-only", "--json", "--no-progress"])
            .args(["--endpoint-url", &s3.endpoint]);
        c
    };
    let mut slow = cmd(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while object_gets(&s3).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "shard 0 never fetched"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(slow.try_wait().unwrap().is_none(), "shard 0 still running");
    let fast = cmd(1).output().unwrap();
    assert_eq!(code(&fast), 0, "{}", stderr(&fast));
    assert!(
        slow.try_wait().unwrap().is_none(),
        "shard 1 finished while shard 0 held its lock"
    );
    let slow = slow.wait_with_output().unwrap();
    assert_eq!(code(&slow), 0, "{}", stderr(&slow));
    for (key, d) in &objects {
        assert!(std::fs::read(dest.join(key)).unwrap() == *d, "{key}");
    }

    // The event stream: plan, then file x N with progress among them, then summary.
    let text = stdout(&slow);
    jq_parses(&text);
    jq_parses(&stdout(&fast));
    let events = jsonl(&text);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"plan"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"summary"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "file").count(), shard0.len());
    assert!(kinds.contains(&"progress"), "no progress event: {kinds:?}");
    let bytes: u64 = shard0.iter().map(|e| e.size.unwrap()).sum();
    let p = &events[0];
    assert_eq!(p["files"], shard0.len() as u64);
    assert_eq!(p["bytes"], bytes);
    assert_eq!(p["from_s3"], shard0.len() as u64);
    for k in [
        "from_mast",
        "exclusive_access",
        "duplicates",
        "problems",
        "catalog",
        "requests",
    ] {
        assert!(p.get(k).is_some(), "plan event lacks {k}: {p}");
    }
    let progress = events.iter().find(|e| e["event"] == "progress").unwrap();
    for k in [
        "files_done",
        "files_total",
        "bytes_done",
        "bytes_total",
        "bytes_transferred",
        "seconds",
    ] {
        assert!(progress.get(k).is_some(), "progress event lacks {k}");
    }
    assert_eq!(progress["files_total"], shard0.len() as u64);
    assert_eq!(progress["bytes_total"], bytes);
    assert!(progress["seconds"].as_f64().unwrap() >= 5.0);
    for f in events.iter().filter(|e| e["event"] == "file") {
        assert_eq!(f["status"], "ok", "{f}");
        assert_eq!(f["source"], "s3");
        let e = shard0
            .iter()
            .find(|e| f["path"] == e.dest.as_str())
            .unwrap();
        assert_eq!(f["uri"], e.uri.as_str());
        assert_eq!(f["bytes"], e.size.unwrap());
        assert!(f["seconds"].as_f64().unwrap() >= 5.0, "{f}");
        assert!(f["message"].is_null());
    }
    let s = events.last().unwrap();
    assert_eq!(s["ok"], shard0.len() as u64);
    for k in ["skipped", "failed", "excluded", "duplicate"] {
        assert_eq!(s[k], 0, "{k}");
    }
    assert_eq!(s["bytes_transferred"], bytes);
    assert!(s["bytes_per_second"].as_f64().unwrap() > 0.0);

    // A rerun of shard 1: every file event says skipped, nothing transferred.
    let again = cmd(1).output().unwrap();
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    let events = jsonl(&stdout(&again));
    let files: Vec<&Value> = events.iter().filter(|e| e["event"] == "file").collect();
    assert_eq!(files.len(), plan.len() - shard0.len());
    assert!(files.iter().all(|f| f["status"] == "skipped"));
    assert_eq!(events.last().unwrap()["bytes_transferred"], 0);
}

/// `get @plan.jsonl` reads the plan as a stream (issue 14): repeats and clashes are reported
/// as `plan` would, the first run fetches each file once, and a rerun records every file
/// skipped (read back from the plan row by row) with no GET; the manifest compacts to one
/// line per file.
#[test]
fn a_streamed_plan_file_reports_repeats_and_reruns_without_a_get() {
    let s3 = TestS3::start(&[BUCKET]);
    seed(&s3, 40);
    let dir = tempfile::tempdir().unwrap();
    let plan_path = dir.path().join("plan.jsonl");
    let plan = write_plan(&s3, &plan_path);
    // One URI again with another destination (a duplicate), one destination again under
    // another URI (a clash, not planned), one unsafe destination.
    let mut again = plan[3].clone();
    again.dest = format!("copies/{}", again.dest);
    let mut clash = plan[5].clone();
    clash.uri = "s3://stpubdata/elsewhere.dat".into();
    clash.dest = plan[6].dest.clone();
    let mut unsafe_row = plan[7].clone();
    unsafe_row.uri = "s3://stpubdata/escape.dat".into();
    unsafe_row.dest = "../escape.dat".into();
    let mut text = std::fs::read_to_string(&plan_path).unwrap();
    for row in [&again, &clash, &unsafe_row] {
        text.push_str(&serde_json::to_string(row).unwrap());
        text.push('\n');
    }
    std::fs::write(&plan_path, text).unwrap();
    let dest = dir.path().join("mirror");
    let get = || {
        util::mastfetch()
            .args(["get", &format!("@{}", plan_path.display()), "--dest"])
            .arg(&dest)
            .args(["--s3-only", "--json", "--no-progress"])
            .args(["--endpoint-url", &s3.endpoint])
            .output()
            .unwrap()
    };
    let first = get();
    assert_eq!(code(&first), 1, "two rows not planned: {}", stderr(&first));
    let err = stderr(&first);
    assert!(err.contains("is already taken by"), "{err}");
    assert!(err.contains("escape.dat"), "{err}");
    let s = summary(&first);
    assert_eq!(
        (s["ok"].as_u64(), s["duplicate"].as_u64()),
        (Some(40), Some(1)),
        "{s}"
    );
    assert_eq!(object_gets(&s3).len(), 40);
    assert!(!dir.path().join("escape.dat").exists());

    let gets_before = object_gets(&s3).len();
    let second = get();
    assert_eq!(code(&second), 1, "{}", stderr(&second));
    let s = summary(&second);
    assert_eq!(s["skipped"].as_u64(), Some(40), "{s}");
    assert_eq!(
        object_gets(&s3).len(),
        gets_before,
        "a rerun fetches nothing"
    );
    let skipped: BTreeSet<String> = jsonl(&stdout(&second))
        .iter()
        .filter(|e| e["event"] == "file" && e["status"] == "skipped")
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    let planned: BTreeSet<String> = plan.iter().map(|p| p.dest.clone()).collect();
    assert_eq!(skipped, planned, "each planned file reported skipped once");
    let manifest = std::fs::read_to_string(dest.join("mastfetch-manifest.jsonl")).unwrap();
    let lines = jsonl(&manifest);
    assert_eq!(lines.len(), 41, "one line per file and the duplicate");
    let paths: BTreeSet<&str> = lines.iter().map(|l| l["path"].as_str().unwrap()).collect();
    assert_eq!(paths.len(), 41);
    assert!(lines
        .iter()
        .filter(|l| l["path"] != again.dest.as_str())
        .all(|l| l["status"] == "skipped"));
}
