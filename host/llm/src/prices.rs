//! The price table: USD per million tokens per model, from `data/prices.json`
//! (compiled in) or a user's file of the same shape (`--prices`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::TokenUsage;

/// The table shipped with cbench.
const BUILTIN: &str = include_str!("../../../data/prices.json");

/// One model's prices, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
}

impl Price {
    /// The cost of one call's usage.
    pub fn cost(&self, usage: &TokenUsage) -> f64 {
        let per_token = |per_million: f64, tokens: u64| per_million * tokens as f64 / 1e6;
        per_token(self.input, usage.input_tokens)
            + per_token(self.output, usage.output_tokens)
            + per_token(
                self.cache_read.unwrap_or(self.input),
                usage.cache_read_tokens,
            )
            + per_token(
                self.cache_write.unwrap_or(self.input),
                usage.cache_write_tokens,
            )
    }
}

#[derive(Debug, Deserialize)]
struct PriceFile {
    models: BTreeMap<String, Price>,
}

/// A price table.
#[derive(Debug, Clone)]
pub struct PriceTable {
    models: BTreeMap<String, Price>,
}

/// A price file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("price table {path}: {reason}")]
pub struct PriceError {
    pub path: PathBuf,
    pub reason: String,
}

impl PriceTable {
    /// The built-in table.
    pub fn builtin() -> PriceTable {
        let file: PriceFile = serde_json::from_str(BUILTIN).unwrap_or(PriceFile {
            models: BTreeMap::new(),
        });
        PriceTable {
            models: file.models,
        }
    }

    /// The built-in table with `path`'s entries added or replacing built-in ones.
    pub fn with_overrides(path: &Path) -> Result<PriceTable, PriceError> {
        let err = |reason: String| PriceError {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: PriceFile = serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "{e} (expected {{\"models\": {{\"<model>\": {{\"input\": …, \"output\": …}}}}}})"
            ))
        })?;
        let mut table = PriceTable::builtin();
        for (name, price) in file.models {
            if !(price.input >= 0.0 && price.output >= 0.0) {
                return Err(err(format!("{name}: prices must be non-negative numbers")));
            }
            table.models.insert(name, price);
        }
        Ok(table)
    }

    /// The price of `model`: the full string, else without its provider prefix, exactly or the longest
    /// table name it starts with followed by `-` (dated snapshots like `…-20250929`).
    pub fn lookup(&self, model: &str) -> Option<Price> {
        // The full model string first (`openai/smollm2-135m`, as the warning names it).
        if let Some(p) = self.models.get(model) {
            return Some(*p);
        }
        let name = model.rsplit('/').next().unwrap_or(model);
        if let Some(p) = self.models.get(name) {
            return Some(*p);
        }
        self.models
            .iter()
            .filter(|(k, _)| {
                name.strip_prefix(k.as_str())
                    .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('@'))
            })
            .max_by_key(|(k, _)| k.len())
            .map(|(_, p)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_table_parses_and_prices_a_call() {
        let table = PriceTable::builtin();
        let price = table.lookup("gpt-4o").expect("gpt-4o is priced");
        let usage = TokenUsage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cache_read_tokens: 200_000,
            cache_write_tokens: 0,
        };
        assert!((price.cost(&usage) - (2.50 + 1.00 + 0.25)).abs() < 1e-9);
    }

    #[test]
    fn dated_snapshots_and_prefixes_find_their_model() {
        let table = PriceTable::builtin();
        assert_eq!(
            table.lookup("anthropic/claude-sonnet-4-5-20250929"),
            table.lookup("claude-sonnet-4-5")
        );
        // The longest name wins: gpt-4o-mini is not priced as gpt-4o.
        assert_eq!(
            table.lookup("gpt-4o-mini-2024-07-18"),
            table.lookup("gpt-4o-mini")
        );
        assert_eq!(table.lookup("my-local-model"), None);
        assert_eq!(table.lookup("gpt-4oops"), None);
    }
}
