//! The four summary cards, each with its description from the guide.

use super::format::{duration_ms, thousands};
use crate::backfill::domain::Summary;
use leptos::prelude::*;

#[component]
pub fn SummaryCards(summary: Option<Summary>) -> impl IntoView {
    let value = |f: fn(&Summary) -> String| summary.as_ref().map(f).unwrap_or_else(|| "—".into());
    let cards = [
        (
            "Jobs",
            value(|s| thousands(s.jobs)),
            "Total number of recorded backfill jobs.",
        ),
        (
            "Active Runs",
            value(|s| thousands(s.active_runs)),
            "How many runs are currently active in this process.",
        ),
        (
            "Default Batch",
            value(|s| thousands(s.default_batch_size.into())),
            "Default batch size suggested by the backend.",
        ),
        (
            "UI Runtime Cap",
            value(|s| format!("{} ms", thousands(s.ui_runtime_cap_ms as i64))),
            "Default runtime cap in ms applied to UI-started runs.",
        ),
    ];
    let cap_hint = summary.as_ref().map(|s| duration_ms(s.ui_runtime_cap_ms));
    view! {
        <section class="cards" aria-label="Summary">
            {cards
                .into_iter()
                .map(|(label, value, help)| {
                    let hint = (label == "UI Runtime Cap").then(|| cap_hint.clone()).flatten();
                    view! {
                        <div class="stat card">
                            <p class="stat-label">{label}</p>
                            <p class="stat-value" aria-live="polite">
                                {value}
                                {hint.map(|h| view! { <span class="stat-hint">" (" {h} ")"</span> })}
                            </p>
                            <p class="stat-help">{help}</p>
                        </div>
                    }
                })
                .collect_view()}
        </section>
    }
}
