//! `prefecto flow-run timeline`: one bar per task run on a time axis, coloured
//! by final state, over bands that mark the batches, with the kill switch's
//! trip marked where it happened.

use chrono::{DateTime, Utc};
use prefecto::store::{FlowRunRow, LogRow, TaskRunRow};
use prefecto::text::for_display;
use svg::Document;
use svg::node::element::{Line, Rectangle, Text, Title};

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const AXIS: f64 = 40.0;

/// The colour of a final state, by its type.
fn colour(state_type: &str) -> &'static str {
    match state_type {
        "COMPLETED" => "#2ca02c",
        "FAILED" => "#d62728",
        "CRASHED" => "#ff7f0e",
        "CANCELLED" => "#9e9e9e",
        _ => "#1f77b4",
    }
}

/// The most of a message a tooltip shows.
const TOOLTIP_CHARS: usize = 1_000;

/// Untrusted text for the SVG: the `svg` crate escapes `&`, `<` and `>`;
/// control characters, which XML forbids even escaped, are written out.
fn safe(text: &str, max_chars: usize) -> String {
    for_display(text, max_chars).into_owned()
}

fn text(x: f64, y: f64, anchor: &str, size: u32, content: impl Into<String>) -> Text {
    Text::new(safe(&content.into(), TOOLTIP_CHARS))
        .set("x", x)
        .set("y", y)
        .set("text-anchor", anchor)
        .set("font-family", "DejaVu Sans, Arial, Helvetica, sans-serif")
        .set("font-size", size)
}

