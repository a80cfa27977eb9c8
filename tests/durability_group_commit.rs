//! Group commit on a durable store: threads appending at once share
//! `fdatasync`s (the journaller syncs whatever piled up), and every
//! acknowledged append is found after reopening.

mod support;

use eventstore::{EventStore, ExpectedVersion, FsyncPolicy, NewEvent, Version};
use std::sync::Barrier;
use std::thread;

#[test]
fn concurrent_durable_appends_share_syncs_and_all_survive() {
    let _machine = support::whole_machine();
    // Under the target directory, not /tmp: a tmpfs would make syncs free
    // and the journaller would have less reason to batch.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("group-commit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    const THREADS: usize = 8;
    let per_thread = support::scaled(60, 600);
    let data = support::raw(r#"{"n":1}"#);
    {
        let store = EventStore::open(&dir, FsyncPolicy::Always).expect("open");
        let start = Barrier::new(THREADS);
        thread::scope(|scope| {
            for t in 0..THREADS {
                let (store, start, data) = (&store, &start, &data);
                scope.spawn(move || {
                    start.wait();
                    let aggregate = format!("writer-{t}");
                    for v in 0..per_thread as u64 {
                        store
                            .append(
                                &aggregate,
                                ExpectedVersion::Exact(Version(v)),
                                &[NewEvent::new("Counted", data)],
                            )
                            .expect("append");
                    }
                });
            }
        });
        let appends = (THREADS * per_thread) as u64;
        let syncs = store.syncs();
        println!("{appends} durable appends from {THREADS} threads: {syncs} fdatasyncs");
        assert!(syncs > 0, "a durable store that never synced");
        // Every append waits for a sync covering it; with eight threads
        // waiting at once, some sync covers more than one append. One sync
        // per append would mean no group commit at all.
        assert!(
            syncs < appends,
            "{syncs} syncs for {appends} appends: no sync was shared"
        );
    }
    let store = EventStore::open(&dir, FsyncPolicy::Always).expect("reopen");
    assert_eq!(store.head().get(), (THREADS * per_thread) as u64);
    for t in 0..THREADS {
        assert_eq!(
            store.version(&format!("writer-{t}")),
            Version(per_thread as u64)
        );
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
