//! Downloads from the model hub against a loopback server started by each test, serving small
//! files under the hub's URL layout and headers (`x-repo-commit`, `etag`, ranges). No network.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arpg_app::hub::{official, Hub, State, TOKENIZER};
use sha2::{Digest, Sha256};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// What the server does, and what it saw.
#[derive(Default)]
struct Behaviour {
    /// Requests seen: (path, range start).
    log: Vec<(String, Option<u64>)>,
    /// Answer this many requests with 500 first.
    fail_first: usize,
    /// Cut the first body transfer after this many bytes.
    cut_after: Option<usize>,
    /// Send the whole file with 200 whatever the range.
    ignore_range: bool,
    /// Announce this SHA-256 instead of the file's (a damaged mirror).
    wrong_etag: bool,
    /// Pause this long per 64 KiB of body (to cancel mid-transfer).
    slow_ms: u64,
}

struct Server {
    endpoint: String,
    files: Arc<HashMap<String, Vec<u8>>>,
    state: Arc<Mutex<Behaviour>>,
}

impl Server {
    /// Serves `files` (`repo/file` → bytes) at `http://127.0.0.1:PORT/REPO/resolve/main/FILE`.
    fn start(files: &[(&str, Vec<u8>)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let files: Arc<HashMap<String, Vec<u8>>> = Arc::new(
            files
                .iter()
                .map(|(k, v)| (format!("/{}", k.replacen('/', "/", 1)), v.clone()))
                .collect(),
        );
        let state = Arc::new(Mutex::new(Behaviour::default()));
        let (f, s) = (files.clone(), state.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (f, s) = (f.clone(), s.clone());
                std::thread::spawn(move || serve(stream, &f, &s));
            }
        });
        Self {
            endpoint,
            files,
            state,
        }
    }

    fn behave(&self, edit: impl FnOnce(&mut Behaviour)) {
        edit(&mut self.state.lock().expect("lock"));
    }

    /// Requests for the file body (not the 1-byte metadata probes), with their range starts.
    fn body_requests(&self) -> Vec<Option<u64>> {
        let s = self.state.lock().expect("lock");
        s.log
            .iter()
            .filter(|(_, r)| *r != Some(u64::MAX))
            .map(|(_, r)| *r)
            .collect()
    }

    fn requests(&self) -> usize {
        self.state.lock().expect("lock").log.len()
    }

    fn bytes(&self, key: &str) -> Vec<u8> {
        self.files
            .iter()
            .find(|(k, _)| k.ends_with(key))
            .map(|(_, v)| v.clone())
            .expect("served file")
    }
}

fn serve(stream: TcpStream, files: &HashMap<String, Vec<u8>>, state: &Mutex<Behaviour>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        let lower = h.to_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            let (a, b) = v.trim().split_once('-').unwrap_or(("0", ""));
            range = Some((a.parse::<u64>().unwrap_or(0), b.parse::<u64>().ok()));
        }
    }
    let mut out = stream;
    // `/REPO/resolve/main/FILE` → `/REPO/FILE`.
    let key = path.replacen("/resolve/main/", "/", 1);
    let probe = matches!(range, Some((0, Some(0))));
    let (fail, cut, ignore, wrong, slow) = {
        let mut s = state.lock().expect("lock");
        s.log.push((
            path.clone(),
            if probe {
                Some(u64::MAX)
            } else {
                range.map(|r| r.0)
            },
        ));
        let fail = s.fail_first > 0;
        if fail {
            s.fail_first -= 1;
        }
        let cut = if probe { None } else { s.cut_after.take() };
        (fail, cut, s.ignore_range, s.wrong_etag, s.slow_ms)
    };
    if fail {
        let _ = out.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let Some(body) = files.get(&key) else {
        let _ = out
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let digest: String = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let etag = if wrong { "f".repeat(64) } else { digest };
    let total = body.len() as u64;
    let (status, start, end) = match range {
        Some((a, b)) if !(ignore && !probe) => (206, a, b.unwrap_or(total - 1).min(total - 1)),
        _ => (200, 0, total - 1),
    };
    let slice = &body[start as usize..=end as usize];
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nx-repo-commit: {COMMIT}\r\nx-linked-etag: \"{etag}\"\r\netag: \"{etag}\"\r\nConnection: close\r\n",
        if status == 206 { "Partial Content" } else { "OK" },
        slice.len()
    );
    if status == 206 {
        head += &format!("Content-Range: bytes {start}-{end}/{total}\r\n");
    }
    head += "\r\n";
    let _ = out.write_all(head.as_bytes());
    let send = cut.map_or(slice.len(), |c| c.min(slice.len()));
    for chunk in slice[..send].chunks(1 << 16) {
        if out.write_all(chunk).is_err() {
            return;
        }
        if slow > 0 {
            std::thread::sleep(std::time::Duration::from_millis(slow));
        }
    }
    let _ = out.flush();
    // A cut connection: close without the rest of the body.
}

fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn server() -> Server {
    Server::start(&[
        ("hp-l33/ARPG/arpg_300m.pt", payload(300_000, 1)),
        (
            "FoundationVision/LlamaGen/vq_ds16_c2i.pt",
            payload(200_000, 2),
        ),
    ])
}

fn hub(s: &Server, cache: &PathBuf, offline: bool) -> Hub {
    Hub::new(&s.endpoint, cache.clone(), offline).expect("hub")
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
    assert!(n >= 65_536 && n < 300_000, "{n}");
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
