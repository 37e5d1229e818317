//! Log output: plain `tracing` lines on stderr, shaped for the journal when
//! systemd captures them.
//!
//! When `JOURNAL_STREAM` is set, stderr goes to journald, which stamps each
//! line itself and reads a `<N>` syslog priority prefix. Lines then carry
//! that prefix, no ANSI colours and no timestamp of their own, so
//! `journalctl -p warning` shows exactly hookd's warnings and errors.
//! Elsewhere lines have timestamps, and colours only on a terminal.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, format};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber. `HOOKD_LOG` (or `RUST_LOG`) filters,
/// default `info`.
pub fn init() {
    let filter = std::env::var("HOOKD_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr);

    if std::env::var_os("JOURNAL_STREAM").is_some() {
        let journal = JournalFormat { inner: format().without_time().with_ansi(false) };
        builder.with_ansi(false).event_format(journal).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// The default format behind a syslog priority prefix.
struct JournalFormat {
    inner: Format<format::Full, ()>,
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.inner.format_event(context, writer, event)
    }
}

/// syslog priorities: error 3, warning 4, info 6, debug 7.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}
