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

/// Splits a shell command line into words (single and double quotes; no expansions).
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The README's "Running fleetd" commands, as written, against `fleetd --fake-clouds` with the
/// README's spec: every fleetctl line succeeds (the submit answers within its --wait). Then the
/// same spec against `fleetd --local`: apply warns that nothing can place the app, and
/// `describe app` says why its requests wait.
#[test]
fn the_readme_tour_works_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let spec = readme.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
    let tour = readme.split("### Running fleetd").nth(1).unwrap();
    let block = tour.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    let fleetctl_lines: Vec<String> = block
        .lines()
        .map(|l| l.split("  #").next().unwrap().trim().to_string())
        .flat_map(|l| l.split(" ; ").map(str::to_string).collect::<Vec<_>>())
        .filter(|l| l.starts_with("fleetctl "))
        .collect();
    let fleetd_line = block.lines().find(|l| l.contains("--fake-clouds")).unwrap().split('#').next().unwrap();
    assert!(fleetctl_lines.len() >= 5, "{fleetctl_lines:?}");

    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_fleetctl")).to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fleet.toml"), spec).unwrap();
    let start = |line: &str, data: &str| {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut args = words(line);
        assert_eq!(args.remove(0), "fleetd");
        let child = Command::new(bin.with_file_name("fleetd"))
            .args(&args)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir", data])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let token_file = std::path::Path::new(data).join("admin.token");
        let t = std::time::Instant::now();
        while !(token_file.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
            assert!(t.elapsed() < std::time::Duration::from_secs(30), "fleetd did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        (child, format!("http://127.0.0.1:{port}"), std::fs::read_to_string(token_file).unwrap().trim().to_string())
    };
    let run = |url: &str, token: &str, args: &[String]| {
        Command::new(&bin)
            .args(args)
            .current_dir(dir.path())
            .env("FLEET_SERVER", url)
            .env("FLEET_TOKEN", token)
            .env("HOME", dir.path())
            .env_remove("FLEET_CONFIG")
            .output()
            .unwrap()
    };

    let data = dir.path().join("fake").display().to_string();
    let (mut fleetd, url, token) = start(fleetd_line, &data);
    for line in &fleetctl_lines {
        let mut args = words(line);
        args.remove(0);
        // `get apps|nodes|…` names several commands.
        let expanded: Vec<Vec<String>> = match args.get(1) {
            Some(alts) if args[0] == "get" && alts.contains('|') => {
                alts.split('|').map(|w| vec!["get".to_string(), w.to_string()]).collect()
            }
            _ => vec![args],
        };
        for a in expanded {
            // `-w` keeps watching until stopped: it must print the listing and keep running.
            if a.iter().any(|w| w == "-w" || w == "--watch") {
                let mut child = Command::new(&bin)
                    .args(&a)
                    .current_dir(dir.path())
                    .env("FLEET_SERVER", &url)
                    .env("FLEET_TOKEN", &token)
                    .env("HOME", dir.path())
                    .env_remove("FLEET_CONFIG")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                std::thread::sleep(std::time::Duration::from_secs(3));
                let still = child.try_wait().unwrap().is_none();
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    still && stdout.lines().next().is_some_and(|h| h.starts_with("ID")),
                    "`fleetctl {}` should print the listing and keep watching:\n{stdout}{}",
                    a.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            }
            let out = run(&url, &token, &a);
            assert!(
                out.status.success(),
                "`fleetctl {}` failed:\n{}{}",
                a.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let _ = fleetd.kill();
    let _ = fleetd.wait();

    let local_line = block.lines().find(|l| l.contains("--local")).unwrap().split('#').next().unwrap();
    let data = dir.path().join("local").display().to_string();
    let (mut fleetd, url, token) = start(local_line, &data);
    let apply = run(&url, &token, &words("apply -f fleet.toml"));
    let err = String::from_utf8_lossy(&apply.stderr);
    assert!(apply.status.success(), "{err}");
    assert!(
        err.contains("warning: app llm: no offering of the enabled clouds (local") && err.contains("not allowed"),
        "{err}"
    );
    run(&url, &token, &words("submit llm --input '{\"x\": [1, 2, 3]}'"));
    let t = std::time::Instant::now();
    let why = loop {
        let out = run(&url, &token, &words("describe app llm"));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if let Some(l) = text.lines().find(|l| l.starts_with("Waiting:")) {
            break l.to_string();
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(60), "no reason given:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert!(why.contains("not placed") && why.contains("cloud local not allowed"), "{why}");
    let _ = fleetd.kill();
    let _ = fleetd.wait();
}
