//! The S3 side: one configured client for the open-data bucket (or a compatible endpoint).
//!
//! Owns client construction (anonymous by default, path-style for custom endpoints, SDK retries
//! and response-checksum validation off because we retry and verify ourselves), paginated
//! folder listings, the occasional HEAD (whole object or one upload part) asking for the
//! archive's full-object checksum (`x-amz-checksum-mode`). Object GETs are `s3_get`'s; what a
//! failure means is `s3_error`'s. It does not write files and does not judge checksums
//! (`checksum` does).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{ChecksumMode, ChecksumType};
use futures::{stream, StreamExt, TryStreamExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::checksum::Published;
use crate::hedge::Hedge;
use crate::net::{ANSWER_TIMEOUT, CONNECT_TIMEOUT};
use crate::retry::RetryPolicy;
use crate::s3_error::classify;
pub(crate) use crate::s3_error::{Answer, Detail, ErrorKind, S3Error};
use crate::throttle::Throttle;

use crate::s3_error::BoxError;

/// Read buffers of all GET connections together. hyper grows each connection's buffer to
/// ~400 KiB by default, which made peak RSS grow with `--jobs` (big bench set: 28 MiB at 16
/// jobs, 55 at 64, 83 at 128). Fixed-size reads from a shared budget keep it flat (24-29 MiB
/// from 16 to 256 jobs, wall time within run-to-run noise); `--jobs auto`'s 384 requests read
/// 21 KiB at a time, and at least 16 KiB (enough for the latency-bound small files that such
/// numbers serve).
const READ_BUFFER_BUDGET: usize = 8 << 20;

pub(crate) type LeanClient =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The plain HTTP/1.1 client of anonymous GETs (HTTPS with the system's roots, as the SDK's),
/// or `None` where no CA roots can be loaded.
fn lean_client(requests: usize) -> Option<LeanClient> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .ok()?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let buffer = (READ_BUFFER_BUDGET / requests.max(1)).clamp(16 << 10, 256 << 10);
    Some(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http1_read_buf_exact_size(buffer)
            .pool_max_idle_per_host(requests)
            .build(https),
    )
}

#[derive(Debug, Clone)]
pub(crate) struct S3Options {
    pub bucket: String,
    pub region: String,
    pub endpoint_url: Option<String>,
    pub sign: bool,
}

/// One object as a listing (or HEAD) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Without quotes; `None` when the server left it out (some S3-compatible servers do).
    pub etag: Option<String>,
    /// The full-object checksum (a HEAD with checksum mode); listings never carry the value.
    pub checksum: Option<Published>,
    /// When the archive last wrote the object: a local copy older than this may be a copy of
    /// an earlier object (reprocessed since), not a damaged one.
    pub last_modified: Option<std::time::SystemTime>,
}

/// One upload part of a multipart object, as `HEAD ?partNumber=N` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartInfo {
    pub len: u64,
    /// `x-amz-mp-parts-count`; absent on single-part objects and on servers that ignore
    /// `partNumber` (which then describe the whole object).
    pub parts_count: Option<u64>,
}

/// What a GET answered, before its body is read.
pub(crate) struct GetResponse {
    pub content_length: Option<u64>,
    /// `(start, end_inclusive, total)` from Content-Range, when present.
    pub content_range: Option<(u64, u64, u64)>,
    pub etag: Option<String>,
    /// The full-object checksum, when it was asked for and the answer is the whole object.
    pub checksum: Option<Published>,
    pub body: Body,
}

/// A GET's body, from whichever path fetched it.
pub(crate) type Body = futures::stream::BoxStream<'static, Result<bytes::Bytes, BoxError>>;

