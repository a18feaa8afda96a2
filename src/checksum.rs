//! What a downloaded file is proven against, and the digests taken as its bytes arrive.
//!
//! Owns reading the archive's published values (S3 additional checksums from answer headers,
//! ETags in their plain-MD5 and multipart `md5-N` forms), the choice of the strongest one a
//! file can be checked against ([`Expect`]), the per-part digests computed from the buffers
//! of each ranged GET ([`PartHasher`]) and their combination once the file is complete, and
//! the local CRC-64/NVME that the manifest records for `verify`. It sends no requests and
//! writes no files: the transfer engine asks, this module answers.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use base64::Engine as _;
use crc_fast::CrcAlgorithm;
use md5_many::Md5State;
use sha2::{Digest as _, Sha256};

/// Read size of the whole-file passes (MAST downloads, `verify`, resumed parts).
const READ_BUFFER: usize = 256 << 10;

/// The CRCs S3 can publish as a full-object value: they combine, so ranged parts that arrive
/// in any order on any task still give the whole file's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrcAlg {
    Crc64Nvme,
    Crc32c,
    Crc32,
}

impl CrcAlg {
    pub(crate) fn name(self) -> &'static str {
        match self {
            CrcAlg::Crc64Nvme => "crc64nvme",
            CrcAlg::Crc32c => "crc32c",
            CrcAlg::Crc32 => "crc32",
        }
    }

    fn algorithm(self) -> CrcAlgorithm {
        match self {
            CrcAlg::Crc64Nvme => CrcAlgorithm::Crc64Nvme,
            CrcAlg::Crc32c => CrcAlgorithm::Crc32Iscsi,
            CrcAlg::Crc32 => CrcAlgorithm::Crc32IsoHdlc,
        }
    }

    /// S3's form: base64 of the CRC's bytes, big-endian, 8 bytes or 4.
    pub(crate) fn encode(self, crc: u64) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        match self {
            CrcAlg::Crc64Nvme => b64.encode(crc.to_be_bytes()),
            _ => b64.encode((crc as u32).to_be_bytes()),
        }
    }

    pub(crate) fn digest(self) -> crc_fast::Digest {
        crc_fast::Digest::new(self.algorithm())
    }

    /// The CRC of parts `(crc, len)` laid end to end.
    pub(crate) fn combine(self, parts: impl IntoIterator<Item = (u64, u64)>) -> u64 {
        let mut acc: Option<u64> = None;
        for (crc, len) in parts {
            acc = Some(match acc {
                None => crc,
                Some(a) => crc_fast::checksum_combine(self.algorithm(), a, crc, len),
            });
        }
        acc.unwrap_or_else(|| crc_fast::checksum(self.algorithm(), b""))
    }
}

/// CRC-64/NVME in S3's base64 form (what the manifest's `crc64nvme` holds).
pub(crate) fn crc64_b64(crc: u64) -> String {
    CrcAlg::Crc64Nvme.encode(crc)
}

/// A full-object checksum as the archive stated it (`x-amz-checksum-<alg>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    /// Lowercase, as in the header name: `crc64nvme`, `crc32c`, `crc32`, `sha256`, `sha1`.
    pub alg: String,
    /// Exactly as S3 sent it (base64).
    pub value: String,
}

impl Published {
    /// The full-object checksum among an answer's headers, if there is one. A composite value
    /// (type COMPOSITE, or a value ending in `-N`) is a checksum of part checksums: comparing
    /// it with a whole-file digest would fail every time, so it is not taken.
    pub(crate) fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<Published> {
        if header("x-amz-checksum-type").is_some_and(|t| t.eq_ignore_ascii_case("COMPOSITE")) {
            return None;
        }
        ["crc64nvme", "crc32c", "crc32", "sha256", "sha1"]
            .into_iter()
            .find_map(|alg| {
                let value = header(&format!("x-amz-checksum-{alg}"))?.trim();
                (!value.is_empty() && !is_composite(value)).then(|| Published {
                    alg: alg.to_string(),
                    value: value.to_string(),
                })
            })
    }

