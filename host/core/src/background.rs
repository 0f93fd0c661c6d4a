//! Work left to finish in the background (closing sandboxes and test benches, removing used
//! containers) and awaited once, before whatever needs it done (a run's cleanup, a bench's
//! close).

use std::future::Future;
use std::sync::Mutex;

use tokio::task::JoinHandle;

/// Tasks spawned to finish in the background.
#[derive(Debug, Default)]
pub struct Background {
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Background {
    /// Starts `task`; `finished` awaits it.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Waits for every task spawned so far.
    pub async fn finished(&self) {
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finished_waits_for_every_task_spawned() {
        let background = Background::default();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for delay in [30u64, 10, 0] {
            let done = done.clone();
            background.spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        background.finished().await;
        assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
