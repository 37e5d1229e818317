//! How the CLI's text looks: aligned tables, relative and local times,
//! sizes, truncation, colour, and writing to stdout.
//!
//! Everything here formats plain values; what a verb shows is decided in
//! [`super::render`]. Colour is only ever a wrapper around text that reads
//! the same without it, and it is switched on only for a terminal (see
//! [`Palette::for_stdout`]), so pipes and files get plain text.

use std::io::{IsTerminal, Write};

use anstyle::{AnsiColor, Effects, Style};

/// When to colour stdout, from `--color`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal and `NO_COLOR` is not set.
    #[default]
    Auto,
    /// Colour even into a pipe or file.
    Always,
    /// Plain text everywhere.
    Never,
}

/// The styles of stdout text; every style is plain when colour is off.
#[derive(Clone, Copy, Debug)]
pub struct Palette {
    enabled: bool,
}

impl Palette {
    /// The palette for stdout under `choice`. `NO_COLOR` counts when it is
    /// set to anything but the empty string, as no-color.org asks.
    pub fn for_stdout(choice: ColorChoice) -> Palette {
        let enabled = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
                std::io::stdout().is_terminal() && !no_color
            }
        };
        Palette { enabled }
    }

    /// Wraps `text` in `style` when colour is on.
    pub fn paint(&self, text: &str, style: Style) -> String {
        if !self.enabled || style == Style::new() {
            return text.to_owned();
        }
        format!("{}{text}{}", style.render(), style.render_reset())
    }

    /// A state word in its colour.
    pub fn state(&self, state: &str) -> String {
        self.paint(state, state_style(state))
    }
}

/// The colour of each state: green for done, red for given up, yellow
/// for waiting, cyan for running, dim for dropped on purpose.
pub fn state_style(state: &str) -> Style {
    match state {
        "delivered" => AnsiColor::Green.on_default(),
        "dead" => AnsiColor::Red.on_default().effects(Effects::BOLD),
        "pending" => AnsiColor::Yellow.on_default(),
        "delivering" => AnsiColor::Cyan.on_default(),
        "cancelled" | "superseded" => Style::new().effects(Effects::DIMMED),
        _ => Style::new(),
    }
}

/// The style of table headings and labels.
pub fn heading_style() -> Style {
    Style::new().effects(Effects::BOLD)
}

/// One table cell: its text and how to colour it.
#[derive(Clone, Debug)]
pub struct Cell {
    text: String,
    style: Style,
}

impl Cell {
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell { text: text.into(), style: Style::new() }
    }

    pub fn styled(text: impl Into<String>, style: Style) -> Cell {
        Cell { text: text.into(), style }
    }

    /// A state word, coloured as [`state_style`] says.
    pub fn state(state: &str) -> Cell {
        Cell::styled(state, state_style(state))
    }
}

/// Which side of its column a cell's text keeps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table whose columns are as wide as their widest cell, two spaces
/// apart. The last column is never padded, so lines carry no trailing
/// blanks and a long URL does not widen the others.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Adds a row; it must have one cell per column.
    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// The table as lines, the heading first.
    pub fn render(&self, palette: Palette) -> String {
        let widths = self.widths();
        let heading: Vec<Cell> =
            self.columns.iter().map(|(name, _)| Cell::styled(*name, heading_style())).collect();

        let mut lines = Vec::with_capacity(self.rows.len() + 1);
        for row in std::iter::once(&heading).chain(&self.rows) {
            lines.push(self.line(row, &widths, palette));
        }
        lines.join("\n")
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.columns.iter().map(|(name, _)| width(name)).collect();
        for row in &self.rows {
            for (column, cell) in row.iter().enumerate() {
                widths[column] = widths[column].max(width(&cell.text));
            }
        }
        widths
    }

    fn line(&self, row: &[Cell], widths: &[usize], palette: Palette) -> String {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            let padding = " ".repeat(widths[column] - width(&cell.text));
            let painted = palette.paint(&cell.text, cell.style);
            match self.columns[column].1 {
                Align::Right => line.push_str(&format!("{padding}{painted}")),
                Align::Left if column == last => line.push_str(&painted),
                Align::Left => line.push_str(&format!("{painted}{padding}")),
            }
            if column != last {
                line.push_str("  ");
            }
        }
        line
    }
}