/// Requests sent, by kind (for the plan summary and the benchmark's planning cost).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub lists: AtomicU64,
    pub heads: AtomicU64,
    pub gets: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct S3 {
    pub stats: Arc<Stats>,
    pub(crate) client: aws_sdk_s3::Client,
    /// Anonymous object GETs skip the SDK: measured on 2,000 GETs of 64 KiB at 64 in flight,
    /// the SDK spent 0.33-0.40 CPU-s and a plain HTTP client 0.16-0.18 (~0.1 ms less per
    /// request, a fifth of a small file's whole cost). Listings, HEADs and every signed request
    /// keep the SDK, which does them well.
    pub(crate) lean: Option<LeanClient>,
    /// The bucket named by `--bucket`; `s3://` items may name another.
    pub bucket: String,
    pub(crate) region: String,
    pub(crate) endpoint_url: Option<String>,
    pub(crate) retry: RetryPolicy,
    /// The run's shared rate under SlowDown: every GET, HEAD and listing page goes through it.
    pub throttle: Arc<Throttle>,
    /// Recent first-byte times of GETs, and the budget of hedged GETs.
    pub hedge: Arc<Hedge>,
}

/// Whether S3 asked us to slow down (503 SlowDown, 429, a throttling code): the run's shared
/// rate (`throttle`) answers it, not this request alone.
pub(crate) fn throttled(e: &S3Error) -> bool {
    matches!(&e.detail, Detail::Answer(a) if crate::throttle::is_throttle(a.status, &a.code))
}

fn system_time(t: &aws_sdk_s3::primitives::DateTime) -> Option<std::time::SystemTime> {
    std::time::SystemTime::try_from(*t).ok()
}

