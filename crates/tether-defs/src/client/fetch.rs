//! Fetching from an update server through the agent's transport: small
//! metadata files for `tough`, and resumable downloads of signed targets.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use serde::{Deserialize, Serialize};
use tether_transport::{Connection, Phase, Transport, TransportError};
use tether_wire::Clock;
use tokio::sync::Mutex;
use url::Url;

use super::error::{UpdateError, disk_or_install};

/// Metadata files are small; anything bigger is refused before `tough`
/// even looks at it (tough applies its own, tighter, per-role limits).
const MAX_METADATA_BYTES: usize = 16 * 1024 * 1024;

/// Why a metadata fetch failed, carried inside tough's transport error so
/// the updater can name the real cause.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("{0}")]
    Transport(#[from] TransportError),
    #[error("HTTP {status}")]
    Status {
        status: u16,
        retry_after: Option<std::time::Duration>,
    },
}

/// One kept-alive connection, shared by the metadata fetches and the
/// download of one update: an update costs the server one TLS handshake,
/// not one per file.
#[derive(Clone, Default)]
pub(crate) struct ConnCache(Arc<Mutex<Option<(String, Connection)>>>);

impl ConnCache {
    /// A connection to `url`'s origin: the cached one when it is still
    /// open, else a new one. `fresh` forces a new one. The flag says
    /// whether it was reused.
    async fn take(
        &self,
        transport: &Transport,
        url: &Url,
        fresh: bool,
    ) -> Result<(Connection, bool), TransportError> {
        let origin = origin(url);
        let cached = self.0.lock().await.take();
        if !fresh
            && let Some((o, c)) = cached
            && o == origin
            && c.is_open()
        {
            return Ok((c, true));
        }
        Ok((transport.connect(url).await?, false))
    }

    async fn put(&self, url: &Url, conn: Connection) {
        if conn.is_open() {
            *self.0.lock().await = Some((origin(url), conn));
        }
    }
}

fn origin(url: &Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// `tough`'s transport over ours: the same DNS, proxy, TLS and HTTP path
/// the agent uses for check-in.
#[derive(Clone)]
pub(crate) struct ToughTransport {
    pub(crate) transport: Arc<Transport>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) conns: ConnCache,
}

impl std::fmt::Debug for ToughTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ToughTransport")
    }
}

#[async_trait::async_trait]
impl tough::Transport for ToughTransport {
    async fn fetch(&self, url: Url) -> Result<tough::TransportStream, tough::TransportError> {
        use tough::{TransportError as TE, TransportErrorKind as K};
        let req = || {
            http::Request::get(url.as_str())
                .body(Bytes::new())
                .map_err(|e| TE::new_with_cause(K::Other, url.as_str(), e))
        };
        let fail = |e| TE::new_with_cause(K::Other, url.as_str(), FetchError::Transport(e));
        let (mut conn, reused) = self
            .conns
            .take(&self.transport, &url, false)
            .await
            .map_err(fail)?;
        let resp = match conn.send(req()?).await {
            Ok(r) => r,
            // The server may have closed an idle kept-alive connection just
            // as we reused it: one retry on a fresh connection.
            Err(_) if reused => {
                conn = self
                    .conns
                    .take(&self.transport, &url, true)
                    .await
                    .map_err(fail)?
                    .0;
                conn.send(req()?).await.map_err(fail)?
            }
            Err(e) => return Err(fail(e)),
        };
        self.conns.put(&url, conn).await;
        match resp.status {
            200 => {
                if resp.body.len() > MAX_METADATA_BYTES {
                    return Err(TE::new_with_cause(
                        K::Other,
                        url.as_str(),
                        FetchError::Transport(TransportError::BodyTooLarge {
                            limit: MAX_METADATA_BYTES,
                        }),
                    ));
                }
                let body = resp.body;
                Ok(Box::pin(futures_util::stream::once(
                    async move { Ok(body) },
                )))
            }
            // A missing N+1.root.json is how TUF learns it has the newest root.
            404 | 403 => Err(TE::new(K::FileNotFound, url.as_str())),
            status => Err(TE::new_with_cause(
                K::Other,
                url.as_str(),
                FetchError::Status {
                    status,
                    retry_after: resp.retry_after(self.clock.now()),
                },
            )),
        }
    }
}

/// Finds our own error inside an error chain.
pub(crate) fn find_fetch_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a FetchError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(f) = err.downcast_ref::<FetchError>() {
            return Some(f);
        }
        cur = err.source();
    }
    None
}

/// What identifies a partial download, so a resume only continues the
/// same object (`If-Range`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct PartMeta {
    validator: Option<String>,
}

/// A target to download: where, and what the signed metadata promises.
pub(crate) struct Wanted<'a> {
    pub(crate) name: &'a str,
    pub(crate) rel_path: String,
    pub(crate) sha256: &'a str,
    pub(crate) length: u64,
}