/// Label and value lines with the values lined up, as `get` and `stats`
/// show them. Labels are coloured as headings.
pub fn fields(pairs: &[(&str, String)], palette: Palette) -> String {
    let label_width = pairs.iter().map(|(label, _)| width(label)).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(label, value)| {
            let padding = " ".repeat(label_width - width(label));
            format!("{}{padding}  {value}", palette.paint(label, heading_style()))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The width of `text` on a terminal, counting one column per character;
/// the CLI only prints text where that holds.
fn width(text: &str) -> usize {
    text.chars().count()
}

/// `text` on one line of at most `max` characters: control characters
/// and runs of blanks become one space, and a cut shows as `…`.
pub fn truncate(text: &str, max: usize) -> String {
    let one_line = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if width(&one_line) <= max {
        return one_line;
    }
    let kept: String = one_line.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// Now, in wall-clock unix milliseconds, to compare with the daemon's
/// times (it runs on the same machine).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// `at` as seen from `now`: `in 9s`, `3m ago`, or `now` within a second.
pub fn relative(at_ms: u64, now_ms: u64) -> String {
    if at_ms.abs_diff(now_ms) < 1000 {
        return "now".to_owned();
    }
    if at_ms > now_ms {
        format!("in {}", span(at_ms - now_ms))
    } else {
        format!("{} ago", span(now_ms - at_ms))
    }
}

/// A length of time in its largest whole unit: `42s`, `3m`, `5h`, `2d`.
pub fn span(ms: u64) -> String {
    let seconds = ms / 1000;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86_400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

/// An attempt's duration: `85ms`, `1.2s`, or [`span`] past a minute.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => span(ms),
    }
}

/// A size in bytes with a binary unit: `512 B`, `1.5 KiB`, `64.0 MiB`.
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A moment in this machine's time zone, `2025-06-01 14:03:09`.
pub fn local_datetime(ms: u64) -> String {
    match local_fields(ms) {
        Some(tm) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        ),
        None => format!("{ms} ms"),
    }
}

/// The time of day of a moment in this machine's time zone, `14:03:09`.
pub fn local_clock(ms: u64) -> String {
    match local_fields(ms) {
        Some(tm) => format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec),
        None => format!("{ms} ms"),
    }
}

/// Splits a moment into calendar fields with the C library, which knows
/// the local time zone (`TZ`, `/etc/localtime`).
fn local_fields(ms: u64) -> Option<libc::tm> {
    let seconds = libc::time_t::try_from(ms / 1000).ok()?;
    // SAFETY: `tm` is plain data for which all zeroes is a valid value, and
    // `localtime_r` only writes into the struct it is given (unlike
    // `localtime`, it keeps no shared state), returning null on failure.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let filled = unsafe { libc::localtime_r(&seconds, &mut tm) };
    (!filled.is_null()).then_some(tm)
}

/// Writes `text` and a newline to stdout and flushes; `false` when the
/// reader is gone (`hookd list | head -1`), which is not an error: the
/// caller stops writing and exits 0.
pub fn print(text: &str) -> bool {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").and_then(|()| stdout.flush()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_both_ways() {
        let now = 1_000_000_000;
        assert_eq!(relative(now + 9_400, now), "in 9s");
        assert_eq!(relative(now - 3 * 60_000 - 5_000, now), "3m ago");
        assert_eq!(relative(now + 300, now), "now");
        assert_eq!(relative(now - 2 * 86_400_000, now), "2d ago");
        assert_eq!(span(3_600_000 * 5), "5h");
    }

    #[test]
    fn sizes_and_durations_pick_a_readable_unit() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(64 * 1024 * 1024), "64.0 MiB");
        assert_eq!(duration(85), "85ms");
        assert_eq!(duration(1_250), "1.2s");
    }

    #[test]
    fn truncation_keeps_one_line_and_marks_the_cut() {
        assert_eq!(truncate("a\n  b\tc", 10), "a b c");
        assert_eq!(truncate("abcdefghij", 5), "abcd…");
    }

    #[test]
    fn tables_align_columns_and_leave_the_last_unpadded() {
        let mut table =
            Table::new(&[("ID", Align::Left), ("N", Align::Right), ("URL", Align::Left)]);
        table.push(vec![Cell::plain("abc"), Cell::plain("7"), Cell::plain("http://x")]);
        table.push(vec![Cell::plain("a"), Cell::plain("12"), Cell::plain("y")]);

        let text = table.render(Palette { enabled: false });

        assert_eq!(text, "ID    N  URL\nabc   7  http://x\na    12  y");
    }

    #[test]
    fn colour_wraps_text_only_when_enabled() {
        let on = Palette { enabled: true };
        let off = Palette { enabled: false };

        assert_eq!(off.state("dead"), "dead");
        assert!(on.state("dead").starts_with('\u{1b}') && on.state("dead").contains("dead"));
        assert_eq!(on.state("unknown"), "unknown");
    }
}
