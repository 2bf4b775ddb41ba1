//! Why a pool's connections cannot be opened: bb8 hands connection errors to a sink and tells
//! the caller only that it timed out, so the sink keeps the last one for the error the caller
//! gets (and logs each).

use std::sync::{Arc, Mutex, PoisonError};

/// The last connection error of one pool.
#[derive(Clone, Debug, Default)]
pub(crate) struct LastError {
    last: Arc<Mutex<Option<String>>>,
    /// What the pool connects to, for the log.
    what: &'static str,
}

impl LastError {
    pub(crate) fn new(what: &'static str) -> Self {
        Self { last: Arc::default(), what }
    }

    /// The last error, when there was one.
    pub(crate) fn take(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl<E: std::error::Error + 'static> bb8::ErrorSink<E> for LastError {
    fn sink(&self, error: E) {
        let text = crate::service::error_chain(&error);
        tracing::warn!(error = %text, "a {} connection failed", self.what);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(text);
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<E>> {
        Box::new(self.clone())
    }
}
