//! The output line. TODO: being written.
