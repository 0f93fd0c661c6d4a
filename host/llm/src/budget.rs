//! Budgets the host enforces on LLM use, whatever the plugin does: per agent
//! (cost, tokens, wall time; steps are `max_steps`) and per run (total cost).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::TokenUsage;

/// One agent's budget (None: unlimited).
#[derive(Debug, Clone, Default)]
pub struct AgentBudget {
    pub max_cost_usd: Option<f64>,
    /// Input + output + cache tokens.
    pub max_tokens: Option<u64>,
    pub max_wall: Option<Duration>,
    /// The run's shared cost cap.
    pub run: Option<Arc<RunBudget>>,
}

/// The run's total cost cap, shared by every agent.
#[derive(Debug)]
pub struct RunBudget {
    cap_usd: f64,
    /// Spent so far, in micro-dollars (atomic without a lock).
    spent_micro_usd: AtomicU64,
}

impl RunBudget {
    /// A cap of `cap_usd` for the whole run.
    pub fn new(cap_usd: f64) -> Arc<RunBudget> {
        Arc::new(RunBudget {
            cap_usd,
            spent_micro_usd: AtomicU64::new(0),
        })
    }

    /// Adds one call's cost.
    pub fn add(&self, cost_usd: f64) {
        if cost_usd.is_finite() && cost_usd > 0.0 {
            self.spent_micro_usd
                .fetch_add((cost_usd * 1e6).round() as u64, Ordering::Relaxed);
        }
    }

    /// Spent so far.
    pub fn spent(&self) -> f64 {
        self.spent_micro_usd.load(Ordering::Relaxed) as f64 / 1e6
    }
}

impl AgentBudget {
    /// Why the next call may not be made, if it may not.
    pub fn exhausted(&self, cost_usd: f64, usage: &TokenUsage, started: Instant) -> Option<String> {
        if let Some(max) = self.max_cost_usd {
            if cost_usd >= max {
                return Some(format!(
                    "cost limit of ${max:.2} reached (${cost_usd:.4} spent)"
                ));
            }
        }
        if let Some(max) = self.max_tokens {
            let used = usage.input_tokens
                + usage.output_tokens
                + usage.cache_read_tokens
                + usage.cache_write_tokens;
            if used >= max {
                return Some(format!("token limit of {max} reached ({used} used)"));
            }
        }
        if let Some(max) = self.max_wall {
            if started.elapsed() >= max {
                return Some(format!("wall-time limit of {} s reached", max.as_secs()));
            }
        }
        if let Some(run) = &self.run {
            if run.spent() >= run.cap_usd {
                return Some(format!(
                    "the run's cost cap of ${:.2} is spent (${:.4})",
                    run.cap_usd,
                    run.spent()
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_stops_the_next_call() {
        let started = Instant::now();
        let usage = TokenUsage {
            input_tokens: 900,
            output_tokens: 100,
            ..TokenUsage::default()
        };
        let none = AgentBudget::default();
        assert_eq!(none.exhausted(100.0, &usage, started), None);
        let cost = AgentBudget {
            max_cost_usd: Some(3.0),
            ..AgentBudget::default()
        };
        assert_eq!(cost.exhausted(2.99, &usage, started), None);
        assert!(cost
            .exhausted(3.0, &usage, started)
            .unwrap()
            .contains("cost limit of $3.00"));
        let tokens = AgentBudget {
            max_tokens: Some(1000),
            ..AgentBudget::default()
        };
        assert!(tokens
            .exhausted(0.0, &usage, started)
            .unwrap()
            .contains("token limit"));
        let run = RunBudget::new(1.0);
        let shared = AgentBudget {
            run: Some(run.clone()),
            ..AgentBudget::default()
        };
        run.add(0.6);
        assert_eq!(shared.exhausted(0.0, &usage, started), None);
        run.add(0.4);
        assert!(shared
            .exhausted(0.0, &usage, started)
            .unwrap()
            .contains("cost cap"));
    }
}
