//! Where a YAML reader's error should point, and what it should say: the
//! line a reader would fix, not where the parser gave up. The reader
//! reports an unclosed `{` or `[` where it next stumbles (often the line
//! after), and a key indented deeper than its siblings as a bad value on the
//! line above (YAML reads the deeper line as the value's continuation); both
//! are moved to the line at fault, with a hint. The reader's own
//! `line N column M:` prefix is dropped, so the location is printed once.

/// A 1-based line and column, as the reader reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub line: u64,
    pub column: u64,
}

/// The location and message to report for a reader error at `loc` with
/// `message` (its first line), in `text`.
pub fn locate(text: &str, loc: Loc, message: &str) -> (Loc, String) {
    let message = strip_position(message);
    // A bracket left open above the error is where the fix goes, whatever
    // the reader stumbled on after it.
    if let Some(open) = unclosed_flow(text, loc) {
        let hint = format!(
            "the `{}` opened here is not closed (the reader stumbled at line {} column {}: {message})",
            open.1, loc.line, loc.column
        );
        return (open.0, hint);
    }
    // Only a value the reader could not take: an unknown or missing key is
    // about the key's own line.
    if message.starts_with("invalid")
        && let Some(next) = continued_scalar(text, loc)
    {
        let hint = format!(
            "{message}: this line is indented deeper than the key on line {}, so YAML reads it \
             as part of that key's value; align it with its sibling keys",
            loc.line
        );
        return (next, hint);
    }
    (loc, message.to_string())
}

/// The message without the reader's leading `error:` and `line N column M:`.
fn strip_position(message: &str) -> &str {
    let m = message.trim();
    let m = m.strip_prefix("error:").map_or(m, str::trim_start);
    let Some(rest) = m.strip_prefix("line ") else {
        return m;
    };
    let mut words = rest.splitn(4, ' ');
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some(l), Some("column"), Some(c), Some(tail))
            if l.chars().all(|x| x.is_ascii_digit())
                && c.trim_end_matches(':').chars().all(|x| x.is_ascii_digit()) =>
        {
            tail
        }
        _ => m,
    }
}

/// The last `{` or `[` still open at `loc` (outside quotes and comments),
/// when it is on an earlier line: where the missing `}` or `]` belongs.
fn unclosed_flow(text: &str, loc: Loc) -> Option<(Loc, char)> {
    let mut open: Vec<(Loc, char)> = Vec::new();
    for (i, line) in text.lines().enumerate().take(loc.line as usize) {
        let (mut quote, mut prev): (Option<char>, char) = (None, ' ');
        for (j, c) in line.chars().enumerate() {
            if i + 1 == loc.line as usize && j + 1 >= loc.column as usize {
                break;
            }
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') if prev == ' ' => break,
                (None, '{' | '[') => open.push((
                    Loc {
                        line: i as u64 + 1,
                        column: j as u64 + 1,
                    },
                    c,
                )),
                (None, '}' | ']') => {
                    open.pop();
                }
                _ => {}
            }
            prev = c;
        }
    }
    open.pop().filter(|(l, _)| l.line < loc.line)
}

/// Where a plain value starting at `loc` continues on a deeper-indented
/// line holding `key: value`: a key indented too far, which YAML folds into
/// the value above it.
fn continued_scalar(text: &str, loc: Loc) -> Option<Loc> {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(loc.line as usize - 1)?;
    let value = here.get(loc.column as usize - 1..)?;
    if value.is_empty() || value.starts_with(['"', '\'', '[', '{', '|', '>', '&', '*', '!']) {
        return None;
    }
    let indent = |l: &str| l.len() - l.trim_start().len();
    let next = lines.get(loc.line as usize)?;
    let deeper = !next.trim().is_empty() && indent(next) > indent(here);
    (deeper && next.contains(": ")).then(|| Loc {
        line: loc.line + 1,
        column: indent(next) as u64 + 1,
    })
}
