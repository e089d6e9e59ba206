//! The built-in probe list: `data/probes.toml`, compiled into the binary and parsed once.

use std::sync::OnceLock;

use serde::Deserialize;

use super::{Category, ProbeError};

/// The built-in list as shipped in `crates/policy/data/probes.toml`.
const BUILTIN_TOML: &str = include_str!("../../data/probes.toml");

/// Where a path rule's pattern must occur in the canonical path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// The whole path (a trailing `/` is ignored).
    Exact,
    /// The start of the path (plain string prefix).
    Prefix,
    /// One or more whole leading segments at an anchor: `.env` matches `/.env` and `/app/.env/`
    /// (`app` is a mount prefix) but not
    /// `/.envelope`.
    Segment,
    /// The end of the path.
    Suffix,
    /// Anywhere in the path.
    Contains,
    /// A regular expression, matched case-insensitively anywhere in the path (anchor with `^`
    /// and `$`).
    Regex,
}

impl RuleKind {
    /// The name used in the data file and the docs.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Exact => "exact",
            RuleKind::Prefix => "prefix",
            RuleKind::Segment => "segment",
            RuleKind::Suffix => "suffix",
            RuleKind::Contains => "contains",
            RuleKind::Regex => "regex",
        }
    }
}

/// How a user-agent rule matches the `User-Agent` header (always case-insensitively).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    /// The pattern occurs anywhere in the header.
    Contains,
    /// A regular expression, matched anywhere in the header.
    Regex,
}

impl AgentKind {
    /// The name used in the data file and the docs.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Contains => "contains",
            AgentKind::Regex => "regex",
        }
    }
}

/// Where a built-in path rule may start in the canonical path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAnchor {
    /// At the start of the path or right after one or two mount prefixes (`/wordpress/`, ...).
    #[default]
    Mount,
    /// At the start of the path only.
    Root,
}

impl RuleAnchor {
    /// The name used in the data file and the docs.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAnchor::Mount => "mount",
            RuleAnchor::Root => "root",
        }
    }
}

/// One built-in path rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinRule {
    /// Which family of probes it belongs to (the metric label).
    pub category: Category,
    /// How the pattern matches at the anchor.
    pub kind: RuleKind,
    /// Where the rule may start (default: the root or after mount prefixes).
    #[serde(default)]
    pub anchor: RuleAnchor,
    /// The pattern, matched against the canonical (lower-case) path.
    pub pattern: String,
    /// One line saying what a scanner hopes to find there.
    pub reason: String,
}

/// One built-in user-agent rule; its category is always [`Category::ScannerAgent`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinAgent {
    /// How the pattern matches.
    #[serde(default = "default_agent_kind")]
    pub kind: AgentKind,
    /// The pattern, matched case-insensitively.
    pub pattern: String,
    /// One line naming the tool.
    pub reason: String,
}

fn default_agent_kind() -> AgentKind {
    AgentKind::Contains
}

/// One built-in payload signature; its category is always [`Category::Signature`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinSignature {
    /// A regex matched case-insensitively anywhere in the canonical path + `?` + decoded query.
    pub pattern: String,
    /// Lower-case literals, one of which every match contains (the cheap prefilter).
    pub needles: Vec<String>,
    /// One line naming the attack.
    pub reason: String,
    /// A real request target carrying the payload.
    pub sample: String,
    /// Where the sample was seen (capture, advisory, write-up).
    pub source: String,
}

/// The whole built-in list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinList {
    /// Path rules, in file order.
    #[serde(rename = "rule")]
    pub rules: Vec<BuiltinRule>,
    /// User-agent rules, in file order.
    #[serde(rename = "user_agent")]
    pub user_agents: Vec<BuiltinAgent>,
    /// Payload signatures, in file order.
    #[serde(rename = "signature", default)]
    pub signatures: Vec<BuiltinSignature>,
}

/// The built-in list, parsed and validated on first use.
///
/// Fails only if the shipped data file is broken, which a unit test rules out.
pub fn builtin_entries() -> Result<&'static BuiltinList, ProbeError> {
    static PARSED: OnceLock<Result<BuiltinList, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| parse(BUILTIN_TOML))
        .as_ref()
        .map_err(|message| ProbeError::Builtin(message.clone()))
}

