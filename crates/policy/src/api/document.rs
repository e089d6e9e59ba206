//! Reading a spec document: JSON or YAML, OpenAPI 3.0/3.1 or Swagger 2.0, down to the
//! routes it declares (template, methods, base paths).

use serde_json::{Map, Value};

use super::methods::{Method, MethodSet};
use super::template::{parse_template, percent_decode, Segment};
use super::SpecError;

/// Server variables can multiply base paths (`enum` × `enum`); past this the spec is refused
/// rather than building a huge tree.
const MAX_BASE_PATHS: usize = 64;

/// `$ref` chains longer than this are taken for cycles.
const MAX_REF_DEPTH: usize = 8;

/// A path prefix every template is served under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BasePath {
    /// As derived from the spec, e.g. "/api/v3"; "" for the root.
    pub text: String,
    pub segments: Vec<Segment>,
}

/// One entry of `paths`.
#[derive(Debug)]
pub(crate) struct Route {
    pub segments: Vec<Segment>,
    pub methods: MethodSet,
    /// The base paths of this path item (its own `servers` override the document's).
    pub base_paths: Vec<BasePath>,
}

#[derive(Debug)]
pub(crate) struct Document {
    pub base_paths: Vec<BasePath>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Swagger2,
    OpenApi3,
}

pub(crate) fn read(bytes: &[u8]) -> Result<Document, SpecError> {
    let root = parse_value(bytes)?;
    let Value::Object(doc) = &root else {
        return Err(SpecError::NotAnObject);
    };
    let flavor = flavor(doc)?;
    let base_paths = match flavor {
        Flavor::OpenApi3 => servers_base_paths(doc.get("servers"), "servers")?,
        Flavor::Swagger2 => swagger_base_path(doc.get("basePath"))?,
    };
    let paths = match doc.get("paths") {
        Some(Value::Object(paths)) => paths,
        Some(_) => return Err(SpecError::InvalidField("`paths` must be an object".into())),
        None => return Err(SpecError::NoPaths),
    };
    let mut routes = Vec::with_capacity(paths.len());
    // Extension keys (`x-...`) may sit next to the templates in `paths`.
    for (template, item) in paths.iter().filter(|(key, _)| !key.starts_with("x-")) {
        let segments = parse_template(template).map_err(|reason| SpecError::BadTemplate {
            template: template.clone(),
            reason,
        })?;
        let (methods, item_base_paths) = read_path_item(&root, template, item, flavor)?;
        routes.push(Route {
            segments,
            methods,
            base_paths: item_base_paths.unwrap_or_else(|| base_paths.clone()),
        });
    }
    Ok(Document { base_paths, routes })
}

/// JSON when the document starts with `{`, YAML otherwise, so the error names the format
/// the user wrote.
fn parse_value(bytes: &[u8]) -> Result<Value, SpecError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
    if first == Some(&b'{') {
        return serde_json::from_slice(bytes).map_err(|error| SpecError::Syntax {
            format: "JSON",
            message: error.to_string(),
        });
    }
    let yaml_error = |error: serde_yaml::Error| SpecError::Syntax {
        format: "YAML",
        message: error.to_string(),
    };
    let mut value: serde_yaml::Value = serde_yaml::from_slice(bytes).map_err(yaml_error)?;
    value.apply_merge().map_err(yaml_error)?;
    Ok(yaml_to_json(value))
}