/// Downloads `want` from `server` into `partial_dir/<sha256>.part`,
/// resuming a previous partial with `Range` + `If-Range`. Returns the path
/// of the complete file, whose length and hash match the signed metadata.
pub(crate) async fn download(
    transport: &Transport,
    conns: &ConnCache,
    clock: &dyn Clock,
    server: &Url,
    want: &Wanted<'_>,
    partial_dir: &Path,
) -> Result<PathBuf, UpdateError> {
    let server_s = server.to_string();
    let part = partial_dir.join(format!("{}.part", want.sha256));
    let meta_path = partial_dir.join(format!("{}.part.json", want.sha256));
    std::fs::create_dir_all(partial_dir)
        .map_err(|e| disk_or_install("creating", partial_dir.to_path_buf(), &e))?;
    let url = server
        .join(&want.rel_path)
        .map_err(|e| UpdateError::BadUrl {
            server: server_s.clone(),
            path: want.rel_path.clone(),
            detail: e.to_string(),
        })?;
    // A restart from zero is allowed once (416, or a 206 that does not
    // continue where we are).
    for _ in 0..2 {
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if have > want.length {
            discard(&part, &meta_path);
            continue;
        }
        if have == want.length && have > 0 {
            match verify_off_runtime(&part, want, &server_s).await {
                Ok(()) => return Ok(part),
                Err(_) => {
                    discard(&part, &meta_path);
                    continue;
                }
            }
        }
        let meta: PartMeta = std::fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut req = http::Request::get(url.as_str());
        if have > 0 {
            req = req.header(RANGE, format!("bytes={have}-"));
            if let Some(v) = &meta.validator {
                req = req.header(IF_RANGE, v.as_str());
            }
        }
        let req = req.body(Bytes::new()).map_err(|e| UpdateError::BadUrl {
            server: server_s.clone(),
            path: want.rel_path.clone(),
            detail: e.to_string(),
        })?;
        let to_err = |source| UpdateError::Transport {
            server: server_s.clone(),
            source: Box::new(source),
        };
        let (mut conn, reused) = conns.take(transport, &url, false).await.map_err(to_err)?;
        let sent = match conn.send_streaming(req.clone()).await {
            // A kept-alive connection closed under us: one fresh retry.
            Err(_) if reused => {
                conn = conns.take(transport, &url, true).await.map_err(to_err)?.0;
                conn.send_streaming(req).await
            }
            other => other,
        };
        let via_proxy = conn.via_proxy.clone();
        let mut resp =
            sent.map_err(|e| body_error(&server_s, via_proxy.as_deref(), want, have, e))?;
        let start = match resp.status {
            200 => 0,
            206 => match content_range_start(&resp.headers) {
                Some(s) if s == have => have,
                // Not a continuation of what we hold: start over.
                _ => {
                    discard(&part, &meta_path);
                    continue;
                }
            },
            416 => {
                discard(&part, &meta_path);
                continue;
            }
            429 | 503 => {
                if let Some(wait) = resp.retry_after(clock.now()) {
                    return Err(UpdateError::CoolingDown {
                        server: server_s,
                        status: Some(resp.status),
                        wait,
                    });
                }
                return Err(UpdateError::Status {
                    server: server_s,
                    path: want.rel_path.clone(),
                    status: resp.status,
                });
            }
            status => {
                return Err(UpdateError::Status {
                    server: server_s,
                    path: want.rel_path.clone(),
                    status,
                });
            }
        };
        let validator = resp
            .headers
            .get(ETAG)
            .or_else(|| resp.headers.get(LAST_MODIFIED))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let meta_bytes = serde_json::to_vec(&PartMeta { validator }).unwrap_or_default();
        crate::fsutil::write_atomic(&meta_path, &meta_bytes)
            .map_err(|(what, path, e)| disk_or_install(what, path, &e))?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&part)
            .map_err(|e| disk_or_install("opening", part.clone(), &e))?;
        file.set_len(start)
            .and_then(|()| file.seek(SeekFrom::Start(start)).map(|_| ()))
            .map_err(|e| disk_or_install("truncating", part.clone(), &e))?;
        let mut got = start;
        loop {
            let chunk = match resp.body.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    let _ = file.sync_data();
                    return Err(body_error(&server_s, via_proxy.as_deref(), want, got, e));
                }
            };
            if got + chunk.len() as u64 > want.length {
                drop(file);
                discard(&part, &meta_path);
                return Err(UpdateError::TooLarge {
                    server: server_s,
                    name: want.name.to_owned(),
                    limit: want.length,
                });
            }
            if let Err(e) = file.write_all(&chunk) {
                drop(file);
                // A full disk: give the space back; the installed version stays.
                discard(&part, &meta_path);
                return Err(disk_or_install("writing", part.clone(), &e));
            }
            got += chunk.len() as u64;
        }
        file.sync_all()
            .map_err(|e| disk_or_install("syncing", part.clone(), &e))?;
        drop(file);
        drop(resp);
        conns.put(&url, conn).await;
        if got < want.length {
            return Err(match via_proxy {
                Some(proxy) => UpdateError::ProxyDownload {
                    server: server_s,
                    proxy,
                    detail: format!(
                        "the download of {} ended after {got} of {} bytes; the next attempt resumes",
                        want.name, want.length
                    ),
                },
                None => UpdateError::Interrupted {
                    server: server_s,
                    name: want.name.to_owned(),
                    got,
                    of: want.length,
                    detail: "the server closed the response early".into(),
                },
            });
        }
        if let Err(e) = verify_off_runtime(&part, want, &server_s).await {
            discard(&part, &meta_path);
            return Err(e);
        }
        let _ = std::fs::remove_file(&meta_path);
        return Ok(part);
    }
    Err(UpdateError::Status {
        server: server_s,
        path: want.rel_path.clone(),
        status: 416,
    })
}

