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

/// `f` over `items`, side by side on the pool when `side_by_side` (and there is a pool), else
/// one after another on this thread; the results in the items' order either way.
pub fn map_in_order<T: Sync, R: Send>(
    items: &[T],
    side_by_side: bool,
    f: impl Fn(&T) -> R + Sync + Send,
) -> Vec<R> {
    use rayon::prelude::*;
    match pool().filter(|_| side_by_side) {
        Some(pool) => pool.install(|| items.par_iter().map(f).collect()),
        None => items.iter().map(f).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_the_items_order_either_way() {
        let items: Vec<u64> = (0..500).collect();
        // Uneven work, so that on the pool later items can finish first.
        let work = |&i: &u64| (0..(500 - i) * 200).fold(i, |a, b| a ^ b.rotate_left(7)) ^ i;
        let serial: Vec<u64> = items.iter().map(work).collect();
        assert_eq!(map_in_order(&items, true, work), serial);
        assert_eq!(map_in_order(&items, false, work), serial);
    }
}
