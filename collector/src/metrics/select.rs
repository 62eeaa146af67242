//! Which nodes a `/metrics` scrape asks for, from its query string.
//!
//! With no query a scrape gets the fleet aggregates (`mod.rs`), whose size does not grow with
//! the fleet. The per-node series are asked for in one of two ways, as Prometheus can be
//! configured to ask:
//!
//! - `match[]=<selector>`, as Prometheus federation spells it, with selectors on the `node`
//!   label alone: `{node="gpu-01"}`, `{node=~"rack3-.*"}`, also `!=` and `!~`; the matchers of
//!   one selector must all hold, several `match[]` select the union. Regexes are anchored, as
//!   in PromQL.
//! - `shard=i&of=n`: the nodes whose [`shard_of`] is `i`, so one Prometheus job spreads the
//!   fleet over `n` scrape targets (one per `shard`, the same URL otherwise).
//!
//! Both together select the nodes that pass both. Anything else in the query (another label,
//! a metric name, an unknown parameter, a shard out of range) is refused with a message that
//! names the parameter and what was expected, which the HTTP layer answers with a 400.

use regex::{Regex, RegexBuilder};

/// Most shards a fleet may be split into.
pub const MAX_SHARDS: u32 = 1024;

/// Most `match[]` parameters in one scrape; each is a regex to compile.
const MAX_SELECTORS: usize = 64;

/// A regex may compile to at most this much memory: the query comes from the network.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The node-selecting label, the only one a selector may name.
const NODE: &str = "node";

/// What a scrape asks for.
#[derive(Debug)]
pub enum Selection {
    /// No query: the fleet aggregates and the collector's own series.
    Aggregates,
    /// The per-node series of the nodes that pass.
    Nodes(NodeFilter),
}

/// The nodes a scrape selects: any of `selectors` (when there are some) and `shard`.
#[derive(Debug, Default)]
pub struct NodeFilter {
    selectors: Vec<Vec<Matcher>>,
    shard: Option<(u32, u32)>,
}

impl NodeFilter {
    /// Whether the node named `node` is selected.
    pub fn selects(&self, node: &str) -> bool {
        let by_selector = self.selectors.is_empty()
            || self
                .selectors
                .iter()
                .any(|s| s.iter().all(|m| m.matches(node)));
        let by_shard = self
            .shard
            .is_none_or(|(shard, of)| shard_of(node, of) == shard);
        by_selector && by_shard
    }
}

/// One label matcher on `node`.
#[derive(Debug)]
enum Matcher {
    Equal(String),
    NotEqual(String),
    Regex(Regex),
    NotRegex(Regex),
}

impl Matcher {
    fn matches(&self, node: &str) -> bool {
        match self {
            Matcher::Equal(v) => node == v,
            Matcher::NotEqual(v) => node != v,
            Matcher::Regex(r) => r.is_match(node),
            Matcher::NotRegex(r) => !r.is_match(node),
        }
    }
}

/// The shard (0..`of`) of the node named `node`: FNV-1a (64-bit: offset basis
/// 0xcbf29ce484222325, prime 0x100000001b3) over the name's UTF-8 bytes, modulo `of`.
///
/// This is part of the interface: it must give the same shard for the same name in every
/// collector version and after every restart, or Prometheus series would move between scrape
/// targets. Do not change it. `of` = 0 is read as 1.
pub fn shard_of(node: &str, of: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // The remainder is below `of`, a u32.
    u32::try_from(hash % u64::from(of.max(1))).unwrap_or(0)
}

/// Reads a scrape's query string (without the `?`; `None` when the URL has none).
pub fn parse(query: Option<&str>) -> Result<Selection, String> {
    let query = query.unwrap_or("");
    let mut filter = NodeFilter::default();
    let (mut shard, mut of) = (None, None);
    let mut asked = false;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        asked = true;
        match key.as_ref() {
            "match[]" => {
                if filter.selectors.len() == MAX_SELECTORS {
                    return Err(format!(
                        "match[]: at most {MAX_SELECTORS} selectors in one scrape"
                    ));
                }
                let selector =
                    parse_selector(&value).map_err(|why| format!("match[]={value:?}: {why}"))?;
                filter.selectors.push(selector);
            }
            "shard" => shard = Some(number("shard", &value, shard)?),
            "of" => of = Some(number("of", &value, of)?),
            other => {
                return Err(format!(
                    "unknown parameter {other:?}: expected match[] (a selector on node, \
                     e.g. {{node=~\"rack1-.*\"}}), or shard and of (e.g. shard=0&of=4)"
                ))
            }
        }
    }
    filter.shard = match (shard, of) {
        (None, None) => None,
        (Some(_), None) => {
            return Err("shard needs of (the number of shards), e.g. shard=0&of=4".into())
        }
        (None, Some(_)) => {
            return Err("of needs shard (this target's shard, 0 to of-1), e.g. shard=0&of=4".into())
        }
        (Some(_), Some(0)) => return Err("of: expected 1 to 1024 shards, got 0".into()),
        (Some(_), Some(n)) if n > MAX_SHARDS => {
            return Err(format!("of: expected 1 to {MAX_SHARDS} shards, got {n}"))
        }
        (Some(i), Some(n)) if i >= n => {
            return Err(format!(
                "shard: expected 0 to {} (below of = {n}), got {i}",
                n - 1
            ))
        }
        (Some(i), Some(n)) => Some((i, n)),
    };
    Ok(if asked {
        Selection::Nodes(filter)
    } else {
        Selection::Aggregates
    })
}

