//! The probe-path blocklist: recognises scanner traffic (`/.env`, `/wp-login.php`,
//! `/cgi-bin/.%2e/.%2e/bin/sh`, `User-Agent: sqlmap`, ...) so it never reaches the upstream.
//!
//! A [`ProbeMatcher`] is built once from [`ProbeSettings`] (the `[probes]` config section) and
//! is immutable and `Send + Sync` afterwards. [`ProbeMatcher::check`] canonicalizes the path
//! (see [`canonicalize`]) and then runs every literal rule in one Aho-Corasick pass and every
//! regex rule in one `RegexSet`, so the cost barely grows with the number of rules.
//!
//! Built-in path rules only count where scanners aim: at the start of the path or right after
//! one or two [`MOUNT_PREFIXES`]. Payload signatures search the canonical path and the decoded
//! query. The `deny_extensions` rule looks at the last segment of short paths.
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
pub use data::{
    builtin_entries, AgentKind, BuiltinAgent, BuiltinList, BuiltinRule, BuiltinSignature,
    RuleAnchor, RuleKind,
};

use canonical::{canonicalize_into, decode_query_into, Flags, Scratch};

/// Directories scanners put in front of an installation (`/wordpress/wp-login.php`,
/// `/api/.env`). A built-in rule also matches after one or two of them. Kept short on purpose:
/// every entry lets probe words one level deeper, and none may be a place where APIs put
/// user-chosen names (`/v2/{name}/...` of a container registry is why `v1`/`v2` are absent).
pub const MOUNT_PREFIXES: [&str; 21] = [
    "admin",
    "api",
    "app",
    "backend",
    "backup",
    "blog",
    "cms",
    "demo",
    "dev",
    "laravel",
    "new",
    "old",
    "public",
    "site",
    "static",
    "test",
    "uploads",
    "web",
    "wordpress",
    "wp",
    "www",
];

/// Default of `deny_extensions`: server-side script files an API gateway's upstream never
/// serves. Not `pl`, `do`, `py`, `sh` (country-code TLDs that appear in domain-name routes), never
/// `json`, `yaml`, `xml`, `txt`.
pub const DEFAULT_DENY_EXTENSIONS: [&str; 14] = [
    "php", "php3", "php4", "php5", "php7", "phtml", "asp", "aspx", "ashx", "asmx", "jsp", "jspx",
    "cgi", "cfm",
];

/// The extension rule only looks at paths of at most this many segments: scanners drop shells
/// near the root (`/x.php`, `/uploads/x.php`), while APIs that address stored files by name
/// (`/repos/{o}/{r}/contents/{path}`, WebDAV) put them deeper.
pub const DENY_EXTENSION_MAX_SEGMENTS: usize = 3;

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
    /// Script-file extensions refused as probes (`deny_extensions`), without the dot, matched
    /// case-insensitively on the last segment of paths of up to
    /// [`DENY_EXTENSION_MAX_SEGMENTS`] segments. `[]` turns the rule off.
    pub deny_extensions: Vec<String>,
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
            deny_extensions: DEFAULT_DENY_EXTENSIONS
                .iter()
                .map(|e| e.to_string())
                .collect(),
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
    /// A payload signature in the path or query (Log4Shell, shell injection, PHP wrappers, ...).
    Signature,
    /// A script file extension from `deny_extensions` (`/x.php`).
    Extension,
    /// A rule from the `paths`, `prefixes`, `regex` or `user_agents` settings.
    Custom,
}

