//! The latest successful value of a polled resource, as a plain signal.
//!
//! Leptos warns (in debug builds) when a resource is read during hydration
//! outside a `<Suspense/>`, a `<Transition/>` or an effect, because such a
//! read can differ between the server's HTML and the browser. The view reads
//! the resource inside `<Transition/>`; everything else (the refresh timer,
//! the live title, the form's runtime-cap default, the chart's samples)
//! reads this mirror instead, which only an effect writes. Effects do not run
//! on the server, so the mirror is `None` there and fills in after hydration.

use super::resource_codec::PolledResource;
use leptos::prelude::*;

/// Mirrors every `Ok` value of `resource`; errors keep the previous value,
/// so one failed poll does not blank the title or stop the refresh timer.
pub fn latest_ok<T>(resource: PolledResource<T>) -> ReadSignal<Option<T>>
where
    T: Clone + Send + Sync + 'static,
{
    let latest = RwSignal::new(None::<T>);
    Effect::new(move |_| {
        if let Some(Ok(value)) = resource.get() {
            latest.set(Some(value));
        }
    });
    latest.read_only()
}
