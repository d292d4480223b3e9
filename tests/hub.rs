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

/// `arpg` with the hub's variables cleared, then `env` set (so the developer's own
/// environment never decides where a test writes).
fn arpg_with_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_arpg"));
    cmd.args(args);
    for v in [
        "HF_HOME",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "XDG_CACHE_HOME",
        "HF_HUB_OFFLINE",
        "HF_ENDPOINT",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn")
}

#[test]
fn the_cache_folder_follows_the_hubs_order_of_precedence() {
    use std::ffi::OsString;
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    };
    let dir = |pairs| arpg_app::hub::cache_dir(env(pairs)).expect("a cache folder");
    let all: &[(&str, &str)] = &[
        ("HF_HUB_CACHE", "/a"),
        ("HUGGINGFACE_HUB_CACHE", "/b"),
        ("HF_HOME", "/c"),
        ("XDG_CACHE_HOME", "/d"),
        ("HOME", "/e"),
    ];
    assert_eq!(dir(all), PathBuf::from("/a"));
    assert_eq!(dir(&all[1..]), PathBuf::from("/b"));
    assert_eq!(dir(&all[2..]), PathBuf::from("/c/hub"));
    assert_eq!(dir(&all[3..]), PathBuf::from("/d/huggingface/hub"));
    assert_eq!(dir(&all[4..]), PathBuf::from("/e/.cache/huggingface/hub"));
    assert_eq!(arpg_app::hub::cache_dir(env(&[])), None);
    for on in ["1", "ON", "yes", "True"] {
        let pairs: &'static [(&'static str, &'static str)] =
            Box::leak(vec![("HF_HUB_OFFLINE", on)].into_boxed_slice());
        assert!(arpg_app::hub::offline_from_env(env(pairs)), "{on}");
    }
    for off in ["0", "", "false", "no"] {
        let pairs: &'static [(&'static str, &'static str)] =
            Box::leak(vec![("HF_HUB_OFFLINE", off)].into_boxed_slice());
        assert!(!arpg_app::hub::offline_from_env(env(pairs)), "{off:?}");
    }
}

#[test]
fn the_cli_honours_hf_hub_cache_xdg_cache_home_and_hf_hub_offline() {
    let s = server();
    let endpoint = std::ffi::OsString::from(&s.endpoint);
    // HF_HUB_CACHE wins over HF_HOME.
    let hub_cache = common::temp_dir("hub-env-cache");
    let home = common::temp_dir("hub-env-home");
    let out = arpg_with_env(
        &["fetch", "vq-16", "--quiet"],
        &[
            ("HF_ENDPOINT", &endpoint),
            ("HF_HUB_CACHE", hub_cache.as_os_str()),
            ("HF_HOME", home.as_os_str()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.starts_with(&hub_cache), "{}", path.display());
    assert!(!home.join("hub").exists(), "nothing written under HF_HOME");
    // The legacy name places the cache too.
    let legacy = common::temp_dir("hub-env-legacy");
    let out = arpg_with_env(
        &["fetch", "vq-16", "--quiet"],
        &[
            ("HF_ENDPOINT", &endpoint),
            ("HUGGINGFACE_HUB_CACHE", legacy.as_os_str()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .trim()
        .starts_with(legacy.to_str().expect("utf8")));
    // XDG_CACHE_HOME when no hub variable is set.
    let xdg = common::temp_dir("hub-env-xdg");
    let out = arpg_with_env(
        &["fetch", "vq-16", "--quiet"],
        &[
            ("HF_ENDPOINT", &endpoint),
            ("XDG_CACHE_HOME", xdg.as_os_str()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.starts_with(xdg.join("huggingface/hub")),
        "{}",
        path.display()
    );

    // HF_HUB_OFFLINE=1: the cached file is found, a missing one is an error, and the server
    // sees no request at all.
    let before = s.requests();
    let out = arpg_with_env(
        &["fetch", "vq-16", "--quiet"],
        &[
            ("HF_ENDPOINT", &endpoint),
            ("HF_HUB_CACHE", hub_cache.as_os_str()),
            ("HF_HUB_OFFLINE", std::ffi::OsStr::new("1")),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = arpg_with_env(
        &["fetch", "arpg-l", "--quiet"],
        &[
            ("HF_ENDPOINT", &endpoint),
            ("HF_HUB_CACHE", hub_cache.as_os_str()),
            ("HF_HUB_OFFLINE", std::ffi::OsStr::new("1")),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    assert_eq!(s.requests(), before, "HF_HUB_OFFLINE=1 made a request");
}
