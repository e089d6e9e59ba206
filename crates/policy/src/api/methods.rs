//! HTTP methods as a bit set, and the `Allow` header value of every set.

use std::sync::OnceLock;

/// The operation methods OpenAPI knows, in alphabetical order: the bit order is the order of
/// the `Allow` header, so the header is sorted by construction.
const METHOD_NAMES: [&str; 8] = [
    "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

/// One of the eight methods an OpenAPI path item can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Method(u8);

impl Method {
    pub const DELETE: Method = Method(0);
    pub const GET: Method = Method(1);
    pub const HEAD: Method = Method(2);
    pub const OPTIONS: Method = Method(3);
    pub const PATCH: Method = Method(4);
    pub const POST: Method = Method(5);
    pub const PUT: Method = Method(6);
    pub const TRACE: Method = Method(7);

    /// The method of a request, compared case-sensitively as RFC 9110 says: `get` is not GET.
    pub fn from_request(method: &[u8]) -> Option<Method> {
        Some(match method {
            b"DELETE" => Method::DELETE,
            b"GET" => Method::GET,
            b"HEAD" => Method::HEAD,
            b"OPTIONS" => Method::OPTIONS,
            b"PATCH" => Method::PATCH,
            b"POST" => Method::POST,
            b"PUT" => Method::PUT,
            b"TRACE" => Method::TRACE,
            _ => return None,
        })
    }

    /// The method a path-item key declares. The keys are lower-case fixed fields in both
    /// OpenAPI 3 and Swagger 2; anything else (`parameters`, `x-...`) is not a method.
    pub fn from_path_item_key(key: &str) -> Option<Method> {
        Some(match key {
            "delete" => Method::DELETE,
            "get" => Method::GET,
            "head" => Method::HEAD,
            "options" => Method::OPTIONS,
            "patch" => Method::PATCH,
            "post" => Method::POST,
            "put" => Method::PUT,
            "trace" => Method::TRACE,
            _ => return None,
        })
    }

    fn bit(self) -> u16 {
        1 << self.0
    }
}

/// A set of declared methods, or "every method" for a path item the spec does not describe
/// (an external `$ref`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct MethodSet(u16);

impl MethodSet {
    pub const EMPTY: MethodSet = MethodSet(0);
    pub const ANY: MethodSet = MethodSet(1 << 8);

    pub fn with(self, method: Method) -> MethodSet {
        MethodSet(self.0 | method.bit())
    }

    pub fn union(self, other: MethodSet) -> MethodSet {
        MethodSet(self.0 | other.0)
    }

    fn contains(self, method: Method) -> bool {
        self.0 & method.bit() != 0
    }

    /// Whether a request with `method` (None: a method OpenAPI cannot declare) is served.
    /// OPTIONS always is (CORS preflight, answered by middleware, never declared in FastAPI
    /// specs); HEAD is wherever GET is (Starlette answers HEAD for every GET route).
    pub fn allows(self, method: Option<Method>) -> bool {
        if self.0 & Self::ANY.0 != 0 {
            return true;
        }
        match method {
            Some(Method::OPTIONS) => true,
            Some(Method::HEAD) => self.contains(Method::HEAD) || self.contains(Method::GET),
            Some(method) => self.contains(method),
            None => false,
        }
    }

    /// The `Allow` header for a path serving this set, e.g. "GET, HEAD, OPTIONS, POST".
    pub fn allow_header(self) -> &'static str {
        // Every one of the 256 sets is built once per process, so a 405 never allocates.
        static HEADERS: OnceLock<Vec<String>> = OnceLock::new();
        let headers = HEADERS.get_or_init(|| (0..=u8::MAX).map(build_allow_header).collect());
        let index = usize::from(self.0 as u8);
        headers.get(index).map_or("", String::as_str)
    }
}

fn build_allow_header(bits: u8) -> String {
    let mut set = MethodSet(u16::from(bits)).with(Method::OPTIONS);
    if set.contains(Method::GET) {
        set = set.with(Method::HEAD);
    }
    let names: Vec<&str> = METHOD_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| set.0 & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_header_is_sorted_and_adds_head_and_options() {
        let set = MethodSet::EMPTY.with(Method::POST).with(Method::GET);
        assert_eq!(set.allow_header(), "GET, HEAD, OPTIONS, POST");
        assert_eq!(MethodSet::EMPTY.allow_header(), "OPTIONS");
        let all = (0..8).fold(MethodSet::EMPTY, |set, bit| set.with(Method(bit)));
        assert_eq!(
            all.allow_header(),
            "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE"
        );
    }

    #[test]
    fn methods_compare_case_sensitively() {
        assert_eq!(Method::from_request(b"GET"), Some(Method::GET));
        assert_eq!(Method::from_request(b"get"), None);
        assert_eq!(Method::from_path_item_key("GET"), None);
        assert_eq!(Method::from_path_item_key("parameters"), None);
    }
}
