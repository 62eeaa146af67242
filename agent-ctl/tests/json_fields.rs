//! `agent-ctl --json` against the proto: for each message agent-ctl prints, a message with every
//! field set (built from health-proto's descriptors, so a field added to a `.proto` file is set
//! here too) must print with every field present and not null. The JSON is written by hand
//! (see `agent_ctl::json` for why), and this is what keeps it from falling behind the proto.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::collections::HashMap;

use agent_ctl::json;
use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use serde_json::Value;

const TIMESTAMP: &str = ".google.protobuf.Timestamp";

/// Messages whose fields the JSON inlines into the enclosing object instead of nesting them.
const INLINED: &[(&str, &str)] = &[
    (".health.v1.Device", "identity"),
    (".health.v1.AlertEvent", "alert"),
];

/// Fields the JSON shows under another key: (message, field, key).
const RENAMED: &[(&str, &str, &str)] = &[
    (".health.v1.HostHealth", "load1", "load"),
    (".health.v1.HostHealth", "load5", "load"),
    (".health.v1.HostHealth", "load15", "load"),
];

/// Decodes a message's encoding and prints it as agent-ctl does.
type Printer = fn(&[u8]) -> Value;

/// Each message agent-ctl prints on its own (others appear inside these), with its printer.
fn printed() -> Vec<(&'static str, Printer)> {
    fn print<M: Message + Default>(bytes: &[u8], to_json: fn(&M) -> Value) -> Value {
        to_json(&M::decode(bytes).expect("the filled message decodes"))
    }
    vec![
        (".health.v1.NodeSnapshot", |b| print(b, json::node)),
        (".health.v1.Device", |b| print(b, json::device)),
        (".health.v1.ActionResult", |b| print(b, json::action)),
        (".health.v1.RunDiagnosticsResponse", |b| {
            print(b, json::diagnostics)
        }),
        (".health.v1.ProcessStatus", |b| print(b, json::process)),
        (".health.v1.NodeSummary", |b| print(b, json::node_summary)),
        (".health.v1.FleetNode", |b| print(b, json::fleet_node)),
        (".health.v1.FleetDevice", |b| print(b, json::fleet_device)),
        (".health.v1.AlertEvent", |b| print(b, json::alert)),
        (".health.v1.HistoryEntry", |b| print(b, json::history_entry)),
        (".health.v1.Silence", |b| print(b, json::silence)),
        (".health.v1.ListSilencesResponse", |b| {
            print(b, json::silences)
        }),
        (".health.v1.RemediationStatus", |b| {
            print(b, json::remediation)
        }),
        (".health.v1.Incident", |b| print(b, json::incident)),
        (".health.v1.MaintenanceStatus", |b| {
            print(b, json::maintenance_status)
        }),
    ]
}

/// Every message of health-proto's descriptor set, by full name (".health.v1.Device").
fn messages() -> HashMap<String, DescriptorProto> {
    let set = FileDescriptorSet::decode(health_proto::FILE_DESCRIPTOR_SET)
        .expect("health-proto's descriptor set decodes");
    let mut all = HashMap::new();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for message in file.message_type {
            all.insert(format!(".{package}.{}", message.name()), message);
        }
    }
    all
}

/// The encoding of `name` with every field set to something other than its default; repeated
/// fields get one element.
fn filled(messages: &HashMap<String, DescriptorProto>, name: &str, depth: usize) -> Vec<u8> {
    assert!(
        depth < 16,
        "{name}: messages nest too deep (a recursive message?)"
    );
    let mut out = Vec::new();
    if name == TIMESTAMP {
        // 2023-11-14T22:13:20Z: a time every printer can show.
        encode_key(1, WireType::Varint, &mut out);
        encode_varint(1_700_000_000, &mut out);
        return out;
    }
    let message = messages
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not in the descriptor set"));
    for field in &message.field {
        let number = u32::try_from(field.number()).expect("field numbers are positive");
        match field.r#type() {
            Type::Double => {
                encode_key(number, WireType::SixtyFourBit, &mut out);
                out.extend_from_slice(&1.5f64.to_le_bytes());
            }
            Type::Float => {
                encode_key(number, WireType::ThirtyTwoBit, &mut out);
                out.extend_from_slice(&1.5f32.to_le_bytes());
            }
            Type::Fixed64 | Type::Sfixed64 => {
                encode_key(number, WireType::SixtyFourBit, &mut out);
                out.extend_from_slice(&1u64.to_le_bytes());
            }
            Type::Fixed32 | Type::Sfixed32 => {
                encode_key(number, WireType::ThirtyTwoBit, &mut out);
                out.extend_from_slice(&1u32.to_le_bytes());
            }
            // 1 is the first named value of every enum after UNSPECIFIED; zigzag 2 is 1.
            Type::Int64 | Type::Uint64 | Type::Int32 | Type::Uint32 | Type::Bool | Type::Enum => {
                encode_key(number, WireType::Varint, &mut out);
                encode_varint(1, &mut out);
            }
            Type::Sint32 | Type::Sint64 => {
                encode_key(number, WireType::Varint, &mut out);
                encode_varint(2, &mut out);
            }
            Type::String | Type::Bytes => {
                let text = field.name().as_bytes();
                encode_key(number, WireType::LengthDelimited, &mut out);
                encode_varint(text.len() as u64, &mut out);
                out.extend_from_slice(text);
            }
            Type::Message => {
                let inner = filled(messages, field.type_name(), depth + 1);
                encode_key(number, WireType::LengthDelimited, &mut out);
                encode_varint(inner.len() as u64, &mut out);
                out.extend_from_slice(&inner);
            }
            Type::Group => panic!("{name}.{}: groups are not used", field.name()),
        }
    }
    out
}

