//! Keeps the built-in list in `docs/probes.md` in sync with `data/probes.toml`.
//!
//! After editing the data, regenerate the section with
//! `UPDATE_PROBES_DOC=1 cargo test -p portcullis-policy --test probes_doc`.

use std::fmt::Write as _;
use std::path::PathBuf;

use portcullis_policy::probes::{builtin_entries, Category};

const BEGIN: &str = "<!-- BEGIN BUILTIN LIST (generated from crates/policy/data/probes.toml) -->";
const END: &str = "<!-- END BUILTIN LIST -->";

/// A table cell: code span with `|` escaped so regex alternations do not split the table.
fn code(text: &str) -> String {
    let escaped = text.replace('|', "\\|");
    // A backtick inside needs a longer fence.
    if escaped.contains('`') {
        format!("`` {escaped} ``")
    } else {
        format!("`{escaped}`")
    }
}

fn generated_section() -> String {
    let list = builtin_entries().expect("built-in list parses");
    let mut out = String::new();
    for category in Category::ALL {
        let rules: Vec<_> = list
            .rules
            .iter()
            .filter(|r| r.category == category)
            .collect();
        if rules.is_empty() {
            continue;
        }
        writeln!(
            out,
            "\n### {} (`{}`)\n",
            category.description(),
            category.as_str()
        )
        .unwrap();
        writeln!(
            out,
            "| kind | anchor | pattern | reason |\n| --- | --- | --- | --- |"
        )
        .unwrap();
        for rule in rules {
            writeln!(
                out,
                "| {} | {} | {} | {} |",
                rule.kind.as_str(),
                rule.anchor.as_str(),
                code(&rule.pattern),
                rule.reason.replace('|', "\\|")
            )
            .unwrap();
        }
    }
    writeln!(
        out,
        "\n### {} (`{}`)\n",
        Category::Signature.description(),
        Category::Signature.as_str()
    )
    .unwrap();
    writeln!(
        out,
        "| pattern | reason | real sample | seen in |\n| --- | --- | --- | --- |"
    )
    .unwrap();
    for signature in &list.signatures {
        writeln!(
            out,
            "| {} | {} | {} | {} |",
            code(&signature.pattern),
            signature.reason.replace('|', "\\|"),
            code(&signature.sample),
            signature.source.replace('|', "\\|")
        )
        .unwrap();
    }
    writeln!(
        out,
        "\n### {} (`{}`)\n",
        Category::ScannerAgent.description(),
        Category::ScannerAgent.as_str()
    )
    .unwrap();
    writeln!(out, "| kind | pattern | reason |\n| --- | --- | --- |").unwrap();
    for agent in &list.user_agents {
        writeln!(
            out,
            "| {} | {} | {} |",
            agent.kind.as_str(),
            code(&agent.pattern),
            agent.reason.replace('|', "\\|")
        )
        .unwrap();
    }
    out
}

#[test]
fn docs_list_matches_the_data_file() {
    let doc_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/probes.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/probes.md exists");
    let start = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = doc.find(END).expect("end marker");
    let expected = format!("{}\n", generated_section());
    if doc[start..end] == expected {
        return;
    }
    if std::env::var_os("UPDATE_PROBES_DOC").is_some() {
        let updated = format!("{}{}{}", &doc[..start], expected, &doc[end..]);
        std::fs::write(&doc_path, updated).expect("write docs/probes.md");
        return;
    }
    panic!(
        "docs/probes.md is out of date with data/probes.toml; run \
         UPDATE_PROBES_DOC=1 cargo test -p portcullis-policy --test probes_doc"
    );
}
