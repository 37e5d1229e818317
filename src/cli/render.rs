//! The text a person reads for `list`, `get`, `stats`, and a single
//! `retry` or `cancel`.
//!
//! Each function turns a parsed reply into lines; times are shown
//! relative to `now` (passed in, so the unit tests are exact). How cells
//! are aligned and coloured belongs to [`super::output`]; `--json` never
//! comes here.

use crate::cli::output::{self, Align, Cell, Palette, Table};
use crate::cli::reply::{Attempt, Page, Stats, View};

/// How much of an attempt's outcome the LAST column shows.
const LAST_WIDTH: usize = 24;

/// How much of an error the attempts table of `get` shows.
const ERROR_WIDTH: usize = 40;

/// How much of a response excerpt the attempts table of `get` shows.
const RESPONSE_WIDTH: usize = 48;

/// How much of the payload the summary of `get` shows.
const PAYLOAD_WIDTH: usize = 72;

/// `list`: one row per delivery, ID first, STATE second, ATTEMPTS third
/// and URL last (scripts that split on blanks rely on that order).
pub fn list(page: &Page, now: u64, palette: Palette) -> String {
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("STATE", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("LAST", Align::Left),
        ("NEXT", Align::Left),
        ("AGE", Align::Left),
        ("URL", Align::Left),
    ]);
    for view in &page.deliveries {
        let last = view.last_attempt().map_or("-".to_owned(), Attempt::outcome);
        table.push(vec![
            Cell::plain(&view.id),
            Cell::state(&view.state),
            Cell::plain(view.attempts.len().to_string()),
            Cell::plain(output::truncate(&last, LAST_WIDTH)),
            Cell::plain(next_attempt(view, now)),
            Cell::plain(output::relative(view.created_at, now)),
            Cell::plain(&view.url),
        ]);
    }

    let mut text = table.render(palette);
    if let Some(cursor) = &page.next_cursor {
        text.push_str(&format!("\nmore: --cursor {cursor}"));
    }
    text
}

/// When the next attempt is due, for the NEXT column and `get`.
fn next_attempt(view: &View, now: u64) -> String {
    match view.next_attempt_at {
        _ if view.state == "delivering" => "running".to_owned(),
        None => "-".to_owned(),
        Some(at) if at + 1000 < now => format!("overdue {}", output::span(now - at)),
        Some(at) => output::relative(at, now),
    }
}

/// `get`: a summary block, then the attempts table.
pub fn get(view: &View, now: u64, palette: Palette) -> String {
    let when = |at: u64| format!("{} ({})", output::relative(at, now), output::local_datetime(at));
    let mut fields = vec![
        ("id", view.id.clone()),
        ("state", palette.state(&view.state)),
        ("url", view.url.clone()),
        ("key", view.key.clone().unwrap_or_else(|| "-".to_owned())),
        ("created", when(view.created_at)),
        ("updated", when(view.updated_at)),
    ];
    match view.next_attempt_at {
        Some(at) if view.state != "delivering" => fields.push(("next attempt", when(at))),
        _ => fields.push(("next attempt", next_attempt(view, now))),
    }
    if let Some(reason) = &view.dead_reason {
        fields.push(("dead reason", reason.replace('_', " ")));
    }
    fields.push(("schedule", schedule(view)));
    if !view.header_names.is_empty() {
        fields.push(("headers", view.header_names.join(", ")));
    }
    if view.signed_with_own_secret {
        fields.push(("signing", "its own secret".to_owned()));
    }
    fields.push(("payload", payload(view)));

    let mut text = output::fields(&fields, palette);
    text.push_str("\n\n");
    text.push_str(&attempts(&view.attempts, now, palette));
    text
}

/// The retry delays and the timeout, e.g. `retries after 10s, 30s, 60s;
/// timeout 5000 ms`.
fn schedule(view: &View) -> String {
    let delays: Vec<String> = view.retry_delays_s.iter().map(|delay| format!("{delay}s")).collect();
    let retries = match delays.is_empty() {
        true => "no retries".to_owned(),
        false => format!("retries after {}", delays.join(", ")),
    };
    format!("{retries}; timeout {} ms", view.timeout_ms)
}

/// The payload's size and its start, as one line.
fn payload(view: &View) -> String {
    let size = output::bytes(view.payload_bytes as u64);
    match &view.payload {
        Some(raw) => format!("{} ({size})", output::truncate(raw.get(), PAYLOAD_WIDTH)),
        None => size,
    }
}

/// The attempts table of `get`, oldest first; a line saying so when
/// there are none.
fn attempts(attempts: &[Attempt], now: u64, palette: Palette) -> String {
    if attempts.is_empty() {
        return "no attempts yet".to_owned();
    }
    let mut table = Table::new(&[
        ("N", Align::Right),
        ("STARTED", Align::Left),
        ("DURATION", Align::Right),
        ("STATUS", Align::Left),
        ("ERROR", Align::Left),
        ("RESPONSE", Align::Left),
    ]);
    for attempt in attempts {
        let status = attempt.status.map_or("-".to_owned(), |status| status.to_string());
        let error = attempt.error.as_deref().unwrap_or("-");
        let response = attempt.response_excerpt.as_deref().filter(|text| !text.trim().is_empty());
        table.push(vec![
            Cell::plain(attempt.number.to_string()),
            Cell::plain(output::relative(attempt.started_at, now)),
            Cell::plain(output::duration(attempt.duration_ms)),
            Cell::styled(status, status_style(attempt.status)),
            Cell::plain(output::truncate(error, ERROR_WIDTH)),
            Cell::plain(
                response.map_or("-".to_owned(), |text| output::truncate(text, RESPONSE_WIDTH)),
            ),
        ]);
    }
    table.render(palette)
}

