//! Per-task metadata read from the task's own files: where the base repository
//! comes from (a bundled tree, or an upstream URL and base commit parsed from
//! the Dockerfile / setup.sh) and the task's container image name.

use std::path::{Path, PathBuf};

/// Default image naming: `<prefix><repo without _task, _ → ->:task<id>`.
pub const DEFAULT_IMAGE_PREFIX: &str = "akhatua/cooperbench-";

/// Where a task's base repository comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoSource {
    /// A plain source tree shipped with the task (`repo/`).
    Bundled(PathBuf),
    /// An upstream git repository at a base commit.
    Upstream { url: String, commit: String },
    /// Neither could be determined; running the task fails with this reason.
    Unknown(String),
}

/// Finds the upstream URL and base commit in the Dockerfile, then setup.sh.
pub fn repo_source(task_dir: &Path) -> RepoSource {
    let bundled = task_dir.join("repo");
    if bundled.is_dir() {
        return RepoSource::Bundled(bundled);
    }
    let mut problems = Vec::new();
    for name in ["Dockerfile", "setup.sh"] {
        let path = task_dir.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            problems.push(format!("{} is missing or unreadable", path.display()));
            continue;
        };
        match (clone_url(&text), checkout_commit(&text)) {
            (Some(url), Some(commit)) => return RepoSource::Upstream { url, commit },
            (None, _) => problems.push(format!("{}: no `git clone <url>`", path.display())),
            (_, None) => problems.push(format!(
                "{}: no `git checkout <40-hex commit>`",
                path.display()
            )),
        }
    }
    RepoSource::Unknown(problems.join("; "))
}

/// The URL of the first `git clone [flags] <url>` in a shell-ish text.
pub fn clone_url(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let after = line.split("git clone").nth(1)?;
        after
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '"' || c == '\''))
            .find(|w| !w.starts_with('-') && (w.contains("://") || w.starts_with("git@")))
            .map(str::to_string)
    })
}

/// The commit of the first `git checkout <40-hex>` in a shell-ish text.
pub fn checkout_commit(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let after = line.split("git checkout").nth(1)?;
        after
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '"' || c == '\'' || c == ';'))
            .find(|w| w.len() == 40 && w.chars().all(|c| c.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase)
    })
}

/// `dottxt_ai_outlines_task`, 1655 → `akhatua/cooperbench-dottxt-ai-outlines:task1655`.
pub fn image_name(prefix: &str, repo: &str, task_id: u64) -> String {
    let name = repo.strip_suffix("_task").unwrap_or(repo).replace('_', "-");
    format!("{prefix}{name}:task{task_id}")
}

/// `https://github.com/<owner>/<name>(.git)` → (`owner`, `name`).
pub fn github_owner_and_name(url: &str) -> Option<(String, String)> {
    let rest = url
        .strip_prefix("https://github.com/")
        .or_else(|| url.strip_prefix("http://github.com/"))
        .or_else(|| url.strip_prefix("git@github.com:"))?;
    let mut parts = rest.trim_end_matches('/').splitn(2, '/');
    let owner = parts.next()?.to_string();
    let name = parts.next()?.trim_end_matches(".git").to_string();
    (!owner.is_empty() && !name.is_empty() && !name.contains('/')).then_some((owner, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_reference_dockerfile_shape() {
        let text = "WORKDIR /workspace\nRUN git clone https://github.com/openai/tiktoken repo && \\\n    cd repo && \\\n    git checkout 4560a8896f5fb1d35c6f8fd6eee0399f9a1a27ca\n";
        assert_eq!(
            clone_url(text).as_deref(),
            Some("https://github.com/openai/tiktoken")
        );
        assert_eq!(
            checkout_commit(text).as_deref(),
            Some("4560a8896f5fb1d35c6f8fd6eee0399f9a1a27ca")
        );
    }

    #[test]
    fn clone_flags_are_skipped_and_short_refs_are_not_commits() {
        assert_eq!(
            clone_url("git clone --depth 1 https://x.org/a.git repo").as_deref(),
            Some("https://x.org/a.git")
        );
        assert_eq!(checkout_commit("git checkout main"), None);
    }

    #[test]
    fn image_names_follow_the_dataset_convention() {
        assert_eq!(
            image_name(DEFAULT_IMAGE_PREFIX, "dottxt_ai_outlines_task", 1655),
            "akhatua/cooperbench-dottxt-ai-outlines:task1655"
        );
        assert_eq!(
            image_name(DEFAULT_IMAGE_PREFIX, "openai_tiktoken_task", 0),
            "akhatua/cooperbench-openai-tiktoken:task0"
        );
    }

    #[test]
    fn github_urls_map_to_owner_and_name() {
        assert_eq!(
            github_owner_and_name("https://github.com/dottxt-ai/outlines.git"),
            Some(("dottxt-ai".into(), "outlines".into()))
        );
        assert_eq!(github_owner_and_name("https://gitlab.com/a/b"), None);
    }
}