/// One tree for both formats. YAML keys that are not strings (`200:` in `responses`) become
/// their text; none of the fields read here has such keys.
fn yaml_to_json(value: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Yaml;
    match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(flag) => Value::Bool(flag),
        Yaml::Number(number) => {
            if let Some(integer) = number.as_i64() {
                Value::from(integer)
            } else if let Some(integer) = number.as_u64() {
                Value::from(integer)
            } else {
                number
                    .as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Yaml::String(text) => Value::String(text),
        Yaml::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Yaml::Mapping(mapping) => {
            let mut object = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    Yaml::String(text) => text,
                    Yaml::Number(number) => number.to_string(),
                    Yaml::Bool(flag) => flag.to_string(),
                    Yaml::Null => "null".to_string(),
                    _ => continue,
                };
                object.insert(key, yaml_to_json(value));
            }
            Value::Object(object)
        }
        Yaml::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

fn flavor(doc: &Map<String, Value>) -> Result<Flavor, SpecError> {
    // YAML reads an unquoted `openapi: 3.1` or `swagger: 2.0` as a number.
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if let Some(version) = doc.get("openapi").map(text) {
        let minor_supported = ["3.0", "3.1"]
            .iter()
            .any(|minor| version == *minor || version.starts_with(&format!("{minor}.")));
        return match minor_supported {
            true => Ok(Flavor::OpenApi3),
            false => Err(SpecError::UnsupportedVersion(format!("openapi {version}"))),
        };
    }
    if let Some(version) = doc.get("swagger").map(text) {
        return match version.as_str() {
            "2.0" | "2" => Ok(Flavor::Swagger2),
            _ => Err(SpecError::UnsupportedVersion(format!("swagger {version}"))),
        };
    }
    Err(SpecError::NoVersion)
}

/// The methods of a path item, and its own base paths when it has `servers` (OpenAPI 3).
fn read_path_item(
    root: &Value,
    template: &str,
    item: &Value,
    flavor: Flavor,
) -> Result<(MethodSet, Option<Vec<BasePath>>), SpecError> {
    let bad_item = |reason: String| SpecError::BadPathItem {
        template: template.to_string(),
        reason,
    };
    let mut methods = MethodSet::EMPTY;
    let mut servers: Option<Vec<BasePath>> = None;
    let mut item = item;
    for _ in 0..MAX_REF_DEPTH {
        let Value::Object(fields) = item else {
            return Err(bad_item("a path item must be an object".into()));
        };
        for (key, operation) in fields {
            let Some(method) = Method::from_path_item_key(key) else {
                continue;
            };
            methods = methods.with(method);
            // Operation-level servers add base paths for the whole path item: a slight
            // over-approximation that never refuses a declared operation.
            if flavor == Flavor::OpenApi3 {
                if let Some(declared) = operation.get("servers") {
                    let context = format!("paths.{template}.{key}.servers");
                    let extra = servers_base_paths(Some(declared), &context)?;
                    let mut merged = servers.take().unwrap_or_default();
                    merged.extend(extra);
                    servers = Some(merged);
                }
            }
        }
        if flavor == Flavor::OpenApi3 {
            if let Some(declared) = fields.get("servers") {
                let context = format!("paths.{template}.servers");
                let mut own = servers_base_paths(Some(declared), &context)?;
                own.extend(servers.take().unwrap_or_default());
                servers = Some(own);
            }
        }
        let Some(reference) = fields.get("$ref") else {
            return Ok((methods, servers));
        };
        let Value::String(reference) = reference else {
            return Err(bad_item("`$ref` must be a string".into()));
        };
        let Some(fragment) = reference.strip_prefix('#') else {
            // Another file or a URL: its methods cannot be known here, and refusing a
            // declared path would break the API, so every method is allowed.
            return Ok((MethodSet::ANY, servers));
        };
        let pointer = String::from_utf8_lossy(&percent_decode(fragment.as_bytes())).into_owned();
        item = root
            .pointer(&pointer)
            .ok_or_else(|| bad_item(format!("`$ref` {reference:?} points to nothing")))?;
    }
    Err(bad_item(format!(
        "`$ref` chain longer than {MAX_REF_DEPTH} (circular?)"
    )))
}

/// Base paths of an OpenAPI 3 `servers` list. Absent or empty means the root.
fn servers_base_paths(servers: Option<&Value>, context: &str) -> Result<Vec<BasePath>, SpecError> {
    let servers = match servers {
        None | Some(Value::Null) => return Ok(vec![root_base_path()]),
        Some(Value::Array(servers)) if servers.is_empty() => return Ok(vec![root_base_path()]),
        Some(Value::Array(servers)) => servers,
        Some(_) => {
            return Err(SpecError::InvalidField(format!(
                "`{context}` must be a list"
            )))
        }
    };
    let mut base_paths: Vec<BasePath> = Vec::new();
    for (index, server) in servers.iter().enumerate() {
        let Some(Value::String(url)) = server.get("url") else {
            return Err(SpecError::InvalidField(format!(
                "`{context}[{index}]` has no `url` string"
            )));
        };
        let variables = server.get("variables").and_then(Value::as_object);
        for path in expand_variables(url_path(url), variables, url)? {
            let base_path = base_path(&path).map_err(|reason| SpecError::BadServerUrl {
                url: url.clone(),
                reason,
            })?;
            if !base_paths.contains(&base_path) {
                base_paths.push(base_path);
            }
        }
        if base_paths.len() > MAX_BASE_PATHS {
            return Err(SpecError::BadServerUrl {
                url: url.clone(),
                reason: format!("the servers give more than {MAX_BASE_PATHS} base paths"),
            });
        }
    }
    Ok(base_paths)
}

fn swagger_base_path(base_path_field: Option<&Value>) -> Result<Vec<BasePath>, SpecError> {
    match base_path_field {
        None | Some(Value::Null) => Ok(vec![root_base_path()]),
        Some(Value::String(text)) => {
            let path = url_path(text);
            Ok(vec![base_path(path).map_err(|reason| {
                SpecError::BadServerUrl {
                    url: text.clone(),
                    reason,
                }
            })?])
        }
        Some(_) => Err(SpecError::InvalidField(
            "`basePath` must be a string".into(),
        )),
    }
}

fn root_base_path() -> BasePath {
    BasePath {
        text: String::new(),
        segments: Vec::new(),
    }
}

/// The path part of a server URL: after `scheme://authority` or `//authority`, before any
/// query or fragment. A relative URL is relative to where the spec is served, taken to be
/// the root (`/openapi.json`), so "v1" is "/v1".
fn url_path(url: &str) -> &str {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    let after_authority = |rest: &'_ str| -> usize {
        let path_start = rest.find('/').unwrap_or(rest.len());
        url.len() - rest.len() + path_start
    };
    let start = match url.find("://") {
        Some(index) => after_authority(&url[index + 3..]),
        None if url.starts_with("//") => after_authority(&url[2..]),
        None => 0,
    };
    &url[start..]
}

