//! A small XML element tree: read with roxmltree, written indented by two spaces (the
//! layout of Python's `ElementTree.indent`, which the gate's reports have always had).

use std::fmt::Write as _;

/// One element: its tag, attributes in order, text, and child elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elem {
    pub tag: String,
    pub attrs: Vec<(String, String)>,
    pub text: Option<String>,
    pub children: Vec<Elem>,
}

impl Elem {
    pub fn new(tag: &str) -> Elem {
        Elem {
            tag: tag.to_string(),
            ..Elem::default()
        }
    }

    /// The element with one more attribute (or this one replaced).
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Elem {
        self.set(key, value);
        self
    }

    /// The element with this text.
    pub fn with_text(mut self, text: impl Into<String>) -> Elem {
        self.text = Some(clean(&text.into()));
        self
    }

    /// Sets an attribute, keeping its place if it was there.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = clean(&value.into());
        match self.attrs.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.attrs.push((key.to_string(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Appends a child and returns it.
    pub fn push(&mut self, child: Elem) -> &mut Elem {
        self.children.push(child);
        let last = self.children.len() - 1;
        &mut self.children[last]
    }

    /// The direct children with this tag.
    pub fn find_all<'a>(&'a self, tag: &'a str) -> impl Iterator<Item = &'a Elem> + 'a {
        self.children.iter().filter(move |c| c.tag == tag)
    }

    /// The first direct child with this tag.
    pub fn first(&self, tag: &str) -> Option<&Elem> {
        self.children.iter().find(|c| c.tag == tag)
    }

    /// Every element below this one (depth first, in document order) with this tag.
    pub fn descendants<'a>(&'a self, tag: &str, out: &mut Vec<&'a Elem>) {
        for c in &self.children {
            if c.tag == tag {
                out.push(c);
            }
            c.descendants(tag, out);
        }
    }

    /// Parses a document and returns its root element. Text that is only whitespace
    /// between elements (indentation) is dropped.
    pub fn parse(text: &str) -> Result<Elem, roxmltree::Error> {
        let doc = roxmltree::Document::parse(text)?;
        Ok(Elem::from_node(doc.root_element()))
    }

    fn from_node(n: roxmltree::Node) -> Elem {
        let mut e = Elem::new(n.tag_name().name());
        for a in n.attributes() {
            e.attrs.push((a.name().to_string(), clean(a.value())));
        }
        let mut text = String::new();
        for c in n.children() {
            if c.is_element() {
                e.children.push(Elem::from_node(c));
            } else if c.is_text() {
                text.push_str(c.text().unwrap_or(""));
            }
        }
        if !(text.is_empty() || (!e.children.is_empty() && text.trim().is_empty())) {
            e.text = Some(clean(&text));
        }
        e
    }

    /// The document: an XML declaration and this element, indented.
    pub fn to_document(&self) -> String {
        let mut out = String::from("<?xml version='1.0' encoding='UTF-8'?>\n");
        self.write(&mut out, 0);
        out
    }

    fn write(&self, out: &mut String, level: usize) {
        out.push('<');
        out.push_str(&self.tag);
        for (k, v) in &self.attrs {
            let _ = write!(out, " {k}=\"{}\"", escape_attr(v));
        }
        let text = self.text.as_deref().filter(|t| !t.is_empty());
        if self.children.is_empty() && text.is_none() {
            out.push_str(" />");
            return;
        }
        out.push('>');
        match text {
            Some(t) => out.push_str(&escape_text(t)),
            None => newline(out, level + 1),
        }
        for (i, c) in self.children.iter().enumerate() {
            if i > 0 {
                newline(out, level + 1);
            }
            c.write(out, level + 1);
        }
        if !self.children.is_empty() {
            newline(out, level);
        }
        let _ = write!(out, "</{}>", self.tag);
    }
}

fn newline(out: &mut String, level: usize) {
    out.push('\n');
    for _ in 0..level {
        out.push_str("  ");
    }
}

/// Text without ANSI colour sequences and without the control characters XML 1.0 forbids.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            // parameters, then one final letter
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        let bad =
            (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{fffe}' || c == '\u{ffff}';
        if !bad {
            out.push(c);
        }
    }
    out
}

pub fn escape_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn escape_attr(s: &str) -> String {
    escape_text(s)
        .replace('"', "&quot;")
        .replace('\r', "&#13;")
        .replace('\n', "&#10;")
        .replace('\t', "&#09;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_indented_and_escaped() {
        let mut top = Elem::new("a").with("name", "x \"y\" <&>\n");
        top.push(Elem::new("b").with_text("1 < 2 & 3"));
        top.push(Elem::new("c")).push(Elem::new("d"));
        assert_eq!(
            top.to_document(),
            "<?xml version='1.0' encoding='UTF-8'?>\n\
             <a name=\"x &quot;y&quot; &lt;&amp;&gt;&#10;\">\n  <b>1 &lt; 2 &amp; 3</b>\n  \
             <c>\n    <d />\n  </c>\n</a>"
        );
    }

    #[test]
    fn parses_back_what_it_writes() {
        let mut top = Elem::new("testsuites");
        top.push(Elem::new("testsuite").with("name", "s&t"))
            .push(Elem::new("testcase").with("name", "c\"1\""))
            .push(Elem::new("failure").with("message", "m").with_text("a\nb"));
        let again = Elem::parse(&top.to_document()).expect("parses");
        assert_eq!(again, top);
    }

    #[test]
    fn cleans_colours_and_control_characters() {
        assert_eq!(clean("\x1b[1;31merror\x1b[0m: x\x07y\tz"), "error: xy\tz");
    }
}