/// A non-negative integer parameter, given once.
fn number(name: &str, value: &str, before: Option<u32>) -> Result<u32, String> {
    if before.is_some() {
        return Err(format!("{name}: given more than once"));
    }
    value
        .parse()
        .map_err(|_| format!("{name}: expected a whole number, got {value:?}"))
}

/// `{node="a"}`, `{node=~"a|b", node!="c"}`: the label matchers of one selector, all on `node`.
fn parse_selector(text: &str) -> Result<Vec<Matcher>, String> {
    let text = text.trim();
    let Some(body) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
        return Err(
            "expected label matchers on node in braces, e.g. {node=\"gpu-01\"} or \
             {node=~\"rack3-.*\"} (a metric name is not supported: a scrape selects nodes)"
                .into(),
        );
    };
    let mut rest = body.trim_start();
    let mut matchers = Vec::new();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (label, after) = rest.split_at(name_end);
        if label != NODE {
            return Err(format!(
                "expected a matcher on the label node, found {label:?} (only node selects)"
            ));
        }
        let after = after.trim_start();
        let (op, after) = ["=~", "!~", "!=", "="]
            .iter()
            .find_map(|op| after.strip_prefix(op).map(|a| (*op, a)))
            .ok_or("expected =, !=, =~ or !~ after node")?;
        let (value, after) = quoted(after.trim_start())?;
        matchers.push(matcher(op, value)?);
        rest = after.trim_start();
        if let Some(next) = rest.strip_prefix(',') {
            rest = next.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("expected , or }} after a matcher, found {rest:?}"));
        }
    }
    if matchers.is_empty() {
        return Err("expected at least one matcher on node, e.g. {node=\"gpu-01\"}".into());
    }
    Ok(matchers)
}

