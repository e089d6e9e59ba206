//! An upstream response (the first byte: answer to a HEAD request when odd) read by the fast
//! path and by Pingora: any disagreement that is not a named, deliberate one is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    if let Err(disagreement) = portcullis_h1_diff::response(bytes, flags & 1 == 1) {
        panic!("{disagreement}");
    }
});
