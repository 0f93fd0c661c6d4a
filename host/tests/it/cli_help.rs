//! The public CLI does not change by accident: every command's `--help`, as the binary prints
//! it, equals the committed copy. A change on purpose rewrites the copy with
//! `CBENCH_UPDATE_HELP=1 cargo test -p cbench --test it cli_help` and commits the diff.

use std::path::PathBuf;
use std::process::Command;

use crate::support::cbench_bin;

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/snapshots/cli-help.txt")
}

/// `cbench <path> --help` with no environment that clap would show as `[env: X=value]`.
fn help_of(path: &[String]) -> String {
    let output = Command::new(cbench_bin())
        .args(path)
        .arg("--help")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("cbench runs");
    assert!(
        output.status.success(),
        "cbench {} --help failed: {}",
        path.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// The subcommands a help text lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

fn walk(path: &mut Vec<String>, out: &mut String) {
    let help = help_of(path);
    out.push_str(&format!("=== cbench {} --help\n", path.join(" ")));
    out.push_str(&help);
    for sub in subcommands(&help) {
        path.push(sub);
        walk(path, out);
        path.pop();
    }
}

#[test]
fn every_commands_help_text_is_the_committed_one() {
    let mut rendered = String::new();
    walk(&mut Vec::new(), &mut rendered);
    assert!(
        rendered.matches("=== cbench").count() >= 20,
        "the walk found the subcommands"
    );
    let path = snapshot_path();
    if std::env::var_os("CBENCH_UPDATE_HELP").is_some() {
        std::fs::write(&path, &rendered).expect("write the help snapshot");
        return;
    }
    let committed = std::fs::read_to_string(&path).expect("the committed help snapshot");
    if rendered != committed {
        let first_difference = rendered
            .lines()
            .zip(committed.lines())
            .enumerate()
            .find(|(_, (now, then))| now != then)
            .map(|(i, (now, then))| format!("line {}: now {now:?}, committed {then:?}", i + 1))
            .unwrap_or_else(|| "one is a prefix of the other".to_string());
        panic!(
            "`cbench … --help` differs from {} ({first_difference}); if on purpose, rerun with CBENCH_UPDATE_HELP=1 and commit",
            path.display()
        );
    }
}
