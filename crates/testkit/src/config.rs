//! Checks of the commented example configurations against the configuration structs.

use std::collections::BTreeSet;

/// The dotted keys of every value in `table` that is not itself a table (arrays are values).
fn leaf_keys(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => leaf_keys(t, &key, out),
            _ => {
                out.insert(key);
            }
        }
    }
}

/// Issue 12, item 6: the example (`name`, text `example`) documents every key the configuration
/// accepts — the keys of its default configuration `defaults`, so that a new key without an entry
/// in the example fails — and no other.
#[track_caller]
pub fn assert_example_documents_every_key(example: &str, defaults: toml::Table, name: &str) {
    let (mut accepted, mut documented) = (BTreeSet::new(), BTreeSet::new());
    leaf_keys(&defaults, "", &mut accepted);
    leaf_keys(&toml::from_str(example).unwrap(), "", &mut documented);
    let missing: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(missing.is_empty(), "{name} lacks {missing:?}");
    assert!(unknown.is_empty(), "{name} has keys the configuration does not have: {unknown:?}");
}
