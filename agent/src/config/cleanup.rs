//! `[[cleanup]]` rules: which files the `clean-files` action (`crate::action::clean`) may
//! delete, parsed and checked here with the rest of the configuration.
//!
//! A rule is what on-call does by hand with `find temp -mtime +1 -delete` or
//! `rm -f /tmp/*spice*`, written down once: absolute globs (`paths`), how old a file must be
//! (`min_age`, required), optionally whose it must be (`owner`, a user name or uid, resolved
//! here so an unknown user stops the agent at start) and a quota (`max_bytes`).
//!
//! `max_bytes` semantics: the matched set is every regular file the globs match (and `owner`
//! allows), young or old. Without `max_bytes` every matched file older than `min_age` goes.
//! With it, files older than `min_age` go oldest first only until the matched set's total is
//! at most `max_bytes`; young files are never deleted, so if they alone exceed the quota every
//! old file goes and the total stays above it.
//!
//! A cleanup rule is a deletion tool, so globs that could sweep the whole file system are
//! refused: `/` itself, and any glob whose first directory under `/` is not written literally
//! (`/*`, `/**`, `/*/tmp/x`), and `..` anywhere.
//!
//! Errors are [`FieldError`]s naming `cleanup[i].<key>`; the config loader adds the file.

use std::time::Duration;

use serde::Deserialize;

use health_daemon::FieldError;

use super::check::{duration, name, secs};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCleanup {
    name: String,
    paths: Vec<String>,
    min_age: Option<String>,
    max_bytes: Option<u64>,
    owner: Option<String>,
}

/// A validated `[[cleanup]]` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanupRule {
    /// What `clean-files` and a policy's `rule` name; the action's target is `cleanup:<name>`.
    pub name: String,
    /// Absolute globs, as written (checked to parse).
    pub paths: Vec<String>,
    /// Only files whose mtime is at least this old are deleted.
    pub min_age: Duration,
    /// The quota over the matched set (see the module comment); `None`: no quota.
    pub max_bytes: Option<u64>,
    /// Only files owned by this uid match.
    pub owner: Option<u32>,
}

/// Validates the `[[cleanup]]` tables; errors name `cleanup[i].<key>`.
pub fn validate(raw: Vec<RawCleanup>) -> Result<Vec<CleanupRule>, FieldError> {
    let mut rules: Vec<CleanupRule> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("cleanup[{i}].{k}");
        name(&key("name"), &r.name, 64)?;
        if rules.iter().any(|p| p.name == r.name) {
            return Err(FieldError::new(
                key("name"),
                format!("expected a unique name, found {:?} twice", r.name),
            ));
        }
        if r.paths.is_empty() {
            return Err(FieldError::new(
                key("paths"),
                "expected at least one absolute glob, found []",
            ));
        }
        for (j, p) in r.paths.iter().enumerate() {
            path_glob(p).map_err(|m| FieldError::new(format!("cleanup[{i}].paths[{j}]"), m))?;
        }
        let Some(min_age) = r.min_age.as_deref() else {
            return Err(FieldError::new(
                key("min_age"),
                "expected how old a file must be before it is deleted, like \"1d\"; found nothing (it is required)",
            ));
        };
        let min_age = duration(
            &key("min_age"),
            Some(min_age),
            secs(86400),
            secs(1),
            secs(366 * 86400),
        )?;
        if r.max_bytes == Some(0) {
            return Err(FieldError::new(
                key("max_bytes"),
                "expected a positive number of bytes (omit it to delete every old file), found 0",
            ));
        }
        let owner = r
            .owner
            .as_deref()
            .map(|o| owner(o).map_err(|m| FieldError::new(key("owner"), m)))
            .transpose()?;
        rules.push(CleanupRule {
            name: r.name,
            paths: r.paths,
            min_age,
            max_bytes: r.max_bytes,
            owner,
        });
    }
    Ok(rules)
}

/// Checks one glob: absolute, parses, cannot reach everything under `/`.
fn path_glob(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "expected an absolute glob like \"/tmp/*spice*\", found {p:?}"
        ));
    }
    glob::Pattern::new(p).map_err(|e| format!("expected a glob pattern, found {p:?} ({e})"))?;
    let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    if parts.iter().any(|s| *s == ".." || *s == ".") {
        return Err(format!(
            "expected a path without \".\" or \"..\" components, found {p:?}"
        ));
    }
    // Wildcards only in the file name: a directory matched by a wildcard could be swapped for
    // a symlink by whoever owns its parent between the check and the unlink, and `**` walks
    // through symlinked directories (a loop never ends).
    if parts.iter().any(|s| s.contains("**"))
        || parts[..parts.len().saturating_sub(1)]
            .iter()
            .any(|s| has_glob_wildcard(s))
    {
        return Err(format!(
            "expected wildcards only in the last component (like \"/var/lib/solver/temp/*.raw\"), found {p:?}: a wildcard directory or ** could lead the deletion through a symlink"
        ));
    }
    match parts.first() {
        None => Err(format!(
            "expected a glob below a named directory, found {p:?}: a cleanup rule deletes files and may not cover the whole file system"
        )),
        Some(first) if has_glob_wildcard(first) || parts.len() < 2 => Err(format!(
            "expected a glob whose first directory is named literally and which matches files inside it (like \"/tmp/*spice*\"), found {p:?}: a cleanup rule deletes files and may not reach everything under /"
        )),
        Some(_) => Ok(()),
    }
}

