//! A client codec for `WatchOrders` that decodes only what the fan-out benchmark needs from each
//! `OrderEvent` — its sequence and which create made it (the number in the order's customer id)
//! — without building the whole message, so one client core keeps up with the deliveries.

use bytes::Buf;
use orders_proto::v1 as pb;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Start of every fan-out create's customer id; the create's number follows.
pub const CUSTOMER_PREFIX: &str = "bench-fanout-";

/// The customer id of create number `create` (19 characters below a million, as long as the
/// other benchmarks' customer id, so events keep the same size).
pub fn customer_id(create: u32) -> String {
    format!("{CUSTOMER_PREFIX}{create:06}")
}

/// What the benchmark reads from one delivered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The event's sequence.
    pub sequence: u64,
    /// The number of the create that made it; `None` when its customer id is not the
    /// benchmark's (an event someone else caused).
    pub create: Option<u32>,
}

/// `WatchOrdersRequest` out (prost), [`Delivered`] in.
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = pb::WatchOrdersRequest;
    type Decode = Delivered;
    type Encoder = ProstEncoder<pb::WatchOrdersRequest>;
    type Decoder = EventDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        EventDecoder
    }
}

/// Decodes one `OrderEvent` message into a [`Delivered`].
#[derive(Debug, Clone, Copy, Default)]
pub struct EventDecoder;

impl Decoder for EventDecoder {
    type Item = Delivered;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Delivered>, Status> {
        let len = src.remaining();
        let parsed = if src.chunk().len() == len {
            let parsed = parse_event(src.chunk());
            src.advance(len);
            parsed
        } else {
            parse_event(&src.copy_to_bytes(len))
        };
        parsed
            .map(Some)
            .map_err(|error| Status::internal(format!("undecodable OrderEvent: {error}")))
    }
}

/// Why an event's bytes could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The message ends inside a field.
    #[error("truncated message")]
    Truncated,
    /// A field has a wire type protobuf does not define (or a deprecated group).
    #[error("unsupported wire type {0}")]
    WireType(u64),
}

/// Reads the sequence (field 1) and the create number from `order.customer_id` (field 2, then
/// field 2) of an encoded `OrderEvent`, skipping everything else.
pub fn parse_event(mut bytes: &[u8]) -> Result<Delivered, ParseError> {
    let mut delivered = Delivered {
        sequence: 0,
        create: None,
    };
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        match (key >> 3, key & 7) {
            (1, 0) => delivered.sequence = varint(&mut bytes)?,
            (2, 2) => delivered.create = create_number(length_delimited(&mut bytes)?)?,
            (_, wire_type) => skip(wire_type, &mut bytes)?,
        }
    }
    Ok(delivered)
}

/// The create number in an encoded `Order`'s customer id (field 2).
fn create_number(mut order: &[u8]) -> Result<Option<u32>, ParseError> {
    let mut create = None;
    while !order.is_empty() {
        let key = varint(&mut order)?;
        match (key >> 3, key & 7) {
            (2, 2) => {
                create = length_delimited(&mut order)?
                    .strip_prefix(CUSTOMER_PREFIX.as_bytes())
                    .and_then(|digits| std::str::from_utf8(digits).ok())
                    .and_then(|digits| digits.parse().ok());
            }
            (_, wire_type) => skip(wire_type, &mut order)?,
        }
    }
    Ok(create)
}

fn varint(bytes: &mut &[u8]) -> Result<u64, ParseError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or(ParseError::Truncated)?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ParseError::Truncated)
}

fn length_delimited<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], ParseError> {
    let len = usize::try_from(varint(bytes)?).map_err(|_| ParseError::Truncated)?;
    if bytes.len() < len {
        return Err(ParseError::Truncated);
    }
    let (field, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(field)
}

fn skip(wire_type: u64, bytes: &mut &[u8]) -> Result<(), ParseError> {
    let len = match wire_type {
        0 => return varint(bytes).map(drop),
        1 => 8,
        2 => return length_delimited(bytes).map(drop),
        5 => 4,
        other => return Err(ParseError::WireType(other)),
    };
    if bytes.len() < len {
        return Err(ParseError::Truncated);
    }
    *bytes = &bytes[len..];
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canned;
    use prost::Message as _;

    fn event(sequence: u64, customer_id: String) -> Vec<u8> {
        let mut order = canned::pending_order("order-1".to_owned(), canned::line_items());
        order.customer_id = customer_id;
        pb::OrderEvent {
            sequence,
            order: Some(order.clone()),
            previous_status: 0,
            event_time: order.create_time,
        }
        .encode_to_vec()
    }

    #[test]
    fn reads_the_sequence_and_the_create_number() {
        assert_eq!(
            parse_event(&event(1_234_567_890_123, customer_id(42))),
            Ok(Delivered {
                sequence: 1_234_567_890_123,
                create: Some(42)
            })
        );
        assert_eq!(customer_id(42).len(), canned::CUSTOMER_ID.len());
    }

    #[test]
    fn an_event_of_someone_else_has_no_create_number() {
        let parsed = parse_event(&event(7, canned::CUSTOMER_ID.to_owned())).expect("parses");
        assert_eq!(parsed.create, None);
        assert_eq!(parsed.sequence, 7);
    }

    #[test]
    fn truncated_bytes_are_an_error() {
        let bytes = event(7, customer_id(1));
        assert_eq!(
            parse_event(&bytes[..bytes.len() - 3]),
            Err(ParseError::Truncated)
        );
    }
}
