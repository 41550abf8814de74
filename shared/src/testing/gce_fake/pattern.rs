//! Full-match checks of the `pattern`s in Google's discovery documents (e.g. an instance
//! name's `[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?`), without a regex crate: the subset those
//! patterns use (literals, `.`, classes with ranges, `(?:...)` and `(...)` groups with `|`,
//! the quantifiers `?`, `*`, `+`, `{n}`, `{m,}`, `{m,n}`, the escapes `\d`, `\w`, `\s` and
//! escaped literals, and `^`/`$` at the ends). Anything else is an error, so a pattern the
//! checker cannot read is reported rather than passed.

use std::collections::BTreeSet;

#[derive(Debug, Clone)]
enum Node {
    Char(char),
    Any,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Group(Vec<Vec<Piece>>),
}

#[derive(Debug, Clone)]
struct Piece {
    node: Node,
    min: usize,
    max: Option<usize>,
}

/// Whether all of `text` matches `pattern` (Google's patterns are anchored at both ends).
pub fn full_match(pattern: &str, text: &str) -> Result<bool, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let start = usize::from(chars.first() == Some(&'^'));
    i += start;
    let end = if chars.last() == Some(&'$') && chars.len() > start {
        chars.len() - 1
    } else {
        chars.len()
    };
    let alternatives = parse_alternatives(&chars[..end], &mut i)?;
    if i != end {
        return Err(format!("pattern {pattern}: unexpected ')' at {i}"));
    }
    let text: Vec<char> = text.chars().collect();
    Ok(match_alternatives(&alternatives, &text, 0).contains(&text.len()))
}

fn parse_alternatives(p: &[char], i: &mut usize) -> Result<Vec<Vec<Piece>>, String> {
    let mut alternatives = vec![Vec::new()];
    while *i < p.len() {
        let c = p[*i];
        let node = match c {
            ')' => break,
            '|' => {
                *i += 1;
                alternatives.push(Vec::new());
                continue;
            }
            '(' => {
                *i += 1;
                if p.get(*i) == Some(&'?') {
                    if p.get(*i + 1) != Some(&':') {
                        return Err(format!("unsupported group syntax at {i}"));
                    }
                    *i += 2;
                }
                let inner = parse_alternatives(p, i)?;
                if p.get(*i) != Some(&')') {
                    return Err("unclosed group".to_owned());
                }
                *i += 1;
                Node::Group(inner)
            }
            '[' => {
                *i += 1;
                parse_class(p, i)?
            }
            '.' => {
                *i += 1;
                Node::Any
            }
            '\\' => {
                *i += 1;
                let e = *p.get(*i).ok_or("dangling escape")?;
                *i += 1;
                escape(e)?
            }
            '*' | '+' | '?' | '{' | '^' | '$' => {
                return Err(format!("unsupported '{c}' at {i}"));
            }
            _ => {
                *i += 1;
                Node::Char(c)
            }
        };
        let (min, max) = parse_quantifier(p, i)?;
        alternatives
            .last_mut()
            .expect("never empty")
            .push(Piece { node, min, max });
    }
    Ok(alternatives)
}

fn escape(e: char) -> Result<Node, String> {
    let class = |ranges: Vec<(char, char)>| Node::Class {
        negated: false,
        ranges,
    };
    Ok(match e {
        'd' => class(vec![('0', '9')]),
        'w' => class(vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')]),
        's' => class(vec![(' ', ' '), ('\t', '\t'), ('\n', '\n'), ('\r', '\r')]),
        c if c.is_ascii_punctuation() => Node::Char(c),
        c => return Err(format!("unsupported escape \\{c}")),
    })
}

fn parse_class(p: &[char], i: &mut usize) -> Result<Node, String> {
    let negated = p.get(*i) == Some(&'^');
    if negated {
        *i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let next = *p.get(*i).ok_or("unclosed class")?;
        if next == ']' && !first {
            *i += 1;
            break;
        }
        first = false;
        let low = if next == '\\' {
            *i += 1;
            let escaped = *p.get(*i).ok_or("dangling escape")?;
            match escape(escaped)? {
                Node::Class { ranges: more, .. } => {
                    ranges.extend(more);
                    *i += 1;
                    continue;
                }
                Node::Char(literal) => literal,
                _ => unreachable!("escape gives a class or a char"),
            }
        } else {
            next
        };
        *i += 1;
        if p.get(*i) == Some(&'-') && p.get(*i + 1).is_some_and(|c| *c != ']') {
            let high = p[*i + 1];
            *i += 2;
            ranges.push((low, high));
        } else {
            ranges.push((low, low));
        }
    }
    Ok(Node::Class { negated, ranges })
}

fn parse_quantifier(p: &[char], i: &mut usize) -> Result<(usize, Option<usize>), String> {
    let q = match p.get(*i) {
        Some('?') => (0, Some(1)),
        Some('*') => (0, None),
        Some('+') => (1, None),
        Some('{') => {
            let close = p[*i..].iter().position(|c| *c == '}').ok_or("unclosed {")?;
            let body: String = p[*i + 1..*i + close].iter().collect();
            let num = |s: &str| {
                s.trim()
                    .parse::<usize>()
                    .map_err(|e| format!("{{{body}}}: {e}"))
            };
            let q = match body.split_once(',') {
                None => {
                    let n = num(&body)?;
                    (n, Some(n))
                }
                Some((m, "")) => (num(m)?, None),
                Some((m, n)) => (num(m)?, Some(num(n)?)),
            };
            *i += close;
            q
        }
        _ => return Ok((1, Some(1))),
    };
    *i += 1;
    Ok(q)
}

fn match_alternatives(alternatives: &[Vec<Piece>], text: &[char], pos: usize) -> BTreeSet<usize> {
    alternatives
        .iter()
        .flat_map(|seq| match_sequence(seq, text, pos))
        .collect()
}

fn match_sequence(seq: &[Piece], text: &[char], pos: usize) -> BTreeSet<usize> {
    let mut positions = BTreeSet::from([pos]);
    for piece in seq {
        positions = positions
            .into_iter()
            .flat_map(|p| match_piece(piece, text, p))
            .collect();
        if positions.is_empty() {
            break;
        }
    }
    positions
}

fn match_piece(piece: &Piece, text: &[char], pos: usize) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    if piece.min == 0 {
        out.insert(pos);
    }
    let mut frontier = BTreeSet::from([pos]);
    let max = piece.max.unwrap_or(text.len() + 1);
    for count in 1..=max {
        frontier = frontier
            .into_iter()
            .flat_map(|p| match_node(&piece.node, text, p))
            .collect();
        if frontier.is_empty() {
            break;
        }
        if count >= piece.min {
            out.extend(frontier.iter().copied());
        }
    }
    out
}

fn match_node(node: &Node, text: &[char], pos: usize) -> BTreeSet<usize> {
    if let Node::Group(alternatives) = node {
        return match_alternatives(alternatives, text, pos);
    }
    let Some(c) = text.get(pos) else {
        return BTreeSet::new();
    };
    let hit = match node {
        Node::Char(want) => c == want,
        Node::Any => *c != '\n',
        Node::Class { negated, ranges } => {
            ranges.iter().any(|(lo, hi)| (lo..=hi).contains(&c)) != *negated
        }
        Node::Group(_) => unreachable!("handled above"),
    };
    if hit {
        BTreeSet::from([pos + 1])
    } else {
        BTreeSet::new()
    }
}
