//! A reader for IOS / IOS-XE `show running-config` text: one node per command line, with its
//! 1-based line number, split into words, and the lines indented under it as children (IOS
//! indents sub-mode commands by one space per level, e.g. `crypto ikev2 keyring` → ` peer` →
//! `  address`). `!` lines are comments and block separators; blank lines are skipped.
//!
//! Placeholders written as `<NAME>` (as in published templates) are replaced word by word from
//! the caller's table; unresolved ones stay as written and [`Line::placeholders`] names them.

use std::collections::BTreeMap;

/// One command line of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number in the file.
    pub num: usize,
    /// Leading spaces.
    pub indent: usize,
    /// The command as written (trimmed), before placeholder substitution, for messages.
    pub text: String,
    /// Words after placeholder substitution.
    pub words: Vec<String>,
    /// Lines indented under this one.
    pub children: Vec<Line>,
}

impl Line {
    /// The `i`-th word, or "" past the end.
    pub fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }

    /// True if the words start with `prefix` (compared case-insensitively, as IOS does).
    pub fn starts(&self, prefix: &[&str]) -> bool {
        prefix.len() <= self.words.len()
            && prefix
                .iter()
                .zip(&self.words)
                .all(|(p, w)| w.eq_ignore_ascii_case(p))
    }

    /// The words after a matched prefix of `n` words, joined by one space.
    pub fn rest(&self, n: usize) -> String {
        self.words.get(n..).map_or(String::new(), |w| w.join(" "))
    }

    /// Unresolved `<NAME>` placeholders on this line.
    pub fn placeholders(&self) -> Vec<&str> {
        self.words
            .iter()
            .filter(|w| is_placeholder(w))
            .map(String::as_str)
            .collect()
    }
}

/// `<NAME>`: a template placeholder.
pub fn is_placeholder(w: &str) -> bool {
    w.len() > 2 && w.starts_with('<') && w.ends_with('>')
}

/// Parses the whole file into top-level lines with their children.
pub fn parse(text: &str, placeholders: &BTreeMap<String, String>) -> Vec<Line> {
    let mut top: Vec<Line> = Vec::new();
    // Path of indices from `top` down to the most recent line at each open level.
    let mut stack: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.trim_end_matches('\r');
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('!') {
            // A `!` at column 0 closes every open block; an indented one (` !`) only the
            // deeper ones, which the indentation of the next line handles anyway.
            if indent == 0 {
                stack.clear();
            }
            continue;
        }
        if indent == 0 && trimmed == "end" {
            stack.clear();
            continue;
        }
        let words = trimmed
            .split_whitespace()
            .map(|w| {
                let name = w.strip_prefix('<').and_then(|w| w.strip_suffix('>'));
                match name.and_then(|n| placeholders.get(n)) {
                    Some(v) => v.clone(),
                    None => w.to_owned(),
                }
            })
            .collect();
        let line = Line {
            num: i + 1,
            indent,
            text: trimmed.to_owned(),
            words,
            children: Vec::new(),
        };
        while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
            stack.pop();
        }
        let path = match stack.last() {
            None => {
                top.push(line);
                vec![top.len() - 1]
            }
            Some((_, parent)) => {
                let parent = parent.clone();
                let node = node_mut(&mut top, &parent);
                node.children.push(line);
                let mut p = parent;
                p.push(node.children.len() - 1);
                p
            }
        };
        stack.push((indent, path));
    }
    top
}

fn node_mut<'a>(top: &'a mut [Line], path: &[usize]) -> &'a mut Line {
    let (first, rest) = path.split_first().expect("a path has at least one index");
    let mut node = &mut top[*first];
    for i in rest {
        node = &mut node.children[*i];
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchy_and_line_numbers() {
        let text = "! c\ncrypto ikev2 keyring K\n peer ANY\n  address 0.0.0.0 0.0.0.0\n  pre-shared-key <PSK>\n !\n!\ninterface Tunnel0\n ip mtu 1400\nend\n";
        let mut ph = BTreeMap::new();
        ph.insert("PSK".to_owned(), "secret".to_owned());
        let top = parse(text, &ph);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].num, 2);
        assert_eq!(top[0].children[0].num, 3);
        let psk = &top[0].children[0].children[1];
        assert_eq!(psk.num, 5);
        assert_eq!(psk.words, ["pre-shared-key", "secret"]);
        assert_eq!(psk.text, "pre-shared-key <PSK>");
        assert!(psk.placeholders().is_empty());
        assert_eq!(top[1].children[0].num, 9);
        assert!(top[1].starts(&["interface"]));
    }

    #[test]
    fn unresolved_placeholder_is_kept() {
        let top = parse("ip nhrp nhs 10.0.0.1 nbma <HUB>\n", &BTreeMap::new());
        assert_eq!(top[0].placeholders(), ["<HUB>"]);
    }
}