impl Category {
    /// Every category, in documentation order.
    pub const ALL: [Category; 12] = [
        Category::Secrets,
        Category::VersionControl,
        Category::Cms,
        Category::PhpAdmin,
        Category::CgiIot,
        Category::JavaConsole,
        Category::Backups,
        Category::Traversal,
        Category::ScannerAgent,
        Category::Signature,
        Category::Extension,
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
            Category::Signature => "signature",
            Category::Extension => "extension",
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
            Category::Signature => "Payload signatures in the path or query",
            Category::Extension => "Script file extensions from `deny_extensions`",
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
    path_literal_rules: Vec<(Anchor, Option<RuleAnchor>, RuleInfo)>,
    path_regexes: Option<RegexSet>,
    path_regex_rules: Vec<RuleInfo>,
    /// Built-in regexes, each wrapped in `^(?:...)` and run at every anchor of the path.
    builtin_regexes: Option<RegexSet>,
    builtin_regex_rules: Vec<(RuleAnchor, RuleInfo)>,
    signatures: Option<RegexSet>,
    signature_rules: Vec<RuleInfo>,
    /// The signatures' needles: the set only runs when one occurs in the path or query.
    signature_needles: Option<AhoCorasick>,
    /// `deny_extensions`, lower case without the dot, each with its pre-built hit.
    extensions: Vec<(Vec<u8>, ProbeHit)>,
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

/// The signatures' prefilter: a few dozen short needles, asked only "any of them?", so a full
/// DFA (fast, small at this size) with standard semantics that stop at the first match.
fn needle_automaton(needles: &[Vec<u8>]) -> Result<Option<AhoCorasick>, ProbeError> {
    if needles.is_empty() {
        return Ok(None);
    }
    AhoCorasick::builder()
        .match_kind(MatchKind::Standard)
        .kind(Some(aho_corasick::AhoCorasickKind::DFA))
        .build(needles)
        .map(Some)
        .map_err(|e| ProbeError::Builtin(e.to_string()))
}

/// Collects rules while building.
#[derive(Default)]
struct Builder {
    path_literals: Vec<Vec<u8>>,
    path_literal_rules: Vec<(Anchor, Option<RuleAnchor>, RuleInfo)>,
    path_regexes: Vec<String>,
    path_regex_rules: Vec<RuleInfo>,
    builtin_regexes: Vec<String>,
    builtin_regex_rules: Vec<(RuleAnchor, RuleInfo)>,
    signatures: Vec<String>,
    signature_rules: Vec<RuleInfo>,
    signature_needles: Vec<Vec<u8>>,
    agent_literals: Vec<Vec<u8>>,
    agent_literal_rules: Vec<RuleInfo>,
    agent_regexes: Vec<String>,
    agent_regex_rules: Vec<RuleInfo>,
}

impl Builder {
    fn literal(
        &mut self,
        anchor: Anchor,
        at: Option<RuleAnchor>,
        bytes: Vec<u8>,
        category: Category,
        reason: &'static str,
    ) {
        let rule = Arc::from(String::from_utf8_lossy(&bytes).as_ref());
        self.path_literals.push(bytes);
        self.path_literal_rules.push((
            anchor,
            at,
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
            let at = Some(rule.anchor);
            match rule.kind {
                RuleKind::Exact => {
                    let trimmed = trim_trailing_slash(pattern);
                    self.literal(Anchor::Exact, at, trimmed.to_vec(), rule.category, reason)
                }
                RuleKind::Prefix => {
                    self.literal(Anchor::Prefix, at, pattern.to_vec(), rule.category, reason)
                }
                RuleKind::Segment => {
                    let inner = rule.pattern.trim_matches('/');
                    self.literal(
                        Anchor::Segment,
                        at,
                        format!("/{inner}").into_bytes(),
                        rule.category,
                        reason,
                    )
                }
                // Rejected when the data is parsed: built-in rules are anchored.
                RuleKind::Suffix | RuleKind::Contains => {
                    return Err(ProbeError::Builtin(format!(
                        "rule[{index}] {:?} is not anchored",
                        rule.pattern
                    )))
                }
                RuleKind::Regex => {
                    let anchored = format!("^(?:{})", rule.pattern);
                    regex_builder(&anchored).build().map_err(|e| {
                        ProbeError::Builtin(format!("rule[{index}] {:?}: {e}", rule.pattern))
                    })?;
                    self.builtin_regexes.push(anchored);
                    self.builtin_regex_rules.push((
                        rule.anchor,
                        RuleInfo {
                            category: rule.category,
                            reason,
                            rule: Arc::from(rule.pattern.as_str()),
                        },
                    ));
                }
            }
        }
        for (index, signature) in list.signatures.iter().enumerate() {
            regex_builder(&signature.pattern).build().map_err(|e| {
                ProbeError::Builtin(format!("signature[{index}] {:?}: {e}", signature.pattern))
            })?;
            self.signatures.push(signature.pattern.clone());
            for needle in &signature.needles {
                if !self
                    .signature_needles
                    .iter()
                    .any(|n| n == needle.as_bytes())
                {
                    self.signature_needles.push(needle.as_bytes().to_vec());
                }
            }
            self.signature_rules.push(RuleInfo {
                category: Category::Signature,
                reason: signature.reason.as_str(),
                rule: Arc::from(signature.pattern.as_str()),
            });
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
            self.literal(anchor, None, bytes, Category::Custom, reason);
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
            builder.literal(Anchor::Allow, None, canonical, Category::Custom, "allow");
        }
        let mut extensions = Vec::with_capacity(settings.deny_extensions.len());
        for (index, entry) in settings.deny_extensions.iter().enumerate() {
            let ext = entry
                .strip_prefix('.')
                .unwrap_or(entry)
                .to_ascii_lowercase();
            if ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ProbeError::InvalidEntry {
                    list: "deny_extensions",
                    index,
                    pattern: entry.clone(),
                    message: "an extension is letters, digits or '_' (e.g. \"php\")".to_string(),
                });
            }
            let hit = ProbeHit {
                category: Category::Extension,
                reason: "Script file extension the upstream never serves (deny_extensions)",
                rule: Arc::from(format!(".{ext}").as_str()),
            };
            extensions.push((ext.into_bytes(), hit));
        }

        let rule_count = block_literals
            + builder.path_regex_rules.len()
            + builder.builtin_regex_rules.len()
            + builder.signature_rules.len()
            + extensions.len()
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
            builtin_regexes: regex_set(&builder.builtin_regexes, "builtin")?,
            builtin_regex_rules: builder.builtin_regex_rules,
            signatures: regex_set(&builder.signatures, "builtin")?,
            signature_rules: builder.signature_rules,
            // The path is lower case already and the query is lower-cased when decoded.
            signature_needles: needle_automaton(&builder.signature_needles)?,
            extensions,
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
    /// `target` is the raw request target as received: the path, optionally followed by
    /// `?query`. Path rules look at the canonical path; payload signatures also look at the
    /// percent-decoded query. `user_agent` is the raw `User-Agent` header, if any. Returns the
    /// first rule that matched, or `None` for a request that may proceed.
    pub fn check(&self, target: &[u8], user_agent: Option<&[u8]>) -> Option<ProbeHit> {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                let hit = self.check_in(target, user_agent, &mut scratch);
                scratch.trim();
                hit
            }
            // Only reachable if `check` were re-entered on this thread; stay correct anyway.
            Err(_) => self.check_in(target, user_agent, &mut Scratch::default()),
        })
    }

    fn check_in(
        &self,
        target: &[u8],
        user_agent: Option<&[u8]>,
        scratch: &mut Scratch,
    ) -> Option<ProbeHit> {
        let flags = canonicalize_into(target, scratch);
        if let Some(hit) = self.structural.as_ref().and_then(|s| s.check(flags)) {
            return Some(hit.clone());
        }
        if let Some(needles) = &self.signature_needles {
            decode_query_into(target, scratch);
            let Scratch {
                out, query, target, ..
            } = &mut *scratch;
            // No needle holds a '?', so none can span the one joining path and query.
            let suspicious = needles.is_match(out.as_slice()) || needles.is_match(query.as_slice());
            if suspicious {
                target.clear();
                target.extend_from_slice(out);
                if !query.is_empty() {
                    target.push(b'?');
                    target.extend_from_slice(query);
                }
                // Payloads are never legitimate, so like the structural checks they come before
                // the allow list.
                if let Some(hit) =
                    first_regex_hit(self.signatures.as_ref(), &self.signature_rules, target)
                {
                    return Some(hit);
                }
            }
        }
        let Scratch { out, agent, .. } = &mut *scratch;
        self.check_canonical(out, user_agent, agent)
    }

    fn check_canonical(
        &self,
        path: &[u8],
        user_agent: Option<&[u8]>,
        agent_lowercase: &mut Vec<u8>,
    ) -> Option<ProbeHit> {
        let (anchors, anchor_count) = mount_anchors(path);
        let anchors = &anchors[..anchor_count];
        let mut literal_hit: Option<&RuleInfo> = None;
        if let Some(automaton) = &self.path_literals {
            for found in automaton.find_overlapping_iter(path) {
                let (anchor, at, info) = &self.path_literal_rules[found.pattern().as_usize()];
                let (start, end) = (found.start(), found.end());
                let placed = match at {
                    None => start == 0,
                    Some(RuleAnchor::Root) => start == 0,
                    Some(RuleAnchor::Mount) => anchors.contains(&start),
                };
                let matched = match anchor {
                    Anchor::Exact => {
                        placed
                            && (end == path.len() || (end + 1 == path.len() && path[end] == b'/'))
                    }
                    Anchor::Prefix => placed,
                    Anchor::Segment if at.is_some() => {
                        placed && (end == path.len() || path[end] == b'/')
                    }
                    Anchor::Segment => end == path.len() || path[end] == b'/',
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
        if let Some(set) = &self.builtin_regexes {
            for (i, &at) in anchors.iter().enumerate() {
                let tail = &path[at..];
                if !set.is_match(tail) {
                    continue;
                }
                let found = set.matches(tail).into_iter().find(|&index| {
                    i == 0 || self.builtin_regex_rules[index].0 == RuleAnchor::Mount
                });
                if let Some(index) = found {
                    return Some(self.builtin_regex_rules[index].1.to_hit());
                }
            }
        }
        if let Some(hit) = self.extension_hit(path) {
            return Some(hit.clone());
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

    /// The `deny_extensions` hit for the last segment of a short canonical path.
    fn extension_hit(&self, path: &[u8]) -> Option<&ProbeHit> {
        if self.extensions.is_empty() {
            return None;
        }
        let mut segments = path.split(|&b| b == b'/').filter(|s| !s.is_empty());
        if segments.clone().count() > DENY_EXTENSION_MAX_SEGMENTS {
            return None;
        }
        let last = segments.next_back()?;
        let dot = last.iter().rposition(|&b| b == b'.')?;
        let ext = &last[dot + 1..];
        self.extensions
            .iter()
            .find(|(denied, _)| denied.as_slice() == ext)
            .map(|(_, hit)| hit)
    }
}

/// Where built-in rules may start in `path`: 0, then after each of up to two leading mount
/// prefixes (`/wordpress/blog/wp-login.php` gives 0, 10 and 15). Positions point at a '/'.
fn mount_anchors(path: &[u8]) -> ([usize; 3], usize) {
    let mut anchors = [0; 3];
    let mut count = 1;
    let mut at = 0;
    while count < anchors.len() {
        let rest = &path[at + 1..];
        let Some(len) = rest.iter().position(|&b| b == b'/') else {
            break;
        };
        let segment = &rest[..len];
        if !MOUNT_PREFIXES.iter().any(|m| m.as_bytes() == segment) {
            break;
        }
        at += 1 + len;
        anchors[count] = at;
        count += 1;
    }
    (anchors, count)
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
    fn query_words_pass_but_query_payloads_do_not() {
        let m = builtin();
        // Probe words in a query are data (a search box), ...
        assert!(m.check(b"/api/v1/search?q=.env", None).is_none());
        assert!(m.check(b"/api/v1/search?q=/etc/passwd", None).is_none());
        assert!(m.check(b"/api/v1/search?q=wp-login.php", None).is_none());
        // ... payloads are not.
        let hit = m
            .check(b"/api/v1/files?name=../../etc/passwd", None)
            .unwrap();
        assert_eq!(hit.category, Category::Signature);
    }

    #[test]
    fn builtin_rules_are_anchored_at_the_root_or_after_mount_prefixes() {
        let m = builtin();
        for caught in [
            "/.env",
            "/api/.env",
            "/wordpress/wp-login.php",
            "/blog/wp/wp-admin/",
            "/admin/phpmyadmin/",
        ] {
            assert!(m.check(caught.as_bytes(), None).is_some(), "{caught}");
        }
        for passes in [
            "/repos/acme/site/contents/.env.example",
            "/repos/phpmyadmin/phpmyadmin/releases/latest",
            "/v2/library/phpmyadmin/tags/list",
            "/api/v1/files/.git/config",
            "/wordpress/a/b/wp-login.php",
            // Three mount prefixes: only two are skipped.
            "/api/old/new/.env",
        ] {
            assert_eq!(m.check(passes.as_bytes(), None), None, "{passes}");
        }
        // Root-only rules ignore mount prefixes.
        assert!(m.check(b"/config.yml", None).is_some());
        assert!(m.check(b"/api/config.yml", None).is_none());
    }

    #[test]
    fn mount_anchors_stop_at_the_first_other_segment() {
        assert_eq!(
            mount_anchors(b"/wordpress/blog/wp-login.php"),
            ([0, 10, 15], 3)
        );
        assert_eq!(mount_anchors(b"/api"), ([0, 0, 0], 1));
        assert_eq!(mount_anchors(b"/api/"), ([0, 4, 0], 2));
        assert_eq!(mount_anchors(b"/v1/api/x"), ([0, 0, 0], 1));
        assert_eq!(mount_anchors(b"/"), ([0, 0, 0], 1));
    }

    #[test]
    fn deny_extensions_catch_short_script_paths_only() {
        let m = builtin();
        for raw in [
            "/x.php",
            "/lala.PHP",
            "/uploads/a/b.aspx",
            "/%78.php",
            "/x.php;.jpg",
        ] {
            let hit = m
                .check(raw.as_bytes(), None)
                .unwrap_or_else(|| panic!("{raw}"));
            assert!(
                matches!(
                    hit.category,
                    Category::Extension | Category::PhpAdmin | Category::Secrets
                ),
                "{raw}: {hit:?}"
            );
        }
        assert_eq!(
            m.check(b"/x.php", None).unwrap().category,
            Category::Extension
        );
        assert_eq!(&*m.check(b"/x.php", None).unwrap().rule, ".php");
        for raw in [
            "/repos/o/r/contents/wp-config-sample.php",
            "/x.json",
            "/openapi.yaml",
            "/domains/example.pl",
            "/x.phpx",
        ] {
            assert_eq!(m.check(raw.as_bytes(), None), None, "{raw}");
        }
        let off = matcher(ProbeSettings {
            deny_extensions: vec![],
            ..ProbeSettings::default()
        });
        assert_eq!(off.check(b"/x.php", None), None);
        let custom = matcher(ProbeSettings {
            deny_extensions: vec![".Rb".into()],
            ..ProbeSettings::default()
        });
        assert!(custom.check(b"/x.rb", None).is_some());
        assert!(ProbeMatcher::new(&ProbeSettings {
            deny_extensions: vec!["p/hp".into()],
            ..ProbeSettings::default()
        })
        .unwrap_err()
        .to_string()
        .starts_with("probes.deny_extensions[0]"));
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
            deny_extensions: vec![],
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
        assert!(m.check(b"/api/.git/config", None).is_some());
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
            deny_extensions: vec![],
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

    proptest::proptest! {
        /// The needles are a sound prefilter: whatever the signature set matches holds one.
        #[test]
        fn every_signature_match_holds_a_needle(
            text in "[${}:;|`()./\\\\%#_<?=@\\[\\] +a-z-]{0,40}",
        ) {
            let m = builtin_shared();
            let (Some(set), Some(needles)) = (&m.signatures, &m.signature_needles) else {
                panic!("built-in signatures exist");
            };
            let text = text.to_ascii_lowercase();
            if set.is_match(text.as_bytes()) {
                proptest::prop_assert!(needles.is_match(text.as_bytes()), "{}", text);
            }
        }
    }

    fn builtin_shared() -> &'static ProbeMatcher {
        static MATCHER: std::sync::OnceLock<ProbeMatcher> = std::sync::OnceLock::new();
        MATCHER.get_or_init(builtin)
    }
}
