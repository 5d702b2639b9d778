//! Charts drawn as SVG on the server (plotters), so the page needs no charting script: a line of
//! one numeric field over time, with a time axis and the field's unit where its name tells it.

use bal_core::Measurement;
use chrono::{DateTime, Utc};
use plotters::prelude::*;

/// The points of `field` in `readings` (those that have it), oldest first.
pub fn points(readings: &[Measurement], field: &str) -> Vec<(DateTime<Utc>, f64)> {
    let mut p: Vec<(DateTime<Utc>, f64)> = readings
        .iter()
        .filter_map(|m| {
            let v = m.fields.as_ref()?.get(field)?;
            v.is_finite().then_some((m.received_at, *v))
        })
        .collect();
    p.sort_by_key(|(t, _)| *t);
    p
}

/// The numeric fields found in `readings`, sorted.
pub fn fields(readings: &[Measurement]) -> Vec<String> {
    let mut f: Vec<String> = readings
        .iter()
        .filter_map(|m| m.fields.as_ref())
        .flat_map(|f| f.keys().cloned())
        .collect();
    f.sort();
    f.dedup();
    f
}

/// The unit a field's name implies (the demo's and the PMU's names, and common suffixes).
pub fn unit(field: &str) -> &'static str {
    let name = field
        .rsplit('.')
        .next()
        .unwrap_or(field)
        .to_ascii_lowercase();
    let ends = |s: &str| name == s || name.ends_with(&format!("_{s}"));
    if ends("kw") {
        "kW"
    } else if ends("kvar") {
        "kvar"
    } else if ends("kwh") {
        "kWh"
    } else if ends("w") || ends("p") {
        "W"
    } else if ends("v") || name.starts_with("voltage") {
        "V"
    } else if ends("a") || ends("i") || name.starts_with("current") {
        "A"
    } else if ends("hz") || ends("f") || name.starts_with("freq") {
        "Hz"
    } else if ends("deg") || name.contains("angle") || name.contains("phase") {
        "°"
    } else {
        ""
    }
}

/// An SVG line chart of `points`; its root element carries `data-points` (how many are drawn),
/// which the live page and its tests read.
pub fn svg(field: &str, points: &[(DateTime<Utc>, f64)], width: u32, height: u32) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        let _ = draw(&root, field, points);
        let _ = root.present();
    }
    out.replacen(
        "<svg ",
        &format!("<svg data-points=\"{}\" role=\"img\" ", points.len()),
        1,
    )
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    field: &str,
    points: &[(DateTime<Utc>, f64)],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let unit = unit(field);
    let caption = if unit.is_empty() {
        field.to_owned()
    } else {
        format!("{field} ({unit})")
    };
    if points.is_empty() {
        root.draw(&Text::new(
            format!("{caption}: no readings in this range yet"),
            (20, 30),
            ("sans-serif", 16).into_font(),
        ))?;
        return Ok(());
    }
    let ms = |t: &DateTime<Utc>| t.timestamp_millis() as f64;
    let (t0, t1) = (ms(&points[0].0), ms(&points[points.len() - 1].0));
    let (t0, t1) = if t1 > t0 {
        (t0, t1)
    } else {
        (t0 - 1000.0, t0 + 1000.0)
    };
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, v)| {
            (lo.min(*v), hi.max(*v))
        });
    let pad = if hi > lo {
        (hi - lo) * 0.1
    } else {
        lo.abs().max(1.0) * 0.1
    };
    let span_ms = t1 - t0;
    let mut chart = ChartBuilder::on(root)
        .caption(&caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(t0..t1, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_labels(6)
        .y_labels(6)
        .x_desc("time (UTC)")
        .y_desc(if unit.is_empty() { "value" } else { unit })
        .x_label_formatter(&|x| {
            let t = DateTime::from_timestamp_millis(*x as i64).unwrap_or_default();
            if span_ms > 36.0 * 3_600_000.0 {
                t.format("%m-%d %H:%M").to_string()
            } else if span_ms > 60_000.0 {
                t.format("%H:%M:%S").to_string()
            } else {
                // Readings seconds apart: tenths tell the ticks apart.
                format!(
                    "{}.{}",
                    t.format("%H:%M:%S"),
                    t.timestamp_subsec_millis() / 100
                )
            }
        })
        .draw()?;
    chart.draw_series(LineSeries::new(
        points.iter().map(|(t, v)| (ms(t), *v)),
        &BLUE,
    ))?;
    if points.len() <= 200 {
        chart.draw_series(
            points
                .iter()
                .map(|(t, v)| Circle::new((ms(t), *v), 2, BLUE.filled())),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_field_names_and_charts_say_how_many_points_they_draw() {
        assert_eq!(unit("p_kw"), "kW");
        assert_eq!(unit("q_kvar"), "kvar");
        assert_eq!(unit("v"), "V");
        assert_eq!(unit("frequency"), "Hz");
        assert_eq!(unit("whatever"), "");
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let pts: Vec<_> = (0..10)
            .map(|i| (t + chrono::Duration::seconds(i), i as f64))
            .collect();
        let s = svg("p_kw", &pts, 640, 320);
        assert!(s.starts_with("<svg data-points=\"10\""), "{}", &s[..80]);
        assert!(s.contains("p_kw (kW)"));
        assert!(
            s.contains("<polyline") || s.contains("<path"),
            "a line is drawn"
        );
        let empty = svg("p_kw", &[], 640, 320);
        assert!(empty.contains("data-points=\"0\"") && empty.contains("no readings"));
    }
}
