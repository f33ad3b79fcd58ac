//! dmvpnd.toml(5) from the annotated example configurations in `conf/`.
//!
//! The examples are the configuration reference (crates/config says so): each table is preceded
//! by a comment naming the Cisco command it replaces, each key carries a trailing comment, and
//! optional keys and tables are present but commented out. This module reads that structure back:
//! tables (`[x]`, `[[x]]`, or commented `# [x]`), keys (`k = v  # note`, or commented
//! `# k = v  # note`), the comment block right above a table or key, and comment paragraphs inside
//! a table.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::roff::text;

#[derive(Debug, Default)]
pub struct Doc {
    /// Comment paragraphs before the first table.
    pub preamble: Vec<String>,
    pub sections: Vec<Section>,
}

#[derive(Debug, Default)]
pub struct Section {
    /// Dotted table name; empty for top-level keys.
    pub name: String,
    pub array: bool,
    /// Only present commented out.
    pub optional: bool,
    pub desc: Vec<String>,
    pub entries: Vec<Entry>,
    pub notes: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Entry {
    pub key: String,
    /// (example name, value, commented out)
    pub values: Vec<(String, String, bool)>,
    pub notes: Vec<String>,
}

impl Doc {
    fn section(&mut self, name: &str, array: bool, optional: bool) -> &mut Section {
        let i = match self.sections.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                self.sections.push(Section {
                    name: name.to_owned(),
                    array,
                    optional,
                    ..Section::default()
                });
                self.sections.len() - 1
            }
        };
        let s = &mut self.sections[i];
        s.optional &= optional;
        s
    }

    /// Every key and table-name segment documented.
    pub fn names(&self) -> BTreeSet<String> {
        let mut n = BTreeSet::new();
        for s in &self.sections {
            n.extend(
                s.name
                    .split('.')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            );
            n.extend(s.entries.iter().map(|e| e.key.clone()));
        }
        n
    }

    /// Adds one annotated example file (`origin` names it in the page, e.g. "spoke").
    pub fn add(&mut self, origin: &str, src: &str) {
        let mut current: Option<String> = None;
        let mut pending: Vec<String> = Vec::new();
        let first = self.sections.is_empty() && self.preamble.is_empty();
        for line in src.lines() {
            let t = line.trim();
            if t.is_empty() {
                if !pending.is_empty() {
                    let para = pending.join(" ");
                    match &current {
                        Some(c) => push_unique(&mut self.section(c, false, true).notes, para),
                        None if first => self.preamble.push(para),
                        None => {}
                    }
                    pending.clear();
                }
                continue;
            }
            let (body, commented) = match t.strip_prefix('#') {
                Some(b) => (b.trim(), true),
                None => (t, false),
            };
            if let Some((name, array)) = header(body) {
                let s = self.section(&name, array, commented);
                if !pending.is_empty() {
                    push_unique(&mut s.desc, pending.join(" "));
                    pending.clear();
                }
                current = Some(name);
                continue;
            }
            if let Some((key, value, note)) = key_line(body) {
                let sec = current.clone().unwrap_or_default();
                let s = self.section(&sec, false, commented);
                let i = match s.entries.iter().position(|e| e.key == key) {
                    Some(i) => i,
                    None => {
                        s.entries.push(Entry {
                            key: key.clone(),
                            ..Entry::default()
                        });
                        s.entries.len() - 1
                    }
                };
                let e = &mut s.entries[i];
                e.values.push((origin.to_owned(), value, commented));
                if !pending.is_empty() {
                    push_unique(&mut e.notes, pending.join(" "));
                    pending.clear();
                }
                if let Some(n) = note {
                    push_unique(&mut e.notes, n);
                }
                continue;
            }
            if commented {
                pending.push(body.to_owned());
            }
        }
    }
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// `[name]` / `[[name]]`.
fn header(s: &str) -> Option<(String, bool)> {
    let (inner, array) = if let Some(r) = s.strip_prefix("[[") {
        (r.split_once("]]")?.0, true)
    } else {
        (s.strip_prefix('[')?.split_once(']')?.0, false)
    };
    let ok = !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    ok.then(|| (inner.to_owned(), array))
}

