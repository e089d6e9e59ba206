//! A client's first bytes: a request head the fast path serves must be the request Pingora
//! reads, ending at the same byte, without a body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(disagreement) = portcullis_h1_diff::request(data) {
        panic!("{disagreement}");
    }
});
