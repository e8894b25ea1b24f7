//! How numbers and names look in human output.

use std::borrow::Cow;
use std::fmt::Write as _;

use memtrack::format::kind;

/// `text` safe to print on a terminal: every control character (C0, DEL,
/// C1: ESC, OSC, newlines), every bidirectional-override character, and
/// the backslash that would make the escapes ambiguous, written as a Rust
/// escape (`\x1b`, `\n`, `\u{9b}`, `\\`). Process names and mark labels
/// come from the writers: one holding `ESC ]52;...` would otherwise write
/// the reader's clipboard, `ESC c` clear its screen, a newline fake a row.
/// Every text output passes writer-supplied names through this.
pub fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || c == '\\' || is_bidi_control(c);
    if !text.contains(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x80 && unsafe_char(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Characters that reorder the text around them (U+202A..U+202E,
/// U+2066..U+2069): a label could make a line read differently than it is.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A path, [`printable`].
pub fn printable_path(path: &std::path::Path) -> String {
    printable(&path.to_string_lossy()).into_owned()
}

/// The report name of a kind code (`KIND_<n>` for codes without one).
pub fn kind_name(code: u8) -> String {
    kind::name(code).map_or_else(|| format!("KIND_{code}"), str::to_owned)
}

/// `512 B`, `4.0 KiB`, `1.5 GiB`, `16.0 EiB`: any size (`u64`, up to
/// 2^64 − 1 bytes) and any signed amount (`i64`, or the exact `i128`
/// difference of two sizes) prints as what it is, never wrapped to a
/// negative number.
pub fn human_bytes(bytes: impl Into<i128>) -> String {
    let bytes: i128 = bytes.into();
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", units[unit]) }
}

/// `b − a` exactly: two sizes differ by up to ±(2^64 − 1), which no `i64`
/// holds.
pub fn difference(a: u64, b: u64) -> i128 {
    i128::from(b) - i128::from(a)
}

/// `n` as a JSON number: exact wherever JSON integers reach (the `i64` and
/// `u64` ranges), else the nearest double (a difference below −2^63).
pub fn json_number(n: i128) -> serde_json::Value {
    if let Ok(n) = i64::try_from(n) {
        n.into()
    } else if let Ok(n) = u64::try_from(n) {
        n.into()
    } else {
        (n as f64).into()
    }
}

/// `12.345 s`, `3.2 ms`, `15 µs` for a duration in nanoseconds.
pub fn human_ns(ns: u64) -> String {
    match ns {
        n if n >= 1_000_000_000 => format!("{:.3} s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} ms", n as f64 / 1e6),
        n => format!("{} µs", n / 1000),
    }
}

/// Whether to colour stderr/stdout: only on a terminal, never with NO_COLOR.
pub fn use_colour(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// `text` in red when `colour`.
pub fn red(text: &str, colour: bool) -> String {
    if colour { format!("\x1b[1;31m{text}\x1b[0m") } else { text.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_naturally() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(4096), "4.0 KiB");
        assert_eq!(human_bytes(-3 << 20), "-3.0 MiB");
        assert_eq!(human_bytes(12i64 << 30), "12.0 GiB");
        assert_eq!(human_ns(1_500_000_000), "1.500 s");
        assert_eq!(human_ns(3_200_000), "3.2 ms");
        assert_eq!(kind_name(5), "CB");
        assert_eq!(kind_name(9), "KIND_9");
    }

    #[test]
    fn sizes_print_unsigned_and_differences_exactly() {
        assert_eq!(human_bytes(1u64 << 43), "8.0 TiB");
        assert_eq!(human_bytes(1u64 << 63), "8.0 EiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
        assert_eq!(human_bytes(1023u64), "1023 B");
        assert_eq!(human_bytes(i64::MIN), "-8.0 EiB");
        assert_eq!(difference(u64::MAX, 0), -(u64::MAX as i128));
        assert_eq!(human_bytes(difference(u64::MAX, 0)), "-16.0 EiB");
        assert_eq!(human_bytes(difference(0, u64::MAX)), "16.0 EiB");
        assert_eq!(json_number(difference(0, u64::MAX)), serde_json::json!(u64::MAX));
        assert_eq!(json_number(difference(5, 2)), serde_json::json!(-3));
        assert_eq!(json_number(difference(u64::MAX, 0)), serde_json::json!(-(u64::MAX as f64)));
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(printable("model-1 ünï"), Cow::Borrowed("model-1 ünï")));
        assert_eq!(printable("a\x1b]52;c;aGk=\x07b"), "a\\x1b]52;c;aGk=\\x07b");
        assert_eq!(printable("x\ny\rz\t"), "x\\ny\\rz\\t");
        assert_eq!(printable("\x7f\u{9b}2J"), "\\x7f\\u{9b}2J");
        assert_eq!(printable("\x00"), "\\x00");
        assert_eq!(printable("a\\x1b"), "a\\\\x1b", "a backslash cannot forge an escape");
        assert_eq!(printable("\u{202e}txt"), "\\u{202e}txt");
        for c in (0..=0x10ffffu32).filter_map(char::from_u32) {
            let out = printable(&c.to_string()).into_owned();
            assert!(!out.chars().any(|c| c.is_control()), "{c:?} -> {out:?}");
        }
    }
}
