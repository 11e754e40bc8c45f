//! Busy polling for a lone client's next request. After answering, a connection's read
//! usually finds nothing yet and the thread sleeps in epoll until the client's next
//! request arrives. On a virtual machine whose idle vCPUs halt, being woken from that
//! sleep costs tens of microseconds per request (the load bench's one-client phase; a
//! loopback round trip measured ~55 us with the server polling, ~170 us with it asleep).
//! So once a connection has answered, while it is the only active one, its next read
//! polls the socket for a short, bounded time before the thread goes to sleep, as kernel
//! busy polling (`SO_BUSY_POLL`) does for network devices that support it (loopback does
//! not). A read between a request and its answer (hyper watching for the client hanging
//! up) never polls: it must not delay the answer. Nor does a read while part of the
//! answer waits for room in the socket: the next thing to do there is write.
//!
//! The cost is CPU: at most `budget` of spinning after each answered request, and only
//! while one client keeps the daemon busy. Under concurrent load the flag is off (a
//! spinning thread would hold up the other connections), and an idle daemon never
//! spins. A client that takes longer than the budget to send its next request (an
//! agent thinking between tool calls) is not polled for: a connection polls only while
//! its latest request came within the budget of the answer before it, which is measured
//! whether or not that read polled. `server.busy_poll_us = 0` turns it off.

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustix::net::RecvFlags;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How polled reads ended, for `/metrics`: an operator can see whether polling catches
/// requests (worth its CPU) or mostly gives up.
#[derive(Default)]
pub struct PollCounters {
    caught: AtomicU64,
    slept: AtomicU64,
}

impl PollCounters {
    /// Polled reads that found the client's next bytes.
    #[must_use]
    pub fn caught(&self) -> u64 {
        self.caught.load(Ordering::Relaxed)
    }

    /// Polled reads that used their whole budget and went to sleep.
    #[must_use]
    pub fn slept(&self) -> u64 {
        self.slept.load(Ordering::Relaxed)
    }
}

/// One connection's polling switch: set as each request begins, from whether the connection
/// had the daemon to itself (see `activity.rs`), read by its next read.
#[derive(Clone)]
pub struct PollControl {
    lone: Arc<AtomicBool>,
    counters: Arc<PollCounters>,
    budget: Duration,
}

impl PollControl {
    /// A switch for a new connection (off until its first request), counting into
    /// `counters`; a zero `budget` never polls.
    #[must_use]
    pub fn new(counters: Arc<PollCounters>, budget: Duration) -> Self {
        Self { lone: Arc::new(AtomicBool::new(false)), counters, budget }
    }

    /// Records whether the connection's latest request was the only active one.
    pub fn set_lone(&self, lone: bool) {
        self.lone.store(lone, Ordering::Relaxed);
    }

    fn polls(&self) -> bool {
        !self.budget.is_zero() && self.lone.load(Ordering::Relaxed)
    }
}

/// A TCP stream whose reads poll for up to the control's budget after it has written,
/// while its [`PollControl`] says the connection is alone.
pub struct BusyPollStream {
    inner: TcpStream,
    control: PollControl,
    /// When it first wrote since the last read that returned data: the client has its
    /// answer, and the next bytes are its next request.
    answered_at: Option<Instant>,
    /// Whether the latest request came within the budget after the answer before it
    /// (so polling would have caught it); true until a request shows otherwise.
    client_is_quick: bool,
    /// The latest write found the socket full: the answer is not all sent yet, and the
    /// next thing to do is write the rest, not wait for the client.
    write_blocked: bool,
}

impl BusyPollStream {
    /// Wraps an accepted stream.
    #[must_use]
    pub fn new(inner: TcpStream, control: PollControl) -> Self {
        Self { inner, control, answered_at: None, client_is_quick: true, write_blocked: false }
    }

    /// The stream (TLS handshakes peek at it; certificates are read from the session).
    #[must_use]
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    /// Notes that a read returned data: if it followed an answer, how long the client
    /// took decides whether its next request is polled for.
    fn request_arrived(&mut self) {
        if let Some(answered_at) = self.answered_at.take() {
            self.client_is_quick = answered_at.elapsed() <= self.control.budget;
        }
    }

