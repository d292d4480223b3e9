#![allow(dead_code)]
//! A loopback stand-in for the model hub: small files under the hub's URL layout and headers
//! (`x-repo-commit`, `etag`, ranges), with faults on demand. Shared by the hub and app tests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// What the server does, and what it saw.
#[derive(Default)]
pub struct Behaviour {
    /// Requests seen: (path, range start).
    pub log: Vec<(String, Option<u64>)>,
    /// Answer this many requests with 500 first.
    pub fail_first: usize,
    /// Cut the first body transfer after this many bytes.
    pub cut_after: Option<usize>,
    /// Send the whole file with 200 whatever the range.
    pub ignore_range: bool,
    /// Announce this SHA-256 instead of the file's (a damaged mirror).
    pub wrong_etag: bool,
    /// Pause this long per 64 KiB of body (to cancel mid-transfer).
    pub slow_ms: u64,
}

pub struct Server {
    pub endpoint: String,
    files: Arc<HashMap<String, Vec<u8>>>,
    state: Arc<Mutex<Behaviour>>,
}

impl Server {
    /// Serves `files` (`repo/file` → bytes) at `http://127.0.0.1:PORT/REPO/resolve/main/FILE`.
    pub fn start(files: &[(&str, Vec<u8>)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let files: Arc<HashMap<String, Vec<u8>>> = Arc::new(
            files
                .iter()
                .map(|(k, v)| (format!("/{k}"), v.clone()))
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

    pub fn behave(&self, edit: impl FnOnce(&mut Behaviour)) {
        edit(&mut self.state.lock().expect("lock"));
    }

    /// Requests for the file body (not the 1-byte metadata probes), with their range starts.
    pub fn body_requests(&self) -> Vec<Option<u64>> {
        let s = self.state.lock().expect("lock");
        s.log
            .iter()
            .filter(|(_, r)| *r != Some(u64::MAX))
            .map(|(_, r)| *r)
            .collect()
    }

    pub fn requests(&self) -> usize {
        self.state.lock().expect("lock").log.len()
    }

    pub fn bytes(&self, key: &str) -> Vec<u8> {
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
        Some((a, b)) if !ignore || probe => (206, a, b.unwrap_or(total - 1).min(total - 1)),
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

pub fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
