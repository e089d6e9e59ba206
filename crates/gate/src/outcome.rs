//! The vocabulary of outcomes: what happened to a request ([`Decision`], the `decision` label
//! of `portcullis_requests_total`), how a refused one is answered ([`Answer`]), and why one was
//! malformed ([`Malformed`], the `reason` of `portcullis_malformed_total`).

use crate::settings::Refusal;

/// What happened to a request; the `decision` label of `portcullis_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decision {
    /// Not decided yet (the request failed before a decision).
    #[default]
    Undecided,
    /// Forwarded to the upstream.
    Proxied,
    /// Forwarded after a rate-limit delay.
    Delayed,
    /// Would have been rate limited, but the zone is in dry-run mode; forwarded.
    DryRun,
    /// No route matched.
    NoRoute,
    /// The client is banned.
    Banned,
    /// The client is in a `deny` network.
    Denied,
    /// The path or user agent is a known probe.
    Probe,
    /// Refused by a rate-limit zone.
    RateLimited,
    /// Refused by a concurrency cap.
    Inflight,
    /// The request could not be understood.
    Malformed,
    /// The request body is larger than the route's `client_max_body_size`.
    TooLarge,
    /// Routed, but the upstream failed.
    UpstreamError,
    /// The path is outside the API's spec (`[api] unknown = "refuse"`).
    UnknownRoute,
    /// The path is in the API's spec, the method is not (405).
    MethodNotAllowed,
    /// An upgrade (WebSocket) on a route without `websocket = true` (403).
    UpgradeRefused,
}

impl Decision {
    /// Every decision, in declaration order (`as usize` indexes this).
    pub const ALL: [Decision; 16] = [
        Decision::Undecided,
        Decision::Proxied,
        Decision::Delayed,
        Decision::DryRun,
        Decision::NoRoute,
        Decision::Banned,
        Decision::Denied,
        Decision::Probe,
        Decision::RateLimited,
        Decision::Inflight,
        Decision::Malformed,
        Decision::TooLarge,
        Decision::UpstreamError,
        Decision::UnknownRoute,
        Decision::MethodNotAllowed,
        Decision::UpgradeRefused,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Undecided => "undecided",
            Decision::Proxied => "proxied",
            Decision::Delayed => "delayed",
            Decision::DryRun => "dry_run",
            Decision::NoRoute => "no_route",
            Decision::Banned => "banned",
            Decision::Denied => "denied",
            Decision::Probe => "probe",
            Decision::RateLimited => "rate_limited",
            Decision::Inflight => "inflight_limited",
            Decision::Malformed => "malformed",
            Decision::TooLarge => "too_large",
            Decision::UpstreamError => "upstream_error",
            Decision::UnknownRoute => "unknown_route",
            Decision::MethodNotAllowed => "method_not_allowed",
            Decision::UpgradeRefused => "upgrade_refused",
        }
    }
}

/// Body of a refusal with `status`.
pub fn refusal_body(status: u16) -> &'static str {
    match status {
        403 => "403 Forbidden\n",
        404 => "404 Not Found\n",
        405 => "405 Method Not Allowed\n",
        413 => "413 Request Entity Too Large\n",
        429 => "429 Too Many Requests\n",
        503 => "503 Service Unavailable\n",
        _ => "request refused\n",
    }
}

/// How a request the gateway does not pass on is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A short plain-text response with this status (see [`refusal_body`]).
    Status {
        /// The HTTP status.
        status: u16,
        /// A `Retry-After` value in seconds, for rate and concurrency limits.
        retry_after: Option<u64>,
        /// Close the connection after the answer (a body that will not be read follows).
        close: bool,
    },
    /// Close the connection without an answer (nginx's 444).
    Drop,
    /// `405 Method Not Allowed` with this `Allow` value: the API's spec declares the path but
    /// not the method.
    NotAllowed {
        /// The methods the path serves, e.g. "GET, HEAD, OPTIONS".
        allow: &'static str,
    },
}

/// The one header field an answer may carry besides the fixed ones (`content-type`,
/// `content-length`, `cache-control: no-store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `Retry-After`, seconds (rate and concurrency limits).
    RetryAfter(u64),
    /// `Allow` (a 405 from the API's spec).
    Allow(&'static str),
}

/// An answer as both proxy paths write it: status, plain-text body, an optional field, and
/// whether the connection closes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body ([`refusal_body`]).
    pub body: &'static str,
    /// `Retry-After` or `Allow`.
    pub field: Option<Field>,
    /// Close the connection after it.
    pub close: bool,
}

impl Answer {
    /// The response this answer is, or `None` for [`Answer::Drop`] (no response at all).
    pub fn reply(&self) -> Option<Reply> {
        match *self {
            Answer::Drop => None,
            Answer::NotAllowed { allow } => Some(Reply {
                status: 405,
                body: refusal_body(405),
                field: Some(Field::Allow(allow)),
                close: false,
            }),
            Answer::Status {
                status,
                retry_after,
                close,
            } => Some(Reply {
                status,
                body: refusal_body(status),
                field: retry_after.map(Field::RetryAfter),
                close,
            }),
        }
    }

    /// A plain refusal with `status`.
    pub fn status(status: u16) -> Answer {
        Answer::Status {
            status,
            retry_after: None,
            close: false,
        }
    }

    /// A refusal with `status` after which the connection is closed (its body, if any, will
    /// not be read; or the client should not send more on it).
    pub fn closing(status: u16) -> Answer {
        Answer::Status {
            status,
            retry_after: None,
            close: true,
        }
    }

    pub(crate) fn refusal(how: Refusal) -> Answer {
        match how {
            Refusal::Drop => Answer::Drop,
            Refusal::Status(s) => Answer::status(s),
        }
    }
}

/// Why a request was refused as malformed: the `reason` of `portcullis_malformed_total`. Only
/// protocol violations are: a client that cancels or goes away never is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Bytes that are not an HTTP request header (Pingora's 400).
    BadHeader,
    /// A `CONNECT` to a reverse proxy (open-proxy scanners; 405).
    Connect,
    /// A header slower than `client_header_timeout` (slowloris; 408).
    HeaderTimeout,
    /// A body slower than `client_body_timeout` (408).
    BodyTimeout,
    /// A body that cannot be read as its framing says, or an HTTP/2 protocol error (400).
    BadBody,
    /// A path that cannot be normalized safely (400).
    BadPath,
    /// A Host that is no host (400).
    BadHost,
    /// A request line, header field or header larger than `large_client_header_buffers`.
    HeaderTooLarge,
}

impl Malformed {
    /// Every reason, for exporting each from the start.
    pub const ALL: [Malformed; 8] = [
        Malformed::BadHeader,
        Malformed::Connect,
        Malformed::HeaderTimeout,
        Malformed::BodyTimeout,
        Malformed::BadBody,
        Malformed::BadPath,
        Malformed::BadHost,
        Malformed::HeaderTooLarge,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::BadHeader => "bad_header",
            Malformed::Connect => "connect",
            Malformed::HeaderTimeout => "header_timeout",
            Malformed::BodyTimeout => "body_timeout",
            Malformed::BadBody => "bad_body",
            Malformed::BadPath => "bad_path",
            Malformed::BadHost => "bad_host",
            Malformed::HeaderTooLarge => "header_too_large",
        }
    }
}
