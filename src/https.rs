//! Downloads from MAST over HTTPS, for what the bucket does not hold (exclusive access, not yet
//! mirrored) and for `--mast-only`.
//!
//! Owns the MAST API token (that it is checked once with `/whoami`, and that it goes only to
//! the MAST host, only over HTTPS, and never into any output; where it comes from is `cli`'s),
//! and the single-stream download with Range resume where the server honours it, retries and
//! hashing. Where the bytes go and when they take their place is `dest`'s policy, as for the S3
//! engine; its resume log holds the URL fetched. It tells its caller about bytes through a
//! [`Tally`] callback (`net`): it knows no progress display.

use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use reqwest::header::{AUTHORIZATION, CONTENT_RANGE, RANGE};
use reqwest::{StatusCode, Url};
use tokio::sync::Semaphore;

use crate::checksum::digest_file;
use crate::dest::{disk, DiskError, Folders, Place};
use crate::net::{self, BodyFault, ReadFault, Tally};
use crate::plan::PlanEntry;
use crate::retry::{Backoff, RetryPolicy, Transient};

const TOKEN_HELP: &str = "MAST tokens expire after 10 days unused or 60 days after creation; \
     make a new one at https://auth.mast.stsci.edu/token and pass it with --token-file or \
     MAST_API_TOKEN";

/// A MAST API token. Its Debug and Display never show it.
#[derive(Clone)]
pub(crate) struct Token(String);

impl Token {
    pub(crate) fn new(s: &str) -> Option<Token> {
        let t = s.trim();
        (!t.is_empty()).then(|| Token(t.to_string()))
    }
    fn header(&self) -> String {
        format!("token {}", self.0)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpsError {
    #[error("GET {url}: HTTP {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("GET {url}: {what}{}", .source.as_ref().map_or("", |e| crate::retry::transport_hint(e)))]
    Request {
        url: String,
        what: &'static str,
        #[source]
        source: Option<reqwest::Error>,
    },
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("GET {url}: answer")]
    TooSlow {
        url: String,
        #[source]
        source: crate::retry::TooSlow,
    },
    #[error("{url}: received {got} bytes, MAST said {want}")]
    Size { url: String, got: u64, want: u64 },
    #[error("the MAST token was refused by {url}: {TOKEN_HELP}")]
    BadToken { url: String },
    #[error(
        "{url}: not a MAST address this token may be sent to (only {base}, over HTTPS (plain \
         HTTP only to a loopback address))"
    )]
    TokenTarget { url: String, base: String },
}

impl Transient for HttpsError {
    fn is_transient(&self) -> bool {
        match self {
            HttpsError::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            HttpsError::Request {
                source: Some(e), ..
            } => crate::retry::outlook(e) != crate::retry::Outlook::Never,
            HttpsError::Request { .. } | HttpsError::Size { .. } | HttpsError::TooSlow { .. } => {
                true
            }
            _ => false,
        }
    }

    fn retry_limit(&self) -> Option<u32> {
        match self {
            HttpsError::Request {
                source: Some(e), ..
            } if crate::retry::outlook(e) == crate::retry::Outlook::OnceMore => Some(1),
            _ => None,
        }
    }
}

pub(crate) struct MastHttps {
    client: reqwest::Client,
    base: Url,
    token: Option<Token>,
    retry: RetryPolicy,
}

/// `http://` is only for a MAST stand-in on this machine (tests); real MAST is HTTPS.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