    /// Notes a write: the first since the last request starts the client's turn; one
    /// that found the socket full holds polling off until a write goes through.
    fn wrote(&mut self, written: &Poll<io::Result<usize>>) {
        self.write_blocked = written.is_pending();
        if self.answered_at.is_none() && matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.answered_at = Some(Instant::now());
        }
    }

    /// Whether a read that found nothing should poll: the client has its whole answer,
    /// it asked quickly last time, and the connection is alone.
    fn should_poll(&self, buf: &ReadBuf<'_>) -> bool {
        self.answered_at.is_some()
            && !self.write_blocked
            && self.client_is_quick
            && self.control.polls()
            && buf.remaining() > 0
    }

    /// Reads what the socket holds without waiting: `None` when it holds nothing yet.
    /// A direct `recv` (tokio's own `try_read` would answer from its readiness cache,
    /// which only the event loop refreshes, so it could not see data arriving now).
    fn recv_now(&self, buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
        let unfilled = buf.initialize_unfilled();
        match rustix::net::recv(self.inner.as_fd(), unfilled, RecvFlags::DONTWAIT) {
            Ok(read) => {
                buf.advance(read);
                Some(Ok(()))
            }
            Err(rustix::io::Errno::AGAIN) => None,
            Err(rustix::io::Errno::INTR) => None,
            Err(err) => Some(Err(err.into())),
        }
    }
}

