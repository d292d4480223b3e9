//! The official checkpoints from the model hub: download with progress, cancel and resume,
//! verification, and the hub's own cache layout and environment (see [`cache_dir`]:
//! `HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME`, ...), so files other tools downloaded are found
//! and reused. `HF_ENDPOINT` selects the server; `HF_HUB_OFFLINE=1` makes no request at all.
//!
//! The hub's client crate (`hf-hub`, synchronous API, no async runtime) resolves a file (its
//! commit, ETag and size) and owns the cache layout; the transfer itself is a ranged HTTP GET
//! (`ureq`) so that it can be cancelled between chunks and resumed from the partial file
//! (`blobs/<etag>.part`), which the client's own download cannot. A downloaded file is
//! verified before it is used: its size against what the server announced, and its SHA-256
//! against the ETag when the ETag is a SHA-256 digest (the hub's large files); a mismatch deletes
//! the file and says so.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::Cache;
use sha2::{Digest, Sha256};

/// An official checkpoint on the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Official {
    /// The name `arpg fetch` takes.
    pub name: &'static str,
    pub repo: &'static str,
    pub file: &'static str,
    /// What it is, for menus and messages.
    pub what: &'static str,
}

/// The official ARPG checkpoints and their tokenizer.
pub const OFFICIAL: [Official; 4] = [
    Official {
        name: "arpg-l",
        repo: "hp-l33/ARPG",
        file: "arpg_300m.pt",
        what: "ARPG-L (320M)",
    },
    Official {
        name: "arpg-xl",
        repo: "hp-l33/ARPG",
        file: "arpg_700m.pt",
        what: "ARPG-XL (719M)",
    },
    Official {
        name: "arpg-xxl",
        repo: "hp-l33/ARPG",
        file: "arpg_1b.pt",
        what: "ARPG-XXL (1.3B)",
    },
    Official {
        name: "vq-16",
        repo: "FoundationVision/LlamaGen",
        file: "vq_ds16_c2i.pt",
        what: "VQ-16 tokenizer",
    },
];

/// The tokenizer every official ARPG checkpoint uses.
pub const TOKENIZER: Official = OFFICIAL[3];

/// An official checkpoint by name (`arpg-l`, `arpg-xl`, `arpg-xxl`, `vq-16`).
pub fn official(name: &str) -> Result<Official> {
    OFFICIAL
        .into_iter()
        .find(|o| o.name == name)
        .with_context(|| {
            let names: Vec<&str> = OFFICIAL.iter().map(|o| o.name).collect();
            format!(
                "unknown model `{name}` (expected one of {})",
                names.join(", ")
            )
        })
}

/// Where a download stands.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    NotDownloaded,
    /// A partial download of this many bytes waits to be resumed.
    Partial(u64),
    Ready(PathBuf),
}

/// Bytes of a download so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    /// Bytes per second since this transfer started.
    pub rate: f64,
}

impl Progress {
    /// Seconds left at the current rate.
    pub fn eta(&self) -> Option<f64> {
        (self.rate > 0.0).then(|| (self.total.saturating_sub(self.done)) as f64 / self.rate)
    }
}

/// A download that stopped because it was cancelled (the partial file is kept).
#[derive(Debug)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("download cancelled; the partial file is kept and the next download resumes it")
    }
}

impl std::error::Error for Cancelled {}

/// The hub and its cache, as the environment configures them.
pub struct Hub {
    api: Api,
    /// The transfers' HTTP client (with timeouts).
    agent: ureq::Agent,
    cache: Cache,
    endpoint: String,
    offline: bool,
    /// Tries per request (server errors and cut connections are retried).
    tries: usize,
}

const CHUNK: usize = 1 << 16;

