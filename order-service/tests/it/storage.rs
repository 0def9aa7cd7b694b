//! The SQLite store under conditions a disk really gets into: sustained writes (the WAL must stay
//! bounded and empty itself afterwards), database files deleted while serving (no write may be
//! acknowledged into them), a write failing halfway through its rows inside a batch (it must
//! fail alone and leave nothing), a full filesystem (health must say writes fail while reads go
//! on, and recover once there is room again) and a frozen one. Full and frozen filesystems are a
//! tmpfs and a loop-mounted ext4 mounted by the test, which needs root; it says SKIPPED without.

use crate::metrics::{scrape, value};
use crate::support;

use orders_proto::reason;
use orders_proto::v1 as pb;
use orders_proto::v1::order_service_client::OrderServiceClient;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use support::*;
use tokio::task::JoinSet;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_client::HealthClient};

/// How long health may take to follow what the store does (it checks every 2 s).
const HEALTH_FOLLOWS_WITHIN: Duration = Duration::from_secs(15);

fn wal_of(database: &Path) -> PathBuf {
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Every order id the server lists.
async fn all_order_ids(client: &mut OrderServiceClient<Channel>) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_orders(authed(
                pb::ListOrdersRequest {
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                },
                READER,
            ))
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.orders.into_iter().map(|order| order.order_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

/// The health of `orders.v1.OrderService`, as a stream of changes.
async fn watch_health(server: &TestServer) -> tonic::Streaming<HealthCheckResponse> {
    HealthClient::new(server.channel().await)
        .watch(HealthCheckRequest {
            service: "orders.v1.OrderService".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until the health stream reports `wanted`.
async fn health_becomes(health: &mut tonic::Streaming<HealthCheckResponse>, wanted: ServingStatus) {
    tokio::time::timeout(HEALTH_FOLLOWS_WITHIN, async {
        loop {
            let status = health.message().await.unwrap().unwrap().status();
            if status == wanted {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("health did not become {wanted:?} within {HEALTH_FOLLOWS_WITHIN:?}")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_sustained_writes_and_empties_when_they_stop() {
    const LIMIT: u64 = 256 * 1024;
    // One batch of the 16 writers below may land past the limit before the writer empties it.
    const BOUND: u64 = LIMIT + 1024 * 1024;
    const WRITERS: usize = 16;
    const CREATES_PER_WRITER: usize = 150;
    let server = TestServer::start_with(&[
        "--wal-limit-bytes",
        &LIMIT.to_string(),
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .await;
    let wal = wal_of(&server.db_path());
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn({
        let (wal, peak) = (wal.clone(), Arc::clone(&peak));
        async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(2));
            loop {
                ticks.tick().await;
                peak.fetch_max(file_size(&wal), Ordering::Relaxed);
            }
        }
    });

    let mut writers = JoinSet::new();
    for writer in 0..WRITERS {
        let mut client = server.client().await;
        writers.spawn(async move {
            let mut ids = Vec::with_capacity(CREATES_PER_WRITER);
            for _ in 0..CREATES_PER_WRITER {
                ids.push(create(&mut client, &format!("wal-{writer}")).await.order_id);
            }
            ids
        });
    }
    let mut acknowledged = HashSet::new();
    while let Some(ids) = writers.join_next().await {
        acknowledged.extend(ids.unwrap());
    }
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed).max(file_size(&wal));
    println!("WAL peak: {peak} bytes (limit {LIMIT}, bound {BOUND})");
    assert!(
        peak <= BOUND,
        "the WAL reached {peak} bytes under {} creates with a limit of {LIMIT}",
        acknowledged.len()
    );

    // Once writes stop, the WAL is emptied, and the gauge says so.
    let metrics = server.metrics_addr.unwrap();
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let gauge = value(&scrape(metrics).await, "orders_store_wal_size_bytes", &[]);
            if file_size(&wal) == 0 && gauge == 0.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the WAL was still {} bytes 15 s after writes stopped",
            file_size(&wal)
        )
    });
    let scraped = scrape(metrics).await;
    assert!(
        scraped
            .samples
            .iter()
            .any(|s| s.metric == "orders_store_wal_size_bytes"),
        "no WAL size gauge in /metrics"
    );

    // A graceful stop leaves no WAL content behind, and every acknowledged order is stored.
    let dir = server.stop().await;
    assert_eq!(file_size(&wal), 0, "WAL left behind by a graceful stop");
    let server = TestServer::start_in(dir, &[]).await;
    let stored = all_order_ids(&mut server.client().await).await;
    assert_eq!(acknowledged.len(), WRITERS * CREATES_PER_WRITER);
    assert!(acknowledged.is_subset(&stored));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_the_database_files_are_deleted_no_write_is_acknowledged_and_health_stays_not_serving()
{
    const WRITERS: usize = 8;
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "before").await;
    let mut health = watch_health(&server).await;
    health_becomes(&mut health, ServingStatus::Serving).await;

    // Writers keep creating while the files go, as clients of a live service do.
    let removed = Arc::new(AtomicBool::new(false));
    let mut writers = JoinSet::new();
    for writer in 0..WRITERS {
        let mut client = server.client().await;
        let removed = Arc::clone(&removed);
        writers.spawn(async move {
            // (order id if acknowledged, whether the call started after the files were gone)
            let mut outcomes = Vec::new();
            let mut after_removal = 0;
            while after_removal < 20 {
                let started_after = removed.load(Ordering::SeqCst);
                let request = new_order(&format!("rm-{writer}"), &format!("rm-{}", uuid_like()));
                let outcome = client.create_order(authed(request, WRITER)).await;
                outcomes.push((outcome.map(|r| r.into_inner().order_id), started_after));
                if started_after {
                    after_removal += 1;
                }
            }
            outcomes
        });
    }
    // Let the writers get going, then delete the database, its WAL and its shared memory.
    let mut before_removal = server.client().await;
    for _ in 0..20 {
        create(&mut before_removal, "warm-up").await;
    }
    let db = server.db_path();
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        match std::fs::remove_file(PathBuf::from(path)) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => panic!("removing the database files: {error}"),
        }
    }
    removed.store(true, Ordering::SeqCst);

    let refused = client
        .create_order(authed(new_order("after", "after-rm"), WRITER))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused), reason::STORE_UNAVAILABLE);
    health_becomes(&mut health, ServingStatus::NotServing).await;

    let mut acknowledged_after_removal = Vec::new();
    while let Some(outcomes) = writers.join_next().await {
        for (outcome, started_after) in outcomes.unwrap() {
            match (outcome, started_after) {
                (Ok(id), true) => acknowledged_after_removal.push(id),
                (Err(status), true) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    assert_eq!(reason(&status), reason::STORE_UNAVAILABLE);
                }
                // Racing the removal: acknowledged while the files were still there, or refused.
                (_, false) => {}
            }
        }
    }
    assert!(
        acknowledged_after_removal.is_empty(),
        "{} creates acknowledged after the database files were deleted",
        acknowledged_after_removal.len()
    );
    // It stays NOT_SERVING: no later check turns it back.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), health.message())
            .await
            .is_err(),
        "health changed again after the database files were lost"
    );

    // A restart on the path opens what is there now: nothing acknowledged went elsewhere.
    drop((health, client, before_removal));
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, &[]).await;
    let stored = all_order_ids(&mut server.client().await).await;
    assert!(stored.is_empty(), "{stored:?}");
}

