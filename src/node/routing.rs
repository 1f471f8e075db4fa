//! Requests that must be served by the leader: writes, read indexes and
//! leadership transfers. Each goes to the leader's replication thread when
//! this node leads and is forwarded over the peer transport otherwise; one
//! loop ([`NodeHandle::at_leader`]) does that, and retries, within the
//! request's deadline, what certainly did not take effect.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{Input, NodeHandle, WriteResult};
use crate::error::{Error, Result};
use crate::raft::NodeId;
use crate::state::command::Command;

/// Where a request is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// This node leads.
    Here,
    /// Forwarded to the leader.
    Leader(NodeId),
}

/// How a request routed to the leader is retried.
struct Retry {
    /// Whether a failure certainly changed nothing, so that the request may
    /// be sent again.
    retryable: fn(&Error) -> bool,
    /// The error when the deadline passes during an attempt.
    timed_out: fn() -> Error,
}

/// Writes: retried when certainly not applied; a write whose leader does
/// not answer in time may have been applied.
const WRITE: Retry = Retry {
    retryable: |e| {
        matches!(
            e,
            Error::NotApplied(_) | Error::Unavailable { .. } | Error::NoLeader
        )
    },
    timed_out: || Error::OutcomeUnknown("timed out waiting for the leader".into()),
};

/// Read indexes change nothing: retried whenever the leader was not there.
const READ_INDEX: Retry = Retry {
    retryable: |e| matches!(e, Error::Unavailable { .. } | Error::NoLeader),
    timed_out: || Error::Timeout("asking the leader for a read index".into()),
};

/// Transfers: asked once; the caller decides whether to ask again.
const TRANSFER: Retry = Retry {
    retryable: |_| false,
    timed_out: || Error::Timeout("waiting for the leadership transfer".into()),
};

impl NodeHandle {
    /// Runs `attempt` where the leader is, until `deadline`: here when this
    /// node leads, forwarded otherwise. Between attempts that `retry` allows
    /// again, waits for the replication state to change (a new leader), or
    /// a short while.
    async fn at_leader<T, F, Fut>(
        &self,
        deadline: Instant,
        retry: Retry,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(Route) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        loop {
            if self.is_stopping() {
                return Err(Error::ShuttingDown);
            }
            let leader = self.wait_for_leader(deadline).await?;
            let route = if leader == self.0.name.ordinal {
                Route::Here
            } else {
                Route::Leader(leader)
            };
            let result = match tokio::time::timeout_at(deadline.into(), attempt(route)).await {
                Ok(result) => result,
                Err(_) => Err((retry.timed_out)()),
            };
            match result {
                Err(e) if (retry.retryable)(&e) && Instant::now() < deadline => {
                    self.wait_status_change(deadline).await;
                }
                other => return other,
            }
        }
    }

