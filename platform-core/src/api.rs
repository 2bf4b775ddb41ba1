//! The JSON error every API answers with.
//!
//! ```json
//! {"error": {"code": "invalid_field", "message": "username is already taken", "field": "username"}}
//! ```
//!
//! 4xx answers say what is wrong and are not logged as errors; 5xx answers are logged with their
//! cause and carry a generic message, so internals never leak to clients.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An API failure, rendered as `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be understood (malformed JSON, a missing header).
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
    },
    /// 401: no valid credentials were given.
    #[error("authentication required")]
    Unauthenticated,
    /// 401: the login or password is wrong (which one is not said).
    #[error("invalid login or password")]
    InvalidCredentials,
    /// 403: the caller is known but may not do this.
    #[error("{message}")]
    Forbidden {
        /// Why not.
        message: String,
    },
    /// 404: nothing here, or nothing the caller may see.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, such as `repository`.
        what: &'static str,
    },
    /// 404 naming what was looked for: a ref, path or commit inside a repository.
    #[error("{what} {name:?} not found")]
    Missing {
        /// What was looked for, such as `ref` or `path`.
        what: &'static str,
        /// The name or id asked for.
        name: String,
    },
    /// 422: the answer would pass a documented bound (a file too large to blame, a history
    /// walk past its time limit); narrowing the request helps.
    #[error("{message}")]
    TooComplex {
        /// Which bound, and how to stay within it.
        message: String,
    },
    /// 409: the request conflicts with existing state (a taken name).
    #[error("{message}")]
    Conflict {
        /// What conflicts.
        message: String,
        /// The field at fault.
        field: Option<&'static str>,
    },
    /// 422: a field's value breaks a rule.
    #[error("{message}")]
    Invalid {
        /// The rule broken.
        message: String,
        /// The field at fault.
        field: &'static str,
    },
    /// 413: the request body is larger than the route accepts; nothing was kept.
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// 415: the body is not of a kind the route accepts.
    #[error("{message}")]
    UnsupportedMediaType {
        /// What was found, and what is accepted.
        message: String,
    },
    /// 429: too many attempts; try again after the given time.
    #[error("too many attempts; try again in {} seconds", retry_after.as_secs().max(1))]
    RateLimited {
        /// When a new attempt may succeed.
        retry_after: Duration,
    },
    /// 503: a dependency the route needs is down; the message names it (never its address or
    /// credentials), and everything else keeps working.
    #[error("{message}")]
    Unavailable {
        /// What is unavailable.
        message: String,
    },
    /// 500: our fault; the cause is logged, not sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A 422 for `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { message: message.into(), field }
    }

    /// A 500 caused by `error`.
    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }

    /// Returns the HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthenticated | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } | Self::Missing { .. } => StatusCode::NOT_FOUND,
            Self::TooComplex { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Returns the stable, machine-readable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "bad_request",
            Self::Unauthenticated => "unauthenticated",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound { .. } | Self::Missing { .. } => "not_found",
            Self::TooComplex { .. } => "too_complex",
            Self::Conflict { .. } => "conflict",
            Self::Invalid { .. } => "invalid_field",
            Self::TooLarge { .. } => "too_large",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            Self::Conflict { field, .. } => *field,
            Self::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// The body of an error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable code such as `not_found` or `invalid_field`.
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(cause) = &self {
            tracing::error!(error = %crate::service::error_chain(cause.as_ref()), "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                field: self.field(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        match &self {
            Self::RateLimited { retry_after } => {
                let seconds = retry_after.as_secs().max(1).to_string();
                if let Ok(value) = HeaderValue::from_str(&seconds) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
            }
            Self::Unauthenticated => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// A JSON body whose rejections are [`ApiError`]s: 400 for malformed JSON, 422 naming the field
/// for a missing or mistyped one, 415 turned into 400 for a missing content type.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::JsonRejection;
        let (parts, body) = request.into_parts();
        let bytes = axum::body::Bytes::from_request(
            axum::extract::Request::from_parts(parts.clone(), body),
            state,
        )
        .await
        .map_err(|rejection| ApiError::BadRequest { message: rejection.body_text() })?;
        if contains_escaped_nul(&bytes) {
            return Err(ApiError::BadRequest {
                message: "invalid request body: text must not contain NUL (\\u0000)".to_owned(),
            });
        }
        let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(JsonRejection::JsonDataError(error)) => Err(ApiError::BadRequest {
                message: format!("invalid request body: {}", error.body_text()),
            }),
            Err(rejection) => Err(ApiError::BadRequest { message: rejection.body_text() }),
        }
    }
}

