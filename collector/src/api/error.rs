//! The API's one error type: a status, a message and, for a bad request,
//! the parameter at fault. Internals (database errors) are logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::verified::QueryError;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong and what is accepted instead.
    pub error: String,
    /// The query parameter (or `body`) at fault, for 400 and 406 answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: error.into(),
                parameter: None,
            },
        }
    }

    /// 400 naming `parameter`.
    pub fn bad_parameter(parameter: impl Into<String>, error: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, error);
        e.body.parameter = Some(parameter.into());
        e
    }

    /// 406 naming `format`: the route has no CSV form.
    pub fn not_acceptable(error: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::NOT_ACCEPTABLE, error);
        e.body.parameter = Some("format".into());
        e
    }

    pub fn unauthorized(error: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, error)
    }

    pub fn forbidden(error: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, error)
    }

    /// 500 with a generic message; the detail goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the collector's log has the details",
        )
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadParameter { parameter, message } => {
                Self::bad_parameter(parameter, format!("{parameter}: {message}"))
            }
            QueryError::UnknownInstrument(id) => Self::new(
                StatusCode::NOT_FOUND,
                format!("no instrument {id:?}; GET /api/v1/instruments lists them"),
            ),
            QueryError::UnknownUnit(id) => Self::new(
                StatusCode::NOT_FOUND,
                format!("no unit {id:?}; the config's [[units]] lists them"),
            ),
            e @ QueryError::Db(_) => Self::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"labhours\""),
            );
        }
        response
    }
}
