//! The behaviour suite on the in-memory store (with a small page size, so
//! that paging is exercised).

use synckit::MemoryStore;

crate::behaviour_suite!(async { MemoryStore::with_batch_size(7) });
