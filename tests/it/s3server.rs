//! A real S3-protocol server for tests: `s3s-fs` in-process on 127.0.0.1, serving a temporary
//! folder (`ROOT/<bucket>/<key>`), behind a thin layer that logs every request and injects
//! faults on demand (503 SlowDown, connection resets, truncated bodies, delays, one flipped
//! byte, an object replaced after N GETs, If-Match honoured like AWS, a request-rate limit
//! answered with 503 SlowDown as S3 does above its per-prefix rate). Not a mock of our
//! client: the client under test speaks real S3 over real sockets.
//!
//! s3s-fs 0.14.1 computes a plain-MD5 ETag for files written into its folder, returns stored
//! checksums on any whole-object answer whether or not `x-amz-checksum-mode` was sent, and
//! ignores `partNumber`. So objects seeded the way a current SDK uploads them (`put_sdk`,
//! `put_multipart`) keep their S3 metadata here, in the layer: their ETag (plain MD5 or
//! multipart `md5-N` over the upload's own parts), their full-object CRC-64/NVME (sent only on
//! a whole-object GET/HEAD that asks with checksum mode, never on a ranged answer), and their
//! upload parts (`partNumber=N` answered with that part and `x-amz-mp-parts-count`). Objects
//! seeded with `put` are legacy: ETag only.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use md5::{Digest, Md5};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{Body, HttpError, HttpResponse};

/// Credentials the server accepts for signed requests (`--sign` tests).
pub const ACCESS_KEY: &str = "AKIDTEST";
pub const SECRET_KEY: &str = "secret";

/// A public bucket, like `stpubdata`: anyone may read and list, only signed requests may write.
/// A private bucket (a user's own, [`TestS3::private_bucket`]) wants a signature for every
/// operation, reads included; one listed in `read_only` refuses writes even when signed (a
/// destination the credentials may not write).
struct PublicRead {
    state: Arc<Mutex<State>>,
}

