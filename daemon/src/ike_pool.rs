//! The IKE worker pool: std threads that run the IKE engine's jobs (a responder
//! IKE_SA_INIT's D-H and key derivation, `dmvpn_ike::Job`) so a hub's handshakes use more
//! than the control task's core. The engine stays single-threaded and sans-IO: the control
//! task polls jobs out of the node, submits them here, and hands each result back to the
//! node when it arrives on the results channel.
//!
//! Both directions are bounded. A job that does not fit the queue is handed back to the node
//! (the control plane cancels it: the IKE_SA_INIT goes unanswered and is counted, as
//! under the half-open cap), so an IKE_SA_INIT flood costs at most the queue and the engine's
//! half-open SAs, never unbounded memory. Results wait in a channel with room for every job
//! that can be out (the queue plus one per worker), so a worker never blocks for long.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use dmvpn_ike::{Job, JobDone};
use tokio::sync::mpsc;

/// Jobs waiting for a worker at most. A job is a few hundred bytes; the engine's half-open
/// cap (4,096) bounds what can be outstanding anyway, this bounds what waits.
pub const JOB_QUEUE_DEPTH: usize = 1024;

/// Handle to the pool; dropping it stops the workers once they finish their current job.
#[derive(Debug)]
pub struct IkePool {
    jobs: SyncSender<Job>,
    workers: usize,
}

impl IkePool {
    /// Starts `workers` threads (at least one); results arrive on the returned receiver.
    pub fn start(workers: usize) -> std::io::Result<(Self, mpsc::Receiver<JobDone>)> {
        let workers = workers.max(1);
        let (jobs, queue) = sync_channel::<Job>(JOB_QUEUE_DEPTH);
        let (done_tx, done_rx) = mpsc::channel(JOB_QUEUE_DEPTH + workers);
        // One receiver shared by every worker: the lock is held only to take a job, which
        // costs nothing next to the P-256 work the job does.
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..workers {
            let queue = queue.clone();
            let done_tx = done_tx.clone();
            std::thread::Builder::new()
                .name(format!("ike-worker-{i}"))
                .spawn(move || work(&queue, &done_tx))?;
        }
        Ok((Self { jobs, workers }, done_rx))
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Queues a job; gives it back when the queue is full (or the workers are gone).
    // The job only moves through here (and back on refusal): boxing it would cost an
    // allocation per handshake to shrink a return value.
    #[allow(clippy::result_large_err)]
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(j) | TrySendError::Disconnected(j)) => Err(j),
        }
    }
}

/// One worker: takes jobs until the pool is dropped, sends each result back.
fn work(queue: &Mutex<Receiver<Job>>, done: &mpsc::Sender<JobDone>) {
    loop {
        let job = {
            let Ok(q) = queue.lock() else { return };
            match q.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        // The control task is gone (shutting down): the result, keys and all, is dropped
        // and wiped.
        if done.blocking_send(job.run()).is_err() {
            return;
        }
    }
}

/// How many workers `[ike] workers` asks for: `Some(0)` none (inline on the control task),
/// `Some(n)` n, unset one fewer than the CPUs this process may run on (the control task
/// keeps one), none on a single CPU, where a thread would only add switches.
pub fn worker_count(configured: Option<u32>) -> usize {
    match configured {
        Some(n) => n as usize,
        None => std::thread::available_parallelism()
            .map_or(1, usize::from)
            .saturating_sub(1)
            .min(8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_follows_the_configuration() {
        assert_eq!(worker_count(Some(0)), 0);
        assert_eq!(worker_count(Some(3)), 3);
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(worker_count(None), (cpus - 1).min(8));
    }

    #[test]
    fn jobs_come_back_computed_and_answer_their_requests() {
        use dmvpn_crypto::TestRng;
        use dmvpn_ike::{Config, Endpoint};
        use std::net::SocketAddr;
        use std::time::Instant;
        let mut c = Config::default();
        c.keyring.set_wildcard(b"k");
        let mut hub = Endpoint::new(c.clone(), Box::new(TestRng::new(1)));
        hub.set_offload(true);
        let hub_addr: SocketAddr = "198.51.100.1:500".parse().unwrap();
        let now = Instant::now();
        let (pool, mut done) = IkePool::start(2).unwrap();
        let n = 5;
        for i in 0..n {
            let mut spoke = Endpoint::new(c.clone(), Box::new(TestRng::new(10 + i)));
            let from: SocketAddr = format!("10.0.0.{}:500", i + 1).parse().unwrap();
            spoke.initiate(now, from, hub_addr).unwrap();
            let t = spoke.poll_transmit().unwrap();
            hub.handle_datagram(now, hub_addr, from, &t.bytes);
            pool.submit(hub.poll_job().unwrap()).unwrap();
        }
        assert!(hub.poll_transmit().is_none(), "no response before its job");
        for _ in 0..n {
            hub.complete_job(now, done.blocking_recv().unwrap());
        }
        let answered = std::iter::from_fn(|| hub.poll_transmit()).count();
        assert_eq!(answered, n as usize);
        assert_eq!(hub.counters().jobs_late, 0);
    }
}
