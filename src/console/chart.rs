//! Charts drawn on the server as SVG: no script, nothing to load. Each series is a line with
//! a point per bucket; every point has a `<title>` (a browser shows it on hover, a screen
//! reader reads it), and the figures are in a table beside the chart as well.

use std::fmt::Write as _;

/// One line of a chart: its name (a CSS class `series-<n>` colours it) and a value per bucket.
pub struct Series<'a> {
    pub name: &'a str,
    pub values: Vec<i64>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 10.0;

/// An SVG line chart of `series` over buckets labelled `labels` (every label is escaped).
pub fn lines(title: &str, labels: &[String], series: &[Series<'_>]) -> String {
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let top = nice_ceiling(max);
    let n = labels.len().max(1);
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let x = |i: usize| {
        if n == 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: i64| TOP + plot_h - plot_h * v as f64 / top as f64;
    let mut svg = String::with_capacity(4096);
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(title)
    );
    // The grid: four lines with their values.
    for k in 0..=4 {
        let v = top * k / 4;
        let yy = y(v);
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}"/><text class="axis" x="{}" y="{:.1}" text-anchor="end">{v}</text>"#,
            WIDTH - 8.0,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    // At most about eight labels along the bottom.
    let every = n.div_ceil(8).max(1);
    for (i, label) in labels.iter().enumerate() {
        if i % every == 0 {
            // The last label ends at its point, so it is not cut off at the edge.
            let anchor = if i + 1 == n && n > 1 { "end" } else { "middle" };
            let _ = write!(
                svg,
                r#"<text class="axis" x="{:.1}" y="{}" text-anchor="{anchor}">{}</text>"#,
                x(i),
                HEIGHT - 6.0,
                escape(label)
            );
        }
    }
    for (k, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="series-{k}" fill="none" points="{}"/>"#,
            points.join(" ")
        );
        for (i, v) in s.values.iter().enumerate() {
            let label = labels.get(i).map_or("", String::as_str);
            let _ = write!(
                svg,
                r#"<circle class="series-{k}" cx="{:.1}" cy="{:.1}" r="2.5"><title>{}: {v} {}</title></circle>"#,
                x(i),
                y(*v),
                escape(label),
                escape(s.name)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The smallest of 1, 2 or 5 times a power of ten, times four, at or above `v`: a top for the
/// axis with round grid lines.
fn nice_ceiling(v: i64) -> i64 {
    let mut step = 1i64;
    loop {
        for m in [1, 2, 5] {
            let top = step.saturating_mul(m).saturating_mul(4);
            if top >= v {
                return top;
            }
        }
        step = step.saturating_mul(10);
    }
}

/// Text for SVG (and HTML): the five characters that could end it.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(1), 4);
        assert_eq!(nice_ceiling(5), 8);
        assert_eq!(nice_ceiling(9), 20);
        assert_eq!(nice_ceiling(1234), 2000);
    }

    #[test]
    fn labels_and_names_are_escaped() {
        let svg = lines(
            "<t>",
            &["<script>".to_owned()],
            &[Series {
                name: "a&b",
                values: vec![3],
            }],
        );
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.contains("a&amp;b"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
