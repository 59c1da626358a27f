//! A small TCP proxy on 127.0.0.1 for end-to-end tests: it sits between
//! walg and a storage emulator and can make the storage fail on demand.
//!
//! Modes ([`Mode`]):
//! - `PassThrough`: bytes are forwarded both ways.
//! - `Refuse`: the listening socket is closed, so new connections are
//!   refused by the kernel, and open connections are shut down. Switching
//!   back binds the same port again.
//! - `Blackhole`: connections are accepted and read, but nothing is ever
//!   forwarded or answered, and the proxy never closes them. Connections
//!   that were open at the switch stop forwarding too, and stay dead after
//!   the switch back (they lost bytes).
//!
//! Every HTTP/1.x request line the clients send is recorded (method,
//! target, the mode it met), by following the message framing of the
//! client-to-server stream (`Content-Length` and chunked bodies), so
//! keep-alive connections carrying several requests are counted right.
//!
//! With a [`Shape`] ([`Proxy::start_shaped`]) it also adds what a cloud
//! region adds that loopback does not: a round trip before each request and
//! before the first byte of each connection, and a bandwidth cap per
//! connection and direction.
//!
//! What it does not do: TLS, HTTP/2, or parse responses.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    PassThrough,
    Refuse,
    Blackhole,
}

impl Mode {
    fn to_u8(self) -> u8 {
        match self {
            Mode::PassThrough => 0,
            Mode::Refuse => 1,
            Mode::Blackhole => 2,
        }
    }
    fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Refuse,
            2 => Mode::Blackhole,
            _ => Mode::PassThrough,
        }
    }
}

/// One HTTP request seen on the client-to-server side.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// The mode when the request line arrived.
    pub mode: Mode,
}

struct Conn {
    id: u64,
    client: TcpStream,
    upstream: Option<TcpStream>,
}

/// Network shaping for benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Added before each HTTP request is forwarded (its round trip), and
    /// once when a connection opens (the TCP handshake).
    pub round_trip: Duration,
    /// Bytes per second per connection, each direction.
    pub bytes_per_sec: u64,
}

/// Paces writes to a rate: no faster than `rate` bytes per second since the
/// connection last went idle (idle time earns no credit).
struct Pacer {
    rate: u64,
    start: Instant,
    sent: u64,
}

impl Pacer {
    fn new(shape: Option<Shape>) -> Pacer {
        Pacer {
            rate: shape.map_or(0, |s| s.bytes_per_sec),
            start: Instant::now(),
            sent: 0,
        }
    }

    fn due(&self) -> Instant {
        self.start + Duration::from_secs_f64(self.sent as f64 / self.rate as f64)
    }

    /// Waits until `n` more bytes may have left.
    fn pace(&mut self, n: usize) {
        if self.rate == 0 {
            return;
        }
        if Instant::now() > self.due() {
            self.start = Instant::now();
            self.sent = 0;
        }
        self.sent += n as u64;
        if let Some(wait) = self.due().checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

struct Inner {
    upstream: SocketAddr,
    shape: Option<Shape>,
    port: u16,
    mode: AtomicU8,
    /// The mode the accept loop has put into effect.
    applied: AtomicU8,
    stop: AtomicBool,
    next_conn: AtomicU64,
    log: Mutex<Vec<Request>>,
    conns: Mutex<Vec<Conn>>,
}

impl Inner {
    fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Ordering::SeqCst))
    }

    /// The request log (a thread that panicked holding it left it whole).
    fn log(&self) -> MutexGuard<'_, Vec<Request>> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open connections.
    fn conns(&self) -> MutexGuard<'_, Vec<Conn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shuts down every open connection, both ways.
    fn shut_all(&self) {
        for c in self.conns().iter() {
            let _ = c.client.shutdown(Shutdown::Both);
            if let Some(u) = &c.upstream {
                let _ = u.shutdown(Shutdown::Both);
            }
        }
    }
}

/// A running proxy; dropping it stops accepting and shuts its connections.
pub struct Proxy {
    inner: Arc<Inner>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("port", &self.inner.port)
            .field("upstream", &self.inner.upstream)
            .field("mode", &self.inner.mode())
            .finish()
    }
}

