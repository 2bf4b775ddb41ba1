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
    /// 429: too many attempts; try again after the given time.
    #[error("too many attempts; try again in {} seconds", retry_after.as_secs().max(1))]
    RateLimited {
        /// When a new attempt may succeed.
        retry_after: Duration,
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
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
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
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::Invalid { .. } => "invalid_field",
            Self::RateLimited { .. } => "rate_limited",
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
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize)]
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
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(JsonRejection::JsonDataError(error)) => Err(ApiError::BadRequest {
                message: format!("invalid request body: {}", error.body_text()),
            }),
            Err(rejection) => Err(ApiError::BadRequest { message: rejection.body_text() }),
        }
    }
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
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|_| ApiError::NotFound { what: "resource" })
    }
}
