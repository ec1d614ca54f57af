//! Opening one WebSocket connection to the broker, and reading why it ended.

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::builder::Settings;
use crate::error::Error;

/// An open connection.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a connection to the endpoint, the key in the `Authorization` header, within the
/// connect timeout.
pub(crate) async fn connect(settings: &Settings) -> Result<Socket, Error> {
    let mut request = settings
        .endpoint
        .as_str()
        .into_client_request()
        .map_err(|e| Error::Connect(e.to_string()))?;
    request
        .headers_mut()
        .insert(AUTHORIZATION, settings.authorization.clone());
    let config = WebSocketConfig::default()
        .max_message_size(Some(settings.max_frame_bytes))
        .max_frame_size(Some(settings.max_frame_bytes));
    let connector = settings.tls.clone().map(Connector::Rustls);
    let opening =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector);
    match tokio::time::timeout(settings.connect_timeout, opening).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(e)) => Err(Error::Connect(e.to_string())),
        Err(_) => Err(Error::Connect(format!(
            "no connection within {} ms",
            settings.connect_timeout.as_millis()
        ))),
    }
}

/// The error of a close frame (1005 when it had no code).
pub(crate) fn closed(frame: Option<CloseFrame>) -> Error {
    match frame {
        Some(frame) => Error::Closed {
            code: frame.code.into(),
            reason: frame.reason.to_string(),
        },
        None => Error::Closed {
            code: 1005,
            reason: String::new(),
        },
    }
}

/// The error of a connection that ended without a close frame.
pub(crate) fn dropped(why: impl std::fmt::Display) -> Error {
    Error::Closed {
        code: 1006,
        reason: why.to_string(),
    }
}
