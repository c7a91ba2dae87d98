//! A small HTTP/1.1 load generator: keep-alive connections on one tokio thread (so the
//! client takes at most one of the machine's cores), closed-loop for saturation, open-loop
//! at a fixed rate for latency. Open-loop latency is measured from the moment a request was
//! *scheduled*, not sent (coordinated-omission correction, as `oha --latency-correction` and
//! `wrk2` do): a proxy that stalls is charged for every request queued behind the stall.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Every connection sends its next request as soon as the previous answer is in.
    Closed,
    /// Requests are scheduled at this many per second, whatever the answers do.
    Open { rate: f64 },
}

/// One run's outcome.
#[derive(Clone, Debug, Default)]
pub struct RunResult {
    pub completed: u64,
    /// Answers with status 2xx.
    pub ok: u64,
    /// Connection errors (each one reconnects).
    pub errors: u64,
    pub statuses: BTreeMap<u16, u64>,
    /// From the first scheduled request to the last answer.
    pub elapsed: Duration,
    /// Per answered request, microseconds.
    pub latencies_us: Vec<u32>,
}

impl RunResult {
    pub fn rps(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The driver's runtime (one thread, reused across runs).
pub struct Driver {
    rt: tokio::runtime::Runtime,
}

/// Connections opened before the measured window starts.
pub struct Conns {
    addr: SocketAddr,
    streams: Vec<TcpStream>,
}

impl Driver {
    pub fn new() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Driver { rt })
    }

    pub fn connect(&self, addr: SocketAddr, n: usize) -> Result<Conns> {
        self.rt.block_on(async {
            let mut streams = Vec::with_capacity(n);
            for _ in 0..n {
                streams.push(connect(addr).await?);
            }
            Ok(Conns { addr, streams })
        })
    }

    /// Runs `requests` (raw HTTP/1.1 request bytes, used round-robin) for `duration`.
    pub fn run(
        &self,
        conns: Conns,
        requests: Arc<Vec<Vec<u8>>>,
        pace: Pace,
        duration: Duration,
    ) -> RunResult {
        self.rt.block_on(async move {
            let start = Instant::now() + Duration::from_millis(5);
            let end = start + duration;
            let next = Arc::new(AtomicU64::new(0));
            let n = conns.streams.len() as u64;
            let mut tasks = Vec::new();
            for (i, stream) in conns.streams.into_iter().enumerate() {
                let job = Job {
                    addr: conns.addr,
                    requests: Arc::clone(&requests),
                    pace,
                    start,
                    end,
                    next: Arc::clone(&next),
                    offset: i as u64 * 7919 / n.max(1),
                };
                tasks.push(tokio::spawn(job.run(stream)));
            }
            let mut total = RunResult::default();
            for t in tasks {
                if let Ok(r) = t.await {
                    total.completed += r.completed;
                    total.ok += r.ok;
                    total.errors += r.errors;
                    for (s, c) in r.statuses {
                        *total.statuses.entry(s).or_default() += c;
                    }
                    total.latencies_us.extend(r.latencies_us);
                }
            }
            total.elapsed = Instant::now().saturating_duration_since(start);
            total
        })
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

struct Job {
    addr: SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    pace: Pace,
    start: Instant,
    end: Instant,
    next: Arc<AtomicU64>,
    offset: u64,
}

impl Job {
    async fn run(self, stream: TcpStream) -> RunResult {
        let mut r = RunResult::default();
        let mut stream = Some(stream);
        let mut buf = Vec::with_capacity(8192);
        let mut own = self.offset;
        tokio::time::sleep_until(self.start).await;
        loop {
            let (scheduled, index) = match self.pace {
                Pace::Closed => {
                    let now = Instant::now();
                    if now >= self.end {
                        break;
                    }
                    own += 1;
                    (now, own)
                }
                Pace::Open { rate } => {
                    let i = self.next.fetch_add(1, Ordering::Relaxed);
                    let at = self.start + Duration::from_secs_f64(i as f64 / rate);
                    if at >= self.end {
                        break;
                    }
                    tokio::time::sleep_until(at).await;
                    (at, i)
                }
            };
            let Some(req) = self
                .requests
                .get(index as usize % self.requests.len().max(1))
            else {
                break;
            };
            let s = match stream.take() {
                Some(s) => s,
                None => match connect(self.addr).await {
                    Ok(s) => s,
                    Err(_) => {
                        r.errors += 1;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                },
            };
            let mut s = s;
            match roundtrip(&mut s, &mut buf, req).await {
                Ok((status, keep)) => {
                    let us = Instant::now()
                        .saturating_duration_since(scheduled)
                        .as_micros();
                    r.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                    r.completed += 1;
                    if (200..300).contains(&status) {
                        r.ok += 1;
                    }
                    *r.statuses.entry(status).or_default() += 1;
                    if keep {
                        stream = Some(s);
                    }
                }
                Err(_) => r.errors += 1,
            }
        }
        r
    }
}

/// Sends one request, reads one response (Content-Length or chunked body).
/// Returns (status, keep-alive).
async fn roundtrip(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    req: &[u8],
) -> std::io::Result<(u16, bool)> {
    s.write_all(req).await?;
    buf.clear();
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        read_more(s, buf).await?;
    };
    let head = std::str::from_utf8(buf.get(..head_end).unwrap_or_default())
        .map_err(|_| bad("non-UTF-8 head"))?;
    let status: u16 = head
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut length = None;
    let mut chunked = false;
    let mut keep = true;
    for line in head.split("\r\n").skip(1) {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse::<usize>().ok();
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
            keep = false;
        }
    }
    match (length, chunked) {
        (Some(n), _) => {
            while buf.len() < head_end + n {
                read_more(s, buf).await?;
            }
        }
        (None, true) => {
            while !buf
                .get(head_end..)
                .unwrap_or_default()
                .ends_with(b"0\r\n\r\n")
            {
                read_more(s, buf).await?;
            }
        }
        (None, false) => return Err(bad("response without a length")),
    }
    Ok((status, keep))
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.reserve(4096);
    if s.read_buf(buf).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The `q`-quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}