/// Returns whether a JSON text holds a string with a NUL character, which PostgreSQL text cannot
/// store: a `\u0000` escape whose backslash is not itself escaped. (A raw NUL byte is not valid
/// JSON at all.)
fn contains_escaped_nul(json: &[u8]) -> bool {
    json.windows(6).enumerate().any(|(at, window)| {
        window.eq_ignore_ascii_case(b"\\u0000")
            && json[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
    })
}

/// Returns whether a percent-encoded URI component decodes to text with a NUL character.
fn has_encoded_nul(component: &str) -> bool {
    component.contains("%00")
}

/// A path parameter whose rejections are [`ApiError`]s: a parameter of the wrong type (such as
/// `/api/user/keys/abc`) names nothing that exists, so it answers 404 in the usual JSON shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        if has_encoded_nul(parts.uri.path()) {
            return Err(ApiError::NotFound { what: "resource" });
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|_| ApiError::NotFound { what: "resource" })
    }
}

/// A query string whose rejections are [`ApiError`]s: 400 naming what could not be parsed.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_some_and(has_encoded_nul) {
            return Err(ApiError::BadRequest {
                message: "invalid query string: text must not contain NUL (%00)".to_owned(),
            });
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| ApiError::BadRequest { message: rejection.body_text() })
    }
}

/// Where [`documented`] serves the OpenAPI document.
pub const OPENAPI_PATH: &str = "/api/openapi.json";

/// The name of the session cookie security scheme in the OpenAPI document.
const SESSION_SCHEME: &str = "session";

/// The name of the bearer token security scheme in the OpenAPI document.
const TOKEN_SCHEME: &str = "token";

/// Turns routes collected with their OpenAPI descriptions into a router that also serves the
/// whole description, as OpenAPI 3.1 JSON, at [`OPENAPI_PATH`].
///
/// ```
/// let router = platform_core::api::documented(
///     utoipa_axum::router::OpenApiRouter::new(),
///     "platform",
///     "0.1.0",
/// );
/// # let _: axum::Router = router;
/// ```
pub fn documented(
    routes: utoipa_axum::router::OpenApiRouter,
    title: &str,
    version: &str,
) -> axum::Router {
    use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
    use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};

    let (router, mut document) = routes.split_for_parts();
    document.info.title = title.to_owned();
    document.info.version = version.to_owned();
    document.info.description = Some(
        "Authenticate with `Authorization: Bearer <personal access token>`, or with the session \
         cookie set by `POST /api/auth/login` (cookie-authenticated writes also send \
         `X-CSRF-Token`). Errors are `{\"error\": {\"code\", \"message\", \"field\"?}}`."
            .to_owned(),
    );
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        TOKEN_SCHEME,
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components.add_security_scheme(
        SESSION_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
            crate::accounts::sessions::COOKIE_NAME,
        ))),
    );
    // Every operation accepts either credential, or none where anonymous callers are allowed.
    document.security = Some(vec![
        SecurityRequirement::new(TOKEN_SCHEME, Vec::<String>::new()),
        SecurityRequirement::new(SESSION_SCHEME, Vec::<String>::new()),
        SecurityRequirement::default(),
    ]);
    let json = match document.to_json() {
        Ok(json) => bytes::Bytes::from(json),
        Err(error) => {
            tracing::error!(%error, "cannot serialize the OpenAPI document");
            bytes::Bytes::new()
        }
    };
    router.route(
        OPENAPI_PATH,
        axum::routing::get(move || {
            let json = json.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], json) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escaped_nul_is_found_unless_its_backslash_is_escaped() {
        assert!(contains_escaped_nul(br#"{"login": "a\u0000b"}"#));
        assert!(contains_escaped_nul(br#"{"login": "\\\U0000"}"#));
        assert!(!contains_escaped_nul(br#"{"login": "\\u0000"}"#));
        assert!(!contains_escaped_nul(br#"{"login": "u0000"}"#));
        assert!(contains_escaped_nul(br#"\u0000"#));
    }
}
