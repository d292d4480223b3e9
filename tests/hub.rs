//! Downloads from the model hub against a loopback server started by each test, serving small
//! files under the hub's URL layout and headers (`x-repo-commit`, `etag`, ranges). No network.

mod common;

mod hub_server;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use arpg_app::hub::{official, Hub, State, TOKENIZER};
use hub_server::{payload, Server, COMMIT};

fn server() -> Server {
    Server::start(&[
        ("hp-l33/ARPG/arpg_300m.pt", payload(300_000, 1)),
        (
            "FoundationVision/LlamaGen/vq_ds16_c2i.pt",
            payload(200_000, 2),
        ),
    ])
}

fn hub(s: &Server, cache: &std::path::Path, offline: bool) -> Hub {
    Hub::new(&s.endpoint, cache.to_path_buf(), offline).expect("hub")
}

fn never() -> AtomicBool {
    AtomicBool::new(false)
}

#[test]
fn fresh_download_then_the_cache_with_no_request_and_offline() {
    let s = server();
    let cache = common::temp_dir("hub-fresh");
    let o = official("arpg-l").expect("name");
    let h = hub(&s, &cache, false);
    assert_eq!(h.state(&o), State::NotDownloaded);
    let mut seen = 0;
    let path = h.fetch(&o, |p| seen = p.done, &never()).expect("download");
    assert_eq!(std::fs::read(&path).expect("read"), s.bytes("arpg_300m.pt"));
    assert_eq!(seen, 300_000, "progress reached the end");
    // The hub's layout: snapshots/<commit>/<file> -> blobs/<sha256>, refs/main.
    assert!(path.ends_with(format!(
        "models--hp-l33--ARPG/snapshots/{COMMIT}/arpg_300m.pt"
    )));
    assert_eq!(h.state(&o), State::Ready(path.clone()));
    let before = s.requests();
    assert_eq!(h.fetch(&o, |_| {}, &never()).expect("cached"), path);
    assert_eq!(s.requests(), before, "a cached file costs no request");
    let off = hub(&s, &cache, true);
    assert_eq!(off.fetch(&o, |_| {}, &never()).expect("offline hit"), path);
    let miss = off
        .fetch(&TOKENIZER, |_| {}, &never())
        .expect_err("offline miss");
    let msg = format!("{miss:#}");
    assert!(
        msg.contains("vq_ds16_c2i.pt") && msg.contains("offline"),
        "{msg}"
    );
    assert_eq!(s.requests(), before);
}

#[test]
fn a_cut_connection_resumes_from_where_it_stopped() {
    let s = server();
    let cache = common::temp_dir("hub-cut");
    s.behave(|b| b.cut_after = Some(100_000));
    let o = official("arpg-l").expect("name");
    let path = hub(&s, &cache, false)
        .fetch(&o, |_| {}, &never())
        .expect("download");
    assert_eq!(std::fs::read(&path).expect("read"), s.bytes("arpg_300m.pt"));
    let bodies = s.body_requests();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(
        bodies[1],
        Some(100_000),
        "the second request resumes: {bodies:?}"
    );
}

#[test]
fn cancel_keeps_the_partial_file_and_the_next_run_resumes() {
    let s = server();
    let cache = common::temp_dir("hub-cancel");
    s.behave(|b| b.slow_ms = 20);
    let o = official("arpg-l").expect("name");
    let h = hub(&s, &cache, false);
    let cancel = AtomicBool::new(false);
    let err = h
        .fetch(
            &o,
            |p| {
                if p.done >= 65_536 {
                    cancel.store(true, Ordering::Relaxed);
                }
            },
            &cancel,
        )
        .expect_err("cancelled");
    assert!(
        err.downcast_ref::<arpg_app::hub::Cancelled>().is_some(),
        "{err:#}"
    );
    let State::Partial(n) = h.state(&o) else {
        panic!("no partial file: {:?}", h.state(&o));
    };
    assert!((65_536..300_000).contains(&n), "{n}");
    s.behave(|b| b.slow_ms = 0);
    let path = h.fetch(&o, |_| {}, &never()).expect("resumed");
    assert_eq!(std::fs::read(&path).expect("read"), s.bytes("arpg_300m.pt"));
    assert_eq!(s.body_requests().last().copied().flatten(), Some(n));
}

