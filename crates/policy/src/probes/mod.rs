//! The probe-path blocklist: recognises scanner traffic (`/.env`, `/wp-login.php`,
//! `/cgi-bin/.%2e/.%2e/bin/sh`, `User-Agent: sqlmap`, ...) so it never reaches the upstream.
//!
//! A [`ProbeMatcher`] is built once from [`ProbeSettings`] (the `[probes]` config section) and
//! is immutable and `Send + Sync` afterwards. [`ProbeMatcher::check`] canonicalizes the path
//! (see [`canonicalize`]) and then runs every literal rule in one Aho-Corasick pass and every
//! regex rule in one `RegexSet`, so the cost barely grows with the number of rules.
//! Only the path and the `User-Agent` are matched, never the query string.
//!
//! The user documentation, with the full built-in list, is `docs/probes.md`.

mod canonical;
mod data;

use std::cell::RefCell;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::bytes::{RegexBuilder, RegexSet, RegexSetBuilder};
use serde::Deserialize;

pub use canonical::{canonicalize, Canonical};
pub use data::{builtin_entries, AgentKind, BuiltinAgent, BuiltinList, BuiltinRule, RuleKind};

use canonical::{canonicalize_into, Flags, Scratch};

/// The `[probes]` section of the configuration, minus `action` (which the proxy applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Use the curated built-in list (`builtin`, default true).
    pub builtin: bool,
    /// Extra exact paths (`paths`); a trailing `/` is ignored when matching.
    pub paths: Vec<String>,
    /// Extra path prefixes (`prefixes`), plain string prefixes of the canonical path.
    pub prefixes: Vec<String>,
    /// Extra regexes on the canonical path (`regex`), case-insensitive, unanchored.
    pub regex: Vec<String>,
    /// Extra regexes on the `User-Agent` header (`user_agents`), case-insensitive, unanchored.
    pub user_agents: Vec<String>,
    /// Path prefixes never treated as probes (`allow`), e.g. `/.well-known/acme-challenge/`.
    pub allow: Vec<String>,
}

impl Default for ProbeSettings {
    /// The built-in list and nothing else.
    fn default() -> Self {
        ProbeSettings {
            builtin: true,
            paths: Vec::new(),
            prefixes: Vec::new(),
            regex: Vec::new(),
            user_agents: Vec::new(),
            allow: Vec::new(),
        }
    }
}

/// The family a probe belongs to; [`Category::as_str`] is its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Secrets, credentials and dotfiles (`/.env`, `/.aws/credentials`, `/.ssh/id_rsa`).
    Secrets,
    /// Version-control metadata (`/.git/config`, `/.svn/entries`).
    VersionControl,
    /// WordPress and other CMS entry points (`/wp-login.php`, `/xmlrpc.php`).
    Cms,
    /// PHP admin panels, PHP exploits and web shells (`/phpmyadmin/`, `eval-stdin.php`).
    PhpAdmin,
    /// CGI scripts and router, IoT and appliance exploits (`/cgi-bin/`, `/boaform/`).
    CgiIot,
    /// Java and application-server consoles (`/manager/html`, `/actuator/env`).
    JavaConsole,
    /// Backups, dumps and editor leftovers (`/backup.zip`, `/db.sql`, `index.php.bak`).
    Backups,
    /// Path traversal and encoding tricks (climbing above `/`, double encoding, NUL bytes).
    Traversal,
    /// A known scanner's `User-Agent`.
    ScannerAgent,
    /// A rule from the `paths`, `prefixes`, `regex` or `user_agents` settings.
    Custom,
}

impl Category {
    /// Every category, in documentation order.
    pub const ALL: [Category; 10] = [
        Category::Secrets,
        Category::VersionControl,
        Category::Cms,
        Category::PhpAdmin,
        Category::CgiIot,
        Category::JavaConsole,
        Category::Backups,
        Category::Traversal,
        Category::ScannerAgent,
        Category::Custom,
    ];