    pub(crate) fn crc(&self) -> Option<CrcAlg> {
        match self.alg.as_str() {
            "crc64nvme" => Some(CrcAlg::Crc64Nvme),
            "crc32c" => Some(CrcAlg::Crc32c),
            "crc32" => Some(CrcAlg::Crc32),
            _ => None,
        }
    }
}

/// `<base64>-N`: a checksum of the parts' checksums.
fn is_composite(value: &str) -> bool {
    value
        .rsplit_once('-')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A plain (single-part upload) S3 ETag is the MD5 of the object.
pub(crate) fn is_md5_etag(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The part count of a multipart ETag, `md5(concat(part md5s))-N`.
pub(crate) fn multipart_etag_parts(etag: &str) -> Option<u64> {
    let (md5, n) = etag.split_once('-')?;
    if !is_md5_etag(md5) {
        return None;
    }
    n.parse().ok().filter(|&n| n > 0)
}

/// What a file's bytes must match before they may take the final name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expect {
    /// A full-object CRC: each part's CRC is taken as it arrives, the parts combined at the end.
    Crc { alg: CrcAlg, value: String },
    /// A full-object SHA-256 (base64): serial, hashed in order by the read-back pool.
    Sha256 { value: String },
    /// A plain-MD5 ETag (hex): serial, hashed in order by the read-back pool.
    Md5 { etag: String },
    /// A multipart ETag over these upload part lengths: each part's MD5 taken as it arrives.
    Md5Parts { etag: String, parts: Vec<u64> },
    /// A multipart ETag whose layout is learned after the download (a file fetched in one GET):
    /// its parts are hashed back from disk.
    Md5PartsLater { etag: String },
    /// Nothing checkable was published: the size is all that was checked.
    Size { note: Option<String> },
    /// `--no-verify`.
    Nothing,
}

impl Expect {
    /// From an ETag alone (no full-object checksum was published).
    pub(crate) fn from_etag(etag: Option<&str>) -> Expect {
        match etag {
            Some(e) if is_md5_etag(e) => Expect::Md5 {
                etag: e.to_ascii_lowercase(),
            },
            Some(e) if multipart_etag_parts(e).is_some() => Expect::Md5PartsLater {
                etag: e.to_ascii_lowercase(),
            },
            _ => Expect::Size { note: None },
        }
    }

    /// From a full-object checksum if there is one we can compute, else from the ETag.
    pub(crate) fn from_published(checksum: Option<&Published>, etag: Option<&str>) -> Expect {
        match checksum {
            Some(p) if p.crc().is_some() => Expect::Crc {
                alg: p.crc().expect("checked"),
                value: p.value.clone(),
            },
            Some(p) if p.alg == "sha256" => Expect::Sha256 {
                value: p.value.clone(),
            },
            // SHA-1 alone: the ETag (the same upload's MD5) proves as much for less.
            _ => Expect::from_etag(etag),
        }
    }

    /// The manifest's `checksum`: the archive's value the file was checked against.
    pub(crate) fn manifest_checksum(&self) -> Option<String> {
        match self {
            Expect::Crc { alg, value } => Some(format!("{}:{value}", alg.name())),
            Expect::Sha256 { value } => Some(format!("sha256:{value}")),
            Expect::Md5 { etag }
            | Expect::Md5Parts { etag, .. }
            | Expect::Md5PartsLater { etag } => Some(format!("etag:{etag}")),
            Expect::Size { .. } | Expect::Nothing => None,
        }
    }

    /// The manifest's `verified`.
    pub(crate) fn verified(&self) -> &'static str {
        match self {
            Expect::Crc { .. } | Expect::Sha256 { .. } => "checksum",
            Expect::Md5 { .. } | Expect::Md5Parts { .. } | Expect::Md5PartsLater { .. } => "etag",
            Expect::Size { .. } => "size",
            Expect::Nothing => "none",
        }
    }

    /// The CRC to take per part besides CRC-64/NVME (which is always taken, for the manifest).
    pub(crate) fn extra_crc(&self) -> Option<CrcAlg> {
        match self {
            Expect::Crc { alg, .. } if *alg != CrcAlg::Crc64Nvme => Some(*alg),
            _ => None,
        }
    }

    pub(crate) fn md5_per_part(&self) -> bool {
        matches!(self, Expect::Md5Parts { .. })
    }
}

