//! jemalloc as the global allocator. TODO: being written.
