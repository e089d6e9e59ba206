//! The positive model of an API: the routes its OpenAPI spec declares, so the gateway can
//! refuse requests outside them and never refuse one inside.
//!
//! A [`Spec`] is compiled once from the spec file (JSON or YAML; OpenAPI 3.0, 3.1 or
//! Swagger 2.0) plus the `extra_paths` setting, and is immutable and `Send + Sync` afterwards.
//! [`Spec::check`] takes the method and the normalized request path and answers with an
//! [`ApiMatch`]. It walks a tree of precomputed segments over the path's bytes and never
//! allocates.
//!
//! # What is matched
//!
//! * **Templates.** Each key of `paths` is a template; `{param}` matches exactly one
//!   non-empty segment, and a parameter inside a segment (`{name}.{ext}`, `v{version}`)
//!   matches one or more bytes there. Matching is case-sensitive, like Starlette.
//! * **Static segments first.** `/users/me` is tried before `/users/{id}`; when a static
//!   branch dead-ends (`/users/me/avatar` with only `/users/{id}/avatar` declared), the
//!   search backtracks to the parameter. Starlette routes in declaration order instead, but
//!   the answer here does not depend on order: a request is [`ApiMatch::Known`] when *any*
//!   template matching its path declares its method, which is a superset of what any order
//!   serves.
//! * **Base paths.** Templates are matched under the spec's base path: the path part of each
//!   OpenAPI 3 `servers[].url` (`https://api.example.com/v1` and `/v1` give `/v1`; a relative
//!   `v1` is taken relative to the root; `/`, an empty list or no `servers` mean none), or
//!   Swagger 2 `basePath`. Several servers allow any of their base paths. A path item's own
//!   `servers` replace the document's for that template; operation-level `servers` add
//!   theirs. Server variables in the path take every value of their `enum` plus their
//!   `default`, the values the spec says a deployment can use (a variable with no definition
//!   matches any one segment). Requests must carry the base path: behind a proxy that strips
//!   it, serve the spec with the stripped paths.
//! * **Trailing slash.** FastAPI/Starlette redirect `/items` to `/items/` and back when only
//!   one is declared (`redirect_slashes=True`, the default), so one trailing slash is ignored
//!   on both sides: `/items/` is known when `/items` is declared and the other way round.
//! * **Methods.** A known path with an undeclared method is
//!   [`ApiMatch::MethodNotAllowed`] with a ready `Allow` value (sorted, e.g.
//!   "GET, HEAD, OPTIONS, POST", the union over every template matching the path). OPTIONS
//!   always passes on a known path (CORS preflight is answered by middleware and never
//!   declared), HEAD passes wherever GET is declared. Methods compare case-sensitively as
//!   HTTP says (`get` is not GET). Path-item keys that are not methods (`parameters`,
//!   `summary`, `description`, `servers`, `x-...`) are ignored.
//! * **`$ref` path items.** A local reference (`#/components/pathItems/Item`, or another
//!   entry of `paths`) is followed and its methods are used. A reference to another file or
//!   a URL cannot be read here: that path allows every method, since refusing a declared
//!   route would break the API.
//! * **Paths outside the spec.** `extra_paths` entries ([`Spec::with_extra_paths`]) are exact
//!   paths, or prefixes when they end in `/` (`/static/` covers `/static` and everything
//!   under it). They allow every method and win over a 405 from the spec.
//! * **Multi-segment parameters.** FastAPI's `{file_path:path}` converter appears in the spec
//!   as `{file_path}` and therefore matches one segment only here; cover such routes with an
//!   `extra_paths` prefix (`/files/`).
//!
//! The root template `/` is supported. A spec with an empty `paths` object is valid and knows
//! nothing ([`Spec::template_count`] is 0), so every path outside `extra_paths` is unknown.
//!
//! The caller normalizes the path first (percent-decoded, dot segments resolved, slashes
//! merged, no query); static template segments are percent-decoded to compare with it.

mod document;
mod methods;
mod template;
mod tree;