    /// The snake_case label used in metrics, logs and the data file.
    pub fn as_str(&self) -> &'static str {
        match self {
            Category::Secrets => "secrets",
            Category::VersionControl => "version_control",
            Category::Cms => "cms",
            Category::PhpAdmin => "php_admin",
            Category::CgiIot => "cgi_iot",
            Category::JavaConsole => "java_console",
            Category::Backups => "backups",
            Category::Traversal => "traversal",
            Category::ScannerAgent => "scanner_agent",
            Category::Custom => "custom",
        }
    }

    /// One line describing the family, for the docs.
    pub fn description(&self) -> &'static str {
        match self {
            Category::Secrets => "Secrets, credentials, dotfiles and logs",
            Category::VersionControl => "Version-control metadata",
            Category::Cms => "WordPress and other CMS entry points",
            Category::PhpAdmin => "PHP admin panels, PHP exploits and web shells",
            Category::CgiIot => "CGI scripts, router, IoT and appliance exploits",
            Category::JavaConsole => "Java and application-server consoles, expression injection",
            Category::Backups => "Backups, dumps and editor leftovers",
            Category::Traversal => "Path traversal and encoding tricks",
            Category::ScannerAgent => "Known scanner user agents",
            Category::Custom => {
                "Rules from the `paths`, `prefixes`, `regex`, `user_agents` settings"
            }
        }
    }
}

/// Why a request was recognised as a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeHit {
    /// The family (metric label via [`Category::as_str`]).
    pub category: Category,
    /// The rule's one-line reason, or "custom path", "custom regex", ... for custom rules.
    pub reason: &'static str,
    /// The pattern that matched (canonical form), or the name of the structural check
    /// (`<climbs above root>`, `<double encoding>`, ...), for logs.
    pub rule: Arc<str>,
}

/// A setting the matcher cannot be built from. The message names the list and the index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// One entry of a list is invalid (bad regex, path not starting with `/`, empty pattern).
    #[error("probes.{list}[{index}] {pattern:?}: {message}")]
    InvalidEntry {
        /// The setting: `paths`, `prefixes`, `regex`, `user_agents` or `allow`.
        list: &'static str,
        /// Zero-based position in that list.
        index: usize,
        /// The entry as written.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// Every entry is valid alone but together they exceed the regex engine's size limit.
    #[error("probes.{list}: the regexes together are too large: {message}")]
    TooLarge {
        /// The setting: `regex` or `user_agents`.
        list: &'static str,
        /// The engine's message.
        message: String,
    },
    /// The shipped built-in list is broken (a build defect, caught by unit tests).
    #[error("the built-in probe list is invalid: {0}")]
    Builtin(String),
}

/// Where a literal must sit in the canonical path for it to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    /// The whole path, ignoring one trailing '/'.
    Exact,
    /// The start of the path.
    Prefix,
    /// Stored with a leading '/', must end at a '/' or the end of the path.
    Segment,
    /// The end of the path.
    Suffix,
    /// Anywhere.
    Contains,
    /// An allow-list prefix: exempts the path.
    Allow,
}

/// What a pattern in one of the automata or regex sets stands for.
#[derive(Debug, Clone)]
struct RuleInfo {
    category: Category,
    reason: &'static str,
    rule: Arc<str>,
}

/// Compiled probe rules. Immutable after [`ProbeMatcher::new`]; share it behind an `Arc`.
#[derive(Debug)]
pub struct ProbeMatcher {
    /// Exact, prefix, segment, suffix, contains and allow literals, all in one automaton.
    path_literals: Option<AhoCorasick>,
    path_literal_rules: Vec<(Anchor, RuleInfo)>,
    path_regexes: Option<RegexSet>,
    path_regex_rules: Vec<RuleInfo>,
    agent_literals: Option<AhoCorasick>,
    agent_literal_rules: Vec<RuleInfo>,
    agent_regexes: Option<RegexSet>,
    agent_regex_rules: Vec<RuleInfo>,
    /// The structural checks belong to the built-in protection: off when `builtin = false`.
    structural: Option<StructuralHits>,
    rule_count: usize,
}

/// Pre-built hits for the checks canonicalization performs, so a hit costs no allocation.
#[derive(Debug)]
struct StructuralHits {
    climbs_above_root: ProbeHit,
    double_encoded: ProbeHit,
    evasive_dot_segment: ProbeHit,
    control_byte: ProbeHit,
}

