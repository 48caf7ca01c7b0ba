//! The `tokio` feature: the server and both readiness helpers on a current-thread runtime.
//! Run with `cargo test -p edgegw-ring --features tokio`.
#![cfg(feature = "tokio")]

mod common;

use common::temp_dir;
use edgegw_ring::{
    AllowList, AsyncRingServer, Consumer, DataReadiness, Producer, RingConfig, RingServer,
    ServerEvent, SpaceReadiness,
};
use std::time::Duration;

#[tokio::test(flavor = "current_thread")]
async fn a_tokio_server_serves_and_tokio_waits_see_data_and_space() {
    let dir = temp_dir("tokio");
    let path = dir.join("r.sock");
    let mut producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let server = RingServer::bind(
        &path,
        producer.served_ring().unwrap(),
        AllowList::current_user(),
    )
    .unwrap();
    let mut server = AsyncRingServer::new(server).unwrap();
    // Attach from a blocking thread while the server runs on the runtime.
    let attach_path = path.clone();
    let consumer = tokio::task::spawn_blocking(move || Consumer::attach(attach_path));
    let events = tokio::time::timeout(Duration::from_secs(10), server.events())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(events[0], ServerEvent::Attached { .. }),
        "{events:?}"
    );
    let mut consumer = consumer.await.unwrap().unwrap();

    let data = DataReadiness::new(&consumer).unwrap();
    let space = SpaceReadiness::new(&producer).unwrap();
    // Fill the ring; a task drains it after a moment; the producer awaits space, the consumer
    // awaits data.
    while producer.send(1, 0, &[7u8; 1000]).is_ok() {}
    let reader = async {
        let mut got = 0;
        while got < 6 {
            tokio::time::timeout(Duration::from_secs(10), data.wait(&mut consumer))
                .await
                .unwrap()
                .unwrap();
            while consumer.read().unwrap().is_some() {
                got += 1;
            }
            consumer.release();
        }
        got
    };
    let writer = async {
        tokio::time::timeout(Duration::from_secs(10), space.wait(&mut producer, 1000))
            .await
            .unwrap()
            .unwrap();
        producer.send(1, 0, &[8u8; 1000]).unwrap();
        producer.send(1, 0, &[8u8; 1000]).unwrap();
    };
    let (got, ()) = tokio::join!(reader, writer);
    assert_eq!(got, 6);
}
