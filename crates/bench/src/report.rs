//! Figures a run produces and how they are shown: latency percentiles taken from an
//! HdrHistogram, and a two-column text table for the terminal.

use std::fmt;

use crate::process::Kib;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram records, in microseconds (one hour); longer values are clamped.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A histogram of latencies in microseconds, 3 significant digits, 1 µs to one hour.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Records a latency, clamping it to the histogram's range so recording never fails.
pub fn record_latency(histogram: &mut Histogram<u64>, micros: u64) {
    histogram.saturating_record(micros.clamp(1, MAX_LATENCY_US));
}

/// Percentiles of one latency histogram, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    /// Summarises a histogram; `None` when it holds no value.
    pub fn from_histogram(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        Some(Self {
            count: histogram.len(),
            min_us: histogram.min(),
            mean_us: histogram.mean(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        })
    }

    /// `p50 / p99 / p99.9 / max` on one line.
    pub fn percentiles_line(&self) -> String {
        format!(
            "{} / {} / {} / {}",
            Micros(self.p50_us),
            Micros(self.p99_us),
            Micros(self.p999_us),
            Micros(self.max_us)
        )
    }
}

/// A duration in microseconds written for people: `850 µs`, `1.25 ms`, `2.50 s`.
pub struct Micros(pub u64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0;
        if us < 1_000 {
            write!(f, "{us} µs")
        } else if us < 1_000_000 {
            write!(f, "{:.2} ms", us as f64 / 1_000.0)
        } else {
            write!(f, "{:.2} s", us as f64 / 1_000_000.0)
        }
    }
}

/// A rate written with a thousands separator and one decimal: `12,345.6/s`.
pub struct PerSecond(pub f64);

impl fmt::Display for PerSecond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.is_finite() {
            return write!(f, "n/a");
        }
        let tenths = (self.0 * 10.0).round() as u64;
        write!(f, "{}.{}/s", Thousands(tenths / 10), tenths % 10)
    }
}

/// An integer with `,` between groups of three digits.
pub struct Thousands(pub u64);

impl fmt::Display for Thousands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        f.write_str(&out)
    }
}

/// Rows of `name  value`, and section headings, printed with the names padded to one width.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Row>,
}

#[derive(Debug)]
enum Row {
    Section(String),
    Pair(String, String),
}

impl Table {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a new section with a heading line.
    pub fn section(&mut self, title: impl Into<String>) -> &mut Self {
        self.rows.push(Row::Section(title.into()));
        self
    }