/// The digests of one part's bytes, in order, as they arrive.
pub(crate) struct PartHasher {
    crc64: crc_fast::Digest,
    extra: Option<crc_fast::Digest>,
    md5: Option<Md5State>,
}

/// What a finished part contributes to its file's proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartDigest {
    pub crc64: u64,
    pub extra: Option<u64>,
    pub md5: Option<[u8; 16]>,
}

impl PartHasher {
    pub(crate) fn new(expect: &Expect) -> PartHasher {
        PartHasher {
            crc64: CrcAlg::Crc64Nvme.digest(),
            extra: expect.extra_crc().map(CrcAlg::digest),
            md5: expect.md5_per_part().then(Md5State::new),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.crc64.update(data);
        if let Some(d) = &mut self.extra {
            d.update(data);
        }
        if let Some(m) = &mut self.md5 {
            m.update(data);
        }
    }

    pub(crate) fn finish(&self) -> PartDigest {
        PartDigest {
            crc64: self.crc64.finalize(),
            extra: self.extra.as_ref().map(|d| d.finalize()),
            md5: self.md5.as_ref().map(Md5State::finalize),
        }
    }

    /// The digests of `len` bytes at `offset` of a file already on disk (a resumed part).
    pub(crate) fn of_range(
        expect: &Expect,
        file: &File,
        offset: u64,
        len: u64,
    ) -> io::Result<PartDigest> {
        let mut h = PartHasher::new(expect);
        let mut buf = vec![0u8; READ_BUFFER.min(len as usize).max(1)];
        let mut done = 0u64;
        while done < len {
            let n = buf.len().min((len - done) as usize);
            file.read_exact_at(&mut buf[..n], offset + done)?;
            h.update(&buf[..n]);
            done += n as u64;
        }
        Ok(h.finish())
    }
}

/// A multipart ETag from the MD5s of its parts.
pub(crate) fn multipart_etag(md5s: &[[u8; 16]]) -> String {
    let joined: Vec<u8> = md5s.iter().flatten().copied().collect();
    format!("{}-{}", hex(&md5_many::md5(&joined)), md5s.len())
}

/// The multipart ETag of a file on disk cut into `parts` (lengths).
pub(crate) fn multipart_etag_of_file(path: &Path, parts: &[u64]) -> io::Result<String> {
    let file = File::open(path)?;
    let expect = Expect::Md5Parts {
        etag: String::new(),
        parts: Vec::new(),
    };
    let mut offset = 0;
    let mut md5s = Vec::with_capacity(parts.len());
    for &len in parts {
        let d = PartHasher::of_range(&expect, &file, offset, len)?;
        md5s.push(d.md5.expect("MD5 asked for"));
        offset += len;
    }
    Ok(multipart_etag(&md5s))
}

/// The lengths of a multipart upload's parts from part 1's length and the part count, when
/// the parts are equal but the last (how every SDK uploads); `None` when that does not add up.
pub(crate) fn equal_parts(size: u64, first: u64, count: u64) -> Option<Vec<u64>> {
    if count == 0 || first == 0 {
        return None;
    }
    if count == 1 {
        return (first == size).then(|| vec![size]);
    }
    let before_last = first.checked_mul(count - 1)?;
    let last = size.checked_sub(before_last)?;
    if last == 0 || last > first {
        return None;
    }
    let mut parts = vec![first; count as usize - 1];
    parts.push(last);
    Some(parts)
}

/// CRC-64/NVME (S3's base64 form) and, if asked, SHA-256 (hex) of a whole file, in one read.
pub(crate) fn digest_file(path: &Path, sha256: bool) -> io::Result<(String, Option<String>)> {
    digest_reader(File::open(path)?, sha256)
}

pub(crate) fn digest_reader(
    mut r: impl Read,
    sha256: bool,
) -> io::Result<(String, Option<String>)> {
    let mut crc = CrcAlg::Crc64Nvme.digest();
    let mut sha = sha256.then(Sha256::new);
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        crc.update(&buf[..n]);
        if let Some(s) = &mut sha {
            s.update(&buf[..n]);
        }
    }
    Ok((crc64_b64(crc.finalize()), sha.map(|s| hex(&s.finalize()))))
}