impl StructuralHits {
    fn new() -> Self {
        let hit = |rule: &str, reason: &'static str| ProbeHit {
            category: Category::Traversal,
            reason,
            rule: Arc::from(rule),
        };
        StructuralHits {
            climbs_above_root: hit(
                "<climbs above root>",
                "More '..' segments than path segments: an attempt to leave the document root",
            ),
            double_encoded: hit(
                "<double encoding>",
                "'.', '/', '\\' or '%' hidden under two levels of percent-encoding to evade filters",
            ),
            evasive_dot_segment: hit(
                "<disguised dot segment>",
                "A '..' segment disguised by percent-encoding, backslashes or ';' parameters",
            ),
            control_byte: hit(
                "<control byte>",
                "NUL, CR, LF or another control byte in the decoded path (truncation or header injection)",
            ),
        }
    }

    /// Structural checks run before the allow list: no legitimate request needs them.
    fn check(&self, flags: Flags) -> Option<&ProbeHit> {
        if flags.climbs_above_root {
            Some(&self.climbs_above_root)
        } else if flags.double_encoded {
            Some(&self.double_encoded)
        } else if flags.evasive_dot_segment {
            Some(&self.evasive_dot_segment)
        } else if flags.control_byte {
            Some(&self.control_byte)
        } else {
            None
        }
    }
}

/// Regex sets are large with thousands of custom patterns; these limits are generous so that
/// the `TooLarge` error means something pathological.
const REGEX_SIZE_LIMIT: usize = 256 * 1024 * 1024;
const REGEX_DFA_SIZE_LIMIT: usize = 64 * 1024 * 1024;

fn regex_builder(pattern: &str) -> RegexBuilder {
    let mut builder = RegexBuilder::new(pattern);
    builder
        .case_insensitive(true)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT);
    builder
}

fn regex_set(patterns: &[String], list: &'static str) -> Result<Option<RegexSet>, ProbeError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    RegexSetBuilder::new(patterns)
        .case_insensitive(true)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .build()
        .map(Some)
        .map_err(|e| ProbeError::TooLarge {
            list,
            message: e.to_string(),
        })
}

fn automaton(
    patterns: &[Vec<u8>],
    match_kind: MatchKind,
    ascii_case_insensitive: bool,
    list: &'static str,
) -> Result<Option<AhoCorasick>, ProbeError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    // Building only fails past size limits far beyond any sane config.
    AhoCorasick::builder()
        .match_kind(match_kind)
        .ascii_case_insensitive(ascii_case_insensitive)
        .build(patterns)
        .map(Some)
        .map_err(|e| ProbeError::TooLarge {
            list,
            message: e.to_string(),
        })
}

/// Collects rules while building.
#[derive(Default)]
struct Builder {
    path_literals: Vec<Vec<u8>>,
    path_literal_rules: Vec<(Anchor, RuleInfo)>,
    path_regexes: Vec<String>,
    path_regex_rules: Vec<RuleInfo>,
    agent_literals: Vec<Vec<u8>>,
    agent_literal_rules: Vec<RuleInfo>,
    agent_regexes: Vec<String>,
    agent_regex_rules: Vec<RuleInfo>,
}

impl Builder {
    fn literal(
        &mut self,
        anchor: Anchor,
        bytes: Vec<u8>,
        category: Category,
        reason: &'static str,
    ) {
        let rule = Arc::from(String::from_utf8_lossy(&bytes).as_ref());
        self.path_literals.push(bytes);
        self.path_literal_rules.push((
            anchor,
            RuleInfo {
                category,
                reason,
                rule,
            },
        ));
    }

