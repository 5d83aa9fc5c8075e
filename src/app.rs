//! The HTML shell, the router and the page frame.

use crate::access::{me, AdminIdentity, LoginPage, SignOutButton};
use crate::console::{ConsolePage, JobDetailPage};
use crate::error::{AppError, ErrorCode};
use crate::reporting::ReportingPage;
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes, A},
    path,
};

pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="icon" type="image/svg+xml" href="/favicon.svg" />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/identity-graph-backfill.css" />
        <Title text="Identity Graph Backfill" />
        <Router>
            <Routes fallback=|| view! { <NotFound /> }>
                <Route path=path!("/login") view=LoginPage />
                <Route path=path!("/") view=|| view! { <Frame><ConsolePage /></Frame> } />
                <Route
                    path=path!("/reporting/identity-graph-backfill")
                    view=|| view! { <Frame><ConsolePage /></Frame> }
                />
                <Route path=path!("/jobs/:key") view=|| view! { <Frame><JobDetailPage /></Frame> } />
                <Route path=path!("/reporting") view=|| view! { <Frame><ReportingPage /></Frame> } />
            </Routes>
        </Router>
    }
}

/// The signed-in admin, shared with every page below the frame.
#[derive(Clone, Copy)]
pub struct CurrentAdmin(pub Signal<Option<AdminIdentity>>);

/// Header, and the access gate: the page's content is built only for an
/// admin on the allow-list, so nothing asks for job data for anyone else.
#[component]
fn Frame(children: ChildrenFn) -> impl IntoView {
    let me = Resource::new(|| (), |_| me());
    let current = Signal::derive(move || me.get().and_then(Result::ok));
    provide_context(CurrentAdmin(current));
    let children = StoredValue::new(children);

    view! {
        <header class="topbar">
            <a class="brand" href="/">
                <span class="brand-mark" aria-hidden="true">"◆"</span>
                <span>"Identity Graph Backfill"</span>
            </a>
            <nav aria-label="Main">
                <A href="/">"Console"</A>
                <A href="/reporting">"Reporting"</A>
            </nav>
            <div class="who">
                <Transition fallback=|| ()>
                    {move || current.get().map(|me| view! {
                        <span class="who-email" title="Signed in">{me.email}</span>
                    })}
                </Transition>
                <SignOutButton />
            </div>
        </header>
        <main id="main" class="page">
            <Transition fallback=|| view! { <p class="loading" role="status">"Checking your access…"</p> }>
                {move || me.get().map(|result| match result {
                    Ok(me) if me.allowed => children.with_value(|children| children()).into_any(),
                    Ok(me) => view! { <NotAllowed email=me.email /> }.into_any(),
                    Err(error) => view! { <AccessError error /> }.into_any(),
                })}
            </Transition>
        </main>
    }
}

#[component]
fn NotAllowed(email: String) -> impl IntoView {
    view! {
        <section class="notice warning" role="alert">
            <h1>"Your account is not on the Identity Graph Backfill allow-list"</h1>
            <p>
                "You are signed in as " <strong>{email}</strong>
                ", but only a small list of named admins can start, stop or list backfills. "
                "Ask an owner of the Identity Graph to add your email to IDENTITY_GRAPH_BACKFILL_ADMINS."
            </p>
        </section>
    }
}

#[component]
fn AccessError(error: AppError) -> impl IntoView {
    if error.code == ErrorCode::Unauthenticated {
        // The session ended while the page was open.
        #[cfg(feature = "hydrate")]
        let _ = window().location().set_href("/login");
    }
    view! {
        <section class="notice error" role="alert">
            <h1>"Could not check your access"</h1>
            <p>{error.display_message()}</p>
            <p><a href="/login">"Sign in again"</a></p>
        </section>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(axum::http::StatusCode::NOT_FOUND);
    }
    view! {
        <main class="page">
            <section class="notice">
                <h1>"Page not found"</h1>
                <p><a href="/">"Back to the console"</a></p>
            </section>
        </main>
    }
}
