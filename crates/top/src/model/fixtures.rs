//! Hand-built answers of a 3-pod cluster, for the tests of the model and
//! of the screen.

use kvstore_proto::kv::{Role, StatusResponse};

use crate::Answer;

/// Pod `ordinal`'s status: a voter of the 3-pod configuration, ready.
pub(crate) fn pod(ordinal: u32, role: Role, term: u64, commit: u64) -> StatusResponse {
    StatusResponse {
        name: name(ordinal),
        ordinal,
        set_name: "kvstore".into(),
        role: role as i32,
        term,
        commit_revision: commit,
        applied_revision: commit,
        ready: true,
        voter: true,
        member: true,
        voters: vec![0, 1, 2],
        desired_replicas: 3,
        ..Default::default()
    }
}

/// Pod `ordinal`'s name.
pub(crate) fn name(ordinal: u32) -> String {
    format!("kvstore-{ordinal}")
}

/// Pod `ordinal`'s client endpoint.
fn endpoint(ordinal: u32) -> String {
    format!("127.0.0.{}:7379", 20 + ordinal)
}

/// The answer of a pod that answered.
pub(crate) fn up(s: StatusResponse) -> Answer {
    Answer {
        endpoint: endpoint(s.ordinal),
        status: Ok(s),
    }
}

/// The answer for a pod that did not.
pub(crate) fn down(ordinal: u32) -> Answer {
    Answer {
        endpoint: endpoint(ordinal),
        status: Err("connection refused".into()),
    }
}

/// A 3-pod cluster led by `leader` in `term`, every pod at `commit`.
pub(crate) fn steady(leader: u32, term: u64, commit: u64) -> Vec<Answer> {
    (0..3)
        .map(|o| {
            let role = if o == leader {
                Role::Leader
            } else {
                Role::Follower
            };
            let mut s = pod(o, role, term, commit);
            s.leader = name(leader);
            up(s)
        })
        .collect()
}
