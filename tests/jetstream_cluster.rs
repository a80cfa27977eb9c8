//! The test cluster itself: it starts, survives the loss of one server and
//! takes it back.

#![cfg(feature = "jetstream")]

mod nats;

#[test]
fn a_cluster_starts_loses_a_server_and_takes_it_back() {
    let _turn = nats::one_cluster_at_a_time();
    let mut cluster = nats::Cluster::start();
    assert_eq!(cluster.urls().split(',').count(), 3);
    cluster.kill(1);
    cluster.restart(1);
}
