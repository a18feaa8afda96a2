//! The MAST catalog API: observation and product queries, and the URI -> cloud key lookup.
//!
//! Owns the `invoke` protocol (a form-encoded JSON request; `EXECUTING` answers polled with the
//! identical request; paging until `page == pagesFiltered`; retries of transient failures) and
//! the product listing a few observations per `Mast.Caom.Products` request in parallel; the
//! batched `path_lookup` is `mast_lookup`'s. What the JSON says (the filters a [`Query`]
//! becomes, the tolerant reading of rows and lookup answers) is `mast_rows`'. It sends no
//! token: the catalog is public, and the token belongs to `https` alone. It neither decides
//! where a file comes from (`resolve`) nor downloads anything (`https`).
//!
//! Choices worth knowing:
//! - `--program N` is read as a JWST program, as the `s3` catalog reads it
//!   (`jwst/public/jw<N>/`): HST proposal ids of 1990-1993 (about 1000-5000) overlap JWST's, so
//!   an unrestricted query would mix old HST data into a JWST program. When `--instrument`
//!   names HST instruments, the query goes to HST (and to both for instruments of both, FGS).
//!   A query by `--obs-id` alone is not restricted: the pattern already says the mission.
//! - `instrument_name` is `NIRCAM/IMAGE` style, which MAST's filters cannot match by prefix for
//!   several instruments at once, so instruments are matched here, on the observation rows.
//! - Observations whose own `calib_level` is below every level asked for are skipped: an
//!   observation lists no products above its level (exposure observations hold no level-3
//!   products), and `--calib-level 3` then needs no product request per exposure.
//! - Products are de-duplicated by `dataURI`, keeping the first row in observation order
//!   (observations sorted by `obs_id`, then `obsid`), and returned sorted by `dataURI`, so the
//!   plan does not depend on the order MAST answers in.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Url;
use serde_json::{json, Value};

use crate::mast_rows::{
    describe_row, id_field, instrument_matches, int_field, observation_filters, parse_page,
    parse_product_row, str_field, Page,
};
use crate::net::{self, ReadFault};
use crate::query::{ProductRow, Query};
use crate::retry::{RetryPolicy, Transient};

/// How long one request may keep answering `EXECUTING` by default (`--mast-timeout`): the
/// limit astroquery uses for whole queries; ours are small pieces of a query, so a piece still
/// executing after ten minutes means MAST is in trouble, and asking again would only add load.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);
/// A query executing this long is worth a note (and one every `note::NOTE_INTERVAL`).
const EXECUTING_NOTE_AFTER: Duration = Duration::from_secs(30);
/// First pause before asking again after `EXECUTING`; doubles up to [`EXECUTING_MAX_PAUSE`], so
/// quick queries are picked up quickly and slow ones are not hammered.
const EXECUTING_FIRST_PAUSE: Duration = Duration::from_millis(200);
const EXECUTING_MAX_PAUSE: Duration = Duration::from_secs(5);
/// Rows asked for per page: the page size MAST itself answers with (see the fixtures). A server
/// may answer smaller pages; paging follows its `pagesFiltered`, not this number.
const PAGE_SIZE: u64 = 50_000;
/// Observations per `Mast.Caom.Products` request. One level-3 observation can list more than
/// 3000 products, so ten keep a reply to a few MB and well inside MAST's server-side time limit,
/// while a 500-observation program still needs only 50 requests (run in parallel).
const OBS_PER_PRODUCT_REQUEST: usize = 10;
/// URIs per `path_lookup` request: MAST answers longer URLs with HTTP 414.
pub(crate) const PATH_LOOKUP_BATCH: usize = 40;

const OBSERVATIONS: &str = "Mast.Caom.Filtered";
const PRODUCTS: &str = "Mast.Caom.Products";
pub(crate) const PATH_LOOKUP: &str = "path_lookup";

