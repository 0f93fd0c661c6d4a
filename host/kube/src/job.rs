//! The Indexed Job of one submission: `completions` = the pairs submitted, `parallelism` = -c,
//! pod `i` running `cbench run-pair --manifest M --index $(JOB_COMPLETION_INDEX) --pairs …`
//! with the run's log directory mounted from the user's ReadWriteMany claim at the same path.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, HostPathVolumeSource, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecretEnvSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

/// Label on every Job and pod cbench creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "cbench");
/// Label naming the run (label-safe form; the exact name is in [`RUN_ANNOTATION`]).
pub const RUN_LABEL: &str = "cbench.dev/run";
/// Annotation holding the run's exact name.
pub const RUN_ANNOTATION: &str = "cbench.dev/run-name";
/// Annotation listing the pairs (manifest positions) the Job's indices stand for.
pub const PAIRS_ANNOTATION: &str = "cbench.dev/pairs";

/// Everything the Job is made from.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub run: String,
    /// The submission's number within the run (0 for the first).
    pub submission: usize,
    pub image: String,
    /// The ReadWriteMany claim holding the log directory.
    pub claim: String,
    /// Where the claim is mounted: the log directory's absolute path, as the submitter sees it.
    pub mount_path: String,
    /// The task's working directory (the manifest's `cwd`).
    pub working_dir: String,
    pub manifest_path: String,
    pub manifest_sha256: String,
    /// Manifest positions of the pairs, in index order.
    pub pairs: Vec<usize>,
    pub parallelism: usize,
    pub cpus: Option<u32>,
    pub mem: Option<String>,
    pub deadline_seconds: Option<i64>,
    /// A Secret whose keys become the pods' environment (model API keys).
    pub secret: Option<String>,
    pub service_account: Option<String>,
    /// The pods reach the node's Docker engine (`--backend docker`).
    pub docker_socket: bool,
}

/// A DNS-1123 label from free text: lowercase alphanumerics and `-`, at most `max` characters,
/// with a short hash of the text so two names that clean up alike stay distinct.
pub fn dns_label(text: &str, max: usize) -> String {
    let mut clean: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while clean.contains("--") {
        clean = clean.replace("--", "-");
    }
    let hash = hex::encode(&Sha256::digest(text.as_bytes())[..4]);
    let room = max.saturating_sub(hash.len() + 1);
    let head: String = clean.trim_matches('-').chars().take(room).collect();
    let head = head.trim_end_matches('-');
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// The Job's name: `cbench-<run>-<hash>-<submission>`, short enough for pod hostnames.
pub fn job_name(run: &str, submission: usize) -> String {
    format!("cbench-{}-{submission}", dns_label(run, 40))
}

/// The Job object for `req`.
pub fn build(req: &JobRequest) -> Job {
    let labels: BTreeMap<String, String> = [
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (RUN_LABEL.to_string(), dns_label(&req.run, 63)),
    ]
    .into();
    let annotations: BTreeMap<String, String> = [
        (RUN_ANNOTATION.to_string(), req.run.clone()),
        (
            PAIRS_ANNOTATION.to_string(),
            cbench_run::cluster::index_ranges(&req.pairs),
        ),
    ]
    .into();
    let mut mounts = vec![VolumeMount {
        name: "runs".into(),
        mount_path: req.mount_path.clone(),
        ..Default::default()
    }];
    let mut volumes = vec![Volume {
        name: "runs".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: req.claim.clone(),
            read_only: None,
        }),
        ..Default::default()
    }];
    if req.docker_socket {
        mounts.push(VolumeMount {
            name: "docker-sock".into(),
            mount_path: "/var/run/docker.sock".into(),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "docker-sock".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/var/run/docker.sock".into(),
                type_: Some("Socket".into()),
            }),
            ..Default::default()
        });
    }
    let mut limits = BTreeMap::new();
    if let Some(c) = req.cpus {
        limits.insert("cpu".to_string(), Quantity(c.to_string()));
    }
    if let Some(m) = &req.mem {
        limits.insert("memory".to_string(), Quantity(kube_quantity(m)));
    }
    let resources = (!limits.is_empty()).then(|| ResourceRequirements {
        requests: Some(limits.clone()),
        limits: Some(limits),
        ..Default::default()
    });
    let container = Container {
        name: "cbench".into(),
        image: Some(req.image.clone()),
        command: Some(vec!["cbench".into()]),
        args: Some(vec![
            "run-pair".into(),
            "--manifest".into(),
            req.manifest_path.clone(),
            // The Job controller sets JOB_COMPLETION_INDEX in every container's environment;
            // Kubernetes expands $(VAR) in args from it.
            "--index".into(),
            "$(JOB_COMPLETION_INDEX)".into(),
            format!("--pairs={}", cbench_run::cluster::index_ranges(&req.pairs)),
        ]),
        working_dir: Some(req.working_dir.clone()),
        env: Some(vec![EnvVar {
            name: cbench_run::cluster::MANIFEST_HASH_VAR.into(),
            value: Some(req.manifest_sha256.clone()),
            value_from: None,
        }]),
        env_from: req.secret.as_ref().map(|name| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: name.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }]
        }),
        volume_mounts: Some(mounts),
        resources,
        // bubblewrap mounts a fresh /proc for each sandbox, which the kernel refuses while the
        // runtime masks parts of the pod's /proc; unmasking it needs a user-namespaced pod.
        security_context: Some(SecurityContext {
            proc_mount: Some("Unmasked".into()),
            allow_privilege_escalation: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&req.run, req.submission)),
            labels: Some(labels.clone()),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: Some(req.pairs.len() as i32),
            parallelism: Some(req.parallelism.clamp(1, req.pairs.len().max(1)) as i32),
            // One attempt per pair: a pod that dies is that pair's infrastructure error, which
            // the rerun resubmits; its siblings go on (the limit counts per index).
            backoff_limit_per_index: Some(0),
            active_deadline_seconds: None,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    active_deadline_seconds: req.deadline_seconds,
                    service_account_name: req.service_account.clone(),
                    // The agents' sandbox is bubblewrap inside the pod: it needs user
                    // namespaces, which the runtime's default seccomp profile refuses; the pod
                    // runs in its own user namespace, so its root is not the node's.
                    host_users: Some(false),
                    security_context: Some(PodSecurityContext {
                        seccomp_profile: Some(SeccompProfile {
                            type_: "Unconfined".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// `8G` (Slurm's spelling) as Kubernetes writes it (`8Gi`); other spellings pass as they are.
fn kube_quantity(mem: &str) -> String {
    match mem.strip_suffix(['K', 'M', 'G', 'T']) {
        Some(n) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
            format!("{mem}i")
        }
        _ => mem.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels_and_stay_distinct() {
        let a = job_name("Coop run/with spaces_and_UNDERSCORES", 0);
        assert!(a.len() <= 52, "{a}");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert_ne!(dns_label("a_b", 63), dns_label("a-b", 63));
        assert_eq!(dns_label("!!!", 63).len(), 8);
        assert!(dns_label(&"x".repeat(200), 63).len() <= 63);
    }

    #[test]
    fn memory_is_written_in_binary_units() {
        assert_eq!(kube_quantity("8G"), "8Gi");
        assert_eq!(kube_quantity("512M"), "512Mi");
        assert_eq!(kube_quantity("1.5Gi"), "1.5Gi");
    }
}
