//! Mirrors that mastfetch did not write: astroquery's `mastDownload/<COLLECTION>/<obs_id>/`
//! trees, MAST Portal/curl bundles, `aws s3 sync`/s5cmd copies of the bucket's keys, flat
//! folders of product files. Which archive object each file is, and whether its bytes are it.
//!
//! Owns the walk of such a folder, the recognition of a file by its place and name (a bucket key
//! inside its path, else the product naming rules), and the proof of a local file against what
//! the archive publishes for that object: the full-object CRC (or SHA-256) computed locally, a
//! plain MD5 ETag, or a multipart `md5-N` ETag over the object's own upload parts, each file
//! read once for all it needs. Objects are found the way plans find them (`resolve`: one
//! listing per folder, MAST's path lookup for what the rules miss); a HEAD is made only where
//! the listing cannot give the checksum; nothing is downloaded. Verdicts: `ok`, `corrupt`,
//! `stale` (the archive has written the object since the local copy was made), `unknown`.

use std::fs::File;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use futures::stream::{self, StreamExt};

use crate::checksum::{self, CrcAlg, Expect, PartHasher};
use crate::input::{Item, Parsed, Wanted};
use crate::manifest::{Entry, Status};
use crate::names::{self, Product};
use crate::plan::{PlanEntry, Source};
use crate::resolve::{ResolveError, Resolver};
use crate::s3::{ObjectInfo, S3Error, S3};
use crate::verify::{Finding, Verdict};

