//! Positions in error texts count within the line the client sent.
//!
//! serde_json words its errors as "... at line 1 column N", counting from
//! the start of the text it was given. The node often gives it less than
//! the line: one element of an `events` array, or the line without a
//! leading byte-order mark. [`Line`] moves such a position to count within
//! the whole line as received, so that a client can find the spot in what it
//! sent. Columns count bytes from 1, as serde_json's do.

/// The line a request came on: its text as decoded, and how many bytes
/// before that text were skipped (a byte-order mark).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Line<'a> {
    text: &'a str,
    skipped: usize,
}

impl<'a> Line<'a> {
    pub(crate) fn new(text: &'a str, skipped: usize) -> Line<'a> {
        Line { text, skipped }
    }

    /// The same line, decoded as `text` instead (a copy of the same length).
    pub(crate) fn with_text(self, text: &str) -> Line<'_> {
        Line {
            text,
            skipped: self.skipped,
        }
    }

    /// The text as decoded.
    pub(crate) fn text(self) -> &'a str {
        self.text
    }

    /// The 1-based column, within the line as received, of the byte at
    /// `at` in [`Line::text`].
    pub(crate) fn column(self, at: usize) -> usize {
        self.skipped + at + 1
    }

    /// How many bytes of the line as received come before `part`, a slice
    /// of [`Line::text`] (the skipped bytes, for anything else).
    pub(crate) fn offset_of(self, part: &str) -> usize {
        let start = self.text.as_ptr() as usize;
        let at = (part.as_ptr() as usize).wrapping_sub(start);
        let inside = at <= self.text.len() && at + part.len() <= self.text.len();
        self.skipped + if inside { at } else { 0 }
    }

    /// serde_json's error about `part` (a slice of [`Line::text`]), its
    /// position counted within the line.
    pub(crate) fn error_in(self, part: &str, e: &serde_json::Error) -> String {
        // Line 0: no position. A line holds no `\n`, so serde never says
        // line 2; if it did, its words would stand.
        if e.line() != 1 {
            return e.to_string();
        }
        format!(
            "{} at line 1 column {}",
            problem(e),
            self.offset_of(part) + e.column()
        )
    }
}

/// serde_json's wording of `e` without its position.
pub(crate) fn problem(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&position) {
        Some(bare) => bare.to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_error(text: &str) -> serde_json::Error {
        serde_json::from_str::<serde_json::Value>(text).unwrap_err()
    }

    #[test]
    fn positions_count_within_the_line() {
        let text = r#"{"a":[{"x":1,}]}"#;
        let element = &text[6..text.len() - 2];
        let e = serde_error(element);
        assert_eq!(e.to_string(), "trailing comma at line 1 column 8");
        let line = Line::new(text, 0);
        assert_eq!(
            line.error_in(element, &e),
            "trailing comma at line 1 column 14"
        );
        assert_eq!(&text[13..14], "}");
        // A skipped byte-order mark counts too.
        let line = Line::new(text, 3);
        assert_eq!(
            line.error_in(element, &e),
            "trailing comma at line 1 column 17"
        );
        assert_eq!(line.column(0), 4);
    }

    #[test]
    fn problem_drops_the_position() {
        assert_eq!(problem(&serde_error("[1,]")), "trailing comma");
        assert_eq!(Line::new("x", 0).offset_of("elsewhere"), 0);
    }
}
