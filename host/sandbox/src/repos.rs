//! Upstream base repositories: cloned once into a cache at the task's base
//! commit, with every ref and object after that commit removed, so agents see
//! the project as it was (tags up to the base stay, for version tooling).
//!
//! `--repo-cache DIR` clones `https://github.com/<owner>/<name>` from
//! `DIR/<owner>/<name>` (bare or not) instead of the network.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Mutex, OnceCell};

use crate::base::BaseRepo;
use crate::dataset::metadata::github_owner_and_name;
use crate::dataset::{RepoSource, Task};
use crate::docker::REPO_DIR;
use crate::git::git;
use crate::io;
use crate::SandboxError;
use cbench_docker::container::Container;
use cbench_docker::{Engine, RunLabels};

/// Each task's base repository, prepared once per process and shared by its
/// sandboxes and graders (which only ever copy it).
pub struct BaseRepos {
    scratch: PathBuf,
    upstream: UpstreamRepos,
    images: Option<ImageBases>,
    modal: Option<ModalBases>,
    /// Each task's base, or why it could not be prepared (tried once: every pair of the
    /// task would fail the same way, slowly).
    repos: Mutex<HashMap<String, Arc<Prepared>>>,
}

/// One task's base once prepared, or why it could not be.
type Prepared = OnceCell<Result<Arc<BaseRepo>, String>>;

/// Docker backend: bases are copied out of the task images, so grading merges
/// exactly the repository the agents saw (and no upstream clone is needed).
#[derive(Debug, Clone)]
pub struct ImageBases {
    pub engine: Arc<Engine>,
    pub image_prefix: String,
    pub labels: RunLabels,
}

/// Where bases come from on the modal backend: the task image's repository, archived by a
/// fresh sandbox no agent has used.
pub struct ModalBases {
    pub images: Arc<crate::modal::ModalImages>,
    pub image_prefix: String,
    pub labels: RunLabels,
}

impl BaseRepos {
    /// Bundled bases are committed under `scratch`; upstream ones come from `upstream`.
    pub fn new(scratch: &Path, upstream: UpstreamRepos) -> BaseRepos {
        BaseRepos {
            scratch: scratch.to_path_buf(),
            upstream,
            images: None,
            modal: None,
            repos: Mutex::default(),
        }
    }

    /// Takes every base from the task's image instead.
    pub fn from_images(mut self, images: ImageBases) -> BaseRepos {
        self.images = Some(images);
        self
    }

    /// Bases are copied out of the task images through Modal sandboxes.
    pub fn from_modal(mut self, modal: ModalBases) -> BaseRepos {
        self.modal = Some(modal);
        self
    }

