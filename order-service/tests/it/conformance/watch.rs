//! WatchOrders against a real server: stored replay then live events, the three ways to start,
//! resuming without gap or duplicate while writers race, cutting off a slow watcher, and the
//! bytes on the wire (an event is encoded once for every stream: exactly as prost encodes it).

use crate::support;

use orders_proto::v1 as pb;
use pb::OrderStatus as S;
use std::collections::HashSet;
use std::time::Duration;
use support::*;
use tonic::{Code, Streaming};

/// Opens a watch as the reader.
async fn open(
    server: &TestServer,
    order_id: &str,
    after_sequence: u64,
) -> Result<tonic::Response<Streaming<pb::OrderEvent>>, tonic::Status> {
    let mut client = server.client().await;
    client
        .watch_orders(authed(
            pb::WatchOrdersRequest {
                order_id: order_id.into(),
                after_sequence,
            },
            READER,
        ))
        .await
}

async fn watch(
    server: &TestServer,
    order_id: &str,
    after_sequence: u64,
) -> Result<Streaming<pb::OrderEvent>, tonic::Status> {
    open(server, order_id, after_sequence)
        .await
        .map(tonic::Response::into_inner)
}

/// Opens a watch and returns it with its `orders-watch-from`, which every watch must carry.
async fn watch_from(
    server: &TestServer,
    order_id: &str,
    after_sequence: u64,
) -> (Streaming<pb::OrderEvent>, u64) {
    let response = open(server, order_id, after_sequence).await.unwrap();
    let from = response
        .metadata()
        .get("orders-watch-from")
        .expect("every WatchOrders response carries orders-watch-from")
        .to_str()
        .unwrap()
        .parse()
        .expect("orders-watch-from is a decimal sequence");
    (response.into_inner(), from)
}

async fn next(stream: &mut Streaming<pb::OrderEvent>) -> pb::OrderEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("no event within 10 s")
        .expect("stream failed")
        .expect("stream ended")
}
/// What identifies an event whatever its sequence: the order and the version it made.
fn identity(event: &pb::OrderEvent) -> (String, i64) {
    let order = event.order.as_ref().expect("an event carries its order");
    (order.order_id.clone(), order.version)
}

/// `WatchOrders` read as the raw bytes of each message, as they came off the wire.
mod raw {
    use bytes::{Buf, BufMut};
    use orders_proto::v1 as pb;
    use prost::Message;
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::transport::Channel;

    pub(super) async fn watch(
        channel: Channel,
        request: tonic::Request<pb::WatchOrdersRequest>,
    ) -> tonic::Streaming<Vec<u8>> {
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.unwrap();
        client
            .server_streaming(
                request,
                tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/orders.v1.OrderService/WatchOrders",
                ),
                RawCodec,
            )
            .await
            .unwrap()
            .into_inner()
    }

    struct RawCodec;

    impl Codec for RawCodec {
        type Encode = pb::WatchOrdersRequest;
        type Decode = Vec<u8>;
        type Encoder = RawCodec;
        type Decoder = RawCodec;

        fn encoder(&mut self) -> RawCodec {
            RawCodec
        }

        fn decoder(&mut self) -> RawCodec {
            RawCodec
        }
    }

    impl Encoder for RawCodec {
        type Item = pb::WatchOrdersRequest;
        type Error = Status;

        fn encode(
            &mut self,
            request: pb::WatchOrdersRequest,
            dst: &mut EncodeBuf<'_>,
        ) -> Result<(), Status> {
            dst.put_slice(&request.encode_to_vec());
            Ok(())
        }
    }

    impl Decoder for RawCodec {
        type Item = Vec<u8>;
        type Error = Status;

        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }
}

/// The next raw message of `stream`.
async fn next_raw(stream: &mut Streaming<Vec<u8>>) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("no event within 10 s")
        .expect("stream failed")
        .expect("stream ended")
}

fn assert_strictly_increasing(events: &[pb::OrderEvent]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].sequence < pair[1].sequence,
            "sequence {} after {}",
            pair[1].sequence,
            pair[0].sequence
        );
    }
}

