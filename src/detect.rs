//! The warn-only detector. TODO: being written.
