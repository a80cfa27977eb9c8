//! The command line: `eventstore [--workers N] [--max-line-bytes N] [--help]`.

mod common;
use common::*;
use serde_json::json;

#[test]
fn help_exits_0_and_names_every_flag() {
    let (stdout, stderr, status) = run_text(&["--help"], b"");
    assert!(status.success(), "--help exit {status:?}, stderr: {stderr}");
    let text = format!("{stdout}{stderr}");
    for flag in ["--workers", "--max-line-bytes", "--help"] {
        assert!(
            text.contains(flag),
            "--help does not mention {flag}:\n{text}"
        );
    }
}

#[test]
fn help_does_not_serve_requests() {
    let (stdout, _, status) = run_text(&["--help"], format!("{}\n", req(read_all(1))).as_bytes());
    assert!(status.success());
    assert!(
        !stdout.contains("all_read"),
        "--help served a request: {stdout}"
    );
}

#[test]
fn bad_flags_exit_non_zero_with_a_message() {
    for (args, mention) in [
        (&["--bogus"][..], "--bogus"),
        (&["--workers"][..], "--workers"),
        (&["--workers", "abc"][..], "--workers"),
        (&["--workers", "-2"][..], "--workers"),
        (&["--workers", "0"][..], "--workers"),
        (&["--max-line-bytes", "lots"][..], "--max-line-bytes"),
        (&["--max-line-bytes"][..], "--max-line-bytes"),
        (&["--max-line-bytes", "-5"][..], "--max-line-bytes"),
        (&["--reply-buffer-bytes", "0"][..], "--reply-buffer-bytes"),
        (&["--reply-buffer-bytes", "x"][..], "--reply-buffer-bytes"),
        (&["extra"][..], "extra"),
    ] {
        let (stdout, stderr, status) = run_text(args, format!("{}\n", req(read_all(1))).as_bytes());
        assert!(!status.success(), "{args:?} exited 0; stdout: {stdout}");
        assert!(
            !stdout.contains("all_read"),
            "{args:?} served requests: {stdout}"
        );
        assert!(
            stderr.contains(mention.trim_start_matches('-')),
            "{args:?}: stderr does not say what is wrong ({mention}):\n{stderr}"
        );
    }
}

#[test]
fn flags_are_accepted() {
    let lines = [
        req(append(1, "a", "T", json!({}), json!(0))),
        req(read_all(2)),
    ];
    let expected = [
        appended(1, 1),
        json!({"type": "all_read", "in_reply_to": 2, "events": ["<any>"], "head": 1}),
    ];
    check_with(&["--workers", "1"], &lines, &expected);
    check_with(
        &["--workers", "3", "--max-line-bytes", "4096"],
        &lines,
        &expected,
    );
    check_with(
        &["--max-line-bytes", "200", "--workers", "2"],
        &lines,
        &expected,
    );
    check_with(&["--reply-buffer-bytes", "1"], &lines, &expected);
}

#[test]
fn empty_input_exits_0_without_output() {
    let out = run_bytes(&[], b"");
    assert!(out.status.success(), "stderr: {}", out.stderr);
    assert!(out.raw.is_empty());
}

#[test]
fn an_empty_data_dir_is_refused_and_creates_nothing() {
    let cwd = TempDir::new("empty-data-dir");
    for args in [&["--data-dir", ""][..], &["--data-dir="][..]] {
        let mut command = node_command(args);
        command.current_dir(cwd.path());
        let (stdout, stderr, status) =
            run_command(command, format!("{}\n", req(read_all(1))).as_bytes());
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?} served requests: {stdout}");
        assert!(
            stderr.contains("--data-dir") && stderr.contains("empty"),
            "{stderr}"
        );
        let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
        assert!(left.is_empty(), "{args:?} created {left:?}");
    }
    // The library refuses it too.
    let e = match eventstore::EventStore::open("", eventstore::FsyncPolicy::Always) {
        Err(e) => e,
        Ok(_) => panic!("an empty path opened"),
    };
    assert!(e.to_string().contains("empty"), "{e}");
}