/// The hub's cache folder from the environment (`var` reads a variable, empty = unset), in the
/// order of precedence the hub's own clients document: `HF_HUB_CACHE`, then the legacy
/// `HUGGINGFACE_HUB_CACHE`, then `$HF_HOME/hub`, then `$XDG_CACHE_HOME/huggingface/hub`, then
/// `~/.cache/huggingface/hub`.
pub fn cache_dir(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    if let Some(dir) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return Some(PathBuf::from(dir));
    }
    let home = var("HF_HOME").map(PathBuf::from).or_else(|| {
        var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("huggingface"))
    })?;
    Some(home.join("hub"))
}

/// Whether `HF_HUB_OFFLINE` asks for no network access: `1`, `ON`, `YES` or `TRUE` in any case,
/// as the hub's clients read it.
pub fn offline_from_env(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    var("HF_HUB_OFFLINE")
        .and_then(|v| v.into_string().ok())
        .is_some_and(|v| {
            ["1", "on", "yes", "true"].contains(&v.trim().to_ascii_lowercase().as_str())
        })
}

impl Hub {
    /// The hub's environment is honoured as its own clients do: `HF_ENDPOINT` (server),
    /// `HF_HUB_OFFLINE` (no request at all) and the cache folder (see [`cache_dir`]);
    /// `offline`: resolve from the cache only, whatever the environment says.
    pub fn from_env(offline: bool) -> Result<Self> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let endpoint = var("HF_ENDPOINT")
            .and_then(|e| e.into_string().ok())
            .unwrap_or_else(|| "https://huggingface.co".into());
        let cache = cache_dir(var).context(
            "no cache directory: set HF_HUB_CACHE or HF_HOME (or HOME, or XDG_CACHE_HOME)",
        )?;
        Self::new(&endpoint, cache, offline || offline_from_env(var))
    }

    /// A hub at `endpoint` with its cache in `cache_dir` (the hub's layout).
    pub fn new(endpoint: &str, cache_dir: PathBuf, offline: bool) -> Result<Self> {
        let cache = Cache::new(cache_dir);
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let api = ApiBuilder::from_cache(cache.clone())
            .with_endpoint(endpoint.clone())
            .with_progress(false)
            .build()
            .context("starting the hub client")?;
        // A stalled connection fails (and is retried, resuming) instead of hanging.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            api,
            agent,
            cache,
            endpoint,
            offline,
            tries: 4,
        })
    }

    /// The cache directory (for messages).
    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    /// The file in the cache, if it is there (no request).
    pub fn cached(&self, o: &Official) -> Option<PathBuf> {
        let repo = self.cache.model(o.repo.to_string());
        repo.get(o.file).or_else(|| {
            // Downloaded at another commit than `refs/main` now names: still the same file.
            let snapshots = repo.pointer_path("x").with_file_name("");
            std::fs::read_dir(snapshots)
                .ok()?
                .flatten()
                .map(|e| e.path().join(o.file))
                .find(|p| p.exists())
        })
    }

    /// Where a download stands, from the cache alone (no request).
    pub fn state(&self, o: &Official) -> State {
        if let Some(p) = self.cached(o) {
            return State::Ready(p);
        }
        let blobs = self
            .cache
            .model(o.repo.to_string())
            .blob_path("x")
            .with_file_name("");
        // A partial download is `blobs/<etag>.part`; its ETag is only known to the server, so
        // any part file of this repository that is not another official file's counts.
        let partial = std::fs::read_dir(&blobs)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
            .filter(|e| part_owner(&e.path()).as_deref() == Some(o.file))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .max();
        match partial {
            Some(n) => State::Partial(n),
            None => State::NotDownloaded,
        }
    }

    /// The file, from the cache or downloaded into it. `progress` sees every chunk; `cancel` is
    /// checked between chunks. Errors name the repository and file; a cancelled download
    /// returns [`Cancelled`] and keeps its partial file.
    pub fn fetch(
        &self,
        o: &Official,
        mut progress: impl FnMut(Progress),
        cancel: &AtomicBool,
    ) -> Result<PathBuf> {
        if let Some(p) = self.cached(o) {
            return Ok(p);
        }
        let cache_hint = || {
            format!(
                "{}/{} is not in the cache ({})",
                o.repo,
                o.file,
                self.cache.path().display()
            )
        };
        if self.offline {
            bail!(
                "{}: offline (no request is made with --offline or HF_HUB_OFFLINE set); run \
                 `arpg fetch {}` with a network connection first",
                cache_hint(),
                o.name
            );
        }
        let url = format!("{}/{}/resolve/main/{}", self.endpoint, o.repo, o.file);
        let meta = self.resolve(o, &url).map_err(|e| match unreachable(&e) {
            true => anyhow::anyhow!(
                "{}, and the hub ({}) cannot be reached: {e:#}",
                cache_hint(),
                self.endpoint
            ),
            false => e,
        })?;
        let repo = self.cache.model(o.repo.to_string());
        let blob = repo.blob_path(meta.etag());
        let dir = blob.parent().context("cache path")?.to_path_buf();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the cache {}", dir.display()))?;
        // One download per file at a time: the second waits, then finds the blob.
        let lock = std::fs::File::create(blob.with_extension("lock"))
            .with_context(|| format!("cannot write in the cache {}", dir.display()))?;
        // Wait for another download of this file, cancellable; a filesystem without locks
        // (some network homes) goes unlocked.
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if cancel.load(Ordering::Relaxed) {
                        return Err(Cancelled.into());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(std::fs::TryLockError::Error(_)) => break,
            }
        }
        if !blob.exists() {
            let part = blob.with_extension("part");
            // A partial download of an older version of this file cannot be resumed: drop it.
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let other = entry.path();
                let stale = other.extension().is_some_and(|x| x == "part")
                    && other != part
                    && part_owner(&other).as_deref() == Some(o.file);
                if stale {
                    std::fs::remove_file(other.with_extension("part.name")).ok();
                    std::fs::remove_file(&other).ok();
                }
            }
            std::fs::write(blob.with_extension("part.name"), o.file).ok();
            self.transfer(&url, &part, meta.size() as u64, &mut progress, cancel)?;
            if let Err(e) = verify(&part, meta.size() as u64, meta.etag()) {
                std::fs::remove_file(&part).ok();
                std::fs::remove_file(blob.with_extension("part.name")).ok();
                bail!(
                    "{}/{}: the download is damaged and was deleted ({e}); run the download \
                     again",
                    o.repo,
                    o.file
                );
            }
            std::fs::rename(&part, &blob)?;
            std::fs::remove_file(blob.with_extension("part.name")).ok();
        }
        let mut pointer = repo.pointer_path(meta.commit_hash());
        std::fs::create_dir_all(&pointer)?;
        pointer.push(o.file);
        if !pointer.exists() {
            link(&blob, &pointer)?;
        }
        repo.create_ref(meta.commit_hash())?;
        drop(lock);
        Ok(pointer)
    }

    /// The file's commit, ETag and size, with retries on server errors.
    fn resolve(&self, o: &Official, url: &str) -> Result<hf_hub::api::sync::Metadata> {
        let mut last = None;
        for i in 0..self.tries {
            match self.api.metadata(url) {
                Ok(m) => return Ok(m),
                Err(e) => {
                    let status = match &e {
                        ApiError::RequestError(r) => match r.as_ref() {
                            ureq::Error::StatusCode(s) => Some(*s),
                            _ => None,
                        },
                        _ => None,
                    };
                    if status == Some(404) {
                        bail!(
                            "{} has no file {} (404 from {}): check the repository and file name",
                            o.repo,
                            o.file,
                            self.endpoint
                        );
                    }
                    if let Some(s @ (401 | 403)) = status {
                        bail!(
                            "{}/{}: access denied ({s} from {}); a gated repository needs a token \
                             (HF_TOKEN), or a proxy refused it",
                            o.repo,
                            o.file,
                            self.endpoint
                        );
                    }
                    // Server errors and cut connections are retried; other answers are final.
                    let retry =
                        status.is_none_or(|s| s >= 500) && matches!(e, ApiError::RequestError(_));
                    last = Some(anyhow::Error::new(e));
                    if !retry {
                        break;
                    }
                    std::thread::sleep(backoff(i));
                }
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow::anyhow!("no answer"))
            .context(format!(
                "resolving {}/{} on {}",
                o.repo, o.file, self.endpoint
            )))
    }

    /// Appends the rest of `url` to `part` (ranged GETs from its length; a server that ignores
    /// the range starts over), retrying cut connections and server errors.
    fn transfer(
        &self,
        url: &str,
        part: &Path,
        size: u64,
        progress: &mut impl FnMut(Progress),
        cancel: &AtomicBool,
    ) -> Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .with_context(|| format!("cannot write {}", part.display()))?;
        let start_bytes = file.metadata()?.len().min(size);
        let started = Instant::now();
        let mut failures = 0;
        loop {
            let have = file.metadata()?.len();
            if have >= size {
                return Ok(());
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(Cancelled.into());
            }
            let response = self
                .agent
                .get(url)
                .header("Range", &format!("bytes={have}-"))
                .call();
            let result = match response {
                Ok(r)
                    if r.status().is_client_error()
                        && !matches!(r.status().as_u16(), 408 | 429) =>
                {
                    bail!(
                        "downloading {url}: the server answered {} (the partial file is kept)",
                        r.status()
                    );
                }
                Ok(r) if !r.status().is_success() => {
                    Err(anyhow::anyhow!("the server answered {}", r.status()))
                }
                Ok(r) => {
                    let ranged = r.status().as_u16() == 206;
                    if !ranged && have > 0 {
                        // The server ignored the range: start over.
                        file.set_len(0)?;
                        file.seek(std::io::SeekFrom::Start(0))?;
                    }
                    let mut body = r.into_body().into_reader();
                    copy_chunks(&mut body, &mut file, |done| {
                        let rate = (done.saturating_sub(start_bytes)) as f64
                            / started.elapsed().as_secs_f64().max(1e-3);
                        progress(Progress {
                            done,
                            total: size,
                            rate,
                        });
                        !cancel.load(Ordering::Relaxed)
                    })
                }
                Err(e) => Err(anyhow::Error::new(e)),
            };
            match result {
                Ok(true) => {}
                Ok(false) => return Err(Cancelled.into()),
                Err(e) => {
                    // A connection that made progress before it broke starts the count again.
                    if file.metadata()?.len() > have {
                        failures = 0;
                    }
                    failures += 1;
                    if failures >= self.tries {
                        return Err(e.context(format!(
                            "downloading {url} (the partial file is kept; the next download \
                             resumes it)"
                        )));
                    }
                    std::thread::sleep(backoff(failures - 1));
                }
            }
        }
    }
}

