//! Aligned plain-text tables and the formats of times and durations in them.

use chrono::{DateTime, Local, Utc};
use prefecto::text::for_display;

/// The most of one cell a table shows: `--json` has all of it.
pub const CELL_CHARS: usize = 200;

/// A table printed with each column as wide as its widest cell.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<const N: usize>(headers: [&str; N]) -> Self {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds a row. Cells are shown escaped (no control character reaches
    /// the terminal) and cut at [`CELL_CHARS`] characters with a marker.
    pub fn row<const N: usize>(&mut self, cells: [String; N]) {
        let shown = cells
            .iter()
            .map(|cell| for_display(cell, CELL_CHARS).into_owned());
        self.rows.push(shown.collect());
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, &width)| format!("{cell:<width$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        crate::write_stdout(format_args!("{}", self.render().trim_end_matches('\n')));
    }
}

pub fn local_time(time: DateTime<Utc>) -> String {
    time.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

pub fn duration(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> String {
    match (start, end) {
        (Some(start), Some(end)) => {
            let micros = (end - start).num_microseconds().unwrap_or(0).max(0);
            format!("{:.3}s", micros as f64 / 1e6)
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut table = Table::new(["NAME", "STATE"]);
        table.row(["add-10".to_string(), "Completed".to_string()]);
        table.row(["a".to_string(), "Failed".to_string()]);
        assert_eq!(
            table.render(),
            "NAME    STATE\nadd-10  Completed\na       Failed\n"
        );
    }

    #[test]
    fn untrusted_cells_are_escaped_and_cut() {
        let mut table = Table::new(["NAME", "MESSAGE"]);
        table.row(["a\x1b[2J".to_string(), "x".repeat(1_000_000)]);
        table.row(["b".to_string(), "line\nforged".to_string()]);
        let rendered = table.render();
        assert_eq!(rendered.lines().count(), 3, "one line per row");
        assert!(!rendered.contains('\x1b'));
        assert!(rendered.contains(r"a\u{1b}[2J"));
        assert!(rendered.contains("… (999800 more characters)"));
    }

    #[test]
    fn durations_in_seconds() {
        let start = DateTime::from_timestamp_micros(1_000_000).unwrap();
        let end = DateTime::from_timestamp_micros(2_500_000).unwrap();
        assert_eq!(duration(Some(start), Some(end)), "1.500s");
        assert_eq!(duration(Some(start), None), "");
    }
}
