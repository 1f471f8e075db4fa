//! The state side of `kvstore restore` (see [`crate::restore`]): a backup's
//! pairs, written by a [`SnapshotWriter`], become the state of the first
//! member of a new cluster.

use super::keys::meta_key;
use super::snapshot::SnapshotWriter;
use super::{read_applied, space, KvState, StateError, MEMBERSHIP};
use crate::raft::{Membership, SnapshotMeta};

impl KvState {
    /// Installs a backup's pairs as the state of a new cluster
    /// `cluster_id` whose configuration is `membership`, at the revision
    /// the backup ends at (returned, with that configuration).
    ///
    /// What changes from the backup: the cluster id (the new cluster's,
    /// so that a member of the old one is refused), the configuration
    /// (the old one named members that do not exist), and the space
    /// alarms (raised by members of the old cluster; the new one raises
    /// its own). Data, history, revisions and the applied point stay.
    pub fn finish_restore(
        &self,
        writer: SnapshotWriter,
        cluster_id: u64,
        membership: Membership,
    ) -> Result<SnapshotMeta, StateError> {
        let (index, term) = read_applied(&writer.tree)?;
        if index == 0 {
            self.abort_install(writer)?;
            return Err(StateError::Corrupt {
                key: "applied".into(),
                reason: "the backup holds no applied revision".into(),
            });
        }
        writer
            .tree
            .insert(meta_key("cluster"), &cluster_id.to_be_bytes()[..])?;
        writer
            .tree
            .insert(meta_key(MEMBERSHIP), membership.encode().to_vec())?;
        writer.tree.insert(meta_key(space::ALARMS), Vec::new())?;
        let meta = SnapshotMeta {
            index,
            term,
            membership,
        };
        self.finish_install(writer, meta)
    }
}
