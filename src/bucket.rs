//! The destination bucket of `get --dest s3://BUCKET/PREFIX/`: the user's own bucket.
//!
//! Owns the `s3://` destination (parsing, the key of each planned file under PREFIX), the
//! signed client (the standard AWS credential chain, `--dest-endpoint-url`/`--dest-region`),
//! the one listing per destination folder that tells what is already there, the manifests
//! kept in the bucket (read at the start, written at the end), and the raw requests that write
//! objects there (CopyObject, the multipart calls, HEAD with checksum mode). Every failure
//! names the bucket, the key and the action (an `S3Error`). It does not decide what to copy
//! nor check a copy against its source (`copy` does); source reads stay on the anonymous
//! client of `s3`.
//!
//! Longer than our other clients: one method per S3 call the destination receives (eleven),
//! each naming its action for the error a refusal gives; split, one client would be spread
//! over files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart,
};
use futures::{stream, StreamExt, TryStreamExt};
use percent_encoding::utf8_percent_encode;

use crate::manifest::Entry;
use crate::retry::RetryPolicy;
use crate::s3::{ErrorKind, S3Error, KEY_ESCAPE};

/// A request to the destination that takes longer than this is treated as lost. CopyObject of
/// a 5 GB object is done by S3 in well under a minute; this only catches black holes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// `s3://BUCKET/PREFIX/`: where the copies go. `prefix` is empty or ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DestUrl {
    pub bucket: String,
    pub prefix: String,
}

impl DestUrl {
    /// `Ok(None)` for anything that is not an `s3://` URL (a folder); an error for an `s3://`
    /// URL without a bucket or with a prefix that could not be a key.
    pub(crate) fn parse(s: &str) -> Result<Option<DestUrl>, String> {
        let Some(rest) = s.strip_prefix("s3://") else {
            return Ok(None);
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{s:?}: no bucket (use s3://BUCKET/PREFIX/)"));
        }
        let mut prefix = prefix.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        if prefix.split('/').any(|p| p == "." || p == "..") || prefix.starts_with('/') {
            return Err(format!("{s:?}: the prefix has an empty, `.` or `..` part"));
        }
        Ok(Some(DestUrl {
            bucket: bucket.to_string(),
            prefix,
        }))
    }

    /// The key of a planned file (`dest`, relative, already checked by `plan`).
    pub(crate) fn key(&self, dest: &str) -> String {
        format!("{}{dest}", self.prefix)
    }
}

impl std::fmt::Display for DestUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct DestOptions {
    pub url: DestUrl,
    pub region: String,
    pub endpoint_url: Option<String>,
}

/// An object of the destination as its folder's listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub size: u64,
    pub etag: Option<String>,
}

/// What the destination says about one of its objects (HEAD with checksum mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub size: u64,
    pub etag: Option<String>,
    pub crc64nvme: Option<String>,
}

/// Requests sent to the destination, by kind: the cost a run reports.
#[derive(Debug, Default)]
pub(crate) struct DestStats {
    pub lists: AtomicU64,
    pub heads: AtomicU64,
    pub copies: AtomicU64,
    pub part_copies: AtomicU64,
    pub uploads: AtomicU64,
    pub other: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct Bucket {
    pub url: DestUrl,
    pub stats: Arc<DestStats>,
    client: aws_sdk_s3::Client,
    retry: RetryPolicy,
}

/// The IAM action a destination request needs, for the message when it is refused.
fn action(op: &str) -> &'static str {
    match op {
        "LIST" => "s3:ListBucket",
        "ListMultipartUploads" => "s3:ListBucketMultipartUploads",
        "AbortMultipartUpload" => "s3:AbortMultipartUpload",
        "HEAD" | "GET" => "s3:GetObject",
        "DeleteObject" => "s3:DeleteObject",
        _ => "s3:PutObject",
    }
}

