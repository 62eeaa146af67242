//! `agent-ctl --collector C silence --match alertname=X,node=Y --for 4h --comment "..."`,
//! `silences [--all]` and `unsilence ID`: Alertmanager silences made through the collector
//! (operator role on the collector; it records each in its audit log).
//!
//! A matcher is written as Alertmanager's own tools write it: `name=value`, `name!=value`,
//! `name=~regex`, `name!~regex`; several are separated by commas (or given as several
//! `--match`), and all must match.

use std::time::Duration;

use anyhow::{anyhow, bail};
use health_proto::v1 as pb;

use crate::invocation::Invocation;
use crate::{json, render};

/// One `--match` value: comma-separated matchers.
pub fn parse_matchers(text: &str) -> anyhow::Result<Vec<pb::SilenceMatcher>> {
    // A comma starts a new matcher only when a label name and an operator follow it, so a
    // regex such as `node=~"rack-[0-9]{1,3}"` keeps its comma.
    let mut parts: Vec<String> = Vec::new();
    for piece in text.split(',') {
        match parts.last_mut() {
            Some(last) if !starts_matcher(piece) => {
                last.push(',');
                last.push_str(piece);
            }
            _ => parts.push(piece.to_string()),
        }
    }
    parts
        .iter()
        .map(|m| m.trim())
        .filter(|m| !m.is_empty())
        .map(parse_matcher)
        .collect()
}

/// Whether `piece` begins with a label name (Prometheus's `[a-zA-Z_][a-zA-Z0-9_]*`) followed
/// by one of the four operators.
fn starts_matcher(piece: &str) -> bool {
    let piece = piece.trim_start();
    let name_len = piece
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_alphabetic() || *c == '_' || (*i > 0 && c.is_ascii_digit())))
        .map_or(piece.len(), |(i, _)| i);
    name_len > 0
        && ["=", "!=", "!~"]
            .iter()
            .any(|op| piece[name_len..].trim_start().starts_with(op))
}

fn parse_matcher(m: &str) -> anyhow::Result<pb::SilenceMatcher> {
    // Longest operators first: `!=` before `=`, `=~` before `=`.
    for (op, is_equal, is_regex) in [
        ("!~", false, true),
        ("=~", true, true),
        ("!=", false, false),
        ("=", true, false),
    ] {
        if let Some((name, value)) = m.split_once(op) {
            let (name, value) = (name.trim(), value.trim().trim_matches('"'));
            if name.is_empty() || value.is_empty() || name.contains(['!', '=', '~']) {
                break;
            }
            return Ok(pb::SilenceMatcher {
                name: name.to_string(),
                value: value.to_string(),
                is_regex,
                is_equal,
            });
        }
    }
    bail!("--match {m:?}: expected name=value, name!=value, name=~regex or name!~regex, e.g. alertname=DeviceOverheating,node=node-1")
}

pub(crate) async fn silence(
    ctl: &mut Invocation,
    matches: &[String],
    for_: Duration,
    comment: &str,
) -> anyhow::Result<()> {
    let mut matchers = Vec::new();
    for m in matches {
        matchers.extend(parse_matchers(m)?);
    }
    if matchers.is_empty() {
        bail!("give at least one --match, e.g. --match alertname=DeviceOverheating,node=node-1");
    }
    if comment.trim().is_empty() {
        bail!("--comment: say why (it is shown to whoever is paged next)");
    }
    let request = ctl.req(pb::CreateSilenceRequest {
        matchers,
        for_seconds: for_.as_secs().max(1),
        comment: comment.to_string(),
    });
    let mut collector = ctl.collector().await?;
    let s = collector.create_silence(request).await?.into_inner();
    ctl.show(&s, json::silence, silence_text)
}

pub(crate) async fn silences(ctl: &mut Invocation, all: bool) -> anyhow::Result<()> {
    let request = ctl.req(pb::ListSilencesRequest {
        include_expired: all,
    });
    let mut collector = ctl.collector().await?;
    let r = collector.list_silences(request).await?.into_inner();
    ctl.show_list(&r.silences, json::silence, table)
}

pub(crate) async fn unsilence(ctl: &mut Invocation, id: &str) -> anyhow::Result<()> {
    if id.trim().is_empty() {
        return Err(anyhow!(
            "unsilence: give the silence id (agent-ctl silences lists them)"
        ));
    }
    let request = ctl.req(pb::ExpireSilenceRequest { id: id.to_string() });
    let mut collector = ctl.collector().await?;
    let s = collector.expire_silence(request).await?.into_inner();
    ctl.show(&s, json::silence, silence_text)
}

/// `alertname=X,node=~n.*`
pub fn matchers_text(matchers: &[pb::SilenceMatcher]) -> String {
    matchers
        .iter()
        .map(|m| {
            let op = match (m.is_equal, m.is_regex) {
                (true, false) => "=",
                (false, false) => "!=",
                (true, true) => "=~",
                (false, true) => "!~",
            };
            format!("{}{op}{}", m.name, m.value)
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn silence_text(s: &pb::Silence) -> String {
    format!(
        "silence {} {} until {}: {} ({}; audit {})\n",
        if s.id.is_empty() { "-" } else { &s.id },
        s.state,
        render::time(&s.ends_at),
        matchers_text(&s.matchers),
        s.comment,
        if s.audit_hash.is_empty() {
            "-"
        } else {
            &s.audit_hash
        },
    )
}

fn table(silences: &[pb::Silence]) -> String {
    if silences.is_empty() {
        return "no silences made through this collector\n".into();
    }
    let mut out = String::from("ID                                    STATE    ORIGIN       ENDS                  MATCHERS  COMMENT\n");
    for s in silences {
        out.push_str(&format!(
            "{:<37} {:<8} {:<12} {:<21} {}  {} (by {})\n",
            if s.id.is_empty() { "-" } else { &s.id },
            s.state,
            s.origin,
            render::time(&s.ends_at),
            matchers_text(&s.matchers),
            s.comment,
            s.created_by,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_inside_a_regex_does_not_split_the_matcher() {
        let m = parse_matchers("node=~rack-[0-9]{1,3},alertname=DeviceOverheating").unwrap();
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[0].name, "node");
        assert_eq!(m[0].value, "rack-[0-9]{1,3}");
        assert!(m[0].is_regex);
        assert_eq!(m[1].value, "DeviceOverheating");
        assert!(parse_matchers("=x").is_err());
    }

    #[test]
    fn matchers_parse_with_every_operator() {
        let m = parse_matchers("alertname=DeviceOverheating, node=~node-1.*,device!=x,code!~A|B")
            .unwrap();
        assert_eq!(
            matchers_text(&m),
            "alertname=DeviceOverheating,node=~node-1.*,device!=x,code!~A|B"
        );
        assert!(m[0].is_equal && !m[0].is_regex);
        assert!(m[1].is_equal && m[1].is_regex);
        assert!(!m[2].is_equal && !m[2].is_regex);
        assert!(!m[3].is_equal && m[3].is_regex);
    }

    #[test]
    fn a_bad_matcher_says_the_forms() {
        for bad in ["node", "=x", "node=", "node!x"] {
            let e = parse_matchers(bad).unwrap_err().to_string();
            assert!(e.contains("expected name=value"), "{bad}: {e}");
        }
    }
}
