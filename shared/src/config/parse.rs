//! Parsing a config so that every problem is found in one pass.
//!
//! toml stops at the first error and names its line but not its key. So:
//! syntax first (every syntax error, from toml's recovering parser); then
//! deserialize, and on an error at key path P (from serde_path_to_error)
//! record it with P and its line, remove P from the parsed document and try
//! again, until the rest deserializes. Each retry removes a key, so this
//! ends. The caller's semantic checks then run on what remains; what they
//! say about a removed key (a default stood in for it) is dropped.

use std::fmt::Write as _;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{ConfigError, ConfigErrors, Position};

/// The example config shipped with a program: its path (named in fixes)
/// and its text (where a fix finds an example value for a key).
#[derive(Debug, Clone, Copy)]
pub struct Example {
    pub path: &'static str,
    pub text: &'static str,
}

/// Problems found by deserializing again at most: each retry reads the whole
/// document, so a file full of errors must not take time growing with the
/// product of its size and its problem count.
pub const MAX_PROBLEMS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Parses `text` into `T` and runs `validate` on it: every syntax, type,
/// range and unknown-key problem and every problem `validate` finds comes
/// back together, each with its key path, its line when it has one, and a fix.
pub fn parse_toml<T: DeserializeOwned>(
    text: &str,
    example: &Example,
    validate: impl FnOnce(&T) -> Vec<ConfigError>,
) -> Result<T, ConfigErrors> {
    let (mut root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(ConfigErrors(
            syntax
                .iter()
                .map(|e| {
                    ConfigError::new(
                        "",
                        e.message().trim(),
                        "correct the TOML syntax: key = value, text in double quotes, [table] headers",
                    )
                    .at(position(text, e.span()))
                })
                .collect(),
        ));
    }
    let mut errors = Vec::new();
    // Keys removed, or standing in from the example, to get past an error.
    let mut removed: Vec<Vec<Seg>> = Vec::new();
    let mut stood_in: Vec<Vec<Seg>> = Vec::new();
    let value = loop {
        if errors.len() >= MAX_PROBLEMS {
            errors.push(ConfigError::new(
                "",
                format!("more than {MAX_PROBLEMS} problems; the first {MAX_PROBLEMS} are listed"),
                "fix these and check the file again",
            ));
            break None;
        }
        let de = toml::de::Deserializer::from(root.clone());
        let err = match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(value) => break Some(value),
            Err(err) => err,
        };
        let mut path = segments(err.path());
        let inner = err.into_inner();
        let message = inner.message().trim();
        let at = position(text, inner.span());
        if let Some(key) = quoted_after(message, "missing field ") {
            let mut full = path.clone();
            full.push(Seg::Key(key.to_owned()));
            // Missing because an earlier error removed it: said already.
            // (At the top level toml's span is the whole file: no line.)
            if !removed.contains(&full) {
                errors.push(missing(&full, example).at(at.filter(|_| !path.is_empty())));
            }
            // The example's value stands in, so that the rest is checked.
            // (Once: a stand-in that does not fit is removed like any other.)
            if !stood_in.contains(&full)
                && let Some(value) =
                    example_value(example, &full).and_then(|v| DeValue::parse(v).ok())
                && let Some(table) = table_at(root.get_mut(), &path)
            {
                table.insert(Spanned::new(0..0, key.to_owned().into()), value);
                stood_in.push(full.clone());
                removed.push(full);
                continue;
            }
        } else {
            if let Some(key) = quoted_after(message, "unknown field ")
                && path.last() != Some(&Seg::Key(key.to_owned()))
            {
                path.push(Seg::Key(key.to_owned()));
            }
            // A stand-in that does not fit is not the user's problem.
            if !stood_in.iter().any(|s| path.starts_with(s)) {
                errors.push(wrong(&path, message, example).at(at));
            }
        }
        // An array element cannot go without renumbering the rest: the whole
        // array goes. A missing key without a stand-in takes its table along.
        while matches!(path.last(), Some(Seg::Index(_))) {
            path.pop();
        }
        let gone = match path.split_last() {
            Some((Seg::Key(key), parent)) => table_at(root.get_mut(), parent)
                .and_then(|t| t.remove(key.as_str()))
                .is_some(),
            _ => false,
        };
        if !gone {
            break None;
        }
        removed.push(path);
    };
    // In the file's order (deserialization visits keys sorted); those
    // without a line (missing keys) after.
    errors.sort_by_key(|e| e.at.map_or((usize::MAX, 0), |p| (p.line, p.column)));
    let Some(value) = value else {
        return Err(ConfigErrors(errors));
    };
    let removed: Vec<String> = removed.iter().map(|p| render(p)).collect();
    errors.extend(
        validate(&value)
            .into_iter()
            .filter(|e| !removed.iter().any(|r| covers(r, &e.field))),
    );
    ConfigErrors(errors).into_result().map(|()| value)
}

