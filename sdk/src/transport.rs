//! Opening one WebSocket connection to the broker, and reading why it ended.

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::builder::{bearer, Credentials, Settings};
use crate::error::Error;
use crate::token;

/// An open connection.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An open connection, and when its token expires (ms since the UNIX epoch; `None` for a
/// fixed key, or a token without `exp`).
pub(crate) struct Opened {
    pub(crate) socket: Socket,
    pub(crate) token_exp_ms: Option<u64>,
}

/// Asks the token provider for a token, within the connect timeout.
pub(crate) async fn fetch_token(settings: &Settings) -> Result<Option<String>, Error> {
    let Credentials::Tokens { provider, .. } = &settings.credentials else {
        return Ok(None);
    };
    match tokio::time::timeout(settings.connect_timeout, provider.fetch()).await {
        Ok(Ok(token)) if !token.is_empty() => Ok(Some(token)),
        Ok(Ok(_)) => Err(Error::Token("the provider gave an empty token".into())),
        Ok(Err(why)) => Err(Error::Token(why)),
        Err(_) => Err(Error::Token(format!(
            "the provider gave no token within {} ms",
            settings.connect_timeout.as_millis()
        ))),
    }
}

/// Opens a connection to the endpoint, the key (or a fresh token from the provider) in the
/// `Authorization` header, within the connect timeout.
pub(crate) async fn connect(settings: &Settings) -> Result<Opened, Error> {
    let (authorization, token_exp_ms) = match &settings.credentials {
        Credentials::Key(header) => (header.clone(), None),
        Credentials::Tokens { .. } => {
            let token = fetch_token(settings).await?.unwrap_or_default();
            let header = bearer(&token)
                .ok_or_else(|| Error::Token("the token holds characters a header cannot".into()))?;
            (header, token::expiry_ms(&token))
        }
    };
    let mut request = settings
        .endpoint
        .as_str()
        .into_client_request()
        .map_err(|e| Error::Connect(e.to_string()))?;
    request.headers_mut().insert(AUTHORIZATION, authorization);
    let config = WebSocketConfig::default()
        .max_message_size(Some(settings.max_frame_bytes))
        .max_frame_size(Some(settings.max_frame_bytes));
    let connector = settings.tls.clone().map(Connector::Rustls);
    let opening =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector);
    match tokio::time::timeout(settings.connect_timeout, opening).await {
        Ok(Ok((socket, _response))) => Ok(Opened {
            socket,
            token_exp_ms,
        }),
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
