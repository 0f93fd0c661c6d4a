//! The `oracle` model: replays each agent's gold patch through the real agent loop.
//!
//! Coop: one message to the teammates naming the files it will change, then the
//! patch, then the submit command. Solo: every feature's patch in turn (3-way when needed,
//! overlapping hunks kept side by side), reporting honestly when one does not apply, then
//! submit.

use async_trait::async_trait;

use super::{
    bash_reply, builtin_completion, AgentBrief, Completion, CompletionRequest, FeatureBrief,
    LlmError, LlmSession, Model,
};

/// Marker the apply command prints when a gold patch does not apply.
const APPLY_FAILED: &str = "CBENCH_ORACLE_APPLY_FAILED";
const SUBMIT: &str = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";

/// The oracle model.
pub struct Oracle;

impl Model for Oracle {
    fn id(&self) -> &str {
        "oracle"
    }

    fn session(&self, brief: &AgentBrief) -> Box<dyn LlmSession> {
        let mut plan = Vec::new();
        if brief.setting.one_agent_per_feature()
            && brief.messaging_enabled
            && !brief.teammates.is_empty()
        {
            plan.push(Step::Announce);
        }
        plan.extend(brief.features.iter().cloned().map(Step::Apply));
        plan.push(Step::Submit);
        Box::new(OracleSession {
            brief: brief.clone(),
            plan,
            next: 0,
            failed: Vec::new(),
            pending_check: None,
        })
    }
}

enum Step {
    Announce,
    Apply(FeatureBrief),
    Submit,
}

struct OracleSession {
    brief: AgentBrief,
    plan: Vec<Step>,
    next: usize,
    failed: Vec<u32>,
    /// The feature whose apply result the next request's last message reports.
    pending_check: Option<u32>,
}

/// Files a unified diff touches (`+++ b/<path>` lines, and deletions' `--- a/<path>`).
pub fn files_in_patch(patch: &str) -> Vec<String> {
    let mut files = Vec::new();
    for line in patch.lines() {
        let path = line
            .strip_prefix("+++ b/")
            .or_else(|| line.strip_prefix("--- a/"));
        if let Some(p) = path {
            let p = p.trim().to_string();
            if !files.contains(&p) {
                files.push(p);
            }
        }
    }
    files
}

/// The bash command that applies (and commits) one feature's gold patch.
pub fn apply_command(feature: &FeatureBrief) -> String {
    let mut delimiter = "CBENCH_ORACLE_PATCH_EOF".to_string();
    while feature.gold_patch.contains(&delimiter) {
        delimiter.push('_');
    }
    let id = feature.id;
    // Each applied patch is committed so a failed apply can be rolled back to exactly the
    // previous features; the host diffs against the base anyway. A solo agent's second
    // feature often adds code where its first did: when the 3-way apply conflicts only
    // because both added lines at one place, each conflicted file keeps both sides (`git
    // merge-file --union`), as an agent writing both features would. Two rewrites of the same
    // lines cannot both hold: that feature is reported as not applied.
    format!(
        "p=\"$TMPDIR/oracle-feature{id}.patch\"\ncat > \"$p\" <<'{delimiter}'\n{patch}\n{delimiter}\n\
         oracle_union() {{\n\
         \x20 git diff --name-only --diff-filter=U -z | {{ found=; while IFS= read -r -d '' f; do found=1\n\
         \x20   git show \":1:$f\" > \"$TMPDIR/oracle-base\" 2>/dev/null || : > \"$TMPDIR/oracle-base\"\n\
         \x20   git show \":2:$f\" > \"$TMPDIR/oracle-ours\" && git show \":3:$f\" > \"$TMPDIR/oracle-theirs\" || exit 1\n\
         \x20   git merge-file -p --diff3 \"$TMPDIR/oracle-ours\" \"$TMPDIR/oracle-base\" \"$TMPDIR/oracle-theirs\" \\\n\
         \x20     | awk 'substr($0,1,7)==\"|||||||\"{{b=1;next}} $0==\"=======\"{{b=0;next}} b{{bad=1}} END{{exit bad}}' || exit 1\n\
         \x20   git merge-file --union \"$TMPDIR/oracle-ours\" \"$TMPDIR/oracle-base\" \"$TMPDIR/oracle-theirs\"\n\
         \x20   cat \"$TMPDIR/oracle-ours\" > \"$f\" && git add -- \"$f\" || exit 1\n\
         \x20 done; [ -n \"$found\" ]; }}\n\
         }}\n\
         git add -A && {{ git apply \"$p\" || git apply --3way \"$p\" || oracle_union; }} \\\n\
         && git add -A && git commit -q --no-gpg-sign -m 'oracle: feature {id}' \\\n\
         && echo \"applied feature {id}\" \\\n\
         || {{ git reset -q --hard HEAD; git clean -fdq; echo \"{APPLY_FAILED} feature={id}\"; }}",
        patch = feature.gold_patch.trim_end_matches('\n'),
    )
}

#[async_trait]
impl LlmSession for OracleSession {
    async fn complete(&mut self, request: &CompletionRequest) -> Result<Completion, LlmError> {
        if let Some(id) = self.pending_check.take() {
            let last = request
                .messages
                .last()
                .map(|m| m.content.as_str())
                .unwrap_or("");
            if last.contains(&format!("{APPLY_FAILED} feature={id}")) {
                self.failed.push(id);
            }
        }
        let Some(step) = self.plan.get(self.next) else {
            return Err(LlmError::Provider(
                "oracle: asked again after submitting; the agent ignored the submit command".into(),
            ));
        };
        self.next += 1;
        let call_id = format!("oracle-{}-{}", self.brief.agent_id, self.next);
        let (thought, command) = match step {
            Step::Announce => {
                let mut command = String::new();
                let files: Vec<String> = self
                    .brief
                    .features
                    .iter()
                    .flat_map(|f| files_in_patch(&f.gold_patch))
                    .collect();
                for mate in &self.brief.teammates {
                    command.push_str(&format!(
                        "send_message {mate} <<'MSG'\nI am {me}; I will change: {files}\nMSG\n",
                        me = self.brief.agent_id,
                        files = files.join(", ")
                    ));
                }
                (
                    "I will tell my teammates which files I am changing.".to_string(),
                    command,
                )
            }
            Step::Apply(feature) => {
                self.pending_check = Some(feature.id);
                (
                    format!("Applying my implementation of feature {}.", feature.id),
                    apply_command(feature),
                )
            }
            Step::Submit => {
                let thought = if self.failed.is_empty() {
                    "All changes are in place; submitting.".to_string()
                } else {
                    let ids: Vec<String> = self.failed.iter().map(u32::to_string).collect();
                    format!(
                        "The patch for feature {} did not apply on top of the others; submitting what applied.",
                        ids.join(", ")
                    )
                };
                (thought, format!("echo {SUBMIT}"))
            }
        };
        let (content, tool_calls) = bash_reply(request, &thought, &command, call_id);
        Ok(builtin_completion(request, content, tool_calls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_in_patch_lists_changed_new_and_deleted_files() {
        let patch = "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@\ndiff --git a/n.py b/n.py\n--- /dev/null\n+++ b/n.py\n@@\ndiff --git a/d.py b/d.py\n--- a/d.py\n+++ /dev/null\n";
        assert_eq!(files_in_patch(patch), vec!["x.py", "n.py", "d.py"]);
    }
}
