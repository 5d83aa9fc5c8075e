//! The sign-in page and the header's sign-out button (shared: rendered on the
//! server, hydrated in the browser).

use super::{validate_credentials, Login, Logout};
use crate::error::AppError;
use leptos::prelude::*;

/// The sign-in page.
#[component]
pub fn LoginPage() -> impl IntoView {
    let login = ServerAction::<Login>::new();
    let email = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let client_error = RwSignal::new(None::<AppError>);

    Effect::new(move |_| {
        if let Some(Ok(_)) = login.value().get() {
            // A full load, so the server renders the console with the new session.
            let _ = window().location().set_href("/");
        }
    });

    let error = move || {
        client_error
            .get()
            .or_else(|| login.value().get().and_then(Result::err))
    };
    let field_error = move |field: &'static str| {
        move || {
            error()
                .filter(|e| e.field.as_deref() == Some(field))
                .map(|e| e.message)
        }
    };
    let form_error = move || error().filter(|e| e.field.is_none()).map(|e| e.message);

    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match validate_credentials(&email.get_untracked(), &password.get_untracked()) {
            Err(err) => client_error.set(Some(err)),
            Ok(normalized) => {
                client_error.set(None);
                login.dispatch(Login {
                    email: normalized,
                    password: password.get_untracked(),
                });
            }
        }
    };

    view! {
        <main class="login">
            <section class="login-card" aria-labelledby="login-title">
                <p class="eyebrow">"Reporting"</p>
                <h1 id="login-title">"Identity Graph Backfill"</h1>
                <p class="muted">"Sign in with your operator account."</p>
                <form on:submit=on_submit novalidate>
                    <label for="login-email">"Email"</label>
                    <input
                        id="login-email"
                        name="email"
                        type="email"
                        autocomplete="username"
                        required
                        aria-invalid=move || field_error("email")().is_some().to_string()
                        aria-describedby="login-email-error"
                        prop:value=email
                        on:input=move |ev| email.set(event_target_value(&ev))
                    />
                    <p id="login-email-error" class="field-error" role="alert">
                        {field_error("email")}
                    </p>
                    <label for="login-password">"Password"</label>
                    <input
                        id="login-password"
                        name="password"
                        type="password"
                        autocomplete="current-password"
                        required
                        aria-invalid=move || field_error("password")().is_some().to_string()
                        aria-describedby="login-password-error"
                        prop:value=password
                        on:input=move |ev| password.set(event_target_value(&ev))
                    />
                    <p id="login-password-error" class="field-error" role="alert">
                        {field_error("password")}
                    </p>
                    <p class="form-error" role="alert" aria-live="assertive">
                        {form_error}
                    </p>
                    <button class="button primary" type="submit" disabled=move || login.pending().get()>
                        {move || if login.pending().get() { "Signing in…" } else { "Sign in" }}
                    </button>
                </form>
            </section>
        </main>
    }
}

/// The header's sign-out button.
#[component]
pub fn SignOutButton() -> impl IntoView {
    let logout = ServerAction::<Logout>::new();
    Effect::new(move |_| {
        if logout.value().get().is_some() {
            let _ = window().location().set_href("/login");
        }
    });
    view! {
        <button class="button ghost" type="button" on:click=move |_| { logout.dispatch(Logout {}); }>
            "Sign out"
        </button>
    }
}
