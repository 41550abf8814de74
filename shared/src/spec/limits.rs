//! The limits a task file must keep, checked before and after it is read, so that one
//! request does bounded work and nothing accepted here fails later on a node. Each error
//! names the limit and the field.
//!
//! | what | limit | why |
//! |---|---|---|
//! | a task file's text | [`MAX_YAML_BYTES`] | bounded parsing |
//! | nesting of mappings and lists | [`MAX_DEPTH`] levels | parsers slow down (superlinearly) on deep nesting; SkyPilot's files use fewer than 10 |
//! | aliases (`*name`) | [`MAX_ALIASES`] | each is expanded in full ("billion laughs") |
//! | `num_nodes` | [`MAX_NUM_NODES`] | one cluster's facts are read in one sweep |
//! | `envs` and `secrets` together | [`MAX_ENV_VARS`] variables, [`MAX_ENV_BYTES`] bytes | a process's environment and arguments share about 2 MB on Linux |
//! | NUL characters in `run`, `setup`, names and values | none | a command or variable cannot hold one |

use yaml_rust2::Event;
use yaml_rust2::parser::Parser;

use super::{Position, SpecError, Task};

pub const MAX_YAML_BYTES: usize = 1024 * 1024;
pub const MAX_DEPTH: usize = 32;
pub const MAX_ALIASES: usize = 64;
pub const MAX_NUM_NODES: u32 = 512;
pub const MAX_ENV_VARS: usize = 1000;
pub const MAX_ENV_BYTES: usize = 256 * 1024;

/// Checks the text before it is parsed: its size, nesting and aliases, in one linear pass of
/// a streaming parser that stops at the first excess.
pub(crate) fn check_text(text: &str) -> Result<(), SpecError> {
    if text.len() > MAX_YAML_BYTES {
        return Err(SpecError::new(
            "",
            format!(
                "the task file has {} KiB; Stratus reads at most {} KiB (keep data in files: `workdir`, `file_mounts`)",
                text.len() / 1024,
                MAX_YAML_BYTES / 1024
            ),
        ));
    }
    let too_deep = || {
        format!(
            "the task file nests mappings and lists more than {MAX_DEPTH} levels deep; flatten it"
        )
    };
    let mut parser = Parser::new_from_str(text);
    let (mut depth, mut aliases) = (0usize, 0usize);
    loop {
        let (event, marker) = match parser.next_token() {
            Ok(next) => next,
            // The scanner's own nesting limit (it reads flow collections ahead of events).
            Err(e) if e.info().contains("recursion limit") => {
                return Err(SpecError {
                    position: Some(Position {
                        line: e.marker().line(),
                        column: e.marker().col() + 1,
                    }),
                    ..SpecError::new("", too_deep())
                });
            }
            // The full parse reports other syntax errors, with its own words.
            Err(_) => return Ok(()),
        };
        let at = || {
            Some(Position {
                line: marker.line(),
                column: marker.col() + 1,
            })
        };
        match event {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(SpecError {
                        position: at(),
                        ..SpecError::new("", too_deep())
                    });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            Event::Alias(_) => {
                aliases += 1;
                if aliases > MAX_ALIASES {
                    return Err(SpecError {
                        position: at(),
                        ..SpecError::new(
                            "",
                            format!(
                                "the task file uses more than {MAX_ALIASES} aliases (`*name`); write the values out"
                            ),
                        )
                    });
                }
            }
            Event::StreamEnd => return Ok(()),
            _ => {}
        }
    }
}

fn no_nul(path: &str, value: &str) -> Result<(), SpecError> {
    if value.contains('\0') {
        return Err(SpecError::new(
            path,
            "holds a NUL character (\\0), which no command or variable can carry; remove it",
        ));
    }
    Ok(())
}

/// Checks a task once read: its node count, its variables, and NUL characters.
pub(crate) fn check_task(task: &Task) -> Result<(), SpecError> {
    if task.num_nodes > MAX_NUM_NODES {
        return Err(SpecError::new(
            "num_nodes",
            format!(
                "{} nodes is more than the {MAX_NUM_NODES} a Stratus cluster may have",
                task.num_nodes
            ),
        ));
    }
    for (field, script) in [("setup", &task.setup), ("run", &task.run)] {
        if let Some(script) = script {
            no_nul(field, script)?;
        }
    }
    let count = task.envs.len() + task.secrets.len();
    if count > MAX_ENV_VARS {
        return Err(SpecError::new(
            "envs",
            format!(
                "{count} variables (envs and secrets together); a task may have at most {MAX_ENV_VARS}"
            ),
        ));
    }
    let mut bytes = 0;
    for (name, value) in &task.envs {
        no_nul(&format!("envs.{name}"), name)?;
        no_nul(&format!("envs.{name}"), value)?;
        bytes += name.len() + value.len();
    }
    for (name, value) in &task.secrets {
        no_nul(&format!("secrets.{name}"), name)?;
        no_nul(&format!("secrets.{name}"), value.expose())?;
        bytes += name.len() + value.expose().len();
    }
    if bytes > MAX_ENV_BYTES {
        return Err(SpecError::new(
            "envs",
            format!(
                "the variables (envs and secrets) take {} KiB; at most {} KiB fit a process's environment",
                bytes / 1024,
                MAX_ENV_BYTES / 1024
            ),
        ));
    }
    Ok(())
}
