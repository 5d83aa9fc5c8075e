//! The geometry of a run's chart, apart from the view: readable scales
//! (1, 2 or 5 × 10ⁿ), the ticks on each axis, and the SVG path of a series.
//! Pure functions, so the tests can pin them.

use super::format::{duration_secs, thousands};
use crate::backfill::domain::RunSample;

/// Where the plot sits inside the SVG's box, in its units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
}

impl Frame {
    pub fn plot_width(&self) -> f64 {
        self.width - self.left - self.right
    }

    pub fn plot_height(&self) -> f64 {
        self.height - self.top - self.bottom
    }

    /// `t` seconds of `span` → x.
    pub fn x(&self, t: f64, span: f64) -> f64 {
        self.left + t / span.max(f64::EPSILON) * self.plot_width()
    }

    /// `value` on a scale of `0..=max` → y (0 at the bottom).
    pub fn y(&self, value: f64, max: f64) -> f64 {
        let share = (value / max.max(f64::EPSILON)).clamp(0.0, 1.0);
        self.top + (1.0 - share) * self.plot_height()
    }
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `value` (and at least 1): the
/// top of a scale whose ticks read well.
pub fn nice_max(value: f64) -> f64 {
    if !value.is_finite() || value <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if step * magnitude >= value * (1.0 - 1e-9) {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// A value on an axis, as its label: `12,500`, `2.5`, `0`.
pub fn tick_label(value: f64) -> String {
    if value >= 10.0 || value.fract() == 0.0 {
        thousands(value.round() as i64)
    } else {
        format!("{value:.1}")
    }
}

/// A series as `(seconds since the run started, value)`.
pub type Series = Vec<(f64, f64)>;

/// The run's two series, users/s and the graph's p95 (ms), with the time
/// since `start_ms` of each sample. A sample without a p95 leaves a gap in
/// the latency series, not a zero.
pub fn series(samples: &[RunSample], start_ms: i64) -> (Series, Series) {
    let at = |sample: &RunSample| {
        (sample.sampled_at.timestamp_millis() - start_ms).max(0) as f64 / 1000.0
    };
    let rate = samples.iter().map(|s| (at(s), s.rate.max(0.0))).collect();
    let latency = samples
        .iter()
        .filter_map(|s| s.latency_p95_ms.map(|ms| (at(s), ms.max(0.0))))
        .collect();
    (rate, latency)
}

/// The SVG path through `points`, on a time axis of `span` seconds and a
/// value axis of `0..=max`; `None` without a point. A single point is drawn
/// as a flat line from the start to it: the first sample's rate is the
/// rate since the run started.
pub fn path(points: &[(f64, f64)], span: f64, max: f64, frame: &Frame) -> Option<String> {
    let (first, rest) = points.split_first()?;
    let y = frame.y(first.1, max);
    let mut d = if rest.is_empty() {
        format!("M{:.1} {y:.1}", frame.left)
    } else {
        format!("M{:.1} {y:.1}", frame.x(first.0, span))
    };
    if rest.is_empty() {
        d.push_str(&format!(" L{:.1} {y:.1}", frame.x(first.0, span)));
    }
    for (t, value) in rest {
        d.push_str(&format!(
            " L{:.1} {:.1}",
            frame.x(*t, span),
            frame.y(*value, max)
        ));
    }
    Some(d)
}

/// The time axis' ticks: `0`, the middle and the end, as durations (with
/// a tenth of a second on a run under 10 s, so no two read the same).
pub fn time_ticks(span: f64) -> Vec<(f64, String)> {
    let span = span.max(1.0);
    [0.0, span / 2.0, span]
        .into_iter()
        .map(|t| {
            let label = if span < 10.0 && t > 0.0 {
                format!("{t:.1} s")
            } else {
                duration_secs(t.round() as i64)
            };
            (t, label)
        })
        .collect()
}

/// A value axis' ticks: `0`, half and the top.
pub fn value_ticks(max: f64) -> Vec<(f64, String)> {
    [0.0, max / 2.0, max]
        .into_iter()
        .map(|v| (v, tick_label(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Frame = Frame {
        width: 100.0,
        height: 60.0,
        left: 10.0,
        right: 10.0,
        top: 5.0,
        bottom: 5.0,
    };

    #[test]
    fn scales_end_on_one_two_or_five() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(0.4), 1.0);
        assert_eq!(nice_max(1.3), 2.0);
        assert_eq!(nice_max(3.0), 5.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(10.0), 10.0);
        assert_eq!(nice_max(1_234.0), 2_000.0);
        assert_eq!(nice_max(35_000.0), 50_000.0);
        assert_eq!(nice_max(f64::NAN), 1.0);
        assert_eq!(
            value_ticks(5.0)
                .into_iter()
                .map(|(_, l)| l)
                .collect::<Vec<_>>(),
            ["0", "2.5", "5"]
        );
        assert_eq!(
            value_ticks(20_000.0)
                .into_iter()
                .map(|(_, l)| l)
                .collect::<Vec<_>>(),
            ["0", "10,000", "20,000"]
        );
    }

    #[test]
    fn a_path_spans_the_plot_with_zero_at_the_bottom() {
        let points = [(0.0, 0.0), (5.0, 50.0), (10.0, 100.0)];
        assert_eq!(
            path(&points, 10.0, 100.0, &FRAME).as_deref(),
            Some("M10.0 55.0 L50.0 30.0 L90.0 5.0")
        );
        assert_eq!(path(&[], 10.0, 100.0, &FRAME), None);
        assert_eq!(
            path(&[(1.0, 100.0)], 1.0, 100.0, &FRAME).as_deref(),
            Some("M10.0 5.0 L90.0 5.0"),
            "one point is the rate since the start"
        );
        // A flat rate sits at its value on a scale above it, not at the top.
        let flat = [(0.0, 40.0), (10.0, 40.0)];
        let top = nice_max(40.0);
        assert_eq!(
            path(&flat, 10.0, top, &FRAME).as_deref(),
            Some("M10.0 15.0 L90.0 15.0")
        );
        assert_eq!(
            time_ticks(90.0)
                .into_iter()
                .map(|(_, l)| l)
                .collect::<Vec<_>>(),
            ["0 s", "45 s", "1 min 30 s"]
        );
        assert_eq!(
            time_ticks(1.2)
                .into_iter()
                .map(|(_, l)| l)
                .collect::<Vec<_>>(),
            ["0 s", "0.6 s", "1.2 s"]
        );
    }
}
