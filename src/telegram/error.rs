//! The one error type of the Bot API client. Every variant is a decision for
//! the caller: stop using the token, back off, wait, give up on this request,
//! retry later, or fix the local disk. No variant ever holds the token: text
//! that came from elsewhere is scrubbed before it is stored here.

use std::fmt;
use std::time::Duration;

use crate::token::Token;

/// Why a Bot API call failed, classified by what the caller should do next.
#[derive(Debug)]
pub enum ApiError {
    /// 401 or 404: the token is wrong or revoked; stop using it.
    TokenRejected {
        method: String,
        status: u16,
        description: String,
    },
    /// 409: another poller holds the token, or a webhook is set.
    Conflict { method: String, description: String },
    /// 429: flood control; wait `retry_after` before sending again.
    RateLimited {
        method: String,
        retry_after: Duration,
        description: String,
    },
    /// 400, 403, 413 and other 4xx: this request is wrong; retrying it will not help.
    BadRequest {
        method: String,
        status: u16,
        description: String,
    },
    /// 5xx, network error, timeout, a body that is not the Bot API's JSON or is cut short: retry later.
    Transient { method: String, reason: String },
    /// A local file could not be read or written (upload source, download destination).
    Local {
        what: String,
        source: std::io::Error,
    },
}

impl ApiError {
    /// True when the same request may succeed if sent again later
    /// (`Transient` and `RateLimited`). The client itself never retries.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ApiError::Transient { .. } | ApiError::RateLimited { .. }
        )
    }

    /// How long Telegram asked us to wait, for `RateLimited` only.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The Bot API's description, the transient reason, or the local failure.
    pub fn description(&self) -> &str {
        match self {
            ApiError::TokenRejected { description, .. }
            | ApiError::Conflict { description, .. }
            | ApiError::RateLimited { description, .. }
            | ApiError::BadRequest { description, .. } => description,
            ApiError::Transient { reason, .. } => reason,
            ApiError::Local { what, .. } => what,
        }
    }

    /// The Bot API's error code for this failure (the HTTP status; 429 for
    /// flood control, 409 for a conflict), for handing back to a handler:
    /// 502 for a transient failure, 400 for a local file.
    pub fn error_code(&self) -> u16 {
        match self {
            ApiError::TokenRejected { status, .. } | ApiError::BadRequest { status, .. } => *status,
            ApiError::Conflict { .. } => 409,
            ApiError::RateLimited { .. } => 429,
            ApiError::Transient { .. } => 502,
            ApiError::Local { .. } => 400,
        }
    }

    /// The Bot API method the error belongs to (`None` for `Local`).
    pub fn method(&self) -> Option<&str> {
        match self {
            ApiError::TokenRejected { method, .. }
            | ApiError::Conflict { method, .. }
            | ApiError::RateLimited { method, .. }
            | ApiError::BadRequest { method, .. }
            | ApiError::Transient { method, .. } => Some(method),
            ApiError::Local { .. } => None,
        }
    }

    /// Scrubs `token` out of every text field. Applied to every error the
    /// client returns, as a second line of defence behind scrubbing at the
    /// source.
    pub(crate) fn redacted(self, token: &Token) -> ApiError {
        let r = |s: String| redact(token, &s);
        match self {
            ApiError::TokenRejected {
                method,
                status,
                description,
            } => ApiError::TokenRejected {
                method: r(method),
                status,
                description: r(description),
            },
            ApiError::Conflict {
                method,
                description,
            } => ApiError::Conflict {
                method: r(method),
                description: r(description),
            },
            ApiError::RateLimited {
                method,
                retry_after,
                description,
            } => ApiError::RateLimited {
                method: r(method),
                retry_after,
                description: r(description),
            },
            ApiError::BadRequest {
                method,
                status,
                description,
            } => ApiError::BadRequest {
                method: r(method),
                status,
                description: r(description),
            },
            ApiError::Transient { method, reason } => ApiError::Transient {
                method: r(method),
                reason: r(reason),
            },
            ApiError::Local { what, source } => {
                let text = source.to_string();
                let clean = redact(token, &text);
                let source = if clean == text {
                    source
                } else {
                    std::io::Error::new(source.kind(), clean)
                };
                ApiError::Local {
                    what: r(what),
                    source,
                }
            }
        }
    }
}

/// Replaces the whole token, then any stray copy of its secret, in `text`.
pub(crate) fn redact(token: &Token, text: &str) -> String {
    let whole = token.expose();
    let without_whole = if whole.is_empty() {
        text.to_string()
    } else {
        text.replace(whole, &format!("{}:***", token.bot_id()))
    };
    token.scrub(&without_whole)
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::TokenRejected {
                method,
                status,
                description,
            } => write!(
                f,
                "{method}: the bot api rejected the token (http {status}): {description}"
            ),
            ApiError::Conflict {
                method,
                description,
            } => write!(f, "{method}: conflict: {description}"),
            ApiError::RateLimited {
                method,
                retry_after,
                description,
            } => write!(
                f,
                "{method}: rate limited, retry after {} s: {description}",
                retry_after.as_secs_f64()
            ),
            ApiError::BadRequest {
                method,
                status,
                description,
            } => write!(f, "{method}: bad request (http {status}): {description}"),
            ApiError::Transient { method, reason } => {
                write!(f, "{method}: transient failure: {reason}")
            }
            ApiError::Local { what, source } => write!(f, "local file: {what}: {source}"),
        }
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApiError::Local { source, .. } => Some(source),
            _ => None,
        }
    }
}
