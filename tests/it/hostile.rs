//! Hostile and broken inputs: listings whose keys look like mastfetch's own files, destinations
//! that clash, bounded `@FILE` input, escaped echoes, servers that never finish or never heal.

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::mast_server::{Catalog, Fault as MastFault, MastServer, Target};
use crate::s3server::{Fault, TestS3};
use crate::util::{self, code, data, files_under, run, stderr};

const BUCKET: &str = "stpubdata";

#[test]
fn a_key_shaped_like_a_temporary_name_keeps_its_own_bytes() {
    let s3 = TestS3::start(&[BUCKET]);
    let (x, dot_x) = (data(1, 300_000), data(2, 200_000));
    s3.put(BUCKET, "odd/X", &x);
    s3.put(BUCKET, "odd/.X.mastfetch", &dot_x);
    s3.put(BUCKET, "odd/.X.mastfetch.state", &data(3, 10));
    let dir = tempfile::tempdir().unwrap();
    for layout in ["flat", "mirror", "nested"] {
        let dest = dir.path().join(layout);
        let out = run(
            &s3.endpoint,
            &[
                "get",
                "s3://stpubdata/odd/",
                "--layout",
                layout,
                "--dest",
                dest.to_str().unwrap(),
                "--s3-only",
            ],
        );
        assert_eq!(code(&out), 0, "{layout}: {}", stderr(&out));
        let files = files_under(&dest);
        let find = |name: &str| {
            let f = files
                .iter()
                .find(|f| f.rsplit('/').next() == Some(name))
                .unwrap_or_else(|| panic!("{layout}: no {name} in {files:?}"));
            std::fs::read(dest.join(f)).unwrap()
        };
        assert!(find("X") == x, "{layout}: X has the wrong bytes");
        assert!(find(".X.mastfetch") == dot_x, "{layout}: .X.mastfetch");
        assert_eq!(find(".X.mastfetch.state"), data(3, 10));
        assert_eq!(util::manifest(&dest).len(), 3);
    }
}

#[test]
fn objects_named_like_our_own_files_are_refused_and_the_lock_holds() {
    let s3 = TestS3::start(&[BUCKET]);
    for name in [
        "SHA256SUMS",
        "mastfetch-manifest.jsonl",
        ".mastfetch-manifest.jsonl.lock",
    ] {
        s3.put(BUCKET, &format!("own/{name}"), b"not yours\n");
    }
    let good = data(4, 4 << 20);
    s3.put(BUCKET, "own/good.fits", &good);
    // Slow the good file so that a second run starts while the first holds the lock.
    s3.inject(
        "GET",
        "own/good.fits",
        100,
        Fault::Delay(Duration::from_millis(200)),
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().to_str().unwrap();
    let args = [
        "get",
        "s3://stpubdata/own/",
        "--layout",
        "flat",
        "--dest",
        dest,
        "--part-size",
        "1MiB",
        "--jobs",
        "1",
        "--s3-only",
        // SHA256SUMS is written only when asked for: ask, so that an object named like it
        // would have something of ours to overwrite.
        "--sha256",
        "--endpoint-url",
        &s3.endpoint,
    ];
    let first = util::mastfetch()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !s3.log().iter().any(|r| r.is_get_object()) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "first run never fetched"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = util::mastfetch().args(args).output().unwrap();
    assert_eq!(code(&second), 2, "{}", stderr(&second));
    assert!(
        stderr(&second).contains("another mastfetch"),
        "{}",
        stderr(&second)
    );
    let first = first.wait_with_output().unwrap();
    let err = stderr(&first);
    assert_eq!(code(&first), 1, "{err}");
    for name in [
        "own/SHA256SUMS",
        "own/mastfetch-manifest.jsonl",
        "own/.mastfetch-manifest.jsonl.lock",
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains("error") && l.contains(name) && l.contains("mastfetch")),
            "{name} not named: {err}"
        );
    }
    assert!(std::fs::read(dir.path().join("good.fits")).unwrap() == good);
    // Our own files are ours: the manifest parses and names the one file fetched.
    let m = util::manifest(dir.path());
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0]["path"], "good.fits");
    let sums = std::fs::read_to_string(dir.path().join("SHA256SUMS")).unwrap();
    assert!(sums.ends_with("  good.fits\n"), "{sums}");
    assert!(!dir.path().join(".mastfetch-manifest.jsonl.lock").exists());
}