/// Strip quotes and a weak marker: listings, HEADs and GETs disagree on quoting across servers.
pub(crate) fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// Path segments keep `/`; everything else that is not unreserved is escaped (URLs we print,
/// and `x-amz-copy-source` for copies into the user's bucket).
pub(crate) const KEY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl S3 {
    /// `requests`: how many GETs may be in flight at once (sizes each connection's buffer).
    pub(crate) async fn connect(opts: &S3Options, retry: RetryPolicy, requests: usize) -> S3 {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(opts.region.clone()))
            // Our own retry loop owns backoff; two layers would multiply attempts.
            .retry_config(RetryConfig::disabled())
            // Stalls are caught per body chunk in the transfer engine.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .build(),
            );
        if !opts.sign {
            // Anonymous: no credential chain, so nothing probes the instance metadata service.
            loader = loader.no_credentials();
        }
        let shared = loader.load().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared)
            // Some servers return a whole-object CRC on ranged GETs, which the SDK would reject;
            // we verify content ourselves (size, ETag, SHA-256).
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
        if let Some(url) = &opts.endpoint_url {
            conf = conf.endpoint_url(url).force_path_style(true);
        }
        // Without the system's CA roots the SDK's own requests fail too; GETs then go through it.
        let lean = if opts.sign {
            None
        } else {
            lean_client(requests)
        };
        S3 {
            stats: Arc::default(),
            lean,
            client: aws_sdk_s3::Client::from_conf(conf.build()),
            bucket: opts.bucket.clone(),
            region: opts.region.clone(),
            endpoint_url: opts.endpoint_url.clone(),
            retry,
            throttle: Arc::default(),
            hedge: Arc::default(),
        }
    }

    /// Public HTTPS URL of a key (what `plan` prints and the curl script fetches).
    pub(crate) fn url(&self, bucket: &str, key: &str) -> String {
        let key = utf8_percent_encode(key, KEY_ESCAPE);
        match &self.endpoint_url {
            Some(ep) => format!("{}/{bucket}/{key}", ep.trim_end_matches('/')),
            None => format!("https://{bucket}.s3.{}.amazonaws.com/{key}", self.region),
        }
    }

    pub(crate) fn error<E>(
        &self,
        op: &'static str,
        bucket: &str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut kind = classify(&err);
        if kind == ErrorKind::Transient && !matches!(err, SdkError::ServiceError(_)) {
            kind = self.transport_kind(&err);
        }
        // A service error says all it knows in its status, code and message; the SDK's own
        // rendering of it is noise. Transport errors keep their cause chain.
        let (detail, source): (Detail, Option<BoxError>) = match &err {
            SdkError::ServiceError(se) => {
                let code = se.err().code().unwrap_or("");
                let answer = Detail::Answer(Box::new(Answer {
                    status: se.raw().status().as_u16(),
                    code: code.to_string(),
                    message: se.err().message().filter(|m| *m != code).map(String::from),
                }));
                (answer, None)
            }
            _ => (self.host_detail(kind), Some(Box::new(err))),
        };
        let mut e = S3::make_error(op, bucket, key, kind, detail);
        e.source = source;
        e
    }

    /// What a transport failure means for the next attempt (see `retry::outlook`).
    pub(crate) fn transport_kind(&self, err: &(dyn std::error::Error + 'static)) -> ErrorKind {
        match crate::retry::outlook(err) {
            crate::retry::Outlook::Retry => ErrorKind::Transient,
            crate::retry::Outlook::OnceMore => ErrorKind::NoSuchHost,
            crate::retry::Outlook::Never => ErrorKind::Unusable,
        }
    }

    /// Words naming the endpoint, for failures that are about it rather than the object.
    pub(crate) fn host_detail(&self, kind: ErrorKind) -> Detail {
        if !matches!(kind, ErrorKind::NoSuchHost | ErrorKind::Unusable) {
            return Detail::None;
        }
        let url = match &self.endpoint_url {
            Some(ep) => ep.clone(),
            None => format!("https://s3.{}.amazonaws.com", self.region),
        };
        Detail::Endpoint {
            url,
            tls: kind == ErrorKind::Unusable,
        }
    }

    pub(crate) fn timeout(&self, op: &'static str, bucket: &str, key: &str) -> S3Error {
        let detail = Detail::Found(format!("no answer within {}s", ANSWER_TIMEOUT.as_secs()));
        S3::make_error(op, bucket, key, ErrorKind::Transient, detail)
    }

    /// One shallow, paginated listing per folder (`(bucket, folder)`), `parallel` folders at
    /// once: every object found, by `(bucket, key)`.
    pub(crate) async fn list_folders(
        &self,
        folders: BTreeSet<(String, String)>,
        parallel: usize,
    ) -> Result<HashMap<(String, String), ObjectInfo>, S3Error> {
        let listings: Vec<(String, Vec<ObjectInfo>)> = stream::iter(folders)
            .map(|(bucket, folder)| async move {
                let objs = self.list(&bucket, &folder, true).await?;
                Ok::<_, S3Error>((bucket, objs))
            })
            .buffer_unordered(parallel.max(1))
            .try_collect()
            .await?;
        let mut found = HashMap::new();
        for (bucket, objs) in listings {
            for o in objs {
                found.insert((bucket.clone(), o.key.clone()), o);
            }
        }
        Ok(found)
    }

    /// Every object under `prefix`; with `shallow`, only the direct children of that folder.
    pub(crate) async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        shallow: bool,
    ) -> Result<Vec<ObjectInfo>, S3Error> {
        let mut out = Vec::new();
        self.list_each(bucket, prefix, shallow, |o| out.push(o))
            .await?;
        Ok(out)
    }

    /// Each object under `prefix`, page by page as S3 answers (a page is held, not the
    /// listing: millions of keys stream through). One paginated ListObjectsV2, each page
    /// retried on its own.
    pub(crate) async fn list_each(
        &self,
        bucket: &str,
        prefix: &str,
        shallow: bool,
        mut each: impl FnMut(ObjectInfo),
    ) -> Result<(), S3Error> {
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry
                .run(|| async {
                    let mut req = self
                        .client
                        .list_objects_v2()
                        .bucket(bucket)
                        .prefix(prefix)
                        .set_continuation_token(token.clone());
                    if shallow {
                        req = req.delimiter("/");
                    }
                    let what = format!("LIST s3://{bucket}/{prefix}");
                    let send = || async {
                        self.stats.lists.fetch_add(1, Ordering::Relaxed);
                        let answer = crate::retry::noting(&what, req.clone().send());
                        match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
                            Err(_) => Err(self.timeout("LIST", bucket, prefix)),
                            Ok(r) => r.map_err(|e| self.error("LIST", bucket, prefix, e)),
                        }
                    };
                    self.throttle.run(send, throttled).await
                })
                .await?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                each(ObjectInfo {
                    key: key.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    etag: obj.e_tag().map(normalize_etag).filter(|e| !e.is_empty()),
                    checksum: None,
                    last_modified: obj.last_modified().and_then(system_time),
                });
            }
            token = page.next_continuation_token().map(str::to_string);
            if !page.is_truncated().unwrap_or(false) || token.is_none() {
                return Ok(());
            }
        }
    }

    /// Size, ETag and full-object checksum of one key (or, with `part`, of that upload part);
    /// `Ok(None)` when it does not exist.
    async fn head_raw(
        &self,
        bucket: &str,
        key: &str,
        part: Option<u64>,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>, S3Error> {
        let res = self
            .retry
            .run(|| {
                let send = || async {
                    self.stats.heads.fetch_add(1, Ordering::Relaxed);
                    let mut req = self.client.head_object().bucket(bucket).key(key);
                    match part {
                        Some(n) => req = req.part_number(n.min(i32::MAX as u64) as i32),
                        // The value costs nothing extra on a whole-object HEAD.
                        None => req = req.checksum_mode(ChecksumMode::Enabled),
                    }
                    match tokio::time::timeout(ANSWER_TIMEOUT, req.send()).await {
                        Err(_) => Err(self.timeout("HEAD", bucket, key)),
                        Ok(r) => r.map_err(|e| self.error("HEAD", bucket, key, e)),
                    }
                };
                self.throttle.run(send, throttled)
            })
            .await;
        match res {
            Ok(h) => Ok(Some(h)),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Size, ETag and full-object checksum of one key; `Ok(None)` when it does not exist.
    pub(crate) async fn head(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectInfo>, S3Error> {
        let Some(h) = self.head_raw(bucket, key, None).await? else {
            return Ok(None);
        };
        let composite = matches!(h.checksum_type(), Some(ChecksumType::Composite));
        let checksum = Published::from_headers(|name| match name {
            "x-amz-checksum-type" => composite.then_some("COMPOSITE"),
            "x-amz-checksum-crc64nvme" => h.checksum_crc64_nvme(),
            "x-amz-checksum-crc32c" => h.checksum_crc32_c(),
            "x-amz-checksum-crc32" => h.checksum_crc32(),
            "x-amz-checksum-sha256" => h.checksum_sha256(),
            "x-amz-checksum-sha1" => h.checksum_sha1(),
            _ => None,
        });
        Ok(Some(ObjectInfo {
            key: key.to_string(),
            size: h.content_length().unwrap_or(0).max(0) as u64,
            etag: h.e_tag().map(normalize_etag),
            checksum,
            last_modified: h.last_modified().and_then(system_time),
        }))
    }

    /// Length of upload part `part` (1-based) and the object's part count.
    pub(crate) async fn head_part(
        &self,
        bucket: &str,
        key: &str,
        part: u64,
    ) -> Result<Option<PartInfo>, S3Error> {
        Ok(self
            .head_raw(bucket, key, Some(part))
            .await?
            .map(|h| PartInfo {
                len: h.content_length().unwrap_or(0).max(0) as u64,
                parts_count: h.parts_count().filter(|&n| n > 0).map(|n| n as u64),
            }))
    }

    pub(crate) fn make_error(
        op: &'static str,
        bucket: &str,
        key: &str,
        kind: ErrorKind,
        detail: Detail,
    ) -> S3Error {
        S3Error {
            op,
            bucket: bucket.to_string(),
            key: key.to_string(),
            kind,
            detail,
            source: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_normalize() {
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("W/\"abc-2\""), "abc-2");
        assert_eq!(normalize_etag("abc"), "abc");
    }
}
