//! `cbench export`: a run's trajectories in formats other tools read.

pub mod atif;