    fn add_builtin(&mut self, list: &'static BuiltinList) -> Result<(), ProbeError> {
        for (index, rule) in list.rules.iter().enumerate() {
            let reason = rule.reason.as_str();
            let pattern = rule.pattern.as_bytes();
            match rule.kind {
                RuleKind::Exact => {
                    let trimmed = trim_trailing_slash(pattern);
                    self.literal(Anchor::Exact, trimmed.to_vec(), rule.category, reason)
                }
                RuleKind::Prefix => {
                    self.literal(Anchor::Prefix, pattern.to_vec(), rule.category, reason)
                }
                RuleKind::Suffix => {
                    self.literal(Anchor::Suffix, pattern.to_vec(), rule.category, reason)
                }
                RuleKind::Contains => {
                    self.literal(Anchor::Contains, pattern.to_vec(), rule.category, reason)
                }
                RuleKind::Segment => {
                    let inner = rule.pattern.trim_matches('/');
                    self.literal(
                        Anchor::Segment,
                        format!("/{inner}").into_bytes(),
                        rule.category,
                        reason,
                    )
                }
                RuleKind::Regex => {
                    regex_builder(&rule.pattern).build().map_err(|e| {
                        ProbeError::Builtin(format!("rule[{index}] {:?}: {e}", rule.pattern))
                    })?;
                    self.path_regexes.push(rule.pattern.clone());
                    self.path_regex_rules.push(RuleInfo {
                        category: rule.category,
                        reason,
                        rule: Arc::from(rule.pattern.as_str()),
                    });
                }
            }
        }
        for (index, agent) in list.user_agents.iter().enumerate() {
            let info = RuleInfo {
                category: Category::ScannerAgent,
                reason: agent.reason.as_str(),
                rule: Arc::from(agent.pattern.as_str()),
            };
            match agent.kind {
                AgentKind::Contains => {
                    // Matched against the lower-cased header (see `check_agent`).
                    self.agent_literals
                        .push(agent.pattern.to_ascii_lowercase().into_bytes());
                    self.agent_literal_rules.push(info);
                }
                AgentKind::Regex => {
                    regex_builder(&agent.pattern).build().map_err(|e| {
                        ProbeError::Builtin(format!("user_agent[{index}] {:?}: {e}", agent.pattern))
                    })?;
                    self.agent_regexes.push(agent.pattern.clone());
                    self.agent_regex_rules.push(info);
                }
            }
        }
        Ok(())
    }

    fn add_custom_paths(
        &mut self,
        list: &'static str,
        entries: &[String],
        anchor: Anchor,
        reason: &'static str,
    ) -> Result<(), ProbeError> {
        for (index, entry) in entries.iter().enumerate() {
            let invalid = |message: &str| ProbeError::InvalidEntry {
                list,
                index,
                pattern: entry.clone(),
                message: message.to_string(),
            };
            if !entry.starts_with('/') {
                return Err(invalid("must start with '/'"));
            }
            if entry.contains(['?', '#']) {
                return Err(invalid(
                    "must not contain '?' or '#': only the path is matched",
                ));
            }
            // Patterns go through the same canonicalization as requests, so `/Admin//x` and
            // `/admin/x` are the same rule.
            let canonical = canonicalize(entry.as_bytes()).path;
            let bytes = match anchor {
                Anchor::Exact => trim_trailing_slash(&canonical).to_vec(),
                _ => canonical,
            };
            if anchor == Anchor::Prefix && bytes == b"/" {
                return Err(invalid("the prefix \"/\" would block every request"));
            }
            self.literal(anchor, bytes, Category::Custom, reason);
        }
        Ok(())
    }

    fn add_custom_regexes(
        list: &'static str,
        entries: &[String],
        reason: &'static str,
        patterns: &mut Vec<String>,
        rules: &mut Vec<RuleInfo>,
    ) -> Result<(), ProbeError> {
        for (index, entry) in entries.iter().enumerate() {
            let invalid = |message: String| ProbeError::InvalidEntry {
                list,
                index,
                pattern: entry.clone(),
                message,
            };
            if entry.is_empty() {
                return Err(invalid(
                    "an empty regex would match every request".to_string(),
                ));
            }
            let compiled = regex_builder(entry)
                .build()
                .map_err(|e| invalid(e.to_string()))?;
            if compiled.is_match(b"") {
                return Err(invalid(
                    "matches the empty string, so it would match every request".to_string(),
                ));
            }
            patterns.push(entry.clone());
            rules.push(RuleInfo {
                category: Category::Custom,
                reason,
                rule: Arc::from(entry.as_str()),
            });
        }
        Ok(())
    }
}

fn trim_trailing_slash(path: &[u8]) -> &[u8] {
    match path {
        [rest @ .., b'/'] if !rest.is_empty() => rest,
        _ => path,
    }
}

