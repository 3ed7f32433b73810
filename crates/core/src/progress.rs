//! Progress is reported through a trait so the engine never prints: the CLI draws a bar,
//! tests count calls, a service could publish metrics.

/// Receives progress of one operation. Calls come from the engine's coordinating thread.
pub trait Progress: Send {
    /// `total` logical bytes will be processed.
    fn start(&mut self, _total: u64) {}
    /// `bytes` more logical bytes are done (holes included: they are done instantly).
    fn advance(&mut self, _bytes: u64) {}
    fn finish(&mut self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
