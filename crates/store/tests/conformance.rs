//! openraft's own storage conformance suite over the real RocksDB log store and state
//! machine, each test on a fresh database in a temporary directory (as openraft's
//! sm-rocks example runs it). It checks what hand-written tests easily miss: vote and
//! committed persistence, truncate and purge edges, membership read back from log and
//! state machine, snapshots built and installed.

use openraft::testing::{StoreBuilder, Suite};
use ratchet_store::types::StorageError;
use ratchet_store::{LogStore, StateMachine, StorageOptions, Store, TypeConfig};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(&dir.path().join("db"), StorageOptions::default()).expect("opening RocksDB");
        let machine = StateMachine::open(store.clone(), &dir.path().join("snapshots")).expect("opening the state machine");
        Ok((dir, LogStore::new(store), machine))
    }
}

#[test]
fn the_rocksdb_storage_passes_openraft_s_conformance_suite() {
    Suite::test_all(RocksBuilder).expect("every storage test of the suite passes");
}
