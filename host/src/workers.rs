//! The threads that share out a run's heavier work (feeding the detectors side by side). One
//! per core, made once: a thread made per task costs about what the task saves.

use std::sync::OnceLock;

/// The pool; none when there is one core, or when the system gives no threads (then the work
/// runs on the caller's thread, one task after another).
pub fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads < 2 {
            return None;
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("nixtest-worker-{i}"))
            // A plugin call runs on the thread that makes it (as on a runtime's own threads).
            .stack_size(crate::plugin::CALL_THREAD_STACK)
            .build()
            .map_err(|e| tracing::warn!("no worker threads, the work runs one task at a time: {e}"))
            .ok()
    })
    .as_ref()
}

/// `f` over `items` side by side on the pool (one after another without it); the results in
/// the items' order, whichever finished first.
pub fn map_in_order<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    match pool() {
        Some(pool) => pool.install(|| items.par_iter().map(f).collect()),
        None => items.iter().map(f).collect(),
    }
}