impl MastHttps {
    pub(crate) fn new(
        base: Url,
        token: Option<Token>,
        retry: RetryPolicy,
    ) -> reqwest::Result<MastHttps> {
        let client = reqwest::Client::builder()
            .connect_timeout(net::CONNECT_TIMEOUT)
            .user_agent(net::USER_AGENT)
            .build()?;
        Ok(MastHttps {
            client,
            base,
            token,
            retry,
        })
    }

    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The token may go with this request: same host and port as the MAST base, over HTTPS
    /// (or plain HTTP to loopback).
    fn may_send_token(&self, url: &Url) -> bool {
        let secure = url.scheme() == "https" || (url.scheme() == "http" && is_loopback(url));
        secure
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    fn request(&self, url: &Url) -> Result<reqwest::RequestBuilder, HttpsError> {
        let mut req = self.client.get(url.clone());
        if let Some(t) = &self.token {
            if !self.may_send_token(url) {
                return Err(HttpsError::TokenTarget {
                    url: url.to_string(),
                    base: self.base.to_string(),
                });
            }
            req = req.header(AUTHORIZATION, t.header());
        }
        Ok(req)
    }

    /// Send a request, noting every half minute that it still waits.
    async fn send(&self, url: &Url) -> Result<reqwest::Response, HttpsError> {
        self.send_from(url, 0).await
    }

    /// Send a request for the bytes from `from` on (all of them from 0).
    async fn send_from(&self, url: &Url, from: u64) -> Result<reqwest::Response, HttpsError> {
        let mut req = self.request(url)?;
        if from > 0 {
            req = req.header(RANGE, format!("bytes={from}-"));
        }
        crate::retry::noting(&format!("GET {url}"), req.send())
            .await
            .map_err(|e| HttpsError::Request {
                url: url.to_string(),
                what: "no answer",
                source: Some(e),
            })
    }

    /// `Download/file?uri=` URL of a product.
    pub(crate) fn download_url(base: &Url, uri: &str) -> String {
        let mut url = base
            .join("api/v0.1/Download/file")
            .expect("static path joins");
        url.query_pairs_mut().append_pair("uri", uri);
        url.to_string()
    }

    /// Ask MAST whether the token is valid, once, before any download needs it.
    pub(crate) async fn check_token(&self) -> Result<(), HttpsError> {
        let url = self.base.join("whoami").expect("static path joins");
        let resp = self
            .retry
            .run(|| async {
                let resp = self.send(&url).await?;
                let status = resp.status();
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    return Err(HttpsError::BadToken {
                        url: url.to_string(),
                    });
                }
                if !status.is_success() {
                    return Err(HttpsError::Status {
                        url: url.to_string(),
                        status: status.as_u16(),
                        hint: "",
                    });
                }
                let body = net::read_body(&self.retry, resp.bytes_stream())
                    .await
                    .map_err(|e| read_error(&url, "answer interrupted", e))?;
                serde_json::from_slice::<serde_json::Value>(&body).map_err(|_| {
                    HttpsError::Request {
                        url: url.to_string(),
                        what: "unreadable answer (not JSON)",
                        source: None,
                    }
                })
            })
            .await?;
        if resp
            .get("anon")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true)
        {
            return Err(HttpsError::BadToken {
                url: url.to_string(),
            });
        }
        Ok(())
    }

    /// Fetch one product into `dest` (its place under `dir`): returns its size, CRC-64/NVME
    /// (S3's base64 form) and, with `sha256`, its SHA-256.
    pub(crate) async fn download(
        &self,
        entry: &PlanEntry,
        place: &Place,
        folders: &Folders,
        tally: &(dyn Fn(Tally) + Sync),
        hashers: Arc<Semaphore>,
        sha256: bool,
    ) -> Result<(u64, String, Option<String>), HttpsError> {
        let url = Url::parse(&entry.url).map_err(|_| HttpsError::Request {
            url: entry.url.clone(),
            what: "not a URL",
            source: None,
        })?;
        let tmp = &place.tmp;
        folders.make(place)?;
        let file = open_partial(place, &entry.url)?;
        let mut have = file.metadata().map_err(disk("cannot stat", tmp))?.len();
        if have > 0 {
            tally(Tally::Resumed(have));
        }
        let mut backoff = Backoff::new(&self.retry);
        loop {
            match self
                .fetch_once(&url, &file, tmp, &mut have, entry.size, tally)
                .await
            {
                Ok(()) => break,
                Err(e) if backoff.wait(&e).await => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(want) = entry.size {
            if have != want {
                place.discard();
                return Err(HttpsError::Size {
                    url: entry.url.clone(),
                    got: have,
                    want,
                });
            }
        }
        let permit = hashers.acquire_owned().await.expect("semaphore open");
        let place = place.clone();
        let (crc, sha) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            file.sync_data().ok();
            let digests =
                digest_file(&place.tmp, sha256).map_err(disk("cannot read", &place.tmp))?;
            place.put_in_place()?;
            Ok::<_, HttpsError>(digests)
        })
        .await
        .expect("hash task does not panic")?;
        Ok((have, crc, sha))
    }

    /// Open one product's download (the whole file, with the token where it may go), for a
    /// caller that streams the body elsewhere (`copy`, into a bucket). Not retried here: the
    /// caller starts the stream over.
    pub(crate) async fn open(&self, url: &str) -> Result<reqwest::Response, HttpsError> {
        let url = Url::parse(url).map_err(|_| HttpsError::Request {
            url: url.to_string(),
            what: "not a URL",
            source: None,
        })?;
        let what = format!("GET {url}");
        let resp = crate::retry::noting(&what, self.request(&url)?.send())
            .await
            .map_err(|e| HttpsError::Request {
                url: url.to_string(),
                what: "no answer",
                source: Some(e),
            })?;
        match resp.status() {
            StatusCode::OK => Ok(resp),
            s => Err(self.refused(&url, s)),
        }
    }

    /// One request from byte `have` on, appending what arrives.
    async fn fetch_once(
        &self,
        url: &Url,
        file: &File,
        tmp: &Path,
        have: &mut u64,
        size: Option<u64>,
        tally: &(dyn Fn(Tally) + Sync),
    ) -> Result<(), HttpsError> {
        if size.is_some_and(|s| s == *have && s > 0) {
            return Ok(());
        }
        let resp = self.send_from(url, *have).await?;
        let status = resp.status();
        match status {
            StatusCode::OK => {
                if *have > 0 {
                    // Range not honoured: start over rather than mix.
                    tally(Tally::GaveBack(*have));
                    file.set_len(0).map_err(disk("cannot truncate", tmp))?;
                    *have = 0;
                }
            }
            StatusCode::PARTIAL_CONTENT => {
                let start = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(net::parse_content_range)
                    .map(|(s, _, _)| s);
                if start != Some(*have) {
                    tally(Tally::GaveBack(*have));
                    file.set_len(0).ok();
                    *have = 0;
                    return Err(HttpsError::Request {
                        url: url.to_string(),
                        what: "answered another range than asked",
                        source: None,
                    });
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE if size.is_none() && *have > 0 => return Ok(()),
            s => return Err(self.refused(url, s)),
        }
        self.write_body(url, resp, file, tmp, have, tally).await
    }

    /// The error for an answer that brings no bytes.
    fn refused(&self, url: &Url, status: StatusCode) -> HttpsError {
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if self.token.is_some() => {
                HttpsError::BadToken {
                    url: url.to_string(),
                }
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => HttpsError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                hint: " (exclusive access: needs a MAST token)",
            },
            StatusCode::NOT_FOUND => HttpsError::Status {
                url: url.to_string(),
                status: 404,
                hint: " (MAST has no such product)",
            },
            s => HttpsError::Status {
                url: url.to_string(),
                status: s.as_u16(),
                hint: "",
            },
        }
    }

    /// Write an answer's body from byte `have` on, through the stall watchdog; the body must be
    /// as long as the answer said.
    async fn write_body(
        &self,
        url: &Url,
        resp: reqwest::Response,
        file: &File,
        tmp: &Path,
        have: &mut u64,
        tally: &(dyn Fn(Tally) + Sync),
    ) -> Result<(), HttpsError> {
        let expected = resp.content_length();
        let mut stream = resp.bytes_stream();
        let (got, end) = net::body_to_file(&self.retry, &mut stream, file, *have, None, |c| {
            tally(Tally::Received(c.len() as u64))
        })
        .await;
        *have += got;
        match end {
            Ok(()) => {}
            Err(BodyFault::Read(e)) => return Err(read_error(url, "body interrupted", e)),
            Err(BodyFault::Disk(e)) => return Err(disk("cannot write", tmp)(e).into()),
            // No limit is given: the length is checked below, once the body has ended.
            Err(BodyFault::TooLong { .. }) => {}
        }
        if let Some(want) = expected {
            if got != want {
                return Err(HttpsError::Size {
                    url: url.to_string(),
                    got,
                    want,
                });
            }
        }
        Ok(())
    }
}

