//! An unknown email costs a sign-in exactly what a wrong password costs:
//! one argon2 verification, with the same parameters. Counted, not timed.
//!
//! A test binary of its own, because the count
//! (`password::verifications_started`) is per process: in `tests/it` the
//! other tests' sign-ins would run beside this one and add to it.
#![cfg(feature = "ssr")]

#[allow(dead_code)]
#[path = "it/harness.rs"]
mod harness;

use harness::*;
use identity_graph_backfill::access::ssr::password::{decoy_hash, verifications_started};
use sqlx::PgPool;

/// The `m=…,t=…,p=…` segment of a PHC string: what one verification costs.
fn cost(phc: &str) -> String {
    phc.split('$')
        .find(|part| part.starts_with("m="))
        .unwrap_or_else(|| panic!("argon2 parameters in {phc}"))
        .to_string()
}

#[sqlx::test]
async fn a_wrong_password_and_an_unknown_email_run_the_same_verifications(pool: PgPool) {
    let app = TestApp::with_admins(&pool, &[("LOGIN_MAX_FAILURES_PER_MINUTE", "100")]).await;
    let mut wrong_bodies = Vec::new();
    let mut unknown_bodies = Vec::new();

    let before = verifications_started();
    for _ in 0..3 {
        let (status, cookie, body) = app.login(ALLOWED.0, "wrong-password").await;
        assert_eq!((status, cookie), (401, None));
        wrong_bodies.push(body);
    }
    let for_wrong = verifications_started() - before;

    let before = verifications_started();
    for _ in 0..3 {
        let (status, cookie, body) = app.login("nobody@example.com", "wrong-password").await;
        assert_eq!((status, cookie), (401, None));
        unknown_bodies.push(body);
    }
    let for_unknown = verifications_started() - before;

    assert_eq!(
        (for_wrong, for_unknown),
        (3, 3),
        "verifications for 3 wrong passwords, then for 3 unknown emails: one each"
    );
    assert_eq!(wrong_bodies, unknown_bodies, "the answers are identical");
    assert_eq!(wrong_bodies[0]["code"], "UNAUTHENTICATED");
    assert_eq!(
        wrong_bodies[0]["message"],
        "The email or password is incorrect."
    );

    // The unknown email is checked against a decoy hashed with the same
    // parameters as a real admin's, so its one verification costs the same.
    let stored: String = sqlx::query_scalar("SELECT password_hash FROM admins WHERE email = $1")
        .bind(ALLOWED.0)
        .fetch_one(&pool)
        .await
        .unwrap();
    let decoy = decoy_hash().await.unwrap();
    assert_eq!(cost(decoy.as_phc()), cost(&stored));

    // And a good password is one verification too.
    let before = verifications_started();
    app.session(ALLOWED).await;
    assert_eq!(verifications_started() - before, 1);
}
