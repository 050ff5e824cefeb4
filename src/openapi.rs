//! The OpenAPI 3.1 description of `/v1`, served at `GET /v1/openapi.json`: every route with its request and answer
//! shapes, the error body, and the bearer key. The operations are declared next to their handlers in `api`; this
//! module gathers them and holds the shapes that only the documentation needs.

use std::sync::LazyLock;

use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::api;

/// The description of `/v1`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "callback-gate API",
        description = "The app's backend asks for authorization links, reads and manages connected accounts, and looks \
                       up the details behind a reference. Every route but this document needs `Authorization: Bearer <key>` \
                       with a key from CALLBACK_GATE_API_KEYS. Every error is `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        api::create_link,
        api::list_accounts,
        api::get_account,
        api::disconnect,
        api::refresh,
        api::get_token,
        api::verify,
        crate::proxy::forward,
        api::get_reference,
        api::verify_user,
        api::list_deliveries,
        api::retry_delivery,
        api::openapi_json,
    ),
    modifiers(&BearerKey),
    security(("api_key" = [])),
    tags((name = "callback-gate", description = "Connection flows, connected accounts and references"))
)]
pub struct ApiDoc;

/// The document, rendered once.
pub static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| String::from("{}")));

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some("A key from CALLBACK_GATE_API_KEYS".into());
        components.add_security_scheme("api_key", SecurityScheme::Http(scheme));
    }
}

/// Every API error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code, e.g. `connection_unknown`, `account_not_found`, `unauthorized`.
    pub code: String,
    /// What went wrong and what to do, for a developer.
    pub message: String,
    /// The request field at fault, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `account_not_active`: the account's status (`PENDING_AUTH`, `EXPIRED`, `DISCONNECTED`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The raw details and the developer hint behind a reference (the shape of the stored outcome event).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReferenceDetails {
    /// `CG-XXXX-XXXX`.
    pub reference: String,
    /// The outcome code, e.g. `access_denied`, `failed_to_exchange_token`.
    pub code: String,
    /// For `failed_to_exchange_token` and refresh failures: `invalid_grant`, `invalid_client`, `timeout`, ...
    pub cause: Option<String>,
    /// `user_cancelled`, `user_action`, `app_configuration`, `provider_transient`, `security` or `internal`.
    pub class: String,
    pub connection: Option<String>,
    pub identifier: Option<String>,
    pub flow_id: Option<String>,
    /// The provider's `error`, as sent.
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub error_uri: Option<String>,
    pub iss: Option<String>,
    /// The token endpoint's HTTP status, where one was called.
    pub provider_status: Option<i64>,
    /// A redacted, bounded excerpt of the provider's answer.
    pub provider_body: Option<String>,
    pub detail: String,
    /// What the code means, its likely causes and what to do.
    pub hint: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[cfg(test)]
mod path_tests {
    #[test]
    fn account_routes_document_both_path_parameters() {
        let document: serde_json::Value = serde_json::from_str(&super::DOCUMENT).expect("json");
        let operation = &document["paths"]["/v1/connected-accounts/{connection}/{identifier}/token"]["get"];
        let names: Vec<&str> =
            operation["parameters"].as_array().expect("parameters").iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(names, ["connection", "identifier"], "{operation}");
        assert_eq!(operation["parameters"][0]["in"], "path");
        assert_eq!(operation["parameters"][0]["description"], "A configured connection's name");
    }
}