/// A write that fails after its order and event rows are written (here a trigger refuses its
/// idempotency record) fails alone: the writes committed with it in the same batch are
/// acknowledged and stored, and nothing of the failed one is left, not even its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_failing_after_its_first_rows_fails_alone_and_leaves_nothing() {
    const CREATES: usize = 48;
    const REFUSED: usize = 24;
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "before").await;
    // Another connection to the same file: the writer sees the new schema at its next batch.
    let db = rusqlite::Connection::open(server.db_path()).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_marked_keys BEFORE INSERT ON idempotency_keys
         WHEN NEW.request_id LIKE 'refused-%'
         BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END;",
    )
    .unwrap();

    // All in flight at once, so they queue up behind each other's commits and share batches.
    let mut calls = JoinSet::new();
    for index in 0..CREATES {
        let mut client = client.clone();
        calls.spawn(async move {
            let (customer, request_id) = if index == REFUSED {
                ("refused".to_owned(), format!("refused-{}", uuid_like()))
            } else {
                (format!("batch-{index}"), format!("ok-{}", uuid_like()))
            };
            let outcome = client
                .create_order(authed(new_order(&customer, &request_id), WRITER))
                .await;
            (index, outcome.map(|reply| reply.into_inner().order_id))
        });
    }
    let mut acknowledged = HashSet::new();
    while let Some(joined) = calls.join_next().await {
        match joined.unwrap() {
            (REFUSED, outcome) => {
                let status = outcome.expect_err("the trigger refuses this write");
                assert_eq!(status.code(), Code::Internal, "{status:?}");
            }
            (index, outcome) => {
                let id = outcome.unwrap_or_else(|status| panic!("create {index}: {status:?}"));
                acknowledged.insert(id);
            }
        }
    }
    assert_eq!(acknowledged.len(), CREATES - 1);

    let stored = all_order_ids(&mut client).await;
    assert!(acknowledged.is_subset(&stored));
    assert_eq!(
        stored.len(),
        CREATES,
        "the acknowledged orders and the first one"
    );
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |row| row.get(0)).unwrap() };
    assert_eq!(
        count("SELECT count(*) FROM orders WHERE customer_id = 'refused'"),
        0
    );
    assert_eq!(count("SELECT count(*) FROM order_events"), CREATES as i64);
    assert_eq!(
        count(
            "SELECT count(*) FROM order_events WHERE order_id NOT IN (SELECT order_id FROM orders)"
        ),
        0,
        "an event of the refused write was kept"
    );
    assert_eq!(
        count("SELECT count(*) FROM idempotency_keys"),
        CREATES as i64
    );
}

