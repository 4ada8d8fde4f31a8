//! Server-side SVG bar charts for the dashboard: no script, no chart library in the
//! browser, nothing to build. A chart is grouped bars (one group per period, one bar
//! per series); a suppressed value is drawn as a grey dash with a tooltip, so "hidden"
//! never looks like "zero".

use std::fmt::Write;

use crate::html::escape;

/// One series: its label, its colour, one value per period (`None`: suppressed,
/// `Some(0.0)`: nothing happened).
pub struct Series<'a> {
    pub label: &'a str,
    pub color: &'a str,
    pub values: Vec<Option<f64>>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 36.0;
const TOP: f64 = 12.0;
const LEGEND: f64 = 22.0;

/// A grouped bar chart as an inline `<svg>`; `id` names it for tests and links.
pub fn bars(id: &str, title: &str, periods: &[String], series: &[Series<'_>], min: u64) -> String {
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b));
    let scale_max = nice_ceiling(max);
    let plot_h = HEIGHT - BOTTOM - TOP - LEGEND;
    let plot_w = WIDTH - LEFT - 8.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" id="{id}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{title}"><title>{title}</title>"#,
        id = escape(id),
        title = escape(title),
    );
    // Axis and gridlines with labels.
    for i in 0..=4 {
        let v = scale_max * f64::from(i) / 4.0;
        let y = TOP + LEGEND + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx:.1}" y="{ty:.1}" font-size="10" text-anchor="end" fill="#555">{label}</text>"##,
            x2 = LEFT + plot_w,
            tx = LEFT - 4.0,
            ty = y + 3.0,
            label = format_value(v),
        );
    }
    // Legend.
    let mut lx = LEFT;
    for s in series {
        let _ = write!(
            svg,
            r##"<rect x="{lx:.1}" y="{TOP}" width="10" height="10" fill="{color}"/><text x="{tx:.1}" y="{ty:.1}" font-size="11" fill="#222">{label}</text>"##,
            color = escape(s.color),
            tx = lx + 14.0,
            ty = TOP + 9.0,
            label = escape(s.label),
        );
        lx += 22.0 + 6.5 * s.label.chars().count() as f64;
    }
    if periods.is_empty() {
        let _ = write!(
            svg,
            r##"<text x="{x:.1}" y="{y:.1}" font-size="12" fill="#777" text-anchor="middle">geen gegevens</text>"##,
            x = LEFT + plot_w / 2.0,
            y = TOP + LEGEND + plot_h / 2.0,
        );
    }
    let group_w = plot_w / periods.len().max(1) as f64;
    let bar_w = (group_w * 0.8 / series.len().max(1) as f64).min(28.0);
    for (p, period) in periods.iter().enumerate() {
        let gx = LEFT + group_w * p as f64 + (group_w - bar_w * series.len() as f64) / 2.0;
        for (i, s) in series.iter().enumerate() {
            let x = gx + bar_w * i as f64;
            let base = TOP + LEGEND + plot_h;
            match s.values.get(p).copied().flatten() {
                Some(v) => {
                    let h = if scale_max > 0.0 {
                        plot_h * v / scale_max
                    } else {
                        0.0
                    };
                    let _ = write!(
                        svg,
                        r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{color}"><title>{label} {period}: {value}</title></rect>"#,
                        y = base - h,
                        w = bar_w - 1.0,
                        color = escape(s.color),
                        label = escape(s.label),
                        period = escape(period),
                        value = format_value(v),
                    );
                }
                None => {
                    let _ = write!(
                        svg,
                        r##"<rect class="suppressed" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="3" fill="#999"><title>{label} {period}: onderdrukt (minder dan {min}, of af te leiden uit andere cellen)</title></rect>"##,
                        y = base - 3.0,
                        w = bar_w - 1.0,
                        label = escape(s.label),
                        period = escape(period),
                    );
                }
            }
        }
        let _ = write!(
            svg,
            r##"<text x="{x:.1}" y="{y:.1}" font-size="10" text-anchor="middle" fill="#333">{period}</text>"##,
            x = LEFT + group_w * (p as f64 + 0.5),
            y = HEIGHT - BOTTOM + 14.0,
            period = escape(period),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// 1, 2 or 5 times a power of ten, at or above `v` (at least 10, so small series are
/// not drawn as full-height bars).
fn nice_ceiling(v: f64) -> f64 {
    let v = v.max(10.0);
    let mut step = 1.0;
    while step * 10.0 <= v {
        step *= 10.0;
    }
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * step)
        .find(|c| *c >= v)
        .unwrap_or(v)
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bars for values, grey dashes for suppressed values, labels escaped.
    #[test]
    fn draws_bars_and_suppressed_marks() {
        let svg = bars(
            "c1",
            "Plannen <nieuw>",
            &["2024-01".into(), "2024-02".into()],
            &[Series {
                label: "nieuw",
                color: "#1f77b4",
                values: vec![Some(7.0), None],
            }],
            5,
        );
        assert_eq!(svg.matches(r#"class="bar""#).count(), 1);
        assert_eq!(svg.matches(r#"class="suppressed""#).count(), 1);
        assert!(svg.contains("Plannen &lt;nieuw&gt;") && !svg.contains("<nieuw>"));
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(130.0), 200.0);
    }
}