impl Bucket {
    /// Signed with the standard credential chain (env, profile, SSO, instance role): writing
    /// into the user's bucket needs credentials, unlike reading the public one.
    pub(crate) async fn connect(opts: &DestOptions, retry: RetryPolicy) -> Bucket {
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(opts.region.clone()))
            // Our own retry loop owns backoff, as for the source.
            .retry_config(RetryConfig::disabled())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .load()
            .await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
        if let Some(url) = &opts.endpoint_url {
            conf = conf.endpoint_url(url).force_path_style(true);
        }
        Bucket {
            url: opts.url.clone(),
            stats: Arc::default(),
            client: aws_sdk_s3::Client::from_conf(conf.build()),
            retry,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.url.bucket
    }

    fn error<E>(
        &self,
        op: &'static str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let kind = crate::s3_error::classify(&err);
        if !matches!(err, SdkError::ServiceError(_)) && no_credentials(&err) {
            // Not worth a retry: the chain found nothing, and will find nothing next time.
            let detail = "no AWS credentials found for the destination (set AWS_PROFILE, or \
                          AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with an instance \
                          or task role)";
            return crate::s3::S3::make_error(
                op,
                &self.url.bucket,
                key,
                ErrorKind::Denied,
                crate::s3::Detail::Found(detail.into()),
            );
        }
        let (detail, source) = match &err {
            SdkError::ServiceError(se) => {
                // A refusal says what the destination credentials lack.
                let hint = (kind == ErrorKind::Denied).then(|| {
                    format!(
                        "the destination credentials need {} on bucket {}",
                        action(op),
                        self.url.bucket
                    )
                });
                let answer = crate::s3::Answer {
                    status: se.raw().status().as_u16(),
                    code: se.err().code().unwrap_or("").to_string(),
                    message: hint,
                };
                (crate::s3::Detail::Answer(Box::new(answer)), None)
            }
            _ => (
                crate::s3::Detail::None,
                Some(Box::new(err) as Box<dyn std::error::Error + Send + Sync>),
            ),
        };
        let mut e = crate::s3::S3::make_error(op, &self.url.bucket, key, kind, detail);
        e.source = source;
        e
    }

