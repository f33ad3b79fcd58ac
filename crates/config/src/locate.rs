//! Finds the dotted TOML key (TOML 1.0 "Keys" and "Array of Tables") whose key or value covers a
//! byte offset, so parse errors from serde, which carry only a span, can name the key.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// `tunnel.mtu`, `ike.keyring[1].peer`, … or `None` if the offset is in no key-value pair (e.g. a
/// syntax error that stopped the parser before any key).
pub(crate) fn key_at(text: &str, offset: usize) -> Option<String> {
    // A document that does not parse has no key tree; the caller still has line and column.
    let table = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    walk_table(table.get_ref(), offset, &mut path);
    (!path.is_empty()).then(|| path.concat())
}

fn covers(span: &std::ops::Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

fn walk_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) {
    for (key, value) in table.iter() {
        let in_key = covers(&key.span(), offset);
        let in_value = covers(&value.span(), offset);
        if in_key || in_value || contains_offset(value, offset) {
            if !path.is_empty() {
                path.push(".".to_owned());
            }
            path.push(key.get_ref().to_string());
            if !in_key {
                walk_value(value, offset, path);
            }
            return;
        }
    }
}

fn walk_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<String>) {
    match value.get_ref() {
        DeValue::Table(t) => walk_table(t, offset, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if covers(&item.span(), offset) || contains_offset(item, offset) {
                    path.push(format!("[{i}]"));
                    walk_value(item, offset, path);
                    return;
                }
            }
        }
        _ => {}
    }
}

/// Tables opened by a `[header]` do not have a span covering their body, so look inside.
fn contains_offset(value: &Spanned<DeValue<'_>>, offset: usize) -> bool {
    match value.get_ref() {
        DeValue::Table(t) => t.iter().any(|(k, v)| {
            covers(&k.span(), offset) || covers(&v.span(), offset) || contains_offset(v, offset)
        }),
        DeValue::Array(items) => items
            .iter()
            .any(|v| covers(&v.span(), offset) || contains_offset(v, offset)),
        _ => false,
    }
}
