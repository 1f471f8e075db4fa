//! The gRPC API of kvstore, shared by the server, the client library and
//! `kvctl`: the code generated from `proto/` (by protox, so no `protoc` is
//! needed), the metadata keys that carry error details, and the key-range
//! convention of prefix requests.

/// Generated code, in modules that mirror the protobuf packages.
pub mod kvstore {
    /// The client API, package `kvstore.v1`.
    pub mod v1 {
        tonic::include_proto!("kvstore.v1");
    }
    /// The replication API.
    pub mod peer {
        /// Package `kvstore.peer.v1`.
        pub mod v1 {
            tonic::include_proto!("kvstore.peer.v1");
        }
    }
}
pub use kvstore::peer::v1 as peer;
pub use kvstore::v1 as kv;

/// etcd's v3 API (client code only), generated from the etcd protos
/// vendored under `proto/etcd/` (see its README), for benchmarking against
/// etcd. The modules are siblings, as the protobuf packages are, because
/// the generated code refers to the others as `super::mvccpb` and so on.
#[cfg(feature = "etcd")]
pub mod etcd {
    /// The services: KV, Watch, Lease, Cluster, Maintenance, Auth.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    /// Keys, values and watch events.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// Users, roles and permissions.
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
}

/// The client API's descriptors (not the peer API's), for the reflection
/// service: grpcurl and other tools need no proto files.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kvstore_descriptor.bin"));

/// gRPC metadata key carrying the leader's name with UNAVAILABLE answers.
pub const LEADER_METADATA: &str = "kvstore-leader";
/// gRPC metadata key telling which kind of failure an answer is
/// (`no-leader`, `not-applied`, `outcome-unknown`, ...), so a client, or a
/// member that forwarded a write, knows whether retrying it is safe.
pub const KIND_METADATA: &str = "kvstore-error";

/// The smallest key greater than every key that starts with `prefix`, or
/// `None` when there is none (the prefix is empty or all 0xff): the
/// `range_end` of a request for every key under `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A node's role (a [`kv::Role`] as a `StatusResponse` carries it) as
/// `kvctl status` and `kvctl top` show it.
pub fn role_name(raw: i32) -> &'static str {
    match kv::Role::try_from(raw) {
        Ok(kv::Role::Leader) => "leader",
        Ok(kv::Role::Follower) => "follower",
        Ok(kv::Role::Candidate) => "candidate",
        Ok(kv::Role::PreCandidate) => "pre-candidate",
        _ => "unknown",
    }
}

/// A node's place in the configuration it knows: `voter`, `learner`, or
/// `none` (a pod beyond the desired count, waiting as a non-member).
pub fn membership(s: &kv::StatusResponse) -> &'static str {
    if !s.member {
        "none"
    } else if s.learners.contains(&s.ordinal) {
        "learner"
    } else {
        "voter"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendored etcd protos keep etcd's field numbers: the bytes are
    /// what etcd's own Go client sends.
    #[cfg(feature = "etcd")]
    #[test]
    fn etcd_messages_encode_with_etcds_field_numbers() {
        use crate::etcd::etcdserverpb::{compare, Compare, PutRequest, RangeRequest};
        use prost::Message;
        let put = PutRequest {
            key: "k".into(),
            value: "v".into(),
            prev_kv: true,
            ..Default::default()
        };
        // key = 1, value = 2, prev_kv = 4.
        assert_eq!(put.encode_to_vec(), b"\x0a\x01k\x12\x01v\x20\x01");
        let get = RangeRequest {
            key: "k".into(),
            serializable: true,
            ..Default::default()
        };
        // serializable = 7.
        assert_eq!(get.encode_to_vec(), b"\x0a\x01k\x38\x01");
        let cmp = Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Value as i32,
            key: "k".into(),
            target_union: Some(compare::TargetUnion::Value("v".into())),
            ..Default::default()
        };
        // result EQUAL = 0 (not sent), target VALUE = 3 (field 2), key = 3,
        // value = 7.
        assert_eq!(cmp.encode_to_vec(), b"\x10\x03\x1a\x01k\x3a\x01v");
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
