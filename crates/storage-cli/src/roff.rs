//! A small Markdown-to-roff converter for the man pages' hand-written prose (the subset that
//! `crates/storage-cli/docs/README.md` describes), and the roff escaping the generated parts use.
//!
//! Block syntax: paragraphs (separated by blank lines), `### Subsection` headings, `* item`
//! bullets, `1. item` numbered items, definition lists (a term line followed by a `: definition` line) and fenced code
//! blocks. Inline syntax: `` `literal` `` and `**bold**` (both bold), `*italic*`.
//! Anything else is text. Section headings (`## NAME`) are split off by [`sections`] before
//! conversion.

/// Escapes text for roff: backslashes, and the dashes of options (a `-` that starts a
/// word or follows another `-`), so that `--graph` stays copyable.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut prev: Option<char> = None;
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' if prev.is_none_or(|p| p.is_whitespace() || p == '-' || p == '(' || p == '[') => {
                out.push_str("\\-")
            }
            c => out.push(c),
        }
        prev = Some(c);
    }
    out
}

/// Escapes literal text (code, option and command names): every `-` becomes `\-`.
pub(crate) fn escape_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c => out.push(c),
        }
    }
    out
}

/// `\fBtext\fR` with `text` escaped as a literal.
pub(crate) fn bold(text: &str) -> String {
    format!("\\fB{}\\fR", escape_literal(text))
}

/// `\fItext\fR` with `text` escaped.
pub(crate) fn italic(text: &str) -> String {
    format!("\\fI{}\\fR", escape(text))
}

/// Converts the inline markup of one line of prose.
pub(crate) fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let next = rest.find(['`', '*']);
        let Some(i) = next else {
            out.push_str(&escape(rest));
            break;
        };
        out.push_str(&escape(&rest[..i]));
        rest = &rest[i..];
        let (open, render): (&str, fn(&str) -> String) = if rest.starts_with('`') {
            ("`", bold)
        } else if rest.starts_with("**") {
            ("**", bold)
        } else {
            ("*", italic)
        };
        let body = &rest[open.len()..];
        match body.find(open).filter(|&j| j > 0) {
            Some(j) => {
                out.push_str(&render(&body[..j]));
                rest = &body[j + open.len()..];
            }
            None => {
                // An unmatched marker is text.
                out.push_str(&escape(open));
                rest = body;
            }
        }
    }
    out
}

/// Makes a roff input line safe: a line starting with `.` or `'` would be a request.
fn line(text: &str) -> String {
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}")
    } else {
        text.to_string()
    }
}

/// Splits prose into `## TITLE` sections: `(title, body)` in order. Text before the first
/// heading gets the title `""`.
pub(crate) fn sections(markdown: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for l in markdown.lines() {
        if let Some(title) = l.strip_prefix("## ") {
            out.push((title.trim().to_string(), String::new()));
        } else {
            if out.is_empty() {
                out.push((String::new(), String::new()));
            }
            if let Some((_, body)) = out.last_mut() {
                body.push_str(l);
                body.push('\n');
            }
        }
    }
    out.retain(|(t, b)| !t.is_empty() || !b.trim().is_empty());
    out
}

/// `3. text` → `(3, "text")`.
fn numbered(line: &str) -> Option<(u32, &str)> {
    let (number, rest) = line.split_once(". ")?;
    Some((number.parse().ok()?, rest))
}