conformance! {
    async fn replays_stored_events_then_streams_live_ones(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
        let mut client = server.client().await;
        let first = create(&mut client, "w").await; // sequence 1
        let second = create(&mut client, "w").await; // 2
        set_status(&mut client, &first.order_id, S::Paid)
            .await
            .unwrap(); // 3

        let mut stream = watch(&server, "", 1).await.unwrap();
        let replayed = [next(&mut stream).await, next(&mut stream).await];
        assert_eq!(
            replayed.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(
            replayed[0].order.as_ref().unwrap().order_id,
            second.order_id
        );
        assert_eq!(replayed[0].previous_status(), S::Unspecified);
        assert_eq!(replayed[1].previous_status(), S::Pending);
        assert_eq!(replayed[1].order.as_ref().unwrap().status(), S::Paid);
        assert!(replayed[1].event_time.is_some());

        let third = create(&mut client, "w").await;
        let live = next(&mut stream).await;
        assert_eq!(live.sequence, 4);
        assert_eq!(live.order.unwrap().order_id, third.order_id);
    }

    async fn an_order_watch_starts_with_its_current_state_and_sees_only_that_order(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
        let mut client = server.client().await;
        let watched = create(&mut client, "w").await;
        set_status(&mut client, &watched.order_id, S::Paid)
            .await
            .unwrap();
        let other = create(&mut client, "w").await;

        let mut stream = watch(&server, &watched.order_id, 0).await.unwrap();
        let current = next(&mut stream).await;
        assert_eq!(current.sequence, 2);
        assert_eq!(current.order.unwrap().status(), S::Paid);

        set_status(&mut client, &other.order_id, S::Cancelled)
            .await
            .unwrap();
        set_status(&mut client, &watched.order_id, S::Shipped)
            .await
            .unwrap();
        let live = next(&mut stream).await;
        assert_eq!(live.order.as_ref().unwrap().order_id, watched.order_id);
        assert_eq!(live.order.as_ref().unwrap().status(), S::Shipped);
        assert_eq!(live.previous_status(), S::Paid);
    }

    async fn a_live_watch_sees_only_what_happens_after_it_opens(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
        let mut client = server.client().await;
        create(&mut client, "before").await;
        let mut stream = watch(&server, "", 0).await.unwrap();
        let after = create(&mut client, "after").await;
        let event = next(&mut stream).await;
        assert_eq!(event.order.unwrap().order_id, after.order_id);
        assert_eq!(event.sequence, 2);
    }

    async fn unknown_orders_and_impossible_resume_points_are_refused(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
        let mut client = server.client().await;
        let unknown = watch(&server, "ord_missing", 0).await.unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);
        create(&mut client, "x").await;
        let ahead = watch(&server, "", 99).await.unwrap_err();
        assert_eq!(ahead.code(), Code::OutOfRange);
        assert_eq!(reason(&ahead), "SEQUENCE_AHEAD");
        let denied = {
            let mut client = server.client().await;
            client
                .watch_orders(pb::WatchOrdersRequest::default())
                .await
                .unwrap_err()
        };
        assert_eq!(denied.code(), Code::Unauthenticated);
    }

    #[multi_thread]
    async fn resuming_under_concurrent_writers_has_no_gap_and_no_duplicate(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
        let channel = server.channel().await;
        const WRITERS: usize = 4;
        const ORDERS_PER_WRITER: usize = 40;
        // Each order: a create and a PAID update, two events.
        let total_events = WRITERS * ORDERS_PER_WRITER * 2;

        let mut first = watch(&server, "", 0).await.unwrap();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let mut client = pb::order_service_client::OrderServiceClient::new(channel.clone());
                tokio::spawn(async move {
                    // Every acknowledged write, as the (order, version) its event carries.
                    let mut acknowledged = Vec::new();
                    for _ in 0..ORDERS_PER_WRITER {
                        let order = create(&mut client, &format!("writer-{w}")).await;
                        acknowledged.push((order.order_id.clone(), order.version));
                        let paid = set_status(&mut client, &order.order_id, S::Paid)
                            .await
                            .unwrap();
                        acknowledged.push((paid.order_id, paid.version));
                    }
                    acknowledged
                })
            })
            .collect();

        // The first watcher reads a while, then goes away mid-stream.
        let mut seen = Vec::new();
        while seen.len() < 60 {
            seen.push(next(&mut first).await);
        }
        drop(first);
        // Writers keep going while nobody watches; then we resume.
        let resume_from = seen.last().unwrap().sequence;
        let mut second = watch(&server, "", resume_from).await.unwrap();
        while seen.len() < total_events {
            seen.push(next(&mut second).await);
        }
        let mut acknowledged = HashSet::new();
        for writer in writers {
            acknowledged.extend(writer.await.unwrap());
        }
        assert_strictly_increasing(&seen);
        let identities: Vec<(String, i64)> = seen.iter().map(identity).collect();
        let distinct: HashSet<(String, i64)> = identities.iter().cloned().collect();
        assert_eq!(distinct.len(), identities.len(), "an event twice");
        assert_eq!(distinct, acknowledged, "every acknowledged write once");

        // Nothing more: the next event is one made after the writers were done.
        let marker = create(&mut server.client().await, "marker").await;
        let after = next(&mut second).await;
        assert_eq!(after.order.unwrap().order_id, marker.order_id);
        assert!(after.sequence > seen.last().unwrap().sequence);
    }

    async fn a_watcher_that_falls_too_far_behind_is_cut_off_and_can_resume(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &["--watch-buffer", "8"]).await;
        // A client with tiny HTTP/2 windows, so the server cannot push far ahead of what we read.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .initial_stream_window_size(Some(1024))
            .initial_connection_window_size(Some(1024))
            .connect()
            .await
            .unwrap();
        let mut slow = pb::order_service_client::OrderServiceClient::new(channel)
            .watch_orders(authed(pb::WatchOrdersRequest::default(), READER))
            .await
            .unwrap()
            .into_inner();
        let mut client = server.client().await;
        for _ in 0..300 {
            create(&mut client, "burst").await;
        }
        // Read what was buffered; the stream must end with RESOURCE_EXHAUSTED, not go on forever.
        let mut last = 0;
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(10), slow.message())
                .await
                .expect("slow watcher got neither events nor an error")
            {
                Ok(Some(event)) => {
                    assert!(event.sequence > last);
                    last = event.sequence;
                }
                Ok(None) => panic!("stream ended without an error"),
                Err(status) => break status,
            }
        };
        assert_eq!(ended.code(), Code::ResourceExhausted);
        assert_eq!(reason(&ended), "WATCHER_TOO_SLOW");
        assert!(last < 300);

        // Resuming from the last sequence delivers the rest.
        let mut resumed = watch(&server, "", last).await.unwrap();
        for expected in last + 1..=300 {
            assert_eq!(next(&mut resumed).await.sequence, expected);
        }

        // The writer was never held up and a fresh watcher works normally meanwhile.
        let mut fresh = watch(&server, "", 299).await.unwrap();
        assert_eq!(next(&mut fresh).await.sequence, 300);
    }

    async fn a_replay_never_skips_events_that_pruning_removed(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
        let mut client = server.client().await;
        let (mut live, _) = watch_from(&server, "", 0).await;
        let first = create(&mut client, "c-prune-1").await;
        set_status(&mut client, &first.order_id, S::Paid)
            .await
            .unwrap();
        set_status(&mut client, &first.order_id, S::Shipped)
            .await
            .unwrap();
        create(&mut client, "c-prune-2").await;
        // The four events: created, paid, shipped (first order), created (second order).
        let mut sequences = Vec::new();
        for _ in 0..4 {
            sequences.push(next(&mut live).await.sequence);
        }
        drop(live);
        server.stop().await;

        // The same database with every event past its retention: pruning (which runs at start)
        // deletes the first order's created and paid events; an order's latest event is kept.
        let server = TestServer::start_on(&db, &["--event-retention", "0s"]).await;
        // Until the prune has run, a replay from the first event delivers the second; after, it
        // is refused. Never does it silently start later.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let refused = loop {
            // The refusal may come when the watch opens or as its stream's first result.
            match watch(&server, "", sequences[0]).await {
                Err(status) => break status,
                Ok(mut stream) => {
                    match tokio::time::timeout(Duration::from_secs(10), stream.message())
                        .await
                        .expect("no event within 10 s")
                    {
                        Err(status) => break status,
                        Ok(event) => {
                            let event = event.expect("stream ended");
                            assert_eq!(event.sequence, sequences[1], "a silent gap in a replay");
                        }
                    }
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pruning at start never happened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
        assert_eq!(reason(&refused), "EVENTS_EXPIRED");
        // From the last pruned event on, the rest is complete.
        let (mut rest, from) = watch_from(&server, "", sequences[1]).await;
        assert_eq!(from, sequences[1]);
        assert_eq!(next(&mut rest).await.sequence, sequences[2]);
        assert_eq!(next(&mut rest).await.sequence, sequences[3]);
    }

    async fn every_watch_says_where_it_starts_in_orders_watch_from(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
        let mut client = server.client().await;
        let (_, empty) = watch_from(&server, "", 0).await;
        assert_eq!(empty, 0, "a live watch of an empty log starts after 0");

        let watched = create(&mut client, "from").await; // 1
        create(&mut client, "from").await; // 2
        set_status(&mut client, &watched.order_id, S::Paid)
            .await
            .unwrap(); // 3
        create(&mut client, "from").await; // 4

        // Live: the last sequence committed when it opened.
        let (mut live, from) = watch_from(&server, "", 0).await;
        assert_eq!(from, 4);
        let fifth = create(&mut client, "from").await;
        let event = next(&mut live).await;
        assert_eq!(
            (event.sequence, event.order.unwrap().order_id),
            (5, fifth.order_id)
        );

        // One order from 0: its snapshot, then everything after the snapshot's sequence.
        let (mut order, from) = watch_from(&server, &watched.order_id, 0).await;
        assert_eq!(from, 3);
        assert_eq!(next(&mut order).await.sequence, 3);

        // Resumed: the resume point itself, with or without an order.
        let (mut resumed, from) = watch_from(&server, "", 2).await;
        assert_eq!(from, 2);
        assert_eq!(next(&mut resumed).await.sequence, 3);
        let (_, from) = watch_from(&server, &watched.order_id, 1).await;
        assert_eq!(from, 1);
    }

    async fn a_live_watch_cut_before_its_first_event_resumes_from_watch_from_and_misses_nothing(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
        let mut client = server.client().await;
        create(&mut client, "before").await;
        let (live, from) = watch_from(&server, "", 0).await;
        // Cut before any event; three orders are made while nobody watches.
        drop(live);
        let mut made = Vec::new();
        for _ in 0..3 {
            made.push(create(&mut client, "during-the-cut").await.order_id);
        }
        let (mut resumed, resumed_from) = watch_from(&server, "", from).await;
        assert_eq!(resumed_from, from);
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(next(&mut resumed).await.order.unwrap().order_id);
        }
        assert_eq!(seen, made);
    }

    #[multi_thread]
    async fn watch_from_of_a_live_watch_opened_under_concurrent_writes_leaves_no_gap(
        backend: Backend,
    ) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
        let channel = server.channel().await;
        // One event before the first watch opens: watch_from is never 0 (a live, not a replay).
        create(&mut server.client().await, "seam-start").await;
        let stop = tokio_util::sync::CancellationToken::new();
        // Two writers commit all the time. A live watch's first event must be the first event
        // after its watch_from: the one a replay from watch_from starts with (anything later
        // is an event lost at the seam, anything earlier one delivered twice on resume).
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let mut client = pb::order_service_client::OrderServiceClient::new(channel.clone());
                let stop = stop.clone();
                tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        create(&mut client, &format!("seam-{w}")).await;
                    }
                })
            })
            .collect();
        for _ in 0..30 {
            let (mut live, from) = watch_from(&server, "", 0).await;
            let first = next(&mut live).await;
            let (mut replay, replay_from) = watch_from(&server, "", from).await;
            assert_eq!(replay_from, from);
            let expected = next(&mut replay).await;
            assert_eq!(
                (first.sequence, identity(&first)),
                (expected.sequence, identity(&expected)),
                "live watch opened at {from}"
            );
        }
        stop.cancel();
        for writer in writers {
            writer.await.unwrap();
        }
    }

    async fn a_change_to_the_same_status_makes_no_event(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
        let mut client = server.client().await;
        let order = create(&mut client, "noop").await;
        let (mut live, _) = watch_from(&server, "", 0).await;
        let same = set_status(&mut client, &order.order_id, S::Pending)
            .await
            .unwrap();
        assert_eq!(same, order, "a no-op changes nothing");
        let paid = set_status(&mut client, &order.order_id, S::Paid)
            .await
            .unwrap();
        let event = next(&mut live).await;
        assert_eq!(event.order.as_ref(), Some(&paid));
        assert_eq!(event.previous_status(), S::Pending);
    }

    async fn a_resumed_order_watch_sees_only_that_orders_later_events(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
        let mut client = server.client().await;
        let (mut live, _) = watch_from(&server, "", 0).await;
        let watched = create(&mut client, "one").await;
        let created = next(&mut live).await;
        let other = create(&mut client, "one").await;
        set_status(&mut client, &other.order_id, S::Paid)
            .await
            .unwrap();
        let paid = set_status(&mut client, &watched.order_id, S::Paid)
            .await
            .unwrap();
        let (mut resumed, from) = watch_from(&server, &watched.order_id, created.sequence).await;
        assert_eq!(from, created.sequence);
        let event = next(&mut resumed).await;
        assert_eq!(event.order.as_ref(), Some(&paid));
        let cancelled = set_status(&mut client, &watched.order_id, S::Cancelled)
            .await
            .unwrap();
        set_status(&mut client, &other.order_id, S::Shipped)
            .await
            .unwrap();
        let event = next(&mut resumed).await;
        assert_eq!(event.order.as_ref(), Some(&cancelled));
        assert_eq!(event.previous_status(), S::Paid);
    }

    async fn every_event_goes_out_exactly_as_prost_encodes_it_on_every_stream(backend: Backend) {
        use prost::Message;
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
        let mut client = server.client().await;
        let stored = create(&mut client, "wire").await; // 1
        set_status(&mut client, &stored.order_id, S::Paid)
            .await
            .unwrap(); // 2
        // Two live raw streams on different connections, one replaying raw stream, and the
        // ordinary client's view of the same events.
        let live_request = || authed(pb::WatchOrdersRequest::default(), READER);
        let mut live = [
            raw::watch(server.channel().await, live_request()).await,
            raw::watch(server.channel().await, live_request()).await,
        ];
        let mut replay = raw::watch(
            server.channel().await,
            authed(
                pb::WatchOrdersRequest {
                    order_id: String::new(),
                    after_sequence: 1,
                },
                READER,
            ),
        )
        .await;
        let mut decoded = watch(&server, "", 1).await.unwrap();

        // An order with several items, a status change with a reason: every field is set.
        let mut request = new_order("wire-live", "wire-live-1");
        request.items.push(pb::LineItem {
            sku: "second-sku".into(),
            quantity: 3,
            unit_price_cents: 0,
        });
        let made = client
            .create_order(authed(request, WRITER))
            .await
            .unwrap()
            .into_inner(); // 3
        set_status(&mut client, &made.order_id, S::Cancelled)
            .await
            .unwrap(); // 4

        for sequence in 2..=4 {
            let expected = next(&mut decoded).await;
            assert_eq!(expected.sequence, sequence);
            let prost_bytes = expected.encode_to_vec();
            // The replay reads stored events: sequence 2 first, then the live ones.
            assert_eq!(next_raw(&mut replay).await, prost_bytes, "replayed {sequence}");
            if sequence >= 3 {
                for stream in &mut live {
                    assert_eq!(next_raw(stream).await, prost_bytes, "live {sequence}");
                }
            }
        }
    }
}