/// Copies `body` to `file` in chunks; `on_chunk(bytes in the file)` returns whether to go on.
/// `Ok(false)`: stopped by `on_chunk`.
fn copy_chunks(
    body: &mut impl Read,
    file: &mut std::fs::File,
    mut on_chunk: impl FnMut(u64) -> bool,
) -> Result<bool> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        file.write_all(&buf[..n])?;
        if !on_chunk(file.metadata()?.len()) {
            file.flush()?;
            return Ok(false);
        }
    }
}

fn backoff(i: usize) -> Duration {
    Duration::from_millis((200u64 << i.min(5)).min(5_000))
}

/// Whether an error means the hub could not be reached at all (no network, DNS, refused,
/// timed out).
fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let ureq_error = cause.downcast_ref::<ureq::Error>().or_else(|| {
            match cause.downcast_ref::<ApiError>() {
                Some(ApiError::RequestError(r)) => Some(r.as_ref()),
                _ => None,
            }
        });
        matches!(
            ureq_error,
            Some(
                ureq::Error::HostNotFound
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::Timeout(_)
                    | ureq::Error::Io(_)
            )
        )
    })
}

/// The official file a partial download belongs to (written beside it when it started).
fn part_owner(part: &Path) -> Option<String> {
    std::fs::read_to_string(part.with_extension("part.name")).ok()
}