#[test]
fn a_server_that_ignores_ranges_still_gives_the_exact_file() {
    let s = server();
    let cache = common::temp_dir("hub-norange");
    let o = official("arpg-l").expect("name");
    s.behave(|b| b.cut_after = Some(70_000));
    s.behave(|b| b.ignore_range = true);
    let path = hub(&s, &cache, false)
        .fetch(&o, |_| {}, &never())
        .expect("download");
    assert_eq!(std::fs::read(&path).expect("read"), s.bytes("arpg_300m.pt"));
}

#[test]
fn a_damaged_download_is_deleted_and_named() {
    let s = server();
    let cache = common::temp_dir("hub-damaged");
    s.behave(|b| b.wrong_etag = true);
    let o = official("arpg-l").expect("name");
    let h = hub(&s, &cache, false);
    let msg = format!("{:#}", h.fetch(&o, |_| {}, &never()).expect_err("damaged"));
    assert!(
        msg.contains("damaged") && msg.contains("SHA-256") && msg.contains("arpg_300m.pt"),
        "{msg}"
    );
    assert_eq!(h.state(&o), State::NotDownloaded, "nothing left behind");
}

#[test]
fn missing_files_and_server_errors() {
    let s = server();
    let cache = common::temp_dir("hub-errors");
    let h = hub(&s, &cache, false);
    let msg = format!(
        "{:#}",
        h.fetch(&official("arpg-xl").expect("name"), |_| {}, &never())
            .expect_err("404")
    );
    assert!(
        msg.contains("hp-l33/ARPG") && msg.contains("arpg_700m.pt") && msg.contains("404"),
        "{msg}"
    );
    s.behave(|b| b.fail_first = 1);
    let path = h.fetch(&TOKENIZER, |_| {}, &never()).expect("retried");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        s.bytes("vq_ds16_c2i.pt")
    );
}

#[test]
fn two_downloads_of_one_file_at_once() {
    let s = server();
    let cache = common::temp_dir("hub-twice");
    s.behave(|b| b.slow_ms = 5);
    let o = official("arpg-l").expect("name");
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (endpoint, cache) = (s.endpoint.clone(), cache.clone());
            std::thread::spawn(move || {
                Hub::new(&endpoint, cache, false)
                    .expect("hub")
                    .fetch(&o, |_| {}, &AtomicBool::new(false))
                    .expect("download")
            })
        })
        .collect();
    for run in runs {
        let path = run.join().expect("thread");
        assert_eq!(std::fs::read(&path).expect("read"), s.bytes("arpg_300m.pt"));
    }
}

#[test]
fn the_cli_honours_hf_endpoint_and_hf_home() {
    let s = server();
    let home = common::temp_dir("hub-cli");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arpg"))
        .args(["fetch", "vq-16", "--quiet"])
        .env("HF_ENDPOINT", &s.endpoint)
        .env("HF_HOME", &home)
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.starts_with(&home), "{}", path.display());
    assert_eq!(
        std::fs::read(&path).expect("read"),
        s.bytes("vq_ds16_c2i.pt")
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arpg"))
        .args(["fetch", "arpg-l", "--offline"])
        .env("HF_HOME", &home)
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("arpg fetch arpg-l"),
        "{err}"
    );
}

#[test]
fn a_partial_download_of_an_older_version_is_dropped() {
    let s = server();
    let cache = common::temp_dir("hub-stale");
    let blobs = cache.join("models--hp-l33--ARPG/blobs");
    std::fs::create_dir_all(&blobs).expect("dir");
    let stale = blobs.join(format!("{}.part", "0".repeat(64)));
    std::fs::write(&stale, vec![7u8; 1000]).expect("stale part");
    std::fs::write(stale.with_extension("part.name"), "arpg_300m.pt").expect("owner");
    let o = official("arpg-l").expect("name");
    let h = hub(&s, &cache, false);
    assert_eq!(h.state(&o), State::Partial(1000));
    let path = h.fetch(&o, |_| {}, &never()).expect("download");
    assert_eq!(std::fs::read(&path).expect("read"), s.bytes("arpg_300m.pt"));
    assert!(!stale.exists(), "the stale partial file is gone");
}
