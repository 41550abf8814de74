//! Finds the line and column of a YAML path (`resources.any_of[1].infra`) in a task file.
//!
//! `serde_yaml` reports positions only for errors it raises itself while deserializing; errors
//! found later, in validation, know their path but not where it is. This index maps each key
//! and list item to its position so that every error can point at the line to fix.

use std::collections::HashMap;
use std::fmt::Write as _;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::error::Position;

/// Positions of every mapping key and sequence item in a (multi-document) YAML text.
#[derive(Debug, Default)]
pub struct Locator {
    positions: HashMap<(usize, String), Position>,
}

enum Frame {
    /// `item` is set while a mapping that is a sequence item has not seen its first key: the
    /// parser marks a block mapping's start late, so the item is placed at that first key.
    Map {
        key: Option<String>,
        item: bool,
    },
    Seq {
        index: usize,
    },
}

#[derive(Default)]
struct Collector {
    document: Option<usize>,
    stack: Vec<Frame>,
    positions: HashMap<(usize, String), Position>,
}

impl Collector {
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Map { key: Some(k), .. } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                }
                Frame::Map { key: None, .. } => {}
                Frame::Seq { index } => {
                    let _ = write!(path, "[{index}]");
                }
            }
        }
        path
    }

    fn record(&mut self, mark: Marker) {
        let doc = self.document.unwrap_or(0);
        let position = Position {
            line: mark.line(),
            column: mark.col() + 1,
        };
        self.positions.entry((doc, self.path())).or_insert(position);
    }

    /// A node (scalar, sequence or mapping) begins at `mark`. Returns true when it was a key.
    fn begin_node(&mut self, scalar_key: Option<&str>, mark: Marker) -> bool {
        match self.stack.last_mut() {
            Some(Frame::Map { key, item }) if key.is_none() => {
                if std::mem::take(item) {
                    self.record(mark);
                }
                // A key; complex (non-scalar) keys are named by an empty string.
                if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                    *key = Some(scalar_key.unwrap_or_default().to_owned());
                }
                self.record(mark);
                true
            }
            Some(Frame::Seq { .. }) => {
                self.record(mark);
                false
            }
            _ => false,
        }
    }

    /// A node finished: a value ends its key's entry, an item advances the sequence.
    fn end_node(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for Collector {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::DocumentStart => {
                self.document = Some(self.document.map_or(0, |d| d + 1));
                self.stack.clear();
            }
            Event::Scalar(value, ..) if !self.begin_node(Some(&value), mark) => self.end_node(),
            Event::Alias(_) if !self.begin_node(None, mark) => self.end_node(),
            Event::MappingStart(..) => {
                let item = matches!(self.stack.last(), Some(Frame::Seq { .. }));
                if !item {
                    self.begin_node(None, mark);
                }
                self.stack.push(Frame::Map { key: None, item });
            }
            Event::SequenceStart(..) => {
                self.begin_node(None, mark);
                self.stack.push(Frame::Seq { index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.end_node();
            }
            _ => {}
        }
    }
}

impl Locator {
    /// Indexes `text`. A text the scanner cannot read gives an empty index (the YAML error
    /// itself already carries its position).
    pub fn new(text: &str) -> Self {
        let mut collector = Collector::default();
        let mut parser = Parser::new_from_str(text);
        // A scan error leaves what was indexed before it, which is still useful.
        let _ = parser.load(&mut collector, true);
        Self {
            positions: collector.positions,
        }
    }

    /// The position of `path` in `document`, or of its nearest parent that exists.
    pub fn find(&self, document: usize, path: &str) -> Option<Position> {
        let mut path = path.to_owned();
        loop {
            if let Some(p) = self.positions.get(&(document, path.clone())) {
                return Some(*p);
            }
            let cut = path.rfind(['.', '['])?;
            path.truncate(cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_items_and_parents_across_documents() {
        let text = "name: a\n---\nresources:\n  any_of:\n    - infra: aws\n    - infra: gcp\n      cpus: 2\n";
        let loc = Locator::new(text);
        let at = |doc, path| loc.find(doc, path).map(|p| (p.line, p.column));
        assert_eq!(at(0, "name"), Some((1, 1)));
        assert_eq!(at(1, "resources"), Some((3, 1)));
        assert_eq!(at(1, "resources.any_of[1].cpus"), Some((7, 7)));
        assert_eq!(at(1, "resources.any_of[1]"), Some((6, 7)));
        assert_eq!(at(1, "resources.any_of[1].missing"), Some((6, 7)));
        assert_eq!(at(1, "resources.any_of[0].infra"), Some((5, 7)));
    }
}
