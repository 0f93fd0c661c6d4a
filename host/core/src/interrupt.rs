//! What to say (and offer) when a signal stops cbench, beyond "stopped": e.g. that a Slurm
//! job goes on without the process that submitted it, and whether to cancel it.

use std::sync::Mutex;

static NOTE: Mutex<Option<String>> = Mutex::new(None);
static CANCEL: Mutex<Option<Cancel>> = Mutex::new(None);

/// What Ctrl-C may also stop: work this process handed to a scheduler, which goes on without it
/// unless cancelled.
#[derive(Debug, Clone)]
pub struct Cancel {
    /// What to ask, e.g. `cancel Slurm job 12 too?`.
    pub question: String,
    /// The `cbench` arguments that cancel it (`cancel -n RUN --log-dir DIR`).
    pub args: Vec<String>,
}

/// Registers what an interactive Ctrl-C offers to cancel.
pub fn set_cancel(cancel: Cancel) {
    if let Ok(mut c) = CANCEL.lock() {
        *c = Some(cancel);
    }
}

/// What an interactive Ctrl-C offers to cancel, if anything.
pub fn cancel() -> Option<Cancel> {
    CANCEL.lock().ok().and_then(|c| c.clone())
}

/// Sets the line printed if a signal stops this process.
pub fn set_note(note: String) {
    if let Ok(mut n) = NOTE.lock() {
        *n = Some(note);
    }
}

/// The line to print on a signal, if one was set.
pub fn note() -> Option<String> {
    NOTE.lock().ok().and_then(|n| n.clone())
}
