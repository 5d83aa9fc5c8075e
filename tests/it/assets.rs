//! The front end's files on the wire: `/pkg` serves the `.br` sibling to a
//! browser that takes brotli, the `.gz` one to a browser that takes gzip,
//! with cache lifetimes that suit each file; pages are revalidated.
//!
//! The site here is a folder of known files, so the test checks the
//! serving and not a build; `scripts/wasm-budget` measures the real
//! release WASM's transfer bytes the same way (Accept-Encoding: br).

use crate::harness::*;
use sqlx::PgPool;

const WASM: &str = "identity-graph-backfill.wasm";

fn site_with_precompressed_wasm() -> std::path::PathBuf {
    let root = std::env::temp_dir().join(format!(
        "igb-assets-{}-{:x}",
        std::process::id(),
        rand_suffix()
    ));
    let pkg = root.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join(WASM), vec![b'w'; 40_000]).unwrap();
    std::fs::write(pkg.join(format!("{WASM}.br")), vec![b'b'; 9_000]).unwrap();
    std::fs::write(pkg.join(format!("{WASM}.gz")), vec![b'g'; 12_000]).unwrap();
    std::fs::write(pkg.join("app.0123456789abcdef.css"), "body{}").unwrap();
    root
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[sqlx::test]
async fn the_wasm_is_served_precompressed_by_accept_encoding(pool: PgPool) {
    let root = site_with_precompressed_wasm();
    let app = TestApp::with_admins(&pool, &[("LEPTOS_SITE_ROOT", root.to_str().unwrap())]).await;
    // No automatic decompression: the bytes counted are the bytes sent.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let fetch = |accept: &'static str| {
        let request = client
            .get(app.url(&format!("/pkg/{WASM}")))
            .header("accept-encoding", accept);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{accept}");
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
            };
            let (encoding, cache, vary) = (
                header("content-encoding"),
                header("cache-control"),
                header("vary"),
            );
            let content_type = header("content-type");
            let bytes = response.bytes().await.unwrap().len();
            (encoding, bytes, cache, vary, content_type)
        }
    };
    let (encoding, bytes, cache, vary, content_type) = fetch("gzip, deflate, br, zstd").await;
    assert_eq!(encoding.as_deref(), Some("br"));
    assert_eq!(bytes, 9_000, "the brotli file, as it is on disk");
    assert_eq!(content_type.as_deref(), Some("application/wasm"));
    assert_eq!(
        cache.as_deref(),
        Some("public, no-cache"),
        "an unhashed name is revalidated"
    );
    assert!(vary.is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")));
    let (encoding, bytes, ..) = fetch("gzip").await;
    assert_eq!((encoding.as_deref(), bytes), (Some("gzip"), 12_000));
    let (encoding, bytes, ..) = fetch("identity").await;
    assert_eq!((encoding, bytes), (None, 40_000));

    // The static files need no session; a hashed one is cached for a year.
    let css = client
        .get(app.url("/pkg/app.0123456789abcdef.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    assert_eq!(
        css.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    // Pages are revalidated on every visit.
    let admin = app.signed_in().await;
    let page = client
        .get(app.url("/"))
        .header("cookie", &admin.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-cache");
    app.stop().await;
    let _ = std::fs::remove_dir_all(root);
}
