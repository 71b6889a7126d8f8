//! Why this exists: the report page's two charts are drawn on the server as inline SVG, so
//! that the page needs no script, no chart library and no CDN, and reads the same in any
//! browser, in a screenshot and to a screen reader (each chart and each bar segment has a
//! `<title>`). One stacked bar chart, drawn either with horizontal bars (named categories:
//! servers per stage) or vertical columns (a time axis: messages per day), with bands
//! shaded behind the columns for stretches of the axis that share a state (days paused).

use std::fmt::Write;

use super::html::{compact, thousands, Esc};

/// One stacked layer of every bar.
pub struct Series {
    pub name: String,
    pub color: &'static str,
}

/// One bar: its axis label, the name its tooltips use, and one value per series.
pub struct Bar {
    pub label: String,
    pub name: String,
    pub values: Vec<u64>,
}

/// A run of consecutive bars shaded behind them, from `first` to `last` (bar indices,
/// inclusive). Bands of one `kind` share its colour and legend swatch.
pub struct Band {
    pub first: usize,
    pub last: usize,
    pub kind: Series,
    /// The band's tooltip: "Nov 3 – Nov 12: the whole tenant paused".
    pub title: String,
}

pub struct StackedBars {
    /// A DOM id prefix, unique on the page.
    pub id: &'static str,
    pub title: String,
    pub description: String,
    pub series: Vec<Series>,
    pub bars: Vec<Bar>,
    /// What the bars count ("servers"), for the value axis and the tooltips.
    pub unit: &'static str,
    /// The title of the category axis.
    pub category_axis: &'static str,
    /// Shown across the plot when every value is zero.
    pub empty_note: &'static str,
    /// Drawn behind the columns of `vertical`, in order.
    pub bands: Vec<Band>,
}

const WIDTH: f64 = 660.0;
const TEXT: &str = "#5d6b7a";
const GRID: &str = "#e6eaef";
const AXIS: &str = "#9aa6b2";
/// Roughly the advance of one character of 12px sans-serif text, to lay out the legend.
const CHAR_WIDTH: f64 = 6.8;

/// A round step for about `target` ticks up to `max`, and the axis top it gives.
fn ticks(max: u64, target: u64) -> (u64, u64) {
    let raw = max.div_ceil(target).max(1);
    let mut magnitude = 1;
    while magnitude * 10 <= raw {
        magnitude *= 10;
    }
    let step = [1, 2, 5, 10]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10 * magnitude);
    (step, max.div_ceil(step).max(1) * step)
}

impl StackedBars {
    fn open(&self, out: &mut String, height: f64) {
        let _ = write!(
            out,
            "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-labelledby=\"{id}-t {id}-d\" \
             xmlns=\"http://www.w3.org/2000/svg\"><title id=\"{id}-t\">{}</title><desc id=\"{id}-d\">{}</desc>",
            Esc(&self.title),
            Esc(&self.description),
            id = self.id,
        );
    }

