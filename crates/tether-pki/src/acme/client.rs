//! instant-acme's HTTP client trait over Tether's one transport path, so
//! the ACME server is reached like everything else (the configured proxy,
//! the operator's CA file, per-phase timeouts, typed failures) and no
//! second network stack enters the server.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use tether_transport::{Transport, TransportError};

/// A transport failure on the way to the ACME server, carried through
/// instant-acme's `Error::Other` and recovered by [`super::AcmeError::from_lib`].
#[derive(Debug, thiserror::Error)]
#[error("{url}: {error}")]
pub(crate) struct TransportFailure {
    pub(crate) url: String,
    pub(crate) error: TransportError,
}

pub(crate) struct TransportHttp {
    pub(crate) transport: Transport,
}

impl HttpClient for TransportHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let transport = self.transport.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let url_text = parts.uri.to_string();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let url = url::Url::parse(&url_text).map_err(|e| {
                instant_acme::Error::Other(Box::new(TransportFailure {
                    url: url_text.clone(),
                    error: TransportError::InvalidUrl {
                        url: url_text.clone(),
                        detail: e.to_string(),
                    },
                }))
            })?;
            let req = http::Request::from_parts(parts, body);
            let resp = transport.request(&url, req).await.map_err(|error| {
                instant_acme::Error::Other(Box::new(TransportFailure {
                    url: url_text.clone(),
                    error,
                }))
            })?;
            let mut out = http::Response::new(Full::new(resp.body));
            *out.status_mut() = http::StatusCode::from_u16(resp.status)
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            *out.headers_mut() = resp.headers;
            Ok(BytesResponse::from(out))
        })
    }
}
