//! The dashboard: a Jobs page and a page per job, in the browser, served by the API router
//! itself so it works wherever the router runs (the local control plane, or the local
//! SigV4-signing proxy of `stratus dashboard` in front of a deployed API).
//!
//! The pages are one small vanilla-JS single-page app embedded in the binary (no CDN, no build
//! step): `GET /dashboard` and `GET /dashboard/jobs/{id}` serve the same `index.html`, and its
//! `app.js` draws either page from the JSON API (`/api/v1/jobs...`), calling it with
//! `Authorization: Bearer <token>`.
//!
//! # Guarantees
//! - The assets carry no data, so they need no credential; every byte of job data comes
//!   through the authenticated JSON API.
//! - The token never travels in a URL the server sees: `stratus dashboard` puts it in the
//!   fragment (`/dashboard#token=...`), which browsers do not send; the page moves it to
//!   `sessionStorage` and removes it from the address bar.
//! - A strict Content-Security-Policy (scripts and styles from this origin only, no inline
//!   code, no framing) backs the app's rule of writing job data as text, never as HTML.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// Scripts, styles and API calls to this origin only; nothing inline; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The dashboard's routes; they need no state, so they merge into any router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/dashboard", get(index))
        .route("/dashboard/", get(index))
        .route("/dashboard/jobs/{id}", get(index))
        .route("/dashboard/app.js", get(app_js))
        .route("/dashboard/style.css", get(style_css))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Small, and a new binary may bring new assets: always revalidate.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::*;

    async fn get(path: &str) -> (StatusCode, String, String) {
        let response = routes::<()>()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn every_page_is_the_app_and_every_asset_has_its_type() {
        for path in ["/dashboard", "/dashboard/", "/dashboard/jobs/12"] {
            let (status, content_type, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(content_type.starts_with("text/html"), "{path}");
            assert!(body.contains("/dashboard/app.js"), "{path}");
        }
        let (status, content_type, _) = get("/dashboard/app.js").await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "text/javascript; charset=utf-8")
        );
        let (status, content_type, _) = get("/dashboard/style.css").await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "text/css; charset=utf-8")
        );
        assert_eq!(get("/dashboard/nope.js").await.0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_assets_load_nothing_from_elsewhere() {
        // The page must work offline and under the CSP: no CDN, no inline script or style.
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("style.css", STYLE_CSS),
        ] {
            assert!(!text.contains("http://"), "{name} links elsewhere");
            assert!(!text.contains("https://"), "{name} links elsewhere");
        }
        assert!(!INDEX_HTML.contains("<script>"), "inline script");
        assert!(!INDEX_HTML.contains("style="), "inline style");
        assert!(!INDEX_HTML.contains("<style"), "inline style");
    }
}
