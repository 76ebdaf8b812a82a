//! Requests the harness submits for an administrator (a scenario's `apply` and `delete`, the
//! main job's volumes and consumers): they enter by the server's front door, as `kubectl`'s
//! would, so they meet what a real cluster puts in their way — API faults, authentication (as a
//! member of `system:masters`) and the admission webhooks. A webhook is called over the simulated
//! network, so a task on the API server's host answers them (see
//! [`ApiServer::answer_submitted`]), one at a time and in order, as one `kubectl` sends them.
//! While that host is down they wait, as a client's retries would.

use std::sync::{Arc, Mutex};

use super::{ApiServer, Request, Response};

/// Where the answer to a submitted request arrives.
#[derive(Clone, Default)]
pub struct Answer(Arc<Mutex<AnswerState>>);

#[derive(Default)]
struct AnswerState {
    response: Option<Response>,
    /// The asker stopped waiting: if the request was not taken yet, it is never sent.
    abandoned: bool,
}

impl Answer {
    fn lock(&self) -> std::sync::MutexGuard<'_, AnswerState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The response, once the server answered (taken: a second call gives `None`).
    pub fn take(&self) -> Option<Response> {
        self.lock().response.take()
    }

    pub fn answered(&self) -> bool {
        self.lock().response.is_some()
    }

    /// Gives up on the request: a request still queued is dropped unsent (one already taken may
    /// still be committed, as with a client that timed out).
    pub fn abandon(&self) {
        self.lock().abandoned = true;
    }
}

impl ApiServer {
    /// Queues `request` for [`ApiServer::answer_submitted`].
    pub fn submit(&self, request: Request) -> Answer {
        let answer = Answer::default();
        self.inner.submitted.lock().unwrap_or_else(|e| e.into_inner()).push_back((request, answer.clone()));
        self.inner.submitted_ready.notify_one();
        answer
    }

    /// Answers the submitted requests, in order, for as long as the host that runs it is up.
    pub async fn answer_submitted(&self) {
        loop {
            let next = self.inner.submitted.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            match next {
                Some((_, answer)) if answer.lock().abandoned => {}
                Some((request, answer)) => {
                    let response = self.handle(request).await;
                    answer.lock().response = Some(response);
                }
                // A request submitted after the queue was found empty leaves a permit behind.
                None => self.inner.submitted_ready.notified().await,
            }
        }
    }
}