/// Converts a block of prose (no `## ` headings) to roff.
pub(crate) fn markdown_to_roff(markdown: &str) -> String {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut para: Vec<&str> = Vec::new();
    let flush = |para: &mut Vec<&str>, out: &mut String| {
        if !para.is_empty() {
            out.push_str(".PP\n");
            out.push_str(&text_block(para));
            para.clear();
        }
    };
    while i < lines.len() {
        let t = lines[i].trim_end();
        if t.trim().is_empty() {
            flush(&mut para, &mut out);
            i += 1;
        } else if t.starts_with("```") {
            flush(&mut para, &mut out);
            out.push_str(".PP\n.RS 4\n.nf\n");
            i += 1;
            while i < lines.len() && !lines[i].starts_with("```") {
                out.push_str(&line(&escape_literal(lines[i])));
                out.push('\n');
                i += 1;
            }
            out.push_str(".fi\n.RE\n");
            i += 1;
        } else if let Some(title) = t.strip_prefix("### ") {
            flush(&mut para, &mut out);
            out.push_str(&format!(".SS {}\n", inline(title.trim())));
            i += 1;
        } else if let Some(item) = t.strip_prefix("* ").or_else(|| t.strip_prefix("- ")) {
            flush(&mut para, &mut out);
            out.push_str(".IP \\(bu 2\n");
            out.push_str(&block(&lines, item, &mut i, "  "));
        } else if let Some((number, item)) = numbered(t) {
            flush(&mut para, &mut out);
            out.push_str(&format!(".IP {number}. 4\n"));
            out.push_str(&block(&lines, item, &mut i, "   "));
        } else if i + 1 < lines.len() && lines[i + 1].starts_with(": ") {
            flush(&mut para, &mut out);
            out.push_str(".TP\n");
            out.push_str(&text_block(&[t]));
            i += 1;
            out.push_str(&block(&lines, &lines[i][2..], &mut i, "  "));
        } else {
            para.push(t);
            i += 1;
        }
    }
    flush(&mut para, &mut out);
    out
}

/// The first line of a block (without its marker) and the continuation lines after it
/// (indented by `indent`); `i` moves past them.
fn block(lines: &[&str], first: &str, i: &mut usize, indent: &str) -> String {
    let mut raw = vec![first];
    *i += 1;
    while *i < lines.len() && lines[*i].starts_with(indent) && !lines[*i].trim().is_empty() {
        raw.push(lines[*i]);
        *i += 1;
    }
    text_block(&raw)
}

/// Lines of running text: inline markup may span lines (a `code span` wrapped in the
/// source), so it is converted on the joined text, then each output line is made safe.
fn text_block(raw: &[&str]) -> String {
    let joined: Vec<&str> = raw.iter().map(|l| l.trim()).collect();
    let converted = inline(&joined.join("\n"));
    let mut out = String::new();
    for l in converted.lines() {
        out.push_str(&line(l));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            escape("--graph and read-only a\\b"),
            "\\-\\-graph and read-only a\\eb"
        );
        assert_eq!(escape_literal("containers-storage"), "containers\\-storage");
        assert_eq!(escape_literal("a\\-b"), "a\\e\\-b");
        assert_eq!(
            inline("use `--json` or **-j**, *FILE*"),
            "use \\fB\\-\\-json\\fR or \\fB\\-j\\fR, \\fIFILE\\fR"
        );
        assert_eq!(inline("a * b"), "a * b");
        assert_eq!(inline("2*3 `x"), "2*3 `x");
    }

    #[test]
    fn blocks() {
        let md = "First line\nsecond.\n\n.dot line\n\n* one\n  more\n* two\n\n1. n\n   m\n\nAfter.\n\n\
                  **--file** *FILE*\n: Read FILE.\n  Really.\n\n```\n$ cs --json\n```\n### Sub\n";
        let roff = markdown_to_roff(md);
        assert_eq!(
            roff,
            ".PP\nFirst line\nsecond.\n.PP\n\\&.dot line\n.IP \\(bu 2\none\nmore\n.IP \\(bu 2\ntwo\n.IP 1. 4\nn\nm\n\
             .PP\nAfter.\n.TP\n\\fB\\-\\-file\\fR \\fIFILE\\fR\nRead FILE.\nReally.\n\
             .PP\n.RS 4\n.nf\n$ cs \\-\\-json\n.fi\n.RE\n.SS Sub\n"
        );
    }

    #[test]
    fn spans_may_be_wrapped() {
        assert_eq!(
            markdown_to_roff("see `two\nwords` here\n* item `a\n  b`\n"),
            ".PP\nsee \\fBtwo\nwords\\fR here\n.IP \\(bu 2\nitem \\fBa\nb\\fR\n"
        );
    }

    #[test]
    fn splits_sections() {
        let s = sections("intro\n## DESCRIPTION\nText.\n## EXAMPLES\n\nEx.\n");
        assert_eq!(
            s,
            vec![
                ("".to_string(), "intro\n".to_string()),
                ("DESCRIPTION".to_string(), "Text.\n".to_string()),
                ("EXAMPLES".to_string(), "\nEx.\n".to_string()),
            ]
        );
    }
}
