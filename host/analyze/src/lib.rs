//! Why coordination failed (`cbench analyze`, and after every graded run): deterministic
//! detectors over a graded pair's files, for the failure modes CooperBench's documentation
//! names — agents that do not integrate their partner's state, questions that go unanswered,
//! promises that are broken or cannot be checked — plus pairs that never spoke.
//!
//! Everything read here (messages, trajectories, patches, test logs) is the agents' data:
//! it is parsed, never run, and the verdicts are evidence for a reader, not grades.

pub mod claims;
pub mod diff;
pub mod judge;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cbench_core::fsutil::{self, FsError};
use cbench_core::message::Message;
use cbench_eval::EvalReport;
use cbench_llm::trajectory::Trajectory;
use serde::{Deserialize, Serialize};

use claims::ClaimKind;
use diff::{Overlap, PatchSummary};

/// Version of the detectors: part of analysis.json, so a reader knows which rules flagged.
pub const ANALYSIS_VERSION: &str = "cbench-analysis-1";
/// A pair's analysis, beside its eval.json.
pub const PAIR_FILE: &str = "analysis.json";

/// Why a pair or run could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("{0} has no eval.json: grade the run first (`cbench eval`)")]
    NotGraded(PathBuf),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    NoPairs(#[from] cbench_core::layout::NoPairs),
}

/// A failure mode of CooperBench's taxonomy (plus the silent pair).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Each agent's patch passes alone, the merged tree fails: one did not integrate the
    /// other's changes.
    PartnerStateIntegration,
    /// A question was never answered by its addressee.
    UnansweredQuestion,
    /// A claim about the sender's own patch is contradicted by that patch.
    BrokenPromise,
    /// A promise names nothing that can be checked ("I'll add a docstring").
    UnverifiablePromise,
    /// No agent sent a message.
    SilentPair,
}

impl FailureMode {
    /// Every mode, in the order reports list them.
    pub const ALL: [FailureMode; 5] = [
        FailureMode::PartnerStateIntegration,
        FailureMode::UnansweredQuestion,
        FailureMode::BrokenPromise,
        FailureMode::UnverifiablePromise,
        FailureMode::SilentPair,
    ];

    /// Its name in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            FailureMode::PartnerStateIntegration => "partner-state integration",
            FailureMode::UnansweredQuestion => "unanswered question",
            FailureMode::BrokenPromise => "broken promise",
            FailureMode::UnverifiablePromise => "unverifiable promise",
            FailureMode::SilentPair => "silent pair",
        }
    }
}

/// One agent's messaging.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentMessages {
    pub agent_id: String,
    pub sent: usize,
    pub received: usize,
    /// Messages its trajectory shows it was given (`receive_message` steps).
    pub read: usize,
}

/// A question and whether its addressee answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    /// Index of the message in conversation.json.
    pub message: usize,
    pub from: String,
    pub to: String,
    pub text: String,
    pub timestamp_ms: u64,
    /// Whether the addressee's trajectory shows the message given to it.
    pub read: bool,
    /// The first later message from the addressee to the asker (its index), if any.
    pub answered_by: Option<usize>,
    /// Every addressee had finished before it was asked (not flagged: nobody could answer).
    #[serde(default)]
    pub asked_after_addressee_finished: bool,
}

/// Whether a claim holds against the sender's own patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Kept,
    Broken,
    Unverifiable,
}

/// A claim, checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckedClaim {
    pub message: usize,
    pub from: String,
    pub kind: ClaimKind,
    pub sentence: String,
    pub files: Vec<String>,
    pub names: Vec<String>,
    pub verdict: Verdict,
    /// Why, in words: `its patch changes textkit/strings.py`.
    pub evidence: String,
    /// Partners whose patches also changed a file this claim reserved ("I will change X").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_changed_by: Vec<String>,
}

/// Two agents' patches touching the same file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairOverlap {
    pub agents: (String, String),
    #[serde(flatten)]
    pub overlap: Overlap,
}