/// Draws the flow run's task runs. `logs` give the batch starts and the trip.
pub fn render(flow_run: &FlowRunRow, task_runs: &[TaskRunRow], logs: &[LogRow]) -> Document {
    let start = flow_run.start_time.unwrap_or(flow_run.created);
    let end = [flow_run.end_time]
        .into_iter()
        .chain(task_runs.iter().map(|r| r.end_time))
        .flatten()
        .max()
        .unwrap_or(start)
        .max(start + chrono::Duration::milliseconds(1));
    let span = (end - start).num_microseconds().unwrap_or(1).max(1) as f64;
    let plot_width = WIDTH - LEFT - RIGHT;
    let x = |t: DateTime<Utc>| {
        LEFT + plot_width * ((t - start).num_microseconds().unwrap_or(0) as f64 / span)
    };
    let row_height = (600.0 / task_runs.len().max(1) as f64).clamp(1.0, 14.0);
    let height = TOP + row_height * task_runs.len() as f64 + AXIS;
    let bottom = TOP + row_height * task_runs.len() as f64;

    let mut document = Document::new()
        .set("width", WIDTH)
        .set("height", height)
        .set("viewBox", (0, 0, WIDTH, height))
        .add(
            Rectangle::new()
                .set("width", WIDTH)
                .set("height", height)
                .set("fill", "white"),
        )
        .add(text(
            LEFT,
            28.0,
            "start",
            14,
            format!(
                "Flow run '{}' of flow '{}': {} ({} task runs)",
                flow_run.name,
                flow_run.flow,
                flow_run.state_name,
                task_runs.len()
            ),
        ));

    // Batch bands, from the `Mapping 'add' batch i of n.` lines; any other
    // `Mapping` line (a sliding window's) ends the band before it.
    let mappings: Vec<(DateTime<Utc>, bool)> = logs
        .iter()
        .filter(|l| l.message.starts_with("Mapping '"))
        .map(|l| (l.timestamp, l.message.contains(" batch ")))
        .collect();
    let batch_bands = mappings
        .iter()
        .enumerate()
        .filter(|(_, (_, is_batch))| *is_batch);
    for (i, (j, (batch_start, _))) in batch_bands.enumerate() {
        let batch_start = *batch_start;
        let band_end = mappings.get(j + 1).map_or(end, |(t, _)| *t);
        let fill = if i % 2 == 0 { "#eef3fb" } else { "#f9f9f9" };
        document = document
            .add(
                Rectangle::new()
                    .set("x", x(batch_start))
                    .set("y", TOP)
                    .set("width", (x(band_end) - x(batch_start)).max(0.5))
                    .set("height", bottom - TOP)
                    .set("fill", fill)
                    .add(Title::new(format!("batch {}", i + 1))),
            )
            .add(text(
                x(batch_start) + 2.0,
                TOP - 4.0,
                "start",
                9,
                format!("batch {}", i + 1),
            ));
    }

    // One bar per task run; a run that never started is a thin mark at its end.
    for (row, run) in task_runs.iter().enumerate() {
        let y = TOP + row_height * row as f64;
        let (bar_start, bar_end) = match (run.start_time, run.end_time) {
            (Some(s), Some(e)) => (x(s), x(e)),
            (Some(s), None) => (x(s), x(end)),
            (None, Some(e)) => (x(e), x(e)),
            (None, None) => (x(end), x(end)),
        };
        let tooltip = format!(
            "{}: {}{}",
            run.name,
            run.state_name,
            run.state_message
                .as_deref()
                .map(|m| format!(" - {m}"))
                .unwrap_or_default()
        );
        document = document.add(
            Rectangle::new()
                .set("x", bar_start)
                .set("y", y + row_height * 0.1)
                .set("width", (bar_end - bar_start).max(1.5))
                .set("height", (row_height * 0.8).max(1.0))
                .set("fill", colour(run.state_type.as_api_str()))
                .add(Title::new(safe(&tooltip, TOOLTIP_CHARS))),
        );
        if row_height >= 9.0 {
            document = document.add(text(
                LEFT - 6.0,
                y + row_height * 0.8,
                "end",
                9,
                run.name.clone(),
            ));
        }
    }

    // Where a kill switch tripped.
    if let Some(trip) = logs.iter().find(|l| l.message.starts_with("Kill switch ")) {
        let at = x(trip.timestamp);
        document = document
            .add(
                Line::new()
                    .set("x1", at)
                    .set("x2", at)
                    .set("y1", TOP - 14.0)
                    .set("y2", bottom)
                    .set("stroke", "#d62728")
                    .set("stroke-width", 1.5)
                    .set("stroke-dasharray", "4 3")
                    .add(Title::new(safe(&trip.message, TOOLTIP_CHARS))),
            )
            .add(
                text(at + 3.0, TOP - 16.0, "start", 10, "kill switch tripped")
                    .set("fill", "#d62728"),
            );
    }

    // The time axis, in seconds from the flow run's start.
    let axis_y = bottom + 4.0;
    document = document.add(
        Line::new()
            .set("x1", LEFT)
            .set("x2", WIDTH - RIGHT)
            .set("y1", axis_y)
            .set("y2", axis_y)
            .set("stroke", "black"),
    );
    for tick in 0..=5 {
        let fraction = tick as f64 / 5.0;
        let tick_x = LEFT + plot_width * fraction;
        document = document
            .add(
                Line::new()
                    .set("x1", tick_x)
                    .set("x2", tick_x)
                    .set("y1", axis_y)
                    .set("y2", axis_y + 5.0)
                    .set("stroke", "black"),
            )
            .add(text(
                tick_x,
                axis_y + 18.0,
                "middle",
                10,
                format!("{:.3} s", span * fraction / 1e6),
            ));
    }

    // The legend.
    for (i, (label, state_type)) in [
        ("Completed", "COMPLETED"),
        ("Failed", "FAILED"),
        ("Crashed", "CRASHED"),
        ("Cancelled", "CANCELLED"),
    ]
    .into_iter()
    .enumerate()
    {
        let lx = WIDTH - RIGHT - 340.0 + 85.0 * i as f64;
        document = document
            .add(
                Rectangle::new()
                    .set("x", lx)
                    .set("y", 6.0)
                    .set("width", 10)
                    .set("height", 10)
                    .set("fill", colour(state_type)),
            )
            .add(text(lx + 14.0, 15.0, "start", 10, label));
    }
    document
}