use methods::Method;
use template::percent_decode;
use tree::{Tree, Walk};

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiMatch {
    /// A template of the spec matches the path and serves the method.
    Known,
    /// The path is under `extra_paths`: served outside the spec, any method.
    Extra,
    /// The path matches templates, none of which serves the method.
    MethodNotAllowed {
        /// The value of the `Allow` response header.
        allow: &'static str,
    },
    /// No template and no extra path matches.
    Unknown,
}

/// Why a spec or an `extra_paths` entry cannot be used. The message is meant for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The bytes are not valid JSON (when they start with `{`) or YAML.
    #[error("the API spec is not valid {format}: {message}")]
    Syntax {
        /// "JSON" or "YAML".
        format: &'static str,
        /// The parser's message, with the position.
        message: String,
    },
    /// The document is empty or is not a mapping at the top level.
    #[error("the API spec is empty or not an object at the top level")]
    NotAnObject,
    /// Neither `openapi` nor `swagger` is present.
    #[error("not an OpenAPI or Swagger document: no `openapi` or `swagger` field")]
    NoVersion,
    /// A version other than OpenAPI 3.0, 3.1 or Swagger 2.0.
    #[error("unsupported version {0}: OpenAPI 3.0, 3.1 and Swagger 2.0 are supported")]
    UnsupportedVersion(String),
    /// No `paths` object: the spec declares no route.
    #[error("the API spec has no `paths` object")]
    NoPaths,
    /// A field read here has the wrong shape (`paths` not an object, `servers` not a list).
    #[error("the API spec is invalid: {0}")]
    InvalidField(String),
    /// A key of `paths` is not a valid template.
    #[error("bad template {template:?}: {reason}")]
    BadTemplate {
        /// The key as written.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The value of a `paths` entry cannot be read.
    #[error("bad path item {template:?}: {reason}")]
    BadPathItem {
        /// The key of the entry.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A server URL or `basePath` gives no usable base path.
    #[error("bad server URL {url:?}: {reason}")]
    BadServerUrl {
        /// The URL or `basePath` as written.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `extra_paths` entry is not a literal absolute path.
    #[error("extra_paths[{index}] {entry:?}: {reason}")]
    BadExtraPath {
        /// Zero-based position in the list.
        index: usize,
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A compiled API spec. Immutable; share it behind an `Arc`.
#[derive(Debug)]
pub struct Spec {
    tree: Tree,
    template_count: usize,
    base_paths: Vec<String>,
    /// Exact extra paths without their trailing `/`, sorted for binary search.
    extra_exact: Vec<Box<[u8]>>,
    /// Extra prefixes without their trailing `/` ("" for "/").
    extra_prefixes: Vec<Box<[u8]>>,
}

impl Spec {
    /// Parses and compiles a spec: JSON or YAML, OpenAPI 3.0, 3.1 or Swagger 2.0.
    pub fn parse(bytes: &[u8]) -> Result<Spec, SpecError> {
        let document = document::read(bytes)?;
        let mut tree = Tree::default();
        for route in &document.routes {
            for base in &route.base_paths {
                tree.insert(&base.segments, &route.segments, route.methods);
            }
        }
        Ok(Spec {
            tree,
            template_count: document.routes.len(),
            base_paths: document
                .base_paths
                .into_iter()
                .map(|base| base.text)
                .collect(),
            extra_exact: Vec::new(),
            extra_prefixes: Vec::new(),
        })
    }

    /// A spec that knows no template: what a gateway validates `extra_paths` with before it
    /// has a spec.
    pub fn empty() -> Spec {
        Spec {
            tree: Tree::default(),
            template_count: 0,
            base_paths: Vec::new(),
            extra_exact: Vec::new(),
            extra_prefixes: Vec::new(),
        }
    }

    /// Adds paths served outside the spec (the `extra_paths` setting): an entry is an exact
    /// path, or a prefix when it ends in `/`. Entries are literal (no templates), absolute,
    /// without query; they are percent-decoded and their slashes merged, like requests.
    pub fn with_extra_paths(mut self, extra: &[String]) -> Result<Spec, SpecError> {
        for (index, entry) in extra.iter().enumerate() {
            let bad = |reason: &str| SpecError::BadExtraPath {
                index,
                entry: entry.clone(),
                reason: reason.to_string(),
            };
            if !entry.starts_with('/') {
                return Err(bad("must start with '/'"));
            }
            if entry.contains(['?', '#']) {
                return Err(bad("cannot contain a query ('?') or a fragment ('#')"));
            }
            if entry.contains(['{', '}']) {
                return Err(bad(
                    "entries are literal paths or prefixes, not templates: \
                     use a prefix ending in '/' to cover parameters",
                ));
            }
            let mut normalized: Vec<u8> = Vec::with_capacity(entry.len());
            for segment in percent_decode(entry.as_bytes()).split(|&byte| byte == b'/') {
                if !segment.is_empty() {
                    normalized.push(b'/');
                    normalized.extend_from_slice(segment);
                }
            }
            let list = match entry.ends_with('/') {
                true => &mut self.extra_prefixes,
                false => &mut self.extra_exact,
            };
            list.push(normalized.into());
        }
        self.extra_exact.sort();
        self.extra_exact.dedup();
        self.extra_prefixes.sort();
        self.extra_prefixes.dedup();
        Ok(self)
    }

    /// The number of templates (entries of `paths`) in the spec.
    pub fn template_count(&self) -> usize {
        self.template_count
    }

    /// The document-level base paths, e.g. `["/api/v3"]`; `[""]` when templates are served
    /// at the root. For logs: requests outside every base path are unknown.
    pub fn base_paths(&self) -> &[String] {
        &self.base_paths
    }

    /// Checks one request. `method` as sent (`b"GET"`); `path` normalized by the caller
    /// (percent-decoded, dot segments resolved, slashes merged, no query). A path that does
    /// not start with `/` (`*`, absolute form) is unknown.
    pub fn check(&self, method: &[u8], path: &[u8]) -> ApiMatch {
        let Some(rest) = route_key(path) else {
            return ApiMatch::Unknown;
        };
        match self.tree.walk(rest, Method::from_request(method)) {
            Walk::Allowed => ApiMatch::Known,
            _ if self.is_extra(rest) => ApiMatch::Extra,
            Walk::WrongMethod(methods) => ApiMatch::MethodNotAllowed {
                allow: methods.allow_header(),
            },
            Walk::NoMatch => ApiMatch::Unknown,
        }
    }

    /// `rest` as from [`route_key`].
    fn is_extra(&self, rest: Option<&[u8]>) -> bool {
        // Entries are stored as "/a/b"; `rest` lacks the leading '/', so compare after it.
        let rest = rest.unwrap_or_default();
        let exact = self
            .extra_exact
            .binary_search_by(|entry| entry.get(1..).unwrap_or_default().cmp(rest))
            .is_ok();
        exact
            || self.extra_prefixes.iter().any(|prefix| {
                let prefix = prefix.get(1..).unwrap_or_default();
                prefix.is_empty()
                    || (rest.starts_with(prefix)
                        && matches!(rest.get(prefix.len()), None | Some(b'/')))
            })
    }
}

/// The path as the tree walks it: without the leading `/` and one trailing `/` (see the
/// trailing-slash rule), `None` for the root. The outer `None`: not an origin-form path.
fn route_key(path: &[u8]) -> Option<Option<&[u8]>> {
    if path.is_empty() {
        return Some(None);
    }
    let rest = path.strip_prefix(b"/")?;
    let rest = rest.strip_suffix(b"/").unwrap_or(rest);
    Some((!rest.is_empty()).then_some(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Spec>();
    }

    #[test]
    fn route_key_strips_one_leading_and_one_trailing_slash() {
        assert_eq!(route_key(b"/"), Some(None));
        assert_eq!(route_key(b""), Some(None));
        assert_eq!(route_key(b"/a/b/"), Some(Some(&b"a/b"[..])));
        assert_eq!(route_key(b"*"), None);
    }
}