thread_local! {
    /// Per-thread canonicalization buffers: `check` does not allocate once they are warm.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl ProbeMatcher {
    /// Compiles the built-in list (if enabled) and the custom rules.
    ///
    /// Errors name the offending list and index, e.g. `probes.regex[3] "(": ...`.
    pub fn new(settings: &ProbeSettings) -> Result<ProbeMatcher, ProbeError> {
        let mut builder = Builder::default();
        if settings.builtin {
            builder.add_builtin(builtin_entries()?)?;
        }
        builder.add_custom_paths("paths", &settings.paths, Anchor::Exact, "custom path")?;
        builder.add_custom_paths(
            "prefixes",
            &settings.prefixes,
            Anchor::Prefix,
            "custom prefix",
        )?;
        Builder::add_custom_regexes(
            "regex",
            &settings.regex,
            "custom regex",
            &mut builder.path_regexes,
            &mut builder.path_regex_rules,
        )?;
        Builder::add_custom_regexes(
            "user_agents",
            &settings.user_agents,
            "custom user agent",
            &mut builder.agent_regexes,
            &mut builder.agent_regex_rules,
        )?;
        let block_literals = builder.path_literal_rules.len();
        for (index, entry) in settings.allow.iter().enumerate() {
            if !entry.starts_with('/') {
                return Err(ProbeError::InvalidEntry {
                    list: "allow",
                    index,
                    pattern: entry.clone(),
                    message: "must start with '/'".to_string(),
                });
            }
            let canonical = canonicalize(entry.as_bytes()).path;
            builder.literal(Anchor::Allow, canonical, Category::Custom, "allow");
        }

        let rule_count = block_literals
            + builder.path_regex_rules.len()
            + builder.agent_literal_rules.len()
            + builder.agent_regex_rules.len();
        Ok(ProbeMatcher {
            // Standard semantics, searched overlapping: every occurrence is seen, so a literal
            // failing its anchor cannot hide another that passes.
            path_literals: automaton(
                &builder.path_literals,
                MatchKind::Standard,
                false,
                "paths/prefixes/allow",
            )?,
            path_literal_rules: builder.path_literal_rules,
            path_regexes: regex_set(&builder.path_regexes, "regex")?,
            path_regex_rules: builder.path_regex_rules,
            agent_literals: automaton(
                &builder.agent_literals,
                MatchKind::LeftmostFirst,
                // Patterns are lower case and so is the searched header: a case-sensitive
                // automaton can use its fast prefilters, a case-insensitive one mostly cannot.
                false,
                "user_agents",
            )?,
            agent_literal_rules: builder.agent_literal_rules,
            agent_regexes: regex_set(&builder.agent_regexes, "user_agents")?,
            agent_regex_rules: builder.agent_regex_rules,
            structural: settings.builtin.then(StructuralHits::new),
            rule_count,
        })
    }

    /// Number of blocking rules (path and user-agent, built-in and custom; the four structural
    /// checks and the allow list are not counted).
    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// Decides whether a request is a probe.
    ///
    /// `raw_path` is the request target's path as received, optionally followed by `?query`
    /// (ignored). `user_agent` is the raw `User-Agent` header, if any. Returns the first rule
    /// that matched, or `None` for a request that may proceed.
    pub fn check(&self, raw_path: &[u8], user_agent: Option<&[u8]>) -> Option<ProbeHit> {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                let flags = canonicalize_into(raw_path, &mut scratch);
                let Scratch { out, agent, .. } = &mut *scratch;
                let hit = self.check_canonical(out, flags, user_agent, agent);
                scratch.trim();
                hit
            }
            // Only reachable if `check` were re-entered on this thread; stay correct anyway.
            Err(_) => {
                let mut scratch = Scratch::default();
                let flags = canonicalize_into(raw_path, &mut scratch);
                let Scratch { out, agent, .. } = &mut scratch;
                self.check_canonical(out, flags, user_agent, agent)
            }
        })
    }

    fn check_canonical(
        &self,
        path: &[u8],
        flags: Flags,
        user_agent: Option<&[u8]>,
        agent_lowercase: &mut Vec<u8>,
    ) -> Option<ProbeHit> {
        if let Some(hit) = self.structural.as_ref().and_then(|s| s.check(flags)) {
            return Some(hit.clone());
        }
        let mut literal_hit: Option<&RuleInfo> = None;
        if let Some(automaton) = &self.path_literals {
            for found in automaton.find_overlapping_iter(path) {
                let (anchor, info) = &self.path_literal_rules[found.pattern().as_usize()];
                let (start, end) = (found.start(), found.end());
                let matched = match anchor {
                    Anchor::Exact => {
                        start == 0
                            && (end == path.len() || (end + 1 == path.len() && path[end] == b'/'))
                    }
                    Anchor::Prefix => start == 0,
                    Anchor::Segment => end == path.len() || path[end] == b'/',
                    Anchor::Suffix => end == path.len(),
                    Anchor::Contains => true,
                    Anchor::Allow => {
                        if start == 0 {
                            return None;
                        }
                        false
                    }
                };
                if matched && literal_hit.is_none() {
                    literal_hit = Some(info);
                }
            }
        }
        if let Some(info) = literal_hit {
            return Some(info.to_hit());
        }
        if let Some(hit) = first_regex_hit(self.path_regexes.as_ref(), &self.path_regex_rules, path)
        {
            return Some(hit);
        }
        let agent = user_agent.filter(|agent| !agent.is_empty())?;
        if let Some(automaton) = &self.agent_literals {
            agent_lowercase.clear();
            agent_lowercase.extend(agent.iter().map(u8::to_ascii_lowercase));
            if let Some(found) = automaton.find(agent_lowercase.as_slice()) {
                return Some(self.agent_literal_rules[found.pattern().as_usize()].to_hit());
            }
        }
        first_regex_hit(self.agent_regexes.as_ref(), &self.agent_regex_rules, agent)
    }
}