    /// Run one request with our retries and a timeout.
    async fn call<T, F, Fut>(&self, op: &'static str, key: &str, f: F) -> Result<T, S3Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, S3Error>>,
    {
        self.retry
            .run(|| async {
                match tokio::time::timeout(REQUEST_TIMEOUT, f()).await {
                    Ok(r) => r,
                    Err(_) => Err(crate::s3::S3::make_error(
                        op,
                        &self.url.bucket,
                        key,
                        ErrorKind::Transient,
                        crate::s3::Detail::Found(format!(
                            "no answer within {}s",
                            REQUEST_TIMEOUT.as_secs()
                        )),
                    )),
                }
            })
            .await
    }

    /// One shallow listing per destination folder (`parallel` at once): every object found,
    /// by key.
    pub(crate) async fn list_folders(
        &self,
        folders: BTreeSet<String>,
        parallel: usize,
    ) -> Result<HashMap<String, Listed>, S3Error> {
        let pages: Vec<Vec<(String, Listed)>> = stream::iter(folders)
            .map(|folder| async move { self.list(&folder).await })
            .buffer_unordered(parallel.max(1))
            .try_collect()
            .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    async fn list(&self, folder: &str) -> Result<Vec<(String, Listed)>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .call("LIST", folder, || async {
                    self.stats.lists.fetch_add(1, Ordering::Relaxed);
                    self.client
                        .list_objects_v2()
                        .bucket(self.name())
                        .prefix(folder)
                        .delimiter("/")
                        .set_continuation_token(token.clone())
                        .send()
                        .await
                        .map_err(|e| self.error("LIST", folder, e))
                })
                .await?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                let listed = Listed {
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().map(crate::s3::normalize_etag),
                };
                out.push((key.to_string(), listed));
            }
            token = page.next_continuation_token().map(str::to_string);
            if !page.is_truncated().unwrap_or(false) || token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Size, ETag and full-object CRC-64/NVME of one object; `Ok(None)` when it is not there.
    pub(crate) async fn head(&self, key: &str) -> Result<Option<Stored>, S3Error> {
        let res = self
            .call("HEAD", key, || async {
                self.stats.heads.fetch_add(1, Ordering::Relaxed);
                self.client
                    .head_object()
                    .bucket(self.name())
                    .key(key)
                    .checksum_mode(ChecksumMode::Enabled)
                    .send()
                    .await
                    .map_err(|e| self.error("HEAD", key, e))
            })
            .await;
        match res {
            Ok(h) => Ok(Some(Stored {
                size: h.content_length().unwrap_or(0).max(0) as u64,
                etag: h.e_tag().map(crate::s3::normalize_etag),
                crc64nvme: h.checksum_crc64_nvme().map(str::to_string),
            })),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Server-side copy of `src_bucket/src_key` (pinned to `etag`) to `key`, asking the
    /// destination for its CRC-64/NVME. Returns the copy's ETag and checksum when S3 says them.
    pub(crate) async fn copy_object(
        &self,
        src_bucket: &str,
        src_key: &str,
        etag: &str,
        key: &str,
    ) -> Result<(Option<String>, Option<String>), S3Error> {
        let source = copy_source(src_bucket, src_key);
        let out = self
            .call("CopyObject", key, || async {
                self.stats.copies.fetch_add(1, Ordering::Relaxed);
                self.client
                    .copy_object()
                    .bucket(self.name())
                    .key(key)
                    .copy_source(&source)
                    .copy_source_if_match(format!("\"{etag}\""))
                    .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
                    .send()
                    .await
                    .map_err(|e| self.error("CopyObject", key, e))
            })
            .await?;
        let r = out.copy_object_result();
        Ok((
            r.and_then(|r| r.e_tag()).map(crate::s3::normalize_etag),
            r.and_then(|r| r.checksum_crc64_nvme()).map(str::to_string),
        ))
    }

    /// Remove `key` (a copy that did not match its source).
    pub(crate) async fn delete(&self, key: &str) -> Result<(), S3Error> {
        self.call("DeleteObject", key, || async {
            self.stats.other.fetch_add(1, Ordering::Relaxed);
            self.client
                .delete_object()
                .bucket(self.name())
                .key(key)
                .send()
                .await
                .map_err(|e| self.error("DeleteObject", key, e))
        })
        .await
        .map(|_| ())
    }

    /// Start a multipart upload whose parts combine into one full-object CRC-64/NVME.
    pub(crate) async fn create_upload(&self, key: &str) -> Result<String, S3Error> {
        let out = self
            .call("CreateMultipartUpload", key, || async {
                self.stats.other.fetch_add(1, Ordering::Relaxed);
                self.client
                    .create_multipart_upload()
                    .bucket(self.name())
                    .key(key)
                    .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
                    .checksum_type(ChecksumType::FullObject)
                    .send()
                    .await
                    .map_err(|e| self.error("CreateMultipartUpload", key, e))
            })
            .await?;
        out.upload_id().map(str::to_string).ok_or_else(|| {
            let detail = crate::s3::Detail::Found("no UploadId in the answer".to_string());
            crate::s3::S3::make_error(
                "CreateMultipartUpload",
                self.name(),
                key,
                ErrorKind::Other,
                detail,
            )
        })
    }

    /// One part of `upload` copied server-side from `range` (inclusive) of the pinned source.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn upload_part_copy(
        &self,
        src_bucket: &str,
        src_key: &str,
        etag: &str,
        key: &str,
        upload: &str,
        part: i32,
        range: (u64, u64),
    ) -> Result<CompletedPart, S3Error> {
        let source = copy_source(src_bucket, src_key);
        let out = self
            .call("UploadPartCopy", key, || async {
                self.stats.part_copies.fetch_add(1, Ordering::Relaxed);
                self.client
                    .upload_part_copy()
                    .bucket(self.name())
                    .key(key)
                    .upload_id(upload)
                    .part_number(part)
                    .copy_source(&source)
                    .copy_source_range(format!("bytes={}-{}", range.0, range.1))
                    .copy_source_if_match(format!("\"{etag}\""))
                    .send()
                    .await
                    .map_err(|e| self.error("UploadPartCopy", key, e))
            })
            .await?;
        let r = out.copy_part_result();
        Ok(CompletedPart::builder()
            .part_number(part)
            .set_e_tag(r.and_then(|r| r.e_tag()).map(str::to_string))
            .set_checksum_crc64_nvme(r.and_then(|r| r.checksum_crc64_nvme()).map(str::to_string))
            .build())
    }

    /// One part of `upload` sent by us (a MAST stream), with its CRC-64/NVME for S3 to check.
    pub(crate) async fn upload_part(
        &self,
        key: &str,
        upload: &str,
        part: i32,
        body: bytes::Bytes,
        crc64: &str,
    ) -> Result<CompletedPart, S3Error> {
        let out = self
            .call("UploadPart", key, || async {
                self.stats.uploads.fetch_add(1, Ordering::Relaxed);
                self.client
                    .upload_part()
                    .bucket(self.name())
                    .key(key)
                    .upload_id(upload)
                    .part_number(part)
                    .checksum_crc64_nvme(crc64)
                    .body(ByteStream::from(body.clone()))
                    .send()
                    .await
                    .map_err(|e| self.error("UploadPart", key, e))
            })
            .await?;
        Ok(CompletedPart::builder()
            .part_number(part)
            .set_e_tag(out.e_tag().map(str::to_string))
            .checksum_crc64_nvme(crc64)
            .build())
    }

    /// Finish `upload`. With `crc64`, S3 itself refuses an object whose full-object CRC differs.
    /// Returns the object's ETag and CRC-64/NVME when S3 says them.
    pub(crate) async fn complete(
        &self,
        key: &str,
        upload: &str,
        parts: Vec<CompletedPart>,
        crc64: Option<&str>,
    ) -> Result<(Option<String>, Option<String>), S3Error> {
        let done = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        let out = self
            .call("CompleteMultipartUpload", key, || async {
                self.stats.other.fetch_add(1, Ordering::Relaxed);
                let mut req = self
                    .client
                    .complete_multipart_upload()
                    .bucket(self.name())
                    .key(key)
                    .upload_id(upload)
                    .multipart_upload(done.clone());
                if let Some(c) = crc64 {
                    req = req
                        .checksum_crc64_nvme(c)
                        .checksum_type(ChecksumType::FullObject);
                }
                req.send()
                    .await
                    .map_err(|e| self.error("CompleteMultipartUpload", key, e))
            })
            .await?;
        Ok((
            out.e_tag().map(crate::s3::normalize_etag),
            out.checksum_crc64_nvme().map(str::to_string),
        ))
    }

    /// Give up `upload`: S3 drops its parts (and stops charging for them).
    pub(crate) async fn abort(&self, key: &str, upload: &str) -> Result<(), S3Error> {
        let res = self
            .call("AbortMultipartUpload", key, || async {
                self.stats.other.fetch_add(1, Ordering::Relaxed);
                self.client
                    .abort_multipart_upload()
                    .bucket(self.name())
                    .key(key)
                    .upload_id(upload)
                    .send()
                    .await
                    .map_err(|e| self.error("AbortMultipartUpload", key, e))
            })
            .await;
        match res {
            // Already gone (completed or aborted meanwhile): nothing is left behind.
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Multipart uploads in progress under the destination prefix: `(key, upload id)`.
    pub(crate) async fn uploads(&self) -> Result<Vec<(String, String)>, S3Error> {
        let prefix = self.url.prefix.clone();
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .call("ListMultipartUploads", &prefix, || async {
                    self.stats.lists.fetch_add(1, Ordering::Relaxed);
                    self.client
                        .list_multipart_uploads()
                        .bucket(self.name())
                        .prefix(&prefix)
                        .set_key_marker(key_marker.clone())
                        .set_upload_id_marker(id_marker.clone())
                        .send()
                        .await
                        .map_err(|e| self.error("ListMultipartUploads", &prefix, e))
                })
                .await?;
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    out.push((k.to_string(), id.to_string()));
                }
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if !page.is_truncated().unwrap_or(false) || key_marker.is_none() {
                return Ok(out);
            }
        }
    }

    /// Every record of every manifest under PREFIX (the plain one and each shard's), by path;
    /// `own` (this run's manifest name) separately, so a run rewrites only its own.
    pub(crate) async fn read_manifests(
        &self,
        own: &str,
    ) -> Result<(BTreeMap<String, Entry>, BTreeMap<String, Entry>), S3Error> {
        let top = self.list(&self.url.prefix).await?;
        let (mut mine, mut others) = (BTreeMap::new(), BTreeMap::new());
        for (key, _) in top {
            let name = &key[self.url.prefix.len()..];
            if !(name.starts_with("mastfetch-manifest") && name.ends_with(".jsonl")) {
                continue;
            }
            let text = self.get_text(&key).await?;
            let into = if name == own { &mut mine } else { &mut others };
            for e in parse_manifest(&text) {
                into.insert(e.path.clone(), e);
            }
        }
        Ok((mine, others))
    }

    async fn get_text(&self, key: &str) -> Result<String, S3Error> {
        let bytes = self
            .call("GET", key, || async {
                self.stats.other.fetch_add(1, Ordering::Relaxed);
                let out = self
                    .client
                    .get_object()
                    .bucket(self.name())
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| self.error("GET", key, e))?;
                out.body.collect().await.map_err(|e| {
                    let mut err = crate::s3::S3::make_error(
                        "GET",
                        self.name(),
                        key,
                        ErrorKind::Transient,
                        crate::s3::Detail::Found("body interrupted".into()),
                    );
                    err.source = Some(Box::new(e));
                    err
                })
            })
            .await?;
        Ok(String::from_utf8_lossy(&bytes.into_bytes()).into_owned())
    }

    /// Write a manifest (one line per file) as `PREFIX/<name>`.
    pub(crate) async fn put_manifest(&self, name: &str, entries: &[&Entry]) -> Result<(), S3Error> {
        let mut body = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut body, e).expect("manifest entries serialize");
            body.push(b'\n');
        }
        let key = self.url.key(name);
        let body = bytes::Bytes::from(body);
        self.call("PutObject", &key, || async {
            self.stats.uploads.fetch_add(1, Ordering::Relaxed);
            self.client
                .put_object()
                .bucket(self.name())
                .key(&key)
                .content_type("application/x-ndjson")
                .body(ByteStream::from(body.clone()))
                .send()
                .await
                .map_err(|e| self.error("PutObject", &key, e))
        })
        .await
        .map(|_| ())
    }
}

