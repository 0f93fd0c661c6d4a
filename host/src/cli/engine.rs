//! `cbench run --engine …`: where the pairs run (here, a Slurm array, a Kubernetes Indexed
//! Job) and the scheduler's settings, validated.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::CliError;

/// `--engine`: where the pairs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// In this process (default).
    Local,
    /// One Slurm array task per pair (sbatch/squeue/scancel on PATH; a shared --log-dir).
    Slurm,
    /// One Kubernetes Indexed Job per submission (kubeconfig; --k8s-image, --k8s-claim).
    Kubernetes,
}

/// Where the pairs of `cbench run` run, validated.
#[derive(Debug)]
pub enum Engine {
    Local,
    Slurm(crate::slurm::SlurmOptions),
    Kubernetes(cbench_kube::KubeOptions),
}

/// Scheduler settings of `--engine slurm|kubernetes`.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Where the pairs run: here, as a Slurm array or as a Kubernetes Indexed Job (one task
    /// per pair, at most -c at once).
    #[arg(long, value_enum, default_value = "local")]
    pub engine: EngineArg,
    /// CPUs per task (default: the site's).
    #[arg(long, value_name = "N")]
    pub engine_cpus: Option<u32>,
    /// Memory per task, e.g. 8G (default: the site's).
    #[arg(long, value_name = "SIZE")]
    pub engine_mem: Option<String>,
    /// Time limit per task, e.g. 02:00:00 (default: the site's).
    #[arg(long, value_name = "TIME")]
    pub engine_time: Option<String>,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm account.
    #[arg(long)]
    pub account: Option<String>,
    /// Another sbatch argument, passed as it is (repeatable), e.g. --sbatch-arg=--qos=low.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub sbatch_arg: Vec<String>,
    /// Kubernetes: the cbench image the pods run (scripts/cbench-image.sh builds one).
    #[arg(long, value_name = "IMAGE")]
    pub k8s_image: Option<String>,
    /// Kubernetes: the ReadWriteMany PersistentVolumeClaim holding --log-dir (mounted in the
    /// pods at the log directory's absolute path).
    #[arg(long, value_name = "CLAIM")]
    pub k8s_claim: Option<String>,
    /// Kubernetes: namespace (default: the kubeconfig context's).
    #[arg(long, value_name = "NS")]
    pub k8s_namespace: Option<String>,
    /// Kubernetes: a Secret whose keys become the pods' environment (model API keys).
    #[arg(long, value_name = "SECRET")]
    pub k8s_secret: Option<String>,
    /// Kubernetes: the pods' service account.
    #[arg(long, value_name = "NAME")]
    pub k8s_service_account: Option<String>,
    /// Return once submitted (`cbench status` / `cbench cancel` then follow it).
    #[arg(long)]
    pub detach: bool,
}