/// The first rule of `set` matching `haystack`. `is_match` runs first because it can stop at
/// the first match, and almost all requests match nothing.
fn first_regex_hit(
    set: Option<&RegexSet>,
    rules: &[RuleInfo],
    haystack: &[u8],
) -> Option<ProbeHit> {
    let set = set?;
    if !set.is_match(haystack) {
        return None;
    }
    let index = set.matches(haystack).iter().next()?;
    Some(rules[index].to_hit())
}

impl RuleInfo {
    fn to_hit(&self) -> ProbeHit {
        ProbeHit {
            category: self.category,
            reason: self.reason,
            rule: Arc::clone(&self.rule),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(settings: ProbeSettings) -> ProbeMatcher {
        ProbeMatcher::new(&settings).expect("valid settings")
    }

    fn builtin() -> ProbeMatcher {
        matcher(ProbeSettings::default())
    }

    #[test]
    fn matcher_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ProbeMatcher>();
    }

    #[test]
    fn category_labels_are_snake_case_and_distinct() {
        let labels: std::collections::HashSet<_> =
            Category::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels.len(), Category::ALL.len());
        for label in labels {
            assert!(
                label.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{label}"
            );
        }
    }

    #[test]
    fn bypass_attempts_on_dotenv_are_all_caught() {
        let m = builtin();
        for raw in [
            "/.env",
            "/%2e%65nv",
            "//.env",
            "/./.env",
            "/foo/../.env",
            "/.ENV",
            "/.env;x=1",
            "\\.env",
            "/%252eenv",
            "/app/.env",
            "/.env?x=1",
            "/.env/",
            "/.Env%3Bx",
        ] {
            let hit = m.check(raw.as_bytes(), None);
            assert!(hit.is_some(), "{raw} not caught");
        }
        assert_eq!(m.check(b"/.env", None).unwrap().category, Category::Secrets);
    }

    #[test]
    fn structural_checks_are_traversal() {
        let m = builtin();
        for raw in [
            "/%252e%252e/%252e%252e/etc/passwd",
            "/cgi-bin/.%2e/.%2e/.%2e/.%2e/bin/sh",
            "/../../x",
            "/api/..;/admin",
            "/img/x.png%00.php",
        ] {
            let hit = m
                .check(raw.as_bytes(), None)
                .unwrap_or_else(|| panic!("{raw} passed"));
            assert_eq!(hit.category, Category::Traversal, "{raw}: {hit:?}");
        }
    }

    #[test]
    fn segment_rules_respect_segment_boundaries() {
        let m = builtin();
        assert!(m.check(b"/.envelope", None).is_none());
        assert!(m.check(b"/blog/how-to-use-dotenv-files", None).is_none());
        assert!(m.check(b"/api/.git/HEAD", None).is_some());
        assert!(m.check(b"/api/.github-stars", None).is_none());
    }

    #[test]
    fn query_strings_are_not_matched() {
        let m = builtin();
        assert!(m.check(b"/api/v1/search?q=.env", None).is_none());
        assert!(m
            .check(b"/api/v1/search?q=/etc/passwd&x=../../..", None)
            .is_none());
    }

