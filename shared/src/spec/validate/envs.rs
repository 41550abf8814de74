//! `envs` and `secrets`: names SkyPilot accepts, values as text, and `${VAR}` substitution.

use std::collections::BTreeMap;

use super::Result;
use crate::spec::error::{SpecError, join_path};

/// `envs` or `secrets` with CLI values applied; a null value must come from the CLI.
pub(super) fn values(
    field: &str,
    from_file: BTreeMap<String, Option<String>>,
    from_cli: &[(String, String)],
    flag: &str,
) -> Result<BTreeMap<String, String>> {
    let mut merged = from_file;
    for (key, value) in from_cli {
        check_env_key(key).map_err(|m| SpecError::new(flag, m))?;
        merged.insert(key.clone(), Some(value.clone()));
    }
    let mut out = BTreeMap::new();
    for (key, value) in merged {
        check_env_key(&key).map_err(|m| SpecError::new(join_path(field, &key), m))?;
        let Some(value) = value else {
            return Err(SpecError::new(
                join_path(field, &key),
                format!(
                    "{key} has no value: pass it with `{flag} {key}=<value>` (or `{flag} {key}` to copy it from your environment)"
                ),
            ));
        };
        out.insert(key, value);
    }
    Ok(out)
}

pub(super) fn check_env_key(key: &str) -> std::result::Result<(), String> {
    let mut chars = key.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{key}' is not a valid variable name: use letters, digits and '_', not starting with a digit"
        ))
    }
}

/// `${VAR}` and `$VAR` from the task's envs, as SkyPilot substitutes them in `file_mounts`.
pub(super) fn substitute(text: &str, envs: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match envs.get(name) {
            Some(value) if !name.is_empty() => {
                out.push_str(value);
                rest = &after[consumed..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
