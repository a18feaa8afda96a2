//! A full disk (issue 13): the first "no space left" stops new work, says how much the rest
//! needs, leaves a manifest that reads, and a rerun with space completes. The destination is
//! a small tmpfs the test mounts (it needs root, as CI and the development machines run; the
//! test says so and passes over itself elsewhere).

use std::path::Path;
use std::process::Command;

use crate::s3server::TestS3;
use crate::util::{self, data, run, stderr};

const BUCKET: &str = "stpubdata";
const MIB: usize = 1 << 20;

/// A tmpfs of `mib` MiB at `at`, unmounted when dropped.
struct SmallDisk<'a>(&'a Path);

impl<'a> SmallDisk<'a> {
    fn mount(at: &'a Path, mib: usize) -> Option<SmallDisk<'a>> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(at))
    }
}

impl Drop for SmallDisk<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn a_full_disk_stops_new_work_and_a_rerun_with_space_completes() {
    let s3 = TestS3::start(&[BUCKET]);
    let sizes = [6 * MIB, 5 * MIB, 4 * MIB, MIB, MIB / 2, MIB / 4];
    let keys: Vec<String> = (0..sizes.len()).map(|i| format!("full/f{i}.bin")).collect();
    for (i, (k, n)) in keys.iter().zip(sizes).enumerate() {
        s3.put(BUCKET, k, &data(i as u64 + 90, n));
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("disk");
    let Some(_disk) = SmallDisk::mount(&mnt, 24) else {
        eprintln!("cannot mount a tmpfs here (not root?): the full-disk test is passed over");
        return;
    };
    // 24 MiB with 16 MiB taken: the 6 MiB file fits, then not much more of the 17 MiB set.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 16 * MIB]).unwrap();
    let dest = mnt.join("mirror");
    let args = [
        "get",
        "s3://stpubdata/full/",
        "--dest",
        dest.to_str().unwrap(),
        "--layout",
        "flat",
        "--part-size",
        "1MiB",
        "--jobs",
        "2",
        "--s3-only",
        "--no-progress",
    ];
    let out = run(&s3.endpoint, &args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no space left"), "{err}");
    assert!(
        err.contains("files not fetched") && err.contains("make up to that much room"),
        "says what the rest needs: {err}"
    );
    // Not one error line per remaining file.
    let errors = err.lines().filter(|l| l.contains("error")).count();
    assert!(errors <= 4, "{errors} error lines: {err}");
    // The manifest reads, every line whole, and nothing unproven is at a final name.
    let text = std::fs::read_to_string(dest.join("mastfetch-manifest.jsonl")).unwrap();
    let lines = util::jsonl(&text);
    assert!(!lines.is_empty());
    for (k, n) in keys.iter().zip(sizes) {
        let name = k.rsplit('/').next().unwrap();
        if let Ok(got) = std::fs::read(dest.join(name)) {
            assert_eq!(got.len(), n, "{name} is whole where it is");
        }
    }
    // Space again: the rerun completes, byte-identical.
    std::fs::remove_file(&filler).unwrap();
    let out = run(&s3.endpoint, &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (i, (k, n)) in keys.iter().zip(sizes).enumerate() {
        let name = k.rsplit('/').next().unwrap();
        assert_eq!(
            std::fs::read(dest.join(name)).unwrap(),
            data(i as u64 + 90, n),
            "{name}"
        );
    }
}