impl AsyncRead for BusyPollStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled = buf.filled().len();
        let first = Pin::new(&mut this.inner).poll_read(cx, buf);
        if first.is_ready() {
            if buf.filled().len() > filled {
                this.request_arrived();
            }
            return first;
        }
        if !this.should_poll(buf) {
            return first;
        }
        let deadline = Instant::now() + this.control.budget;
        loop {
            if let Some(done) = this.recv_now(buf) {
                this.request_arrived();
                this.control.counters.caught.fetch_add(1, Ordering::Relaxed);
                return Poll::Ready(done);
            }
            if Instant::now() >= deadline {
                break;
            }
            // A pause between `recv`s: each takes the socket's lock, which the client's
            // send needs too, and costs a system call (A/B: more cycles/s, less CPU).
            for _ in 0..64 {
                std::hint::spin_loop();
            }
        }
        this.control.counters.slept.fetch_add(1, Ordering::Relaxed);
        // Nothing came: sleep as usual. The first poll registered this task's waker, and
        // data arriving after the last `recv` raises a new readiness event.
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for BusyPollStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, data);
        this.wrote(&written);
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(budget: Duration, lone: bool) -> (BusyPollStream, std::net::TcpStream, Arc<PollCounters>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let counters = Arc::new(PollCounters::default());
        let control = PollControl::new(counters.clone(), budget);
        control.set_lone(lone);
        let client = client.into_std().unwrap();
        client.set_nonblocking(false).unwrap();
        (BusyPollStream::new(server, control), client, counters)
    }

    /// The client (a plain thread): for each pause, reads the server's 6-byte answer first
    /// when `reads_answers`, waits the pause, then sends `request`; hands its stream back.
    fn client_sends(
        mut client: std::net::TcpStream,
        reads_answers: bool,
        pauses_ms: &'static [u64],
        request: &'static [u8; 4],
    ) -> std::thread::JoinHandle<std::net::TcpStream> {
        std::thread::spawn(move || {
            for pause in pauses_ms {
                if reads_answers {
                    let mut answer = [0u8; 6];
                    std::io::Read::read_exact(&mut client, &mut answer).unwrap();
                }
                std::thread::sleep(Duration::from_millis(*pause));
                std::io::Write::write_all(&mut client, request).unwrap();
            }
            client
        })
    }

    /// Runs a scenario that depends on the server's read starting before the client's
    /// bytes arrive, up to three times. On a loaded machine the server's thread can be
    /// held up past the client's pause, so its read finds the bytes already there and
    /// never polls; that try says nothing about polling. A regression fails every try.
    async fn in_one_of_three_tries<F, Fut>(mut scenario: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match scenario().await {
                Ok(()) => return,
                Err(why) => failures.push(why),
            }
        }
        panic!("failed in all three tries: {failures:#?}");
    }

    /// Whether the polled reads ended as expected: `want` is (caught, slept).
    fn polled_reads(counters: &PollCounters, want: (u64, u64), meaning: &str) -> Result<(), String> {
        let got = (counters.caught(), counters.slept());
        if got == want {
            Ok(())
        } else {
            Err(format!("(caught, slept) = {got:?}: want {want:?}, {meaning}"))
        }
    }

    /// One exchange on a lone connection with `budget`: the server answers, the client
    /// reads the answer, waits `pause_ms` and sends `request`, which the server reads.
    /// Returns how the server's polled reads ended.
    async fn answer_then_next_request(
        budget: Duration,
        pause_ms: &'static [u64; 1],
        request: &'static [u8; 4],
    ) -> Arc<PollCounters> {
        let (mut server, client, counters) = pair(budget, true).await;
        let peer = client_sends(client, true, pause_ms, request);
        server.write_all(b"answer").await.unwrap();
        assert_eq!(&next_request(&mut server).await, request);
        drop(peer.join().unwrap());
        counters
    }

    /// The server's read of the client's next 4-byte request (bounded, so a lost wake-up
    /// fails the test instead of hanging it).
    async fn next_request(server: &mut BusyPollStream) -> [u8; 4] {
        let mut got = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), server.read_exact(&mut got)).await.unwrap().unwrap();
        got
    }

    #[tokio::test(flavor = "current_thread")]
    async fn after_an_answer_a_lone_connection_catches_the_next_request_by_polling() {
        in_one_of_three_tries(|| async {
            let counters = answer_then_next_request(Duration::from_secs(5), &[20], b"next").await;
            polled_reads(&counters, (1, 0), "read by polling, not after sleeping")
        })
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_arriving_after_the_budget_still_wakes_the_reader() {
        in_one_of_three_tries(|| async {
            let counters = answer_then_next_request(Duration::from_micros(200), &[50], b"late").await;
            polled_reads(&counters, (0, 1), "the poll gave up and the reader slept")
        })
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_polling_before_an_answer_when_not_alone_or_with_no_budget() {
        for (budget, lone, answer_first) in
            [(Duration::from_secs(5), true, false), (Duration::from_secs(5), false, true), (Duration::ZERO, true, true)]
        {
            let (mut server, client, counters) = pair(budget, lone).await;
            let peer = client_sends(client, answer_first, &[20], b"data");
            if answer_first {
                server.write_all(b"answer").await.unwrap();
            }
            assert_eq!(&next_request(&mut server).await, b"data");
            assert_eq!(
                (counters.caught(), counters.slept()),
                (0, 0),
                "budget {budget:?} lone {lone} answered {answer_first}"
            );
            drop(peer.join().unwrap());
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_client_slower_than_the_budget_is_not_polled_for_until_it_is_quick_again() {
        in_one_of_three_tries(|| async {
            let (mut server, client, counters) = pair(Duration::from_millis(20), true).await;
            // The client's pauses before each request: slow, slow, quick, quick. (A pause,
            // even a quick one, so that no request is already there when the read begins.)
            let peer = client_sends(client, true, &[60, 60, 2, 2], b"next");
            let mut seen = Vec::new();
            for _ in 0..4 {
                server.write_all(b"answer").await.unwrap();
                assert_eq!(&next_request(&mut server).await, b"next");
                seen.push(counters.caught() + counters.slept());
            }
            drop(peer.join().unwrap());
            // 1st read polls (no history) and sleeps; 2nd is not polled (the client was
            // slow); 3rd is not polled either (slow again); after the quick 3rd request,
            // the 4th is.
            if seen == [1, 1, 1, 2] {
                Ok(())
            } else {
                Err(format!("polled reads after each request: {seen:?}, want [1, 1, 1, 2]"))
            }
        })
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_polling_while_an_answer_is_still_waiting_for_room_in_the_socket() {
        let (mut server, client, counters) = pair(Duration::from_secs(5), true).await;
        // The client does not read: a large answer fills the socket and its write waits.
        let answer = vec![b'a'; 64 << 20];
        let blocked = tokio::time::timeout(Duration::from_millis(200), server.write_all(&answer)).await;
        assert!(blocked.is_err(), "the socket should have filled up");
        let peer = client_sends(client, false, &[20], b"data");
        assert_eq!(&next_request(&mut server).await, b"data");
        assert_eq!(
            (counters.caught(), counters.slept()),
            (0, 0),
            "a read while the answer waits to be sent must not poll"
        );
        drop(peer.join().unwrap());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_closed_peer_reads_as_end_of_stream_while_polling() {
        in_one_of_three_tries(|| async {
            let (mut server, client, counters) = pair(Duration::from_secs(5), true).await;
            let peer = std::thread::spawn(move || {
                let mut client = client;
                let mut answer = [0u8; 6];
                std::io::Read::read_exact(&mut client, &mut answer).unwrap();
                // A pause, so that the server is polling when the connection closes.
                std::thread::sleep(Duration::from_millis(20));
                drop(client);
            });
            server.write_all(b"answer").await.unwrap();
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
            peer.join().unwrap();
            polled_reads(&counters, (1, 0), "end of stream found by the poll")
        })
        .await;
    }
}