#[async_trait::async_trait]
impl S3Access for PublicRead {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> s3s::S3Result<()> {
        let read = matches!(
            cx.s3_op().name(),
            "GetObject" | "HeadObject" | "ListObjects" | "ListObjectsV2" | "HeadBucket"
        );
        let bucket = match cx.s3_path() {
            s3s::path::S3Path::Bucket { bucket } | s3s::path::S3Path::Object { bucket, .. } => {
                bucket.to_string()
            }
            s3s::path::S3Path::Root => String::new(),
        };
        let (private, read_only) = {
            let st = self.state.lock().unwrap();
            (st.private.contains(&bucket), st.read_only.contains(&bucket))
        };
        if read_only && !read {
            return Err(s3s::s3_error!(AccessDenied, "this user may not write here"));
        }
        if (read && !private) || cx.credentials().is_some() {
            Ok(())
        } else {
            Err(s3s::s3_error!(
                AccessDenied,
                "anonymous requests are denied"
            ))
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    /// `/bucket/key` (path-style), percent-decoded.
    pub path: String,
    pub query: String,
    pub range: Option<String>,
    pub if_match: Option<String>,
    /// Every header as `name: value`, to prove what was (not) sent.
    pub headers: Vec<String>,
}

impl Logged {
    pub fn is_get_object(&self) -> bool {
        self.method == "GET"
            && !self.query.contains("list-type")
            && self.path.matches('/').count() >= 2
    }
    pub fn is_list(&self) -> bool {
        self.method == "GET" && self.query.contains("list-type")
    }
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer 503 SlowDown.
    SlowDown,
    /// Drop the connection without answering.
    Reset,
    /// Answer, but cut the body after this many bytes.
    Truncate(usize),
    /// Wait this long before answering.
    Delay(Duration),
    /// Answer 500 InternalError.
    InternalError,
    /// Answer in full, with one bit of the body's first byte flipped (same length: damage
    /// that only a checksum shows).
    Corrupt,
}

/// What S3 keeps about an object besides its bytes (objects seeded as an SDK uploads them).
#[derive(Debug, Clone)]
pub struct Meta {
    /// Without quotes.
    pub etag: String,
    /// Full-object checksum: (`crc64nvme`, base64 value).
    pub checksum: Option<(String, String)>,
    /// Upload part lengths of a multipart object.
    pub parts: Option<Vec<u64>>,
}

struct Rule {
    method: &'static str,
    key_contains: String,
    times: usize,
    fault: Fault,
}

struct Replace {
    key: String,
    after_gets: usize,
    data: Vec<u8>,
    seen: usize,
}

#[derive(Default)]
struct State {
    log: Vec<Logged>,
    rules: VecDeque<Rule>,
    replace: Option<Replace>,
    honor_if_match: bool,
    list_delay: Option<Duration>,
    /// By `/bucket/key`.
    meta: HashMap<String, Meta>,
    ignore_part_number: bool,
    refuse_part_number: bool,
    refuse_head: bool,
    /// Buckets that want a signature for every operation.
    private: std::collections::HashSet<String>,
    /// Buckets that refuse every write.
    read_only: std::collections::HashSet<String>,
    /// Object body bytes received from clients (PUT, UploadPart), by `/bucket/key`.
    received: HashMap<String, u64>,
    /// Object body bytes sent to clients (GET), by `/bucket/key`.
    sent: HashMap<String, u64>,
    /// Multipart uploads in progress: (bucket, key, upload id), for ListMultipartUploads.
    uploads: Vec<(String, String, String)>,
    /// Replace the object at this key with these bytes when a copy of it is first asked for.
    replace_on_copy: Option<(String, Vec<u8>)>,
    /// Requests/s above which 503 SlowDown answers (a token bucket), and those answers so far.
    rate_limit: Option<RateLimit>,
    slowdowns: usize,
    /// Every object GET waits this long before its answer (S3's first-byte latency).
    get_delay: Option<Duration>,
    /// Object GETs being answered now, and the most at once so far.
    gets_in_flight: usize,
    most_gets_in_flight: usize,
}

/// Counts an object GET as in flight until its answer is ready.
struct InFlight(Arc<Mutex<State>>);

impl InFlight {
    fn start(state: &Arc<Mutex<State>>) -> InFlight {
        let mut st = state.lock().unwrap();
        st.gets_in_flight += 1;
        st.most_gets_in_flight = st.most_gets_in_flight.max(st.gets_in_flight);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap().gets_in_flight -= 1;
    }
}

/// S3's per-prefix request limit, scaled down: a token bucket of `rps` with a burst of `burst`.
struct RateLimit {
    rps: f64,
    burst: f64,
    tokens: f64,
    at: std::time::Instant,
}

impl RateLimit {
    fn admit(&mut self) -> bool {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rps;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        let ok = self.tokens >= 1.0;
        if ok {
            self.tokens -= 1.0;
        }
        ok
    }
}

#[derive(Clone)]
struct Layer {
    inner: S3Service,
    root: PathBuf,
    state: Arc<Mutex<State>>,
}

pub struct TestS3 {
    pub endpoint: String,
    pub root: PathBuf,
    _dir: tempfile::TempDir,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// CRC-64/NVME in S3's form: base64 of its 8 big-endian bytes.
pub fn crc64nvme_b64(data: &[u8]) -> String {
    use base64::Engine as _;
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, data);
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// The multipart ETag of `data` uploaded in parts of these lengths.
pub fn multipart_etag(data: &[u8], parts: &[u64]) -> String {
    let mut joined = Vec::new();
    let mut at = 0usize;
    for &len in parts {
        joined.extend(Md5::digest(&data[at..at + len as usize]));
        at += len as usize;
    }
    format!("{}-{}", md5_hex(&joined), parts.len())
}

fn part_number(query: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("partNumber="))
        .and_then(|n| n.parse().ok())
}

fn xml_error(status: u16, code: &str) -> HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{code}</Message></Error>"
    );
    http::Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Body::from(body))
        .unwrap()
}

