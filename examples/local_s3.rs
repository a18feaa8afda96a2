//! A local S3-protocol server with a few JWST- and HST-shaped objects, for `scripts/demo` and
//! for trying mastfetch offline. The same in-process server the integration tests use. JWST
//! objects are held as a current SDK uploads them (full-object CRC-64/NVME; multipart `md5-N`
//! ETags above 8 MiB), the HST one as a legacy object (ETag only).
//!
//! `cargo run --example local_s3 -- [N_MIB]` prints `endpoint=http://127.0.0.1:PORT` and serves
//! bucket `stpubdata` until it is killed or its standard input closes.

#[path = "../tests/it/s3server.rs"]
mod s3server;

use std::io::Read;

fn main() {
    let big_mib: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let s3 = s3server::TestS3::start(&["stpubdata"]);
    let mut rng = fastrand::Rng::with_seed(2731);
    let mut bytes = |n: usize| {
        let mut v = vec![0u8; n];
        rng.fill(&mut v);
        v
    };
    let fits = |data: &[u8]| mastfetch::fits::build_test_fits(data, &[("TELESCOP", "JWST")]);
    let objects: Vec<(String, Vec<u8>)> = vec![
        (
            "jwst/public/jw02731/jw02731001001/jw02731001001_02101_00001_nrcb1_cal.fits".into(),
            fits(&bytes(3 << 20)),
        ),
        (
            "jwst/public/jw02731/jw02731001001/jw02731001001_02101_00001_nrcb1_rate.fits".into(),
            fits(&bytes(2 << 20)),
        ),
        (
            "jwst/public/jw02731/jw02731001001/jw02731001001_02101_00002_nrcb1_cal.fits".into(),
            fits(&bytes(3 << 20)),
        ),
        (
            "jwst/public/jw02731/jw02731001001/jw02731001001_gs-fg_2022166062113_cal.fits".into(),
            fits(&bytes(40_000)),
        ),
        (
            "jwst/public/jw02731/L3/t/o001/jw02731-o001_t017_nircam_clear-f090w_i2d.fits".into(),
            fits(&bytes(big_mib << 20)),
        ),
        (
            "jwst/public/jw02731/L3/t/o001/jw02731-o001_t017_nircam_clear-f090w_cat.ecsv".into(),
            bytes(120_000),
        ),
        (
            "hst/public/u9o4/u9o40504m/u9o40504m_c3m.fits".into(),
            fits(&bytes(207_360)),
        ),
    ];
    for (key, data) in &objects {
        if key.starts_with("jwst/") {
            s3.put_sdk("stpubdata", key, data, 8 << 20);
        } else {
            s3.put("stpubdata", key, data);
        }
    }
    println!("endpoint={}", s3.endpoint);
    eprintln!(
        "local S3 serving {} objects in bucket stpubdata at {}",
        objects.len(),
        s3.endpoint
    );
    // Serve until whoever started us closes our stdin (or kills us).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
