//! Output into a pipe closed early (`fleetctl … | head`) ends fleetctl quietly, never a panic.

use std::process::{Command, Stdio};

#[test]
fn completion_into_a_closed_pipe_ends_quietly() {
    for shell in ["bash", "zsh", "fish"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
            .args(["completion", shell])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before fleetctl writes (it takes milliseconds to start).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{shell}: {err}");
        assert!(out.status.success(), "{shell}: {:?} {err}", out.status);
    }
}