impl Layer {
    async fn handle(&self, req: http::Request<Incoming>) -> Result<HttpResponse, HttpError> {
        let path = percent_encoding::percent_decode_str(req.uri().path())
            .decode_utf8_lossy()
            .into_owned();
        let logged = Logged {
            method: req.method().to_string(),
            path: path.clone(),
            query: req.uri().query().unwrap_or("").to_string(),
            range: req
                .headers()
                .get("range")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            if_match: req
                .headers()
                .get("if-match")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
                .collect(),
        };
        let is_get = logged.is_get_object();
        let is_list = logged.is_list();
        let is_object = (is_get || logged.method == "HEAD") && path.matches('/').count() >= 2;
        let (fault, honor, list_delay, meta, ignore_part, refuse_part) = {
            let mut st = self.state.lock().unwrap();
            st.log.push(logged.clone());
            // Listings are matched by their query (`list-type`), objects by their path, so a
            // rule for a key is not spent on the listing of its folder.
            let target = if logged.is_list() {
                format!("?{}", logged.query)
            } else {
                path.clone()
            };
            // A truncation is not spent on a ranged answer too short to cut: with parts in
            // flight at once, which part meets the rule first is a race.
            let asked = logged
                .range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| Some(b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?));
            let idx = st.rules.iter().position(|r| {
                let cuttable = match (&r.fault, asked) {
                    (Fault::Truncate(n), Some(len)) => len > *n,
                    _ => true,
                };
                r.method == logged.method
                    && target.contains(&r.key_contains)
                    && r.times > 0
                    && cuttable
            });
            let fault = idx.map(|i| {
                let r = &mut st.rules[i];
                r.times -= 1;
                let f = r.fault.clone();
                if r.times == 0 {
                    st.rules.remove(i);
                }
                f
            });
            let limited = (is_object || is_list)
                && fault.is_none()
                && st.rate_limit.as_mut().is_some_and(|r| !r.admit());
            if limited {
                st.slowdowns += 1;
            }
            let fault = fault.or(limited.then_some(Fault::SlowDown));
            let meta = st.meta.get(&path).cloned().filter(|_| is_object);
            (
                fault,
                st.honor_if_match,
                st.list_delay,
                meta,
                st.ignore_part_number,
                st.refuse_part_number,
            )
        };
        let bucket = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        if let Some(resp) = self.early(&req, &logged, &bucket) {
            return Ok(resp);
        }
        if let (true, Some(d)) = (is_list, list_delay) {
            tokio::time::sleep(d).await;
        }
        let _in_flight = is_get.then(|| InFlight::start(&self.state));
        let get_delay = self.state.lock().unwrap().get_delay.filter(|_| is_get);
        if let Some(d) = get_delay {
            tokio::time::sleep(d).await;
        }
        let mut truncate = None;
        let mut corrupt = false;
        match fault {
            Some(Fault::SlowDown) => return Ok(xml_error(503, "SlowDown")),
            Some(Fault::InternalError) => return Ok(xml_error(500, "InternalError")),
            Some(Fault::Reset) => {
                return Err(HttpError::new(Box::new(std::io::Error::other(
                    "injected reset",
                ))))
            }
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            Some(Fault::Truncate(n)) => truncate = Some(n),
            Some(Fault::Corrupt) => corrupt = true,
            None => {}
        }
        let file = self.root.join(path.trim_start_matches('/'));
        if is_get && honor {
            if let Some(want) = &logged.if_match {
                if let Ok(data) = std::fs::read(&file) {
                    let etag = meta
                        .as_ref()
                        .map_or_else(|| md5_hex(&data), |m| m.etag.clone());
                    if want.trim_matches('"') != etag {
                        return Ok(xml_error(412, "PreconditionFailed"));
                    }
                }
            }
        }
        // partNumber, as S3 answers it: that upload part's bytes (206 with Content-Range) and
        // the part count; a single-part object answers part 1 as the whole object.
        let mut req = req;
        let asked_part = part_number(&logged.query).filter(|_| is_object);
        let mut part_answer = None;
        if logged.method == "HEAD" && self.state.lock().unwrap().refuse_head {
            return Ok(xml_error(501, "NotImplemented"));
        }
        if asked_part.is_some() && refuse_part {
            return Ok(xml_error(501, "NotImplemented"));
        }
        if let Some(n) = asked_part {
            // The query stays (s3s-fs ignores partNumber, and a signed request must keep what
            // was signed); a GET is given the part's range, a HEAD's answer is rewritten.
            let parts = meta.as_ref().and_then(|m| m.parts.clone());
            if let (Some(parts), false) = (parts, ignore_part) {
                if n == 0 || n as usize > parts.len() {
                    return Ok(xml_error(400, "InvalidPartNumber"));
                }
                let start: u64 = parts[..n as usize - 1].iter().sum();
                let len = parts[n as usize - 1];
                let total: u64 = parts.iter().sum();
                if is_get {
                    let range = format!("bytes={start}-{}", start + len - 1);
                    req.headers_mut()
                        .insert("range", http::HeaderValue::from_str(&range).unwrap());
                }
                part_answer = Some((start, len, total, parts.len()));
            }
        }
        let whole = logged.range.is_none() && asked_part.is_none();
        let checksum_mode = req
            .headers()
            .get("x-amz-checksum-mode")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"ENABLED"));
        let copying = req.headers().contains_key("x-amz-copy-source");
        let req = if logged.method == "PUT" && !copying {
            // Object bytes a client sends (PutObject, UploadPart), counted as they arrive.
            let (state, p) = (self.state.clone(), path.clone());
            req.map(move |b| {
                Body::http_body(http_body_util::BodyExt::map_frame(b, move |f| {
                    if let Some(d) = f.data_ref() {
                        *state.lock().unwrap().received.entry(p.clone()).or_default() +=
                            d.len() as u64;
                    }
                    f
                }))
            })
        } else {
            req.map(Body::from)
        };
        let resp = self.inner.call(req).await?;
        let resp = match &meta {
            Some(m) if resp.status().is_success() => {
                let (mut parts, body) = resp.into_parts();
                let h = &mut parts.headers;
                let stored: Vec<_> = h
                    .keys()
                    .filter(|k| k.as_str().starts_with("x-amz-checksum"))
                    .cloned()
                    .collect();
                for k in stored {
                    h.remove(k);
                }
                h.insert(
                    "etag",
                    http::HeaderValue::from_str(&format!("\"{}\"", m.etag)).unwrap(),
                );
                if let (Some((alg, value)), true, true) = (&m.checksum, whole, checksum_mode) {
                    let name =
                        http::HeaderName::from_bytes(format!("x-amz-checksum-{alg}").as_bytes())
                            .unwrap();
                    h.insert(name, http::HeaderValue::from_str(value).unwrap());
                    h.insert(
                        "x-amz-checksum-type",
                        http::HeaderValue::from_static("FULL_OBJECT"),
                    );
                }
                if let Some((start, len, total, count)) = part_answer {
                    h.insert("x-amz-mp-parts-count", count.into());
                    if logged.method == "HEAD" {
                        parts.status = http::StatusCode::PARTIAL_CONTENT;
                        h.insert("content-length", len.into());
                        let range = format!("bytes {start}-{}/{total}", start + len - 1);
                        h.insert(
                            "content-range",
                            http::HeaderValue::from_str(&range).unwrap(),
                        );
                    }
                }
                http::Response::from_parts(parts, body)
            }
            _ => resp,
        };
        let resp = self.after(resp, &logged, &bucket, copying, whole).await;
        if is_get {
            let mut st = self.state.lock().unwrap();
            if let Some(r) = st.replace.as_mut() {
                if path.ends_with(&r.key) {
                    r.seen += 1;
                    if r.seen == r.after_gets {
                        // Replaced after this answer's headers were made: the next GET sees new bytes.
                        std::fs::write(&file, &r.data).unwrap();
                        st.replace = None;
                        st.meta.remove(&path);
                        let _ = std::fs::remove_file(internal_info(&self.root, &path));
                    }
                }
            }
        }
        if corrupt {
            let (parts, body) = resp.into_parts();
            let mut first = true;
            let flipped = body.map(move |chunk| {
                let mut bytes = chunk
                    .map_err(|e| std::io::Error::other(e.to_string()))?
                    .to_vec();
                if first && !bytes.is_empty() {
                    bytes[0] ^= 1;
                    first = false;
                }
                Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(bytes)))
            });
            let body = Body::http_body(http_body_util::StreamBody::new(flipped));
            return Ok(http::Response::from_parts(parts, body));
        }
        let Some(limit) = truncate else {
            return Ok(if is_get {
                self.count_sent(resp, &path)
            } else {
                resp
            });
        };
        let (parts, body) = resp.into_parts();
        let mut sent = 0usize;
        let cut = body
            .map(move |chunk| chunk.map_err(|e| e.to_string()))
            .scan(false, move |done, chunk| {
                if *done {
                    return futures::future::ready(None);
                }
                let out = match chunk {
                    Ok(bytes) if sent + bytes.len() >= limit => {
                        *done = true;
                        let keep = limit - sent;
                        sent = limit;
                        // Deliver what fits, then fail the body: the client sees a short read.
                        return futures::future::ready(Some(vec![
                            Ok::<Bytes, std::io::Error>(bytes.slice(..keep)),
                            Err(std::io::Error::other("injected truncation")),
                        ]));
                    }
                    Ok(bytes) => {
                        sent += bytes.len();
                        vec![Ok(bytes)]
                    }
                    Err(e) => vec![Err(std::io::Error::other(e))],
                };
                futures::future::ready(Some(out))
            })
            .flat_map(futures::stream::iter)
            .map(|r| r.map(hyper::body::Frame::data));
        let body = Body::http_body(http_body_util::StreamBody::new(cut));
        Ok(http::Response::from_parts(parts, body))
    }
}