/// Checks a downloaded file: its size, and its SHA-256 when the ETag is one.
fn verify(path: &Path, size: u64, etag: &str) -> Result<()> {
    let len = std::fs::metadata(path)?.len();
    if len != size {
        bail!("{len} bytes where the server announced {size}");
    }
    let etag = etag.trim_matches('"');
    if etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut hasher = Sha256::new();
        let mut file = std::fs::File::open(path)?;
        std::io::copy(&mut file, &mut hasher)?;
        let digest: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if !digest.eq_ignore_ascii_case(etag) {
            bail!("SHA-256 {digest} where the hub announced {etag}");
        }
    }
    Ok(())
}

/// The snapshot entry of a blob, as the hub's tools lay it out: a relative symlink where the
/// platform has them, a copy otherwise.
fn link(blob: &Path, pointer: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        // snapshots/<commit>/<file> -> ../../blobs/<etag>
        let name = blob.file_name().context("blob name")?;
        let target = Path::new("../../blobs").join(name);
        std::os::unix::fs::symlink(&target, pointer)
            .or_else(|_| std::fs::copy(blob, pointer).map(|_| ()))
            .with_context(|| format!("cannot link {}", pointer.display()))?;
    }
    #[cfg(not(unix))]
    {
        std::fs::copy(blob, pointer)
            .with_context(|| format!("cannot copy {}", pointer.display()))?;
    }
    Ok(())
}

