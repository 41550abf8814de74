//! Turning serde's errors into SkyPilot-style ones: the field's path and position, a fix
//! where one is known, and every other error of the document too (up to a limit).

use crate::spec::error::{Position, SpecError, join_path};
use crate::spec::yaml::TaskYaml;
use crate::suggest;

/// Turns a serde error into a `SpecError` with its path, position and a "did you mean".
pub(super) fn yaml_error(error: &serde_path_to_error::Error<serde_yaml::Error>) -> SpecError {
    let inner = error.inner();
    let mut path = error.path().to_string();
    if path == "." {
        path.clear();
    }
    let raw = inner.to_string();
    // serde_yaml appends " at line L column C"; the position is reported on its own.
    let mut message = match raw.find(" at line ") {
        Some(cut) => raw[..cut].to_owned(),
        None => raw,
    };
    // serde_yaml also prefixes its own rendering of the path ("resources: unknown field ...").
    if let Some((prefix, rest)) = message.split_once(": ")
        && !prefix.contains(' ')
        && !prefix.is_empty()
    {
        message = rest.to_string();
    }
    // serde names a key it could not read as text `?`: name the mapping instead.
    let key_not_text = path == "?" || path.ends_with(".?");
    if key_not_text {
        path.truncate(path.len().saturating_sub(2));
    }
    let message = if key_not_text {
        "a key here is a list or a mapping: keys must be plain text, e.g. `NAME: value`".to_owned()
    } else if let Some(rest) = message.strip_prefix("unknown field `") {
        unknown_field(rest, &mut path)
    } else if message.starts_with("data did not match any variant of untagged enum") {
        untagged_hint(&path)
    } else if let Some(fix) = type_fix(&path, &message) {
        format!("{message}; {fix}")
    } else {
        internal_names_out(&message)
    };
    SpecError {
        path,
        position: inner.location().map(|l| Position {
            line: l.line(),
            column: l.column(),
        }),
        message,
        document: 0,
        more: Vec::new(),
    }
}

/// A path as serde saw it, to take the bad value out and look for the next problem.
pub(super) enum Step {
    Key(String),
    Index(usize),
}

/// The first problem of document `index` with the others serde finds once each bad key is
/// taken out (up to `MAX_MORE`): two typos are reported together, not one fix at a time.
pub(super) fn with_more_errors(mut first: SpecError, text: &str, index: usize) -> SpecError {
    use serde::Deserialize as _;
    let Some(document) = serde_yaml::Deserializer::from_str(text).nth(index) else {
        return first;
    };
    let Ok(mut value) = serde_yaml::Value::deserialize(document) else {
        return first;
    };
    let mut seen = vec![first.path.clone()];
    for _ in 0..=crate::spec::error::MAX_MORE {
        // Back to text: a scalar read from text may be a string or a number as the field
        // wants, one read from a `Value` may not.
        let Ok(again) = serde_yaml::to_string(&value) else {
            break;
        };
        let document = serde_yaml::Deserializer::from_str(&again);
        let Err(e) = serde_path_to_error::deserialize::<_, Option<TaskYaml>>(document) else {
            break;
        };
        let mut steps: Vec<Step> = Vec::new();
        for segment in e.path() {
            match segment {
                serde_path_to_error::Segment::Map { key } => steps.push(Step::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => steps.push(Step::Index(*index)),
                // An `Option` or enum layer adds no step in the YAML.
                _ => {}
            }
        }
        let raw = e.inner().to_string();
        // The path usually ends at the unknown key already; when not, the message names it.
        if let Some(rest) = raw.split("unknown field `").nth(1) {
            let field = rest.split('`').next().unwrap_or("");
            if !matches!(steps.last(), Some(Step::Key(k)) if k == field) {
                steps.push(Step::Key(field.to_owned()));
            }
        }
        let error = SpecError {
            position: None,
            ..yaml_error(&e).in_document(index)
        };
        if !seen.contains(&error.path) {
            seen.push(error.path.clone());
            if first.more.len() < crate::spec::error::MAX_MORE {
                first.more.push(error);
            }
        } else if seen.len() > 1 && seen.last() == Some(&error.path) {
            // Taking it out did not help: stop rather than report it again.
            break;
        }
        if steps.is_empty() || !take_out(&mut value, &steps) {
            break;
        }
    }
    first
}

/// Removes the key (or empties the list item) at `steps`; false when it is not there.
pub(super) fn take_out(value: &mut serde_yaml::Value, steps: &[Step]) -> bool {
    use serde_yaml::Value;
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut at = value;
    for step in parents {
        let next = match (step, at) {
            (Step::Key(k), Value::Mapping(m)) => m.get_mut(k.as_str()),
            (Step::Index(i), Value::Sequence(s)) => s.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else {
            return false;
        };
        at = next;
    }
    match (last, at) {
        (Step::Key(k), Value::Mapping(m)) => m.remove(k.as_str()).is_some(),
        // Items keep their places, so that later paths still name the right ones.
        (Step::Index(i), Value::Sequence(s)) => {
            s.get_mut(*i).map(|item| *item = Value::Null).is_some()
        }
        _ => false,
    }
}

/// serde names the Rust type it wanted ("expected struct ResourcesYaml"): users wrote YAML.
pub(super) fn internal_names_out(message: &str) -> String {
    match message.find("expected struct ") {
        Some(at) => format!("{}expected a mapping", &message[..at]),
        None => message.to_owned(),
    }
}

/// How to write a mapping field that was given as something else (`envs: [A=1]`).
pub(super) fn type_fix(path: &str, message: &str) -> Option<String> {
    if !message.starts_with("invalid type") || !message.ends_with("expected a map") {
        return None;
    }
    let field = path.rsplit('.').next().unwrap_or(path);
    let example = match field {
        "envs" | "secrets" => "{A: 1, B: two}",
        "file_mounts" => "{/remote/path: ./local/path}",
        "labels" => "{team: ml}",
        _ => "{key: value}",
    };
    Some(format!(
        "write {field} as a mapping, one `KEY: value` per line or `{field}: {example}`, not a list of KEY=value"
    ))
}

/// "unknown field `acclerators`, expected one of `a`, `b`" → a message with a suggestion.
pub(super) fn unknown_field(rest: &str, path: &mut String) -> String {
    let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
    let expected: Vec<&str> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|f| !f.starts_with('_'))
        .collect();
    if !(path == field || path.ends_with(&format!(".{field}"))) {
        *path = join_path(path, field);
    }
    let hint = suggest::did_you_mean(field, expected.iter().copied());
    if hint.is_empty() {
        format!(
            "unknown field '{field}'; valid fields here: {}",
            expected.join(", ")
        )
    } else {
        format!("unknown field '{field}'{hint}")
    }
}

pub(super) fn untagged_hint(path: &str) -> String {
    let last = path.rsplit(['.', '[']).next().unwrap_or(path);
    match last {
        "workdir" => "expected a local path or {url: <git url>, ref: <branch, tag or commit>}".into(),
        "image_id" => "expected an image (ami-..., docker:<image>, a GCE image) or a mapping {region: image}".into(),
        "job_recovery" | "spot_recovery" => "expected a strategy name (EAGER_NEXT_REGION, FAILOVER or NO_RECOVERY) or a mapping with strategy, max_restarts_on_errors, recover_on_exit_codes, max_recoveries".into(),
        "source" => "expected a path or URL, or a list of them".into(),
        _ if path.starts_with("file_mounts") => "expected a local path, a bucket URL (s3://..., gs://...), or a storage mapping {name, source, store, persistent, mode}".into(),
        _ => "this value has the wrong shape".into(),
    }
}