/// The table at `path`, to change it.
fn table_at<'t, 'i>(table: &'t mut DeTable<'i>, path: &[Seg]) -> Option<&'t mut DeTable<'i>> {
    let Some((first, rest)) = path.split_first() else {
        return Some(table);
    };
    let Seg::Key(key) = first else {
        return None;
    };
    let mut value = table.get_mut(key.as_str())?.get_mut();
    let mut rest = rest;
    while let Some((Seg::Index(i), after)) = rest.split_first() {
        let DeValue::Array(array) = value else {
            return None;
        };
        value = array.get_mut(*i)?.get_mut();
        rest = after;
    }
    match value {
        DeValue::Table(table) => table_at(table, rest),
        _ => None,
    }
}

fn segments(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// Whether `field` is `removed` or lies inside it.
fn covers(removed: &str, field: &str) -> bool {
    field
        .strip_prefix(removed)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

pub(crate) fn position(text: &str, span: Option<std::ops::Range<usize>>) -> Option<Position> {
    let offset = span?.start.min(text.len());
    let before = text.get(..offset)?;
    Some(Position {
        line: before.matches('\n').count() + 1,
        column: before.chars().rev().take_while(|&c| c != '\n').count() + 1,
    })
}

/// The first `` `quoted` `` word after `prefix` at the start of `message`.
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    message.strip_prefix(prefix)?.split('`').nth(1)
}

/// Every `` `quoted` `` word after "expected" in a serde message.
fn expected_names(message: &str) -> Vec<&str> {
    message
        .rsplit_once("expected ")
        .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default()
}

fn missing(path: &[Seg], example: &Example) -> ConfigError {
    let fix = match example_line(example, path) {
        Some(line) => format!("add it, e.g. `{line}` (see {})", example.path),
        None => format!("add a [{}] table as in {}", render(path), example.path),
    };
    ConfigError::new(render(path), "is required but missing", fix)
}

fn wrong(path: &[Seg], message: &str, example: &Example) -> ConfigError {
    let fix = if let Some(unknown) = quoted_after(message, "unknown field ") {
        let known = expected_names(message);
        let guess = closest(unknown, &known)
            .map(|k| format!("did you mean `{k}`? Otherwise remove it"))
            .unwrap_or_else(|| "remove it or correct its spelling".to_owned());
        if known.is_empty() {
            format!("{guess} (see {})", example.path)
        } else {
            format!(
                "{guess}; this table takes {} (see {})",
                known.join(", "),
                example.path
            )
        }
    } else {
        let want = wanted(message);
        match example_line(example, path) {
            Some(line) => format!("write {want}, e.g. `{line}` (see {})", example.path),
            None => format!("write {want} (see {})", example.path),
        }
    };
    ConfigError::new(render(path), message, fix)
}

/// What the value should be, in words, from serde's "expected …".
fn wanted(message: &str) -> String {
    if message.contains("socket address") {
        return "an address and port in double quotes".into();
    }
    let expected = message.rsplit_once("expected ").map_or("", |(_, e)| e);
    let whole = |max: u64| format!("a whole number from 0 to {max}, without quotes");
    match expected {
        "u8" => whole(u8::MAX.into()),
        "u16" => whole(u16::MAX.into()),
        "u32" => whole(u32::MAX.into()),
        "u64" | "usize" => "a whole number (0 or more), without quotes".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number, without quotes".into(),
        "f32" | "f64" => "a number, without quotes".into(),
        "a boolean" => "true or false, without quotes".into(),
        "a string" | "path string" => "text in double quotes".into(),
        "a sequence" => "a list in square brackets".into(),
        e if e.starts_with("struct ") || e.starts_with("a map") => "a table".into(),
        e if e.contains('`') => format!("one of {}", expected_names(message).join(", ")),
        _ => "a value like the example's".into(),
    }
}

/// The known name nearest to `name`, if it is a plausible typo of it.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// `key = value` for the key at `path` in the example.
fn example_line(example: &Example, path: &[Seg]) -> Option<String> {
    let value = example_value(example, path)?;
    match path.last()? {
        Seg::Key(leaf) => Some(format!("{leaf} = {value}")),
        Seg::Index(_) => None,
    }
}

/// The value of the key at `path` in the example, commented out or not (its
/// commented keys show the defaults); the same key in another table if the
/// example has it only there.
fn example_value(example: &Example, path: &[Seg]) -> Option<&'static str> {
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
        .collect();
    let (leaf, table) = keys.split_last()?;
    let mut current: Vec<&str> = Vec::new();
    let mut elsewhere = None;
    for raw in example.text.lines() {
        let line = raw.trim().trim_start_matches('#').trim();
        if let Some(header) = line.strip_prefix('[') {
            let name = header
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("");
            current = name.split('.').map(str::trim).collect();
            if current == keys {
                return None; // a table, not a value
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = without_comment(value.trim());
        if key.trim() != *leaf || value.is_empty() || value.len() > 60 {
            continue;
        }
        if current == table {
            return Some(value);
        }
        elsewhere.get_or_insert(value);
    }
    elsewhere
}

/// `value` without a trailing `# comment` (a `#` inside quotes stays).
fn without_comment(value: &str) -> &str {
    let mut quoted = false;
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return value[..i].trim_end(),
            _ => {}
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: Example = Example {
        path: "config/demo.example.toml",
        text: "# A demo.\nname = \"main\"\n# poll_interval_ms = 1000\n[meter]\n# unit_id = 1   # the address\n",
    };

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Demo {
        name: String,
        #[serde(default)]
        poll_interval_ms: u64,
        #[serde(default)]
        meter: Meter,
        #[serde(default)]
        meters: Vec<Meter>,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Meter {
        #[serde(default)]
        unit_id: u8,
        #[serde(default)]
        on: bool,
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        parse_toml::<Demo>(text, &EXAMPLE, |_| Vec::new())
            .unwrap_err()
            .0
    }

    fn summary(text: &str) -> Vec<(String, usize)> {
        errors(text)
            .into_iter()
            .map(|e| (e.field, e.at.map_or(0, |p| p.line)))
            .collect()
    }

    #[test]
    fn every_bad_key_is_named_with_its_line() {
        let text = "name = \"m\"\npoll_interval_ms = \"1000\"\n[meter]\nunit_id = 300\non = \"yes\"\n[[meters]]\nunit_id = -1\n[[meters]]\nonn = true\n";
        let mut got = summary(text);
        got.sort();
        assert_eq!(
            got,
            [
                ("meter.on".to_owned(), 5),
                ("meter.unit_id".to_owned(), 4),
                ("meters[0].unit_id".to_owned(), 7),
                ("meters[1].onn".to_owned(), 9),
                ("poll_interval_ms".to_owned(), 2),
            ]
        );
    }

    #[test]
    fn a_file_full_of_problems_lists_the_first_hundred_and_says_so() {
        let mut text = String::from("name = \"m\"\n");
        for i in 0..150 {
            text.push_str(&format!("unknown_{i} = 1\n"));
        }
        let found = errors(&text);
        assert_eq!(found.len(), MAX_PROBLEMS + 1);
        assert!(
            found[MAX_PROBLEMS]
                .problem
                .starts_with("more than 100 problems"),
            "{}",
            found[MAX_PROBLEMS]
        );
    }

    #[test]
    fn the_errors_of_later_array_elements_are_found_too() {
        let text = "name = \"m\"\n[[meters]]\nunit_id = 1\n[[meters]]\nonn = true\n";
        assert_eq!(summary(text), [("meters[1].onn".to_owned(), 5)]);
    }

    #[test]
    fn a_type_error_says_what_to_write_with_the_examples_value() {
        let e = &errors("name = \"m\"\npoll_interval_ms = \"1000\"\n")[0];
        assert_eq!(e.field, "poll_interval_ms");
        assert_eq!(
            e.at,
            Some(Position {
                line: 2,
                column: 20
            })
        );
        assert!(e.problem.contains("expected u64"), "{e}");
        assert_eq!(
            e.fix,
            "write a whole number (0 or more), without quotes, e.g. `poll_interval_ms = 1000` (see config/demo.example.toml)"
        );
        assert!(
            e.to_string()
                .starts_with("`poll_interval_ms` (line 2, column 20): invalid type"),
            "{e}"
        );
    }

    #[test]
    fn a_range_error_gives_the_range() {
        let e = &errors("name = \"m\"\n[meter]\nunit_id = 300\n")[0];
        assert_eq!(e.field, "meter.unit_id");
        assert!(
            e.fix.starts_with("write a whole number from 0 to 255"),
            "{e}"
        );
        assert!(e.fix.contains("`unit_id = 1`"), "{e}");
    }

    #[test]
    fn a_misspelt_key_gets_a_suggestion() {
        let e = &errors("name = \"m\"\npolll_interval_ms = 5\n")[0];
        assert_eq!(e.field, "polll_interval_ms");
        assert_eq!(e.at.map(|p| p.line), Some(2));
        assert!(e.fix.starts_with("did you mean `poll_interval_ms`?"), "{e}");
    }

    #[test]
    fn a_missing_key_is_reported_once_with_the_rest() {
        let got = summary("poll_interval_ms = true\n");
        let fields: Vec<_> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["poll_interval_ms", "name"]);
        let e = &errors("")[0];
        assert_eq!(
            e.fix,
            "add it, e.g. `name = \"main\"` (see config/demo.example.toml)"
        );
    }

    #[test]
    fn every_syntax_error_is_reported_with_its_line() {
        let got = errors("name = \"m\nx = = 1\n[meter\n");
        assert!(got.len() >= 2, "{got:?}");
        assert!(got.iter().all(|e| e.field.is_empty() && e.at.is_some()));
    }

    #[test]
    fn semantic_errors_about_a_removed_key_are_dropped() {
        let err = parse_toml::<Demo>("name = \"m\"\npoll_interval_ms = \"x\"\n", &EXAMPLE, |_| {
            vec![
                ConfigError::new("poll_interval_ms", "is 0", "set it"),
                ConfigError::new("name", "is short", "longer"),
            ]
        })
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["poll_interval_ms", "name"]);
        assert!(err.0[0].problem.contains("invalid type"));
    }

    #[test]
    fn edit_distance_counts_single_changes() {
        assert_eq!(edit_distance("agnet_id", "agent_id"), 2);
        assert_eq!(edit_distance("polll", "poll"), 1);
        assert_eq!(closest("hots", &["host", "port"]), Some("host"));
        assert_eq!(closest("colour", &["host", "port"]), None);
    }
}
