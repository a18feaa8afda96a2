//! What a file fetched from the bucket must match, and the check once it is complete (steps 1
//! and 4 of the design note in `transfer`).
//!
//! Owns learning the proof of a multi-part file before it starts (`multi_part_expect`: the
//! full-object checksum, or a multipart ETag with its upload part layout, `upload_parts`) and
//! the comparison of a complete file's digests with it (`compare`), naming both values on a
//! mismatch. When they are asked for is `parts`'; which proofs exist and how they are
//! computed is `checksum`'s.

use std::path::Path;

use crate::checksum::{self, CrcAlg, Expect, PartDigest};
use crate::hashing::{self};
use crate::outcome::{io_err, FinishError};
use crate::s3::{Detail, ErrorKind, S3Error, S3};

/// Upload parts beyond this many are not looked up one HEAD each (S3 allows 10,000 parts).
pub(crate) const MAX_PART_HEADS: u64 = 10_000;

/// Why a multipart ETag could not be checked (manifest message of a size-only file).
pub(crate) const NO_LAYOUT: &str =
    "multipart ETag not checked: the server did not give the upload part \
     layout (HEAD ?partNumber=1); verified by size only";

/// How a mismatch names the value it missed.
pub(crate) fn checksum_name(alg: CrcAlg) -> &'static str {
    match alg {
        CrcAlg::Crc64Nvme => "crc64nvme checksum",
        CrcAlg::Crc32c => "crc32c checksum",
        CrcAlg::Crc32 => "crc32 checksum",
    }
}

/// A file's CRC in `alg` from its parts' (CRC-64/NVME is always taken: `crc64`).
fn combined_crc(alg: CrcAlg, parts: &[(PartDigest, u64)], crc64: u64) -> u64 {
    match alg {
        CrcAlg::Crc64Nvme => crc64,
        _ => alg.combine(
            parts
                .iter()
                .map(|(d, len)| (d.extra.expect("extra CRC taken"), *len)),
        ),
    }
}

/// Compare a complete temporary file's digests with what it must match: the per-part digests
/// (`parts`, with their lengths, and their combined CRC-64/NVME), the serial ones, or the file
/// read back along a late upload `layout`. Returns the proof as recorded (a late layout filled
/// in), or [`FinishError::Mismatch`] naming both values.
pub(crate) fn compare(
    expect: Expect,
    parts: &[(PartDigest, u64)],
    crc64: u64,
    serial: &hashing::Digests,
    layout: Option<Vec<u64>>,
    tmp: &Path,
) -> Result<Expect, FinishError> {
    let mismatch = |what: &'static str, got: String, want: &str| {
        Err(FinishError::Mismatch {
            what,
            got,
            want: want.to_string(),
        })
    };
    match &expect {
        Expect::Crc { alg, value } => {
            let got = alg.encode(combined_crc(*alg, parts, crc64));
            if got != *value {
                return mismatch(checksum_name(*alg), format!("{} {got}", alg.name()), value);
            }
        }
        Expect::Sha256 { value } => {
            let got = checksum::b64(&serial.sha256.expect("SHA-256 taken"));
            if got != *value {
                return mismatch("sha256 checksum", format!("sha256 {got}"), value);
            }
        }
        Expect::Md5 { etag } => {
            let md5 = checksum::hex(&serial.md5.expect("MD5 taken"));
            if !md5.eq_ignore_ascii_case(etag) {
                return mismatch("ETag", format!("MD5 {md5}"), etag);
            }
        }
        Expect::Md5Parts { etag, .. } => {
            let md5s: Vec<[u8; 16]> = parts
                .iter()
                .map(|(d, _)| d.md5.expect("part MD5 taken"))
                .collect();
            let got = checksum::multipart_etag(&md5s);
            if !got.eq_ignore_ascii_case(etag) {
                return mismatch("ETag", format!("part MD5s {got}"), etag);
            }
        }
        Expect::Md5PartsLater { etag } => {
            let upload = layout.expect("layout learned");
            let got = checksum::multipart_etag_of_file(tmp, &upload)
                .map_err(io_err("cannot read back", tmp))?;
            if !got.eq_ignore_ascii_case(etag) {
                return mismatch("ETag", format!("part MD5s {got}"), etag);
            }
            return Ok(Expect::Md5Parts {
                etag: etag.clone(),
                parts: upload,
            });
        }
        Expect::Size { .. } | Expect::Nothing => {}
    }
    Ok(expect)
}