    /// The task's base repository, created on first use.
    pub async fn get(&self, task: &Task) -> Result<Arc<BaseRepo>, SandboxError> {
        let key = format!("{}-task{}", task.repo, task.id);
        let cell = self
            .repos
            .lock()
            .await
            .entry(key.clone())
            .or_default()
            .clone();
        let prepared = cell
            .get_or_init(|| async {
                self.prepare(task, &key)
                    .await
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .await;
        prepared.clone().map_err(|why| {
            SandboxError::Command(format!(
                "{}/task{}: the base repository could not be prepared: {why}",
                task.repo, task.id
            ))
        })
    }

    async fn prepare(&self, task: &Task, key: &str) -> Result<BaseRepo, SandboxError> {
        if let Some(images) = &self.images {
            return export_from_image(images, task, &self.scratch.join(key)).await;
        }
        if let Some(modal) = &self.modal {
            return export_from_modal(modal, task, &self.scratch.join(key)).await;
        }
        match &task.source {
            RepoSource::Bundled(tree) => {
                BaseRepo::from_source_tree(tree, &self.scratch.join(key)).await
            }
            RepoSource::Upstream { url, commit } => Ok(BaseRepo {
                path: self.upstream.prepare(url, commit).await?,
                commit: commit.clone(),
            }),
            RepoSource::Unknown(why) => Err(SandboxError::Command(format!(
                "{}: cannot tell where the base repository comes from: {why}",
                task.dir.display()
            ))),
        }
    }
}

/// Where upstream repositories come from and where prepared bases are kept.
#[derive(Debug, Clone)]
pub struct UpstreamRepos {
    /// Prepared bases live in `<cache_dir>/bases/`.
    pub cache_dir: PathBuf,
    /// `--repo-cache`: local copies laid out as `<owner>/<name>`.
    pub mirror_dir: Option<PathBuf>,
}

impl UpstreamRepos {
    /// Where to clone `url` from: the local mirror when configured, else the URL.
    pub fn clone_source(&self, url: &str) -> Result<String, SandboxError> {
        let Some(mirror) = &self.mirror_dir else {
            return Ok(url.to_string());
        };
        let Some((owner, name)) = github_owner_and_name(url) else {
            return Err(SandboxError::Command(format!(
                "--repo-cache {}: cannot map {url} to <owner>/<name> (only GitHub URLs are mapped)",
                mirror.display()
            )));
        };
        for candidate in [
            mirror.join(&owner).join(&name),
            mirror.join(&owner).join(format!("{name}.git")),
        ] {
            if candidate.is_dir() {
                return Ok(candidate.display().to_string());
            }
        }
        Err(SandboxError::Command(format!(
            "--repo-cache {}: no local copy of {url}; expected a git repository at {}",
            mirror.display(),
            mirror.join(&owner).join(&name).display()
        )))
    }

    /// A prepared repository at `commit` (branch `main`), created once and reused.
    pub async fn prepare(&self, url: &str, commit: &str) -> Result<PathBuf, SandboxError> {
        let (owner, name) =
            github_owner_and_name(url).unwrap_or_else(|| ("other".into(), sanitize(url)));
        let bases = self.cache_dir.join("bases").join(&owner);
        let final_dir = bases.join(format!("{name}@{commit}"));
        if final_dir.join(".git").is_dir() {
            return Ok(final_dir);
        }
        let source = self.clone_source(url)?;
        std::fs::create_dir_all(&bases).map_err(io(format!("creating {}", bases.display())))?;
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{name}-"))
            .tempdir_in(&bases)
            .map_err(io("creating a staging dir"))?;
        let repo = staging.path().join("repo");
        if let Err(full) = with_history(staging.path(), &repo, &source, url, commit).await {
            // A clone missing objects somewhere in its history (a `--filter=blob:none` clone,
            // a damaged snapshot) cannot be cloned whole or garbage-collected, yet holds the
            // base commit's tree: take that alone.
            tracing::info!("{url}@{commit}: {full}; preparing the base from its tree alone");
            if repo.exists() {
                std::fs::remove_dir_all(&repo).map_err(io("clearing a failed clone"))?;
            }
            tree_only(&repo, &source, commit).await.map_err(|tree| {
                SandboxError::Command(format!(
                    "preparing the base {commit} of {url} from {source}: {tree} (the whole clone failed first: {full})"
                ))
            })?;
        }
        match std::fs::rename(&repo, &final_dir) {
            Ok(()) => Ok(final_dir),
            // Another cbench prepared it meanwhile; theirs is as good as ours.
            Err(_) if final_dir.join(".git").is_dir() => Ok(final_dir),
            Err(e) => Err(io(format!(
                "moving the prepared base to {}",
                final_dir.display()
            ))(e)),
        }
    }
}

/// Copies `/workspace/repo` out of the task's image into `dest/repo`.
async fn export_from_image(
    images: &ImageBases,
    task: &Task,
    dest: &Path,
) -> Result<BaseRepo, SandboxError> {
    let image = task.image(&images.image_prefix);
    cbench_docker::images::inspect(&images.engine, &image, task).await?;
    let container = Container::create_stopped(
        &images.engine,
        &image,
        images.labels.object(&task.label(), "", "base-export"),
    )
    .await?;
    std::fs::create_dir_all(dest).map_err(io(format!("creating {}", dest.display())))?;
    let archive = dest.join("repo.tar");
    let result = async {
        container.download_to_file(REPO_DIR, &archive).await?;
        let file = std::fs::File::open(&archive).map_err(io("opening the exported repository"))?;
        let mut tar = tar::Archive::new(file);
        tar.set_preserve_permissions(true);
        tar.unpack(dest)
            .map_err(io(format!("unpacking {REPO_DIR} of {image}")))?;
        Ok::<_, SandboxError>(())
    }
    .await;
    let _ = std::fs::remove_file(&archive);
    container.remove().await?;
    result?;
    let path = dest.join("repo");
    let commit = git(&path, &["rev-parse", "HEAD"], &[])
        .await?
        .trim()
        .to_string();
    Ok(BaseRepo { path, commit })
}

async fn export_from_modal(
    modal: &ModalBases,
    task: &Task,
    dest: &Path,
) -> Result<BaseRepo, SandboxError> {
    let tag = task.image(&modal.image_prefix);
    let image_id = modal.images.get(&tag).await?;
    let definition = cbench_modal::SandboxDefinition {
        image_id,
        entrypoint_args: crate::modal::keep_alive(),
        cpus: 1.0,
        memory_mib: 2048,
        timeout_secs: 900,
        workdir: "/".into(),
        block_network: true,
        tags: crate::modal::tags_of(modal.labels.object(&task.label(), "", "base-export")),
    };
    let sandbox = cbench_modal::RemoteSandbox::create(
        modal.images.client().clone(),
        modal.images.app_id(),
        &definition,
        crate::modal::START_WAIT,
    )
    .await?;
    let archived = sandbox
        .exec(&cbench_modal::ExecRequest {
            argv: ["tar", "-C", "/workspace", "-cf", "-", "repo"]
                .map(String::from)
                .to_vec(),
            timeout: std::time::Duration::from_secs(600),
            stdout_cap: 2 << 30,
            stderr_cap: 16 << 10,
            ..Default::default()
        })
        .await;
    let _ = sandbox.terminate().await;
    let archived = archived?;
    if archived.stdout_truncated {
        return Err(SandboxError::Command(format!(
            "image {tag}: {REPO_DIR} is over 2 GiB as an archive"
        )));
    }
    if archived.exit_code != Some(0) {
        return Err(SandboxError::Command(format!(
            "image {tag}: archiving {REPO_DIR} failed: {}",
            String::from_utf8_lossy(&archived.stderr).trim()
        )));
    }
    std::fs::create_dir_all(dest).map_err(io(format!("creating {}", dest.display())))?;
    let mut tar = tar::Archive::new(std::io::Cursor::new(archived.stdout));
    tar.set_preserve_permissions(true);
    tar.unpack(dest)
        .map_err(io(format!("unpacking {REPO_DIR} of {tag}")))?;
    let path = dest.join("repo");
    let commit = git(&path, &["rev-parse", "HEAD"], &[])
        .await?
        .trim()
        .to_string();
    Ok(BaseRepo { path, commit })
}

fn sanitize(url: &str) -> String {
    url.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The base with its history up to `commit`: a clone, checked out, later history removed.
async fn with_history(
    staging: &Path,
    repo: &Path,
    source: &str,
    url: &str,
    commit: &str,
) -> Result<(), SandboxError> {
    let repo_arg = repo.display().to_string();
    git(
        staging,
        &["clone", "-q", "--no-checkout", source, &repo_arg],
        &[],
    )
    .await
    .map_err(|e| SandboxError::Command(format!("cloning {url} from {source}: {e}")))?;
    let object = format!("{commit}^{{commit}}");
    if git(repo, &["rev-parse", "-q", "--verify", &object], &[])
        .await
        .is_err()
    {
        return Err(SandboxError::Command(format!(
            "base commit {commit} of {url} is not in {source}"
        )));
    }
    git(repo, &["checkout", "-q", "-B", "main", commit], &[]).await?;
    truncate_history(repo, commit).await
}

/// The base as the one commit `commit` (a shallow fetch: only its tree's objects are read
/// from `source`), with the tags that name it.
async fn tree_only(repo: &Path, source: &str, commit: &str) -> Result<(), SandboxError> {
    std::fs::create_dir_all(repo).map_err(io(format!("creating {}", repo.display())))?;
    git(repo, &["init", "-q"], &[]).await?;
    // A local path is fetched over file:// (depth is ignored otherwise), from a server that
    // may be asked for any commit by id.
    let from = if source.contains("://") {
        source.to_string()
    } else {
        let absolute = std::path::absolute(source).map_err(io(format!("resolving {source}")))?;
        format!("file://{}", absolute.display())
    };
    git(
        repo,
        &[
            "fetch",
            "-q",
            "--depth=1",
            "--no-tags",
            "--upload-pack=git -c uploadpack.allowAnySHA1InWant=true upload-pack",
            &from,
            commit,
        ],
        &[],
    )
    .await?;
    git(repo, &["checkout", "-q", "-B", "main", "FETCH_HEAD"], &[]).await?;
    if !source.contains("://") {
        let source_dir = Path::new(source);
        if let Ok(tags) = git(source_dir, &["tag", "--points-at", commit], &[]).await {
            for tag in tags.lines().map(str::trim).filter(|t| !t.is_empty()) {
                let _ = git(repo, &["tag", tag, commit], &[]).await;
            }
        }
    }
    Ok(())
}

/// Removes every ref except `main` and the tags reachable from `commit`, the
/// remote, the reflogs, and then the objects nothing reaches any more.
async fn truncate_history(repo: &Path, commit: &str) -> Result<(), SandboxError> {
    let keep_tags = git(repo, &["tag", "--merged", commit], &[]).await?;
    let keep: std::collections::HashSet<String> = keep_tags
        .lines()
        .map(|t| format!("refs/tags/{}", t.trim()))
        .chain(std::iter::once("refs/heads/main".to_string()))
        .collect();
    let refs = git(repo, &["for-each-ref", "--format=%(refname)"], &[]).await?;
    for r in refs
        .lines()
        .map(str::trim)
        .filter(|r| !r.is_empty() && !keep.contains(*r))
    {
        git(repo, &["update-ref", "-d", r], &[]).await?;
    }
    let _ = git(repo, &["remote", "remove", "origin"], &[]).await;
    git(repo, &["reflog", "expire", "--expire=now", "--all"], &[]).await?;
    git(repo, &["gc", "-q", "--prune=now"], &[]).await?;
    Ok(())
}
