//! Figures: collecting them, comparing them with the machine limits, and
//! printing them.
//!
//! Every measured number becomes a [`Figure`] keyed by workload, size, run
//! and metric. With `--json FILE` each one is written as it is recorded,
//! one JSON object per line, so an interrupted run keeps what it measured
//! and several runs can be aggregated by any tool. At the end the table
//! shows per workload, size and metric the median over the runs, the
//! min–max spread, and the median against the machine limit that bounds
//! it. Measuring is left to the workloads and `limits`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;

/// A machine limit measured by `limits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// fdatasync calls per second on the data dir's disk.
    Fsync,
    /// Raw HTTP requests per second to the receiver over 64 connections.
    Loopback64,
    /// The same over 32 connections, hookd's default per-host limit.
    Loopback32,
}

impl Limit {
    const ALL: [Limit; 3] = [Limit::Fsync, Limit::Loopback64, Limit::Loopback32];

    fn name(self) -> &'static str {
        match self {
            Limit::Fsync => "fsync/s",
            Limit::Loopback64 => "loopback(64)",
            Limit::Loopback32 => "loopback(32)",
        }
    }
}

/// How a figure relates to a machine limit.
#[derive(Clone, Copy, Debug)]
pub enum Against {
    Nothing,
    /// The figure as a share of the limit: deliveries/s vs requests/s.
    Share(Limit),
    /// The figure divided by the limit, named: submissions/s over fsync/s
    /// is how many submissions each flush must carry at least.
    Per(Limit, &'static str),
}

/// Which run of which workload a figure belongs to.
#[derive(Clone, Copy, Debug)]
pub struct RunKey {
    pub workload: &'static str,
    pub size: Option<usize>,
    /// 1-based.
    pub run: u32,
}

impl RunKey {
    /// A figure of this run, not compared with any limit.
    pub fn figure(&self, metric: &'static str, value: f64, unit: &'static str) -> Figure {
        Figure { key: *self, metric, value, unit, against: Against::Nothing }
    }
}

/// One measured number.
#[derive(Clone, Copy, Debug)]
pub struct Figure {
    pub key: RunKey,
    pub metric: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub against: Against,
}

impl Figure {
    pub fn against(self, against: Against) -> Figure {
        Figure { against, ..self }
    }
}

/// Every figure of the whole run.
pub struct Report {
    figures: Vec<Figure>,
    /// The measured limits by [`Limit::ALL`] position; `None` when
    /// `limits` was not selected.
    limits: [Option<f64>; 3],
    /// The `--json` file, written line by line.
    json: Option<BufWriter<File>>,
}

impl Report {
    pub fn new(json: Option<&Path>) -> anyhow::Result<Report> {
        let json = match json {
            Some(path) => Some(BufWriter::new(
                File::create(path).with_context(|| format!("create {}", path.display()))?,
            )),
            None => None,
        };
        Ok(Report { figures: Vec::new(), limits: [None; 3], json })
    }

    /// Keeps `figure` and writes it to the JSON file at once.
    pub fn record(&mut self, figure: Figure) -> anyhow::Result<()> {
        if let Some(json) = self.json.as_mut() {
            let line = serde_json::json!({
                "workload": figure.key.workload,
                "size": figure.key.size,
                "run": figure.key.run,
                "metric": figure.metric,
                "value": figure.value,
                "unit": figure.unit,
            });
            writeln!(json, "{line}").and_then(|()| json.flush()).context("write the JSON file")?;
        }
        self.figures.push(figure);
        Ok(())
    }

    /// Records several figures.
    pub fn record_all(&mut self, figures: Vec<Figure>) -> anyhow::Result<()> {
        figures.into_iter().try_for_each(|figure| self.record(figure))
    }

    /// Sets a limit that later figures are compared with.
    pub fn set_limit(&mut self, limit: Limit, value: f64) {
        if let Some(index) = Limit::ALL.iter().position(|known| *known == limit) {
            self.limits[index] = Some(value);
        }
    }

    /// The median of a limit's runs, once measured.
    pub fn limit(&self, limit: Limit) -> Option<f64> {
        Limit::ALL.iter().position(|known| *known == limit).and_then(|index| self.limits[index])
    }

    /// The summary table: one row per workload, size and metric.
    pub fn print_table(&self) {
        let mut rows = vec![
            ["workload", "size", "metric", "median", "min–max", "unit", "runs", "vs limit"]
                .map(str::to_owned),
        ];
        for group in self.groups() {
            let mut values: Vec<f64> = group.iter().map(|figure| figure.value).collect();
            values.sort_by(f64::total_cmp);
            let first = group[0];
            let median = median(&values);
            rows.push([
                first.key.workload.to_owned(),
                first.key.size.map_or_else(String::new, |size| number(size as f64)),
                first.metric.to_owned(),
                number(median),
                format!("{}–{}", number(values[0]), number(values[values.len() - 1])),
                first.unit.to_owned(),
                values.len().to_string(),
                self.compare(median, first.against),
            ]);
        }

        let mut widths = [0usize; 8];
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell}{}", " ".repeat(width - cell.chars().count())))
                .collect();
            println!("{}", cells.join("  ").trim_end());
        }
    }

    /// Figures grouped by workload, size and metric, in recording order.
    fn groups(&self) -> Vec<Vec<Figure>> {
        let mut groups: Vec<Vec<Figure>> = Vec::new();
        for figure in &self.figures {
            let same = |other: &Figure| {
                other.key.workload == figure.key.workload
                    && other.key.size == figure.key.size
                    && other.metric == figure.metric
            };
            match groups.iter_mut().find(|group| same(&group[0])) {
                Some(group) => group.push(*figure),
                None => groups.push(vec![*figure]),
            }
        }
        groups
    }

    fn compare(&self, value: f64, against: Against) -> String {
        match against {
            Against::Nothing => String::new(),
            Against::Share(limit) => match self.limit(limit) {
                Some(bound) => format!("{:.0}% of {}", 100.0 * value / bound, limit.name()),
                None => format!("({} not measured)", limit.name()),
            },
            Against::Per(limit, what) => match self.limit(limit) {
                Some(bound) => format!("{} {what}", number(value / bound)),
                None => format!("({} not measured)", limit.name()),
            },
        }
    }
}

/// The median of sorted values (the mean of the middle two for an even
/// count); 0 for none.
pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        count if count % 2 == 1 => sorted[count / 2],
        count => (sorted[count / 2 - 1] + sorted[count / 2]) / 2.0,
    }
}

/// The nearest-rank percentile `p` (0 to 100) of sorted values; 0 for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A number for people: thousands separated, decimals only where small.
pub fn number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    // Counts are whole numbers and read better without decimals.
    if value.fract() == 0.0 && value.abs() < 1e15 {
        return group_thousands(value);
    }
    if value.abs() < 10.0 {
        return format!("{value:.2}");
    }
    if value.abs() < 1000.0 {
        return format!("{value:.1}");
    }
    group_thousands(value)
}

/// `value` rounded to a whole number, with commas between thousands.
fn group_thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < 0.0 { format!("-{grouped}") } else { grouped }
}
