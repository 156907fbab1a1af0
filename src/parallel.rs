//! CPU work shared out over a few threads, for start-up's bulk passes (storage recovery, hash
//! tree builds) that nothing else runs beside.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `work` on `threads` threads over items taken from `items` in turn; each thread's
/// results, in no particular order.
pub fn on_threads<I: Sync, T: Send, E: Send>(
    threads: usize,
    items: &[I],
    init: impl Fn() -> T + Sync,
    work: impl Fn(&mut T, &I) -> Result<(), E> + Sync,
) -> Result<Vec<T>, E> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.clamp(1, items.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut state = init();
                    while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                        work(&mut state, item)?;
                    }
                    Ok(state)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}
