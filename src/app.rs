//! The HTML shell, the router and the page frame.

use crate::access::{AdminIdentity, LoginPage, SignOutButton};
use crate::console::{ConsolePage, IntoSyncAny, JobDetailPage};
use crate::reporting::ReportingPage;
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{FlatRoutes, Route, Router, A},
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
            // Every erased view hydrates synchronously (see console::sync_any).
            // Flat: no route here nests, and FlatRoutes carries none of the
            // nested router's outlet code (-16 KB gzipped WASM).
            <FlatRoutes fallback=|| view! { <NotFound /> }.into_sync_any()>
                <Route path=path!("/login") view=|| view! { <LoginPage /> }.into_sync_any() />
                <Route path=path!("/") view=|| view! { <Frame><ConsolePage /></Frame> }.into_sync_any() />
                <Route
                    path=path!("/reporting/identity-graph-backfill")
                    view=|| view! { <Frame><ConsolePage /></Frame> }.into_sync_any()
                />
                <Route
                    path=path!("/jobs/:key")
                    view=|| view! { <Frame><JobDetailPage /></Frame> }.into_sync_any()
                />
                <Route
                    path=path!("/reporting")
                    view=|| view! { <Frame><ReportingPage /></Frame> }.into_sync_any()
                />
            </FlatRoutes>
        </Router>
    }
}

/// Header, and the access gate: the page's content is built only for an
/// admin on the allow-list, so nothing asks for job data for anyone else.
///
/// Access is resolved by the server's page middleware before rendering and
/// shipped to the browser with the page (`SharedValue`), so the gate needs no
/// resource and no Suspense of its own. Internal links are therefore full
/// page loads (`rel="external"`): every page is rendered, and gated, by the server.
#[component]
fn Frame(children: Children) -> impl IntoView {
    let me: Option<AdminIdentity> = SharedValue::new(signed_in_admin).into_inner();
    let email = me.as_ref().map(|me| me.email.clone());
    let content = match me {
        Some(me) if me.allowed => children(),
        Some(me) => view! { <NotAllowed email=me.email /> }.into_sync_any(),
        None => view! { <SignedOut /> }.into_sync_any(),
    };
    view! {
        <header class="topbar">
            <a class="brand" href="/" rel="external">
                <span class="brand-mark" aria-hidden="true">"◆"</span>
                <span>"Identity Graph Backfill"</span>
            </a>
            <nav aria-label="Main">
                <A href="/" attr:rel="external">"Console"</A>
                <A href="/reporting" attr:rel="external">"Reporting"</A>
            </nav>
            <div class="who">
                {email.map(|email| view! { <span class="who-email" title="Signed in">{email}</span> })}
                <SignOutButton />
            </div>
        </header>
        <main id="main" class="page">{content}</main>
    }
}

/// The admin the page middleware found for this request.
fn signed_in_admin() -> Option<AdminIdentity> {
    #[cfg(feature = "ssr")]
    {
        use_context::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<AdminIdentity>().cloned())
    }
    #[cfg(not(feature = "ssr"))]
    {
        None
    }
}

#[component]
fn SignedOut() -> impl IntoView {
    view! {
        <section class="notice error" role="alert">
            <h1>"Your session has ended"</h1>
            <p><a rel="external" href="/login" rel="external">"Sign in again"</a></p>
        </section>
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
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(axum::http::StatusCode::NOT_FOUND);
    }
    view! {
        <main class="page">
            <section class="notice">
                <h1>"Page not found"</h1>
                <p><a rel="external" href="/">"Back to the console"</a></p>
            </section>
        </main>
    }
}
