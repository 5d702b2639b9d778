//! The OpenAPI document at `/api/openapi.json`.
//!
//! Each handler's annotation documents what is particular to it: its success, the errors of
//! its own logic, its parameters with their bounds. What every operation of a kind can answer
//! is added here, in one place, so that no annotation can forget it and the document says every
//! status the server sends (schemathesis checks that in the test command):
//! - an operation that needs a session: 401 without a valid one;
//! - one with a body: 400 (not JSON), 413 (over the body limit), 415 (not `application/json`),
//!   422 (JSON of the wrong shape);
//! - one with query parameters: 400 (an unknown parameter, or one that does not parse);
//! - everything under `/api/`: 503 while the database does not answer.
//!
//! It also adds the links that lead a client from a created subscription to its decisions.

use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Platone Blockchain Access Layer",
        description = "Users, grants and certified measurements of the Platone BAL. Every error \
            answers with an `ErrorBody`: a stable `error` code and a `message` for people."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Log in and out"),
        (name = "users", description = "User administration (admin)"),
        (name = "subscriptions", description = "Producers and consumers' grants"),
        (name = "setpoints", description = "Certified set points: commands to producers' devices, each step stored and certified"),
        (name = "measurements", description = "Uploads, history and live streams"),
        (name = "certification", description = "Merkle batches anchored on Ethereum, proofs and their verification"),
        (name = "audit", description = "The append-only audit log (admin)"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub(crate) struct ApiDoc;

/// Adds what is common to every operation of a kind, and the links. It runs on the whole
/// document: the routers' paths are merged after `ApiDoc`'s own modifiers have run.
pub(crate) fn complete(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::Modify;
    CommonResponses.modify(openapi);
    ResourceLinks.modify(openapi);
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// Adds `status` to `op` unless its annotation already documents it (its own text wins).
fn add(op: &mut Operation, status: u16, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| error_response(description));
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for op in operations(item) {
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    add(
                        op,
                        401,
                        "no valid session: the token is missing, malformed, expired or ended",
                    );
                }
                if op.request_body.is_some() {
                    add(op, 400, "the body is not well-formed JSON");
                    add(op, 413, "the body is larger than the limit");
                    add(op, 415, "the body is not `application/json`");
                    add(
                        op,
                        422,
                        "the body is JSON of the wrong shape or with invalid values",
                    );
                }
                let has_query =
                    op.parameters.iter().flatten().any(|p| {
                        matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query)
                    });
                if has_query {
                    add(op, 400, "an unknown or malformed query parameter");
                }
                if path.starts_with("/api/") {
                    add(
                        op,
                        503,
                        "the database does not answer; nothing was changed, retry later",
                    );
                }
            }
        }
    }
}

/// OpenAPI links: a created subscription leads to accepting, refusing, cancelling and reading
/// it; an accepted one to revoking it; an issued set point to reading and cancelling it.
/// Clients (and schemathesis' stateful phase) follow them.
struct ResourceLinks;

impl utoipa::Modify for ResourceLinks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::link::LinkBuilder;
        // utoipa 5.5 writes `Link::operation_id` as `operation_id`, not the spec's
        // `operationId`, so clients ignore it: the field is given by its spec name instead.
        let link = |operation_id: &str| {
            let id = [("operationId", serde_json::Value::from(operation_id))];
            LinkBuilder::new()
                .parameter("id", "$response.body#/id")
                .extensions(Some(id.into_iter().collect()))
                .build()
        };
        let mut add_links = |path: &str, status: &str, targets: &[&str]| {
            let Some(RefOr::T(response)) = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.post.as_mut())
                .and_then(|op| op.responses.responses.get_mut(status))
            else {
                return;
            };
            for target in targets {
                response
                    .links
                    .insert((*target).to_owned(), link(target).into());
            }
        };
        add_links(
            "/api/subscriptions",
            "201",
            &["get_subscription", "accept", "refuse", "cancel"],
        );
        add_links(
            "/api/subscriptions/{id}/accept",
            "200",
            &["revoke", "get_subscription"],
        );
        add_links(
            "/api/setpoints",
            "201",
            &["get_setpoint", "cancel_setpoint"],
        );
    }
}
