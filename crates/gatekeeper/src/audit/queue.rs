//! The hand-off from checks to the writer thread: a bounded lock-free queue, and the
//! acknowledgement a durable record's check waits on, as a future or by blocking.
//!
//! The queue is tokio's bounded `mpsc` channel and acknowledgements are tokio `oneshot`s:
//! both are runtime-agnostic, lock-free when the queue has room, and awaitable. Blocking
//! waits park the thread (`block_on` below), so they work on any thread without a runtime
//! and never panic inside one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::record::Record;
use super::{AuditError, Head, Shared};

/// The writer's answer for a durable record: on disk, or why not.
pub(crate) type Receipt = Result<(), AuditError>;

/// What the writer thread receives. Records are nearly every message: boxing them to
/// shrink the rare control messages would cost an allocation per check.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    /// A record, with the sender to acknowledge it once it is on disk (durable records).
    Record(Record, Option<oneshot::Sender<Receipt>>),
    /// Write and sync everything queued before, then answer with the head.
    Flush(oneshot::Sender<Result<Head, AuditError>>),
    /// Flush, write a last checkpoint, answer, and stop.
    Close(oneshot::Sender<Result<Head, AuditError>>),
}

/// Wakes a parked thread.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls a future to completion on this thread, parking between polls; gives up after
/// `timeout`, if one is given.
pub(crate) fn block_on<F: Future>(fut: F, timeout: Option<Duration>) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        match deadline {
            None => std::thread::park(),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                std::thread::park_timeout(d - now);
            }
        }
    }
}

/// The acknowledgement of one appended record: resolves once the record is on disk
/// (durable trails) or at once (buffered trails, which only queue it). A future for async
/// code; [`Ack::wait`] for threads that may block.
#[must_use = "a durable record is on disk only once its acknowledgement resolves"]
pub struct Ack(State);

enum State {
    Done(Option<Receipt>),
    Waiting(oneshot::Receiver<Receipt>),
    /// The queue was full: send when there is room, then wait like `Waiting`.
    Queueing(Pin<Box<dyn Future<Output = Receipt> + Send>>),
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.0 {
            State::Done(_) => "done",
            State::Waiting(_) => "waiting for the disk",
            State::Queueing(_) => "waiting for room in the queue",
        };
        f.debug_tuple("Ack").field(&state).finish()
    }
}

impl Ack {
    pub(crate) fn done(receipt: Receipt) -> Ack {
        Ack(State::Done(Some(receipt)))
    }

    pub(crate) fn waiting(receiver: oneshot::Receiver<Receipt>) -> Ack {
        Ack(State::Waiting(receiver))
    }

    /// Sends `msg` once the queue has room, without blocking anyone.
    pub(crate) fn queueing(
        sender: mpsc::Sender<Msg>,
        msg: Msg,
        receiver: Option<oneshot::Receiver<Receipt>>,
        shared: Arc<Shared>,
    ) -> Ack {
        Ack(State::Queueing(Box::pin(async move {
            match sender.reserve_owned().await {
                Ok(permit) => {
                    permit.send(msg);
                }
                Err(_) => {
                    shared.queued.fetch_sub(1, Ordering::Relaxed);
                    shared.lose(1);
                    return Err(AuditError::Closed);
                }
            }
            match receiver {
                Some(r) => r.await.unwrap_or(Err(AuditError::Closed)),
                None => Ok(()),
            }
        })))
    }

    /// Whether the acknowledgement is already there (buffered trails, no trail, or a
    /// record refused at once).
    pub fn is_done(&self) -> bool {
        matches!(self.0, State::Done(_))
    }

    /// Blocks the calling thread until the record is on disk (or refused). Never call it
    /// on an async worker thread: await the `Ack` there.
    pub fn wait(self) -> Receipt {
        match self.0 {
            State::Done(receipt) => receipt.unwrap_or(Err(AuditError::Closed)),
            _ => block_on(self, None).unwrap_or(Err(AuditError::Closed)),
        }
    }
}

impl Future for Ack {
    type Output = Receipt;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Receipt> {
        match &mut self.0 {
            State::Done(receipt) => Poll::Ready(receipt.take().unwrap_or(Err(AuditError::Closed))),
            State::Waiting(receiver) => Pin::new(receiver)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(AuditError::Closed))),
            State::Queueing(fut) => fut.as_mut().poll(cx),
        }
    }
}

/// What waiting for one message gave.
#[allow(clippy::large_enum_variant)] // as `Msg`: a message is the usual answer
pub(crate) enum Received {
    Msg(Msg),
    Timeout,
    Disconnected,
}

/// Receives one message, waiting at most `timeout` (forever with `None`).
pub(crate) fn recv_timeout(rx: &mut mpsc::Receiver<Msg>, timeout: Option<Duration>) -> Received {
    match rx.try_recv() {
        Ok(m) => return Received::Msg(m),
        Err(mpsc::error::TryRecvError::Disconnected) => return Received::Disconnected,
        Err(mpsc::error::TryRecvError::Empty) => {}
    }
    match block_on(std::future::poll_fn(|cx| rx.poll_recv(cx)), timeout) {
        Some(Some(m)) => Received::Msg(m),
        Some(None) => Received::Disconnected,
        None => Received::Timeout,
    }
}
