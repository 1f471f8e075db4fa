//! Drawing the laid-out timeline with plotters' SVG backend: for each
//! panel, the write rate per 10 ms with the longest write gaps shaded and
//! the marks labelled above it, then one lane per pod coloured by role.
//! Text is left to the viewer's fonts (plotters without its font
//! features), so the picture needs no font files to be made.

use std::path::Path;

use plotters::coord::types::{RangedCoordf64, RangedCoordu32};
use plotters::coord::Shift;
use plotters::prelude::*;

use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::layout::{label_rows, label_width, Panel, Picture, PodState, Span};

/// The picture's width; zoomed panels take half of it each.
const WIDTH: u32 = 1400;
/// Height of the write-rate chart of a panel, axes included.
const RATE_HEIGHT: u32 = 170;
/// Height of one pod's lane.
const LANE_HEIGHT: u32 = 18;
/// Height of one row of labels.
const LABEL_ROW: u32 = 16;
/// Space for a panel's title.
const TITLE: u32 = 22;
/// Space for the picture's title and for the legend.
const HEADER: u32 = 34;
const LEGEND: u32 = 30;
/// Left space for the y axis's figures and the pods' names.
const Y_AXIS: u32 = 64;
const SIDE_MARGIN: u32 = 12;

const WRITES: RGBColor = RGBColor(45, 105, 190);
const FAULT: RGBColor = RGBColor(200, 35, 35);
const RECOVERY: RGBColor = RGBColor(25, 120, 55);
const GAP: RGBColor = RGBColor(230, 60, 60);

/// A panel's write-rate chart: time against acknowledged writes.
type RateChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordu32>>;

fn err(e: impl std::fmt::Display) -> String {
    format!("cannot draw the timeline: {e}")
}

/// The colour of a pod's state in its lane.
fn state_colour(s: PodState) -> RGBColor {
    match s {
        PodState::Leader => RGBColor(40, 160, 70),
        PodState::Follower => RGBColor(150, 190, 230),
        PodState::CatchingUp => RGBColor(245, 190, 60),
        PodState::Learner => RGBColor(180, 140, 220),
        PodState::Candidate => RGBColor(240, 120, 40),
        PodState::Down => RGBColor(215, 215, 215),
    }
}

/// A panel and where its labels go.
struct Placed<'a> {
    panel: &'a Panel,
    /// Where each label goes along the plot, and on which row.
    labels: Vec<(Span, usize)>,
    rows: usize,
}

