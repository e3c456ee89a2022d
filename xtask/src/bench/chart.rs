//! The PNG beside a bench's JSON: one small panel per metric (each with its
//! own unit and linear axis), a bar per system, its value written on it.
//!
//! Text is drawn with plotters' `ab_glyph` backend from a TTF loaded by path,
//! so no fontconfig/freetype system library is needed to build.

use std::path::Path;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::results::{Better, Panel, Report};

const FONT: &str = "sans-serif";
/// Debian's fonts-dejavu-core first; any of these will do.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];
const COLUMNS: usize = 4;
const PANEL_W: u32 = 440;
const PANEL_H: u32 = 300;
const HEADER_H: u32 = 90;

/// Fixed colours so a system looks the same in every chart.
fn color(system: &str, index: usize) -> RGBColor {
    match system {
        "ours" => RGBColor(23, 87, 200),
        "ours-http" => RGBColor(110, 160, 245),
        "iroh-blobs" => RGBColor(230, 120, 20),
        "helia" => RGBColor(40, 160, 70),
        "flatfs" => RGBColor(125, 125, 125),
        _ => {
            let (r, g, b) = Palette99::pick(index).to_rgba().rgb();
            RGBColor(r, g, b)
        }
    }
}

fn load_font() -> anyhow::Result<()> {
    let (path, bytes) = FONT_PATHS
        .iter()
        .find_map(|p| std::fs::read(p).ok().map(|b| (*p, b)))
        .with_context(|| {
            format!(
                "no TTF font found (tried {}); install Debian's fonts-dejavu-core",
                FONT_PATHS.join(", ")
            )
        })?;
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FONT, FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{path} is not a usable TTF font"))
}

/// 12345 -> "12.3k", 2.5e6 -> "2.50M", 0.5 -> "0.50".
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    // A metric nobody measured (e.g. HTTP before the agent exists) would be
    // an empty panel; the table and JSON say why it is missing.
    let panels: Vec<&Panel> = report
        .panels
        .iter()
        .filter(|p| p.bars.iter().any(|(_, v)| v.is_some()))
        .collect();
    anyhow::ensure!(!panels.is_empty(), "no measured metric to plot");
    load_font()?;
    let mut systems: Vec<&'static str> = Vec::new();
    for panel in &panels {
        for (s, _) in &panel.bars {
            if !systems.contains(s) {
                systems.push(s);
            }
        }
    }
    let rows = panels.len().div_ceil(COLUMNS);
    let size = (COLUMNS as u32 * PANEL_W, HEADER_H + rows as u32 * PANEL_H);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER_H);
    draw_header(
        &header,
        report,
        &systems,
        report.panels.len() - panels.len(),
    )?;
    for (panel, area) in panels.into_iter().zip(body.split_evenly((rows, COLUMNS))) {
        draw_panel(&area, panel, &systems)?;
    }
    root.present()
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

