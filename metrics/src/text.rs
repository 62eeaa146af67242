//! The Prometheus text exposition format (version 0.0.4), written directly.
//!
//! A scrape is rendered from the daemon's current state each time, so there is no registry of
//! live metric objects to keep in step with the state: a renderer asks [`Exposition`] for a
//! family by name and adds samples to it. The encoder guarantees what Prometheus and
//! `promtool check metrics` require of the text: one `# HELP` and one `# TYPE` per family, all
//! of a family's samples together (a family asked for twice is the same family), no two
//! samples with the same labels in a family (the first wins), label values and help text
//! escaped, and `NaN` / `+Inf` / `-Inf` spelled the way the format spells them.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// The metric types this project exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    /// Rendered sample lines, in the order they were added.
    lines: String,
    /// Rendered `name{labels}` of every sample, to drop duplicates.
    seen: HashSet<String>,
    /// Whether [`Exposition::drain_into`] has written the `# HELP`/`# TYPE` lines already.
    headed: bool,
}

/// One scrape's worth of metric families, rendered with [`Exposition::render`], or a stream's
/// worth of one family, taken out piece by piece with [`Exposition::drain_into`].
#[derive(Default)]
pub struct Exposition {
    families: Vec<Family>,
    by_name: HashMap<&'static str, usize>,
    /// Set by [`Exposition::only`]: every other family is ignored.
    only: Option<&'static str>,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// An exposition that keeps the family `name` alone: asking for any other family gives a
    /// writer that drops its samples before formatting them (see [`FamilyWriter::is_on`]).
    /// A streamed scrape renders its nodes once per family with this, because the text
    /// format wants each family's samples together and the page is never held whole.
    pub fn only(name: &'static str) -> Self {
        Exposition {
            only: Some(name),
            ..Self::default()
        }
    }

    /// The gauge family `name`, created on first use.
    pub fn gauge(&mut self, name: &'static str, help: &'static str) -> FamilyWriter<'_> {
        self.family(name, help, Kind::Gauge)
    }

    /// The counter family `name` (which ends in `_total`), created on first use.
    pub fn counter(&mut self, name: &'static str, help: &'static str) -> FamilyWriter<'_> {
        debug_assert!(name.ends_with("_total"), "counter {name} without _total");
        self.family(name, help, Kind::Counter)
    }

    /// The histogram family `name`, created on first use; add samples with
    /// [`FamilyWriter::histogram`].
    pub fn histogram(&mut self, name: &'static str, help: &'static str) -> FamilyWriter<'_> {
        self.family(name, help, Kind::Histogram)
    }

    fn family(&mut self, name: &'static str, help: &'static str, kind: Kind) -> FamilyWriter<'_> {
        debug_assert!(valid_name(name), "invalid metric name {name:?}");
        if self.only.is_some_and(|only| only != name) {
            return FamilyWriter { family: None };
        }
        let index = *self.by_name.entry(name).or_insert_with(|| {
            self.families.push(Family {
                name,
                help,
                kind,
                lines: String::new(),
                seen: HashSet::new(),
                headed: false,
            });
            self.families.len() - 1
        });
        let family = &mut self.families[index];
        debug_assert_eq!(family.kind, kind, "{name} asked for as two types");
        FamilyWriter {
            family: Some(family),
        }
    }

    /// Names of the families declared so far (with or without samples).
    pub fn family_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.families.iter().map(|f| f.name)
    }

    /// The text a scrape returns. A family that has no samples this time still gets its
    /// `# HELP` and `# TYPE` lines, so a dashboard or a rule can find it before the first sample.
    pub fn render(&self) -> String {
        let size: usize = self.families.iter().map(|f| f.lines.len() + 100).sum();
        let mut out = String::with_capacity(size);
        for f in &self.families {
            f.header(&mut out);
            out.push_str(&f.lines);
        }
        out
    }

    /// Appends what was added since the last drain to `out` (each family's `# HELP`/`# TYPE`
    /// the first time) and empties the families' lines, so a stream can send the text in
    /// pieces. The families stay, with the samples seen, so a later duplicate is still dropped.
    ///
    /// The text is valid only if no family drained earlier gets samples after another
    /// family's have been drained: use it on an [`Exposition::only`], or drain once at the end.
    pub fn drain_into(&mut self, out: &mut String) {
        for f in &mut self.families {
            if !f.headed {
                f.header(out);
                f.headed = true;
            }
            out.push_str(&f.lines);
            f.lines.clear();
        }
    }

    /// Bytes of sample lines waiting for [`Exposition::drain_into`].
    pub fn pending_len(&self) -> usize {
        self.families.iter().map(|f| f.lines.len()).sum()
    }

    /// Forgets the label sets seen so far, so memory stays bounded while one family streams
    /// through a whole fleet. Safe between nodes when every sample carries a `node` label with
    /// the node's (unique) name: no two nodes can produce the same series.
    pub fn forget_seen(&mut self) {
        for f in &mut self.families {
            f.seen.clear();
        }
    }
}

impl Family {
    fn header(&self, out: &mut String) {
        out.push_str("# HELP ");
        out.push_str(self.name);
        out.push(' ');
        escape_help(out, self.help);
        out.push_str("\n# TYPE ");
        out.push_str(self.name);
        out.push(' ');
        out.push_str(self.kind.as_str());
        out.push('\n');
    }
}

/// Adds samples to one family; a writer for a family an [`Exposition::only`] ignores drops
/// them.
pub struct FamilyWriter<'a> {
    family: Option<&'a mut Family>,
}

