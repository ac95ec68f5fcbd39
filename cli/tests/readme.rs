//! Every `fleetctl` command the README names exists (its `--help` works), so the docs and the
//! CLI cannot drift apart.

use std::process::Command;

#[test]
fn every_fleetctl_command_in_the_readme_exists() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut commands = std::collections::BTreeSet::new();
    for part in readme.split("fleetctl").skip(1) {
        // `fleetctl get apps|nodes`, `fleetctl -- catalog`, `target/debug/fleetctl demo`
        let words: Vec<&str> = part.trim_start_matches(" --").split_whitespace().take(2).collect();
        let Some(first) = words.first() else { continue };
        let first = first.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-');
        if first.is_empty() || first.starts_with('-') || !first.chars().all(|c| c.is_ascii_lowercase()) {
            continue;
        }
        let mut cmd = vec![first.to_string()];
        if matches!(first, "get" | "describe" | "token" | "logs")
            && let Some(second) = words.get(1)
        {
            for sub in second.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '|').split('|') {
                if !sub.is_empty() && sub.chars().all(|c| c.is_ascii_lowercase()) {
                    commands.insert(vec![first.to_string(), sub.to_string()]);
                }
            }
            continue;
        }
        commands.insert(std::mem::take(&mut cmd));
    }
    assert!(commands.len() >= 10, "{commands:?}");
    for c in &commands {
        let out = Command::new(env!("CARGO_BIN_EXE_fleetctl")).args(c).arg("--help").output().unwrap();
        assert!(
            out.status.success(),
            "README names `fleetctl {}`, which does not exist: {}",
            c.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `--help` of every fleetctl command shows examples.
#[test]
fn every_command_has_examples_in_its_help() {
    let top = Command::new(env!("CARGO_BIN_EXE_fleetctl")).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&top.stdout).to_string();
    let commands: Vec<String> = text
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 15, "{commands:?}");
    for c in commands {
        let out = Command::new(env!("CARGO_BIN_EXE_fleetctl")).args([c.as_str(), "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Example"), "`fleetctl {c} --help` shows no example:\n{help}");
    }
}
