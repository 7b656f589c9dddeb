//! Suspects are rendered in the sandbox, from async code, without blocking the runtime.
//!
//! The sandbox's API is blocking (it writes to a child's pipe and polls for the reply), so
//! it lives on one dedicated thread that owns it for the whole run. One thread and one
//! long-lived worker process, because after a connection loss every in-flight message comes
//! back as a suspect at once: a process per suspect is the wrong shape. Requests are queued
//! and rendered one after another, each named to the worker before it starts, so a death
//! names its culprit; the sandbox respawns its worker for the next one.

use std::io;
use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;

use crate::check;
use crate::config::Limits;
use crate::sandbox::Run;

/// A body to render, and where its result goes. The body comes back with the result, so a
/// crashed suspect can be dead-lettered without a copy being kept aside.
struct Job {
    body: Vec<u8>,
    reply: oneshot::Sender<(Vec<u8>, io::Result<Run>)>,
}

/// The handle async code renders suspects through. Dropping it ends the thread, which
/// retires the worker process.
#[derive(Debug)]
pub struct Suspects {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("len", &self.body.len())
            .finish()
    }
}

impl Suspects {
    /// Starts the sandbox thread. The worker process itself starts with the first suspect,
    /// so a consumer that never sees one never pays for it.
    pub fn start(limits: &Limits, line_format: &str) -> io::Result<Suspects> {
        let mut sandbox = check::sandbox_for(limits, line_format)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("logfence-sandbox".into())
            .spawn(move || {
                for Job { body, reply } in queue {
                    let run = sandbox.run(&body);
                    // The asker may be gone (shutdown): the result then has nowhere to go.
                    let _ = reply.send((body, run));
                }
            })?;
        Ok(Suspects { jobs })
    }

    /// Renders `body` in the sandbox. `Err` means the sandbox itself is unavailable (the
    /// worker cannot be started), which says nothing about the record.
    pub async fn render(&self, body: Vec<u8>) -> (Vec<u8>, io::Result<Run>) {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::SendError(job)) = self.jobs.send(Job { body, reply }) {
            return (
                job.body,
                Err(io::Error::other("the sandbox thread is gone")),
            );
        }
        match answer.await {
            Ok(done) => done,
            Err(_) => (
                Vec::new(),
                Err(io::Error::other("the sandbox thread dropped the record")),
            ),
        }
    }
}
