//! The `filter` parameter of `instances.list` and `zoneOperations.list`: `field = value`,
//! `field != value`, `field:value` terms joined with AND.

use serde_json::Value;

use super::discovery::{self, Discovery};

/// One `field op value` term of a list filter.
#[derive(Debug)]
pub(super) struct Term {
    field: Vec<String>,
    op: FilterOp,
    value: String,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum FilterOp {
    Eq,
    Ne,
    Has,
}

impl Term {
    pub(super) fn holds(&self, item: &Value) -> bool {
        let mut v = item;
        for part in &self.field {
            v = &v[part.as_str()];
        }
        let text = match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        match self.op {
            FilterOp::Has if self.value == "*" => text.is_some(),
            FilterOp::Has => text.is_some_and(|t| t.contains(&self.value)),
            FilterOp::Eq => text.as_deref() == Some(self.value.as_str()),
            FilterOp::Ne => text.as_deref() != Some(self.value.as_str()),
        }
    }
}

/// The terms of the `filter` query parameter: `field = "value"`, `field != value`,
/// `field:*`, `field:value`, joined by spaces or `AND`. Anything else (OR, parentheses, a
/// field the listed resource does not have) is a failure: the fake would answer it wrongly.
pub(super) fn parse_filter(
    discovery: &Discovery,
    method: &discovery::Method,
    query: &[(String, String)],
) -> Result<Vec<Term>, String> {
    let Some((_, filter)) = query.iter().find(|(n, _)| n == "filter") else {
        return Ok(Vec::new());
    };
    let mut terms = Vec::new();
    for word in split_words(filter)? {
        if word == "AND" {
            continue;
        }
        let (field, op, value) = if let Some((f, v)) = word.split_once("!=") {
            (f, FilterOp::Ne, v)
        } else if let Some((f, v)) = word.split_once('=') {
            (f, FilterOp::Eq, v)
        } else if let Some((f, v)) = word.split_once(':') {
            (f, FilterOp::Has, v)
        } else {
            return Err(format!(
                "{}: filter '{filter}' not understood by the fake",
                method.id
            ));
        };
        let field = field.trim();
        if !discovery.item_has_field(method, field) {
            return Err(format!(
                "{}: filter '{filter}': the listed resource has no field '{field}'",
                method.id
            ));
        }
        terms.push(Term {
            field: field.split('.').map(str::to_owned).collect(),
            op,
            value: value.trim().trim_matches('"').to_owned(),
        });
    }
    Ok(terms)
}

/// `filter` split on spaces outside quotes, with `a = b` joined into `a=b`.
pub(super) fn split_words(filter: &str) -> Result<Vec<String>, String> {
    if filter.contains(['(', ')']) || filter.contains(" OR ") {
        return Err(format!("filter '{filter}' not understood by the fake"));
    }
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in filter.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ' ' if !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if quoted {
        return Err(format!("filter '{filter}': unbalanced quotes"));
    }
    if !current.is_empty() {
        words.push(current);
    }
    // Join `a`, `=`, `"b"` (and `a`, `="b"`, and `a=`, `"b"`) into one term.
    let mut joined: Vec<String> = Vec::new();
    for w in words {
        let glue = joined
            .last()
            .is_some_and(|last| last.ends_with(['=', ':']) || w.starts_with(['=', ':', '!']));
        if glue {
            joined.last_mut().expect("checked").push_str(&w);
        } else {
            joined.push(w);
        }
    }
    Ok(joined)
}
