//! Which failed membership changes the client sends again, against a fake
//! Cluster server that answers MemberAdd with the errors a test lines up.
//! A real node cannot be made to answer DEADLINE_EXCEEDED on cue; a fake
//! one can, and counts the requests it got.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvstore_client::{Client, ClientError, RetryPolicy, WriteRetry};
use kvstore_proto::kv::cluster_server::{Cluster, ClusterServer};
use kvstore_proto::kv::{
    Member, MemberChangeRequest, MemberChangeResponse, MemberListRequest, MemberListResponse,
    StatusRequest, StatusResponse, TransferLeadershipRequest, TransferLeadershipResponse,
};
use kvstore_proto::KIND_METADATA;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

/// A Cluster service whose MemberAdd answers with the queued errors, then
/// succeeds; it records every name it was asked to add.
#[derive(Clone, Default)]
struct Fake {
    errors: Arc<Mutex<VecDeque<Status>>>,
    asked: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl Cluster for Fake {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn transfer_leadership(
        &self,
        _: Request<TransferLeadershipRequest>,
    ) -> Result<Response<TransferLeadershipResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn member_add(
        &self,
        request: Request<MemberChangeRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        let name = request.into_inner().name;
        self.asked.lock().expect("lock").push(name.clone());
        if let Some(error) = self.errors.lock().expect("lock").pop_front() {
            return Err(error);
        }
        Ok(Response::new(MemberChangeResponse {
            header: None,
            members: vec![Member {
                name,
                learner: true,
                ..Default::default()
            }],
        }))
    }

    async fn member_promote(
        &self,
        _: Request<MemberChangeRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn member_remove(
        &self,
        _: Request<MemberChangeRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }
}

/// A status as kvstore's own error mapping makes it: the code, and the
/// kind of failure in metadata.
fn with_kind(mut status: Status, kind: &'static str) -> Status {
    status
        .metadata_mut()
        .insert(KIND_METADATA, MetadataValue::from_static(kind));
    status
}

/// Serves a fake with `errors` queued on loopback; gives the fake and a
/// client of it with the write policy `writes`.
async fn serve(errors: Vec<Status>, writes: WriteRetry) -> (Fake, Client) {
    let fake = Fake::default();
    fake.errors.lock().expect("lock").extend(errors);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ClusterServer::new(fake.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let policy = RetryPolicy {
        writes,
        ..RetryPolicy::default()
    };
    let client = Client::new(&[addr.to_string()], policy, Duration::from_secs(10)).expect("client");
    (fake, client)
}

fn asked(fake: &Fake) -> usize {
    fake.asked.lock().expect("lock").len()
}

/// UNAVAILABLE that says the change was not made (not the leader, no
/// leader, replaced by a new leader) is sent again, and succeeds.
#[tokio::test]
async fn a_change_that_certainly_did_not_happen_is_sent_again() {
    let errors = vec![
        with_kind(Status::unavailable("not the leader"), "unavailable"),
        with_kind(Status::unavailable("no leader is known"), "no-leader"),
        with_kind(
            Status::unavailable("the write was not applied"),
            "not-applied",
        ),
    ];
    let (fake, mut client) = serve(errors, WriteRetry::Safe).await;
    let resp = client
        .member_add("kvstore-3")
        .await
        .expect("added on the fourth try");
    assert_eq!(resp.members[0].name, "kvstore-3");
    assert_eq!(asked(&fake), 4);
}

/// DEADLINE_EXCEEDED (the change may have committed) is returned at once,
/// even to a client whose policy repeats writes of unknown outcome: a
/// membership change is never harmless to repeat. So is an UNAVAILABLE
/// that does not say nothing changed (a connection lost mid-request), and
/// so are refusals.
#[tokio::test]
async fn a_change_that_may_have_happened_or_was_refused_is_not_sent_again() {
    let cases = [
        (
            with_kind(
                Status::deadline_exceeded("timed out waiting for the write to commit"),
                "outcome-unknown",
            ),
            Code::DeadlineExceeded,
            true,
        ),
        (
            Status::unavailable("connection reset"),
            Code::Unavailable,
            true,
        ),
        (
            Status::failed_precondition("a membership change is still in progress"),
            Code::FailedPrecondition,
            false,
        ),
        (
            Status::invalid_argument("not a pod of StatefulSet \"kvstore\""),
            Code::InvalidArgument,
            false,
        ),
    ];
    for (error, code, unknown) in cases {
        for writes in [WriteRetry::Safe, WriteRetry::Always] {
            let message = error.message().to_string();
            let (fake, mut client) = serve(vec![error.clone()], writes).await;
            let err: ClientError = client
                .member_add("kvstore-3")
                .await
                .expect_err("not retried into a success");
            assert_eq!(err.code(), Some(code), "{message} ({writes:?})");
            assert!(err.to_string().contains(&message), "{err}");
            assert_eq!(err.outcome_unknown(), unknown, "{message}");
            assert_eq!(asked(&fake), 1, "{message} ({writes:?}) was sent again");
        }
    }
}
