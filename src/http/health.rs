//! `POST /v1/health`: a POP, or the cache node running in it, reports its health
//! and load with `Authorization: Bearer <token>`:
//!
//! ```json
//! {"pop": "nrt", "seq": 17, "healthy": true, "load": 0.42}
//! ```
//!
//! optionally with `epoch`, `bandwidth_mbps`, `connections` and
//! `requests_per_second`, or several at once as `{"reports": [...]}`. Statuses:
//! 401 missing or unknown token, 403 token not allowed for that POP, 404 unknown
//! POP, 400 malformed body or value out of range, 409 out-of-order `seq`, 413 body
//! over [`MAX_BODY`], 200 accepted; every error with a JSON `{"error": "..."}`.
//!
//! In a batch each report stands alone, as if sent by itself: the body lists each
//! one's status, and the response status is 200 if all were accepted, else the
//! status of the first refused. A body that is not valid JSON, or a report that
//! cannot be read at all, refuses the whole request.
//!
//! Nothing here touches the answer path: the keeper takes the report and stores a
//! new view for the answer path to load.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::{AppState, error};
use crate::health::{Report, ReportError};
use crate::metrics::ReportOutcome;

/// Largest request body accepted: a batch for a few hundred POPs.
pub const MAX_BODY: usize = 64 * 1024;

/// The health intake route.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/health", post(handler))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Takes one report or a batch.
async fn handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let metrics = &state.metrics;
    // Who is asking comes before what they sent.
    let authorized = bearer(&headers).is_some_and(|t| state.health.authorize_report(t).is_ok());
    if !authorized {
        metrics.health_report(ReportOutcome::Unauthorized);
        return unauthorized();
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            metrics.health_report(ReportOutcome::TooLarge);
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("body over {MAX_BODY} bytes"),
            );
        }
        Err(rejection) => {
            metrics.health_report(ReportOutcome::Malformed);
            return error(rejection.status(), &rejection.body_text());
        }
    };
    let (reports, batch) = match parse(&body) {
        Ok(parsed) => parsed,
        Err(reason) => {
            metrics.health_report(ReportOutcome::Malformed);
            return error(StatusCode::BAD_REQUEST, &reason);
        }
    };
    let token = bearer(&headers).unwrap_or_default();
    let results = match state.health.report(token, &reports, Instant::now()) {
        Ok(results) => results,
        // The config changed since the check above and the token went with it.
        Err(_) => {
            metrics.health_report(ReportOutcome::Unauthorized);
            return unauthorized();
        }
    };
    for result in &results {
        metrics.health_report(match result {
            Ok(_) => ReportOutcome::Accepted,
            Err(e) => e.outcome(),
        });
    }
    if !batch {
        return match results.into_iter().next() {
            Some(Ok(accepted)) => (StatusCode::OK, axum::Json(accepted)).into_response(),
            Some(Err(e)) => error(status(&e), &e.to_string()),
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "no result"),
        };
    }
    let first_refused = results.iter().find_map(|r| r.as_ref().err().map(status));
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let listed: Vec<Value> = results
        .into_iter()
        .zip(&reports)
        .map(|(result, report)| match result {
            Ok(accepted) => json!({
                "pop": accepted.pop,
                "status": 200,
                "health": accepted.health,
                "usable": accepted.usable,
                "load": accepted.load,
                "shed": accepted.shed,
            }),
            Err(e) => json!({
                "pop": report.pop.chars().take(64).collect::<String>(),
                "status": status(&e).as_u16(),
                "error": e.to_string(),
            }),
        })
        .collect();
    let body = json!({
        "accepted": accepted,
        "rejected": listed.len() - accepted,
        "results": listed,
    });
    (first_refused.unwrap_or(StatusCode::OK), axum::Json(body)).into_response()
}

