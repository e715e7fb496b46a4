//! Splits `BOT_HANDLER` into a program and its arguments the way a POSIX
//! shell splits words (single quotes, double quotes, backslash escapes), so
//! the handler can be run with `std::process::Command` and never through a
//! shell: no globbing, no `$VAR` expansion, no pipes or redirections.

/// Why a command line cannot be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordsError {
    /// A `'` or `"` is not closed.
    UnterminatedQuote(char),
    /// The text ends with a lone backslash.
    TrailingBackslash,
}

impl std::fmt::Display for WordsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WordsError::UnterminatedQuote(q) => write!(f, "unterminated {q} quote"),
            WordsError::TrailingBackslash => write!(f, "ends with a lone backslash"),
        }
    }
}

/// Splits `text` into words. Outside quotes white space separates words and
/// `\` keeps the next character as it is (`\` and a newline vanish); inside
/// `'...'` every character is literal; inside `"..."` `\` escapes only
/// `$`, `` ` ``, `"`, `\` and a newline, as in POSIX. `''` is an empty word.
pub fn split_words(text: &str) -> Result<Vec<String>, WordsError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // True once the current word has begun, so `''` yields an empty word.
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(next) => {
                    word.push(next);
                    in_word = true;
                }
                None => return Err(WordsError::TrailingBackslash),
            },
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(inner) => word.push(inner),
                        None => return Err(WordsError::UnterminatedQuote('\'')),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\n') => {}
                            Some(next @ ('$' | '`' | '"' | '\\')) => word.push(next),
                            Some(next) => {
                                word.push('\\');
                                word.push(next);
                            }
                            None => return Err(WordsError::UnterminatedQuote('"')),
                        },
                        Some(inner) => word.push(inner),
                        None => return Err(WordsError::UnterminatedQuote('"')),
                    }
                }
            }
            other => {
                word.push(other);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The first shell operator found in an unquoted position of `text`, for a
/// warning: the handler is not run through a shell, so `a | b` passes `|`
/// to `a` as an argument.
pub fn shell_operator(text: &str) -> Option<&'static str> {
    let mut quote: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                chars.next();
            }
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '|') => {
                return Some(if chars.peek() == Some(&'|') {
                    "||"
                } else {
                    "|"
                });
            }
            (None, '&') => {
                return Some(if chars.peek() == Some(&'&') {
                    "&&"
                } else {
                    "&"
                })
            }
            (None, ';') => return Some(";"),
            (None, '>') => return Some(">"),
            (None, '<') => return Some("<"),
            (None, '$') => return Some("$"),
            (None, '`') => return Some("`"),
            (None, _) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<String> {
        split_words(text).expect("splits")
    }

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(split("python3 handler.py"), ["python3", "handler.py"]);
        assert_eq!(split("  a   b\tc \n"), ["a", "b", "c"]);
        assert_eq!(
            split("'my prog' \"two words\" x"),
            ["my prog", "two words", "x"]
        );
        assert_eq!(split(r"a\ b c"), ["a b", "c"]);
        assert_eq!(
            split(r#"say "a \"q\" \$HOME \n""#),
            ["say", r#"a "q" $HOME \n"#]
        );
        assert_eq!(split(r"'no \escape here'"), [r"no \escape here"]);
        assert_eq!(split("a '' b"), ["a", "", "b"]);
        assert_eq!(split("pre'mid'\"dle\"post"), ["premiddlepost"]);
        assert_eq!(split("$HOME *.txt"), ["$HOME", "*.txt"]);
        assert!(split("   ").is_empty());
    }

    #[test]
    fn rejects_unterminated_quotes_and_trailing_backslash() {
        assert_eq!(
            split_words("a 'b"),
            Err(WordsError::UnterminatedQuote('\''))
        );
        assert_eq!(
            split_words("a \"b"),
            Err(WordsError::UnterminatedQuote('"'))
        );
        assert_eq!(
            split_words("a \"b\\"),
            Err(WordsError::UnterminatedQuote('"'))
        );
        assert_eq!(split_words("a b\\"), Err(WordsError::TrailingBackslash));
    }

    #[test]
    fn finds_unquoted_shell_operators() {
        assert_eq!(shell_operator("a | b"), Some("|"));
        assert_eq!(shell_operator("a && b"), Some("&&"));
        assert_eq!(shell_operator("echo $HOME"), Some("$"));
        assert_eq!(shell_operator("a '|' \"; >\" \\|"), None);
        assert_eq!(shell_operator("python3 bot.py --x=1"), None);
    }
}
