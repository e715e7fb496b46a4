//! A bot token as a type that cannot leak. `Token` owns the secret string and
//! is the only way code gets at it: `expose()` is called by the Bot API
//! client to build a URL and by the supervisor to hand a worker its
//! `BOT_TOKEN`, nowhere else. Its `Debug` and `Display` show the bot id only.
//! This module must never log, print or format the secret part.

use std::fmt;

/// A well-formed bot token: `<digits>:<[A-Za-z0-9_-]+>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token {
    text: String,
    bot_id: u64,
}

/// Why a string is not a well-formed token. Never carries the string itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// There is no `:` between the bot id and the secret.
    MissingColon,
    /// The part before `:` is not a non-empty run of digits that fits in u64.
    BadBotId,
    /// The part after `:` is empty or has a character outside `[A-Za-z0-9_-]`.
    BadSecret,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::MissingColon => write!(f, "expected <bot id>:<secret>, found no ':'"),
            TokenError::BadBotId => write!(f, "the bot id before ':' must be digits"),
            TokenError::BadSecret => {
                write!(
                    f,
                    "the secret after ':' must be letters, digits, '_' or '-'"
                )
            }
        }
    }
}

impl std::error::Error for TokenError {}

impl Token {
    /// Parses a token, trimming surrounding white space.
    pub fn parse(raw: &str) -> Result<Token, TokenError> {
        let raw = raw.trim();
        let (id, secret) = raw.split_once(':').ok_or(TokenError::MissingColon)?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TokenError::BadBotId);
        }
        let bot_id: u64 = id.parse().map_err(|_| TokenError::BadBotId)?;
        if secret.is_empty()
            || !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(TokenError::BadSecret);
        }
        Ok(Token {
            text: raw.to_string(),
            bot_id,
        })
    }

    /// The digits before ':', which Telegram also uses as the bot's user id.
    pub fn bot_id(&self) -> u64 {
        self.bot_id
    }

    /// The whole token. Only for building request URLs and a worker's
    /// `BOT_TOKEN`; never format it into text a person may see.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The part after ':', for scrubbing it out of foreign error text.
    pub fn secret(&self) -> &str {
        self.text.split_once(':').map(|(_, s)| s).unwrap_or("")
    }

    /// Replaces every occurrence of this token's secret in `text` with `***`.
    pub fn scrub(&self, text: &str) -> String {
        let secret = self.secret();
        if secret.is_empty() {
            return text.to_string();
        }
        text.replace(secret, "***")
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}:***)", self.bot_id)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:***", self.bot_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_hides_the_secret() {
        let t = Token::parse(" 123456:ABC-def_9 ").expect("valid token");
        assert_eq!(t.bot_id(), 123456);
        assert_eq!(t.expose(), "123456:ABC-def_9");
        assert_eq!(format!("{t} {t:?}"), "123456:*** Token(123456:***)");
        assert_eq!(
            t.scrub("x/bot123456:ABC-def_9/getMe"),
            "x/bot123456:***/getMe"
        );
    }

    #[test]
    fn rejects_malformed_tokens() {
        assert_eq!(Token::parse("abc"), Err(TokenError::MissingColon));
        assert_eq!(Token::parse(":abc"), Err(TokenError::BadBotId));
        assert_eq!(Token::parse("12a:abc"), Err(TokenError::BadBotId));
        assert_eq!(Token::parse("12:"), Err(TokenError::BadSecret));
        assert_eq!(Token::parse("12:a b"), Err(TokenError::BadSecret));
        assert_eq!(Token::parse("12:a/b"), Err(TokenError::BadSecret));
    }
}