fn draw_header(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    report: &Report,
    systems: &[&'static str],
    omitted: usize,
) -> anyhow::Result<()> {
    let mut title = format!(
        "{} bench ({} run, {}) - each panel: one metric, its own unit; values on the bars",
        report.bench, report.mode, report.when
    );
    if omitted > 0 {
        title += &format!("; {omitted} unmeasured metrics omitted (see JSON)");
    }
    area.draw(&Text::new(title, (16, 12), (FONT, 22).into_font()))?;
    let mut x = 16;
    for (i, s) in systems.iter().enumerate() {
        area.draw(&Rectangle::new(
            [(x, 52), (x + 18, 70)],
            color(s, i).filled(),
        ))?;
        area.draw(&Text::new(
            s.to_string(),
            (x + 24, 53),
            (FONT, 18).into_font(),
        ))?;
        x += 40 + 11 * s.len() as i32;
    }
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    panel: &Panel,
    systems: &[&'static str],
) -> anyhow::Result<()> {
    let n = panel.bars.len().max(1);
    let max = panel
        .bars
        .iter()
        .filter_map(|(_, v)| *v)
        .fold(0.0_f64, f64::max);
    let y_max = if max > 0.0 { max * 1.22 } else { 1.0 };
    let direction = match panel.better {
        Better::Higher => "higher is better",
        Better::Lower => "lower is better",
    };
    // Bar i spans [i + GAP, i + 1 - GAP] on a plain numeric x axis; the
    // system names are written under the bars by hand.
    const GAP: f64 = 0.15;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} [{}], {direction}", panel.metric, panel.unit),
            (FONT, 14).into_font(),
        )
        .margin(10)
        .x_label_area_size(24)
        .y_label_area_size(52)
        .build_cartesian_2d(0.0..n as f64, 0.0..y_max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(5)
        .y_label_formatter(&|v| short(*v))
        .label_style((FONT, 12).into_font())
        .draw()?;
    let centered_bottom = Pos::new(HPos::Center, VPos::Bottom);
    let value_style = (FONT, 13)
        .into_font()
        .into_text_style(area)
        .pos(centered_bottom);
    let name_style = (FONT, 12)
        .into_font()
        .into_text_style(area)
        .pos(Pos::new(HPos::Center, VPos::Top));
    let (base_x, base_y) = area.get_base_pixel();
    for (i, (system, value)) in panel.bars.iter().enumerate() {
        let left = i as f64;
        let center = left + 0.5;
        let fill = color(
            system,
            systems.iter().position(|s| s == system).unwrap_or(i),
        );
        let label = match value {
            Some(v) => {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(left + GAP, 0.0), (left + 1.0 - GAP, *v)],
                    fill.filled(),
                )))?;
                (short(*v), *v)
            }
            None => ("n/a".to_string(), y_max * 0.05),
        };
        chart.draw_series(std::iter::once(Text::new(
            label.0,
            (center, label.1),
            value_style.clone(),
        )))?;
        // backend_coord is absolute; the panel area draws relative to itself.
        let (x, y) = chart.backend_coord(&(center, 0.0));
        area.draw(&Text::new(
            system.to_string(),
            (x - base_x, y - base_y + 5),
            name_style.clone(),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panel(metric: &str, bars: Vec<(&'static str, Option<f64>)>) -> Panel {
        Panel {
            metric: metric.into(),
            unit: "ops/s",
            better: Better::Higher,
            bars,
        }
    }

    #[test]
    fn draws_a_png_with_one_panel_per_measured_metric() {
        let report = Report {
            bench: "storage",
            when: "2026-01-01T00:00:00Z".into(),
            mode: "quick",
            machine: serde_json::Value::Null,
            ours: serde_json::Map::new(),
            peers: serde_json::Map::new(),
            workload: serde_json::Value::Null,
            rows: Vec::new(),
            runs: Vec::new(),
            panels: vec![
                panel("single", vec![("ours", Some(3.0))]),
                panel(
                    "three",
                    vec![
                        ("ours", Some(10.0)),
                        ("flatfs", None),
                        ("helia", Some(2.5e6)),
                    ],
                ),
                panel("unmeasured", vec![("ours-http", None)]),
                panel(
                    "four",
                    vec![
                        ("a", Some(1.0)),
                        ("b", Some(2.0)),
                        ("c", Some(3.0)),
                        ("d", Some(4.0)),
                    ],
                ),
                panel("five", vec![("ours", Some(1.0)); 5]),
            ],
        };
        let path = std::env::temp_dir().join(format!("xtask-chart-{}.png", std::process::id()));
        draw(&report, &path).expect("chart is drawn");
        let png = std::fs::read(&path).expect("png written");
        std::fs::remove_file(&path).expect("cleanup");
        assert_eq!(&png[1..4], b"PNG");
        // IHDR: width and height, big-endian, at bytes 16..24. Four measured
        // panels fit one row of COLUMNS.
        let width = u32::from_be_bytes(png[16..20].try_into().expect("4 bytes"));
        let height = u32::from_be_bytes(png[20..24].try_into().expect("4 bytes"));
        assert_eq!(width, COLUMNS as u32 * PANEL_W);
        assert_eq!(height, HEADER_H + PANEL_H);
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short(12_345.0), "12.3k");
        assert_eq!(short(2_500_000.0), "2.50M");
        assert_eq!(short(512.4), "512");
        assert_eq!(short(0.5), "0.50");
    }
}