    #[test]
    fn custom_rules_match_with_their_reasons() {
        let m = matcher(ProbeSettings {
            builtin: false,
            paths: vec!["/Secret/Door/".into()],
            prefixes: vec!["/internal/".into()],
            regex: vec![r"^/tmp/\d+$".into()],
            user_agents: vec!["evil-?bot".into()],
            allow: vec![],
        });
        assert_eq!(m.rule_count(), 4);
        let hit = m.check(b"/secret/door", None).unwrap();
        assert_eq!(
            (hit.category, hit.reason),
            (Category::Custom, "custom path")
        );
        assert_eq!(&*hit.rule, "/secret/door");
        assert!(m.check(b"/SECRET//door/", None).is_some());
        assert!(
            m.check(b"/secret/door/x", None).is_none(),
            "exact means exact"
        );
        assert_eq!(
            m.check(b"/internal/x", None).unwrap().reason,
            "custom prefix"
        );
        assert!(m.check(b"/internals", None).is_none());
        assert_eq!(m.check(b"/TMP/42", None).unwrap().reason, "custom regex");
        assert!(m.check(b"/tmp/42/x", None).is_none());
        let hit = m.check(b"/", Some(b"Mozilla/5.0 EvilBot/1.0")).unwrap();
        assert_eq!(hit.reason, "custom user agent");
        // Without the built-in list, nothing else is blocked.
        assert!(m.check(b"/.env", Some(b"sqlmap/1.0")).is_none());
    }

    #[test]
    fn allow_list_exempts_rules_but_not_structural_checks() {
        let m = matcher(ProbeSettings {
            allow: vec!["/.well-known/acme-challenge/".into(), "/.git/".into()],
            ..ProbeSettings::default()
        });
        assert!(m.check(b"/.well-known/acme-challenge/abc", None).is_none());
        assert!(m.check(b"/.git/config", Some(b"sqlmap")).is_none());
        assert!(
            m.check(b"/.git", None).is_some(),
            "allow entries are prefixes of the canonical path"
        );
        assert!(m.check(b"/x/.git/config", None).is_some());
        assert!(m
            .check(b"/.well-known/acme-challenge/../../.env", None)
            .is_some());
        assert_eq!(
            m.check(b"/.well-known/acme-challenge/%252e%252e/x", None)
                .unwrap()
                .category,
            Category::Traversal
        );
    }

    #[test]
    fn invalid_settings_name_the_list_and_index() {
        let error = ProbeMatcher::new(&ProbeSettings {
            regex: vec!["^/ok$".into(), "^/fine$".into(), "x".into(), "(".into()],
            ..ProbeSettings::default()
        })
        .unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("probes.regex[3] \"(\":"), "{text}");
        for (settings, expected) in [
            (
                ProbeSettings {
                    paths: vec!["relative".into()],
                    ..Default::default()
                },
                "probes.paths[0]",
            ),
            (
                ProbeSettings {
                    prefixes: vec!["/".into()],
                    ..Default::default()
                },
                "probes.prefixes[0]",
            ),
            (
                ProbeSettings {
                    allow: vec!["x".into()],
                    ..Default::default()
                },
                "probes.allow[0]",
            ),
            (
                ProbeSettings {
                    user_agents: vec!["a".into(), "".into()],
                    ..Default::default()
                },
                "probes.user_agents[1]",
            ),
            (
                ProbeSettings {
                    regex: vec!["a*".into()],
                    ..Default::default()
                },
                "probes.regex[0]",
            ),
            (
                ProbeSettings {
                    paths: vec!["/a?b".into()],
                    ..Default::default()
                },
                "probes.paths[0]",
            ),
        ] {
            let text = ProbeMatcher::new(&settings).unwrap_err().to_string();
            assert!(text.starts_with(expected), "{text}");
        }
    }

    #[test]
    fn builtin_can_be_disabled() {
        let m = matcher(ProbeSettings {
            builtin: false,
            ..Default::default()
        });
        assert_eq!(m.rule_count(), 0);
        assert!(m.check(b"/wp-login.php", Some(b"sqlmap")).is_none());
        // The structural checks are part of the built-in protection.
        assert!(m.check(b"/../x", None).is_none());
    }

    #[test]
    fn hit_reports_builtin_reason() {
        let m = builtin();
        let hit = m.check(b"/wordpress/wp-login.php", None).unwrap();
        assert_eq!(hit.category, Category::Cms);
        assert!(!hit.reason.is_empty());
        let hit = m
            .check(b"/", Some(b"sqlmap/1.7#stable (https://sqlmap.org)"))
            .unwrap();
        assert_eq!(hit.category, Category::ScannerAgent);
    }
}
