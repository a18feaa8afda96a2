//! A cheap S3-protocol server for the benchmark's "recent objects" profile: objects held as S3
//! holds what a current SDK uploaded. Every object carries a full-object CRC-64/NVME (S3's
//! default since December 2024), returned only on a whole-object GET or HEAD that asks with
//! `x-amz-checksum-mode: ENABLED`; objects above the upload part size were uploaded in parts
//! (multipart `md5-N` ETag, `partNumber` answered with `x-amz-mp-parts-count`), the rest in one
//! PUT (plain-MD5 ETag). Listings name the checksum algorithm and type, not the value.
//!
//! `--synthetic N` adds N listed-only objects under `stpubdata/jwst/public/` (JWST-shaped keys,
//! no bytes: GET of them fails), for the scale benchmark's planning of a million-key prefix.
//!
//! `cargo run --release --example bench_s3 -- ROOT [--port P] [--part-size MIB]` serves
//! `ROOT/<bucket>/<key>` anonymously on 127.0.0.1 (path-style), prints `endpoint=URL`, and
//! runs until killed. Digests are computed once at start (and cached in `ROOT/.bench_s3/`), so
//! serving costs only the copy: the clients' own cost is what a benchmark then sees. Answers
//! ListObjectsV2 (prefix, delimiter, continuation, 1000 a page), HEAD and GET (Range,
//! partNumber, If-Match), nothing else.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// Read size of a GET body: large enough that the server's syscalls stay out of the picture.
const CHUNK: usize = 1 << 20;

#[derive(Clone, Serialize, Deserialize)]
struct Object {
    size: u64,
    mtime: u64,
    etag: String,
    crc64nvme: String,
    /// Upload part lengths of a multipart object.
    parts: Option<Vec<u64>>,
}

type Objects = BTreeMap<String, Object>;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Digests of one file as an SDK with this part size would have uploaded it.
fn describe(path: &Path, part: u64) -> std::io::Result<Object> {
    let meta = std::fs::metadata(path)?;
    let size = meta.len();
    let mtime = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut file = std::fs::File::open(path)?;
    let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
    let mut part_md5s = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 || part_md5s.is_empty() {
        let mut md5 = Md5::new();
        let mut in_part = part.min(left);
        while in_part > 0 {
            let n = file.read(&mut buf[..in_part.min(CHUNK as u64) as usize])?;
            if n == 0 {
                break;
            }
            crc.update(&buf[..n]);
            md5.update(&buf[..n]);
            in_part -= n as u64;
            left -= n as u64;
        }
        part_md5s.push(md5.finalize());
        if left == 0 {
            break;
        }
    }
    let crc64nvme = base64::engine::general_purpose::STANDARD.encode(crc.finalize().to_be_bytes());
    let (etag, parts) = if size > part {
        let joined: Vec<u8> = part_md5s.iter().flatten().copied().collect();
        let n = part_md5s.len() as u64;
        let mut lens = vec![part; n as usize - 1];
        lens.push(size - part * (n - 1));
        (format!("{}-{n}", hex(&Md5::digest(&joined))), Some(lens))
    } else {
        (hex(&part_md5s[0]), None)
    };
    Ok(Object {
        size,
        mtime,
        etag,
        crc64nvme,
        parts,
    })
}

/// Every file under `root/<bucket>/`, keyed `bucket/key`, from the cache where still valid.
fn scan(root: &Path, part: u64) -> Objects {
    let cache_dir = root.join(".bench_s3");
    let cache_file = cache_dir.join(format!("objects-{part}.json"));
    let cached: Objects = std::fs::read(&cache_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut out = Objects::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p == cache_dir {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if !rel.contains('/') {
                continue; // a file beside the buckets
            }
            let meta = std::fs::metadata(&p).unwrap();
            let mtime = meta
                .modified()
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let obj = match cached.get(&rel) {
                Some(o) if o.size == meta.len() && o.mtime == mtime => o.clone(),
                _ => describe(&p, part).unwrap(),
            };
            out.insert(rel, obj);
        }
    }
    std::fs::create_dir_all(&cache_dir).ok();
    std::fs::write(&cache_file, serde_json::to_vec(&out).unwrap()).ok();
    out
}

