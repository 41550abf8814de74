//! Errors in a task file: each names the YAML path, the line and column, the bad value and the fix.

use std::fmt;

/// Where in the YAML the problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// One problem with a task file, or with a CLI flag that overrides it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// The YAML path (`resources.accelerators`), or the flag (`--gpus`) for overrides.
    pub path: String,
    pub position: Option<Position>,
    /// What is wrong and how to fix it.
    pub message: String,
    /// The 0-based document in a multi-document file, used to find `position`.
    #[doc(hidden)]
    pub document: usize,
    /// Other problems found in the same document (two typos are two errors), at most
    /// `MAX_MORE`.
    pub more: Vec<SpecError>,
}

/// How many problems besides the first one an error reports.
pub const MAX_MORE: usize = 9;

impl SpecError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            position: None,
            message: message.into(),
            document: 0,
            more: Vec::new(),
        }
    }

    pub(crate) fn in_document(mut self, document: usize) -> Self {
        self.document = document;
        self
    }

    /// Prefixes the path with `prefix` (a parent field or list index).
    pub(crate) fn under(mut self, prefix: &str) -> Self {
        self.path = join_path(prefix, &self.path);
        self
    }
}

pub(crate) fn join_path(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => prefix.to_owned(),
        _ if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.position {
            write!(f, "line {}, column {}: ", p.line, p.column)?;
        }
        if self.path.is_empty() {
            f.write_str(&self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        for other in &self.more {
            write!(f, "\n  and {other}")?;
        }
        Ok(())
    }
}

/// Something accepted but not acted on (e.g. `autostop`), reported so it is never silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
