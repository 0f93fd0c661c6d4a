//! What a command left behind: its exit code and (capped) output.

/// Result of one command.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExecOutput {
    /// Exit code; -1 when killed by a signal or timed out.
    pub exit_code: i32,
    /// stdout and stderr merged in order, capped.
    pub output: String,
    /// The command hit its timeout and its process group was killed.
    pub timed_out: bool,
    /// Output exceeded the cap and was cut.
    pub truncated: bool,
}