/// The merged tree failing where each patch alone passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntegrationFailure {
    /// Features whose tests failed on the merged tree.
    pub failing_features: Vec<u32>,
    /// Tests the merged runs name as failing.
    pub failing_tests: Vec<String>,
    /// Per agent, the names its patch defines or changes that the failing runs' output
    /// mentions (where a partner's change meets the failure).
    pub symbols_in_failures: BTreeMap<String, Vec<String>>,
}

/// analysis.json of one pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairAnalysis {
    pub version: String,
    /// Coordination applies (coop with two or more agents).
    pub applicable: bool,
    pub overall_success: bool,
    pub messages: usize,
    pub agents: Vec<AgentMessages>,
    pub questions: Vec<Question>,
    pub claims: Vec<CheckedClaim>,
    pub overlaps: Vec<PairOverlap>,
    pub conflict_files: Vec<String>,
    pub integration: Option<IntegrationFailure>,
    /// The failure modes flagged, each once.
    pub modes: Vec<FailureMode>,
    /// SHA-256 of the files analysed (eval.json, conversation.json, each agent's patch and
    /// trajectory): a judge's verdict is kept across re-analyses while it matches.
    pub inputs_sha256: String,
    /// The LLM judge's verdict (`cbench analyze --judge MODEL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<judge::JudgeVerdict>,
}

