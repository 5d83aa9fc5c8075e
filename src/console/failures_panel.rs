//! The job page's failures by what went wrong: the unresolved failures
//! grouped by class, a filter and a search over them, keyset pages, the CSV
//! export of the filtered set, and "Retry these" (a failed-only run of
//! exactly that set).

use super::format::{exact_time, machine_time, relative_time, thousands};
use super::resource_codec::PolledResource;
use super::IntoSyncAny;
use crate::backfill::api::{failures, Start};
use crate::backfill::domain::{
    FailureClassCount, FailuresPage, FailuresRequest, Mode, StartRequest,
};
use leptos::prelude::*;

/// Rows per page on the job page: a screen or two, with the pager in reach.
const UI_PAGE_ROWS: i64 = 25;

/// The filter, the page and the retry's answer, owned by the job page: its
/// cards re-render at every poll, and what an operator chose must survive.
#[derive(Clone, Copy)]
pub struct FailuresState {
    class: RwSignal<String>,
    search: RwSignal<String>,
    /// What the search box holds until the operator applies it.
    search_draft: RwSignal<String>,
    /// The `after_user_id` of every page before the current one.
    earlier_pages: RwSignal<Vec<i64>>,
    after: RwSignal<i64>,
    page: PolledResource<FailuresPage>,
    retry: ServerAction<Start>,
}

impl FailuresState {
    /// `key` is the job's; `refresh` re-reads the page with the job's polls.
    pub fn provide(key: Memo<String>, refresh: RwSignal<u64>) {
        let class = RwSignal::new(String::new());
        let search = RwSignal::new(String::new());
        let after = RwSignal::new(0_i64);
        let page = Resource::new_with_options(
            move || {
                (
                    key.get(),
                    class.get(),
                    search.get(),
                    after.get(),
                    refresh.get(),
                )
            },
            |(job_key, class, search, after, _)| {
                failures(FailuresRequest {
                    job_key,
                    class: non_blank(class),
                    q: non_blank(search),
                    after_user_id: (after > 0).then_some(after),
                    limit: Some(UI_PAGE_ROWS),
                })
            },
            false,
        );
        provide_context(FailuresState {
            class,
            search,
            search_draft: RwSignal::new(String::new()),
            earlier_pages: RwSignal::new(Vec::new()),
            after,
            page,
            retry: ServerAction::new(),
        });
    }

    fn set_filter(&self, class: String, search: String) {
        self.class.set(class);
        self.search.set(search);
        self.earlier_pages.set(Vec::new());
        self.after.set(0);
    }
}

