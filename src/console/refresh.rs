//! Automatic refresh: every 2 s while a job is active, every 15 s otherwise,
//! and never while the tab is hidden.

use leptos::prelude::*;

#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const ACTIVE_INTERVAL_MS: u32 = 2_000;
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const IDLE_INTERVAL_MS: u32 = 15_000;

/// Bumps `refresh` on a timer for as long as the calling component lives.
pub fn use_auto_refresh(refresh: RwSignal<u64>, any_active: Signal<bool>) {
    #[cfg(feature = "hydrate")]
    {
        let alive = RwSignal::new(true);
        on_cleanup(move || alive.set(false));
        leptos::task::spawn_local(async move {
            let mut waited = 0u32;
            loop {
                gloo_timers::future::TimeoutFuture::new(500).await;
                if alive.try_get_untracked() != Some(true) {
                    break;
                }
                waited += 500;
                let due = if any_active.get_untracked() {
                    ACTIVE_INTERVAL_MS
                } else {
                    IDLE_INTERVAL_MS
                };
                let hidden = document().visibility_state() == web_sys::VisibilityState::Hidden;
                if waited >= due && !hidden {
                    waited = 0;
                    refresh.update(|n| *n += 1);
                }
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (refresh, any_active);
}