/// A file found under DIR.
#[derive(Debug, Clone)]
pub(crate) struct LocalFile {
    /// Relative to DIR, `/`-separated.
    pub rel: String,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// What became of one local file: the finding, and for a proven file the manifest record that
/// adopts it.
#[derive(Debug, Clone)]
pub(crate) struct Proof {
    pub finding: Finding,
    pub record: Option<Entry>,
}

/// mastfetch's own files in DIR (manifests, sums, the private folder, and the temporary files
/// earlier versions left beside their destinations): never taken for products.
fn is_own(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    crate::dest::reserved(rel).is_some() || (name.starts_with('.') && name.contains(".mastfetch"))
}

/// Every regular file under `dir`, sorted by path, mastfetch's own left out. Symbolic links
/// to folders are not followed (a loop, or a path out of DIR, would be walked forever).
pub(crate) fn walk(dir: &Path) -> io::Result<Vec<LocalFile>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, rel)) = stack.pop() {
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue; // not UTF-8: no product has such a name
            };
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push((entry.path(), child_rel));
            } else if !is_own(&child_rel) {
                let Ok(meta) = std::fs::metadata(entry.path()) else {
                    continue;
                };
                if meta.is_file() {
                    out.push(LocalFile {
                        rel: child_rel,
                        size: meta.len(),
                        modified: meta.modified().ok(),
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// What a file's place and name say it is: the product and, when its path holds a bucket key
/// (a copy of `s3://stpubdata/jwst/public/...` keeps the keys), that key.
pub(crate) fn recognise(rel: &str) -> Option<(Product, Option<String>)> {
    let parts: Vec<&str> = rel.split('/').collect();
    for i in 0..parts.len().saturating_sub(1) {
        if matches!(parts[i], "jwst" | "hst") && parts[i + 1] == "public" {
            let key = parts[i..].join("/");
            if let Some(p) = names::uri_for_key(&key) {
                return Some((p, Some(key)));
            }
            // A product name at a key the naming rules would not derive (association files
            // kept beside their exposures, say): the key is still worth a listing's word.
            if let Some(p) = Product::from_filename(parts.last()?) {
                return Some((p, Some(key)));
            }
        }
    }
    Product::from_filename(parts.last()?).map(|p| (p, None))
}

/// Find each file's archive object and prove it. `bucket` is the public bucket's name.
pub(crate) async fn prove_tree(
    files: &[LocalFile],
    dir: &Path,
    resolver: &Resolver<'_>,
    s3: &S3,
    jobs: usize,
) -> Result<Vec<Proof>, ResolveError> {
    let mut parsed = Parsed::default();
    let mut uri_of = Vec::with_capacity(files.len());
    for f in files {
        let found = recognise(&f.rel);
        uri_of.push(found.as_ref().map(|(p, _)| p.uri.clone()));
        if let Some((product, key)) = found {
            parsed.items.push(Item::Product(Wanted {
                product,
                obs_id: None,
                size: None,
                access: None,
                key: key.map(|k| (s3.bucket.clone(), k)),
                origin: f.rel.clone(),
            }));
        }
    }
    let plan = resolver.resolve(parsed).await?;
    let mut by_uri: std::collections::HashMap<&str, &PlanEntry> =
        plan.files.iter().map(|e| (e.uri.as_str(), e)).collect();
    for d in &plan.duplicates {
        by_uri.entry(d.entry.uri.as_str()).or_insert(&d.entry);
    }
    let proofs = stream::iter(files.iter().zip(&uri_of))
        .map(|(f, uri)| {
            let entry = uri.as_deref().and_then(|u| by_uri.get(u).copied());
            async move {
                match (uri, entry) {
                    (None, _) => unknown(f, "not an archive product name"),
                    (Some(_), None) => unknown(f, "not found in the archive"),
                    (Some(_), Some(e)) => prove(dir, f, e, s3).await,
                }
            }
        })
        .buffered(jobs.max(1))
        .collect()
        .await;
    Ok(proofs)
}

fn unknown(f: &LocalFile, why: &str) -> Proof {
    Proof {
        finding: Finding {
            path: f.rel.clone(),
            status: Verdict::Unknown,
            message: Some(why.to_string()),
        },
        record: None,
    }
}

/// What the archive publishes for one object, learned with as few requests as possible.
struct Published {
    expect: Expect,
    /// Upload part lengths for a multipart ETag; the whole file otherwise.
    parts: Vec<u64>,
    head: Option<ObjectInfo>,
    note: Option<String>,
}

/// A plain MD5 ETag from the listing needs no request; otherwise one HEAD (with checksum mode)
/// tells the full-object checksum, and for a multipart ETag without one, `HEAD ?partNumber=`
/// tells the part layout.
async fn published(s3: &S3, bucket: &str, e: &PlanEntry, size: u64) -> Result<Published, S3Error> {
    if let Some(etag) = e.etag.as_deref().filter(|t| checksum::is_md5_etag(t)) {
        return Ok(Published {
            expect: Expect::from_etag(Some(etag)),
            parts: vec![size],
            head: None,
            note: None,
        });
    }
    let key = e.key.as_deref().unwrap_or_default();
    let Some(head) = s3.head(bucket, key).await? else {
        return Err(S3::make_error(
            "HEAD",
            bucket,
            key,
            crate::s3::ErrorKind::NotFound,
            crate::s3::Detail::Found("gone from the bucket since it was listed".into()),
        ));
    };
    let etag = head.etag.clone().or(e.etag.clone());
    let expect = Expect::from_published(head.checksum.as_ref(), etag.as_deref());
    let mut out = Published {
        parts: vec![size],
        expect,
        head: Some(head),
        note: None,
    };
    if let Expect::Md5PartsLater { etag } = &out.expect {
        match part_layout(s3, bucket, key, size).await? {
            Some(parts) => {
                out.expect = Expect::Md5Parts {
                    etag: etag.clone(),
                    parts: parts.clone(),
                };
                out.parts = parts;
            }
            None => {
                out.expect = Expect::Size {
                    note: Some("the server does not tell the upload's part layout".into()),
                };
                out.note = Some("size only: the server does not tell the part layout".into());
            }
        }
    }
    Ok(out)
}

/// The object's upload part lengths: part 1's length and the part count, then every part's
/// own HEAD when they are not equal-but-the-last.
async fn part_layout(
    s3: &S3,
    bucket: &str,
    key: &str,
    size: u64,
) -> Result<Option<Vec<u64>>, S3Error> {
    let Some(first) = s3.head_part(bucket, key, 1).await? else {
        return Ok(None);
    };
    let Some(count) = first.parts_count else {
        return Ok(None);
    };
    if let Some(parts) = checksum::equal_parts(size, first.len, count) {
        return Ok(Some(parts));
    }
    let mut parts = vec![first.len];
    for n in 2..=count {
        match s3.head_part(bucket, key, n).await? {
            Some(p) => parts.push(p.len),
            None => return Ok(None),
        }
    }
    Ok((parts.iter().sum::<u64>() == size).then_some(parts))
}

/// The local file's digests for `expect`, in one read: whether it matches, what it is, and its
/// CRC-64/NVME (for the manifest).
fn digest(path: &Path, expect: &Expect, parts: &[u64]) -> io::Result<(bool, String, String)> {
    if let Expect::Sha256 { value } = expect {
        let (crc, sha) = checksum::digest_file(path, true)?;
        let sha = sha.unwrap_or_default();
        let bytes: Vec<u8> = (0..sha.len() / 2)
            .filter_map(|i| u8::from_str_radix(&sha[2 * i..2 * i + 2], 16).ok())
            .collect();
        let got = checksum::b64(&bytes);
        return Ok((&got == value, format!("sha256:{got}"), crc));
    }
    let file = File::open(path)?;
    let hasher_expect = match expect {
        Expect::Md5 { etag } => Expect::Md5Parts {
            etag: etag.clone(),
            parts: parts.to_vec(),
        },
        other => other.clone(),
    };
    let mut offset = 0;
    let mut digests = Vec::with_capacity(parts.len());
    for &len in parts {
        digests.push((
            PartHasher::of_range(&hasher_expect, &file, offset, len)?,
            len,
        ));
        offset += len;
    }
    let crc64 = CrcAlg::Crc64Nvme.combine(digests.iter().map(|(d, len)| (d.crc64, *len)));
    let crc64 = checksum::crc64_b64(crc64);
    let md5s: Vec<[u8; 16]> = digests.iter().filter_map(|(d, _)| d.md5).collect();
    Ok(match expect {
        Expect::Crc { alg, value } => {
            let got = match alg {
                CrcAlg::Crc64Nvme => crc64.clone(),
                _ => alg.encode(
                    alg.combine(
                        digests
                            .iter()
                            .map(|(d, len)| (d.extra.unwrap_or_default(), *len)),
                    ),
                ),
            };
            (&got == value, format!("{}:{got}", alg.name()), crc64)
        }
        Expect::Md5 { etag } => {
            let got = md5s.first().map(|m| checksum::hex(m)).unwrap_or_default();
            (got.eq_ignore_ascii_case(etag), format!("MD5 {got}"), crc64)
        }
        Expect::Md5Parts { etag, .. } => {
            let got = checksum::multipart_etag(&md5s);
            (got.eq_ignore_ascii_case(etag), format!("ETag {got}"), crc64)
        }
        _ => (true, String::new(), crc64),
    })
}

/// Prove one file against its archive object.
pub(crate) async fn prove(dir: &Path, f: &LocalFile, e: &PlanEntry, s3: &S3) -> Proof {
    let (Source::S3, Some(bucket)) = (e.source, e.bucket.as_deref()) else {
        return unknown(
            f,
            "not in the bucket (MAST only): the archive publishes nothing to check it against",
        );
    };
    let (why, head) = if Some(f.size) != e.size {
        let want = e.size.map_or("?".into(), |s| s.to_string());
        let why = format!("size {}, the archive's object has {want}", f.size);
        (why, None)
    } else {
        match compare_digests(dir, f, e, s3, bucket).await {
            Compared::Settled(proof) => return *proof,
            Compared::Mismatch { why, head } => (why, head),
        }
    };
    let (verdict, message) = mismatched(f, bucket, e, s3, head, why).await;
    Proof {
        finding: Finding {
            path: f.rel.clone(),
            status: verdict,
            message: Some(message),
        },
        record: None,
    }
}

/// What comparing a file of the archive object's size with what the archive publishes found.
enum Compared {
    /// Proven (with its record), or no verdict on the bytes could be reached.
    Settled(Box<Proof>),
    /// The bytes are not the object's: why, and the HEAD already made, if one was.
    Mismatch {
        why: String,
        head: Option<ObjectInfo>,
    },
}

/// Digest a file as the archive's published value asks and compare.
async fn compare_digests(
    dir: &Path,
    f: &LocalFile,
    e: &PlanEntry,
    s3: &S3,
    bucket: &str,
) -> Compared {
    let settled = |status, message: Option<String>, record| {
        let finding = Finding {
            path: f.rel.clone(),
            status,
            message,
        };
        Compared::Settled(Box::new(Proof { finding, record }))
    };
    let p = match published(s3, bucket, e, f.size).await {
        Ok(p) => p,
        Err(err) => {
            let msg = format!("cannot ask the archive: {err}");
            return settled(Verdict::Unknown, Some(msg), None);
        }
    };
    let path = dir.join(&f.rel);
    let (expect, parts) = (p.expect.clone(), p.parts.clone());
    let res = tokio::task::spawn_blocking(move || digest(&path, &expect, &parts)).await;
    let (ok, got, crc64) = match res {
        Ok(Ok(v)) => v,
        Ok(Err(err)) => {
            return settled(Verdict::Corrupt, Some(format!("cannot read: {err}")), None)
        }
        Err(err) => return settled(Verdict::Unknown, Some(format!("cannot hash: {err}")), None),
    };
    if !ok {
        let want = p.expect.manifest_checksum().unwrap_or_default();
        let why = format!("{got}, the archive publishes {want}");
        return Compared::Mismatch { why, head: p.head };
    }
    let mut record = Entry::from_plan(e, Status::Adopted, p.note.clone());
    record.path = f.rel.clone();
    record.size = Some(f.size);
    record.checksum = p.expect.manifest_checksum();
    record.verified = Some(p.expect.verified().to_string());
    record.crc64nvme = Some(crc64);
    // A rerun knows the file by the ETag it was proven under.
    if record.etag.is_none() {
        record.etag = p.head.as_ref().and_then(|h| h.etag.clone());
    }
    settled(Verdict::Ok, p.note, Some(record))
}

/// The verdict on a file whose bytes are not the archive's object, and its message (`why`,
/// and when stale, since when): damaged (`corrupt`), or a copy of an object the archive has
/// written since (`stale`, reprocessed). Only when the object was written tells which (from
/// the HEAD already made, else one more).
async fn mismatched(
    f: &LocalFile,
    bucket: &str,
    e: &PlanEntry,
    s3: &S3,
    head: Option<ObjectInfo>,
    why: String,
) -> (Verdict, String) {
    // A listing states when the object was written to the millisecond, a HEAD only to the
    // second (a copy made in the same second as an upload could not be told from it).
    let key = e.key.as_deref().unwrap_or_default();
    let listed = s3
        .list(bucket, key, false)
        .await
        .ok()
        .and_then(|objs| objs.into_iter().find(|o| o.key == key))
        .and_then(|o| o.last_modified);
    let written = match (listed, head) {
        (Some(t), _) => Some(t),
        (None, Some(h)) => h.last_modified,
        (None, None) => s3
            .head(bucket, key)
            .await
            .ok()
            .flatten()
            .and_then(|h| h.last_modified),
    };
    let older = matches!((f.modified, written), (Some(local), Some(remote)) if local < remote);
    if older {
        let msg = format!("{why}; the archive wrote it after this copy was made (reprocessed)");
        (Verdict::Stale, msg)
    } else {
        (Verdict::Corrupt, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_recognised_by_key_in_the_path_or_by_name() {
        let (p, key) = recognise(
            "mastDownload/JWST/jw02731001001_02101_00001_nrcb1/jw02731001001_02101_00001_nrcb1_cal.fits",
        )
        .unwrap();
        assert_eq!(
            p.uri,
            "mast:JWST/product/jw02731001001_02101_00001_nrcb1_cal.fits"
        );
        assert_eq!(key, None);
        let (p, key) = recognise(
            "mirror/jwst/public/jw02731/L3/t/o001/jw02731-o001_t017_nircam_clear-f090w_i2d.fits",
        )
        .unwrap();
        assert_eq!(
            p.uri,
            "mast:JWST/product/jw02731-o001_t017_nircam_clear-f090w_i2d.fits"
        );
        assert_eq!(
            key.as_deref(),
            Some("jwst/public/jw02731/L3/t/o001/jw02731-o001_t017_nircam_clear-f090w_i2d.fits")
        );
        let (p, key) = recognise("hst/public/j8ck/j8ck01040/j8ck01041_drz.fits").unwrap();
        assert_eq!(p.uri, "mast:HST/product/j8ck01041_drz.fits");
        assert!(key.is_some());
        // A key the rules would not derive is still taken from the path.
        let odd =
            "jwst/public/jw02731/jw02731002007/jw02731-o002_20220614t070000_image2_00001_asn.json";
        let (p, key) = recognise(odd).unwrap();
        assert!(p.uri.ends_with("_asn.json"));
        assert_eq!(key.as_deref(), Some(odd));
        assert!(recognise("MANIFEST.HTML").is_none());
        assert!(recognise("notes/readme.txt").is_none());
    }

    #[test]
    fn own_files_are_not_products() {
        for own in [
            "mastfetch-manifest.jsonl",
            "mastfetch-manifest.shard-1-of-4.jsonl",
            "SHA256SUMS",
            ".mastfetch/lock",
            "JWST/x/.jw_cal.fits.mastfetch",
        ] {
            assert!(is_own(own), "{own}");
        }
        assert!(!is_own("JWST/x/jw02731001001_02101_00001_nrcb1_cal.fits"));
    }
}
