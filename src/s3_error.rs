//! What an S3 request's failure is and means: [`S3Error`] (what was asked, its [`ErrorKind`],
//! and a [`Detail`] that keeps the service's answer, the endpoint a transport failure is about,
//! and what we found wrong in an answer apart; a transport failure's cause in `source`), and
//! the classification of answers and SDK errors into transient / changed / not found / denied.
//! It sends nothing (`s3`).

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::retry::Transient;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// Worth retrying: 5xx, SlowDown, throttling, timeouts, resets, truncated bodies.
    Transient,
    /// The object is no longer the one planned (412 on If-Match, or another ETag/size answered).
    Changed,
    NotFound,
    Denied,
    /// The endpoint's host name does not resolve (tried once more, then given up).
    NoSuchHost,
    /// The connection cannot work as configured (TLS to a plain-HTTP server, a bad
    /// certificate): not retried.
    Unusable,
    Other,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::Transient => "temporary failure",
            ErrorKind::Changed => "object changed since it was planned",
            ErrorKind::NotFound => "not found",
            ErrorKind::Denied => "access denied",
            ErrorKind::NoSuchHost => "the endpoint's host name does not resolve",
            ErrorKind::Unusable => "cannot talk to the endpoint",
            ErrorKind::Other => "request failed",
        })
    }
}

/// A failed S3 request: what was asked, what it means for us, and what was said about it.
#[derive(Debug, thiserror::Error)]
#[error("{op} s3://{bucket}/{key}: {kind}{detail}")]
pub(crate) struct S3Error {
    pub op: &'static str,
    pub bucket: String,
    pub key: String,
    pub kind: ErrorKind,
    pub detail: Detail,
    /// A transport failure's cause (a service answer has none: its words are the detail).
    #[source]
    pub source: Option<BoxError>,
}

/// What an S3 error says beyond its kind; each kind of answer keeps its own fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Detail {
    None,
    /// The service answered (boxed: errors travel in every `Result` of the engine).
    Answer(Box<Answer>),
    /// The endpoint a transport failure is about: its name does not resolve, or (`tls`) the
    /// TLS handshake failed.
    Endpoint {
        url: String,
        tls: bool,
    },
    /// What we found wrong with an answer (another ETag, a short body, no answer in time).
    Found(String),
}

/// What S3 answered to a request it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    /// S3's error code (`SlowDown`, `NoSuchKey`), empty when the answer had none.
    pub code: String,
    pub message: Option<String>,
}

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Detail::None => Ok(()),
            Detail::Answer(a) => {
                write!(f, ": HTTP {} {}", a.status, a.code)?;
                match &a.message {
                    Some(m) => write!(f, " ({m})"),
                    None => Ok(()),
                }
            }
            Detail::Endpoint { url, tls } => {
                write!(f, " ({url})")?;
                if *tls {
                    f.write_str(
                        " (TLS failed: a plain-HTTP server needs an http:// --endpoint-url)",
                    )?;
                }
                Ok(())
            }
            Detail::Found(what) => write!(f, ": {what}"),
        }
    }
}

impl Transient for S3Error {
    fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient || self.kind == ErrorKind::NoSuchHost
    }

    fn retry_limit(&self) -> Option<u32> {
        (self.kind == ErrorKind::NoSuchHost).then_some(1)
    }
}

pub(crate) fn classify<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> ErrorKind {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorKind::Transient
        }
        SdkError::ServiceError(se) => {
            classify_status(se.raw().status().as_u16(), se.err().code().unwrap_or(""))
        }
        _ => ErrorKind::Other,
    }
}

/// What an S3 error status and code mean for us.
pub(crate) fn classify_status(status: u16, code: &str) -> ErrorKind {
    match (status, code) {
        (412, _) | (_, "PreconditionFailed") => ErrorKind::Changed,
        (_, "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable")
        | (_, "Throttling" | "ThrottlingException" | "RequestTimeTooSkewed") => {
            ErrorKind::Transient
        }
        (404, _) | (_, "NoSuchKey" | "NotFound") => ErrorKind::NotFound,
        (403, _) | (_, "AccessDenied") => ErrorKind::Denied,
        // 501: the server cannot do this at all; asking again will not help.
        (501, _) => ErrorKind::Other,
        (408 | 429, _) | (500..=599, _) => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(kind: ErrorKind, detail: Detail) -> S3Error {
        S3Error {
            op: "GET",
            bucket: "b".into(),
            key: "k".into(),
            kind,
            detail,
            source: None,
        }
    }

    #[test]
    fn each_kind_of_detail_reads_as_before() {
        let answer = Detail::Answer(Box::new(Answer {
            status: 503,
            code: "SlowDown".into(),
            message: Some("Please reduce your request rate.".into()),
        }));
        assert_eq!(
            error(classify_status(503, "SlowDown"), answer).to_string(),
            "GET s3://b/k: temporary failure: HTTP 503 SlowDown (Please reduce your request rate.)"
        );
        let endpoint = Detail::Endpoint {
            url: "https://x".into(),
            tls: true,
        };
        assert_eq!(
            error(ErrorKind::Unusable, endpoint).to_string(),
            "GET s3://b/k: cannot talk to the endpoint (https://x) (TLS failed: a plain-HTTP \
             server needs an http:// --endpoint-url)"
        );
        let found = Detail::Found("ETag a was planned, b answered".into());
        assert_eq!(
            error(ErrorKind::Changed, found).to_string(),
            "GET s3://b/k: object changed since it was planned: ETag a was planned, b answered"
        );
        assert_eq!(
            error(ErrorKind::NotFound, Detail::None).to_string(),
            "GET s3://b/k: not found"
        );
    }

    #[test]
    fn statuses_and_codes_are_classified() {
        assert_eq!(classify_status(412, ""), ErrorKind::Changed);
        assert_eq!(classify_status(503, "SlowDown"), ErrorKind::Transient);
        assert_eq!(classify_status(404, "NoSuchKey"), ErrorKind::NotFound);
        assert_eq!(classify_status(403, "AccessDenied"), ErrorKind::Denied);
        assert_eq!(classify_status(501, ""), ErrorKind::Other);
        assert_eq!(classify_status(429, ""), ErrorKind::Transient);
        assert_eq!(classify_status(400, "InvalidArgument"), ErrorKind::Other);
    }
}