/// The temporary file of a download: continued only if an earlier run fetched this very `url`
/// into it (its resume log holds the URL), else a new one.
fn open_partial(place: &Place, url: &str) -> Result<File, HttpsError> {
    if fs::read_to_string(&place.state).is_ok_and(|s| s.trim() == url) {
        return Ok(place.open_tmp()?);
    }
    let file = place.create_tmp()?;
    fs::write(&place.state, format!("{url}\n")).map_err(disk("cannot write", &place.state))?;
    Ok(file)
}

/// The error of an answer whose body stopped: `what` says which answer it was.
fn read_error(url: &Url, what: &'static str, fault: ReadFault<reqwest::Error>) -> HttpsError {
    match fault {
        ReadFault::TooSlow(source) => HttpsError::TooSlow {
            url: url.to_string(),
            source,
        },
        ReadFault::Broken(e) => HttpsError::Request {
            url: url.to_string(),
            what,
            source: Some(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_never_shows() {
        let t = Token::new(" secret123 \n").unwrap();
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert!(Token::new("  ").is_none());
    }

    #[test]
    fn token_goes_only_to_mast_over_https() {
        let m = MastHttps::new(
            Url::parse("https://mast.stsci.edu/").unwrap(),
            Token::new("x"),
            RetryPolicy::default(),
        )
        .unwrap();
        assert!(m.may_send_token(&Url::parse("https://mast.stsci.edu/api/v0.1/x").unwrap()));
        assert!(!m.may_send_token(&Url::parse("http://mast.stsci.edu/api").unwrap()));
        assert!(!m.may_send_token(&Url::parse("https://evil.example/api").unwrap()));
        assert!(!m.may_send_token(&Url::parse("https://mast.stsci.edu:8443/api").unwrap()));
        let local = MastHttps::new(
            Url::parse("http://127.0.0.1:8080/").unwrap(),
            Token::new("x"),
            RetryPolicy::default(),
        )
        .unwrap();
        assert!(local.may_send_token(&Url::parse("http://127.0.0.1:8080/whoami").unwrap()));
        let refused = HttpsError::TokenTarget {
            url: "http://mast.stsci.edu/x".into(),
            base: "https://mast.stsci.edu/".into(),
        };
        assert!(refused
            .to_string()
            .contains("HTTPS (plain HTTP only to a loopback address)"));
    }

    #[test]
    fn download_urls_quote_the_uri() {
        let base = Url::parse("https://mast.stsci.edu/").unwrap();
        let u = MastHttps::download_url(&base, "mast:JWST/product/a&b?.fits");
        assert_eq!(
            u,
            "https://mast.stsci.edu/api/v0.1/Download/file?uri=mast%3AJWST%2Fproduct%2Fa%26b%3F.fits"
        );
    }
}