impl FamilyWriter<'_> {
    /// False when samples added here are dropped: a renderer can skip building their labels.
    pub fn is_on(&self) -> bool {
        self.family.is_some()
    }

    /// One sample of a gauge or counter. A second sample with the same labels is dropped.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        if let Some(family) = self.family.as_deref_mut() {
            line(family, "", labels, None, value);
        }
        self
    }

    /// One histogram: cumulative counts for each upper bound in `buckets` (ascending), the
    /// sum of observations and their count (which is also the `+Inf` bucket).
    pub fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) -> &mut Self {
        let Some(family) = self.family.as_deref_mut() else {
            return self;
        };
        let mut le = String::new();
        for &(bound, cumulative) in buckets {
            le.clear();
            push_value(&mut le, bound);
            line(family, "_bucket", labels, Some(&le), cumulative as f64);
        }
        line(family, "_bucket", labels, Some("+Inf"), count as f64);
        line(family, "_sum", labels, None, sum);
        line(family, "_count", labels, None, count as f64);
        self
    }
}

/// One sample line of `family` (`suffix` for a histogram's parts), unless its series was
/// seen already.
fn line(family: &mut Family, suffix: &str, labels: &[(&str, &str)], le: Option<&str>, value: f64) {
    let name = family.name;
    let mut series = String::with_capacity(name.len() + 64);
    series.push_str(name);
    series.push_str(suffix);
    let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
    let mut first = true;
    for (key, val) in all {
        debug_assert!(valid_label(key), "invalid label name {key:?}");
        series.push(if first { '{' } else { ',' });
        first = false;
        series.push_str(key);
        series.push_str("=\"");
        escape_label_value(&mut series, val);
        series.push('"');
    }
    if !first {
        series.push('}');
    }
    if !family.seen.insert(series.clone()) {
        return;
    }
    let lines = &mut family.lines;
    lines.push_str(&series);
    lines.push(' ');
    push_value(lines, value);
    lines.push('\n');
}

fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        // `{}` never uses an exponent and round-trips: what Go's ParseFloat reads back.
        let _ = write!(out, "{v}");
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label_value(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Help text escapes backslash and line feed (a quote is fine there).
fn escape_help(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label(name: &str) -> bool {
    !name.starts_with("__") && valid_name(name) && !name.contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_family_per_name_with_help_and_type_once() {
        let mut e = Exposition::new();
        e.gauge("health_x_celsius", "X.")
            .sample(&[("device", "a")], 1.5);
        e.counter("health_y_total", "Y.").sample(&[], 3.0);
        // Asked for again later: the sample joins the first family.
        e.gauge("health_x_celsius", "X.")
            .sample(&[("device", "b")], -2.0);
        let text = e.render();
        assert_eq!(
            text,
            "# HELP health_x_celsius X.\n# TYPE health_x_celsius gauge\n\
             health_x_celsius{device=\"a\"} 1.5\nhealth_x_celsius{device=\"b\"} -2\n\
             # HELP health_y_total Y.\n# TYPE health_y_total counter\nhealth_y_total 3\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut e = Exposition::new();
        e.gauge("m", "line one\nback\\slash \"quoted\"")
            .sample(&[("subject", "/data/a \"b\"\\c\nd")], 1.0);
        let text = e.render();
        assert!(
            text.contains("# HELP m line one\\nback\\\\slash \"quoted\"\n"),
            "{text}"
        );
        assert!(
            text.contains("m{subject=\"/data/a \\\"b\\\"\\\\c\\nd\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn duplicate_label_sets_keep_the_first_sample() {
        let mut e = Exposition::new();
        e.gauge("m", "M.")
            .sample(&[("a", "1")], 1.0)
            .sample(&[("a", "1")], 2.0)
            .sample(&[("a", "2")], 3.0);
        assert_eq!(e.render().matches("m{").count(), 2);
        assert!(e.render().contains("m{a=\"1\"} 1\n"));
    }

    #[test]
    fn special_values_are_spelled_as_the_format_wants() {
        let mut e = Exposition::new();
        e.gauge("m", "M.")
            .sample(&[("v", "nan")], f64::NAN)
            .sample(&[("v", "inf")], f64::INFINITY)
            .sample(&[("v", "-inf")], f64::NEG_INFINITY)
            .sample(&[("v", "small")], 1e-7)
            .sample(&[("v", "big")], 1e20);
        let text = e.render();
        for line in [
            "m{v=\"nan\"} NaN",
            "m{v=\"inf\"} +Inf",
            "m{v=\"-inf\"} -Inf",
            "m{v=\"small\"} 0.0000001",
            "m{v=\"big\"} 100000000000000000000",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn histogram_has_cumulative_buckets_inf_sum_and_count() {
        let mut e = Exposition::new();
        e.histogram("rpc_seconds", "RPC.").histogram(
            &[("method", "Get")],
            &[(0.1, 2), (1.0, 3)],
            1.25,
            4,
        );
        let text = e.render();
        assert!(text.contains("# TYPE rpc_seconds histogram\n"));
        assert!(text.contains("rpc_seconds_bucket{method=\"Get\",le=\"0.1\"} 2\n"));
        assert!(text.contains("rpc_seconds_bucket{method=\"Get\",le=\"1\"} 3\n"));
        assert!(text.contains("rpc_seconds_bucket{method=\"Get\",le=\"+Inf\"} 4\n"));
        assert!(text.contains("rpc_seconds_sum{method=\"Get\"} 1.25\n"));
        assert!(text.contains("rpc_seconds_count{method=\"Get\"} 4\n"));
    }

    #[test]
    fn empty_family_still_declares_itself() {
        let mut e = Exposition::new();
        e.counter("health_none_total", "Nothing yet.");
        assert_eq!(
            e.render(),
            "# HELP health_none_total Nothing yet.\n# TYPE health_none_total counter\n"
        );
    }
}
