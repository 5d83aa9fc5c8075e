//! The operator guide: what the screen is for and how runs behave. It sits
//! below the jobs and the form, one click away from the page head ("Operator
//! guide"); it is open on an operator's first visit, and after that it
//! remembers whether it was open.

use leptos::prelude::*;

const STORAGE_KEY: &str = "igb.guide.open";

/// Whether the guide is open, shared by the head's link and the guide.
#[derive(Clone, Copy)]
pub struct GuideOpen(RwSignal<bool>);

impl GuideOpen {
    /// Open until the browser says otherwise: a first visit has nothing
    /// saved, so the guide stays open; later visits restore the last choice.
    pub fn provide() -> Self {
        let open = RwSignal::new(true);
        #[cfg(feature = "hydrate")]
        Effect::new(move |first: Option<()>| {
            let storage = window().local_storage().ok().flatten();
            if first.is_none() {
                if let Some(saved) = storage
                    .as_ref()
                    .and_then(|s| s.get_item(STORAGE_KEY).ok().flatten())
                {
                    open.set(saved == "true");
                }
            } else if let Some(storage) = storage {
                let _ = storage.set_item(STORAGE_KEY, &open.get().to_string());
            }
            open.track();
        });
        let _ = STORAGE_KEY;
        GuideOpen(open)
    }
}

/// The page head's way to the guide: opens it and moves to it.
#[component]
pub fn GuideLink(open: GuideOpen) -> impl IntoView {
    view! {
        <a class="button ghost" href="#guide" on:click=move |_| open.0.set(true)>
            "Operator guide"
        </a>
    }
}

#[component]
pub fn OperatorGuide(open: GuideOpen) -> impl IntoView {
    let open = open.0;
    view! {
        <section id="guide" class="guide card" aria-labelledby="guide-title">
            <div class="guide-head">
                <div>
                    <p class="eyebrow">"Reporting / Identity Graph Backfill"</p>
                    <h2 id="guide-title">"Operator guide"</h2>
                </div>
                <button
                    type="button"
                    class="button ghost"
                    aria-expanded=move || open.get().to_string()
                    aria-controls="guide-body"
                    on:click=move |_| open.update(|o| *o = !*o)
                >
                    {move || if open.get() { "Hide guide" } else { "Show guide" }}
                </button>
            </div>
            <div id="guide-body" class="guide-body" hidden=move || !open.get()>
                <div class="guide-grid">
                    <article>
                        <h3>"What this screen is for"</h3>
                        <p>
                            "Push historical users into the Identity Graph in controlled, bounded runs. "
                            "This is a job runner, not a report: start a backfill, watch each job make progress, "
                            "and stop a job that is running."
                        </p>
                        <p>
                            "It does not change realtime sync. New signups and logins keep flowing into the "
                            "Identity Graph on their own; a backfill only catches up users created before, or "
                            "missed by, realtime sync."
                        </p>
                    </article>
                    <article>
                        <h3>"Who can open it"</h3>
                        <p>
                            "A small allow-list of named admins. Anyone else sees a warning and no controls, and "
                            "the server enforces the same list, so nobody else can start, stop or list jobs by any other means."
                        </p>
                    </article>
                    <article>
                        <h3>"What operators can do here"</h3>
                        <ul>
                            <li>"Start a bounded run for a job key, with batch size, pacing and a runtime cap."</li>
                            <li>"Dry-run it first: scan candidate users without writing anything."</li>
                            <li>"Stop a running, stopping or paused job."</li>
                            <li>"Refresh the table and watch processed, failed and skipped move."</li>
                            <li>"Read the last error and the most recent per-user failures of a job."</li>
                        </ul>
                    </article>
                    <article>
                        <h3>"How a run behaves"</h3>
                        <ul>
                            <li>"A run is bounded: it pauses itself at the runtime cap, then auto-resumes from where it left off."</li>
                            <li>"Re-running the same job key continues from the saved cursor. Turn on Reset cursor only to scan from the beginning."</li>
                            <li>"In full mode the runner retries old failures first (when Retry failed before cursor is on), then resumes the cursor."</li>
                            <li>"Stopping is cooperative: the runner finishes the current user and checkpoints, so a job does not stop instantly."</li>
                        </ul>
                    </article>
                    <article>
                        <h3>"What a dry run does"</h3>
                        <ul>
                            <li>"Scans the same candidate users a real run would, and writes none of them. Every user counts as skipped, reason dry-run."</li>
                            <li>"Needs no Identity Graph connection: safe as a rehearsal. Beside the dry-run count, the job shows what a real run would do with the same users: how many it would write, and how many it would skip as deleted or with no identifiers."</li>
                            <li>"It never calls the graph, so it waits on no pacing: Sleep between batches is 0 unless you set it."</li>
                            <li>"It is always recorded under its key plus :dry-run (a blank key gives identity-graph-users:dry-run), so it never disturbs the real job's cursor."</li>
                        </ul>
                    </article>
                    <article>
                        <h3>"When operators usually open this screen"</h3>
                        <ul>
                            <li>"A batch of historical users needs loading into the Identity Graph."</li>
                            <li>"A previous backfill paused or failed and needs resuming or stopping."</li>
                            <li>"You want to rehearse with a dry run before committing."</li>
                            <li>"You need to confirm how far a long-running backfill has got."</li>
                        </ul>
                    </article>
                    <article class="wide">
                        <h3>"Common confusion"</h3>
                        <ul>
                            <li>"This page does not edit user data. It only re-sends existing users into the Identity Graph."</li>
                            <li>"The runtime cap is a safety bound, not a failure. A job that stops on the cap is expected to auto-resume."</li>
                            <li>"A stop is a request, not an instant kill. The status moves to stopping first, then stopped."</li>
                            <li>"The progress label counts everything scanned (processed + failed + skipped) and shows the cursor, not just successful writes."</li>
                            <li>"Dry-run counts appear as skipped, not processed, because nothing was written."</li>
                        </ul>
                    </article>
                </div>
            </div>
        </section>
    }
}
