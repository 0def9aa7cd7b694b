//! An `orders.v1.OrderEvent` already encoded, and an `OrderService` server whose `WatchOrders`
//! streams it: an event sent to many watch streams is encoded once, with its gRPC message prefix,
//! and order-service sends those shared bytes on every stream (tonic's encoder, if used, copies
//! them into its buffer like any message).
//!
//! [`order_service_server`] is generated from the same proto as [`crate::v1`]'s server, with every
//! message taken from [`crate::v1`] except `OrderEvent`, which is [`EncodedOrderEvent`] here
//! (`build.rs`); the routes, the wire bytes and the file descriptor set are the same, and clients
//! decode `crate::v1::OrderEvent` as before. Its codec ([`ServerCodec`]) is prost's with a
//! smaller response buffer.

use crate::v1::OrderEvent;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};
use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The buffer each response's messages are encoded into, allocated when the call starts (and
/// grown for a larger message). tonic's default is 8 KiB, for every call, and touching it costs
/// every unary call: an order takes a few hundred bytes. (Watch streams used to hold theirs for
/// as long as they were open, 80 MB of address space for 10,000 streams; order-service now sends
/// their events' shared frames without this encoder.)
const RESPONSE_BUFFER_BYTES: usize = 1024;
/// Encoded messages a stream gathers before handing them on as one frame: tonic's default, and
/// what order-service's own watch response body gathers too.
pub const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// The codec of [`order_service_server`]: prost's encoding with a response buffer of
/// [`RESPONSE_BUFFER_BYTES`] instead of tonic's 8 KiB, and prost's decoding as it is.
#[derive(Debug, Clone)]
pub struct ServerCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ServerCodec<T, U> {
    fn default() -> Self {
        ServerCodec(PhantomData)
    }
}

impl<T, U> Codec for ServerCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> ProstEncoder<T> {
        ProstEncoder::new(BufferSettings::new(
            RESPONSE_BUFFER_BYTES,
            YIELD_THRESHOLD_BYTES,
        ))
    }

    fn decoder(&mut self) -> ProstDecoder<U> {
        ProstDecoder::new(BufferSettings::default())
    }
}

/// Bytes of gRPC's message prefix: a compressed flag and the message's length (big-endian u32).
pub const GRPC_PREFIX_BYTES: usize = 5;

/// The protobuf encoding of one [`OrderEvent`]: what prost writes for it, byte for byte, kept
/// behind the gRPC message prefix so that the whole frame can be sent as it is
/// ([`EncodedOrderEvent::grpc_frame`]). Cloning shares the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedOrderEvent {
    /// The gRPC prefix (uncompressed, the length), then the message.
    framed: Bytes,
}

impl EncodedOrderEvent {
    /// Encodes `event` (once; every clone shares the result).
    pub fn new(event: &OrderEvent) -> Self {
        let len = event.encoded_len();
        let mut framed = Vec::with_capacity(GRPC_PREFIX_BYTES + len);
        framed.push(0);
        framed.extend_from_slice(&grpc_length(len).to_be_bytes());
        event.encode_raw(&mut framed);
        EncodedOrderEvent {
            framed: Bytes::from(framed),
        }
    }

    /// The encoded message (without gRPC's prefix).
    pub fn as_bytes(&self) -> &[u8] {
        &self.framed[GRPC_PREFIX_BYTES..]
    }

    /// The message as one gRPC length-prefixed message (uncompressed): what a response body
    /// sends for it.
    pub fn grpc_frame(&self) -> &Bytes {
        &self.framed
    }

    /// The event these bytes encode.
    pub fn decode_event(&self) -> Result<OrderEvent, DecodeError> {
        OrderEvent::decode(self.as_bytes())
    }
}

/// The prefix's length field. A message over 4 GiB cannot be sent on gRPC at all (and an event
/// is a few hundred bytes).
fn grpc_length(len: usize) -> u32 {
    u32::try_from(len).expect("a gRPC message is under 4 GiB")
}

impl Default for EncodedOrderEvent {
    /// An empty message (the encoding of a default `OrderEvent`).
    fn default() -> Self {
        EncodedOrderEvent {
            framed: Bytes::from_static(&[0; GRPC_PREFIX_BYTES]),
        }
    }
}

impl From<&OrderEvent> for EncodedOrderEvent {
    fn from(event: &OrderEvent) -> Self {
        EncodedOrderEvent::new(event)
    }
}

/// Encoding copies the shared bytes (gRPC frames it like any message). Decoding, which the
/// server never does with this type, merges through [`OrderEvent`], so that decoding the bytes
/// of an `OrderEvent` gives the same bytes back.
impl Message for EncodedOrderEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(self.as_bytes());
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let mut event = self.decode_event()?;
        event.merge_field(tag, wire_type, buf, ctx)?;
        *self = EncodedOrderEvent::new(&event);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.framed.len() - GRPC_PREFIX_BYTES
    }

    fn clear(&mut self) {
        *self = EncodedOrderEvent::default();
    }
}

pub use server::order_service_server;

mod server {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    include!(concat!(env!("OUT_DIR"), "/encoded/orders.v1.rs"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{LineItem, Order, OrderStatus};
    use crate::wkt::Timestamp;

    fn event() -> OrderEvent {
        OrderEvent {
            sequence: 42,
            order: Some(Order {
                order_id: "ord_1".into(),
                customer_id: "c-1".into(),
                items: vec![
                    LineItem {
                        sku: "sku-1".into(),
                        quantity: 2,
                        unit_price_cents: 150,
                    },
                    LineItem {
                        sku: "sku-2".into(),
                        quantity: 1,
                        unit_price_cents: 0,
                    },
                ],
                currency: "EUR".into(),
                total_cents: 300,
                status: OrderStatus::Paid as i32,
                version: 2,
                create_time: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5,
                }),
                update_time: Some(Timestamp {
                    seconds: 1_700_000_001,
                    nanos: 0,
                }),
            }),
            previous_status: OrderStatus::Pending as i32,
            event_time: Some(Timestamp {
                seconds: 1_700_000_001,
                nanos: 0,
            }),
        }
    }

    #[test]
    fn encodes_exactly_as_prost_encodes_the_event() {
        let event = event();
        let encoded = EncodedOrderEvent::new(&event);
        assert_eq!(encoded.encode_to_vec(), event.encode_to_vec());
        assert_eq!(encoded.encoded_len(), event.encoded_len());
        // Length-delimited (as a field or a stream frame would be) too.
        assert_eq!(
            encoded.encode_length_delimited_to_vec(),
            event.encode_length_delimited_to_vec()
        );
    }

    #[test]
    fn its_grpc_frame_is_the_prefix_then_the_message() {
        let event = event();
        let message = event.encode_to_vec();
        let encoded = EncodedOrderEvent::new(&event);
        let frame = encoded.grpc_frame();
        assert_eq!(frame[0], 0, "not compressed");
        assert_eq!(
            u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize,
            message.len()
        );
        assert_eq!(&frame[5..], message.as_slice());
        assert_eq!(
            EncodedOrderEvent::default().grpc_frame().as_ref(),
            &[0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn decoding_the_bytes_of_an_event_gives_them_back() {
        let event = event();
        let decoded = EncodedOrderEvent::decode(event.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.as_bytes(), event.encode_to_vec().as_slice());
        assert_eq!(decoded.decode_event().unwrap(), event);
        assert_eq!(
            EncodedOrderEvent::decode(&[][..]).unwrap(),
            EncodedOrderEvent::default()
        );
        assert!(EncodedOrderEvent::decode(&[0x0a, 0x05][..]).is_err());
    }
}
