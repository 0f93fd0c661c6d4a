//! Task images: naming, presence checks, and `cbench images build` from the task's Dockerfile.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;

use super::{is_not_found, DockerError, Engine};
use crate::dataset::Task;

/// The build argument bundled Dockerfiles take their base image from.
pub const BASE_IMAGE_ARG: &str = "BASE_IMAGE";

/// What an image offers the harness.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The image id (`sha256:…`).
    pub id: String,
    /// The test entry point: the image's ENTRYPOINT (CooperBench images use
    /// `/usr/local/bin/runner.sh`), else `runner.sh` on PATH.
    pub runner: Vec<String>,
    /// The image's PATH (a login shell's profile would reset it).
    pub path_env: Option<String>,
}

/// Inspects `image`; a missing one is `MissingImage` with the command that builds it.
pub async fn inspect(engine: &Engine, image: &str, task: &Task) -> Result<ImageInfo, DockerError> {
    match engine.api().inspect_image(image).await {
        Ok(info) => {
            let config = info.config.unwrap_or_default();
            let runner = config
                .entrypoint
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| vec!["runner.sh".into()]);
            let path_env = config
                .env
                .unwrap_or_default()
                .into_iter()
                .find_map(|e| e.strip_prefix("PATH=").map(str::to_string));
            Ok(ImageInfo {
                id: info.id.unwrap_or_default(),
                runner,
                path_env,
            })
        }
        Err(e) if is_not_found(&e) => Err(DockerError::MissingImage {
            image: image.to_string(),
            hint: build_hint(task, image),
        }),
        Err(e) => Err(DockerError::api(format!("inspecting image {image}"))(e)),
    }
}

/// The command that builds `task`'s image named `image`.
pub fn build_hint(task: &Task, image: &str) -> String {
    let repo = task.repo.strip_suffix("_task").unwrap_or(&task.repo);
    let default_name = task.image(crate::dataset::metadata::DEFAULT_IMAGE_PREFIX);
    let prefix = match image.strip_suffix(
        default_name.trim_start_matches(crate::dataset::metadata::DEFAULT_IMAGE_PREFIX),
    ) {
        Some(p) if image != default_name => format!(" --image-prefix {p}"),
        _ => String::new(),
    };
    if task.dir.join("repo").is_dir() {
        format!(
            "cbench images build -r {repo} -t {}{prefix} --base-image <image with git and python3, e.g. from scripts/docker-base.sh>",
            task.id
        )
    } else {
        format!(
            "cbench images build -r {repo} -t {}{prefix} (needs network)",
            task.id
        )
    }
}

/// Builds `task`'s image as `tag` from its Dockerfile, with the task directory as context.
/// `base_image` is passed as the `BASE_IMAGE` build argument (bundled tasks build offline from it).
/// Build output lines go to `log`.
pub async fn build(
    engine: &Arc<Engine>,
    task: &Task,
    tag: &str,
    base_image: Option<&str>,
    labels: HashMap<String, String>,
    mut log: impl FnMut(&str),
) -> Result<String, DockerError> {
    let dockerfile = task.dir.join("Dockerfile");
    if !dockerfile.is_file() {
        return Err(DockerError::Other(format!(
            "{}: no Dockerfile to build {tag} from",
            task.dir.display()
        )));
    }
    let context = context_archive(&task.dir)?;
    let mut buildargs = HashMap::new();
    if let Some(base) = base_image {
        buildargs.insert(BASE_IMAGE_ARG.to_string(), base.to_string());
    }
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .buildargs(&buildargs)
        .labels(&labels)
        .build();
    let mut stream =
        engine
            .api()
            .build_image(options, None, Some(bollard::body_full(context.into())));
    let mut last_lines: Vec<String> = Vec::new();
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            // The engine's error alone ("exit code 1") says nothing: show what the build printed.
            Err(e) => {
                return Err(build_failure(
                    tag,
                    &dockerfile,
                    &e.to_string(),
                    &last_lines,
                    base_image,
                ))
            }
        };
        if let Some(text) = info.stream.as_deref() {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                log(line);
                last_lines.push(line.to_string());
                if last_lines.len() > 20 {
                    last_lines.remove(0);
                }
            }
        }
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(build_failure(
                tag,
                &dockerfile,
                &err,
                &last_lines,
                base_image,
            ));
        }
    }
    let built = engine
        .api()
        .inspect_image(tag)
        .await
        .map_err(DockerError::api(format!("inspecting the new image {tag}")))?;
    Ok(built.id.unwrap_or_default())
}

/// A failed build's error: the engine's message once (build output repeating it is left out),
/// what the build printed before, and, when a base image could not be pulled, how to give one.
fn build_failure(
    tag: &str,
    dockerfile: &Path,
    error: &str,
    last_lines: &[String],
    base_image: Option<&str>,
) -> DockerError {
    let earlier: Vec<&str> = last_lines
        .iter()
        .map(String::as_str)
        .filter(|line| !error.contains(line.trim()) && !line.trim().contains(error.trim()))
        .collect();
    let mut text = format!("building {tag} from {}: {error}", dockerfile.display());
    if !earlier.is_empty() {
        text.push_str(&format!("\nlast build output:\n{}", earlier.join("\n")));
    }
    let pull_failed = [
        "pull access denied",
        "registry",
        "dial tcp",
        "lookup ",
        "manifest",
    ]
    .iter()
    .any(|needle| error.contains(needle));
    if pull_failed && base_image.is_none() {
        text.push_str(
            "\nhint: the base image could not be pulled; build one offline with \
             scripts/docker-base.sh and pass it with --base-image",
        );
    }
    DockerError::Other(text)
}

/// The task directory as a tar build context (feature patches included: small, and a
/// Dockerfile may COPY anything from the task).
fn context_archive(dir: &Path) -> Result<Vec<u8>, DockerError> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder
        .append_dir_all(".", dir)
        .map_err(|e| DockerError::Other(format!("archiving {}: {e}", dir.display())))?;
    builder
        .into_inner()
        .map_err(|e| DockerError::Other(format!("archiving {}: {e}", dir.display())))
}

/// Builds the image of every task in `pairs` (each task once); existing images are
/// kept unless `force`. Progress goes to stderr.
pub async fn build_tasks(
    engine: &Arc<Engine>,
    pairs: &[crate::dataset::Pair],
    image_prefix: &str,
    base_image: Option<&str>,
    force: bool,
) -> Result<(), DockerError> {
    let mut seen = std::collections::BTreeSet::new();
    for pair in pairs {
        let task = &pair.task;
        if !seen.insert((task.repo.clone(), task.id)) {
            continue;
        }
        let tag = task.image(image_prefix);
        if !force && engine.api().inspect_image(&tag).await.is_ok() {
            eprintln!("{tag}: already built (--force rebuilds)");
            continue;
        }
        let started = std::time::Instant::now();
        eprintln!(
            "{tag}: building from {}",
            task.dir.join("Dockerfile").display()
        );
        let labels = HashMap::from([(super::LABEL_TASK.to_string(), task.label())]);
        let id = build(engine, task, &tag, base_image, labels, |line| {
            tracing::info!("{tag}: {line}")
        })
        .await?;
        eprintln!(
            "{tag}: built {} in {:.1} s",
            &id[..id.len().min(19)],
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