impl<'a> Placed<'a> {
    fn new(panel: &'a Panel, width: u32) -> Placed<'a> {
        let plot = f64::from(width - Y_AXIS - 2 * SIDE_MARGIN);
        let per_second = plot / (panel.to - panel.from).max(1e-3);
        let spans: Vec<Span> = panel
            .labels
            .iter()
            .map(|(at, text, _)| Span::new((at - panel.from) * per_second, label_width(text), plot))
            .collect();
        let rows = label_rows(&spans);
        Placed {
            panel,
            rows: rows.iter().max().map_or(0, |r| r + 1),
            labels: spans.into_iter().zip(rows).collect(),
        }
    }

    fn height(&self, pods: usize) -> u32 {
        TITLE + self.rows as u32 * LABEL_ROW + RATE_HEIGHT + pods as u32 * LANE_HEIGHT + 34
    }
}

/// Draws `picture` as an SVG at `path`.
pub(super) fn svg(picture: &Picture, path: &Path) -> Result<(), String> {
    let pods = picture.lanes.len();
    let mut panels = picture.panels.iter();
    let overview = panels.next().map(|p| Placed::new(p, WIDTH));
    let zoomed: Vec<Placed> = panels.map(|p| Placed::new(p, WIDTH / 2)).collect();
    let grid_rows: Vec<u32> = zoomed
        .chunks(2)
        .map(|pair| pair.iter().map(|p| p.height(pods)).max().unwrap_or(0))
        .collect();
    let height = HEADER
        + overview.as_ref().map_or(0, |o| o.height(pods))
        + grid_rows.iter().sum::<u32>()
        + LEGEND;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    root.draw(&Text::new(
        picture.title.clone(),
        (SIDE_MARGIN as i32, 8),
        ("sans-serif", 16).into_font(),
    ))
    .map_err(err)?;
    let mut top = HEADER;
    if let Some(o) = &overview {
        let area = root.clone().shrink((0, top), (WIDTH, o.height(pods)));
        draw_panel(&root, &area, picture, o)?;
        top += o.height(pods);
    }
    for (pair, row_height) in zoomed.chunks(2).zip(&grid_rows) {
        for (i, placed) in pair.iter().enumerate() {
            let area = root
                .clone()
                .shrink((i as u32 * WIDTH / 2, top), (WIDTH / 2, *row_height));
            draw_panel(&root, &area, picture, placed)?;
        }
        top += row_height;
    }
    draw_legend(&root, top)?;
    root.present().map_err(err)
}

/// One panel: title, labels, write rate, lanes.
fn draw_panel(
    root: &DrawingArea<SVGBackend, Shift>,
    area: &DrawingArea<SVGBackend, Shift>,
    picture: &Picture,
    placed: &Placed,
) -> Result<(), String> {
    let panel = placed.panel;
    let (x0, y0) = area.get_base_pixel();
    root.draw(&Text::new(
        panel.title.clone(),
        (x0 + SIDE_MARGIN as i32, y0 + 4),
        ("sans-serif", 14).into_font(),
    ))
    .map_err(err)?;
    let band = TITLE + placed.rows as u32 * LABEL_ROW;
    let (rate_area, lane_area) = area.split_vertically(band + RATE_HEIGHT);
    let buckets = picture.buckets(panel.from, panel.to);
    let peak = buckets.iter().map(|b| b.1).max().unwrap_or(0).max(1);
    let mut rate = ChartBuilder::on(&rate_area)
        .margin_top(band)
        .margin_left(SIDE_MARGIN)
        .margin_right(SIDE_MARGIN)
        .x_label_area_size(0)
        .y_label_area_size(Y_AXIS)
        .build_cartesian_2d(panel.from..panel.to, 0u32..peak + peak / 10 + 1)
        .map_err(err)?;
    rate.configure_mesh()
        .disable_x_mesh()
        .y_labels(4)
        .y_desc("acked writes / 10 ms")
        .label_style(("sans-serif", 11))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    for &(a, b) in &picture.gaps {
        if b >= panel.from && a <= panel.to {
            rate.draw_series(std::iter::once(Rectangle::new(
                [
                    (a.max(panel.from), 0),
                    (b.min(panel.to), peak + peak / 10 + 1),
                ],
                GAP.mix(0.25).filled(),
            )))
            .map_err(err)?;
        }
    }
    let steps = buckets
        .iter()
        .flat_map(|&(t, n)| [(t, n), ((t + super::layout::BUCKET).min(panel.to), n)]);
    rate.draw_series(AreaSeries::new(steps, 0, WRITES.mix(0.55)).border_style(WRITES))
        .map_err(err)?;
    draw_labels(root, &rate, placed, peak + peak / 10 + 1)?;
    draw_lanes(root, &lane_area, picture, panel)
}

/// The panel's labels on their rows above the write-rate chart, each with
/// its line down to the chart's floor.
fn draw_labels(
    root: &DrawingArea<SVGBackend, Shift>,
    rate: &RateChart,
    placed: &Placed,
    top: u32,
) -> Result<(), String> {
    let panel = placed.panel;
    let (_, plot_top) = rate.backend_coord(&(panel.from, top));
    let (_, plot_bottom) = rate.backend_coord(&(panel.from, 0));
    for ((at, text, fault), (span, row)) in panel.labels.iter().zip(&placed.labels) {
        let colour = if *fault { FAULT } else { RECOVERY };
        let (x, _) = rate.backend_coord(&(*at, 0));
        let label_top = plot_top - (*row as i32 + 1) * LABEL_ROW as i32;
        root.draw(&PathElement::new(
            vec![(x, label_top), (x, plot_bottom)],
            colour.mix(0.8).stroke_width(1),
        ))
        .map_err(err)?;
        let (text_x, anchor) = if span.right_aligned() {
            (x - 3, HPos::Right)
        } else {
            (x + 3, HPos::Left)
        };
        let style = ("sans-serif", 12)
            .into_font()
            .color(&colour)
            .pos(Pos::new(anchor, VPos::Top));
        root.draw(&Text::new(text.clone(), (text_x, label_top + 1), style))
            .map_err(err)?;
    }
    Ok(())
}

/// One lane per pod, coloured by its state, with the time axis under it.
fn draw_lanes(
    root: &DrawingArea<SVGBackend, Shift>,
    area: &DrawingArea<SVGBackend, Shift>,
    picture: &Picture,
    panel: &Panel,
) -> Result<(), String> {
    let pods = picture.lanes.len().max(1) as f64;
    let span = panel.to - panel.from;
    let mut lanes = ChartBuilder::on(area)
        .margin_left(SIDE_MARGIN)
        .margin_right(SIDE_MARGIN)
        .x_label_area_size(30)
        .y_label_area_size(Y_AXIS)
        .build_cartesian_2d(panel.from..panel.to, 0.0..pods)
        .map_err(err)?;
    let decimals = if span < 5.0 { 2 } else { 1 };
    lanes
        .configure_mesh()
        .disable_mesh()
        .y_labels(0)
        .x_labels(8)
        .x_label_formatter(&|x| format!("{x:.decimals$} s"))
        .label_style(("sans-serif", 11))
        .draw()
        .map_err(err)?;
    for (i, lane) in picture.lanes.iter().enumerate() {
        let (low, high) = (pods - i as f64 - 0.9, pods - i as f64 - 0.1);
        let visible = lane
            .iter()
            .filter(|s| s.to > panel.from && s.from < panel.to)
            .map(|s| {
                Rectangle::new(
                    [(s.from.max(panel.from), low), (s.to.min(panel.to), high)],
                    state_colour(s.state).filled(),
                )
            });
        lanes.draw_series(visible).map_err(err)?;
        let (x, y) = lanes.backend_coord(&(panel.from, high));
        root.draw(&Text::new(
            format!("kvstore-{i}"),
            (x - Y_AXIS as i32 + 4, y + 2),
            ("sans-serif", 11).into_font(),
        ))
        .map_err(err)?;
    }
    Ok(())
}

/// The colours' meanings, in one row at `top`.
fn draw_legend(root: &DrawingArea<SVGBackend, Shift>, top: u32) -> Result<(), String> {
    let mut entries: Vec<(String, RGBAColor)> = PodState::ALL
        .iter()
        .map(|&s| (s.name().to_string(), state_colour(s).to_rgba()))
        .collect();
    entries.push(("acked writes".into(), WRITES.mix(0.55)));
    entries.push(("longest write gap".into(), GAP.mix(0.25)));
    entries.push(("fault".into(), FAULT.to_rgba()));
    entries.push(("recovery".into(), RECOVERY.to_rgba()));
    let mut x = SIDE_MARGIN as i32;
    let y = top as i32 + 8;
    for (name, colour) in entries {
        root.draw(&Rectangle::new([(x, y), (x + 12, y + 12)], colour.filled()))
            .map_err(err)?;
        root.draw(&Text::new(
            name.clone(),
            (x + 16, y),
            ("sans-serif", 12).into_font(),
        ))
        .map_err(err)?;
        x += 16 + label_width(&name) as i32 + 18;
    }
    Ok(())
}