struct Server {
    root: PathBuf,
    objects: Objects,
    started: SystemTime,
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn query_map(q: &str) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn http_date(t: SystemTime) -> String {
    httpdate(t)
}

/// RFC 1123 date without another dependency: the bench needs only a valid one.
fn httpdate(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86400;
    let (h, m, s) = (secs % 86400 / 3600, secs % 3600 / 60, secs % 60);
    let (y, mo, d) = civil(days as i64);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][mo as usize - 1];
    format!("{wd}, {d:02} {mon} {y} {h:02}:{m:02}:{s:02} GMT")
}

fn iso8601(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, mo, d) = civil((secs / 86400) as i64);
    let (h, m, s) = (secs % 86400 / 3600, secs % 3600 / 60, secs % 60);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.000Z")
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl Server {
    fn list(&self, bucket: &str, q: &BTreeMap<String, String>) -> Response<Body> {
        let prefix = q.get("prefix").cloned().unwrap_or_default();
        let delimiter = q.get("delimiter").cloned().unwrap_or_default();
        let after = q
            .get("continuation-token")
            .or_else(|| q.get("start-after"))
            .cloned()
            .unwrap_or_default();
        let full_prefix = format!("{bucket}/{prefix}");
        let mut contents = String::new();
        let mut prefixes = std::collections::BTreeSet::new();
        let mut count = 0;
        let mut last = String::new();
        let mut truncated = false;
        for (name, o) in self.objects.range(full_prefix.clone()..) {
            if !name.starts_with(&full_prefix) {
                break;
            }
            let key = &name[bucket.len() + 1..];
            if key <= after.as_str() {
                continue;
            }
            if count == 1000 {
                truncated = true;
                break;
            }
            let rest = &key[prefix.len()..];
            if !delimiter.is_empty() {
                if let Some(i) = rest.find(&delimiter) {
                    let p = format!("{prefix}{}", &rest[..i + delimiter.len()]);
                    if prefixes.insert(p) {
                        count += 1;
                    }
                    last = key.to_string();
                    continue;
                }
            }
            contents.push_str(&format!(
                "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>\"{}\"</ETag>\
                 <ChecksumAlgorithm>CRC64NVME</ChecksumAlgorithm><ChecksumType>FULL_OBJECT\
                 </ChecksumType><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
                xml_escape(key),
                iso8601(self.started),
                o.etag,
                o.size
            ));
            count += 1;
            last = key.to_string();
        }
        let common: String = prefixes
            .iter()
            .map(|p| {
                format!(
                    "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                    xml_escape(p)
                )
            })
            .collect();
        let next = if truncated {
            format!(
                "<NextContinuationToken>{}</NextContinuationToken>",
                xml_escape(&last)
            )
        } else {
            String::new()
        };
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Name>{}</Name><Prefix>{}</Prefix><KeyCount>{count}</KeyCount><MaxKeys>1000</MaxKeys>\
             <Delimiter>{}</Delimiter><IsTruncated>{truncated}</IsTruncated>{contents}{common}{next}\
             </ListBucketResult>",
            xml_escape(bucket),
            xml_escape(&prefix),
            xml_escape(&delimiter)
        );
        let mut r = full(StatusCode::OK, body);
        r.headers_mut()
            .insert("content-type", "application/xml".parse().unwrap());
        r
    }

    fn object(&self, req: &Request<Incoming>, name: &str, head: bool) -> Response<Body> {
        let Some(o) = self.objects.get(name) else {
            return full(
                StatusCode::NOT_FOUND,
                "<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>",
            );
        };
        let q = query_map(req.uri().query().unwrap_or(""));
        let h = req.headers();
        if let Some(m) = h.get("if-match").and_then(|v| v.to_str().ok()) {
            if m.trim_matches('"') != o.etag {
                return full(
                    StatusCode::PRECONDITION_FAILED,
                    "<Error><Code>PreconditionFailed</Code></Error>",
                );
            }
        }
        let part: Option<u64> = q.get("partNumber").and_then(|p| p.parse().ok());
        // An empty object has no range to give: answered whole, as servers commonly do.
        let range = h
            .get("range")
            .filter(|_| o.size > 0)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .map(|(a, b)| {
                let a: u64 = a.parse().unwrap_or(0);
                let last = o.size - 1;
                let b: u64 = b.parse().unwrap_or(last).min(last);
                (a, b)
            });
        let (start, end, whole) = match (part, range) {
            (Some(n), _) => {
                let lens = o.parts.clone().unwrap_or_else(|| vec![o.size]);
                let Some(len) = lens.get(n as usize - 1) else {
                    return full(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "<Error><Code>InvalidPartNumber</Code></Error>",
                    );
                };
                let start: u64 = lens[..n as usize - 1].iter().sum();
                (start, start + len - 1, false)
            }
            (None, Some((a, b))) if a <= b && b < o.size => (a, b, a == 0 && b + 1 == o.size),
            (None, Some(_)) => {
                return full(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "<Error><Code>InvalidRange</Code></Error>",
                )
            }
            (None, None) => (0, o.size.saturating_sub(1), true),
        };
        let len = if o.size == 0 { 0 } else { end - start + 1 };
        let partial = part.is_some() || range.is_some();
        let mut builder = Response::builder()
            .status(if partial && !head {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            })
            .header("content-length", len)
            .header("etag", format!("\"{}\"", o.etag))
            .header("last-modified", http_date(self.started))
            .header("accept-ranges", "bytes");
        if partial {
            builder = builder.header("content-range", format!("bytes {start}-{end}/{}", o.size));
        }
        if let (Some(_), Some(lens)) = (part, &o.parts) {
            builder = builder.header("x-amz-mp-parts-count", lens.len());
        }
        let checksum_mode = h
            .get("x-amz-checksum-mode")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"enabled"));
        if checksum_mode && whole && part.is_none() {
            builder = builder
                .header("x-amz-checksum-crc64nvme", &o.crc64nvme)
                .header("x-amz-checksum-type", "FULL_OBJECT");
        }
        if head || len == 0 {
            return builder
                .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
                .unwrap();
        }
        let file = match std::fs::File::open(self.root.join(name)) {
            Ok(f) => Arc::new(f),
            Err(e) => return full(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        let stream = futures::stream::unfold(start, move |at| {
            let file = file.clone();
            async move {
                if at > end {
                    return None;
                }
                let n = CHUNK.min((end + 1 - at) as usize);
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n];
                    file.read_exact_at(&mut buf, at).map(|()| buf)
                })
                .await
                .expect("read task");
                Some((read.map(|b| Frame::data(Bytes::from(b))), at + n as u64))
            }
        });
        builder.body(StreamBody::new(stream).boxed()).unwrap()
    }

    fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = percent_encoding::percent_decode_str(req.uri().path())
            .decode_utf8_lossy()
            .into_owned();
        let path = path.trim_start_matches('/');
        let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
        match (req.method().as_str(), key.is_empty()) {
            ("GET", true) => self.list(bucket, &query_map(req.uri().query().unwrap_or(""))),
            ("HEAD", true) => full(StatusCode::OK, ""),
            ("GET", false) => self.object(&req, path, false),
            ("HEAD", false) => self.object(&req, path, true),
            _ => full(
                StatusCode::NOT_IMPLEMENTED,
                "<Error><Code>NotImplemented</Code></Error>",
            ),
        }
    }
}

