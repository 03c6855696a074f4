//! Encoding rows for `COPY ... FROM STDIN` in the text format.

use std::fmt::Write;

/// One line of COPY text, built column by column.
#[derive(Default)]
pub struct CopyRow {
    buf: String,
    first: bool,
}

impl CopyRow {
    pub fn new(out: String) -> Self {
        Self {
            buf: out,
            first: true,
        }
    }

    fn sep(&mut self) {
        if !self.first {
            self.buf.push('\t');
        }
        self.first = false;
    }

    pub fn null(&mut self) -> &mut Self {
        self.sep();
        self.buf.push_str("\\N");
        self
    }

    pub fn text(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            None => self.null(),
            Some(v) => {
                self.sep();
                escape_into(&mut self.buf, v);
                self
            }
        }
    }

    pub fn display(&mut self, v: impl std::fmt::Display) -> &mut Self {
        self.sep();
        let _ = write!(self.buf, "{v}");
        self
    }

    /// A `text[]` value.
    pub fn array(&mut self, items: &[String]) -> &mut Self {
        let mut lit = String::from("{");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                lit.push(',');
            }
            lit.push('"');
            for c in item.chars() {
                if c == '"' || c == '\\' {
                    lit.push('\\');
                }
                lit.push(c);
            }
            lit.push('"');
        }
        lit.push('}');
        self.text(Some(&lit))
    }

    pub fn json(&mut self, v: &serde_json::Value) -> &mut Self {
        self.text(Some(&v.to_string()))
    }

    /// Ends the line and gives the buffer back.
    pub fn finish(mut self) -> String {
        self.buf.push('\n');
        self.buf
    }
}

fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_text_arrays_and_nulls() {
        let mut row = CopyRow::new(String::new());
        row.text(Some("a\tb\\c\nd"))
            .null()
            .array(&["x\"y".into(), "z\\".into()]);
        assert_eq!(
            row.finish(),
            "a\\tb\\\\c\\nd\t\\N\t{\"x\\\\\"y\",\"z\\\\\\\\\"}\n"
        );
    }
}
