//! Connection threads: each SFTP connection runs, with every task it starts, on one thread.
//!
//! An SFTP session is a chain of small round trips: OpenSSH's `get` of a small file is about
//! seven of them (`LSTAT`, `STAT`, `OPEN`, `FSTAT`, `READ`, `READ`, `CLOSE`). On tokio's
//! work-stealing runtime the connection's session task, its channel task and every task woken
//! from the blocking pool may each run on either worker, and each hop between threads is a
//! futex wake-up and a context switch — on a 2-vCPU machine about as costly as the request
//! itself. [`ConnectionThreads`] runs N threads, each driving a current-thread runtime; each new
//! connection is placed on one of them (round robin) and its tasks wake each other without
//! leaving that thread. Connections still spread over every core, and blocking work (the store's
//! read transactions, blob crypto) still goes to a blocking pool (one per thread).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let threads = sdx_portal::sftp::ConnectionThreads::start(2)?;
//! let rt = tokio::runtime::Runtime::new()?;
//! let on = rt.block_on(threads.next_handle().spawn(async {
//!     std::thread::current().name().map(String::from)
//! }))?;
//! assert_eq!(on.as_deref(), Some("sdx-conn-0"));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// A fixed set of threads, each running a current-thread tokio runtime, for connections (see the
/// module docs). Dropping it stops the threads; tasks still on them are dropped.
pub struct ConnectionThreads {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
}

impl fmt::Debug for ConnectionThreads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionThreads")
            .field("threads", &self.handles.len())
            .finish_non_exhaustive()
    }
}

impl ConnectionThreads {
    /// Starts `n` threads (at least one), named `sdx-conn-<i>`.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        for i in 0..n.max(1) {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("sdx-conn-{i}-blocking"))
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    stop.cancel();
                    return Err(e);
                }
            };
            let handle = rt.handle().clone();
            let until = stop.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sdx-conn-{i}"))
                // The runtime is shut down on its own thread once the set is dropped.
                .spawn(move || rt.block_on(until.cancelled()));
            if let Err(e) = spawned {
                stop.cancel();
                return Err(e);
            }
            handles.push(handle);
        }
        Ok(ConnectionThreads {
            handles,
            next: AtomicUsize::new(0),
            stop,
        })
    }

    /// The number of threads.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always `false`: a set has at least one thread.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The runtime of the thread the next connection goes to (round robin).
    pub fn next_handle(&self) -> Handle {
        // `start` made at least one, so the index is in range.
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].clone()
    }
}

impl Drop for ConnectionThreads {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_owned()
    }

    /// Connections go round robin over the threads, and what a connection's task spawns stays on
    /// its thread, blocking work included (its result comes back to the same thread).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_spread_and_their_tasks_stay_on_one_thread() {
        let threads = ConnectionThreads::start(2).unwrap();
        assert_eq!(threads.len(), 2);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let names = threads
                .next_handle()
                .spawn(async {
                    let outer = thread_name();
                    let inner = tokio::spawn(async { thread_name() }).await.unwrap();
                    let blocking = tokio::task::spawn_blocking(thread_name).await.unwrap();
                    let after = thread_name();
                    (outer, inner, blocking, after)
                })
                .await
                .unwrap();
            assert!(names.0.starts_with("sdx-conn-"), "{names:?}");
            assert_eq!(
                names.0, names.1,
                "a spawned task left the connection's thread"
            );
            assert_eq!(names.0, names.3, "the task moved after blocking work");
            assert_eq!(names.2, format!("{}-blocking", names.0));
            seen.push(names.0);
        }
        assert_eq!(
            seen,
            ["sdx-conn-0", "sdx-conn-1", "sdx-conn-0", "sdx-conn-1"]
        );
    }

    /// Dropping the set stops its threads: a task still waiting there is dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_set_stops_its_threads() {
        let threads = ConnectionThreads::start(1).unwrap();
        let waiting = threads.next_handle().spawn(std::future::pending::<()>());
        drop(threads);
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the thread did not stop")
            .unwrap_err();
        assert!(e.is_cancelled());
    }
}