/// s3s-fs's own record of an object (`/bucket/key`): where it keeps the object's ETag.
fn internal_info(root: &std::path::Path, path: &str) -> PathBuf {
    use base64::Engine as _;
    let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let (bucket, key) = path.trim_start_matches('/').split_once('/').unwrap();
    root.join(format!(
        ".bucket-{}.object-{}.internal.json",
        enc(bucket),
        enc(key)
    ))
}

fn query_has(query: &str, name: &str) -> bool {
    query
        .split('&')
        .any(|kv| kv == name || kv.starts_with(&format!("{name}=")))
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let v = kv.strip_prefix(&format!("{name}="))?;
        Some(
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned(),
        )
    })
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Layer {
    /// Answers this layer gives itself: ListMultipartUploads (s3s-fs has none) and
    /// `x-amz-copy-source-if-match` judged against the ETag this layer publishes, as S3 does.
    fn early(
        &self,
        req: &http::Request<Incoming>,
        logged: &Logged,
        bucket: &str,
    ) -> Option<HttpResponse> {
        let private = self.state.lock().unwrap().private.contains(bucket);
        let bucket_path = logged.path.trim_matches('/') == bucket;
        if logged.method == "GET" && bucket_path && query_has(&logged.query, "uploads") {
            // A signature is checked by s3s for what it serves; here its presence is.
            if private && !req.headers().contains_key("authorization") {
                return Some(xml_error(403, "AccessDenied"));
            }
            let prefix = query_value(&logged.query, "prefix").unwrap_or_default();
            let st = self.state.lock().unwrap();
            let mut body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListMultipartUploadsResult \
                 xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>{bucket}</Bucket>\
                 <IsTruncated>false</IsTruncated>"
            );
            for (_, key, id) in st
                .uploads
                .iter()
                .filter(|(b, k, _)| b == bucket && k.starts_with(&prefix))
            {
                body.push_str(&format!(
                    "<Upload><Key>{}</Key><UploadId>{id}</UploadId>\
                     <Initiated>2026-01-01T00:00:00.000Z</Initiated></Upload>",
                    xml_escape(key)
                ));
            }
            body.push_str("</ListMultipartUploadsResult>");
            return Some(
                http::Response::builder()
                    .status(200)
                    .header("content-type", "application/xml")
                    .body(Body::from(body))
                    .unwrap(),
            );
        }
        let source = req.headers().get("x-amz-copy-source")?.to_str().ok()?;
        let want = req
            .headers()
            .get("x-amz-copy-source-if-match")?
            .to_str()
            .ok()?;
        let source = percent_encoding::percent_decode_str(source.split('?').next()?)
            .decode_utf8_lossy()
            .into_owned();
        let src_path = format!("/{}", source.trim_start_matches('/'));
        let reprocess = {
            let mut st = self.state.lock().unwrap();
            match st.replace_on_copy.take() {
                Some((k, data)) if src_path.ends_with(&k) => Some(data),
                other => {
                    st.replace_on_copy = other;
                    None
                }
            }
        };
        if let Some(data) = reprocess {
            // The archive reprocessed the object just before this copy request arrived.
            std::fs::write(self.root.join(src_path.trim_start_matches('/')), data).unwrap();
            self.state.lock().unwrap().meta.remove(&src_path);
            let _ = std::fs::remove_file(internal_info(&self.root, &src_path));
        }
        let data = std::fs::read(self.root.join(src_path.trim_start_matches('/'))).ok()?;
        let etag = self
            .state
            .lock()
            .unwrap()
            .meta
            .get(&src_path)
            .map_or_else(|| md5_hex(&data), |m| m.etag.clone());
        (want.trim_matches('"') != etag).then(|| xml_error(412, "PreconditionFailed"))
    }

    /// What S3 adds that s3s-fs does not, for private (destination) buckets: the full-object
    /// CRC-64/NVME S3 computes for every new object (on HEAD/GET with checksum mode and in
    /// CopyObject/CompleteMultipartUpload results), and the record of uploads in progress.
    async fn after(
        &self,
        resp: HttpResponse,
        logged: &Logged,
        bucket: &str,
        copying: bool,
        whole: bool,
    ) -> HttpResponse {
        if !self.state.lock().unwrap().private.contains(bucket) || !resp.status().is_success() {
            return resp;
        }
        let file = self.root.join(logged.path.trim_start_matches('/'));
        let crc = || std::fs::read(&file).ok().map(|d| crc64nvme_b64(&d));
        let key = logged
            .path
            .trim_start_matches('/')
            .split_once('/')
            .map_or(String::new(), |(_, k)| k.to_string());
        let q = &logged.query;
        let upload_id = query_value(q, "uploadId");
        match (logged.method.as_str(), upload_id) {
            ("HEAD" | "GET", None) if whole && !logged.is_list() => {
                let asked = logged
                    .headers
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case("x-amz-checksum-mode: ENABLED"));
                let (mut parts, body) = resp.into_parts();
                let stale: Vec<_> = parts
                    .headers
                    .keys()
                    .filter(|k| k.as_str().starts_with("x-amz-checksum"))
                    .cloned()
                    .collect();
                for k in stale {
                    parts.headers.remove(k);
                }
                if let (true, Some(c)) = (asked, crc()) {
                    parts
                        .headers
                        .insert("x-amz-checksum-crc64nvme", c.parse().unwrap());
                    parts
                        .headers
                        .insert("x-amz-checksum-type", "FULL_OBJECT".parse().unwrap());
                }
                http::Response::from_parts(parts, body)
            }
            ("POST", None) if query_has(q, "uploads") => {
                let (parts, text) = collect(resp).await;
                if let Some(id) = between(&text, "<UploadId>", "</UploadId>") {
                    let up = (bucket.to_string(), key, id.to_string());
                    self.state.lock().unwrap().uploads.push(up);
                }
                rebuild(parts, text)
            }
            ("POST", Some(id)) => {
                let (parts, text) = collect(resp).await;
                let end = "</CompleteMultipartUploadResult>";
                if !text.contains(end) {
                    return rebuild(parts, text);
                }
                self.state.lock().unwrap().uploads.retain(|u| u.2 != id);
                rebuild(parts, with_checksum(&text, end, crc()))
            }
            ("DELETE", Some(id)) => {
                self.state.lock().unwrap().uploads.retain(|u| u.2 != id);
                resp
            }
            ("GET", None) if logged.is_list() => {
                let (parts, text) = collect(resp).await;
                let text = self.list_etags(bucket, &text);
                rebuild(parts, text)
            }
            ("PUT", None) if copying => {
                let (parts, text) = collect(resp).await;
                rebuild(parts, with_checksum(&text, "</CopyObjectResult>", crc()))
            }
            _ => resp,
        }
    }

    /// S3 states each object's ETag in a listing (s3s-fs does not): s3s-fs's own record of it
    /// where it keeps one (copies, multipart uploads), else the MD5 of the bytes.
    fn list_etags(&self, bucket: &str, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find("</Key>") {
            let (head, tail) = rest.split_at(i + "</Key>".len());
            out.push_str(head);
            rest = tail;
            let Some(key) = head.rfind("<Key>").map(|k| &head[k + 5..head.len() - 6]) else {
                continue;
            };
            if !head.ends_with("</Key>") || tail.trim_start().starts_with("<ETag>") {
                continue;
            }
            let key = key
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">");
            let path = format!("/{bucket}/{key}");
            let recorded = std::fs::read(internal_info(&self.root, &path))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["e_tag"].as_str().map(str::to_string));
            let etag = recorded.or_else(|| {
                std::fs::read(self.root.join(bucket).join(&key))
                    .ok()
                    .map(|d| md5_hex(&d))
            });
            if let Some(e) = etag {
                out.push_str(&format!("<ETag>&quot;{e}&quot;</ETag>"));
            }
        }
        out.push_str(rest);
        out
    }

    /// Count the object bytes a GET sends as they go out.
    fn count_sent(&self, resp: HttpResponse, path: &str) -> HttpResponse {
        let (state, p) = (self.state.clone(), path.to_string());
        resp.map(move |b| {
            Body::http_body(http_body_util::BodyExt::map_frame(b, move |f| {
                if let Some(d) = f.data_ref() {
                    *state.lock().unwrap().sent.entry(p.clone()).or_default() += d.len() as u64;
                }
                f
            }))
        })
    }
}