#[derive(Debug, thiserror::Error)]
pub(crate) enum MastError {
    /// `source` is stripped of its URL: ours is in the message, and a `path_lookup` URL would
    /// repeat 40 URIs.
    #[error("MAST {service}: no answer from {url}{}", crate::retry::transport_hint(.source))]
    Request {
        service: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("MAST {service}: HTTP {status} from {url}")]
    Status {
        service: &'static str,
        url: String,
        status: u16,
    },
    #[error("MAST {service}: unreadable answer from {url}")]
    Decode {
        service: &'static str,
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("MAST {service} answered an error: {msg}")]
    Service { service: &'static str, msg: String },
    #[error(
        "MAST {service}: still executing after {} s (--mast-timeout); MAST may be busy: try \
         again later, narrow the query, or raise --mast-timeout",
        waited.as_secs()
    )]
    StillExecuting {
        service: &'static str,
        waited: Duration,
    },
    #[error("MAST {service}: answer from {url}")]
    TooSlow {
        service: &'static str,
        url: String,
        #[source]
        source: crate::retry::TooSlow,
    },
    #[error(
        "MAST {service}: page {page} of {pages} came back empty (the result changed while paging?)"
    )]
    Paging {
        service: &'static str,
        page: u64,
        pages: u64,
    },
}

impl Transient for MastError {
    fn is_transient(&self) -> bool {
        match self {
            MastError::Request { source, .. } => {
                crate::retry::outlook(source) != crate::retry::Outlook::Never
            }
            MastError::TooSlow { .. } => true,
            // The deadline is the user's: starting the query over would wait past it.
            MastError::StillExecuting { .. } => false,
            MastError::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            MastError::Decode { .. } | MastError::Service { .. } | MastError::Paging { .. } => {
                false
            }
        }
    }

    fn retry_limit(&self) -> Option<u32> {
        match self {
            MastError::Request { source, .. }
                if crate::retry::outlook(source) == crate::retry::Outlook::OnceMore =>
            {
                Some(1)
            }
            _ => None,
        }
    }
}

/// A query's products, and the rows MAST listed that cannot be planned (no dataURI, or no file
/// name that is safe to write), which the caller must report rather than drop.
#[derive(Debug, Default)]
pub(crate) struct Products {
    pub rows: Vec<ProductRow>,
    pub unusable: Vec<String>,
}

/// Requests made, by kind, for the plan summary. Every HTTP request counts: pages, `EXECUTING`
/// polls and retries included.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct MastStats {
    pub observation_requests: u64,
    pub product_requests: u64,
    pub path_lookups: u64,
    /// `path_lookup` batches that failed after retries (their URIs are left out of the answer).
    pub failed_path_lookups: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    observations: AtomicU64,
    products: AtomicU64,
    pub(crate) path_lookups: AtomicU64,
    pub(crate) failed_path_lookups: AtomicU64,
}

pub(crate) struct Mast {
    pub base: Url,
    pub(crate) client: reqwest::Client,
    pub(crate) retry: RetryPolicy,
    pub(crate) parallel: usize,
    pub(crate) counters: Counters,
    /// How long a request may keep answering `EXECUTING`.
    deadline: Duration,
}

/// An observation row: what the product requests need.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observation {
    obsid: String,
    obs_id: String,
}

pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Mast {
    /// `base` ends with `/` (see `cli::mast_base`); `parallel` bounds requests in flight.
    pub(crate) fn new(base: Url, retry: RetryPolicy, parallel: usize) -> reqwest::Result<Mast> {
        let client = reqwest::Client::builder()
            .timeout(net::CATALOG_TIMEOUT)
            .connect_timeout(net::CONNECT_TIMEOUT)
            .user_agent(net::USER_AGENT)
            .build()?;
        Ok(Mast {
            base,
            client,
            retry,
            parallel: parallel.max(1),
            counters: Counters::default(),
            deadline: DEFAULT_DEADLINE,
        })
    }

    /// How long a request may keep answering `EXECUTING` (`--mast-timeout`).
    pub(crate) fn with_deadline(mut self, deadline: Duration) -> Mast {
        self.deadline = deadline;
        self
    }

    /// A body read through the retry policy's minimum-progress watchdog.
    pub(crate) async fn body(
        &self,
        service: &'static str,
        url: &str,
        resp: reqwest::Response,
    ) -> Result<Vec<u8>, MastError> {
        crate::net::read_body(&self.retry, resp.bytes_stream())
            .await
            .map_err(|e| match e {
                ReadFault::TooSlow(source) => MastError::TooSlow {
                    service,
                    url: url.to_string(),
                    source,
                },
                ReadFault::Broken(source) => MastError::Request {
                    service,
                    url: url.to_string(),
                    source: source.without_url(),
                },
            })
    }

    pub(crate) fn stats(&self) -> MastStats {
        let c = &self.counters;
        MastStats {
            observation_requests: c.observations.load(Ordering::Relaxed),
            product_requests: c.products.load(Ordering::Relaxed),
            path_lookups: c.path_lookups.load(Ordering::Relaxed),
            failed_path_lookups: c.failed_path_lookups.load(Ordering::Relaxed),
        }
    }

    fn counter(&self, service: &str) -> &AtomicU64 {
        match service {
            OBSERVATIONS => &self.counters.observations,
            PRODUCTS => &self.counters.products,
            _ => &self.counters.path_lookups,
        }
    }

    /// Products matching the query: observations, then their products, de-duplicated by
    /// dataURI, filtered by [`Query::accepts_row`], sorted by dataURI.
    pub(crate) async fn products(&self, q: &Query) -> Result<Products, MastError> {
        let observations = self.observations(q).await?;
        let batches: Vec<String> = observations
            .chunks(OBS_PER_PRODUCT_REQUEST)
            .map(|c| {
                c.iter()
                    .map(|o| o.obsid.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        let mut pages: Vec<(usize, Vec<Value>)> = stream::iter(batches.into_iter().enumerate())
            .map(|(i, ids)| async move {
                let rows = self.invoke(PRODUCTS, json!({ "obsid": ids })).await?;
                Ok::<_, MastError>((i, rows))
            })
            .buffer_unordered(self.parallel)
            .try_collect()
            .await?;
        pages.sort_by_key(|(i, _)| *i);
        let mut seen = HashSet::new();
        let mut unusable = Vec::new();
        let mut rows: Vec<ProductRow> = pages
            .into_iter()
            .flat_map(|(_, rows)| rows)
            .filter_map(|v| {
                let row = parse_product_row(&v);
                if row.is_none() {
                    unusable.push(describe_row(&v));
                }
                row
            })
            .filter(|r| seen.insert(r.data_uri.clone()))
            .filter(|r| q.accepts_row(r))
            .collect();
        rows.sort_by(|a, b| a.data_uri.cmp(&b.data_uri));
        unusable.sort();
        unusable.dedup();
        Ok(Products { rows, unusable })
    }

    /// The observations of the query, filtered by instrument and level, sorted.
    async fn observations(&self, q: &Query) -> Result<Vec<Observation>, MastError> {
        let rows = self
            .invoke(
                OBSERVATIONS,
                json!({ "columns": "*", "filters": observation_filters(q) }),
            )
            .await?;
        let lowest_level = q.calib_levels.iter().min().copied();
        let mut seen = HashSet::new();
        let mut obs: Vec<Observation> = rows
            .iter()
            .filter(|r| {
                q.instruments.is_empty()
                    || instrument_matches(&q.instruments, str_field(r, "instrument_name"))
            })
            .filter(|r| match (lowest_level, int_field(r, "calib_level")) {
                (Some(want), Some(have)) => have >= u64::from(want),
                _ => true,
            })
            .filter_map(|r| {
                Some(Observation {
                    obsid: id_field(r, "obsid")?,
                    obs_id: str_field(r, "obs_id").unwrap_or("").to_string(),
                })
            })
            .filter(|o| seen.insert(o.obsid.clone()))
            .collect();
        obs.sort_by(|a, b| {
            (&a.obs_id, a.obsid.len(), &a.obsid).cmp(&(&b.obs_id, b.obsid.len(), &b.obsid))
        });
        Ok(obs)
    }

    /// Every row of a service's answer: all pages, each page retried.
    async fn invoke(&self, service: &'static str, params: Value) -> Result<Vec<Value>, MastError> {
        let mut rows = Vec::new();
        let mut page = 1u64;
        loop {
            let reply = self
                .retry
                .run(|| self.invoke_page(service, &params, page))
                .await?;
            let empty = reply.data.is_empty();
            rows.extend(reply.data);
            let pages = reply.pages.unwrap_or(page);
            if page >= pages {
                return Ok(rows);
            }
            if empty {
                return Err(MastError::Paging {
                    service,
                    page,
                    pages,
                });
            }
            page += 1;
        }
    }

    /// One page: the request sent again while MAST answers `EXECUTING`, within a bounded wait.
    async fn invoke_page(
        &self,
        service: &'static str,
        params: &Value,
        page: u64,
    ) -> Result<Page, MastError> {
        let url = self.base.join("api/v0/invoke").expect("static path joins");
        let request = json!({
            "service": service,
            "params": params,
            "format": "json",
            "pagesize": PAGE_SIZE,
            "page": page,
        });
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("request", &request.to_string())
            .finish();
        let started = Instant::now();
        let mut pause = EXECUTING_FIRST_PAUSE;
        loop {
            let value = self.post_once(service, &url, &body).await?;
            match value.get("status").and_then(Value::as_str) {
                Some("EXECUTING") => {
                    self.still_executing(service, started.elapsed(), pause)
                        .await?;
                    pause = (pause * 2).min(EXECUTING_MAX_PAUSE);
                }
                Some("ERROR") => {
                    let msg = value
                        .get("msg")
                        .and_then(Value::as_str)
                        .filter(|m| !m.is_empty())
                        .unwrap_or("(no message)");
                    return Err(MastError::Service {
                        service,
                        // A server's words are echoed cut and escaped, like any input.
                        msg: crate::text::shown(msg),
                    });
                }
                Some("COMPLETE") | None => return Ok(parse_page(value)),
                Some(other) => {
                    return Err(MastError::Service {
                        service,
                        msg: format!("unexpected status {other:?}"),
                    })
                }
            }
        }
    }

    /// Send one `invoke` request (its form-encoded `body`) and read its JSON answer.
    async fn post_once(
        &self,
        service: &'static str,
        url: &Url,
        body: &str,
    ) -> Result<Value, MastError> {
        self.counter(service).fetch_add(1, Ordering::Relaxed);
        let request = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "text/plain")
            .body(body.to_string())
            .send();
        let resp = crate::retry::noting(&format!("MAST {service}"), request)
            .await
            .map_err(|source| MastError::Request {
                service,
                url: url.to_string(),
                source: source.without_url(),
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(MastError::Status {
                service,
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let bytes = self.body(service, url.as_str(), resp).await?;
        serde_json::from_slice(&bytes).map_err(|source| MastError::Decode {
            service,
            url: url.to_string(),
            source,
        })
    }

    /// A request still `EXECUTING` after `waited`: give up past the deadline, else say so
    /// (after a while) and wait `pause` before asking again.
    async fn still_executing(
        &self,
        service: &'static str,
        waited: Duration,
        pause: Duration,
    ) -> Result<(), MastError> {
        if waited >= self.deadline {
            return Err(MastError::StillExecuting { service, waited });
        }
        if waited >= EXECUTING_NOTE_AFTER {
            crate::note::wait_note(&format!(
                "MAST {service} still executing after {} s (giving up after {} s, \
                 --mast-timeout)",
                waited.as_secs(),
                self.deadline.as_secs()
            ));
        }
        // The last pause ends at the deadline, for one last look.
        tokio::time::sleep(pause.min(self.deadline - waited)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors() {
        let status = |s| MastError::Status {
            service: PRODUCTS,
            url: "u".into(),
            status: s,
        };
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(404).is_transient());
        assert!(!status(414).is_transient());
        // Past --mast-timeout the query is given up, not started over.
        assert!(!MastError::StillExecuting {
            service: PRODUCTS,
            waited: Duration::from_secs(1)
        }
        .is_transient());
        assert!(!MastError::Service {
            service: PRODUCTS,
            msg: "bad".into()
        }
        .is_transient());
    }
}