/// Whether one path component of a glob holds a wildcard.
pub fn has_glob_wildcard(component: &str) -> bool {
    component.contains(['*', '?', '['])
}

/// A user name or a numeric uid, resolved to a uid now.
fn owner(o: &str) -> Result<u32, String> {
    if let Ok(uid) = o.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(o) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(format!(
            "expected a user name or uid, found {o:?}: no such user on this host"
        )),
        Err(e) => Err(format!("could not look up user {o:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<CleanupRule>, FieldError> {
        #[derive(Deserialize)]
        struct Doc {
            cleanup: Vec<RawCleanup>,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| FieldError::new("", e.to_string()))?;
        validate(doc.cleanup)
    }

    #[test]
    fn the_runbook_rules_parse() {
        let r = parse(
            r#"
            [[cleanup]]
            name = "spice-tmp"
            paths = ["/tmp/*spice*", "/tmp/*ngspice*"]
            min_age = "1d"
            [[cleanup]]
            name = "solver-raw"
            paths = ["/srv/solver/temp/spice/*.raw"]
            min_age = "24h"
            max_bytes = 1000
            owner = "root"
            "#,
        )
        .unwrap();
        assert_eq!(r[0].min_age, secs(86400));
        assert_eq!(r[0].owner, None);
        assert_eq!(r[1].max_bytes, Some(1000));
        assert_eq!(r[1].owner, Some(0));
    }

    #[test]
    fn bad_rules_name_the_key() {
        let cases = [
            (r#"paths = ["/*"]"#, "cleanup[0].paths[0]"),
            (r#"paths = ["/**"]"#, "cleanup[0].paths[0]"),
            (r#"paths = ["/"]"#, "cleanup[0].paths[0]"),
            (r#"paths = ["/*/tmp/x"]"#, "cleanup[0].paths[0]"),
            (r#"paths = ["/tmp"]"#, "cleanup[0].paths[0]"),
            (r#"paths = ["/tmp/*spice*/x.raw"]"#, "cleanup[0].paths[0]"),
            (
                r#"paths = ["/var/lib/solver/**/*.raw"]"#,
                "cleanup[0].paths[0]",
            ),
            (r#"paths = ["/tmp/../etc/x"]"#, "cleanup[0].paths[0]"),
            (r#"paths = ["tmp/*"]"#, "cleanup[0].paths[0]"),
            (r#"paths = ["/tmp/[x"]"#, "cleanup[0].paths[0]"),
            (r#"paths = []"#, "cleanup[0].paths"),
            (
                r#"paths = ["/tmp/*"]
                min_age = "0s""#,
                "cleanup[0].min_age",
            ),
            (
                r#"paths = ["/tmp/*"]
                min_age = "soon""#,
                "cleanup[0].min_age",
            ),
            (
                r#"paths = ["/tmp/*"]
                owner = "no-such-user-here""#,
                "cleanup[0].owner",
            ),
            (
                r#"paths = ["/tmp/*"]
                max_bytes = 0"#,
                "cleanup[0].max_bytes",
            ),
        ];
        for (body, key) in cases {
            let min_age = if body.contains("min_age") {
                ""
            } else {
                "min_age = \"1h\"\n"
            };
            let text = format!("[[cleanup]]\nname = \"c\"\n{min_age}{body}\n");
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {}", e.message);
        }
        let e = parse("[[cleanup]]\nname = \"c\"\npaths = [\"/tmp/*\"]\n").unwrap_err();
        assert_eq!(e.key, "cleanup[0].min_age");
        assert!(e.message.contains("required"), "{}", e.message);
        let e = parse("[[cleanup]]\nname = \"c\"\nmin_age = \"1h\"\npaths = [\"/tmp/*\"]\nowner = \"no-such-user-here\"\n").unwrap_err();
        assert!(e.message.contains("no-such-user-here"), "{}", e.message);
    }

    #[test]
    fn names_are_unique() {
        let one = "[[cleanup]]\nname = \"c\"\nmin_age = \"1h\"\npaths = [\"/tmp/x*\"]\n";
        let e = parse(&format!("{one}{one}")).unwrap_err();
        assert_eq!(e.key, "cleanup[1].name");
    }
}