async fn collect(resp: HttpResponse) -> (http::response::Parts, String) {
    let (parts, body) = resp.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (parts, String::from_utf8_lossy(&bytes).into_owned())
}

fn rebuild(mut parts: http::response::Parts, text: String) -> HttpResponse {
    // The body is now whole: its length, not chunks (s3s streams CompleteMultipartUpload's).
    parts.headers.remove("transfer-encoding");
    parts.headers.insert("content-length", text.len().into());
    http::Response::from_parts(parts, Body::from(text))
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

fn with_checksum(text: &str, end: &str, crc: Option<String>) -> String {
    match crc {
        Some(c) => text.replacen(
            end,
            &format!("<ChecksumCRC64NVME>{c}</ChecksumCRC64NVME><ChecksumType>FULL_OBJECT</ChecksumType>{end}"),
            1,
        ),
        None => text.to_string(),
    }
}

impl TestS3 {
    /// Make `name` a bucket of one's own: every operation needs a signature, reads too.
    pub fn private_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.join(name)).unwrap();
        self.state.lock().unwrap().private.insert(name.to_string());
    }

    /// Replace the archive object at `key` with `data` the moment a copy of it is asked for
    /// (before the copy's `x-amz-copy-source-if-match` is judged): reprocessed mid-run.
    pub fn replace_on_copy(&self, key: &str, data: Vec<u8>) {
        self.state.lock().unwrap().replace_on_copy = Some((key.to_string(), data));
    }

    /// Overwrite an object as a client's PUT would: new bytes, and a new (MD5) ETag.
    pub fn overwrite(&self, bucket: &str, key: &str, data: &[u8]) {
        self.put(bucket, key, data);
        let _ = std::fs::remove_file(internal_info(&self.root, &format!("/{bucket}/{key}")));
    }

    /// Refuse every write to `name`, signed or not (credentials without s3:PutObject there).
    pub fn read_only(&self, name: &str, on: bool) {
        let mut st = self.state.lock().unwrap();
        if on {
            st.read_only.insert(name.to_string());
        } else {
            st.read_only.remove(name);
        }
    }

    /// Object body bytes received from clients (PUT, UploadPart) into `bucket`, by key.
    pub fn received(&self, bucket: &str) -> HashMap<String, u64> {
        by_key(&self.state.lock().unwrap().received, bucket)
    }

    /// Object body bytes sent to clients (GET) from `bucket`, by key.
    pub fn sent(&self, bucket: &str) -> HashMap<String, u64> {
        by_key(&self.state.lock().unwrap().sent, bucket)
    }

    /// Multipart uploads in progress in `bucket`: (key, upload id).
    pub fn uploads(&self, bucket: &str) -> Vec<(String, String)> {
        let st = self.state.lock().unwrap();
        st.uploads
            .iter()
            .filter(|u| u.0 == bucket)
            .map(|u| (u.1.clone(), u.2.clone()))
            .collect()
    }

    pub fn reset_counts(&self) {
        let mut st = self.state.lock().unwrap();
        st.received.clear();
        st.sent.clear();
    }
}