fn non_blank(text: String) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// `text` as a URL query value: unreserved characters as they are,
/// everything else percent-encoded.
fn query_value(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The export of the failures under a filter.
fn export_href(job_key: &str, class: &str, search: &str) -> String {
    let mut href = format!(
        "/api/identity-graph-backfill/failures.csv?job_key={}",
        query_value(job_key)
    );
    if !class.trim().is_empty() {
        href.push_str(&format!("&class={}", query_value(class.trim())));
    }
    if !search.trim().is_empty() {
        href.push_str(&format!("&q={}", query_value(search.trim())));
    }
    href
}

#[component]
pub fn FailuresPanel(
    job_key: String,
    classes: Vec<FailureClassCount>,
    unresolved: i64,
    /// A retry needs the job idle: a job runs one run at a time.
    can_retry: bool,
    on_changed: impl Fn() + Clone + Send + Sync + 'static,
) -> impl IntoView {
    let Some(state) = use_context::<FailuresState>() else {
        return ().into_sync_any();
    };
    let key = StoredValue::new(job_key);
    let total: i64 = classes.iter().map(|c| c.count).sum();
    let class_choices = StoredValue::new(classes.clone());

    let chips = classes
        .into_iter()
        .map(|group| {
            let name = group.class.clone();
            let chosen = {
                let name = name.clone();
                move || state.class.get() == name
            };
            let pick = {
                let name = name.clone();
                move |_| state.set_filter(name.clone(), state.search.get_untracked())
            };
            view! {
                <li>
                    <button
                        type="button"
                        class="class-chip"
                        aria-pressed=move || chosen().to_string()
                        on:click=pick
                    >
                        <span class="class-name">{name.clone()}</span>
                        <span class="class-count">{thousands(group.count)}</span>
                    </button>
                </li>
            }
        })
        .collect_view();

    let apply = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        state.set_filter(
            state.class.get_untracked(),
            state.search_draft.get_untracked(),
        );
    };
    let clear = move |_| {
        state.search_draft.set(String::new());
        state.set_filter(String::new(), String::new());
    };
    let filter_words = move || {
        let (class, search) = (state.class.get(), state.search.get());
        match (class.is_empty(), search.trim().is_empty()) {
            (true, true) => "every unresolved failure".to_string(),
            (false, true) => format!("class “{class}”"),
            (true, false) => format!("matching “{}”", search.trim()),
            (false, false) => format!("class “{class}”, matching “{}”", search.trim()),
        }
    };
    let href = move || export_href(&key.get_value(), &state.class.get(), &state.search.get());

    let on_retried = on_changed.clone();
    let retry = move |_| {
        state.retry.dispatch(Start {
            options: StartRequest {
                job_key: Some(key.get_value()),
                mode: Some(Mode::FailedOnly),
                failure_class: non_blank(state.class.get_untracked()),
                failure_search: non_blank(state.search.get_untracked()),
                ..Default::default()
            },
        });
    };
    Effect::new(move |previous: Option<usize>| {
        let answers = state.retry.version().get();
        if previous.is_some_and(|seen| seen != answers) {
            on_retried();
        }
        answers
    });
    let retry_answer = move || {
        state.retry.value().get().map(|answer| match answer {
            Ok(started) if started.started => view! {
                <p class="notice success" role="status">
                    "Started a failed-only run of " {filter_words()} ". Its progress is above."
                </p>
            }
            .into_sync_any(),
            Ok(_) => view! {
                <p class="notice info" role="status">"A run of this job is already active."</p>
            }
            .into_sync_any(),
            Err(error) => view! {
                <p class="notice error" role="alert">{error.display_message()}</p>
            }
            .into_sync_any(),
        })
    };

    let rows = move || {
        state.page.get().map(|result| match result {
            Err(error) => view! {
                <p class="notice error" role="alert">
                    "Could not read the failures. " {error.display_message()}
                </p>
            }
            .into_sync_any(),
            Ok(page) if page.failures.is_empty() => view! {
                <p class="empty">"No unresolved failures match."</p>
            }
            .into_sync_any(),
            Ok(page) => {
                let next = page.next_after_user_id;
                let first = state.earlier_pages.with(Vec::is_empty);
                view! {
                    <div class="table-wrap" tabindex="0" role="region" aria-label="Failures">
                        <table class="failures-table">
                            <thead>
                                <tr>
                                    <th scope="col" class="num">"User id"</th>
                                    <th scope="col">"Class"</th>
                                    <th scope="col">"Error"</th>
                                    <th scope="col" class="num">"Attempts"</th>
                                    <th scope="col">"Last failed"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {page.failures.into_iter().map(|f| view! {
                                    <tr>
                                        <td class="num mono" data-label="User">{f.user_id}</td>
                                        <td class="failure-class" data-label="Class">{f.class}</td>
                                        <td class="error-text">{f.error}</td>
                                        <td class="num" data-label="Attempts">{f.attempts}</td>
                                        <td class="failed-at">
                                            <time datetime=machine_time(f.last_failed_at) title=exact_time(f.last_failed_at)>
                                                {relative_time(f.last_failed_at)}
                                            </time>
                                        </td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                    <nav class="pager" aria-label="Failure pages">
                        <button
                            type="button"
                            class="button small"
                            disabled=first
                            on:click=move |_| {
                                let mut earlier = state.earlier_pages.get_untracked();
                                let back = earlier.pop().unwrap_or(0);
                                state.earlier_pages.set(earlier);
                                state.after.set(back);
                            }
                        >
                            "Previous page"
                        </button>
                        <button
                            type="button"
                            class="button small"
                            disabled=next.is_none()
                            on:click=move |_| {
                                if let Some(next) = next {
                                    state.earlier_pages.update(|e| e.push(state.after.get_untracked()));
                                    state.after.set(next);
                                }
                            }
                        >
                            "Next page"
                        </button>
                    </nav>
                }
                .into_sync_any()
            }
        })
    };

    view! {
        <section class="card failures" aria-labelledby="failures-title">
            <h2 id="failures-title">"Failures by reason"</h2>
            <p class="muted">
                {thousands(unresolved)} " unresolved. A failure is resolved when a later run writes the user."
            </p>
            {if total == 0 {
                view! { <p class="empty">"No unresolved failures."</p> }.into_sync_any()
            } else {
                view! {
                    <ul class="failure-classes" aria-label="Unresolved failures by class">
                        <li>
                            <button
                                type="button"
                                class="class-chip"
                                aria-pressed=move || state.class.get().is_empty().to_string()
                                on:click=move |_| state.set_filter(String::new(), state.search.get_untracked())
                            >
                                <span class="class-name">"all"</span>
                                <span class="class-count">{thousands(total)}</span>
                            </button>
                        </li>
                        {chips}
                    </ul>
                    <form class="failure-filter" on:submit=apply>
                        <label>
                            <span>"Class"</span>
                            <select
                                prop:value=move || state.class.get()
                                on:change=move |ev| state.set_filter(event_target_value(&ev), state.search.get_untracked())
                            >
                                <option value="">"any class"</option>
                                {class_choices.get_value().into_iter().map(|c| view! {
                                    <option value=c.class.clone()>{c.class.clone()}</option>
                                }).collect_view()}
                            </select>
                        </label>
                        <label>
                            <span>"Search"</span>
                            <input
                                type="search"
                                placeholder="a user id, or text in the message"
                                maxlength="200"
                                prop:value=move || state.search_draft.get()
                                on:input=move |ev| state.search_draft.set(event_target_value(&ev))
                            />
                        </label>
                        <div class="filter-actions">
                            <button type="submit" class="button">"Search"</button>
                            <button type="button" class="button ghost" on:click=clear>"Clear"</button>
                        </div>
                    </form>
                    <div class="failure-actions">
                        <p class="muted">"Showing " {filter_words} ", in user id order."</p>
                        <a class="button" href=href download rel="external">"Export CSV"</a>
                        <button
                            type="button"
                            class="button primary"
                            disabled=move || !can_retry || state.retry.pending().get()
                            title=if can_retry { "" } else { "Wait for the active run to end." }
                            on:click=retry
                        >
                            "Retry these"
                        </button>
                    </div>
                    {retry_answer}
                    <Transition fallback=|| view! { <p class="empty" role="status">"Loading failures…"</p> }.into_sync_any()>
                        {rows}
                    </Transition>
                }
                .into_sync_any()
            }}
        </section>
    }
    .into_sync_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_link_carries_the_filter_encoded() {
        assert_eq!(
            export_href("identity-graph-users", "http 400", " a&b=c% "),
            "/api/identity-graph-backfill/failures.csv?job_key=identity-graph-users&class=http%20400&q=a%26b%3Dc%25"
        );
        assert_eq!(
            export_href("k", "", "  "),
            "/api/identity-graph-backfill/failures.csv?job_key=k"
        );
    }
}