/// A 2xx reads as delivered and anything else as a failure.
fn status_style(status: Option<u16>) -> anstyle::Style {
    match status {
        Some(200..=299) => output::state_style("delivered"),
        Some(_) => anstyle::AnsiColor::Red.on_default(),
        None => anstyle::Style::new(),
    }
}

/// `stats`: counts by state, the last minute, the oldest pending
/// delivery and the store's size, in three blocks.
pub fn stats(stats: &Stats, now: u64, palette: Palette) -> String {
    // Only counts that are not zero are coloured, so the eye finds them.
    let count = |number: u64, state: &str| match number {
        0 => "0".to_owned(),
        _ => palette.paint(&number.to_string(), output::state_style(state)),
    };
    let counts = [
        ("pending", count(stats.pending, "pending")),
        ("in flight", count(stats.in_flight, "delivering")),
        ("delivered", count(stats.delivered, "delivered")),
        ("dead", count(stats.dead, "dead")),
        ("cancelled", count(stats.cancelled, "cancelled")),
        ("superseded", count(stats.superseded, "superseded")),
    ];

    let minute = &stats.last_minute;
    let rates = [
        ("submitted", format!("{}/min", minute.submitted)),
        ("delivered", format!("{}/min", minute.delivered)),
        ("failed attempts", format!("{}/min", minute.failed_attempts)),
    ];
    let rates = output::fields(&rates, palette)
        .lines()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n");

    let rest = [
        ("oldest pending", oldest_pending(stats, now)),
        ("store size", output::bytes(stats.store_size_bytes)),
        ("version", stats.version.clone()),
    ];
    [
        output::fields(&counts, palette),
        format!("{}\n{rates}", palette.paint("last minute", output::heading_style())),
        output::fields(&rest, palette),
    ]
    .join("\n\n")
}

/// The pending delivery waiting longest, and how long it has waited.
fn oldest_pending(stats: &Stats, now: u64) -> String {
    match &stats.oldest_pending {
        None => "-".to_owned(),
        Some(oldest) => format!(
            "{}, waiting {}, next attempt {}",
            oldest.id,
            output::span(now.saturating_sub(oldest.created_at)),
            output::relative(oldest.next_attempt_at, now),
        ),
    }
}

/// The line after `retry ID` or `cancel ID`.
pub fn changed(verb_past: &str, view: &View, now: u64, palette: Palette) -> String {
    let next = match view.next_attempt_at {
        Some(at) => format!(", next attempt {}", output::relative(at, now)),
        None => String::new(),
    };
    format!("{verb_past} {} ({}{next})", view.id, palette.state(&view.state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::ColorChoice;
    use crate::cli::reply::{LastMinute, OldestPending};

    const NOW: u64 = 1_750_000_000_000;

    fn plain() -> Palette {
        Palette::for_stdout(ColorChoice::Never)
    }

    fn failed_view() -> View {
        View {
            id: "01ID".into(),
            url: "http://example.com/h".into(),
            state: "pending".into(),
            created_at: NOW - 180_000,
            updated_at: NOW - 5_000,
            next_attempt_at: Some(NOW + 9_000),
            retry_delays_s: vec![10.0, 30.0],
            timeout_ms: 5000,
            payload_bytes: 12,
            attempts: vec![Attempt {
                number: 1,
                started_at: NOW - 5_000,
                duration_ms: 1_250,
                status: None,
                error: Some("connection refused".into()),
                response_excerpt: None,
            }],
            ..View::default()
        }
    }

    #[test]
    fn list_rows_show_the_last_outcome_and_relative_times() {
        let page = Page { deliveries: vec![failed_view()], next_cursor: Some("01ID".into()) };

        let text = list(&page, NOW, plain());

        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["ID", "STATE", "ATTEMPTS", "LAST", "NEXT", "AGE", "URL"]
        );
        assert_eq!(
            lines[1],
            "01ID  pending         1  connection refused  in 9s  3m ago  http://example.com/h"
        );
        assert_eq!(lines[2], "more: --cursor 01ID");
    }

    #[test]
    fn get_shows_a_summary_and_the_attempts() {
        let text = get(&failed_view(), NOW, plain());

        assert!(text.starts_with("id            01ID\nstate         pending\n"), "{text}");
        assert!(text.contains("\nnext attempt  in 9s ("), "{text}");
        assert!(
            text.contains("\nschedule      retries after 10s, 30s; timeout 5000 ms\n"),
            "{text}"
        );
        assert!(text.contains("\npayload       12 B\n"), "{text}");
        assert!(text.ends_with("1  5s ago       1.2s  -       connection refused  -"), "{text}");
    }

    #[test]
    fn stats_show_counts_rates_and_the_oldest_pending_delivery() {
        let stats_reply = Stats {
            version: "0.1.0".into(),
            pending: 4,
            dead: 1,
            last_minute: LastMinute { submitted: 30, delivered: 25, failed_attempts: 2 },
            oldest_pending: Some(OldestPending {
                id: "01OLD".into(),
                created_at: NOW - 120_000,
                next_attempt_at: NOW + 10_000,
            }),
            store_size_bytes: 3 * 1024 * 1024,
            ..Stats::default()
        };

        let text = stats(&stats_reply, NOW, plain());

        assert!(text.starts_with("pending     4\nin flight   0\n"), "{text}");
        assert!(text.contains("last minute\n  submitted        30/min\n"), "{text}");
        assert!(
            text.contains("oldest pending  01OLD, waiting 2m, next attempt in 10s\n"),
            "{text}"
        );
        assert!(text.contains("store size      3.0 MiB"), "{text}");
    }
}
