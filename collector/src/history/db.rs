//! The one narrow interface the history's SQL runs through, so the same statements, the same
//! writer and the same queries serve SQLite (`sqlite.rs`, the embedded default) and PostgreSQL
//! (`postgres.rs`, `history_url`).
//!
//! Statements are written once, in the SQL both engines accept, with numbered `?N`
//! placeholders; PostgreSQL's connection rewrites them to `$N` ([`numbered_dollars`]) when it
//! prepares them. Values cross as [`Param`] and come back as [`Cell`]: integers are 64-bit on
//! both sides (PostgreSQL's columns are BIGINT), text is text, and nothing else is stored.
//!
//! A failure says whether the database went away ([`DbError::unavailable`]: the writer keeps
//! the batch and retries) or refused the statement (the batch is counted as a write error).

use std::fmt;

/// A statement parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Int(i64),
    Text(&'a str),
    /// SQL NULL in an integer column.
    Null,
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(text: &'a str) -> Self {
        Param::Text(text)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(text: &'a String) -> Self {
        Param::Text(text)
    }
}

impl From<i64> for Param<'_> {
    fn from(value: i64) -> Self {
        Param::Int(value)
    }
}

impl From<i32> for Param<'_> {
    fn from(value: i32) -> Self {
        Param::Int(i64::from(value))
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(value: Option<i64>) -> Self {
        value.map_or(Param::Null, Param::Int)
    }
}

/// A value read back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Int(i64),
    Text(String),
    Null,
}

impl Cell {
    pub(crate) fn int(&self) -> i64 {
        match self {
            Cell::Int(value) => *value,
            Cell::Text(_) | Cell::Null => 0,
        }
    }

    pub(crate) fn opt_int(&self) -> Option<i64> {
        match self {
            Cell::Int(value) => Some(*value),
            Cell::Text(_) | Cell::Null => None,
        }
    }

    pub(crate) fn text(&self) -> String {
        match self {
            Cell::Text(text) => text.clone(),
            Cell::Int(value) => value.to_string(),
            Cell::Null => String::new(),
        }
    }
}

/// Why a statement failed.
#[derive(Debug, Clone)]
pub(crate) struct DbError {
    pub message: String,
    /// The database could not be reached (connection refused or lost): retry later, the
    /// records are not at fault.
    pub unavailable: bool,
}

impl DbError {
    pub(crate) fn refused(message: impl Into<String>) -> Self {
        DbError {
            message: message.into(),
            unavailable: false,
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A connection the history's SQL runs on.
pub(crate) trait Db: Send {
    /// Runs one statement; returns the rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DbError>;
    /// Runs one query; returns its rows.
    fn rows(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Vec<Cell>>, DbError>;
    /// Runs statements without parameters (BEGIN, COMMIT, ROLLBACK).
    fn batch(&mut self, sql: &str) -> Result<(), DbError>;
    /// How this engine names a row for `DELETE ... WHERE <rowid> IN (SELECT <rowid> ...
    /// LIMIT n)`, the batched delete of retention: `rowid` or `ctid`.
    fn row_id(&self) -> &'static str;
}

/// Runs `work` in one transaction: committed if it succeeds, rolled back if not.
pub(crate) fn in_transaction<T>(
    db: &mut dyn Db,
    work: impl FnOnce(&mut dyn Db) -> Result<T, DbError>,
) -> Result<T, DbError> {
    db.batch("BEGIN")?;
    match work(db) {
        Ok(value) => {
            db.batch("COMMIT")?;
            Ok(value)
        }
        Err(error) => {
            // A lost connection has no transaction left to roll back; the error that
            // matters is the first one.
            let _ = db.batch("ROLLBACK");
            Err(error)
        }
    }
}

/// `?N` placeholders rewritten as `$N`, PostgreSQL's spelling. The history's statements have
/// no string literal containing `?`, so no quoting is tracked.
pub(crate) fn numbered_dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_placeholders_become_dollars_and_nothing_else_changes() {
        assert_eq!(
            numbered_dollars("UPDATE t SET a = ?4 WHERE b = ?1 AND c = '?' AND d = ?12"),
            "UPDATE t SET a = $4 WHERE b = $1 AND c = '?' AND d = $12"
        );
    }
}
