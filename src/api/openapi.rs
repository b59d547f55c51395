//! The OpenAPI document: [`ApiDoc`]'s information, tags, security schemes and shared
//! components, with every operation added by `api::routes` from the handlers' own
//! `#[utoipa::path]`. Served at `/openapi.json` (Swagger UI, vendored, at `/docs`), committed
//! as `openapi/openapi.json`; a test fails when the two drift.
//!
//! Response bodies are typed (`api::responses`) and document themselves. The schemathesis run
//! in `.ci/run` checks every response against the document, so a handler that drifts from
//! its schema fails CI.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "A self-hosted HTTP-to-SMTP transactional email gateway. Every request \
            to /v1 takes `Authorization: Bearer <key>`; errors are RFC 9457 problem details \
            with a stable `code`.",
        license(name = "Apache-2.0"),
    ),
    components(schemas(super::error::Problem, super::error::FieldError)),
    modifiers(&Security),
    tags(
        (name = "emails", description = "Sending and tracking email"),
        (name = "events", description = "The event log"),
        (name = "stats", description = "Delivery statistics"),
        (name = "suppressions", description = "Addresses Herald will not send to"),
        (name = "webhooks", description = "Signed event delivery (Standard Webhooks)"),
        (name = "domains", description = "Sending domains, DNS records and DKIM"),
        (name = "api-keys", description = "The project's API keys"),
        (name = "inbound", description = "Bounce and complaint reports"),
        (name = "projects", description = "Cross-project administration (admin tokens)"),
        (name = "operations", description = "Health and metrics"),
    ),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("hk_…")
                    .description(Some("A project API key (`herald keys create`)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An admin token (`herald admin-token --ttl 1h`)"))
                    .build(),
            ),
        );
    }
}

/// The error answers every operation shares: a problem for any 4xx, and 503 while the
/// database is unavailable. Listed once here, named in each `#[utoipa::path]`.
pub struct Problems;

impl utoipa::IntoResponses for Problems {
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
                .into()
        };
        [
            ("4XX", problem("A problem with the request (RFC 9457)")),
            (
                "503",
                problem("The database is unavailable; retry after `Retry-After`"),
            ),
        ]
        .into_iter()
        .map(|(status, response)| (status.to_owned(), response))
        .collect()
    }
}

/// The document as pretty JSON, as committed in `openapi/openapi.json`: the routes' own
/// operations (`api::routes`) inside [`ApiDoc`]'s information, tags and components.
pub fn document_json() -> String {
    let (_, doc) = super::routes(&crate::config::LimitsConfig::default()).split_for_parts();
    doc.to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    /// The committed document is the one the code generates. After changing a route or a
    /// type: `cargo run -- openapi > openapi/openapi.json`.
    #[test]
    fn committed_document_matches_the_code() {
        let committed = include_str!("../../openapi/openapi.json");
        assert!(
            committed.trim_end() == super::document_json().trim_end(),
            "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
        );
    }

    /// The document's list of bounce sub-types is the classifier's.
    #[test]
    fn documents_every_bounce_sub_type() {
        let doc: serde_json::Value = serde_json::from_str(&super::document_json()).expect("json");
        let documented = &doc["components"]["schemas"]["BounceSubType"]["enum"];
        let names: Vec<&str> = crate::domain::bounce::BounceSubType::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(documented, &serde_json::json!(names));
    }
}