    /// Adds one `name  value` row.
    pub fn row(&mut self, name: impl Into<String>, value: impl fmt::Display) -> &mut Self {
        self.rows.push(Row::Pair(name.into(), value.to_string()));
        self
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .rows
            .iter()
            .filter_map(|row| match row {
                Row::Pair(name, _) => Some(name.chars().count()),
                Row::Section(_) => None,
            })
            .max()
            .unwrap_or(0);
        let mut first = true;
        for row in &self.rows {
            match row {
                Row::Section(title) => {
                    if !first {
                        writeln!(f)?;
                    }
                    writeln!(f, "{title}")?;
                }
                Row::Pair(name, value) => {
                    writeln!(f, "  {name:<width$}  {value}")?;
                }
            }
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Figures(Option<crate::ws::MemoryReport>, Option<f64>);

    impl ServerFigures for Figures {
        fn memory(&self) -> Option<&crate::ws::MemoryReport> {
            self.0.as_ref()
        }
        fn server_cpu_cores(&self) -> Option<f64> {
            self.1
        }
        fn bench_cpu_cores(&self) -> Option<f64> {
            None
        }
        fn server_exit(&self) -> Option<&str> {
            Some("exit 0")
        }
    }

    const LABELS: ServerLabels = ServerLabels {
        before: "RSS before",
        connected: "RSS idle",
        per: "per stream",
        no_memory: "not measured here",
        cpu: "CPU while sending",
    };

    #[test]
    fn server_section_uses_the_modes_labels() {
        let memory = crate::ws::MemoryReport {
            before_kib: 100,
            connected_kib: 300,
            per_session_kib: 2.0,
            after_run_kib: 400,
            peak_kib: 500,
        };
        let mut t = Table::new();
        server_section(&mut t, &LABELS, &Figures(Some(memory), Some(1.25)));
        let text = t.to_string();
        for part in [
            "per stream",
            "RSS idle",
            "peak RSS (VmHWM)",
            "CPU while sending",
            "1.25 cores",
            "exit 0",
        ] {
            assert!(text.contains(part), "{part} missing from\n{text}");
        }
        let mut t = Table::new();
        server_section(&mut t, &LABELS, &Figures(None, None));
        let text = t.to_string();
        assert!(
            text.contains("not measured here") && !text.contains("per stream"),
            "{text}"
        );
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = latency_histogram();
        for us in 1..=10_000u64 {
            record_latency(&mut h, us);
        }
        let s = LatencySummary::from_histogram(&h).expect("non-empty");
        assert_eq!(s.count, 10_000);
        assert_eq!(s.min_us, 1);
        // Three significant digits: values are exact to within 0.1 %.
        let close = |got: u64, want: u64| got.abs_diff(want) <= want / 1000 + 1;
        assert!(close(s.p50_us, 5_000), "p50 {}", s.p50_us);
        assert!(close(s.p90_us, 9_000), "p90 {}", s.p90_us);
        assert!(close(s.p99_us, 9_900), "p99 {}", s.p99_us);
        assert!(close(s.p999_us, 9_990), "p99.9 {}", s.p999_us);
        assert!(close(s.max_us, 10_000), "max {}", s.max_us);
        assert!((s.mean_us - 5_000.5).abs() < 10.0, "mean {}", s.mean_us);
    }

    #[test]
    fn a_single_outlier_shows_only_in_the_tail() {
        let mut h = latency_histogram();
        for _ in 0..999 {
            record_latency(&mut h, 100);
        }
        record_latency(&mut h, 50_000);
        let s = LatencySummary::from_histogram(&h).expect("non-empty");
        assert_eq!(s.p50_us, 100);
        assert_eq!(s.p99_us, 100);
        assert!(s.p999_us <= 100, "p99.9 {}", s.p999_us);
        assert!(s.max_us.abs_diff(50_000) <= 50, "max {}", s.max_us);
    }

    #[test]
    fn empty_histogram_has_no_summary() {
        assert_eq!(LatencySummary::from_histogram(&latency_histogram()), None);
    }

    #[test]
    fn out_of_range_latencies_are_clamped_not_lost() {
        let mut h = latency_histogram();
        record_latency(&mut h, 0);
        record_latency(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_LATENCY_US);
    }

    #[test]
    fn durations_are_written_for_people() {
        assert_eq!(Micros(0).to_string(), "0 µs");
        assert_eq!(Micros(999).to_string(), "999 µs");
        assert_eq!(Micros(1_250).to_string(), "1.25 ms");
        assert_eq!(Micros(2_500_000).to_string(), "2.50 s");
    }

    #[test]
    fn rates_and_counts_get_separators() {
        assert_eq!(Thousands(0).to_string(), "0");
        assert_eq!(Thousands(999).to_string(), "999");
        assert_eq!(Thousands(1_000).to_string(), "1,000");
        assert_eq!(Thousands(1_234_567).to_string(), "1,234,567");
        assert_eq!(PerSecond(12_345.64).to_string(), "12,345.6/s");
        assert_eq!(PerSecond(0.04).to_string(), "0.0/s");
        assert_eq!(PerSecond(f64::NAN).to_string(), "n/a");
    }

    #[test]
    fn table_pads_names_to_one_column() {
        let mut t = Table::new();
        t.section("run")
            .row("sessions", 2)
            .row("pattern", "pairs")
            .section("latency")
            .row("p50", Micros(120));
        assert_eq!(
            t.to_string(),
            "run\n  sessions  2\n  pattern   pairs\n\nlatency\n  p50       120 µs\n"
        );
    }

    #[test]
    fn summary_line_lists_the_tail() {
        let s = LatencySummary {
            count: 3,
            min_us: 10,
            mean_us: 20.0,
            p50_us: 15,
            p90_us: 30,
            p99_us: 1_500,
            p999_us: 20_000,
            max_us: 2_000_000,
        };
        assert_eq!(s.percentiles_line(), "15 µs / 1.50 ms / 20.00 ms / 2.00 s");
    }
}

/// What one mode calls its server figures (sessions, streams, sign-in or sign-on).
pub struct ServerLabels {
    pub before: &'static str,
    pub connected: &'static str,
    pub per: &'static str,
    pub no_memory: &'static str,
    pub cpu: &'static str,
}

/// The server figures every mode's report carries.
pub trait ServerFigures {
    fn memory(&self) -> Option<&crate::ws::MemoryReport>;
    fn server_cpu_cores(&self) -> Option<f64>;
    fn bench_cpu_cores(&self) -> Option<f64>;
    fn server_exit(&self) -> Option<&str>;
}

/// The "server" section of a report, the same in every mode but for its labels.
pub fn server_section(t: &mut Table, labels: &ServerLabels, figures: &impl ServerFigures) {
    t.section("server");
    match figures.memory() {
        Some(m) => {
            t.row(labels.before, Kib(m.before_kib as f64))
                .row(labels.connected, Kib(m.connected_kib as f64))
                .row(labels.per, Kib(m.per_session_kib))
                .row("RSS after the run", Kib(m.after_run_kib as f64))
                .row("peak RSS (VmHWM)", Kib(m.peak_kib as f64));
        }
        None => {
            t.row("memory", labels.no_memory);
        }
    }
    match figures.server_cpu_cores() {
        Some(c) => t.row(labels.cpu, format!("{c:.2} cores")),
        None => t.row(labels.cpu, "not measured"),
    };
    if let Some(c) = figures.bench_cpu_cores() {
        t.row("load generator CPU", format!("{c:.2} cores"));
    }
    if let Some(exit) = figures.server_exit() {
        t.row("server exit", exit);
    }
}