fn matcher(op: &str, value: String) -> Result<Matcher, String> {
    let regex = |value: &str| {
        RegexBuilder::new(&format!("^(?:{value})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("not a regular expression: {e}"))
    };
    Ok(match op {
        "=" => Matcher::Equal(value),
        "!=" => Matcher::NotEqual(value),
        "=~" => Matcher::Regex(regex(&value)?),
        _ => Matcher::NotRegex(regex(&value)?),
    })
}

/// A label value in double or single quotes (escapes `\\`, `\"`, `\'`, `\n`, `\t`), and the
/// text after it.
fn quoted(text: &str) -> Result<(String, &str), String> {
    let mut chars = text.char_indices();
    let quote = match chars.next() {
        Some((_, q @ ('"' | '\''))) => q,
        _ => return Err("expected a quoted label value, e.g. \"gpu-01\"".into()),
    };
    let mut value = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('n') => value.push('\n'),
                Some('t') => value.push('\t'),
                Some(c @ ('\\' | '"' | '\'')) => value.push(c),
                // An escape the regex syntax itself uses (`\d`, `\.`): kept for the regex.
                Some(c) => {
                    value.push('\\');
                    value.push(c);
                }
                None => break,
            },
            c if c == quote => return Ok((value, &text[i + c.len_utf8()..])),
            c => value.push(c),
        }
    }
    Err("a label value's quote is not closed".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(query: &str) -> NodeFilter {
        match parse(Some(query)) {
            Ok(Selection::Nodes(filter)) => filter,
            Ok(Selection::Aggregates) => panic!("{query}: aggregates"),
            Err(e) => panic!("{query}: {e}"),
        }
    }

    fn refused(query: &str) -> String {
        match parse(Some(query)) {
            Err(e) => e,
            Ok(s) => panic!("{query}: accepted as {s:?}"),
        }
    }

    fn enc(selector: &str) -> String {
        form_urlencoded::byte_serialize(selector.as_bytes()).collect()
    }

    #[test]
    fn no_query_is_the_aggregates() {
        assert!(matches!(parse(None), Ok(Selection::Aggregates)));
        assert!(matches!(parse(Some("")), Ok(Selection::Aggregates)));
    }

    #[test]
    fn selectors_match_the_node_label_exactly_or_by_anchored_regex() {
        let f = nodes(&format!("match[]={}", enc("{node=\"gpu-01\"}")));
        assert!(f.selects("gpu-01"));
        assert!(!f.selects("gpu-011"));
        let f = nodes(&format!("match[]={}", enc("{ node =~ 'rack3-.*' }")));
        assert!(f.selects("rack3-a"));
        assert!(!f.selects("xrack3-a"), "anchored at the start");
        let f = nodes(&format!("match[]={}", enc("{node=~\"a|b\"}")));
        assert!(f.selects("a") && f.selects("b") && !f.selects("ab"));
        let f = nodes(&format!(
            "match[]={}",
            enc("{node=~\"n\\\\d+\",node!=\"n2\"}")
        ));
        assert!(f.selects("n1") && !f.selects("n2") && !f.selects("nx"));
        let f = nodes(&format!("match[]={}", enc("{node!~\"test-.*\"}")));
        assert!(f.selects("prod-1") && !f.selects("test-1"));
        let f = nodes(&format!("match[]={}", enc("{node=\"q\\\"uote\"}")));
        assert!(f.selects("q\"uote"));
    }

    #[test]
    fn several_selectors_select_the_union() {
        let f = nodes(&format!(
            "match[]={}&match[]={}",
            enc("{node=\"a\"}"),
            enc("{node=~\"b.*\"}")
        ));
        assert!(f.selects("a") && f.selects("b1") && f.selects("b"));
        assert!(!f.selects("c"));
    }

    #[test]
    fn shard_and_match_together_select_the_intersection() {
        let name = (0..100)
            .map(|i| format!("n{i}"))
            .find(|n| shard_of(n, 2) == 1)
            .unwrap_or_default();
        let f = nodes(&format!("shard=1&of=2&match[]={}", enc("{node=~\"n.*\"}")));
        assert!(f.selects(&name));
        let f = nodes(&format!("shard=0&of=2&match[]={}", enc("{node=~\"n.*\"}")));
        assert!(!f.selects(&name));
    }

    #[test]
    fn bad_parameters_are_refused_naming_the_parameter() {
        for (query, words) in [
            ("shard=4&of=4", "shard: expected 0 to 3"),
            ("shard=0&of=0", "of: expected 1 to 1024"),
            ("shard=0&of=1025", "of: expected 1 to 1024 shards, got 1025"),
            ("shard=x&of=2", "shard: expected a whole number"),
            ("shard=-1&of=2", "shard: expected a whole number"),
            ("shard=0", "shard needs of"),
            ("of=3", "of needs shard"),
            ("shard=0&shard=1&of=2", "shard: given more than once"),
            ("match=x", "unknown parameter \"match\""),
            (
                "match[]=node%3D%22a%22",
                "expected label matchers on node in braces",
            ),
            (
                "match[]=up%7Bnode%3D%22a%22%7D",
                "a metric name is not supported",
            ),
            ("match[]=%7Bjob%3D%22a%22%7D", "found \"job\""),
            ("match[]=%7B%7D", "at least one matcher"),
            ("match[]=%7Bnode%3D~%22(%22%7D", "not a regular expression"),
            ("match[]=%7Bnode%3D%22a%7D", "quote is not closed"),
            ("match[]=%7Bnode%3Da%7D", "expected a quoted label value"),
            (
                "match[]=%7Bnode%3D%22a%22+node%3D%22b%22%7D",
                "expected , or }",
            ),
            ("match[]=%7Bnode%3E%22a%22%7D", "expected =, !=, =~ or !~"),
        ] {
            let e = refused(query);
            assert!(e.contains(words), "{query}: {e:?} lacks {words:?}");
        }
        let e = refused("match[]=%7Bjob%3D%22a%22%7D");
        assert!(e.starts_with("match[]="), "{e}");
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of 64-bit FNV-1a: the hash is a promise across versions.
        let fnv = |s: &str| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in s.as_bytes() {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            h
        };
        assert_eq!(fnv(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv("foobar"), 0x8594_4171_f739_67e8);
        // And the shard is that hash modulo n; pinned so a change cannot pass unnoticed.
        assert_eq!(
            shard_of("a", 1024),
            (0xaf63_dc4c_8601_ec8c_u64 % 1024) as u32
        );
        assert_eq!(
            shard_of("foobar", 7),
            (0x8594_4171_f739_67e8_u64 % 7) as u32
        );
        assert_eq!(shard_of("anything", 0), 0);
        assert_eq!(shard_of("anything", 1), 0);
    }

    #[test]
    fn every_node_is_in_exactly_one_shard_and_shards_are_balanced() {
        let names: Vec<String> = (0..10_000).map(|i| format!("node-{i:05}")).collect();
        for of in [2u32, 4, 8, 16] {
            let filters: Vec<NodeFilter> = (0..of)
                .map(|i| nodes(&format!("shard={i}&of={of}")))
                .collect();
            let mut sizes = vec![0usize; of as usize];
            for name in &names {
                let holders: Vec<usize> = (0..filters.len())
                    .filter(|&i| filters[i].selects(name))
                    .collect();
                assert_eq!(holders.len(), 1, "{name} in shards {holders:?} of {of}");
                sizes[holders[0]] += 1;
                assert_eq!(holders[0] as u32, shard_of(name, of), "stable");
            }
            let mean = names.len() / of as usize;
            for &size in &sizes {
                assert!(
                    size > mean * 8 / 10 && size < mean * 12 / 10,
                    "of={of}: sizes {sizes:?}"
                );
            }
        }
    }
}