/// Reads a JSON file that may be absent.
fn read_optional<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, FsError> {
    if path.exists() {
        fsutil::read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// Agent ids with a directory of their own in the pair directory, in order.
fn agent_dirs(pair_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(pair_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.starts_with("agent"))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Typed requests the team setting's agents made (its audit log; 0 outside the team setting).
fn team_requests(pair_dir: &Path) -> usize {
    std::fs::read(pair_dir.join(cbench_core::layout::TEAM_LOG_FILE))
        .ok()
        .and_then(|raw| serde_json::from_slice::<Vec<serde_json::Value>>(&raw).ok())
        .map_or(0, |events| {
            events.iter().filter(|e| e["kind"] == "request").count()
        })
}

/// Whether the run holding `pair_dir` (`<run>/<repo>/task<id>/features_…`) let agents message
/// each other (config.json's `messaging`; yes when not recorded).
fn messaging_enabled(pair_dir: &Path) -> bool {
    pair_dir
        .ancestors()
        .nth(3)
        .and_then(|run| fsutil::read_json::<serde_json::Value>(&run.join("config.json")).ok())
        .and_then(|config| config.get("messaging").and_then(serde_json::Value::as_bool))
        .unwrap_or(true)
}

/// Analyses the graded pair in `pair_dir` (nothing is written).
pub fn analyze_pair(pair_dir: &Path) -> Result<PairAnalysis, AnalyzeError> {
    let eval: EvalReport = read_optional(&pair_dir.join("eval.json"))?
        .ok_or_else(|| AnalyzeError::NotGraded(pair_dir.to_path_buf()))?;
    let conversation: Vec<Message> =
        read_optional(&pair_dir.join("conversation.json"))?.unwrap_or_default();
    let ids = agent_dirs(pair_dir);
    let mut trajectories = BTreeMap::new();
    let mut patches = BTreeMap::new();
    for id in &ids {
        if let Some(t) = read_optional::<Trajectory>(&pair_dir.join(id).join("trajectory.json"))? {
            trajectories.insert(id.clone(), t);
        }
        let text =
            std::fs::read_to_string(pair_dir.join(id).join("patch.diff")).unwrap_or_default();
        patches.insert(id.clone(), PatchSummary::parse(&text));
    }
    let applicable = eval.setting.one_agent_per_feature() && ids.len() >= 2;
    let mut hashed = Vec::new();
    for file in ["eval.json", "conversation.json"] {
        hashed.extend(std::fs::read(pair_dir.join(file)).unwrap_or_default());
        hashed.push(0);
    }
    // The team setting's audit log, where there is one (coop pairs' hashes stay as they were).
    if let Ok(log) = std::fs::read(pair_dir.join(cbench_core::layout::TEAM_LOG_FILE)) {
        hashed.extend(log);
        hashed.push(0);
    }
    for id in &ids {
        for file in ["patch.diff", "trajectory.json"] {
            hashed.extend(std::fs::read(pair_dir.join(id).join(file)).unwrap_or_default());
            hashed.push(0);
        }
    }
    let inputs_sha256 = fsutil::sha256_hex(&hashed);

    let agents = ids
        .iter()
        .map(|id| AgentMessages {
            agent_id: id.clone(),
            sent: conversation.iter().filter(|m| &m.from == id).count(),
            received: conversation.iter().filter(|m| addressed_to(m, id)).count(),
            read: trajectories
                .get(id)
                .map(|t| {
                    t.steps
                        .iter()
                        .filter(|s| s.action == "receive_message")
                        .count()
                })
                .unwrap_or(0),
        })
        .collect();

    let questions = find_questions(&conversation, &trajectories, &ids);
    let claims = check_claims(&conversation, &patches);

    let mut overlaps = Vec::new();
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            if let (Some(pa), Some(pb)) = (patches.get(a), patches.get(b)) {
                for overlap in diff::overlaps(pa, pb) {
                    overlaps.push(PairOverlap {
                        agents: (a.clone(), b.clone()),
                        overlap,
                    });
                }
            }
        }
    }
    let merged = eval.merged.as_ref();
    let conflict_files = merged.map(|m| m.conflict_files.clone()).unwrap_or_default();
    let integration = integration_failure(pair_dir, &eval, &patches);

    let mut modes = BTreeSet::new();
    if applicable {
        if integration.is_some() {
            modes.insert(FailureMode::PartnerStateIntegration);
        }
        if questions
            .iter()
            .any(|q| q.answered_by.is_none() && !q.asked_after_addressee_finished)
        {
            modes.insert(FailureMode::UnansweredQuestion);
        }
        if claims.iter().any(|c| c.verdict == Verdict::Broken) {
            modes.insert(FailureMode::BrokenPromise);
        }
        if claims
            .iter()
            .any(|c| c.verdict == Verdict::Unverifiable && c.kind == ClaimKind::Intends)
        {
            modes.insert(FailureMode::UnverifiablePromise);
        }
        // Silence is a failure only when the agents could have spoken (not `--no-messaging`);
        // in the team setting a typed request is speaking too.
        if conversation.is_empty() && team_requests(pair_dir) == 0 && messaging_enabled(pair_dir) {
            modes.insert(FailureMode::SilentPair);
        }
    }
    Ok(PairAnalysis {
        version: ANALYSIS_VERSION.to_string(),
        applicable,
        overall_success: eval.overall_success,
        messages: conversation.len(),
        agents,
        questions,
        claims,
        overlaps,
        conflict_files,
        integration,
        modes: modes.into_iter().collect(),
        inputs_sha256,
        judge: None,
    })
}

/// Whether `message` is for `agent` (named, or to everyone).
fn addressed_to(message: &Message, agent: &str) -> bool {
    message.to == agent || (message.from != agent && matches!(message.to.as_str(), "all" | "*"))
}

/// Every question and the first later message from its addressee back to the asker.
fn find_questions(
    conversation: &[Message],
    trajectories: &BTreeMap<String, Trajectory>,
    ids: &[String],
) -> Vec<Question> {
    let mut out = Vec::new();
    for (i, m) in conversation.iter().enumerate() {
        if out.len() >= MAX_QUESTIONS {
            break;
        }
        let questions = claims::questions(&m.content);
        if questions.is_empty() {
            continue;
        }
        let addressees: Vec<&String> = ids
            .iter()
            .filter(|id| *id != &m.from && addressed_to(m, id))
            .collect();
        // When each addressee was given the message (its trajectory's receive step), once
        // per message.
        let content = m.content.trim();
        let read_at: BTreeMap<&String, u64> = addressees
            .iter()
            .filter_map(|a| {
                let step =
                    trajectories.get(*a)?.steps.iter().find(|s| {
                        s.action == "receive_message" && s.observation.contains(content)
                    })?;
                Some((*a, millis(&step.timestamp).unwrap_or(m.timestamp)))
            })
            .collect();
        // An answer: a later message from an addressee to the asker, sent after that
        // addressee had the question (one sent before it could have read it is not).
        let answered_by = conversation
            .iter()
            .enumerate()
            .skip(i + 1)
            .find(|(_, later)| {
                read_at
                    .get(&later.from)
                    .is_some_and(|read| later.timestamp >= *read)
                    && addressed_to(later, &m.from)
            })
            .map(|(j, _)| j);
        // Asked after every addressee had finished: nobody was left to answer.
        let too_late = !addressees.is_empty()
            && addressees.iter().all(|a| {
                trajectories
                    .get(*a)
                    .and_then(|t| millis(&t.end_time))
                    .is_some_and(|end| end < m.timestamp)
            });
        for text in questions.into_iter().take(MAX_PER_MESSAGE) {
            out.push(Question {
                message: i,
                from: m.from.clone(),
                to: m.to.clone(),
                text: clip(&text, MAX_TEXT_CHARS),
                timestamp_ms: m.timestamp,
                read: !read_at.is_empty(),
                answered_by,
                asked_after_addressee_finished: too_late,
            });
        }
    }
    out.truncate(MAX_QUESTIONS);
    out
}

/// Questions and claims recorded per pair, and per message, at most (messages are the agents'
/// and may be built to blow the analysis up).
const MAX_QUESTIONS: usize = 200;
const MAX_CLAIMS: usize = 200;
const MAX_PER_MESSAGE: usize = 10;
/// Characters kept of a question or a claim's sentence.
const MAX_TEXT_CHARS: usize = 500;

/// `text` cut to `chars` characters, marked when cut.
fn clip(text: &str, chars: usize) -> String {
    let mut out: String = text.chars().take(chars).collect();
    if text.chars().nth(chars).is_some() {
        out.push('…');
    }
    out
}

/// Milliseconds since the epoch of a trajectory's RFC 3339 timestamp.
fn millis(timestamp: &str) -> Option<u64> {
    chrono::DateTime::parse_from_rfc3339(timestamp)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
}

/// Every claim in the conversation, checked against its sender's own patch.
fn check_claims(
    conversation: &[Message],
    patches: &BTreeMap<String, PatchSummary>,
) -> Vec<CheckedClaim> {
    let empty = PatchSummary::default();
    let mut out = Vec::new();
    for (i, m) in conversation.iter().enumerate() {
        if out.len() >= MAX_CLAIMS {
            break;
        }
        let own = patches.get(&m.from).unwrap_or(&empty);
        for mut claim in claims::claims(&m.content).into_iter().take(MAX_PER_MESSAGE) {
            claim.sentence = clip(&claim.sentence, MAX_TEXT_CHARS);
            let (verdict, evidence) = verdict(&claim, own);
            let also_changed_by = if claim.kind == ClaimKind::Intends {
                patches
                    .iter()
                    .filter(|(id, p)| *id != &m.from && claim.files.iter().any(|f| p.touches(f)))
                    .map(|(id, _)| id.clone())
                    .collect()
            } else {
                Vec::new()
            };
            out.push(CheckedClaim {
                message: i,
                from: m.from.clone(),
                kind: claim.kind,
                sentence: claim.sentence,
                files: claim.files,
                names: claim.names,
                verdict,
                evidence,
                also_changed_by,
            });
        }
    }
    out
}

/// A claim against the sender's patch: what it names must be there (or, for "won't touch",
/// must not be).
fn verdict(claim: &claims::Claim, patch: &PatchSummary) -> (Verdict, String) {
    if claim.files.is_empty() && claim.names.is_empty() {
        return (
            Verdict::Unverifiable,
            "names no file or function to check".into(),
        );
    }
    match claim.kind {
        ClaimKind::Avoids => {
            let touched: Vec<String> = claim
                .files
                .iter()
                .flat_map(|f| patch.matching_paths(f))
                .collect();
            if touched.is_empty() {
                (Verdict::Kept, "its patch leaves them alone".into())
            } else {
                (
                    Verdict::Broken,
                    format!("its patch changes {}", touched.join(", ")),
                )
            }
        }
        ClaimKind::Intends | ClaimKind::Did => {
            let missing_files: Vec<&String> =
                claim.files.iter().filter(|f| !patch.touches(f)).collect();
            let missing_names: Vec<&String> =
                claim.names.iter().filter(|n| !patch.mentions(n)).collect();
            if missing_files.is_empty() && missing_names.is_empty() {
                (Verdict::Kept, "its patch has them".into())
            } else {
                let missing: Vec<&String> =
                    missing_files.into_iter().chain(missing_names).collect();
                (
                    Verdict::Broken,
                    format!("its patch has no {}", join(&missing)),
                )
            }
        }
    }
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each agent's patch passed alone and the merged tree failed: the failing tests and where
/// each agent's changed names meet them.
fn integration_failure(
    pair_dir: &Path,
    eval: &EvalReport,
    patches: &BTreeMap<String, PatchSummary>,
) -> Option<IntegrationFailure> {
    let merged = eval.merged.as_ref()?;
    if merged.success || eval.agents.is_empty() || !eval.agents.values().all(|a| a.success) {
        return None;
    }
    let failing: Vec<&cbench_eval::FeatureGrade> =
        merged.features.iter().filter(|f| !f.success).collect();
    let logs: Vec<String> = failing
        .iter()
        .filter_map(|f| {
            // The log path is the grader's own (`eval_logs/<name>.log`), kept inside the pair.
            let relative = Path::new(&f.log);
            let safe = relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            safe.then(|| std::fs::read_to_string(pair_dir.join(relative)).ok())
                .flatten()
        })
        .collect();
    let failing_tests: BTreeSet<String> = logs
        .iter()
        .flat_map(|log| cbench_eval::parse::failing_tests(log))
        .collect();
    // Names any patch defines or changes that the failing output mentions; then, per agent,
    // those its own patch defines, changes or uses.
    let in_failures: BTreeSet<String> = patches
        .values()
        .flat_map(|p| p.symbols().iter().cloned())
        .filter(|name| logs.iter().any(|log| diff::contains_word(log, name)))
        .collect();
    let symbols_in_failures = patches
        .iter()
        .map(|(id, patch)| {
            let names: Vec<String> = in_failures
                .iter()
                .filter(|name| patch.mentions(name))
                .cloned()
                .collect();
            (id.clone(), names)
        })
        .filter(|(_, names)| !names.is_empty())
        .collect();
    Some(IntegrationFailure {
        failing_features: failing.iter().map(|f| f.feature_id).collect(),
        failing_tests: failing_tests.into_iter().collect(),
        symbols_in_failures,
    })
}

/// How often each mode was flagged over a run's analysed pairs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunAnalysis {
    pub version: String,
    /// Pairs analysed (graded coop pairs).
    pub pairs: usize,
    /// Pairs that succeeded despite a flagged mode.
    pub succeeded_with_flags: usize,
    pub messages: usize,
    /// Per mode: how many pairs it was flagged in.
    pub modes: BTreeMap<FailureMode, usize>,
    /// Per pair (its key), the modes flagged.
    pub per_pair: BTreeMap<String, Vec<FailureMode>>,
    /// The LLM judge over the pairs it saw (its cost is not the agents').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeTotals>,
}

/// What the LLM judge said and cost over a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JudgeTotals {
    /// The models that judged (one, unless pairs were judged at different times).
    pub models: Vec<String>,
    pub pairs: usize,
    /// Pairs whose call failed or whose reply did not parse.
    pub errors: usize,
    /// Per mode: in how many pairs the judge named it.
    pub modes: BTreeMap<FailureMode, usize>,
    /// Pairs where the judge and the deterministic checks flagged the same modes.
    pub agreed: usize,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// None when any call's price is unknown.
    pub cost_usd: Option<f64>,
}