    /// Waits until some leader is known, until `deadline`.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<NodeId> {
        let mut status = self.0.status.clone();
        loop {
            if let Some(leader) = status.borrow_and_update().leader {
                return Ok(leader);
            }
            if self.is_stopping() {
                return Err(Error::ShuttingDown);
            }
            match tokio::time::timeout_at(deadline.into(), status.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::ShuttingDown),
                Err(_) => return Err(Error::NoLeader),
            }
        }
    }

    /// Waits for the replication state to change, or a short while.
    async fn wait_status_change(&self, deadline: Instant) {
        let mut status = self.0.status.clone();
        status.borrow_and_update();
        let until = deadline.min(Instant::now() + Duration::from_millis(50));
        let _ = tokio::time::timeout_at(until.into(), status.changed()).await;
    }

    /// Commits a command and returns its result, forwarding it to the leader
    /// when this node does not lead. Retries internally, within `timeout`,
    /// whatever is certain not to have been applied.
    pub async fn write(&self, command: &Command, timeout: Duration) -> Result<WriteResult> {
        self.check_space(command)?;
        let deadline = Instant::now() + timeout;
        let data = command.encode();
        self.at_leader(deadline, WRITE, |route| {
            let data = data.clone();
            async move {
                match route {
                    Route::Here => self.propose_here(data, deadline).await,
                    Route::Leader(leader) => self.0.peers.forward_write(leader, data).await,
                }
            }
        })
        .await
    }

    /// Commits an encoded command here, only if this node leads (the
    /// receiving end of a follower's forwarded write).
    pub async fn write_as_leader(&self, data: Bytes, timeout: Duration) -> Result<WriteResult> {
        if self.is_stopping() {
            return Err(Error::ShuttingDown);
        }
        self.refuse_unless_leader()?;
        self.propose_here(data, Instant::now() + timeout).await
    }

    /// Confirms leadership and returns the index a linearizable read must
    /// wait for (used locally and for followers' forwarded requests).
    pub async fn read_index(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        self.at_leader(deadline, READ_INDEX, |route| async move {
            match route {
                Route::Here => self.read_index_here().await,
                Route::Leader(leader) => self.0.peers.forward_read_index(leader).await,
            }
        })
        .await
    }

    /// Confirms leadership for a follower's read (leader only).
    pub async fn read_index_as_leader(&self, timeout: Duration) -> Result<u64> {
        self.refuse_unless_leader()?;
        tokio::time::timeout(timeout, self.read_index_here())
            .await
            .unwrap_or_else(|_| Err(Error::Timeout("confirming leadership for a read".into())))
    }

    /// Asks the leader to hand leadership to `to` and waits until it has.
    pub async fn transfer_leadership(&self, to: NodeId, timeout: Duration) -> Result<()> {
        self.check_member(to)?;
        let deadline = Instant::now() + timeout;
        self.at_leader(deadline, TRANSFER, |route| async move {
            match route {
                Route::Here => self.transfer_here(to).await,
                Route::Leader(leader) => self.0.peers.forward_transfer(leader, to).await,
            }
        })
        .await
    }

    /// Hands leadership to `to` (leader only; the receiving end of a
    /// forwarded transfer).
    pub async fn transfer_as_leader(&self, to: NodeId, timeout: Duration) -> Result<()> {
        self.check_member(to)?;
        tokio::time::timeout(timeout, self.transfer_here(to))
            .await
            .unwrap_or_else(|_| Err((TRANSFER.timed_out)()))
    }

    /// Sends an encoded command straight to `peer` to commit as leader (it
    /// answers with its leader's name if it does not lead). For a pod that
    /// is not a member yet, which hears from no leader.
    pub(crate) async fn forward_write_to(&self, peer: NodeId, data: Bytes) -> Result<WriteResult> {
        self.0.peers.forward_write(peer, data).await
    }

    /// Has the leader append a membership change and waits until it is
    /// committed and applied there; returns its log index. A change that
    /// is unsafe now, or comes while another is in flight, is refused with
    /// [`Error::FailedPrecondition`] and changes nothing.
    pub async fn change_membership(
        &self,
        change: crate::raft::MembershipChange,
        timeout: Duration,
    ) -> Result<u64> {
        let command = crate::state::command::MemberChange::from_change(change);
        self.write(&command, timeout).await.map(|r| r.revision)
    }

    /// Waits until this node has applied `index`, until `timeout`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<()> {
        let mut applied = self.0.applied.clone();
        let reached = tokio::time::timeout(timeout, async {
            applied.wait_for(|&a| a >= index).await.map(|_| ())
        })
        .await;
        match reached {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::Unavailable {
                reason: format!(
                    "this node has not applied revision {index} yet (it is at {})",
                    self.applied()
                ),
                leader: self.leader_name(),
            }),
        }
    }

    /// Proposes to this node's replication thread and waits, until
    /// `deadline`, for the write to be applied.
    async fn propose_here(&self, data: Bytes, deadline: Instant) -> Result<WriteResult> {
        let answer = self.ask(|done| Input::Propose { data, done })?;
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::OutcomeUnknown(
                "the node stopped while committing".into(),
            )),
            Err(_) => Err(Error::OutcomeUnknown(
                "timed out waiting for the write to commit".into(),
            )),
        }
    }

    /// Asks this node's replication thread to confirm its leadership.
    async fn read_index_here(&self) -> Result<u64> {
        let answer = self.ask(|done| Input::ReadIndex { done })?;
        answer.await.unwrap_or(Err(Error::ShuttingDown))
    }

    /// Asks this node's replication thread to hand leadership to `to`.
    async fn transfer_here(&self, to: NodeId) -> Result<()> {
        let answer = self.ask(|done| Input::Transfer { to, done })?;
        answer.await.unwrap_or(Err(Error::ShuttingDown))
    }

    /// Sends the replication thread an input that answers on a channel.
    fn ask<T>(
        &self,
        input: impl FnOnce(oneshot::Sender<T>) -> Input,
    ) -> Result<oneshot::Receiver<T>> {
        let (done, answer) = oneshot::channel();
        self.0
            .inbox
            .send(input(done))
            .map_err(|_| Error::ShuttingDown)?;
        Ok(answer)
    }

    /// Refuses a request only the leader may serve, naming the leader.
    fn refuse_unless_leader(&self) -> Result<()> {
        if self.status().leader == Some(self.0.name.ordinal) {
            Ok(())
        } else {
            Err(Error::not_leader(self.leader_name()))
        }
    }

    /// Refuses an ordinal that is not a voter of the configuration.
    fn check_member(&self, to: NodeId) -> Result<()> {
        let membership = self.status().membership;
        if membership.is_voter(to) {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "ordinal {to} is not a voting member (the configuration has {membership})"
        )))
    }

    /// Refuses, before it is proposed, a write that adds data while a
    /// NOSPACE alarm is raised or this member is past its quota.
    fn check_space(&self, command: &Command) -> Result<()> {
        if !command.adds_data() {
            return Ok(());
        }
        let alarms = self.0.state.alarms();
        if !alarms.is_empty() {
            return Err(Error::ResourceExhausted(
                crate::state::space::nospace_refusal(&alarms),
            ));
        }
        let stored = self.0.state.stored_bytes();
        if stored > self.0.space.quota {
            return Err(Error::ResourceExhausted(format!(
                "NOSPACE: this member stores {stored} bytes, over its space quota of {} (--quota-bytes): writes that add data are refused until data is deleted and the history compacted",
                self.0.space.quota
            )));
        }
        Ok(())
    }
}