/// `key = value  # note`.
fn key_line(s: &str) -> Option<(String, String, Option<String>)> {
    let (key, rest) = s.split_once(" = ")?;
    let key = key.trim();
    if key.is_empty()
        || !key.chars().next()?.is_ascii_alphabetic()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return None;
    }
    let (value, note) = split_comment(rest);
    Some((
        key.to_owned(),
        value.trim().to_owned(),
        note.map(|n| n.trim().to_owned()),
    ))
}

/// Splits a TOML value from its trailing comment (a `#` outside a string).
fn split_comment(s: &str) -> (&str, Option<&str>) {
    let mut in_str = false;
    let mut esc = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if esc => esc = false,
            '\\' if in_str => esc = true,
            '"' => in_str = !in_str,
            '#' if !in_str => return (&s[..i], Some(&s[i + 1..])),
            _ => {}
        }
    }
    (s, None)
}

/// The file-permission rules, from the `File permissions` list in crates/config/src/lib.rs.
fn permission_rules(lib_rs: &str) -> Result<Vec<String>, String> {
    let mut rules: Vec<String> = Vec::new();
    let mut inside = false;
    for line in lib_rs.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            if inside {
                break;
            }
            continue;
        };
        let doc = doc.trim();
        if doc.starts_with("File permissions") {
            inside = true;
        } else if inside {
            if doc.is_empty() {
                break;
            }
            match doc.strip_prefix("- ") {
                Some(item) => rules.push(item.to_owned()),
                None => match rules.last_mut() {
                    Some(r) => {
                        r.push(' ');
                        r.push_str(doc);
                    }
                    None => return Err("unexpected text in the File permissions list".into()),
                },
            }
        }
    }
    if rules.is_empty() {
        return Err("no `File permissions` list found in crates/config/src/lib.rs".into());
    }
    Ok(rules)
}

fn render_sections(out: &mut String, doc: &Doc) {
    for s in &doc.sections {
        let title = if s.name.is_empty() {
            "Top level".to_owned()
        } else if s.array {
            format!("[[{}]] (may be repeated)", s.name)
        } else {
            format!("[{}]", s.name)
        };
        let _ = writeln!(out, ".SS \"{}\"", text(&title));
        if s.optional && !s.name.is_empty() {
            out.push_str("Optional: commented out in the examples.\n.PP\n");
        }
        for d in &s.desc {
            let _ = writeln!(out, "{}\n.PP", text(d));
        }
        for e in &s.entries {
            let _ = writeln!(out, ".TP\n.B {}", text(&e.key));
            let examples: Vec<String> = e
                .values
                .iter()
                .map(|(origin, v, commented)| {
                    let c = if *commented { ", commented out" } else { "" };
                    format!("{origin}{c}: `{}`", v.replace('`', "'"))
                })
                .collect();
            let _ = writeln!(out, "Example ({}).", text(&examples.join("; ")));
            for n in &e.notes {
                let _ = writeln!(out, ".br\n{}", text(n));
            }
        }
        for n in &s.notes {
            let _ = writeln!(out, ".PP\n{}", text(n));
        }
    }
}