/// `n` listed-only objects, keyed like JWST products (a folder per observation, 1,000 files
/// each), sizes spread over 10 KiB to 2 GiB.
fn synthesize(objects: &mut BTreeMap<String, Object>, n: u64) {
    let mut x: u64 = 2731;
    for i in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let obs = format!(
            "jw{:05}{:03}001_02101_{:05}_nrcb1",
            1000 + i / 100_000,
            (i / 1000) % 1000,
            i % 1000
        );
        let key = format!(
            "stpubdata/jwst/public/jw{:05}/{}/{obs}_{i:08}_cal.fits",
            1000 + i / 100_000,
            &obs[..13]
        );
        let size = (10 << 10) + (x >> 33) % (2 << 30);
        objects.insert(
            key,
            Object {
                size,
                mtime: 0,
                etag: format!("{i:032x}"),
                crc64nvme: String::new(),
                parts: None,
            },
        );
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(
        args.first()
            .expect("usage: bench_s3 ROOT [--port P] [--part-size MIB]"),
    );
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let port = opt("--port").unwrap_or(0);
    // The AWS CLI's and most SDKs' multipart threshold and part size.
    let part = opt("--part-size").unwrap_or(8) << 20;
    let mut objects = scan(&root, part);
    synthesize(&mut objects, opt("--synthetic").unwrap_or(0));
    let server = Arc::new(Server {
        root,
        objects,
        started: SystemTime::now(),
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port as u16))
        .await
        .unwrap();
    println!("endpoint=http://{}", listener.local_addr().unwrap());
    println!("objects={}", server.objects.len());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.handle(req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