impl EngineArgs {
    /// The engine and its settings; flags of another engine than the chosen one are refused.
    pub fn engine(&self) -> Result<Engine, CliError> {
        // The engine owns how tasks are numbered, named, started and logged.
        const OWNED: [&str; 12] = [
            "--array",
            "-a",
            "--output",
            "-o",
            "--error",
            "-e",
            "--chdir",
            "-D",
            "--job-name",
            "-J",
            "--wrap",
            "--parsable",
        ];
        if let Some(arg) = self.sbatch_arg.iter().find(|a| {
            OWNED.iter().any(|o| {
                *a == o || a.starts_with(&format!("{o}=")) || (o.len() == 2 && a.starts_with(o))
            })
        }) {
            return Err(CliError::SbatchArg(arg.clone()));
        }
        let deadline = match &self.engine_time {
            Some(t) => Some(slurm_time_seconds(t).ok_or_else(|| CliError::EngineTime(t.clone()))?),
            None => None,
        };
        let given = |flags: &[(&'static str, bool)]| -> Option<&'static str> {
            flags.iter().find(|(_, set)| *set).map(|(f, _)| *f)
        };
        let slurm_only = given(&[
            ("--partition", self.partition.is_some()),
            ("--account", self.account.is_some()),
            ("--sbatch-arg", !self.sbatch_arg.is_empty()),
        ]);
        let kube_only = given(&[
            ("--k8s-image", self.k8s_image.is_some()),
            ("--k8s-claim", self.k8s_claim.is_some()),
            ("--k8s-namespace", self.k8s_namespace.is_some()),
            ("--k8s-secret", self.k8s_secret.is_some()),
            ("--k8s-service-account", self.k8s_service_account.is_some()),
        ]);
        let scheduler = given(&[
            ("--engine-cpus", self.engine_cpus.is_some()),
            ("--engine-mem", self.engine_mem.is_some()),
            ("--engine-time", self.engine_time.is_some()),
            ("--detach", self.detach),
        ]);
        let wrong =
            |flag: &'static str, engine: &'static str| CliError::EngineFlag { flag, engine };
        match self.engine {
            EngineArg::Local => {
                if let Some(f) = slurm_only.or(kube_only).or(scheduler) {
                    return Err(wrong(f, "local"));
                }
                Ok(Engine::Local)
            }
            EngineArg::Slurm => {
                if let Some(f) = kube_only {
                    return Err(wrong(f, "slurm"));
                }
                Ok(Engine::Slurm(crate::slurm::SlurmOptions {
                    cpus: self.engine_cpus,
                    mem: self.engine_mem.clone(),
                    time: self.engine_time.clone(),
                    partition: self.partition.clone(),
                    account: self.account.clone(),
                    extra: self.sbatch_arg.clone(),
                    detach: self.detach,
                    poll: Duration::from_millis(500),
                }))
            }
            EngineArg::Kubernetes => {
                if let Some(f) = slurm_only {
                    return Err(wrong(f, "kubernetes"));
                }
                let (Some(image), Some(claim)) = (&self.k8s_image, &self.k8s_claim) else {
                    return Err(CliError::KubeNeeds);
                };
                Ok(Engine::Kubernetes(cbench_kube::KubeOptions {
                    namespace: self.k8s_namespace.clone(),
                    image: image.clone(),
                    claim: claim.clone(),
                    secret: self.k8s_secret.clone(),
                    service_account: self.k8s_service_account.clone(),
                    cpus: self.engine_cpus,
                    mem: self.engine_mem.clone(),
                    deadline_seconds: deadline,
                    detach: self.detach,
                    poll: Duration::from_millis(500),
                }))
            }
        }
    }
}

/// Seconds of a Slurm time limit: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`.
fn slurm_time_seconds(text: &str) -> Option<i64> {
    let (days, rest) = match text.split_once('-') {
        Some((d, rest)) => (d.parse::<i64>().ok()?, rest),
        None => (0, text),
    };
    let parts: Vec<i64> = rest
        .split(':')
        .map(|p| p.parse::<i64>().ok().filter(|n| *n >= 0))
        .collect::<Option<_>>()?;
    let has_days = text.contains('-');
    let seconds = match (has_days, parts.as_slice()) {
        (false, [m]) => m * 60,
        (false, [m, s]) => m * 60 + s,
        (_, [h, m, s]) => h * 3600 + m * 60 + s,
        (true, [h]) => h * 3600,
        (true, [h, m]) => h * 3600 + m * 60,
        _ => return None,
    };
    let total = days * 86400 + seconds;
    (total > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_time_limits_read_as_seconds() {
        assert_eq!(slurm_time_seconds("30"), Some(1800));
        assert_eq!(slurm_time_seconds("02:00:00"), Some(7200));
        assert_eq!(slurm_time_seconds("1-00:00:00"), Some(86400));
        assert_eq!(slurm_time_seconds("1-2"), Some(93600));
        assert_eq!(slurm_time_seconds("5:30"), Some(330));
        assert_eq!(slurm_time_seconds("-1"), None);
        assert_eq!(slurm_time_seconds("1:2:3:4"), None);
        assert_eq!(slurm_time_seconds("0"), None);
        assert_eq!(slurm_time_seconds("x"), None);
    }
}
