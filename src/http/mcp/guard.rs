//! What every MCP request passes before it is read: authentication, answered as a JSON-RPC
//! error. (The `Origin` check and the JSON media type come first, for every route, in
//! [`cross_site`](crate::http::cross_site).)

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};

use super::protocol::{RpcError, failure};
use crate::http::auth::authenticate_request;
use crate::http::error::ApiError;

/// A JSON-RPC error answer without an id (the body was not read yet).
pub(crate) fn error_response(error: &RpcError) -> HttpResponse {
    HttpResponse::build(error.status).json(failure(None, error))
}

/// Middleware of the MCP routes: a missing or wrong key gets 401.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let state = crate::http::state_of(&req);
    if let Err(error) = authenticate_request(&state, &req).await {
        let response = match &error {
            ApiError::Client {
                status, message, ..
            } => {
                let mut response = error_response(&RpcError::new(*status, -32000, message.clone()));
                if *status == StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert(
                        actix_web::http::header::WWW_AUTHENTICATE,
                        crate::http::auth::www_authenticate(&state, &req),
                    );
                }
                response
            }
            ApiError::Limited {
                message,
                retry_after_s,
                ..
            } => {
                let mut response = error_response(&RpcError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    -32000,
                    message.clone(),
                ));
                response.headers_mut().insert(
                    actix_web::http::header::RETRY_AFTER,
                    actix_web::http::header::HeaderValue::from(*retry_after_s),
                );
                response
            }
            ApiError::Unexpected(_) => error.error_response(),
        };
        return Ok(req.into_response(response).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}
