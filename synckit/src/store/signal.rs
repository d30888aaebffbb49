//! A coalescing wake-up flag, the one thing a subscription waits on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

/// A coalescing wake-up flag: any number of `raise` calls before the next
/// `wait` count as one.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    pub(crate) raised: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Forgets earlier wake-ups; call before reading the store so that a
    /// wake-up during the read leads to another read.
    pub(crate) fn clear(&self) {
        self.raised.store(false, Ordering::Release);
    }

    /// Resolves once `raise` has been called since the last `clear`.
    pub(crate) fn wait(&self) -> SignalWait<'_> {
        SignalWait { signal: self }
    }
}

pub(crate) struct SignalWait<'a> {
    signal: &'a Signal,
}

impl Future for SignalWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.signal.waker.register(cx.waker());
        if self.signal.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}
