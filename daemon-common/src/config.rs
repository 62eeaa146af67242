//! The error for one rejected configuration key. Both daemons report a bad config value as
//! `<file>: <key>: <expected, found>` so an on-call engineer with the file open can go
//! straight to the key; [`FieldError`] is the `<key>: <message>` part, and each daemon's own
//! config error adds the file (and its other cases, such as unreadable files or TOML syntax).

/// One key of a configuration file and what is wrong with its value. `Display`:
/// `key: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct FieldError {
    /// The key as written in the file, dotted for tables: `tls.client_ca`.
    pub key: String,
    /// What was expected and what was found.
    pub message: String,
}

impl FieldError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_the_key_then_the_message() {
        let e = FieldError::new("tls.key", "expected the key file of tls.cert, found none");
        assert_eq!(
            e.to_string(),
            "tls.key: expected the key file of tls.cert, found none"
        );
    }
}
