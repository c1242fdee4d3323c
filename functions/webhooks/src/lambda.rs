//! Lambda glue: API Gateway events in and out (feature `lambda`).

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};
use vaani_telephony::WebhookRequest;

use crate::Response;

/// API Gateway request → the handler's request: the public URL providers signed, the raw body
/// (lambda_http has already undone `isBase64Encoded`), and the caller's address.
pub fn to_webhook_request(event: Request, public_base_url: Option<&str>) -> WebhookRequest {
    let source_ip = match event.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => {
            ctx.http.source_ip.as_deref().and_then(|ip| ip.parse().ok())
        }
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx
            .identity
            .source_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok()),
        _ => None,
    };
    let uri = event.uri().clone();
    let url = match public_base_url {
        Some(base) => format!("{base}{}", uri.path_and_query().map_or("/", |p| p.as_str())),
        None => uri.to_string(),
    };
    let (parts, body) = event.into_parts();
    let body = match body {
        Body::Empty => bytes::Bytes::new(),
        Body::Text(t) => bytes::Bytes::from(t),
        Body::Binary(b) => bytes::Bytes::from(b),
        _ => bytes::Bytes::new(),
    };
    WebhookRequest {
        method: parts.method,
        url,
        headers: parts.headers,
        body,
        source_ip,
    }
}

/// The handler's response as a Lambda HTTP response (text bodies stay text).
pub fn to_response(resp: Response) -> Result<lambda_http::Response<Body>, http::Error> {
    let body = match String::from_utf8(resp.body.to_vec()) {
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    };
    lambda_http::Response::builder()
        .status(resp.status)
        .header(http::header::CONTENT_TYPE, resp.content_type)
        .body(body)
}
