//! bytes -> outcome. TODO: being written.