enum Shown<'a> {
    Key(&'a str),
    Inlined,
}

fn shown<'a>(message: &str, field: &'a FieldDescriptorProto) -> Shown<'a> {
    if INLINED.contains(&(message, field.name())) {
        return Shown::Inlined;
    }
    match RENAMED
        .iter()
        .find(|(m, f, _)| *m == message && *f == field.name())
    {
        Some((_, _, key)) => Shown::Key(key),
        None => Shown::Key(field.name()),
    }
}

/// The fields of `name` (and of the messages in it) that `json` lacks or shows as null, as
/// `.health.v1.Device.power_limit_watts`.
fn missing(messages: &HashMap<String, DescriptorProto>, name: &str, json: &Value) -> Vec<String> {
    let mut absent = Vec::new();
    for field in &messages[name].field {
        let nested = field.r#type() == Type::Message && field.type_name() != TIMESTAMP;
        let key = match shown(name, field) {
            Shown::Inlined => {
                absent.extend(missing(messages, field.type_name(), json));
                continue;
            }
            Shown::Key(key) => key,
        };
        let here = format!("{name}.{}", field.name());
        match json.get(key) {
            None | Some(Value::Null) => absent.push(here),
            Some(Value::Array(items)) if field.label() == Label::Repeated => {
                if items.is_empty() {
                    absent.push(format!("{here} (empty)"));
                }
                for item in items.iter().filter(|_| nested) {
                    absent.extend(missing(messages, field.type_name(), item));
                }
            }
            Some(value) if nested => absent.extend(missing(messages, field.type_name(), value)),
            Some(_) => {}
        }
    }
    absent
}

#[test]
fn every_proto_field_shows_in_the_json() {
    let messages = messages();
    // A message printed in several places is named once.
    let mut absent = std::collections::BTreeSet::new();
    for (name, print) in printed() {
        let json = print(&filled(&messages, name, 0));
        absent.extend(missing(&messages, name, &json));
    }
    assert!(
        absent.is_empty(),
        "agent-ctl --json does not show these proto fields (add them to agent-ctl/src/json.rs): {absent:#?}"
    );
}

#[test]
fn a_field_left_out_of_the_json_is_named() {
    let messages = messages();
    let name = ".health.v1.NodeSnapshot";
    let bytes = filled(&messages, name, 0);
    let mut json =
        json::node(&health_proto::v1::NodeSnapshot::decode(&bytes[..]).expect("decodes"));
    let agent = json["agent"].as_object_mut().expect("agent is an object");
    agent.remove("audit_head");
    json["devices"][0]["kind"] = Value::Null;
    assert_eq!(
        missing(&messages, name, &json),
        vec![
            ".health.v1.DeviceIdentity.kind".to_string(),
            ".health.v1.AgentStatus.audit_head".to_string(),
        ]
    );
}

#[test]
fn status_shows_recent_actions_and_the_audit_head() {
    let messages = messages();
    let bytes = filled(&messages, ".health.v1.NodeSnapshot", 0);
    let json = json::node(&health_proto::v1::NodeSnapshot::decode(&bytes[..]).expect("decodes"));
    assert_eq!(json["agent"]["audit_head"]["seq"], 1, "{json}");
    assert_eq!(json["agent"]["audit_head"]["hash"], "hash", "{json}");
    assert_eq!(
        json["recent_actions"][0]["action_id"], "action_id",
        "{json}"
    );
}