/// The reports in a body, and whether it was a batch.
fn parse(body: &[u8]) -> Result<(Vec<Report>, bool), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
    let Some(items) = value.get("reports") else {
        let report = read_report(&value).map_err(|e| format!("report: {e}"))?;
        return Ok((vec![report], false));
    };
    let Value::Array(items) = items else {
        return Err("`reports` must be a list of reports".into());
    };
    if items.is_empty() {
        return Err("`reports` is empty".into());
    }
    let reports = items
        .iter()
        .enumerate()
        .map(|(i, item)| read_report(item).map_err(|e| format!("reports[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((reports, true))
}

/// One report, the error naming the field at fault (`seq: invalid value ...`).
fn read_report(value: &Value) -> Result<Report, serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize(value)
}

/// The HTTP status of a refused report.
fn status(error: &ReportError) -> StatusCode {
    match error {
        ReportError::Invalid(_) => StatusCode::BAD_REQUEST,
        ReportError::UnknownPop(_) => StatusCode::NOT_FOUND,
        ReportError::Forbidden(_) => StatusCode::FORBIDDEN,
        ReportError::OutOfOrder { .. } => StatusCode::CONFLICT,
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// 401 with the challenge RFC 6750 asks for.
pub(crate) fn unauthorized() -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, "missing or unknown bearer token");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"meridian\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_strictly() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        for (value, expected) in [
            ("Bearer abc", Some(&b"abc"[..])),
            ("bearer abc ", Some(&b"abc"[..])),
            ("BEARER  abc", Some(&b"abc"[..])),
            ("Bearer ", None),
            ("Basic abc", None),
            ("Bearerabc", None),
            ("abc", None),
        ] {
            headers.insert(header::AUTHORIZATION, value.parse().expect("header value"));
            assert_eq!(bearer(&headers), expected, "{value}");
        }
    }

    #[test]
    fn bodies_parse_into_reports_or_say_why_not() {
        let (reports, batch) =
            parse(br#"{"pop":"nrt","seq":17,"healthy":true,"load":0.42,"future":1}"#)
                .expect("a report");
        assert!(!batch);
        assert_eq!((reports[0].pop.as_str(), reports[0].seq), ("nrt", 17));
        assert_eq!(reports[0].epoch, 0);
        let (reports, batch) = parse(
            br#"{"reports":[{"pop":"a","seq":1,"healthy":true,"load":0},{"pop":"b","seq":2,"healthy":false,"load":1,"epoch":3,"connections":12}]}"#,
        )
        .expect("a batch");
        assert!(batch);
        assert_eq!(reports.len(), 2);
        assert_eq!((reports[1].epoch, reports[1].connections), (3, Some(12)));
        for (body, phrase) in [
            (&b"{"[..], "not valid JSON"),
            (
                br#"{"pop":"nrt","healthy":true,"load":0.4}"#,
                "missing field `seq`",
            ),
            (
                br#"{"pop":"nrt","seq":-1,"healthy":true,"load":0.4}"#,
                "seq",
            ),
            (
                br#"{"pop":"nrt","seq":1,"healthy":"yes","load":0.4}"#,
                "invalid type",
            ),
            (br#"[1,2]"#, "report"),
            (br#"{"reports":[]}"#, "empty"),
            (br#"{"reports":{}}"#, "list"),
            (
                br#"{"reports":[{"pop":"a","seq":1,"healthy":true,"load":0},{}]}"#,
                "reports[1]",
            ),
            (
                br#"{"pop":"nrt","seq":1,"healthy":true,"load":1e999}"#,
                "JSON",
            ),
        ] {
            let reason = parse(body).expect_err("refused");
            assert!(reason.contains(phrase), "`{phrase}` not in `{reason}`");
        }
    }

    /// Every single-byte corruption and truncation of a batch is parsed or refused
    /// with a reason, never a panic; whatever parses validates without one too.
    #[test]
    fn corrupted_bodies_never_panic() {
        let base = br#"{"reports":[{"pop":"nrt","seq":17,"epoch":2,"healthy":true,"load":0.42,"bandwidth_mbps":1e3},{"pop":"fra","seq":1,"healthy":false,"load":1}]}"#;
        for i in 0..base.len() {
            for value in [
                b'0', b'9', b'-', b'e', b'"', b'{', b']', b',', b':', 0x00, 0xFF,
            ] {
                let mut body = base.to_vec();
                body[i] = value;
                for cut in [body.len(), i] {
                    match parse(&body[..cut]) {
                        Ok((reports, _)) => {
                            for report in &reports {
                                let _ = report.validate();
                            }
                        }
                        Err(reason) => assert!(!reason.is_empty()),
                    }
                }
            }
        }
    }
}