#[test]
fn a_file_and_a_folder_of_the_same_name_are_not_both_planned() {
    let s3 = TestS3::start(&[BUCKET]);
    s3.put(BUCKET, "k/a", &data(5, 1000));
    s3.put(BUCKET, "k/b", &data(6, 2000));
    s3.put(BUCKET, "k/c", &data(7, 3000));
    let dir = tempfile::tempdir().unwrap();
    let entry = |uri: &str, key: &str, dest: &str| {
        serde_json::json!({"uri": uri, "filename": dest.rsplit('/').next().unwrap(),
            "source": "s3", "bucket": BUCKET, "key": key, "url": "u", "size": null,
            "etag": null, "access": "PUBLIC", "dest": dest})
        .to_string()
    };
    let plan = [
        entry("s3://stpubdata/k/a", "k/a", "d/x"),
        entry("s3://stpubdata/k/b", "k/b", "d/x/y"),
        entry("s3://stpubdata/k/c", "k/c", "e/z"),
    ]
    .join("\n");
    let p = dir.path().join("plan.jsonl");
    std::fs::write(&p, plan).unwrap();
    let dest = dir.path().join("out");
    let out = run(
        &s3.endpoint,
        &[
            "get",
            &format!("@{}", p.display()),
            "--dest",
            dest.to_str().unwrap(),
            "--s3-only",
        ],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains("s3://stpubdata/k/b") && err.contains("d/x"),
        "{err}"
    );
    assert_eq!(std::fs::read(dest.join("d/x")).unwrap(), data(5, 1000));
    assert_eq!(std::fs::read(dest.join("e/z")).unwrap(), data(7, 3000));
    // Nothing else was left behind: no temporary file, no half-made folder.
    let mut files = files_under(&dest);
    files.retain(|f| !f.starts_with(".mastfetch/") || f.ends_with(".lock"));
    assert_eq!(
        files,
        [
            ".mastfetch/mastfetch-manifest.jsonl.lock",
            "d/x",
            "e/z",
            "mastfetch-manifest.jsonl"
        ]
    );
    let left: Vec<String> = files_under(&dest)
        .into_iter()
        .filter(|f| f.ends_with(".part") || f.ends_with(".state"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `mastfetch plan @- --s3-only` fed by a thread that writes `chunk` until the reader stops.
fn plan_from_endless_stdin(s3: &TestS3, chunk: &'static [u8], env: &[(&str, &str)]) -> Output {
    let mut child = util::mastfetch()
        .args([
            "plan",
            "@-",
            "--s3-only",
            "--format",
            "jsonl",
            "--endpoint-url",
            &s3.endpoint,
        ])
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // Ends when mastfetch closes its end (a broken pipe), as `cat /dev/zero |` would.
        while stdin.write_all(chunk).is_ok() {}
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn endless_or_binary_input_stops_at_a_limit_with_one_error() {
    let s3 = TestS3::start(&[BUCKET]);
    static ZEROS: [u8; 4096] = [0; 4096];
    let zeros = plan_from_endless_stdin(&s3, &ZEROS, &[]);
    let err = stderr(&zeros);
    assert_eq!(code(&zeros), 2, "{err}");
    assert!(err.contains("not a text file"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let lines = plan_from_endless_stdin(
        &s3,
        b"jw02731001001_02101_00001_nrcb1_cal.fits\n",
        &[("MASTFETCH_INPUT_MAX_BYTES", "1000000")],
    );
    let err = stderr(&lines);
    assert_eq!(code(&lines), 2, "{err}");
    assert!(err.contains("larger than 1000000 bytes"), "{err}");

    let one_line =
        plan_from_endless_stdin(&s3, b"aaaaaaaa", &[("MASTFETCH_INPUT_MAX_LINE", "5000")]);
    let err = stderr(&one_line);
    assert_eq!(code(&one_line), 2, "{err}");
    assert!(
        err.contains("stdin:1: a line longer than 5000 bytes")
            || err.contains("standard input:1: a line longer than 5000 bytes"),
        "{err}"
    );

    let many = plan_from_endless_stdin(&s3, b"\n\n\n\n", &[("MASTFETCH_INPUT_MAX_LINES", "1000")]);
    let err = stderr(&many);
    assert_eq!(code(&many), 2, "{err}");
    assert!(err.contains("more than 1000 lines"), "{err}");
}

#[test]
fn bad_lines_are_echoed_escaped_cut_and_counted() {
    let s3 = TestS3::start(&[BUCKET]);
    let cal = "jw02731001001_02101_00001_nrcb1_cal.fits";
    s3.put(
        BUCKET,
        &format!("jwst/public/jw02731/jw02731001001/{cal}"),
        &data(9, 100),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut list = format!("{cal}\n");
    list.push_str("evil\u{1b}[31mred\u{1b}[0m.fits\n");
    list.push_str("jw\u{202E}stif.exe\n");
    list.push_str(&format!("{}\n", "x".repeat(5000)));
    for i in 0..47 {
        list.push_str(&format!("bad name {i}\n"));
    }
    let p = dir.path().join("list.txt");
    std::fs::write(&p, list).unwrap();
    let out = run(
        &s3.endpoint,
        &[
            "plan",
            &format!("@{}", p.display()),
            "--s3-only",
            "--format",
            "table",
        ],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        !err.contains('\u{1b}') && !err.contains('\u{202E}'),
        "{err:?}"
    );
    assert!(err.contains("\\u{1b}[31m"), "{err}");
    assert!(err.contains("\\u{202e}"), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 6, "{err}");
    assert!(errors[5].contains("45 more bad lines"), "{err}");
    assert!(err.lines().all(|l| l.chars().count() < 600), "{err}");
    assert!(util::stdout(&out).contains(cal));
}

/// `mastfetch ARGS` against a MAST stand-in with an empty catalog (a dead S3 endpoint).
fn against_mast(mast: &MastServer, args: &[&str]) -> Output {
    util::mastfetch()
        .args(args)
        .args([
            "--mast-url",
            &mast.url,
            "--endpoint-url",
            "http://127.0.0.1:9",
        ])
        .output()
        .unwrap()
}

const QUERY: [&str; 5] = ["plan", "--program", "1234", "--catalog", "mast"];

#[test]
fn a_query_executing_forever_stops_at_its_deadline() {
    let mast = MastServer::start(Catalog::default(), "t");
    mast.executing("Mast.Caom.Filtered", usize::MAX);
    let mut args = QUERY.to_vec();
    args.extend(["--mast-timeout", "2"]);
    let out = against_mast(&mast, &args);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("Mast.Caom.Filtered: still executing after"),
        "{err}"
    );
    assert!(err.contains("--mast-timeout"), "{err}");
}

#[test]
fn a_dripping_answer_is_cut_retried_and_said() {
    let mast = MastServer::start(Catalog::default(), "t");
    mast.inject(
        Target::Invoke("Mast.Caom.Filtered"),
        100,
        MastFault::Drip(Duration::from_millis(250)),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = against_mast(
        &mast,
        &[
            "get",
            "--program",
            "1234",
            "--catalog",
            "mast",
            "--dest",
            dir.path().to_str().unwrap(),
            "--stall-timeout",
            "1",
            "--retries",
            "1",
            "--json",
        ],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.contains("too slow"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("mastfetch: note: retrying (1 of 1)")
                && l.contains("Mast.Caom.Filtered")),
        "{err}"
    );
    let notes: Vec<_> = util::jsonl(&util::stdout(&out))
        .into_iter()
        .filter(|e| e["event"] == "note")
        .collect();
    assert_eq!(notes.len(), 1, "{}", util::stdout(&out));
    assert!(notes[0]["message"].as_str().unwrap().contains("retrying"));
    assert_eq!(mast.invokes("Mast.Caom.Filtered"), 2);
}

#[test]
fn an_unsupported_scheme_is_a_usage_error_before_any_request() {
    for (flag, url) in [
        ("--endpoint-url", "ftp://127.0.0.1:9/"),
        ("--mast-url", "ftp://127.0.0.1:9/"),
    ] {
        let out = util::mastfetch()
            .args([
                "plan",
                "jw02731001001_02101_00001_nrcb1_cal.fits",
                flag,
                url,
            ])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{err}");
        assert!(
            err.contains(flag) && err.contains("not an http:// or https:// URL"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn tls_to_a_plain_http_server_fails_at_once_naming_the_host() {
    let s3 = TestS3::start(&[BUCKET]);
    let https = s3.endpoint.replace("http://", "https://");
    let out = util::mastfetch()
        .args([
            "plan",
            "s3://stpubdata/jwst/",
            "--s3-only",
            "--endpoint-url",
            &https,
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.contains(&https) && err.contains("http://"), "{err}");
    assert!(!err.contains("note: retrying"), "{err}");

    let mast = MastServer::start(Catalog::default(), "t");
    let out = util::mastfetch()
        .args(QUERY)
        .args(["--mast-url", &mast.url.replace("http://", "https://")])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("127.0.0.1") && err.contains("plain-HTTP"),
        "{err}"
    );
    assert!(!err.contains("note: retrying"), "{err}");
}

#[test]
fn a_redirect_loop_and_a_4xx_are_not_retried() {
    let mast = MastServer::start(Catalog::default(), "t");
    mast.inject(
        Target::Invoke("Mast.Caom.Filtered"),
        1000,
        MastFault::RedirectLoop,
    );
    let out = against_mast(&mast, &QUERY);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.contains("redirect"), "{err}");
    // One request and the redirects it followed; no retry started the chain again.
    assert!(
        mast.invokes("Mast.Caom.Filtered") <= 12,
        "{}",
        mast.invokes("Mast.Caom.Filtered")
    );

    let mast = MastServer::start(Catalog::default(), "t");
    mast.inject(
        Target::Invoke("Mast.Caom.Filtered"),
        1000,
        MastFault::Status(400),
    );
    let out = against_mast(&mast, &QUERY);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("HTTP 400") && err.contains("127.0.0.1"),
        "{err}"
    );
    assert_eq!(mast.invokes("Mast.Caom.Filtered"), 1);
}

#[test]
fn a_host_that_does_not_resolve_is_tried_twice_then_named() {
    // `.invalid` never resolves (RFC 6761); resolvers answer it without asking anyone.
    let dir = tempfile::tempdir().unwrap();
    let out = util::mastfetch()
        .args([
            "get",
            "--program",
            "2731",
            "--suffix",
            "cat",
            "--dest",
            dir.path().to_str().unwrap(),
            "--endpoint-url",
            "https://no-such-host.invalid",
            "--mast-url",
            "https://no-such-host.invalid/",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("no-such-host.invalid") && err.contains("does not resolve"),
        "{err}"
    );
    let notes: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("note: retrying"))
        .collect();
    assert!(
        notes.len() <= 1 && notes.iter().all(|n| n.contains("(1 of 1)")),
        "{err}"
    );
}

#[test]
fn hygiene_bom_csv_lines_names_dots_bucket_dest_and_messages() {
    let s3 = TestS3::start(&[BUCKET]);
    let cal = "jw02731001001_02101_00001_nrcb1_cal.fits";
    let rate = "jw02731001001_02101_00001_nrcb1_rate.fits";
    for f in [cal, rate] {
        s3.put(
            BUCKET,
            &format!("jwst/public/jw02731/jw02731001001/{f}"),
            &data(11, 100),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = |args: &[&str]| {
        let mut all = vec!["plan", "--s3-only", "--format", "jsonl"];
        all.extend_from_slice(args);
        run(&s3.endpoint, &all)
    };

    // A BOM before the first line of a list is not part of the first name.
    let list = dir.path().join("bom.txt");
    std::fs::write(&list, format!("\u{FEFF}{cal}\n{rate}\n")).unwrap();
    let out = plan(&[&format!("@{}", list.display())]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(util::jsonl(&util::stdout(&out)).len(), 2);

    // An unterminated quote in a CSV is not a product name; the error names its line.
    let csv = dir.path().join("export.csv");
    std::fs::write(
        &csv,
        format!("obs_id,dataURI\nx,mast:JWST/product/{cal}\ny,\"mast:JWST/product/{rate}\nz,mast:JWST/product/{rate}\n"),
    )
    .unwrap();
    let out = plan(&[&format!("@{}", csv.display())]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains("export.csv:3") && err.contains("not a product name"),
        "{err}"
    );
    assert_eq!(util::jsonl(&util::stdout(&out)).len(), 1, "{err}");

    // Names outside MAST's characters, and `..` in a URI (argument or CSV), are refused.
    let dots = dir.path().join("dots.csv");
    std::fs::write(&dots, "dataURI\nmast:JWST/product/../../etc/passwd\n").unwrap();
    let out = plan(&[
        "jw02731001001_02101_00001_nrcb1 cal.fits",
        "mast:JWST/product/../x.fits",
        &format!("@{}", dots.display()),
        cal,
    ]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert_eq!(err.matches("not a product name").count(), 3, "{err}");
    assert!(err.contains("dots.csv:2"), "{err}");
    assert!(
        !err.contains("unsafe destination"),
        "refused as names first: {err}"
    );

    // A whole bucket is refused with a hint; nothing is listed.
    for bucket in ["s3://stpubdata", "s3://stpubdata/"] {
        s3.clear_log();
        let out = plan(&[bucket]);
        let err = stderr(&out);
        assert_eq!(code(&out), 1, "{err}");
        assert!(
            err.contains("whole bucket") && err.contains("name a prefix"),
            "{err}"
        );
        assert!(!s3.log().iter().any(|r| r.is_list()), "listed the bucket");
    }
    // Another bucket (a mirror of one's own, a test server) may be named whole.
    let out = plan(&["s3://mymirror/"]);
    assert!(!stderr(&out).contains("whole bucket"), "{}", stderr(&out));

    // `plan --dest` is accepted; dest fields stay relative; the curl script defaults to it.
    let out = plan(&[cal, "--dest", "/data/mirror"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let p = util::jsonl(&util::stdout(&out));
    assert!(p[0]["dest"].as_str().unwrap().starts_with("JWST/"));
    let out = run(
        &s3.endpoint,
        &[
            "plan",
            cal,
            "--s3-only",
            "--format",
            "curl",
            "--dest",
            "/data/mirror",
        ],
    );
    assert!(
        util::stdout(&out).contains("DIR='/data/mirror'"),
        "{}",
        util::stdout(&out)
    );

    // --help shows defaults; no selection blames no flag that was not given.
    let help = util::mastfetch().args(["help", "get"]).output().unwrap();
    assert!(
        util::stdout(&help).contains("[default: 8MiB]"),
        "{}",
        util::stdout(&help)
    );
    let nothing = run(
        &s3.endpoint,
        &["get", "--dest", dir.path().to_str().unwrap()],
    );
    let err = stderr(&nothing);
    assert_eq!(code(&nothing), 2, "{err}");
    assert!(
        err.contains("nothing selected") && !err.contains("--program"),
        "{err}"
    );
    let filtered = run(&s3.endpoint, &["plan", "--suffix", "cal"]);
    let err = stderr(&filtered);
    assert!(
        err.contains("--suffix only filters") && !err.contains("--program"),
        "{err}"
    );
}

#[test]
fn verify_names_a_torn_manifest_line_and_exits_1() {
    let s3 = TestS3::start(&[BUCKET]);
    let cal = "jw02731001001_02101_00001_nrcb1_cal.fits";
    s3.put(
        BUCKET,
        &format!("jwst/public/jw02731/jw02731001001/{cal}"),
        &data(12, 1000),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &s3.endpoint,
        &[
            "get",
            cal,
            "--dest",
            dir.path().to_str().unwrap(),
            "--s3-only",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let manifest = dir.path().join("mastfetch-manifest.jsonl");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("{\"uri\":\"mast:JWST/product/x.fits\",\"pa");
    std::fs::write(&manifest, text).unwrap();
    let out = util::mastfetch()
        .args(["verify", dir.path().to_str().unwrap(), "--format", "jsonl"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains("mastfetch-manifest.jsonl:2: unreadable manifest line"),
        "{err}"
    );
}
