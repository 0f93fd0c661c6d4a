//! A message between agents, as buses deliver it and logs record it.

use serde::{Deserialize, Serialize};

/// A message as stored in inboxes and in conversation.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub from: String,
    pub to: String,
    pub content: String,
    /// Milliseconds since the Unix epoch when the bus accepted it.
    pub timestamp: u64,
}
