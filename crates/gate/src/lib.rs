//! The walk of a request through portcullis, written once for both proxy paths.
//!
//! A request walks: client identity → ban → header size → Host → path (normalized as nginx
//! does) → the API's spec → probes → route → upgrade → body size → rate limits → concurrency
//! caps. [`Gate::decide`] returns what to do ([`Step`]); a route with a zone shared by the
//! cluster asks first ([`Gate::begin`], then [`Gate::after_shared`]); around the upstream,
//! [`Gate::before_upstream`] re-checks the ban, [`Gate::on_response`] feeds the status to the
//! reputation table, and [`Gate::on_malformed`] counts protocol violations.
//!
//! Synchronous and free of Pingora, tokio and sockets: time comes from an injected
//! [`Clock`](portcullis_policy::time::Clock), and what happened is told to an [`Observer`]
//! (metrics, logs, the ban journal live in the binary). The proxy paths parse, ask and act.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod caps;
pub mod observer;
pub mod outcome;
pub mod request;
pub mod router;
pub mod settings;
pub mod walk;

pub use observer::{Observer, Unobserved, ZoneOutcome};
pub use outcome::{refusal_body, Answer, Decision, Field, Malformed, Reply};
pub use request::{HeaderSize, RequestFacts};
pub use settings::GateSettings;
pub use walk::{Gate, SharedCheck, Step, Walk, Walked};