fn bind(port: u16) -> std::io::Result<TcpListener> {
    // std sets SO_REUSEADDR on Unix, so the port can be bound again right
    // after the listener is closed, TIME_WAIT connections notwithstanding.
    let l = TcpListener::bind(("127.0.0.1", port))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

impl Proxy {
    /// Starts a proxy in `PassThrough` mode on a free port of 127.0.0.1,
    /// forwarding to `upstream` (e.g. `127.0.0.1:9000`).
    pub fn start(upstream: SocketAddr) -> Result<Proxy> {
        Proxy::start_inner(upstream, None)
    }

    /// A pass-through proxy that shapes traffic like a network to a cloud
    /// region (see [`Shape`]).
    pub fn start_shaped(upstream: SocketAddr, shape: Shape) -> Result<Proxy> {
        Proxy::start_inner(upstream, Some(shape))
    }

    fn start_inner(upstream: SocketAddr, shape: Option<Shape>) -> Result<Proxy> {
        let listener = bind(0).context("bind the proxy on 127.0.0.1")?;
        let port = listener.local_addr()?.port();
        let inner = Arc::new(Inner {
            upstream,
            shape,
            port,
            mode: AtomicU8::new(Mode::PassThrough.to_u8()),
            applied: AtomicU8::new(Mode::PassThrough.to_u8()),
            stop: AtomicBool::new(false),
            next_conn: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
        });
        let accept = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("proxy-accept".into())
                .spawn(move || accept_loop(inner, listener))?
        };
        Ok(Proxy {
            inner,
            accept: Some(accept),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.port)
    }

    /// Switches the mode and returns once it is in effect (the port refuses,
    /// or listens again).
    pub fn set_mode(&self, mode: Mode) -> Result<()> {
        self.inner.mode.store(mode.to_u8(), Ordering::SeqCst);
        if mode == Mode::Refuse {
            self.inner.shut_all();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.inner.applied.load(Ordering::SeqCst) != mode.to_u8() {
            if Instant::now() > deadline {
                bail!("the proxy did not switch to {mode:?} within 10 s (could it bind port {} again?)", self.inner.port);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.inner.log().clone()
    }

    /// A position in the request log, for [`Proxy::since`].
    pub fn mark(&self) -> usize {
        self.inner.log().len()
    }

    /// The requests after `mark`.
    pub fn since(&self, mark: usize) -> Vec<Request> {
        let log = self.inner.log();
        log[mark.min(log.len())..].to_vec()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.shut_all();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let mut listener = Some(listener);
    while !inner.stop.load(Ordering::SeqCst) {
        let mode = inner.mode();
        match (mode, listener.is_some()) {
            (Mode::Refuse, true) => listener = None, // closing it makes the port refuse
            (Mode::Refuse, false) => {}
            (_, false) => match bind(inner.port) {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
            (_, true) => {}
        }
        inner.applied.store(mode.to_u8(), Ordering::SeqCst);
        let Some(l) = &listener else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        match l.accept() {
            Ok((client, _)) => {
                let inner = inner.clone();
                let _ = std::thread::Builder::new()
                    .name("proxy-conn".into())
                    .spawn(move || handle(inner, client));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn handle(inner: Arc<Inner>, client: TcpStream) {
    let _ = client.set_nonblocking(false);
    let _ = client.set_nodelay(true);
    let id = inner.next_conn.fetch_add(1, Ordering::SeqCst);
    let upstream = if inner.mode() == Mode::PassThrough {
        match TcpStream::connect_timeout(&inner.upstream, Duration::from_secs(5)) {
            Ok(u) => {
                let _ = u.set_nodelay(true);
                if let Some(shape) = inner.shape {
                    std::thread::sleep(shape.round_trip);
                }
                Some(u)
            }
            Err(_) => {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
        }
    } else {
        None
    };
    // Blackholed from the start, or after losing bytes.
    let poisoned = Arc::new(AtomicBool::new(upstream.is_none()));
    if let Ok(c) = client.try_clone() {
        let u = upstream.as_ref().and_then(|u| u.try_clone().ok());
        inner.conns().push(Conn {
            id,
            client: c,
            upstream: u,
        });
    }
    let s2c = upstream.as_ref().and_then(|u| {
        let (u, c) = (u.try_clone().ok()?, client.try_clone().ok()?);
        let (inner, poisoned) = (inner.clone(), poisoned.clone());
        std::thread::Builder::new()
            .name("proxy-s2c".into())
            .spawn(move || server_to_client(&inner, u, c, &poisoned))
            .ok()
    });
    client_to_server(&inner, client, upstream, &poisoned);
    if let Some(h) = s2c {
        let _ = h.join();
    }
    inner.conns().retain(|c| c.id != id);
}

/// What a connection does with bytes it has just read, in either direction.
enum Step {
    Forward,
    Drop,
    Close,
}

/// `Refuse` closes; `Blackhole` swallows, never answers and never closes,
/// and poisons the connection, which drops everything after (it lost
/// bytes); `PassThrough` forwards.
fn next_step(mode: Mode, poisoned: &AtomicBool) -> Step {
    match mode {
        Mode::Refuse => Step::Close,
        Mode::Blackhole => {
            poisoned.store(true, Ordering::SeqCst);
            Step::Drop
        }
        Mode::PassThrough if poisoned.load(Ordering::SeqCst) => Step::Drop,
        Mode::PassThrough => Step::Forward,
    }
}

fn client_to_server(
    inner: &Inner,
    mut client: TcpStream,
    mut upstream: Option<TcpStream>,
    poisoned: &AtomicBool,
) {
    let mut parser = Parser::default();
    let mut pacer = Pacer::new(inner.shape);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mode = inner.mode();
        let mut seen = Vec::new();
        parser.feed(&buf[..n], &mut seen);
        if let (Some(shape), false) = (inner.shape, seen.is_empty()) {
            std::thread::sleep(shape.round_trip);
        }
        if !seen.is_empty() {
            let mut log = inner.log();
            for (method, target) in seen {
                log.push(Request {
                    method,
                    target,
                    mode,
                });
            }
        }
        match next_step(mode, poisoned) {
            Step::Close => break,
            Step::Drop => continue,
            Step::Forward => {}
        }
        let Some(u) = upstream.as_mut() else { continue };
        pacer.pace(n);
        if u.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if let Some(u) = &upstream {
        let _ = u.shutdown(Shutdown::Write);
    }
    if inner.mode() == Mode::Refuse || inner.stop.load(Ordering::SeqCst) {
        let _ = client.shutdown(Shutdown::Both);
        if let Some(u) = &upstream {
            let _ = u.shutdown(Shutdown::Both);
        }
    }
}

fn server_to_client(
    inner: &Inner,
    mut upstream: TcpStream,
    mut client: TcpStream,
    poisoned: &AtomicBool,
) {
    let mut pacer = Pacer::new(inner.shape);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match upstream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match next_step(inner.mode(), poisoned) {
            Step::Close => break,
            Step::Drop => continue,
            Step::Forward => {}
        }
        pacer.pace(n);
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // A blackholed connection is never closed by the proxy.
    if !poisoned.load(Ordering::SeqCst) {
        let _ = client.shutdown(Shutdown::Write);
    }
}

/// Follows HTTP/1.x request framing on a client-to-server stream.
#[derive(Debug, Default)]
struct Parser {
    buf: Vec<u8>,
    state: State,
}

#[derive(Debug, Default, Clone, Copy)]
enum State {
    #[default]
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    Trailer,
    /// Framing not understood: stop counting on this connection.
    Lost,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Parser {
    fn feed(&mut self, data: &[u8], out: &mut Vec<(String, String)>) {
        if matches!(self.state, State::Lost) {
            return;
        }
        self.buf.extend_from_slice(data);
        loop {
            if self.buf.is_empty() {
                return;
            }
            match self.state {
                State::Lost => {
                    self.buf.clear();
                    return;
                }
                State::Head => {
                    let Some(p) = find(&self.buf, b"\r\n\r\n") else {
                        if self.buf.len() > 1 << 20 {
                            self.state = State::Lost;
                        }
                        return;
                    };
                    let head = String::from_utf8_lossy(&self.buf[..p]).into_owned();
                    self.buf.drain(..p + 4);
                    let mut lines = head.split("\r\n");
                    let first = lines.next().unwrap_or_default();
                    let parts: Vec<&str> = first.split(' ').collect();
                    if parts.len() != 3 || !parts[2].starts_with("HTTP/1.") {
                        self.state = State::Lost;
                        continue;
                    }
                    out.push((parts[0].to_string(), parts[1].to_string()));
                    let mut length = 0u64;
                    let mut chunked = false;
                    for line in lines {
                        let Some((k, v)) = line.split_once(':') else {
                            continue;
                        };
                        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                        if k == "content-length" {
                            length = v.parse().unwrap_or(0);
                        } else if k == "transfer-encoding"
                            && v.to_ascii_lowercase().contains("chunked")
                        {
                            chunked = true;
                        }
                    }
                    self.state = if chunked {
                        State::ChunkSize
                    } else if length > 0 {
                        State::Body(length)
                    } else {
                        State::Head
                    };
                }
                State::Body(n) | State::ChunkData(n) => {
                    let k = (self.buf.len() as u64).min(n);
                    self.buf.drain(..k as usize);
                    let left = n - k;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), l) => State::Body(l),
                        (_, 0) => State::ChunkSize,
                        (_, l) => State::ChunkData(l),
                    };
                }
                State::ChunkSize => {
                    let Some(p) = find(&self.buf, b"\r\n") else {
                        return;
                    };
                    let line = String::from_utf8_lossy(&self.buf[..p]).into_owned();
                    self.buf.drain(..p + 2);
                    let hex = line.split(';').next().unwrap_or("").trim();
                    match u64::from_str_radix(hex, 16) {
                        Ok(0) => self.state = State::Trailer,
                        Ok(n) => self.state = State::ChunkData(n + 2), // data and its CRLF
                        Err(_) => self.state = State::Lost,
                    }
                }
                State::Trailer => {
                    let Some(p) = find(&self.buf, b"\r\n") else {
                        return;
                    };
                    self.buf.drain(..p + 2);
                    if p == 0 {
                        self.state = State::Head;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_counts_keepalive_and_chunked_requests() {
        let mut p = Parser::default();
        let mut out = Vec::new();
        let stream = b"PUT /b/wal_005/x HTTP/1.1\r\nContent-Length: 5\r\n\r\nGET /HEAD /b/y HTTP/1.1\r\nHost: h\r\n\r\nPOST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nDELETE /b/walg_failover_check/1 HTTP/1.1\r\n\r\n";
        for chunk in stream.chunks(7) {
            p.feed(chunk, &mut out);
        }
        let got: Vec<String> = out.iter().map(|(m, t)| format!("{m} {t}")).collect();
        assert_eq!(
            got,
            [
                "PUT /b/wal_005/x",
                "HEAD /b/y",
                "POST /c",
                "DELETE /b/walg_failover_check/1"
            ]
        );
    }
}
