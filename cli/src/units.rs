//! How numbers and names look in human output.

use memtrack::format::kind;

/// The report name of a kind code (`KIND_<n>` for codes without one).
pub fn kind_name(code: u8) -> String {
    kind::name(code).map_or_else(|| format!("KIND_{code}"), str::to_owned)
}

/// `512 B`, `4.0 KiB`, `1.5 GiB`.
pub fn human_bytes(bytes: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", units[unit]) }
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
        assert_eq!(human_bytes(12 << 30), "12.0 GiB");
        assert_eq!(human_ns(1_500_000_000), "1.500 s");
        assert_eq!(human_ns(3_200_000), "3.2 ms");
        assert_eq!(kind_name(5), "CB");
        assert_eq!(kind_name(9), "KIND_9");
    }
}
