//! The log record (SPEC §1). TODO: being written.
