//! Data-driven format cases from `fixtures/format/`. TODO: being written.
