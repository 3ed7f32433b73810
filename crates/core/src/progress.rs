//! Progress is reported through a trait so the engine never prints: the CLI draws a bar,
//! tests count calls, a service could publish metrics.

/// Receives progress of one operation. Calls come from the engine's coordinating thread.
pub trait Progress: Send {
    /// `total` logical bytes will be processed.
    fn start(&mut self, _total: u64) {}
    /// `bytes` more logical bytes are done (holes included: they are done instantly).
    fn advance(&mut self, _bytes: u64) {}
    /// The operation is done with its bytes.
    fn finish(&mut self) {}
    /// A stage of the operation begins ("exporting vd/web of pool default"): what a
    /// person watching would want to read, in a line.
    fn stage(&mut self, _what: &str) {}
    /// Something went wrong that did not stop the operation (a guest agent that did not
    /// answer the thaw): the caller decides where a person reads it.
    fn warn(&mut self, _text: &str) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
