//! A MAST stand-in for tests: a small hyper server on 127.0.0.1 answering, from an in-memory
//! catalog the test defines, in MAST's real formats (as in tests/fixtures):
//! `POST /api/v0/invoke` (`Mast.Caom.Filtered`, `Mast.Caom.Products`, with paging and
//! `EXECUTING`), `GET /api/v0.1/path_lookup/` (HTTP 414 above 40 URIs), `GET
//! /api/v0.1/Download/file?uri=` (token-guarded exclusive access, Range) and `GET /whoami`.
//! Every request is logged with its kind and headers; faults are injected on demand (HTTP
//! status N times, delays, resets, truncated bodies). Not a mock of our client: the client
//! under test speaks HTTP over real sockets.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use serde_json::{json, Value};

/// MAST refuses longer `path_lookup` URLs (HTTP 414).
pub const MAX_LOOKUP_URIS: usize = 40;

/// An observation row (`Mast.Caom.Filtered`).
#[derive(Debug, Clone)]
pub struct Observation {
    pub obsid: u64,
    pub obs_id: String,
    pub obs_collection: String,
    pub instrument_name: String,
    pub proposal_id: String,
    pub calib_level: u8,
}

/// A product (`Mast.Caom.Products` rows, one per observation listing it) and its bytes.
#[derive(Debug, Clone)]
pub struct Product {
    pub uri: String,
    pub filename: String,
    /// The row's `obs_id` (the observation the file belongs to).
    pub obs_id: String,
    pub obs_collection: String,
    /// Observations whose product list holds this file (more than one: a duplicate).
    pub listed_under: Vec<u64>,
    pub product_type: String,
    pub group: Option<String>,
    pub subgroup: String,
    pub calib_level: u8,
    pub data_rights: String,
    pub proposal_id: String,
    pub data: Vec<u8>,
    /// What `path_lookup` answers (`None`: 404, not in the cloud).
    pub cloud_key: Option<String>,
}

impl Product {
    pub fn is_exclusive(&self) -> bool {
        self.data_rights == "EXCLUSIVE_ACCESS"
    }
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub observations: Vec<Observation>,
    pub products: Vec<Product>,
}

impl Catalog {
    pub fn product(&self, uri: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.uri == uri)
    }
}

/// What a logged request was.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Invoke {
        service: String,
        page: u64,
        pagesize: u64,
        params: Value,
    },
    PathLookup {
        uris: Vec<String>,
    },
    Download {
        uri: String,
        range: Option<String>,
    },
    Whoami,
    Other,
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Lower-case header names and their values.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub kind: Kind,
}

impl Logged {
    pub fn authorization(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str())
    }

    pub fn is_invoke(&self, service: &str) -> bool {
        matches!(&self.kind, Kind::Invoke { service: s, .. } if s == service)
    }
}

