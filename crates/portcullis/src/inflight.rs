//! Concurrency caps (nginx `limit_conn`): requests in flight per client and in total.

/// Releases one in-flight slot when dropped.
pub struct Guard {}
