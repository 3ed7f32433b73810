//! The LVM2 text format (what `vgcfgbackup` writes and metadata areas hold):
//!
//! ```text
//! # comment
//! name = value            value: integer, "string" (\" and \\ escaped), [ value, ... ]
//! section {               sections nest
//!     ...
//! }
//! ```
//!
//! Parsed into a tree that keeps the order of its entries; nesting and sizes are bounded
//! so hostile text cannot exhaust the stack or memory.

use crate::{corrupt, Result};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

const MAX_DEPTH: usize = 32;
const MAX_ITEMS: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(String),
    Str(String),
    List(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Value(Value),
    Section(Section),
}

/// A section's entries, in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Section {
    pub entries: Vec<(String, Node)>,
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, n)| n)
    }

    pub fn section(&self, key: &str) -> Option<&Section> {
        match self.get(key) {
            Some(Node::Section(s)) => Some(s),
            _ => None,
        }
    }

    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.entries.iter().filter_map(|(k, n)| match n {
            Node::Section(s) => Some((k.as_str(), s)),
            Node::Value(_) => None,
        })
    }

    pub fn value(&self, key: &str) -> Option<&Value> {
        match self.get(key) {
            Some(Node::Value(v)) => Some(v),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.value(key) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.value(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn list(&self, key: &str) -> Option<&[Value]> {
        match self.value(key) {
            Some(Value::List(l)) => Some(l),
            _ => None,
        }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
    items: usize,
}

impl Parser<'_> {
    fn line(&self) -> usize {
        1 + self.b[..self.pos].iter().filter(|&&c| c == b'\n').count()
    }

    fn fail<T>(&self, what: &str) -> Result<T> {
        corrupt(format!("metadata text, line {}: {what}", self.line()))
    }

    fn skip_space(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            if c == b'#' {
                while self.b.get(self.pos).is_some_and(|&c| c != b'\n') {
                    self.pos += 1;
                }
            } else if c.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn ident(&mut self) -> Result<String> {
        let start = self.pos;
        while self
            .b
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphanumeric() || b"_-.+".contains(c))
        {
            self.pos += 1;
        }
        if start == self.pos {
            return self.fail("a name was expected");
        }
        Ok(String::from_utf8_lossy(&self.b[start..self.pos]).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        self.items += 1;
        if self.items > MAX_ITEMS || depth > MAX_DEPTH {
            return self.fail("too many values or too deeply nested");
        }
        self.skip_space();
        match self.b.get(self.pos) {
            Some(b'"') => {
                self.pos += 1;
                let mut s = Vec::new();
                loop {
                    match self.b.get(self.pos) {
                        None => return self.fail("a string is not closed"),
                        Some(b'"') => {
                            self.pos += 1;
                            break;
                        }
                        Some(b'\\') => {
                            match self.b.get(self.pos + 1) {
                                Some(&c) => s.push(c),
                                None => return self.fail("a string ends in a backslash"),
                            }
                            self.pos += 2;
                        }
                        Some(&c) => {
                            s.push(c);
                            self.pos += 1;
                        }
                    }
                }
                Ok(Value::Str(String::from_utf8_lossy(&s).into_owned()))
            }
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_space();
                    match self.b.get(self.pos) {
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Value::List(items));
                        }
                        Some(b',') if !items.is_empty() => self.pos += 1,
                        None => return self.fail("a list is not closed"),
                        _ if items.is_empty() => {}
                        _ => return self.fail("a list's items are separated by commas"),
                    }
                    self.skip_space();
                    if self.b.get(self.pos) == Some(&b']') {
                        continue;
                    }
                    items.push(self.value(depth + 1)?);
                }
            }
            Some(c) if c.is_ascii_digit() || *c == b'-' => {
                let start = self.pos;
                self.pos += 1;
                while self
                    .b
                    .get(self.pos)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
                {
                    self.pos += 1;
                }
                let t = core::str::from_utf8(&self.b[start..self.pos]).unwrap_or("");
                if t.contains('.') {
                    return Ok(Value::Float(String::from(t)));
                }
                match t.parse() {
                    Ok(i) => Ok(Value::Int(i)),
                    Err(_) => self.fail("an integer out of range"),
                }
            }
            _ => self.fail("a value (number, string or list) was expected"),
        }
    }

    fn section(&mut self, depth: usize, closed: bool) -> Result<Section> {
        if depth > MAX_DEPTH {
            return self.fail("sections nested too deeply");
        }
        let mut s = Section::default();
        loop {
            self.skip_space();
            match self.b.get(self.pos) {
                None if closed => return self.fail("a section is not closed"),
                None => return Ok(s),
                Some(b'}') if closed => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some(0) if !closed => {
                    // Trailing NULs after the text.
                    self.pos = self.b.len();
                    continue;
                }
                _ => {}
            }
            let key = self.ident()?;
            self.skip_space();
            self.items += 1;
            if self.items > MAX_ITEMS {
                return self.fail("too many entries");
            }
            match self.b.get(self.pos) {
                Some(b'=') => {
                    self.pos += 1;
                    let v = self.value(depth + 1)?;
                    s.entries.push((key, Node::Value(v)));
                }
                Some(b'{') => {
                    self.pos += 1;
                    let inner = Box::new(self.section(depth + 1, true)?);
                    s.entries.push((key, Node::Section(*inner)));
                }
                _ => return self.fail("'=' or '{' was expected after a name"),
            }
        }
    }
}

/// Parses a whole text (a metadata area's copy, or a `vgcfgbackup` file).
pub fn parse(text: &[u8]) -> Result<Section> {
    Parser {
        b: text,
        pos: 0,
        items: 0,
    }
    .section(0, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_lvm_writes() {
        let t = br#"# Generated by LVM2
vg0 {
    id = "abc"
    seqno = 3
    status = ["RESIZEABLE", "READ", "WRITE"]
    extent_size = 8192    # 4 Megabytes
    physical_volumes {
        pv0 {
            dev_size = 131072
        }
    }
}
contents = "Text Format Volume Group"
description = "a \"quoted\" word"
creation_time = 1700000000
"#;
        let root = parse(t).unwrap();
        let vg = root.section("vg0").unwrap();
        assert_eq!(vg.int("seqno"), Some(3));
        assert_eq!(vg.list("status").unwrap().len(), 3);
        assert_eq!(
            vg.section("physical_volumes")
                .unwrap()
                .section("pv0")
                .unwrap()
                .int("dev_size"),
            Some(131072)
        );
        assert_eq!(root.str("description"), Some("a \"quoted\" word"));
    }

    #[test]
    fn bad_text_is_refused_with_a_line() {
        for bad in [
            &b"a {"[..],
            b"a = ",
            b"a = \"x",
            b"a = [1 2]",
            b"= 3",
            b"a = 99999999999999999999",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(format!("{e}").contains("line"), "{e}");
        }
        let deep: Vec<u8> = core::iter::repeat_n(b"a{".as_slice(), 100)
            .flatten()
            .copied()
            .collect();
        assert!(parse(&deep).is_err());
    }
}