/// Which requests a fault applies to.
#[derive(Debug, Clone)]
pub enum Target {
    Invoke(&'static str),
    PathLookup,
    /// Downloads whose URI contains this text.
    Download(String),
    Whoami,
}

impl Target {
    fn matches(&self, kind: &Kind) -> bool {
        match (self, kind) {
            (Target::Invoke(s), Kind::Invoke { service, .. }) => s == service,
            (Target::PathLookup, Kind::PathLookup { .. }) => true,
            (Target::Download(part), Kind::Download { uri, .. }) => uri.contains(part.as_str()),
            (Target::Whoami, Kind::Whoami) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this HTTP status (and a short text body).
    Status(u16),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Drop the connection without answering.
    Reset,
    /// Answer normally but cut the body after this many bytes (Content-Length stays whole).
    Truncate(usize),
    /// Answer an `invoke` with `{"status": "ERROR", "msg": ...}` (HTTP 200, as MAST does).
    ServiceError(&'static str),
    /// Answer normally, but send the body one byte per this interval.
    Drip(Duration),
    /// Answer 307 to the very same URL (a redirect loop).
    RedirectLoop,
}

struct Rule {
    target: Target,
    times: usize,
    fault: Fault,
}

struct State {
    catalog: Catalog,
    token: String,
    log: Vec<Logged>,
    rules: VecDeque<Rule>,
    /// Largest page the server gives, whatever the client asks.
    max_page_size: u64,
    /// `EXECUTING` answers per distinct request, by service.
    executing: HashMap<String, usize>,
    executing_seen: HashMap<String, usize>,
    range_support: bool,
    /// A wrong token gets 401 from /whoami instead of `{"anon": true}`.
    whoami_401: bool,
    /// Requests being answered now, and the most at once: parallelism seen without a clock.
    in_flight: usize,
    max_in_flight: usize,
}

pub struct MastServer {
    /// `http://127.0.0.1:PORT/`
    pub url: String,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Body = BoxBody<Bytes, std::io::Error>;
type Response = http::Response<Body>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

fn text(status: u16, msg: &str) -> Response {
    http::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(full(msg.to_string()))
        .unwrap()
}

fn json_response(v: &Value) -> Response {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn fields(spec: &[(&str, &str)]) -> Value {
    Value::Array(
        spec.iter()
            .map(|(n, t)| json!({"name": n, "type": t}))
            .collect(),
    )
}

const OBS_FIELDS: [(&str, &str); 10] = [
    ("dataproduct_type", "string"),
    ("calib_level", "int"),
    ("obs_collection", "string"),
    ("obs_id", "string"),
    ("target_name", "string"),
    ("t_obs_release", "float"),
    ("instrument_name", "string"),
    ("proposal_id", "string"),
    ("dataRights", "string"),
    ("obsid", "string"),
];

const PRODUCT_FIELDS: [(&str, &str); 19] = [
    ("obsID", "string"),
    ("obs_collection", "string"),
    ("dataproduct_type", "string"),
    ("obs_id", "string"),
    ("description", "string"),
    ("type", "string"),
    ("dataURI", "string"),
    ("productType", "string"),
    ("productGroupDescription", "string"),
    ("productSubGroupDescription", "string"),
    ("productDocumentationURL", "string"),
    ("project", "string"),
    ("prvversion", "string"),
    ("proposal_id", "string"),
    ("productFilename", "string"),
    ("size", "int"),
    ("parent_obsid", "string"),
    ("dataRights", "string"),
    ("calib_level", "int"),
];

fn obs_row(o: &Observation) -> Value {
    json!({
        "dataproduct_type": "image",
        "calib_level": o.calib_level,
        "obs_collection": o.obs_collection,
        "obs_id": o.obs_id,
        "target_name": "TEST-TARGET",
        "t_obs_release": 59800.5,
        "instrument_name": o.instrument_name,
        "proposal_id": o.proposal_id,
        "dataRights": "PUBLIC",
        "obsid": o.obsid,
    })
}

fn product_row(p: &Product, obsid: u64) -> Value {
    json!({
        "obsID": obsid,
        "obs_collection": p.obs_collection,
        "dataproduct_type": "image",
        "obs_id": p.obs_id,
        "description": format!("{} file", p.subgroup),
        "type": "S",
        "dataURI": p.uri,
        "productType": p.product_type,
        "productGroupDescription": p.group,
        "productSubGroupDescription": p.subgroup,
        "productDocumentationURL": null,
        "project": "CALJWST",
        "prvversion": "1.11.4",
        "proposal_id": p.proposal_id,
        "productFilename": p.filename,
        "size": p.data.len(),
        "parent_obsid": obsid,
        "dataRights": p.data_rights,
        "calib_level": p.calib_level,
    })
}

/// MAST's `freeText`: `%` any run, `_` one character, case-insensitive.
fn like(pattern: &str, text: &str) -> bool {
    fn rec(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('%') => (0..=t.len()).any(|i| rec(&p[1..], &t[i..])),
            Some('_') => !t.is_empty() && rec(&p[1..], &t[1..]),
            Some(c) => t.first() == Some(c) && rec(&p[1..], &t[1..]),
        }
    }
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    rec(&p, &t)
}

fn error_reply(msg: &str) -> Value {
    json!({"status": "ERROR", "msg": msg, "data": [], "fields": [], "paging": {}})
}

/// The rows of one service call, or MAST's ERROR message.
fn service_rows(
    catalog: &Catalog,
    service: &str,
    params: &Value,
) -> Result<(Vec<Value>, Value), String> {
    match service {
        "Mast.Caom.Filtered" => {
            if params.get("columns").is_none() {
                return Err("Missing required parameter: columns".into());
            }
            let filters = params
                .get("filters")
                .and_then(Value::as_array)
                .ok_or("Missing required parameter: filters")?;
            let mut rows = Vec::new();
            'obs: for o in &catalog.observations {
                for f in filters {
                    let name = f.get("paramName").and_then(Value::as_str).unwrap_or("");
                    let values: Vec<String> = f
                        .get("values")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .map(|v| match v {
                                    Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let free = f.get("freeText").and_then(Value::as_str);
                    let col = match name {
                        "obs_collection" => o.obs_collection.clone(),
                        "proposal_id" => o.proposal_id.clone(),
                        "obs_id" => o.obs_id.clone(),
                        "instrument_name" => o.instrument_name.clone(),
                        "calib_level" => o.calib_level.to_string(),
                        other => return Err(format!("Unknown column name: {other}")),
                    };
                    if !values.is_empty() && !values.iter().any(|v| v == &col) {
                        continue 'obs;
                    }
                    if let Some(free) = free {
                        if !like(free, &col) {
                            continue 'obs;
                        }
                    }
                }
                rows.push(obs_row(o));
            }
            Ok((rows, fields(&OBS_FIELDS)))
        }
        "Mast.Caom.Products" => {
            let ids = params
                .get("obsid")
                .and_then(Value::as_str)
                .ok_or("Missing required parameter: obsid")?;
            let mut rows = Vec::new();
            for id in ids.split(',') {
                let id: u64 = id
                    .trim()
                    .parse()
                    .map_err(|_| format!("Invalid obsid: {id}"))?;
                for p in catalog
                    .products
                    .iter()
                    .filter(|p| p.listed_under.contains(&id))
                {
                    rows.push(product_row(p, id));
                }
            }
            Ok((rows, fields(&PRODUCT_FIELDS)))
        }
        other => Err(format!("Unknown service: {other}")),
    }
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn handle(state: &Arc<Mutex<State>>, logged: &Logged) -> Response {
    let mut st = state.lock().unwrap();
    match &logged.kind {
        Kind::Invoke {
            service,
            page,
            pagesize,
            params,
        } => {
            // Identical requests poll an EXECUTING query; count them by their exact body.
            let n = st.executing.get(service).copied().unwrap_or(0);
            let seen = st.executing_seen.entry(logged.body.clone()).or_insert(0);
            if *seen < n {
                *seen += 1;
                return json_response(&json!({"status": "EXECUTING", "msg": "", "data": []}));
            }
            let (rows, flds) = match service_rows(&st.catalog, service, params) {
                Ok(r) => r,
                Err(msg) => return json_response(&error_reply(&msg)),
            };
            let size = (*pagesize).clamp(1, st.max_page_size);
            let total = rows.len() as u64;
            let pages = total.div_ceil(size).max(1);
            let start = ((page.max(&1) - 1) * size).min(total) as usize;
            let end = (start as u64 + size).min(total) as usize;
            let data = rows[start..end].to_vec();
            json_response(&json!({
                "status": "COMPLETE",
                "msg": "",
                "data": data,
                "fields": flds,
                "paging": {
                    "page": page, "pageSize": size, "pagesFiltered": pages,
                    "rows": end - start, "rowsFiltered": total, "rowsTotal": total,
                },
            }))
        }
        Kind::PathLookup { uris } => {
            if uris.len() > MAX_LOOKUP_URIS {
                return text(414, "Request-URI Too Long");
            }
            let mut answer = serde_json::Map::new();
            for u in uris {
                let key = st.catalog.product(u).and_then(|p| p.cloud_key.clone());
                let v = match key {
                    Some(k) => json!({"status_code": 200, "path": format!("/{k}")}),
                    None => json!({"status_code": 404, "path": null}),
                };
                answer.insert(u.clone(), v);
            }
            json_response(&Value::Object(answer))
        }
        Kind::Whoami => {
            let want = format!("token {}", st.token);
            match logged.authorization() {
                Some(a) if a == want => json_response(&json!({
                    "anon": false, "ezid": "tester", "first_name": "Test", "last_name": "User",
                    "email": "tester@example.org", "scopes": ["mast:exclusive_access"],
                })),
                Some(_) if st.whoami_401 => text(401, "Unauthorized"),
                _ => json_response(&json!({"anon": true, "scopes": []})),
            }
        }
        Kind::Download { uri, range } => {
            let Some(p) = st.catalog.product(uri) else {
                return text(404, "Not Found");
            };
            if p.is_exclusive() && logged.authorization() != Some(&format!("token {}", st.token)) {
                return text(401, "Unauthorized");
            }
            let data = Bytes::from(p.data.clone());
            let len = data.len() as u64;
            let start = range
                .as_deref()
                .filter(|_| st.range_support)
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<u64>().ok());
            match start {
                Some(s) if s >= len => http::Response::builder()
                    .status(416)
                    .header("content-range", format!("bytes */{len}"))
                    .body(full(Bytes::new()))
                    .unwrap(),
                Some(s) => http::Response::builder()
                    .status(206)
                    .header("content-type", "application/octet-stream")
                    .header("content-length", (len - s).to_string())
                    .header("content-range", format!("bytes {s}-{}/{len}", len - 1))
                    .body(full(data.slice(s as usize..)))
                    .unwrap(),
                None => http::Response::builder()
                    .status(200)
                    .header("content-type", "application/octet-stream")
                    .header("content-length", len.to_string())
                    .header(
                        "content-disposition",
                        format!("attachment; filename={}", p.filename),
                    )
                    .body(full(data))
                    .unwrap(),
            }
        }
        Kind::Other => text(404, "Not Found"),
    }
}

/// Cut a response body after `limit` bytes, then fail it (the client sees a short read).
fn truncate(resp: Response, limit: usize) -> Response {
    let (parts, body) = resp.into_parts();
    let cut = async move {
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let keep = bytes.slice(..limit.min(bytes.len()));
        futures::stream::once(async move { Ok(Frame::data(keep)) }).chain(futures::stream::once(
            async {
                // Let the kept bytes reach the client before the connection drops.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(std::io::Error::other("injected truncation"))
            },
        ))
    };
    let stream = futures::stream::once(cut).flatten();
    http::Response::from_parts(parts, BodyExt::boxed(StreamBody::new(stream)))
}

/// Send a response body one byte per `every` (headers at once, as a slow server would).
fn drip(resp: Response, every: Duration) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = async move {
        let b = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        futures::stream::iter((0..b.len()).map(move |i| b.slice(i..i + 1))).then(
            move |byte| async move {
                tokio::time::sleep(every).await;
                Ok::<_, std::io::Error>(Frame::data(byte))
            },
        )
    };
    let stream = futures::stream::once(bytes).flatten();
    http::Response::from_parts(parts, BodyExt::boxed(StreamBody::new(stream)))
}

/// [`serve`], counting the requests being answered at once.
async fn serve_counted(
    state: Arc<Mutex<State>>,
    req: http::Request<Incoming>,
) -> Result<Response, std::io::Error> {
    {
        let mut st = state.lock().unwrap();
        st.in_flight += 1;
        st.max_in_flight = st.max_in_flight.max(st.in_flight);
    }
    let res = serve(state.clone(), req).await;
    state.lock().unwrap().in_flight -= 1;
    res
}

async fn serve(
    state: Arc<Mutex<State>>,
    req: http::Request<Incoming>,
) -> Result<Response, std::io::Error> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body_bytes = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body_bytes).into_owned();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let kind = match (method.as_str(), path.trim_end_matches('/')) {
        ("POST", "/api/v0/invoke") => {
            let request = query_pairs(&body)
                .into_iter()
                .find(|(k, _)| k == "request")
                .map(|(_, v)| v);
            match request.as_deref().map(serde_json::from_str::<Value>) {
                Some(Ok(r)) => Kind::Invoke {
                    service: r["service"].as_str().unwrap_or("").to_string(),
                    page: r["page"].as_u64().unwrap_or(1),
                    pagesize: r["pagesize"].as_u64().unwrap_or(50_000),
                    params: r["params"].clone(),
                },
                _ => Kind::Other,
            }
        }
        ("GET", "/api/v0.1/path_lookup") => Kind::PathLookup {
            uris: query_pairs(&query)
                .into_iter()
                .filter(|(k, _)| k == "uri")
                .map(|(_, v)| v)
                .collect(),
        },
        ("GET", "/api/v0.1/Download/file") => {
            match query_pairs(&query).into_iter().find(|(k, _)| k == "uri") {
                Some((_, uri)) => Kind::Download {
                    uri,
                    range: header("range"),
                },
                None => Kind::Other,
            }
        }
        ("GET", "/whoami") => Kind::Whoami,
        _ => Kind::Other,
    };
    let logged = Logged {
        method,
        path,
        query,
        headers,
        body,
        kind,
    };
    let fault = {
        let mut st = state.lock().unwrap();
        st.log.push(logged.clone());
        let idx = st
            .rules
            .iter()
            .position(|r| r.times > 0 && r.target.matches(&logged.kind));
        idx.map(|i| {
            let r = &mut st.rules[i];
            r.times -= 1;
            let f = r.fault.clone();
            if r.times == 0 {
                st.rules.remove(i);
            }
            f
        })
    };
    match fault {
        Some(Fault::Status(s)) => return Ok(text(s, "injected failure")),
        Some(Fault::Reset) => return Err(std::io::Error::other("injected reset")),
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Truncate(n)) => return Ok(truncate(handle(&state, &logged), n)),
        Some(Fault::ServiceError(msg)) => return Ok(json_response(&error_reply(msg))),
        Some(Fault::Drip(every)) => return Ok(drip(handle(&state, &logged), every)),
        Some(Fault::RedirectLoop) => {
            let here = if logged.query.is_empty() {
                logged.path.clone()
            } else {
                format!("{}?{}", logged.path, logged.query)
            };
            return Ok(http::Response::builder()
                .status(307)
                .header("location", here)
                .body(full(Bytes::new()))
                .unwrap());
        }
        None => {}
    }
    Ok(handle(&state, &logged))
}

impl MastServer {
    /// Start on 127.0.0.1:<free port>; `token` is the one valid MAST token.
    pub fn start(catalog: Catalog, token: &str) -> MastServer {
        let state = Arc::new(Mutex::new(State {
            catalog,
            token: token.to_string(),
            log: Vec::new(),
            rules: VecDeque::new(),
            max_page_size: 50_000,
            executing: HashMap::new(),
            executing_seen: HashMap::new(),
            range_support: true,
            whoami_401: false,
            in_flight: 0,
            max_in_flight: 0,
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state2 = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let conn = ConnBuilder::new(TokioExecutor::new());
                let mut stop = std::pin::pin!(stop_rx);
                loop {
                    let sock = tokio::select! {
                        r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                        _ = &mut stop => break,
                    };
                    let state = state2.clone();
                    let svc =
                        hyper::service::service_fn(move |req| serve_counted(state.clone(), req));
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        let _ = conn.serve_connection(TokioIo::new(sock), svc).await;
                    });
                }
            });
        });
        let addr = rx.recv().unwrap();
        MastServer {
            url: format!("http://{addr}/"),
            state,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Requests to `invoke` for `service` (pages, polls and retries included).
    pub fn invokes(&self, service: &str) -> usize {
        self.log().iter().filter(|l| l.is_invoke(service)).count()
    }

    /// URI counts of the `path_lookup` requests, in order.
    pub fn path_lookups(&self) -> Vec<usize> {
        self.log()
            .iter()
            .filter_map(|l| match &l.kind {
                Kind::PathLookup { uris } => Some(uris.len()),
                _ => None,
            })
            .collect()
    }

    /// URIs of the download requests, in order (retries repeat).
    pub fn downloads(&self) -> Vec<String> {
        self.log()
            .iter()
            .filter_map(|l| match &l.kind {
                Kind::Download { uri, .. } => Some(uri.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn whoamis(&self) -> usize {
        self.log().iter().filter(|l| l.kind == Kind::Whoami).count()
    }

    /// Inject `fault` into the next `times` requests matching `target`.
    pub fn inject(&self, target: Target, times: usize, fault: Fault) {
        self.state.lock().unwrap().rules.push_back(Rule {
            target,
            times,
            fault,
        });
    }

    /// Answer each distinct request to `service` with `EXECUTING` its first `n` times.
    pub fn executing(&self, service: &str, n: usize) {
        self.state
            .lock()
            .unwrap()
            .executing
            .insert(service.to_string(), n);
    }

    /// The largest page served, whatever `pagesize` the client asks for.
    pub fn max_page_size(&self, n: u64) {
        self.state.lock().unwrap().max_page_size = n;
    }

    /// Honour `Range: bytes=N-` (206) or answer every download with 200 and the whole body.
    pub fn range_support(&self, on: bool) {
        self.state.lock().unwrap().range_support = on;
    }

    pub fn whoami_401(&self, on: bool) {
        self.state.lock().unwrap().whoami_401 = on;
    }

    pub fn with_catalog<R>(&self, f: impl FnOnce(&mut Catalog) -> R) -> R {
        f(&mut self.state.lock().unwrap().catalog)
    }
}

impl Drop for MastServer {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