/// Lower-case hex of a digest: how SHA-256 and MD5 values are written (manifests, ETags).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Base64 (standard) of bytes: how S3 writes SHA-256 checksums.
pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64nvme_check_value_and_s3_form() {
        let crc = crc_fast::checksum(CrcAlgorithm::Crc64Nvme, b"123456789");
        assert_eq!(crc, 0xae8b14860a799888);
        assert_eq!(crc64_b64(crc), b64(&0xae8b14860a799888u64.to_be_bytes()));
        // CRC-32C's and CRC-32's check values, in their 4-byte form.
        let c = crc_fast::checksum(CrcAlgorithm::Crc32Iscsi, b"123456789");
        assert_eq!(c, 0xe3069283);
        assert_eq!(CrcAlg::Crc32c.encode(c), b64(&[0xe3, 0x06, 0x92, 0x83]));
        assert_eq!(
            crc_fast::checksum(CrcAlgorithm::Crc32IsoHdlc, b"123456789"),
            0xcbf43926
        );
    }

    #[test]
    fn parts_combine_to_the_whole() {
        let data: Vec<u8> = (0..100_003u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for alg in [CrcAlg::Crc64Nvme, CrcAlg::Crc32c, CrcAlg::Crc32] {
            let whole = crc_fast::checksum(alg.algorithm(), &data);
            let parts = data
                .chunks(7_777)
                .map(|c| (crc_fast::checksum(alg.algorithm(), c), c.len() as u64));
            assert_eq!(alg.combine(parts), whole, "{alg:?}");
            assert_eq!(alg.combine([]), crc_fast::checksum(alg.algorithm(), b""));
        }
    }

    #[test]
    fn published_values_composite_and_etags() {
        let h = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
        };
        let full = Published::from_headers(h(&[
            ("x-amz-checksum-crc64nvme", "AAAAAAAAAAA="),
            ("x-amz-checksum-type", "FULL_OBJECT"),
        ]));
        assert_eq!(full.unwrap().crc(), Some(CrcAlg::Crc64Nvme));
        assert_eq!(
            Published::from_headers(h(&[("x-amz-checksum-crc32c", "AAAAAA==-3")])),
            None
        );
        assert_eq!(
            Published::from_headers(h(&[
                ("x-amz-checksum-sha256", "abc="),
                ("x-amz-checksum-type", "COMPOSITE")
            ])),
            None
        );
        assert_eq!(
            multipart_etag_parts("0123456789abcdef0123456789abcdef-12"),
            Some(12)
        );
        assert_eq!(
            multipart_etag_parts("0123456789abcdef0123456789abcdef"),
            None
        );
        assert_eq!(multipart_etag_parts("xyz-2"), None);
        assert_eq!(equal_parts(25, 10, 3), Some(vec![10, 10, 5]));
        assert_eq!(equal_parts(30, 10, 3), Some(vec![10, 10, 10]));
        assert_eq!(equal_parts(31, 10, 3), None);
        assert_eq!(equal_parts(20, 10, 3), None);
        assert_eq!(equal_parts(7, 7, 1), Some(vec![7]));
    }

    #[test]
    fn multipart_etag_matches_the_definition() {
        let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let (a, b) = data.split_at(1000);
        let mut joined = md5_many::md5(a).to_vec();
        joined.extend(md5_many::md5(b));
        let want = format!("{}-2", hex(&md5_many::md5(&joined)));
        let h = |d: &[u8]| {
            let mut p = PartHasher::new(&Expect::Md5Parts {
                etag: String::new(),
                parts: vec![],
            });
            for c in d.chunks(333) {
                p.update(c);
            }
            p.finish().md5.unwrap()
        };
        assert_eq!(multipart_etag(&[h(a), h(b)]), want);
    }
}