/// Whether a request failed before it was sent because the credential chain found nothing.
fn no_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.to_string().contains("no credentials found in chain") {
            return true;
        }
        next = e.source();
    }
    false
}

/// `bucket/key` for `x-amz-copy-source`, the key URL-encoded as S3 requires.
fn copy_source(bucket: &str, key: &str) -> String {
    format!("{bucket}/{}", utf8_percent_encode(key, KEY_ESCAPE))
}

/// A manifest's lines, the last line for a path winning, as `manifest::read` reads a file; a
/// line that does not parse (a torn upload cannot happen: PutObject is atomic) is skipped.
fn parse_manifest(text: &str) -> Vec<Entry> {
    let mut by_path = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Ok(e) = serde_json::from_str::<Entry>(line) {
            by_path.insert(e.path.clone(), e);
        }
    }
    by_path.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_urls() {
        let d = DestUrl::parse("s3://mine/jwst").unwrap().unwrap();
        assert_eq!((d.bucket.as_str(), d.prefix.as_str()), ("mine", "jwst/"));
        assert_eq!(d.key("a/b.fits"), "jwst/a/b.fits");
        let d = DestUrl::parse("s3://mine").unwrap().unwrap();
        assert_eq!(d.prefix, "");
        assert_eq!(d.to_string(), "s3://mine/");
        assert!(DestUrl::parse("s3:///x").is_err());
        assert!(DestUrl::parse("s3://b/../x").is_err());
        assert_eq!(DestUrl::parse("./folder").unwrap(), None);
    }

    #[test]
    fn copy_sources_are_encoded() {
        assert_eq!(copy_source("b", "a b/c+d.fits"), "b/a%20b/c%2Bd.fits");
    }
}