/// The lengths of an object's upload parts (`HEAD ?partNumber=N`), or `None` when the
/// server does not tell them (it ignores or refuses `partNumber`) or they do not add up to
/// `size`.
pub(crate) async fn upload_parts(
    s3: &S3,
    bucket: &str,
    key: &str,
    size: u64,
    etag_parts: u64,
) -> Option<Vec<u64>> {
    // A server that refuses partNumber outright (an error, not the whole object) cannot
    // tell the layout either: the file is kept on its size, never failed for it.
    let Ok(Some(first)) = s3.head_part(bucket, key, 1).await else {
        return None;
    };
    let count = first.parts_count?;
    if count != etag_parts || count > MAX_PART_HEADS {
        return None;
    }
    if let Some(parts) = checksum::equal_parts(size, first.len, count) {
        return Some(parts);
    }
    // Not equal but the last: ask for each part.
    let mut parts = vec![first.len];
    for n in 2..=count {
        let Ok(Some(p)) = s3.head_part(bucket, key, n).await else {
            return None;
        };
        parts.push(p.len);
    }
    (parts.iter().sum::<u64>() == size && !parts.contains(&0)).then_some(parts)
}

/// What a multi-part file must match, from one HEAD with checksum mode (and, for a
/// multipart ETag without a full-object checksum, the upload part layout). Returns the
/// object's current size and ETag too.
pub(crate) async fn multi_part_expect(
    s3: &S3,
    bucket: &str,
    key: &str,
    head: Option<crate::s3::ObjectInfo>,
) -> Result<(crate::s3::ObjectInfo, Expect), S3Error> {
    let info = match head {
        Some(h) => h,
        None => s3.head(bucket, key).await?.ok_or_else(|| {
            S3::make_error("HEAD", bucket, key, ErrorKind::NotFound, Detail::None)
        })?,
    };
    let expect = Expect::from_published(info.checksum.as_ref(), info.etag.as_deref());
    let Expect::Md5PartsLater { etag } = expect else {
        return Ok((info, expect));
    };
    let n = checksum::multipart_etag_parts(&etag).expect("a multipart ETag");
    let expect = match upload_parts(s3, bucket, key, info.size, n).await {
        Some(parts) => Expect::Md5Parts { etag, parts },
        None => Expect::Size {
            note: Some(NO_LAYOUT.to_string()),
        },
    };
    Ok((info, expect))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_names_both_values_and_keeps_the_proof() {
        let serial = hashing::Digests {
            sha256: None,
            md5: Some([0xab; 16]),
        };
        let tmp = Path::new("unused");
        let md5 = |etag: &str| Expect::Md5 { etag: etag.into() };
        let same = "ab".repeat(16);
        // ETags are compared without regard to case.
        let ok = compare(md5(&same.to_uppercase()), &[], 0, &serial, None, tmp).unwrap();
        assert_eq!(ok, md5(&same.to_uppercase()));
        let other = "cd".repeat(16);
        match compare(md5(&other), &[], 0, &serial, None, tmp) {
            Err(FinishError::Mismatch { what, got, want }) => {
                assert_eq!((what, want), ("ETag", other));
                assert_eq!(got, format!("MD5 {same}"));
            }
            r => panic!("expected a mismatch, got {:?}", r.map(|_| ())),
        }
        let size = Expect::Size { note: None };
        assert_eq!(
            compare(size.clone(), &[], 0, &serial, None, tmp).unwrap(),
            size
        );
    }
}
