//! `--shard I/N`: which pairs one of N invocations runs, so one run can be spread over N
//! machines writing into one shared log dir (a Kubernetes Indexed Job, a Slurm job array). A
//! pair belongs to shard `sha256(pair key) mod N`: stable across machines, resumes and
//! selections, and independent of the dataset's order.

use sha2::{Digest, Sha256};

use crate::dataset::Pair;

/// Shard `index` of `count` (0-based, as `JOB_COMPLETION_INDEX` and `SLURM_ARRAY_TASK_ID`
/// with `--array=0-(N-1)` are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let usage = "use I/N with 0 <= I < N, e.g. 0/4 (I is 0-based like JOB_COMPLETION_INDEX)";
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}`: {usage}"))?;
        let (index, count) = match (i.trim().parse::<u32>(), n.trim().parse::<u32>()) {
            (Ok(i), Ok(n)) => (i, n),
            _ => return Err(format!("`{text}`: {usage}")),
        };
        if count == 0 || index >= count {
            return Err(format!("`{text}`: {usage}"));
        }
        Ok(Shard { index, count })
    }
}

/// The pair's key: `<repo>/task<id>/features_<a>_<b>` (its directory in the run).
pub fn pair_key(pair: &Pair) -> String {
    pair.log_dir(std::path::Path::new("")).display().to_string()
}

impl Shard {
    /// Whether this shard runs `pair`.
    pub fn owns(&self, pair: &Pair) -> bool {
        let digest = Sha256::digest(pair_key(pair).as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first) % u64::from(self.count) == u64::from(self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_zero_based_and_refuse_the_rest() {
        assert_eq!("1/4".parse(), Ok(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "1/0", "a/2", "3", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
