//! Writes a JSON value as block-style YAML, so that rendered bootstraps read like the YAML in
//! Envoy's documentation. Strings are always double-quoted (JSON escaping is valid YAML), so no
//! value can change meaning; keys are quoted unless they are plain identifiers (`"@type"` is).

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
    for (key, value) in map {
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
        // Strings, numbers, booleans and null are written as JSON, which YAML reads the same.
        other => other.to_string(),
    }
}

fn key_text(key: &str) -> String {
    let plain = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if plain {
        key.to_owned()
    } else {
        Value::String(key.to_owned()).to_string()
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
            "list": [{"k": "v", "m": {"n": null}}, [1, 2], {}],
            "empty": [],
        });
        assert_eq!(
            to_yaml(&value),
            "\"@type\": \"t\"\n\
             a:\n  b: 1\n  c:\n    - true\n    - \"x: y\"\n\
             empty: []\n\
             list:\n  - k: \"v\"\n    m:\n      n: null\n  - - 1\n    - 2\n  - {}\n"
        );
    }

    #[test]
    fn a_bare_scalar_is_one_line() {
        assert_eq!(to_yaml(&json!("s")), "\"s\"\n");
        assert_eq!(to_yaml(&json!({})), "{}\n");
    }
}
