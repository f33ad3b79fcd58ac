//! end-to-end and interop test support
