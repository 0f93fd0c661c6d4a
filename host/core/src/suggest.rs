//! "did you mean …": the closest known name to a mistyped one (a repo, a run, a plugin).

/// The candidate closest to `input` when it is close enough to be a typo (Jaro-Winkler ≥ 0.8,
/// as clap uses for subcommands), or one that contains it.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let input_lower = input.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != input)
        .map(|c| {
            let lower = c.to_lowercase();
            let mut score = strsim::jaro_winkler(&input_lower, &lower);
            if !input_lower.is_empty() && lower.contains(&input_lower) {
                score = score.max(0.9);
            }
            (c, score)
        })
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

/// ` (did you mean `x`?)`, or nothing.
pub fn did_you_mean<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(input, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_finds_its_name_and_a_stranger_finds_none() {
        let repos = [
            "dirty_equals_task",
            "pallets_click_task",
            "pallets_jinja_task",
        ];
        assert_eq!(closest("palets_click", repos), Some("pallets_click_task"));
        assert_eq!(closest("jinja", repos), Some("pallets_jinja_task"));
        assert_eq!(closest("tokio", repos), None);
        assert_eq!(
            did_you_mean("run-1", ["run-2", "other"]),
            " (did you mean `run-2`?)"
        );
        assert_eq!(did_you_mean("zzz", ["run-2"]), "");
    }
}