fn parse(text: &str) -> Result<BuiltinList, String> {
    let mut list: BuiltinList = toml::from_str(text).map_err(|e| e.to_string())?;
    for (index, rule) in list.rules.iter_mut().enumerate() {
        let problem = if rule.reason.trim().is_empty() {
            Some("has no reason")
        } else if rule.pattern.is_empty() {
            Some("has an empty pattern")
        } else if matches!(rule.category, Category::ScannerAgent | Category::Custom) {
            Some("uses a category reserved for user agents or custom rules")
        } else if matches!(rule.category, Category::Signature | Category::Extension) {
            Some("uses a category reserved for signatures or the extension rule")
        } else if matches!(rule.kind, RuleKind::Suffix | RuleKind::Contains) {
            // Built-in rules are anchored where scanners aim; unanchored words cost precision.
            Some("is suffix or contains: built-in rules must be anchored")
        } else if matches!(
            rule.kind,
            RuleKind::Exact | RuleKind::Prefix | RuleKind::Regex
        ) && !rule.pattern.starts_with('/')
        {
            Some("is exact, prefix or regex but does not start with '/'")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(format!("rule[{index}] {:?} {problem}", rule.pattern));
        }
        if rule.kind != RuleKind::Regex {
            // The canonical path is lower case; so are literal patterns.
            rule.pattern.make_ascii_lowercase();
        }
    }
    for (index, agent) in list.user_agents.iter().enumerate() {
        if agent.reason.trim().is_empty() || agent.pattern.is_empty() {
            return Err(format!(
                "user_agent[{index}] {:?} needs a pattern and a reason",
                agent.pattern
            ));
        }
    }
    for (index, signature) in list.signatures.iter_mut().enumerate() {
        if [
            &signature.pattern,
            &signature.reason,
            &signature.sample,
            &signature.source,
        ]
        .iter()
        .any(|field| field.trim().is_empty())
        {
            return Err(format!(
                "signature[{index}] {:?} needs a pattern, needles (non-empty, no '?'), a reason, a sample and a source",
                signature.pattern
            ));
        }
        for needle in &mut signature.needles {
            needle.make_ascii_lowercase();
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_data_parses_and_every_entry_has_a_reason() {
        let list = builtin_entries().expect("built-in probe list parses");
        assert!(list.rules.len() > 50, "only {} rules", list.rules.len());
        assert!(list.user_agents.len() > 10);
        for rule in &list.rules {
            assert!(!rule.reason.trim().is_empty(), "{rule:?}");
            assert!(!rule.reason.contains('\n'), "reason is one line: {rule:?}");
        }
        for agent in &list.user_agents {
            assert!(!agent.reason.trim().is_empty(), "{agent:?}");
        }
    }

    #[test]
    fn every_path_category_is_used() {
        let list = builtin_entries().unwrap();
        for category in Category::ALL {
            if matches!(
                category,
                Category::ScannerAgent
                    | Category::Custom
                    | Category::Signature
                    | Category::Extension
            ) {
                continue;
            }
            assert!(
                list.rules.iter().any(|r| r.category == category),
                "no rule in {category:?}"
            );
        }
    }

    #[test]
    fn no_duplicate_rules() {
        let list = builtin_entries().unwrap();
        let mut seen = std::collections::HashSet::new();
        for rule in &list.rules {
            assert!(
                seen.insert((rule.kind, rule.pattern.clone())),
                "duplicate {rule:?}"
            );
        }
    }

    #[test]
    fn broken_data_is_reported_with_its_index() {
        let text = r#"
            user_agent = []
            [[rule]]
            category = "secrets"
            kind = "exact"
            pattern = ".env"
            reason = "x"
        "#;
        let error = parse(text).unwrap_err();
        assert!(error.contains("rule[0]"), "{error}");
        assert!(parse("rule = 3").is_err());
        let unknown_field = r#"
            user_agent = []
            [[rule]]
            category = "secrets"
            kind = "exact"
            pattern = "/.env"
            reason = "x"
            severity = 3
        "#;
        assert!(parse(unknown_field).is_err());
    }
}
