//! A run's chart as inline SVG: users/s (solid, left scale) and the
//! Identity Graph's p95 answer time (dashed, right scale) over the run, from
//! the samples its heartbeat recorded. The job page draws the large one,
//! with axes and the figures in words; the jobs table a small one per
//! running job. Both read the same samples, so the chart is the same while
//! the run goes, after it ends, and after a reload.

use super::chart::{nice_max, path, series, time_ticks, value_ticks, Frame};
use super::format::thousands;
use super::sync_any::IntoSyncAny;
use crate::backfill::domain::{RunSample, Timestamp};
use leptos::prelude::*;

const LARGE: Frame = Frame {
    width: 640.0,
    height: 230.0,
    left: 56.0,
    right: 56.0,
    top: 24.0,
    bottom: 28.0,
};

/// Few points are marked one by one, so a short run's chart still reads.
const MARK_UP_TO: usize = 40;

const SMALL: Frame = Frame {
    width: 120.0,
    height: 28.0,
    left: 1.0,
    right: 1.0,
    top: 2.0,
    bottom: 2.0,
};

/// What the chart says in words: the points, the peak and the latest.
struct Figures {
    points: usize,
    peak_rate: f64,
    latest_rate: f64,
    peak_p95: Option<f64>,
}

fn figures(samples: &[RunSample]) -> Figures {
    Figures {
        points: samples.len(),
        peak_rate: samples.iter().map(|s| s.rate).fold(0.0, f64::max),
        latest_rate: samples.last().map_or(0.0, |s| s.rate),
        peak_p95: samples
            .iter()
            .filter_map(|s| s.latency_p95_ms)
            .reduce(f64::max),
    }
}

fn rate_words(rate: f64) -> String {
    format!("{} users/s", thousands(rate.round() as i64))
}

/// The job page's chart of its latest run. `started_at` is the run's start
/// (the time axis' zero); `ended` says whether the run is over.
#[component]
pub fn RunChart(samples: Vec<RunSample>, started_at: Timestamp, ended: bool) -> impl IntoView {
    if samples.is_empty() {
        let words = if ended {
            "This run ended before its first sample (runs are sampled every second at first, then every 10 s)."
        } else {
            "The first point appears about a second into the run."
        };
        return view! {
            <figure class="run-chart">
                <figcaption>"Rate and graph latency over the run"</figcaption>
                <p class="chart-empty muted" role="status">{words}</p>
            </figure>
        }
        .into_sync_any();
    }
    let frame = LARGE;
    let start_ms = started_at.timestamp_millis();
    let (rate, latency) = series(&samples, start_ms);
    let span = rate.last().map_or(1.0, |(t, _)| *t).max(1.0);
    let f = figures(&samples);
    let rate_max = nice_max(f.peak_rate);
    let latency_max = f.peak_p95.map(nice_max);
    let rate_path = path(&rate, span, rate_max, &frame).unwrap_or_default();
    let latency_path = latency_max.and_then(|max| path(&latency, span, max, &frame));
    let label = format!(
        "Rate and graph latency over the run: {} points; peak {}, {} {}{}",
        f.points,
        rate_words(f.peak_rate),
        if ended { "at the end" } else { "now" },
        rate_words(f.latest_rate),
        f.peak_p95
            .map(|ms| format!("; graph p95 up to {} ms", thousands(ms.round() as i64)))
            .unwrap_or_else(|| "; no graph calls".into())
    );
    let bottom = frame.height - frame.bottom;
    let right = frame.width - frame.right;
    let rate_ticks = value_ticks(rate_max)
        .into_iter()
        .map(|(value, text)| {
            let y = frame.y(value, rate_max);
            view! {
                <line class="grid" x1=frame.left x2=right y1=y y2=y />
                <text class="tick" x=frame.left - 6.0 y=y + 4.0 text-anchor="end">{text}</text>
            }
        })
        .collect_view();
    let latency_ticks = latency_max.map(|max| {
        value_ticks(max)
            .into_iter()
            .map(|(value, text)| {
                let y = frame.y(value, max);
                view! {
                    <text class="tick latency" x=right + 6.0 y=y + 4.0 text-anchor="start">{text}</text>
                }
            })
            .collect_view()
    });
    let time_ticks = time_ticks(span)
        .into_iter()
        .enumerate()
        .map(|(index, (t, text))| {
            let anchor = match index {
                0 => "start",
                2 => "end",
                _ => "middle",
            };
            view! {
                <text class="tick" x=frame.x(t, span) y=bottom + 18.0 text-anchor=anchor>{text}</text>
            }
        })
        .collect_view();
    view! {
        <figure class="run-chart">
            <figcaption>"Rate and graph latency over the run"</figcaption>
            <svg
                class="run-chart-svg"
                viewBox=format!("0 0 {} {}", frame.width, frame.height)
                role="img"
                aria-label=label
                data-points=f.points
            >
                {rate_ticks}
                {latency_ticks}
                <line class="axis" x1=frame.left x2=frame.left y1=frame.top y2=bottom />
                <line class="axis" x1=frame.left x2=right y1=bottom y2=bottom />
                {time_ticks}
                <text class="axis-title" x=frame.left y=12.0 text-anchor="middle">"users/s"</text>
                {latency_max.map(|_| view! {
                    <text class="axis-title latency" x=right y=12.0 text-anchor="middle">"p95 ms"</text>
                })}
                {latency_path.map(|d| view! { <path class="series latency" d=d /> })}
                <path class="series rate" d=rate_path />
                {(rate.len() <= MARK_UP_TO).then(|| {
                    rate.iter()
                        .map(|(t, value)| view! {
                            <circle class="point rate" cx=frame.x(*t, span) cy=frame.y(*value, rate_max) r=3.0 />
                        })
                        .collect_view()
                })}
            </svg>
            <p class="chart-legend">
                <span class="key rate">"users/s"</span>
                " peak " <strong>{rate_words(f.peak_rate)}</strong>
                {if ended { " · at the end " } else { " · now " }}
                <strong>{rate_words(f.latest_rate)}</strong>
                {f.peak_p95.map(|ms| view! {
                    <span class="key latency">"graph p95"</span>
                    " up to " <strong>{format!("{} ms", thousands(ms.round() as i64))}</strong>
                })}
            </p>
        </figure>
    }
    .into_sync_any()
}

/// The jobs table's chart of a running job: its rate over the run so far.
#[component]
pub fn MiniChart(samples: Vec<RunSample>, started_at: Option<Timestamp>) -> impl IntoView {
    let start_ms = started_at
        .map(|at| at.timestamp_millis())
        .or_else(|| samples.first().map(|s| s.sampled_at.timestamp_millis()))
        .unwrap_or(0);
    let (rate, _) = series(&samples, start_ms);
    let span = rate.last().map_or(1.0, |(t, _)| *t).max(1.0);
    let f = figures(&samples);
    let frame = SMALL;
    let d = path(&rate, span, nice_max(f.peak_rate), &frame)?;
    let label = format!(
        "Rate over the run: {} points, now {}, peak {}",
        f.points,
        rate_words(f.latest_rate),
        rate_words(f.peak_rate)
    );
    Some(view! {
        <svg
            class="mini-chart"
            viewBox=format!("0 0 {} {}", frame.width, frame.height)
            preserveAspectRatio="none"
            role="img"
            aria-label=label
            data-points=f.points
        >
            <path class="series rate" d=d vector-effect="non-scaling-stroke" />
        </svg>
    })
}