/// Copies a target from an unpacked bundle, with the same checks as a download.
pub(crate) async fn from_dir(dir: &Path, want: &Wanted<'_>) -> Result<PathBuf, UpdateError> {
    let path = dir.join(&want.rel_path);
    let len =
        std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| UpdateError::BundleInvalid {
                path: path.clone(),
                detail: format!("the bundle lacks {}: {e}", want.rel_path),
            })?;
    if len > want.length {
        return Err(UpdateError::TooLarge {
            server: dir.display().to_string(),
            name: want.name.to_owned(),
            limit: want.length,
        });
    }
    verify_off_runtime(&path, want, &dir.display().to_string()).await?;
    Ok(path)
}

/// [`verify`] on the blocking pool: hashing 100 MB takes the better part of
/// a second, which the agent's one runtime thread owes to its check-ins.
async fn verify_off_runtime(
    path: &Path,
    want: &Wanted<'_>,
    server: &str,
) -> Result<(), UpdateError> {
    let (path, server) = (path.to_path_buf(), server.to_owned());
    let (name, sha256, length) = (want.name.to_owned(), want.sha256.to_owned(), want.length);
    super::off_runtime(move || {
        let want = Wanted {
            name: &name,
            rel_path: String::new(),
            sha256: &sha256,
            length,
        };
        verify(&path, &want, &server)
    })
    .await
}

fn verify(path: &Path, want: &Wanted<'_>, server: &str) -> Result<(), UpdateError> {
    let (actual, len) = crate::delta::sha256_file(path)
        .map_err(|e| disk_or_install("reading", path.to_path_buf(), &e))?;
    if len != want.length || actual != want.sha256 {
        return Err(UpdateError::HashMismatch {
            server: server.to_owned(),
            name: want.name.to_owned(),
            expected: want.sha256.to_owned(),
            actual: if len != want.length {
                format!("{actual} over {len} bytes instead of {}", want.length)
            } else {
                actual
            },
        });
    }
    Ok(())
}

fn discard(part: &Path, meta: &Path) {
    let _ = std::fs::remove_file(part);
    let _ = std::fs::remove_file(meta);
}

fn body_error(
    server: &str,
    via_proxy: Option<&str>,
    want: &Wanted<'_>,
    got: u64,
    e: TransportError,
) -> UpdateError {
    match (via_proxy, e.phase()) {
        (Some(proxy), Phase::Http) => UpdateError::ProxyDownload {
            server: server.to_owned(),
            proxy: proxy.to_owned(),
            detail: format!(
                "the download of {} failed after {got} of {} bytes: {e}",
                want.name, want.length
            ),
        },
        (None, Phase::Http) if got > 0 => UpdateError::Interrupted {
            server: server.to_owned(),
            name: want.name.to_owned(),
            got,
            of: want.length,
            detail: e.to_string(),
        },
        _ => UpdateError::Transport {
            server: server.to_owned(),
            source: Box::new(e),
        },
    }
}

fn content_range_start(headers: &http::HeaderMap) -> Option<u64> {
    // "bytes 100-199/200"
    let v = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, _total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    start.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_parsed_strictly() {
        let mut h = http::HeaderMap::new();
        assert_eq!(content_range_start(&h), None);
        h.insert(CONTENT_RANGE, "bytes 100-199/200".parse().expect("header"));
        assert_eq!(content_range_start(&h), Some(100));
        h.insert(CONTENT_RANGE, "bytes */200".parse().expect("header"));
        assert_eq!(content_range_start(&h), None);
        h.insert(CONTENT_RANGE, "items 1-2/3".parse().expect("header"));
        assert_eq!(content_range_start(&h), None);
    }
}
