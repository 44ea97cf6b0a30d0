//! Writes a JSON value as block-style YAML, so that rendered bootstraps read like the YAML in
//! Envoy's documentation. In each mapping `@type` and `name` come first, then the other keys in
//! alphabetical order (serde_json's maps are sorted). A string is written plain only when YAML
//! cannot read it as anything but that string (`URI`, `/run/x.sock`, `envoy.filters.http.router`);
//! otherwise it is double-quoted with JSON escaping, which YAML reads the same (`"5s"`,
//! `"127.0.0.1"`, `"spiffe://…"`, `"true"`).

use serde_json::Value;

/// `value` as a YAML document.
pub(crate) fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_object(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_array(&mut out, items, 0),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

fn write_object(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    let first = ["@type", "name"];
    let ordered = first
        .iter()
        .filter_map(|key| map.get_key_value(*key))
        .chain(map.iter().filter(|(key, _)| !first.contains(&key.as_str())));
    for (key, value) in ordered {
        out.push_str(&" ".repeat(indent));
        out.push_str(&key_text(key));
        out.push(':');
        write_nested(out, value, indent + 2);
    }
}

fn write_array(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        // The item as if it were a nested block, then its first indentation becomes the dash.
        let mut block = String::new();
        write_nested(&mut block, item, indent + 2);
        let block = block.strip_prefix('\n').map_or_else(
            // A scalar: written after ": " by write_nested.
            || format!("{}- {}", " ".repeat(indent), block.trim_start()),
            |nested| format!("{}- {}", " ".repeat(indent), &nested[indent + 2..]),
        );
        out.push_str(&block);
    }
}

/// After `key:` (or in an array item): a scalar on the same line, or a block on the next ones.
fn write_nested(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_object(out, map, indent);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_array(out, items, indent);
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        Value::String(text) => quoted_unless_plain(text),
        // Numbers, booleans and null are written as JSON, which YAML reads the same.
        other => other.to_string(),
    }
}

fn key_text(key: &str) -> String {
    quoted_unless_plain(key)
}

/// `text` as is when it starts with a letter or `/`, holds only letters, digits and `_-./`,
/// and is none of YAML's words for booleans and null; else JSON-quoted.
fn quoted_unless_plain(text: &str) -> String {
    const WORDS: &[&str] = &["true", "false", "null", "yes", "no", "on", "off", "y", "n"];
    let plain = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '/')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && !WORDS.iter().any(|w| w.eq_ignore_ascii_case(text));
    if plain {
        text.to_owned()
    } else {
        Value::String(text.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::to_yaml;

    #[test]
    fn nested_maps_lists_and_quoting() {
        let value = json!({
            "a": {"b": 1, "c": [true, "x: y"]},
            "@type": "t",
            "list": [{"k": "v", "name": "nm", "m": {"x": null}}, [1, 2], {}],
            "empty": [],
        });
        assert_eq!(
            to_yaml(&value),
            "\"@type\": t\n\
             a:\n  b: 1\n  c:\n    - true\n    - \"x: y\"\n\
             empty: []\n\
             list:\n  - name: nm\n    k: v\n    m:\n      x: null\n  - - 1\n    - 2\n  - {}\n"
        );
    }

    #[test]
    fn strings_yaml_could_misread_are_quoted() {
        let plain = [
            "URI",
            "/run/halyard/agent.sock",
            "envoy.filters.http.router",
            "a-b_c",
        ];
        for text in plain {
            assert_eq!(to_yaml(&json!(text)), format!("{text}\n"));
        }
        let quoted = [
            "5s",
            "127.0.0.1",
            "spiffe://td/x",
            "true",
            "No",
            "",
            "a b",
            "%X%",
            "*",
            "-a",
        ];
        for text in quoted {
            assert_eq!(to_yaml(&json!(text)), format!("{}\n", json!(text)));
        }
    }

    #[test]
    fn a_bare_scalar_is_one_line() {
        assert_eq!(to_yaml(&json!(7)), "7\n");
        assert_eq!(to_yaml(&json!({})), "{}\n");
    }
}