/// One graded pair of a run, analysed.
#[derive(Debug, Clone)]
pub struct Analyzed {
    /// The pair's key (`repo/task/features_1_2`).
    pub key: String,
    pub dir: PathBuf,
    pub analysis: PairAnalysis,
}

/// Analyses every graded pair of the run in `run_dir` (nothing is written).
pub fn analyze_pairs(run_dir: &Path) -> Result<Vec<Analyzed>, AnalyzeError> {
    let mut out = Vec::new();
    for pair in cbench_core::layout::required_pair_dirs(run_dir)? {
        match analyze_pair(&pair.path) {
            Ok(analysis) => out.push(Analyzed {
                key: pair.key(),
                dir: pair.path.clone(),
                analysis,
            }),
            // Never graded (an infrastructure error): nothing to analyse.
            Err(AnalyzeError::NotGraded(_)) => continue,
            // One pair's unreadable file (a run copied in part, an older format) does not
            // keep the others from being analysed.
            Err(e) => tracing::warn!("{}: not analysed: {e}", pair.key()),
        }
    }
    Ok(out)
}

/// The run's counts over its analysed pairs.
pub fn summarize(pairs: &[Analyzed]) -> RunAnalysis {
    let mut run = RunAnalysis {
        version: ANALYSIS_VERSION.to_string(),
        ..RunAnalysis::default()
    };
    for pair in pairs.iter().filter(|p| p.analysis.applicable) {
        let analysis = &pair.analysis;
        run.pairs += 1;
        run.messages += analysis.messages;
        if analysis.overall_success && !analysis.modes.is_empty() {
            run.succeeded_with_flags += 1;
        }
        for mode in &analysis.modes {
            *run.modes.entry(*mode).or_default() += 1;
        }
        run.per_pair
            .insert(pair.key.clone(), analysis.modes.clone());
        if let Some(verdict) = &analysis.judge {
            let totals = run.judge.get_or_insert_with(|| JudgeTotals {
                cost_usd: Some(0.0),
                ..JudgeTotals::default()
            });
            if !totals.models.contains(&verdict.model) {
                totals.models.push(verdict.model.clone());
            }
            totals.pairs += 1;
            if verdict.error.is_some() {
                totals.errors += 1;
            } else {
                for mode in &verdict.modes {
                    *totals.modes.entry(*mode).or_default() += 1;
                }
                if verdict.modes == analysis.modes {
                    totals.agreed += 1;
                }
            }
            totals.input_tokens += verdict.usage.input_tokens;
            totals.output_tokens += verdict.usage.output_tokens;
            totals.cost_usd = match (totals.cost_usd, verdict.cost_usd) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
    }
    run
}

/// Analyses the run in `run_dir` and writes each pair's analysis.json and the run's
/// (atomically; a pair's file is replaced only by a newer analysis of the same files).
pub fn analyze_run(run_dir: &Path) -> Result<(RunAnalysis, Vec<Analyzed>), AnalyzeError> {
    let mut pairs = analyze_pairs(run_dir)?;
    keep_verdicts(&mut pairs);
    write(run_dir, &pairs)
}

/// A judge's earlier verdict stays with a pair whose files have not changed since.
pub fn keep_verdicts(pairs: &mut [Analyzed]) {
    for pair in pairs.iter_mut() {
        if pair.analysis.judge.is_none() {
            pair.analysis.judge = judge::kept_verdict(&pair.dir, &pair.analysis.inputs_sha256);
        }
    }
}

/// Writes each pair's analysis.json and the run's; returns the run's counts.
pub fn write(
    run_dir: &Path,
    pairs: &[Analyzed],
) -> Result<(RunAnalysis, Vec<Analyzed>), AnalyzeError> {
    for pair in pairs {
        fsutil::write_json_atomic(&pair.dir.join(PAIR_FILE), &pair.analysis)?;
    }
    let run = summarize(pairs);
    fsutil::write_json_atomic(&run_dir.join(PAIR_FILE), &run)?;
    Ok((run, pairs.to_vec()))
}

impl Analyzed {
    /// What was flagged in this pair and why, for the terminal (empty when nothing was); the
    /// agents' words with control characters written out.
    pub fn render(&self) -> String {
        cbench_core::progress::printable(&self.render_raw())
    }

    fn render_raw(&self) -> String {
        let a = &self.analysis;
        if a.modes.is_empty() {
            return String::new();
        }
        let names: Vec<&str> = a.modes.iter().map(|m| m.name()).collect();
        let mut out = format!(
            "{} ({}): {}\n",
            self.key,
            if a.overall_success {
                "succeeded"
            } else {
                "failed"
            },
            names.join(", ")
        );
        if let Some(i) = &a.integration {
            let features: Vec<String> = i.failing_features.iter().map(u32::to_string).collect();
            out.push_str(&match features.len() {
                0 => "  the merged tree failed though each patch passed alone".to_string(),
                1 => format!(
                    "  the merged tree failed feature {} though each patch passed alone",
                    features[0]
                ),
                _ => format!(
                    "  the merged tree failed features {} though each patch passed alone",
                    features.join(", ")
                ),
            });
            if !i.failing_tests.is_empty() {
                out.push_str(&format!("; failing: {}", i.failing_tests.join(", ")));
            }
            out.push('\n');
            for (agent, names) in &i.symbols_in_failures {
                out.push_str(&format!(
                    "    {agent}'s changes named in the failures: {}\n",
                    names.join(", ")
                ));
            }
        }
        for q in a
            .questions
            .iter()
            .filter(|q| q.answered_by.is_none() && !q.asked_after_addressee_finished)
        {
            out.push_str(&format!(
                "  unanswered: {} asked {} (message {}{}): {}\n",
                q.from,
                q.to,
                q.message,
                if q.read { ", read" } else { ", never read" },
                q.text
            ));
        }
        for c in a.claims.iter().filter(|c| {
            c.verdict == Verdict::Broken
                || (c.verdict == Verdict::Unverifiable && c.kind == ClaimKind::Intends)
        }) {
            let what = if c.verdict == Verdict::Broken {
                "broken"
            } else {
                "unverifiable"
            };
            out.push_str(&format!(
                "  {what}: {} (message {}): \"{}\": {}\n",
                c.from, c.message, c.sentence, c.evidence
            ));
        }
        if a.modes.contains(&FailureMode::SilentPair) {
            out.push_str("  no agent sent a message\n");
        }
        out
    }

    /// The judge's verdict, for the terminal (empty without one).
    pub fn render_judge(&self) -> String {
        cbench_core::progress::printable(&self.render_judge_raw())
    }

    fn render_judge_raw(&self) -> String {
        let Some(v) = &self.analysis.judge else {
            return String::new();
        };
        match &v.error {
            Some(e) => format!("{}: judge {}: {e}\n", self.key, v.model),
            None => {
                let names: Vec<&str> = v.modes.iter().map(|m| m.name()).collect();
                format!(
                    "{}: judge {}: {}\n  {}\n",
                    self.key,
                    v.model,
                    if names.is_empty() {
                        "no failure".to_string()
                    } else {
                        names.join(", ")
                    },
                    v.explanation
                )
            }
        }
    }
}

impl RunAnalysis {
    /// The terminal's lines: each mode with its count of pairs.
    pub fn render(&self) -> String {
        if self.pairs == 0 {
            return "coordination: no graded coop pair to analyse\n".into();
        }
        let mut out = format!(
            "coordination ({} coop pair{}, {} message{}):\n",
            self.pairs,
            plural(self.pairs),
            self.messages,
            plural(self.messages)
        );
        for mode in FailureMode::ALL {
            let n = self.modes.get(&mode).copied().unwrap_or(0);
            out.push_str(&format!(
                "  {:<26} {n}/{} pair{}\n",
                mode.name(),
                self.pairs,
                plural(self.pairs)
            ));
        }
        if let Some(j) = &self.judge {
            let cost = j
                .cost_usd
                .map(|c| format!("${c:.4}"))
                .unwrap_or_else(|| "unknown".into());
            out.push_str(&format!(
                "  judge ({}): {} pair{} judged, {} agreeing with the checks, {} error{}; {} in / {} out tokens, cost {cost} (not counted in the agents')\n",
                j.models.join(", "),
                j.pairs,
                plural(j.pairs),
                j.agreed,
                j.errors,
                plural(j.errors),
                j.input_tokens,
                j.output_tokens
            ));
        }
        if self.succeeded_with_flags > 0 {
            out.push_str(&format!(
                "  {} successful pair{} had a flagged failure mode anyway\n",
                self.succeeded_with_flags,
                plural(self.succeeded_with_flags)
            ));
        }
        out
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A graded coop pair directory with `messages`, each agent's `patch`.
    fn pair_with(messages: &[Message], patch: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let eval = serde_json::json!({
            "setting": "coop", "feature_ids": [1, 2],
            "agent1": {"tests_passed": 1, "tests_failed": 0, "success": true, "error": null, "feature_ids": [1], "features": []},
            "agent2": {"tests_passed": 1, "tests_failed": 0, "success": true, "error": null, "feature_ids": [2], "features": []},
            "merged": null, "overall_success": true, "merge_strategy": null,
            "inputs_sha256": "x", "evaluated_at": "2026-01-01T00:00:00Z", "duration_s": 1.0
        });
        std::fs::write(dir.path().join("eval.json"), eval.to_string()).unwrap();
        std::fs::write(
            dir.path().join("conversation.json"),
            serde_json::to_string(messages).unwrap(),
        )
        .unwrap();
        for agent in ["agent1", "agent2"] {
            std::fs::create_dir(dir.path().join(agent)).unwrap();
            std::fs::write(dir.path().join(agent).join("patch.diff"), patch).unwrap();
        }
        dir
    }

    fn message(from: &str, to: &str, content: String) -> Message {
        Message {
            from: from.into(),
            to: to.into(),
            content,
            timestamp: 1,
        }
    }

    #[test]
    fn messages_built_to_blow_the_analysis_up_are_bounded() {
        let questions = "a? ".repeat(20_000);
        let names: String = (0..8000).map(|i| format!("z{i}() ")).collect();
        let big_patch: String =
            "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -0,0 +1,5000 @@\n".to_string()
                + &(0..5000)
                    .map(|i| format!("+def f{i}(): pass\n"))
                    .collect::<String>();
        let mut messages = vec![message("agent1", "agent2", format!("I added {names}"))];
        messages.extend((0..50).map(|_| message("agent1", "agent2", questions.clone())));
        let dir = pair_with(&messages, &big_patch);
        let a = analyze_pair(dir.path()).unwrap();
        assert_eq!(a.questions.len(), MAX_QUESTIONS);
        assert!(a.claims.len() <= MAX_CLAIMS);
        assert!(a.claims[0].names.len() <= 20, "{}", a.claims[0].names.len());
        assert!(a.claims[0].sentence.chars().count() <= MAX_TEXT_CHARS + 1);
        assert_eq!(a.claims[0].verdict, Verdict::Broken);
    }
}