fn by_key(counts: &HashMap<String, u64>, bucket: &str) -> HashMap<String, u64> {
    let prefix = format!("/{bucket}/");
    counts
        .iter()
        .filter_map(|(p, n)| Some((p.strip_prefix(&prefix)?.to_string(), *n)))
        .collect()
}

impl TestS3 {
    /// Start a server on 127.0.0.1:<free port> serving an empty temporary root with `buckets`.
    pub fn start(buckets: &[&str]) -> TestS3 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for b in buckets {
            std::fs::create_dir_all(root.join(b)).unwrap();
        }
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let root2 = root.clone();
        let state2 = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let fs = s3s_fs::FileSystem::new(&root2).unwrap();
                let mut builder = S3ServiceBuilder::new(fs);
                builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
                builder.set_access(PublicRead {
                    state: state2.clone(),
                });
                let service = builder.build();
                let layer = Layer {
                    inner: service,
                    root: root2,
                    state: state2,
                };
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let conn = ConnBuilder::new(TokioExecutor::new());
                let mut stop = std::pin::pin!(stop_rx);
                loop {
                    let sock = tokio::select! {
                        r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                        _ = &mut stop => break,
                    };
                    let layer = layer.clone();
                    let svc = hyper::service::service_fn(move |req| {
                        let layer = layer.clone();
                        async move { layer.handle(req).await }
                    });
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        let _ = conn.serve_connection(TokioIo::new(sock), svc).await;
                    });
                }
            });
        });
        let addr = rx.recv().unwrap();
        TestS3 {
            endpoint: format!("http://{addr}"),
            root,
            _dir: dir,
            state,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Store an object (written straight into the served folder).
    pub fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        let p = self.root.join(bucket).join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    /// Store an object as a current SDK uploads it: one PUT up to `part_size` (plain-MD5
    /// ETag), else a multipart upload in `part_size` parts (`md5-N` ETag); either way with a
    /// full-object CRC-64/NVME (S3's default since December 2024).
    pub fn put_sdk(&self, bucket: &str, key: &str, data: &[u8], part_size: usize) {
        if data.len() <= part_size {
            self.put(bucket, key, data);
            self.set_meta(
                bucket,
                key,
                Meta {
                    etag: md5_hex(data),
                    checksum: Some(("crc64nvme".into(), crc64nvme_b64(data))),
                    parts: None,
                },
            );
            return;
        }
        let mut parts = vec![part_size as u64; data.len() / part_size];
        if !data.len().is_multiple_of(part_size) {
            parts.push((data.len() % part_size) as u64);
        }
        self.put_multipart(bucket, key, data, &parts, true);
    }

    /// Store a multipart object uploaded in parts of these lengths; with `crc`, it carries a
    /// full-object CRC-64/NVME too (a recent upload), else only its `md5-N` ETag (an old one).
    pub fn put_multipart(&self, bucket: &str, key: &str, data: &[u8], parts: &[u64], crc: bool) {
        assert_eq!(parts.iter().sum::<u64>(), data.len() as u64);
        self.put(bucket, key, data);
        self.set_meta(
            bucket,
            key,
            Meta {
                etag: multipart_etag(data, parts),
                checksum: crc.then(|| ("crc64nvme".into(), crc64nvme_b64(data))),
                parts: Some(parts.to_vec()),
            },
        );
    }

    /// Set (or overwrite, e.g. with a lie) what the server publishes about an object.
    pub fn set_meta(&self, bucket: &str, key: &str, meta: Meta) {
        // s3s-fs judges `x-amz-copy-source-if-match` (and gives a copy its ETag) from its own
        // record of the object: it must hold the ETag this layer publishes.
        let info = serde_json::json!({ "e_tag": meta.etag });
        std::fs::write(
            internal_info(&self.root, &format!("/{bucket}/{key}")),
            info.to_string(),
        )
        .unwrap();
        self.state
            .lock()
            .unwrap()
            .meta
            .insert(format!("/{bucket}/{key}"), meta);
    }

    pub fn meta(&self, bucket: &str, key: &str) -> Option<Meta> {
        self.state
            .lock()
            .unwrap()
            .meta
            .get(&format!("/{bucket}/{key}"))
            .cloned()
    }

    /// Answer `partNumber` requests as if the parameter were absent (as some servers do).
    pub fn ignore_part_number(&self, on: bool) {
        self.state.lock().unwrap().ignore_part_number = on;
    }

    /// Answer every HEAD with 501 NotImplemented.
    pub fn refuse_head(&self, on: bool) {
        self.state.lock().unwrap().refuse_head = on;
    }

    /// Answer `partNumber` requests with 501 NotImplemented (as other servers do).
    pub fn refuse_part_number(&self, on: bool) {
        self.state.lock().unwrap().refuse_part_number = on;
    }

    pub fn path_of(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    pub fn etag_of(data: &[u8]) -> String {
        md5_hex(data)
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Inject `fault` into the next `times` requests of `method` whose path contains `key`.
    pub fn inject(&self, method: &'static str, key: &str, times: usize, fault: Fault) {
        self.state.lock().unwrap().rules.push_back(Rule {
            method,
            key_contains: key.to_string(),
            times,
            fault,
        });
    }

    pub fn clear_faults(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Replace the object at `key` with `data` right after its `after_gets`-th GET is answered.
    pub fn replace_after(&self, key: &str, after_gets: usize, data: Vec<u8>) {
        self.state.lock().unwrap().replace = Some(Replace {
            key: key.to_string(),
            after_gets,
            data,
            seen: 0,
        });
    }

    /// Answer If-Match with 412 when the object differs, as AWS does (s3s-fs alone ignores it).
    pub fn honor_if_match(&self, on: bool) {
        self.state.lock().unwrap().honor_if_match = on;
    }

    /// Answer 503 SlowDown to object and listing requests above `rps` a second (a burst of
    /// `burst`), as S3 does above a prefix's request rate; `None` lifts the limit.
    pub fn limit_rate(&self, rps: Option<f64>, burst: f64) {
        self.state.lock().unwrap().rate_limit = rps.map(|rps| RateLimit {
            rps,
            burst,
            tokens: burst,
            at: std::time::Instant::now(),
        });
    }

    /// 503 SlowDown answers the rate limit gave.
    pub fn slowdowns(&self) -> usize {
        self.state.lock().unwrap().slowdowns
    }

    pub fn delay_listings(&self, d: Option<Duration>) {
        self.state.lock().unwrap().list_delay = d;
    }

    /// Delay every object GET's answer by `d` (a first-byte latency), and start counting how
    /// many are answered at once.
    pub fn delay_gets(&self, d: Option<Duration>) {
        let mut st = self.state.lock().unwrap();
        st.get_delay = d;
        st.most_gets_in_flight = 0;
    }

    /// The most object GETs in flight at once since [`TestS3::delay_gets`].
    pub fn most_gets_in_flight(&self) -> usize {
        self.state.lock().unwrap().most_gets_in_flight
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