/// A small tmpfs mounted for one test (we run as root in CI); unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `8m`), or says why not.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (not root?): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(error) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
            assert_eq!(
                error.raw_os_error(),
                Some(28),
                "expected ENOSPC, got {error}"
            );
            break;
        }
    }
    // Whatever part of a chunk fit is in; the rest of the space is gone.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_turns_health_not_serving_while_reads_go_on_and_back_once_there_is_room() {
    let tmpfs = match Tmpfs::mount("8m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            println!(
                "SKIPPED a_full_disk_turns_health_not_serving_while_reads_go_on_and_back_once_there_is_room: {why}"
            );
            return;
        }
    };
    let dir = tempfile::tempdir_in(tmpfs.path()).unwrap();
    let server = TestServer::start_in(dir, &["--wal-limit-bytes", "65536"]).await;
    let mut client = server.client().await;
    let written = create(&mut client, "room").await;
    let mut health = watch_health(&server).await;
    health_becomes(&mut health, ServingStatus::Serving).await;

    let filler = tmpfs.path().join("filler");
    fill(&filler);
    // Writes that need new space fail now; the first may still fit in space SQLite already
    // holds, so keep creating until one is refused.
    let mut refused = None;
    for attempt in 0..2000 {
        let request = new_order("full", &format!("full-{attempt}"));
        if let Err(status) = client.create_order(authed(request, WRITER)).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("2000 creates fitted on a full filesystem");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused), reason::STORE_UNAVAILABLE);
    health_becomes(&mut health, ServingStatus::NotServing).await;

    // Reads go on meanwhile.
    let read = client
        .get_order(authed(
            pb::GetOrderRequest {
                order_id: written.order_id.clone(),
            },
            READER,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.order_id, written.order_id);
    assert!(all_order_ids(&mut client).await.contains(&written.order_id));

    // Room again: the health check's probe write succeeds, and so do creates.
    std::fs::remove_file(&filler).unwrap();
    health_becomes(&mut health, ServingStatus::Serving).await;
    create(&mut client, "room-again").await;

    drop(health);
    drop(client);
    server.stop().await;
    drop(tmpfs);
}

