//! Reports encoded without building a message per report.
//!
//! A simulated agent's snapshot is the same every second apart from its number and time, so
//! the body is encoded once (per phase: healthy or hot) and each report is that body with the
//! changing fields appended. Protobuf merges repeated occurrences of a message's fields (the
//! last scalar wins), so the collector decodes exactly the message a real agent would send, of
//! the same size. This keeps the load generator's CPU (which shares the cores with the
//! collector under test) well below the collector's.

use health_proto::v1::{HealthReport, NodeSnapshot, ReportAck};
use prost::bytes::{BufMut as _, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// `HealthReport.snapshot`.
const SNAPSHOT_FIELD: u32 = 5;

/// Encodes one report: the identity and send time, then `body` (a snapshot encoded once) with
/// the snapshot's own identity, number and time merged in.
pub fn report(
    body: &[u8],
    node: &str,
    boot_id: &str,
    seq: u64,
    sent_at: prost_types::Timestamp,
) -> Bytes {
    let head = HealthReport {
        node: node.to_string(),
        boot_id: boot_id.to_string(),
        seq,
        sent_at: Some(sent_at),
        snapshot: None,
    };
    let stamp = NodeSnapshot {
        node: node.to_string(),
        boot_id: boot_id.to_string(),
        seq,
        taken_at: Some(sent_at),
        ..NodeSnapshot::default()
    };
    let snapshot_len = body.len() + stamp.encoded_len();
    let mut out = BytesMut::with_capacity(head.encoded_len() + 16 + snapshot_len);
    // Encoding into a BytesMut with room for it cannot fail.
    let _ = head.encode(&mut out);
    encode_key(SNAPSHOT_FIELD, WireType::LengthDelimited, &mut out);
    encode_varint(snapshot_len as u64, &mut out);
    out.put_slice(body);
    let _ = stamp.encode(&mut out);
    out.freeze()
}

/// Sends already-encoded reports; decodes acknowledgements as usual.
#[derive(Debug, Default, Clone, Copy)]
pub struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = ReportAck;
    type Encoder = PreEncoded;
    type Decoder = AckDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        AckDecoder
    }
}

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct AckDecoder;

impl Decoder for AckDecoder {
    type Item = ReportAck;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ReportAck>, Status> {
        ReportAck::decode(src)
            .map(Some)
            .map_err(|error| Status::internal(format!("ReportAck from the collector: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pre_encoded_report_decodes_as_the_whole_message() {
        let body = NodeSnapshot {
            state: 3,
            agent_version: "0.1.0".to_string(),
            ..NodeSnapshot::default()
        };
        let sent_at = prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 5,
        };
        let bytes = report(&body.encode_to_vec(), "n1", "b1", 42, sent_at);
        let decoded = HealthReport::decode(bytes).expect("decodes");
        let expected = HealthReport {
            node: "n1".to_string(),
            boot_id: "b1".to_string(),
            seq: 42,
            sent_at: Some(sent_at),
            snapshot: Some(NodeSnapshot {
                node: "n1".to_string(),
                boot_id: "b1".to_string(),
                seq: 42,
                taken_at: Some(sent_at),
                ..body
            }),
        };
        assert_eq!(decoded, expected);
    }
}