/// A spec whose `gpt` / `vq` name official checkpoints (`arpg-l`, `vq-16`, ...) rather than
/// files, with those names resolved from the hub's cache (no network). An official ARPG
/// checkpoint without a tokenizer gets the official one.
pub fn resolve_names(mut spec: arpg_core::pair::ModelSpec) -> Result<arpg_core::pair::ModelSpec> {
    let name_of = |p: &Option<PathBuf>| {
        p.as_ref()
            .filter(|p| !p.exists())
            .and_then(|p| p.to_str())
            .and_then(|n| OFFICIAL.iter().find(|o| o.name == n).copied())
    };
    let (gpt, vq) = (name_of(&spec.gpt), name_of(&spec.vq));
    if gpt.is_none() && vq.is_none() {
        return Ok(spec);
    }
    let hub = Hub::from_env(true)?;
    let never = AtomicBool::new(false);
    if let Some(o) = gpt {
        spec.gpt = Some(hub.fetch(&o, |_| {}, &never)?);
        if spec.vq.is_none() {
            spec.vq = Some(hub.fetch(&TOKENIZER, |_| {}, &never)?);
        }
    }
    if let Some(o) = vq {
        spec.vq = Some(hub.fetch(&o, |_| {}, &never)?);
    }
    Ok(spec)
}

/// `arpg fetch`: the named checkpoints (or all), with a progress bar each.
pub fn fetch_cli(names: &[String], all: bool, offline: bool, quiet: bool) -> Result<Vec<PathBuf>> {
    let chosen: Vec<Official> = if all {
        OFFICIAL.to_vec()
    } else if names.is_empty() {
        bail!("name a model (arpg-l, arpg-xl, arpg-xxl, vq-16) or give --all");
    } else {
        names.iter().map(|n| official(n)).collect::<Result<_>>()?
    };
    let hub = Hub::from_env(offline)?;
    let cancel = AtomicBool::new(false);
    let mut paths = Vec::new();
    for o in chosen {
        let bar = if quiet {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(0)
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} \
                 ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(o.file);
        let path = hub.fetch(
            &o,
            |p| {
                bar.set_length(p.total);
                bar.set_position(p.done);
            },
            &cancel,
        )?;
        bar.finish_and_clear();
        paths.push(path);
    }
    Ok(paths)
}