/// A loop-mounted ext4 filesystem for one test, which can be frozen (`fsfreeze`); unmounted
/// when dropped.
struct FreezableFs {
    dir: tempfile::TempDir,
    _image: tempfile::NamedTempFile,
}

impl FreezableFs {
    fn mount() -> Result<FreezableFs, String> {
        let image = tempfile::NamedTempFile::new().unwrap();
        image.as_file().set_len(32 * 1024 * 1024).unwrap();
        let run = |program: &str, args: &[&std::ffi::OsStr]| -> Result<(), String> {
            let output = std::process::Command::new(program)
                .args(args)
                .output()
                .map_err(|error| format!("cannot run {program}: {error}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{program} failed (not root, or no loop devices?): {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            }
        };
        run(
            "mkfs.ext4",
            &["-q".as_ref(), "-F".as_ref(), image.path().as_os_str()],
        )?;
        let dir = tempfile::tempdir().unwrap();
        run(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                image.path().as_os_str(),
                dir.path().as_os_str(),
            ],
        )?;
        Ok(FreezableFs { dir, _image: image })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Freezes the filesystem until the returned guard is dropped. Declared after the server,
    /// the guard is dropped before it when a test fails, so removing the server's files never
    /// waits on a frozen filesystem.
    fn freeze(&self) -> Frozen<'_> {
        fsfreeze(self.path(), "-f");
        Frozen(self)
    }
}

fn fsfreeze(path: &Path, flag: &str) {
    let status = std::process::Command::new("fsfreeze")
        .arg(flag)
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "fsfreeze {flag} failed");
}

/// The filesystem is frozen while this lives.
struct Frozen<'a>(&'a FreezableFs);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        // No assertion here: this also runs while a failed test unwinds.
        let _ = std::process::Command::new("fsfreeze")
            .arg("-u")
            .arg(self.0.path())
            .status();
    }
}

impl Drop for FreezableFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_filesystem_turns_health_not_serving_and_back_once_thawed() {
    let fs = match FreezableFs::mount() {
        Ok(fs) => fs,
        Err(why) => {
            println!(
                "SKIPPED a_frozen_filesystem_turns_health_not_serving_and_back_once_thawed: {why}"
            );
            return;
        }
    };
    let dir = tempfile::tempdir_in(fs.path()).unwrap();
    let server = TestServer::start_in(dir, &[]).await;
    let mut client = server.client().await;
    let written = create(&mut client, "before-freeze").await;
    let mut health = watch_health(&server).await;
    health_becomes(&mut health, ServingStatus::Serving).await;

    let frozen = fs.freeze();
    // A write that cannot complete while the filesystem is frozen.
    let mut writer = server.client().await;
    let stuck = tokio::spawn(async move {
        writer
            .create_order(authed(new_order("frozen", "frozen-1"), WRITER))
            .await
    });
    health_becomes(&mut health, ServingStatus::NotServing).await;
    // A recently written order is still served (from memory). Reads that reach SQLite may
    // wait for the thaw: opening a read snapshot can write to the memory-mapped `-shm` file.
    let read = client
        .get_order(authed(
            pb::GetOrderRequest {
                order_id: written.order_id.clone(),
            },
            READER,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.order_id, written.order_id);

    drop(frozen);
    health_becomes(&mut health, ServingStatus::Serving).await;
    // The write held up by the freeze went through (its deadline was the client's, none).
    let created = stuck.await.unwrap().unwrap().into_inner();
    assert_eq!(created.customer_id, "frozen");
    create(&mut client, "after-thaw").await;

    drop((health, client));
    server.stop().await;
    drop(fs);
}
