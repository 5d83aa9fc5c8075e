//! Automatic refresh: every 2 s while a job is active, every 15 s otherwise.
//! A hidden tab polls only while a job is active, and only every 10 s: just
//! enough for the live title to show that a run ended, and no load otherwise.

use leptos::prelude::*;

#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const ACTIVE_INTERVAL_MS: u32 = 2_000;
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const IDLE_INTERVAL_MS: u32 = 15_000;
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const HIDDEN_ACTIVE_INTERVAL_MS: u32 = 10_000;
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const TICK_MS: u32 = 500;

/// When the next refresh is due, or `None` for no refresh at all.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
fn interval_ms(any_active: bool, hidden: bool) -> Option<u32> {
    match (any_active, hidden) {
        (true, false) => Some(ACTIVE_INTERVAL_MS),
        (false, false) => Some(IDLE_INTERVAL_MS),
        (true, true) => Some(HIDDEN_ACTIVE_INTERVAL_MS),
        (false, true) => None,
    }
}

/// Bumps `refresh` on a timer for as long as the calling component lives.
/// `any_active` must be a plain signal (see `latest`), not a resource read.
pub fn use_auto_refresh(refresh: RwSignal<u64>, any_active: Signal<bool>) {
    #[cfg(feature = "hydrate")]
    {
        let alive = RwSignal::new(true);
        on_cleanup(move || alive.set(false));
        leptos::task::spawn_local(async move {
            let mut waited = 0u32;
            loop {
                gloo_timers::future::TimeoutFuture::new(TICK_MS).await;
                if alive.try_get_untracked() != Some(true) {
                    break;
                }
                waited += TICK_MS;
                let hidden = document().visibility_state() == web_sys::VisibilityState::Hidden;
                let due = interval_ms(any_active.get_untracked(), hidden);
                if due.is_some_and(|due| waited >= due) {
                    waited = 0;
                    refresh.update(|n| *n += 1);
                }
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (refresh, any_active);
}

#[cfg(test)]
mod tests {
    use super::interval_ms;

    #[test]
    fn a_hidden_tab_polls_slowly_and_only_while_a_job_runs() {
        assert_eq!(interval_ms(true, false), Some(2_000));
        assert_eq!(interval_ms(false, false), Some(15_000));
        assert_eq!(interval_ms(true, true), Some(10_000));
        assert_eq!(interval_ms(false, true), None);
    }
}