pub fn manpage(date: &str) -> Result<String, String> {
    let mut main = Doc::default();
    main.add("spoke", &crate::read("conf/spoke.toml")?);
    main.add("hub", &crate::read("conf/hub.toml")?);
    let mut secrets = Doc::default();
    secrets.add("secrets", &crate::read("conf/secrets.example.toml")?);
    crate::check_schema(&main, &secrets)?;
    let rules = permission_rules(&crate::read("crates/config/src/lib.rs")?)?;

    let mut out = String::new();
    let _ = writeln!(
        out,
        ".TH DMVPND.TOML 5 \"{date}\" \"dmvpnd {}\" \"dmvpnd manual\"",
        env!("CARGO_PKG_VERSION")
    );
    out.push_str(".SH NAME\ndmvpnd.toml \\- dmvpnd configuration and secrets files\n");
    out.push_str(".SH SYNOPSIS\n.I /etc/dmvpnd/dmvpnd.toml\n.br\n.I /etc/dmvpnd/secrets.toml\n");
    out.push_str(
        ".SH DESCRIPTION\n\
         .BR dmvpnd (8)\n\
         reads one TOML file (default\n.IR /etc/dmvpnd/dmvpnd.toml ,\n\
         option\n.BR \\-\\-config )\n\
         and the secrets file it names. Each table mirrors the Cisco IOS DMVPN commands it\n\
         replaces. This page is generated from the annotated example configurations shipped in\n\
         .I /usr/share/doc/dmvpnd/examples/\n\
         (a spoke and a hub of the same reference deployment): every table and key below is shown\n\
         with its value in those examples and the comment next to it. Tables and keys marked\n\
         \"commented out\" are optional.\n\
         .B dmvpnd \\-\\-check\\-config\n\
         .I FILE\n\
         validates a file and names file, line and key on error.\n.PP\n",
    );
    for p in &main.preamble {
        let _ = writeln!(out, "{}\n.PP", text(p));
    }
    out.push_str(".SH FILE PERMISSIONS\n");
    for r in &rules {
        let _ = writeln!(out, ".IP \\(bu 2\n{}", text(r));
    }
    out.push_str(
        ".PP\nUnder the packaged systemd unit dmvpnd runs as user\n.B dmvpnd\n\
         without CAP_DAC_OVERRIDE, so\n.I secrets.toml\nmust be owned by\n.B dmvpnd\n\
         (mode 0600) and\n.I dmvpnd.toml\nreadable by it (0644 root:root).\n",
    );
    out.push_str(".SH CONFIGURATION FILE\n");
    render_sections(&mut out, &main);
    out.push_str(".SH SECRETS FILE\n");
    for p in &secrets.preamble {
        let _ = writeln!(out, "{}\n.PP", text(p));
    }
    render_sections(&mut out, &secrets);
    out.push_str(
        ".SH FILES\n.TP\n.I /etc/dmvpnd/dmvpnd.toml\nThe configuration (a conffile of the package).\n\
         .TP\n.I /etc/dmvpnd/secrets.toml\nCreated by the package from the example if missing, never \
         overwritten.\n.TP\n.I /usr/share/doc/dmvpnd/examples/\n\
         .IR spoke.toml ,\n.IR hub.toml ,\n.IR secrets.example.toml .\n\
         .SH SEE ALSO\n.BR dmvpnd (8),\n.BR dmvpnctl (8)\n",
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_annotated_toml() {
        let mut d = Doc::default();
        d.add(
            "a",
            "# intro\n\n# the table\n[x]\nk = \"v#1\"   # note\n# opt = 3  # optional\n\n# [y]\n# z = 1\n",
        );
        assert_eq!(d.preamble, ["intro"]);
        assert_eq!(d.sections.len(), 2);
        let x = &d.sections[0];
        assert_eq!((x.name.as_str(), x.optional), ("x", false));
        assert_eq!(x.desc, ["the table"]);
        assert_eq!(x.entries[0].values[0].1, "\"v#1\"");
        assert_eq!(x.entries[0].notes, ["note"]);
        assert!(x.entries[1].values[0].2);
        assert!(d.sections[1].optional);
        assert!(d.names().contains("z"));
    }

    #[test]
    fn schema_check_catches_an_undocumented_key() {
        let raw = "pub(crate) struct RawX {\n    #[serde(rename = \"t\")]\n    pub ts: u8,\n    pub new_key: u8,\n}\n";
        let names = crate::schema_names(raw, &|n| n == "RawX");
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["new-key", "t"]);
    }
}
