//! Text for a guest, a job's record or a person at the CLI: errors (what
//! happened, in words, once, on one line, and bounded), quoted fragments in
//! messages, and sizes.
//!
//! Every error a job or a record can see is rendered here, never with `{:?}`
//! (which appends a host backtrace when `RUST_BACKTRACE` is set in the
//! worker's environment) and never with a bare `{:#}` (which repeats a cause
//! whose text is already in the message, and pulls a wasm backtrace into the
//! message when a trap carries one). So what a guest or a record sees does not
//! depend on the host's environment.

use std::error::Error as StdError;

/// Longest rendered error, bytes. A longer one is cut on a character boundary
/// and ends with a note of how much was cut.
pub const MESSAGE_MAX: usize = 2048;

/// What a wasmtime error says: each layer's first line, outermost first,
/// joined by `: `, a layer already said skipped (see [`chain`]).
pub fn error(err: &wasmtime::Error) -> String {
    chain(err.chain())
}

/// As [`error`], for an `anyhow` error (CLI and deploy paths).
pub fn anyhow(err: &anyhow::Error) -> String {
    chain(err.chain())
}

/// As [`error`], for any error and its sources.
pub fn std(err: &(dyn StdError + 'static)) -> String {
    chain(std::iter::successors(
        Some(err),
        |e: &&(dyn StdError + 'static)| (*e).source(),
    ))
}

/// What the CLI prints for a failed command (after `error: `): each layer of
/// `err` whole (a deploy's list of problems keeps its lines), outermost first,
/// joined by `: `, a layer whose text was already said left out. Bounded by
/// [`CLI_MAX`].
pub fn cli(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || out.contains(text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    crate::job::bounded(&out, CLI_MAX).into_owned()
}

/// Longest error the CLI prints, bytes.
pub const CLI_MAX: usize = 64 << 10;

/// Renders a chain of causes, outermost first: the first line of each, joined
/// by `: `. A cause whose text the message already holds (an I/O error
/// wrapped by a client that already printed it, the same Redis error at three
/// levels) is left out, and so is a wasm backtrace (a record keeps it apart,
/// in its `backtrace`). Bounded by [`MESSAGE_MAX`].
pub fn chain<'a>(causes: impl Iterator<Item = &'a (dyn StdError + 'static)>) -> String {
    let mut out = String::new();
    for cause in causes {
        let text = cause.to_string();
        let first = first_line(&text);
        if first.is_empty() || first.starts_with("error while executing at wasm backtrace") {
            continue;
        }
        if out.contains(first) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(first);
        if out.len() > MESSAGE_MAX {
            break;
        }
    }
    if out.is_empty() {
        out.push_str("an error without a message");
    }
    line(&out)
}

/// `text` as one bounded line: its lines joined by a space, cut to
/// [`MESSAGE_MAX`] bytes with a note of how much was cut (see
/// [`crate::job::bounded`]). Only the first [`MESSAGE_MAX`] bytes are copied.
pub fn line(text: &str) -> String {
    let head = crate::job::truncate(text, MESSAGE_MAX);
    let joined: String = if head.contains(['\n', '\r']) {
        head.split(['\n', '\r'])
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        head.to_owned()
    };
    // Lines joined by one space never grow: `joined` fits when `text` did.
    let dropped = text.len() - head.len();
    crate::job::bounded_of(&joined, MESSAGE_MAX, joined.len() + dropped)
}

/// `text` as a short quote inside a message: control characters as spaces,
/// cut to at most `max` bytes on a character boundary, `...` where cut.
pub fn quote(text: &str, max: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() <= max {
        return line;
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

/// Human-readable bytes.
pub fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quote_is_one_short_line() {
        assert_eq!(quote("a\nb", 10), "a b");
        assert_eq!(quote("ééé", 3), "é...");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Layer(String, #[source] Option<Box<Layer>>);

    fn layers(texts: &[&str]) -> Layer {
        let mut e: Option<Box<Layer>> = None;
        for t in texts.iter().rev() {
            e = Some(Box::new(Layer(t.to_string(), e)));
        }
        *e.unwrap()
    }

    #[test]
    fn a_chain_says_each_cause_once() {
        let e = layers(&[
            "cannot reach Redis at 127.0.0.1:1",
            "Connection refused (os error 111)",
            "Connection refused (os error 111)",
        ]);
        assert_eq!(
            std(&e),
            "cannot reach Redis at 127.0.0.1:1: Connection refused (os error 111)"
        );
    }

    #[test]
    fn rendering_is_one_bounded_line_whatever_the_environment() {
        // SAFETY: tests of this module do not read the environment concurrently.
        unsafe { std::env::set_var("RUST_BACKTRACE", "1") };
        let e = anyhow::anyhow!("inner").context("outer");
        let text = anyhow(&e);
        assert_eq!(text, "outer: inner");
        let huge = layers(&[&"é".repeat(10_000), "second\nline"]);
        let text = std(&huge);
        assert!(text.len() <= MESSAGE_MAX, "{}", text.len());
        assert!(text.ends_with("bytes cut]"), "{text}");
        assert!(!text.contains('\n'));
        let w = wasmtime::Error::msg("host said no").context("while saving");
        assert_eq!(error(&w), "while saving: host said no");
    }
}
