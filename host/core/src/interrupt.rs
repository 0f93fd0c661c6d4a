//! What to say when a signal stops cbench, beyond "stopped": e.g. that a Slurm job goes on
//! without the process that submitted it.

use std::sync::Mutex;

static NOTE: Mutex<Option<String>> = Mutex::new(None);

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
