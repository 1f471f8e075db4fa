//! Asking every member of a cluster for its status, poll after poll: what
//! `kvctl top` and `kvstore demo --top` show ([`kvstore_top::Source`]).
//!
//! The members are the endpoints given and, unless told not to follow,
//! the peers their statuses report, at the client addresses the members
//! resolve them to ([`crate::peers`]), as `kvctl status` finds them. A
//! member once known is asked at every poll, answering or not, over one
//! connection kept for the whole run; the model behind the view decides
//! what a failure means.

use std::ops::Range;
use std::time::Duration;

use tonic::Status;

use kvstore_proto::kv::StatusResponse;
use kvstore_top::{Answer, Source};

use crate::peers::{tls_for_peer, unseen_peers};
use crate::{Client, ClientError, RetryPolicy, TlsOptions};

/// Asks every member known for its status, once per [`StatusPoller::poll_all`].
pub struct StatusPoller {
    tls: Option<TlsOptions>,
    timeout: Duration,
    follow: bool,
    /// Every member known, in the order found.
    known: Vec<Known>,
    answered: bool,
}

/// A member known: where to ask it, and how.
struct Known {
    endpoint: String,
    tls: Option<TlsOptions>,
    /// Its client, once made.
    client: Option<Client>,
}

impl StatusPoller {
    /// A poller of `endpoints` (and, if `follow`, the peers they report),
    /// over TLS if `tls` is given, waiting `timeout` for each answer.
    pub fn new(
        endpoints: &[String],
        tls: Option<TlsOptions>,
        timeout: Duration,
        follow: bool,
    ) -> StatusPoller {
        let known = endpoints
            .iter()
            .map(|e| Known {
                endpoint: e.clone(),
                tls: tls.clone(),
                client: None,
            })
            .collect();
        StatusPoller {
            tls,
            timeout,
            follow,
            known,
            answered: false,
        }
    }

    /// Whether any member has answered any poll yet.
    pub fn ever_answered(&self) -> bool {
        self.answered
    }

    /// Asks every member known, then the peers their answers name that
    /// were not known yet; gives each member's answer.
    pub async fn poll_all(&mut self) -> Vec<(String, Result<StatusResponse, ClientError>)> {
        let mut answers = self.ask(0..self.known.len()).await;
        // Every member names all its peers, so one round finds them all;
        // a second covers a member that knew fewer than the others.
        for _ in 0..2 {
            if !self.follow {
                break;
            }
            let first_new = self.known.len();
            let asked: Vec<String> = self.known.iter().map(|k| k.endpoint.clone()).collect();
            let statuses = answers.iter().filter_map(|(_, r)| r.as_ref().ok());
            for peer in unseen_peers(statuses, &asked) {
                self.known.push(Known {
                    tls: self.tls.as_ref().map(|t| tls_for_peer(t, &peer.dns_name)),
                    endpoint: peer.client_address,
                    client: None,
                });
            }
            if self.known.len() == first_new {
                break;
            }
            answers.extend(self.ask(first_new..self.known.len()).await);
        }
        self.answered |= answers.iter().any(|(_, r)| r.is_ok());
        answers
    }

    /// Asks the members in `range` at once, each within the timeout.
    async fn ask(
        &mut self,
        range: Range<usize>,
    ) -> Vec<(String, Result<StatusResponse, ClientError>)> {
        let timeout = self.timeout;
        let queries = self.known[range].iter_mut().map(|k| async move {
            let answer = match k.client(timeout) {
                Ok(c) => match tokio::time::timeout(timeout, c.status_of(0)).await {
                    Ok(answer) => answer,
                    Err(_) => Err(ClientError::Status(Status::deadline_exceeded(format!(
                        "no answer within {} ms",
                        timeout.as_millis()
                    )))),
                },
                Err(e) => Err(e),
            };
            (k.endpoint.clone(), answer)
        });
        futures::future::join_all(queries).await
    }
}

impl Known {
    /// The member's client, made at its first poll (a channel needs the
    /// runtime) and kept; one that cannot be made is tried again at the
    /// next poll.
    fn client(&mut self, timeout: Duration) -> Result<Client, ClientError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let endpoints = std::slice::from_ref(&self.endpoint);
        let c = Client::with_tls(
            endpoints,
            RetryPolicy::default(),
            timeout,
            self.tls.as_ref(),
        )?;
        self.client = Some(c.clone());
        Ok(c)
    }
}

impl Source for StatusPoller {
    async fn poll(&mut self) -> Vec<Answer> {
        self.poll_all()
            .await
            .into_iter()
            .map(|(endpoint, status)| Answer {
                endpoint,
                status: status.map_err(|e| e.reason()),
            })
            .collect()
    }
}