/// Substitutes server variables in a URL path: each variable takes every value of its
/// `enum` and its `default`. A variable the server does not define stays `{name}` and
/// becomes a parameter segment.
fn expand_variables(
    path: &str,
    variables: Option<&Map<String, Value>>,
    url: &str,
) -> Result<Vec<String>, SpecError> {
    let mut expanded = vec![String::new()];
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|close| open + close) else {
            break;
        };
        let name = &rest[open + 1..close];
        let values = variables
            .and_then(|variables| variables.get(name))
            .map(variable_values)
            .filter(|values| !values.is_empty())
            .unwrap_or_else(|| vec![format!("{{{name}}}")]);
        let literal = &rest[..open];
        expanded = expanded
            .iter()
            .flat_map(|prefix| {
                values
                    .iter()
                    .map(move |value| format!("{prefix}{literal}{value}"))
            })
            .collect();
        if expanded.len() > MAX_BASE_PATHS {
            return Err(SpecError::BadServerUrl {
                url: url.to_string(),
                reason: format!("its variables give more than {MAX_BASE_PATHS} base paths"),
            });
        }
        rest = &rest[close + 1..];
    }
    Ok(expanded.into_iter().map(|prefix| prefix + rest).collect())
}

fn variable_values(variable: &Value) -> Vec<String> {
    let text = |value: &Value| match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    };
    let mut values: Vec<String> = variable
        .get("enum")
        .and_then(Value::as_array)
        .map(|values| values.iter().filter_map(text).collect())
        .unwrap_or_default();
    if let Some(default) = variable.get("default").and_then(text) {
        if !values.contains(&default) {
            values.push(default);
        }
    }
    values
}

/// Parses a base path; "", "/" and "." are the root. Dot segments are resolved.
fn base_path(path: &str) -> Result<BasePath, String> {
    let mut kept: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            segment => kept.push(segment),
        }
    }
    let text = kept
        .iter()
        .fold(String::new(), |text, segment| text + "/" + segment);
    let segments = parse_template(if text.is_empty() { "/" } else { &text })?;
    Ok(BasePath { text, segments })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_path_takes_the_path_of_absolute_and_relative_urls() {
        assert_eq!(url_path("https://api.example.com/v1"), "/v1");
        assert_eq!(url_path("https://api.example.com"), "");
        assert_eq!(
            url_path("{scheme}://example.org:8080/ds-api?x=1"),
            "/ds-api"
        );
        assert_eq!(url_path("//cdn.example.com/api/"), "/api/");
        assert_eq!(url_path("/api/v3"), "/api/v3");
        assert_eq!(url_path("v1"), "v1");
    }

    #[test]
    fn base_paths_resolve_dots_and_the_root() {
        assert_eq!(base_path("v1").unwrap().text, "/v1");
        assert_eq!(base_path("/").unwrap().text, "");
        assert_eq!(base_path("./api/../v2/").unwrap().text, "/v2");
    }

    #[test]
    fn server_variables_expand_to_enum_and_default() {
        let variables = serde_json::json!({
            "version": {"default": "v2", "enum": ["v1", "v2"]},
            "tenant": {"default": "acme"}
        });
        let paths =
            expand_variables("/{version}/{tenant}/{undefined}", variables.as_object(), "").unwrap();
        assert_eq!(paths, ["/v1/acme/{undefined}", "/v2/acme/{undefined}"]);
    }
}