    /// The legend, one swatch per series and per kind of band, along the top from `x`.
    fn legend(&self, out: &mut String, mut x: f64) {
        out.push_str("<g aria-hidden=\"true\">");
        let mut band_kinds: Vec<&Series> = Vec::new();
        for band in &self.bands {
            if !band_kinds.iter().any(|kind| kind.name == band.kind.name) {
                band_kinds.push(&band.kind);
            }
        }
        for series in self.series.iter().chain(band_kinds) {
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"10\" width=\"11\" height=\"11\" rx=\"2\" fill=\"{}\"/>\
                 <text x=\"{:.1}\" y=\"20\" font-size=\"12\" fill=\"#1c2633\">{}</text>",
                series.color,
                x + 16.0,
                Esc(&series.name)
            );
            x += 16.0 + series.name.chars().count() as f64 * CHAR_WIDTH + 18.0;
        }
        out.push_str("</g>");
    }

    fn max_total(&self) -> u64 {
        self.bars.iter().map(|bar| bar.values.iter().sum::<u64>()).max().unwrap_or(0)
    }

    /// A segment's tooltip, escaped: "Stage 3 · Exchange 2013: 2 servers".
    fn segment_title(&self, bar: &Bar, series: &Series, value: u64) -> String {
        let text = format!("{} · {}: {} {}", bar.name, series.name, thousands(value), self.unit);
        Esc(&text).to_string()
    }

    /// Named categories down the left, values along the bottom.
    pub fn horizontal(&self) -> String {
        let (left, right, top, bottom) = (104.0, 40.0, 40.0, 44.0);
        let row = 22.0;
        let plot_h = row * self.bars.len() as f64;
        let height = top + plot_h + bottom;
        let plot_w = WIDTH - left - right;
        let max = self.max_total();
        // At least five steps, so that one server is not a bar across the whole plot.
        let (step, axis_top) = ticks(max.max(5), 6);
        let scale = plot_w / axis_top as f64;
        let mut out = String::new();
        self.open(&mut out, height);
        self.legend(&mut out, left);
        let mut tick = 0;
        while tick <= axis_top {
            let x = left + tick as f64 * scale;
            let _ = write!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{}\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"{TEXT}\" text-anchor=\"middle\">{}</text>",
                top + plot_h,
                if tick == 0 { AXIS } else { GRID },
                top + plot_h + 16.0,
                compact(tick)
            );
            tick += step;
        }
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"{TEXT}\" text-anchor=\"middle\">{}</text>",
            left + plot_w / 2.0,
            height - 8.0,
            Esc(&capitalized(self.unit))
        );
        for (index, bar) in self.bars.iter().enumerate() {
            let y = top + index as f64 * row;
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"#1c2633\" text-anchor=\"end\">{}</text>",
                left - 10.0,
                y + row / 2.0 + 4.0,
                Esc(&bar.label)
            );
            let mut x = left;
            for (series, value) in self.series.iter().zip(&bar.values).filter(|(_, v)| **v > 0) {
                let w = *value as f64 * scale;
                let _ = write!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}</title></rect>",
                    y + 4.0,
                    row - 8.0,
                    series.color,
                    self.segment_title(bar, series, *value)
                );
                x += w;
            }
            let total: u64 = bar.values.iter().sum();
            if total > 0 {
                let _ = write!(
                    out,
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" font-weight=\"600\" fill=\"#1c2633\">{}</text>",
                    x + 6.0,
                    y + row / 2.0 + 4.0,
                    thousands(total)
                );
            }
        }
        self.empty(&mut out, max, left + plot_w / 2.0, top + plot_h / 2.0);
        out.push_str("</svg>");
        out
    }

    /// Categories (days) along the bottom, values up the left.
    pub fn vertical(&self) -> String {
        let (left, right, top, bottom) = (52.0, 16.0, 40.0, 50.0);
        let height = 310.0;
        let plot_w = WIDTH - left - right;
        let plot_h = height - top - bottom;
        let max = self.max_total();
        let (step, axis_top) = ticks(max, 5);
        let scale = plot_h / axis_top as f64;
        let base = top + plot_h;
        let mut out = String::new();
        self.open(&mut out, height);
        self.legend(&mut out, left);
        let slot = plot_w / self.bars.len().max(1) as f64;
        for band in &self.bands {
            let _ = write!(
                out,
                "<rect class=\"band\" x=\"{:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{plot_h:.1}\" fill=\"{}\">\
                 <title>{}</title></rect>",
                left + band.first as f64 * slot,
                (band.last + 1 - band.first) as f64 * slot,
                band.kind.color,
                Esc(&band.title)
            );
        }
        let mut tick = 0;
        while tick <= axis_top {
            let y = base - tick as f64 * scale;
            let _ = write!(
                out,
                "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"{TEXT}\" text-anchor=\"end\">{}</text>",
                left + plot_w,
                if tick == 0 { AXIS } else { GRID },
                left - 8.0,
                y + 4.0,
                compact(tick)
            );
            tick += step;
        }
        let _ = write!(
            out,
            "<text transform=\"translate(14 {:.1}) rotate(-90)\" font-size=\"12\" fill=\"{TEXT}\" text-anchor=\"middle\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"{TEXT}\" text-anchor=\"middle\">{}</text>",
            top + plot_h / 2.0,
            Esc(&capitalized(self.unit)),
            left + plot_w / 2.0,
            height - 8.0,
            Esc(self.category_axis)
        );
        let bar_w = (slot * 0.72).max(1.0);
        let label_every = self.bars.len().div_ceil(10).max(1);
        for (index, bar) in self.bars.iter().enumerate() {
            let x = left + index as f64 * slot + (slot - bar_w) / 2.0;
            let mut y = base;
            for (series, value) in self.series.iter().zip(&bar.values).filter(|(_, v)| **v > 0) {
                let h = *value as f64 * scale;
                y -= h;
                let _ = write!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}</title></rect>",
                    series.color,
                    self.segment_title(bar, series, *value)
                );
            }
            // Label every few bars, counted back from the last (today), which is always labelled.
            if (self.bars.len() - 1 - index) % label_every == 0 {
                let _ = write!(
                    out,
                    "<line x1=\"{cx:.1}\" y1=\"{base:.1}\" x2=\"{cx:.1}\" y2=\"{:.1}\" stroke=\"{AXIS}\"/>\
                     <text x=\"{cx:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"{TEXT}\" text-anchor=\"middle\">{}</text>",
                    base + 4.0,
                    base + 17.0,
                    Esc(&bar.label),
                    cx = x + bar_w / 2.0,
                );
            }
        }
        self.empty(&mut out, max, left + plot_w / 2.0, top + plot_h / 2.0);
        out.push_str("</svg>");
        out
    }

    fn empty(&self, out: &mut String, max: u64, x: f64, y: f64) {
        if max == 0 {
            let _ = write!(
                out,
                "<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"13\" fill=\"{TEXT}\" text-anchor=\"middle\">{}</text>",
                Esc(self.empty_note)
            );
        }
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0, 5), (1, 1));
        assert_eq!(ticks(3, 6), (1, 3));
        assert_eq!(ticks(7, 5), (2, 8));
        assert_eq!(ticks(42, 5), (10, 50));
        assert_eq!(ticks(1234, 5), (500, 1500));
    }

    #[test]
    fn escapes_names_and_titles() {
        let chart = StackedBars {
            id: "c",
            title: "<b>".into(),
            description: "d".into(),
            series: vec![Series {
                name: "a<b".into(),
                color: "#000",
            }],
            bars: vec![Bar {
                label: "x&y".into(),
                name: "x&y".into(),
                values: vec![2],
            }],
            unit: "servers",
            category_axis: "Stage",
            empty_note: "none",
            bands: vec![Band {
                first: 0,
                last: 0,
                kind: Series {
                    name: "p<q".into(),
                    color: "#eee",
                },
                title: "t>u".into(),
            }],
        };
        for svg in [chart.horizontal(), chart.vertical()] {
            assert!(
                svg.contains("&lt;b&gt;") && svg.contains("x&amp;y") && !svg.contains("a<b") && !svg.contains("p<q"),
                "{svg}"
            );
        }
    }
}
