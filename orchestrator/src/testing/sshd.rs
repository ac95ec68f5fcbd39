//! A real OpenSSH server (Debian's `openssh-server`) on a free loopback port with a temporary
//! ed25519 host key and one authorised user key, killed when dropped. It accepts the current user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SshServer {
    child: Child,
    pub port: u16,
    /// The host public key, OpenSSH format (`ssh-ed25519 AAAA…`).
    pub host_key: String,
    /// The user's private key (OpenSSH PEM) that the server accepts.
    pub user_key: String,
    pub user: String,
    dir: tempfile::TempDir,
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "fleet-test", "-f"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen ({e}): install Debian's openssh-server (scripts/test does)"));
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
}

impl SshServer {
    pub fn start() -> SshServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("user_key"));
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).expect("authorized_keys");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {ak}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nSubsystem sftp /usr/lib/openssh/sftp-server\nLogLevel VERBOSE\n",
                hk = d.join("host_key").display(),
                pid = d.join("sshd.pid").display(),
                ak = d.join("authorized_keys").display(),
            ),
        )
        .expect("sshd config");
        // sshd wants its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let log = std::fs::File::create(d.join("sshd.log")).expect("sshd log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start /usr/sbin/sshd ({e}): install Debian's openssh-server (scripts/test does)")
            });
        let read = |f: &str| std::fs::read_to_string(d.join(f)).expect("key file");
        let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(whoami);
        let mut s = SshServer {
            child,
            port,
            host_key: read("host_key.pub").trim().to_string(),
            user_key: read("user_key"),
            user,
            dir,
        };
        s.wait_listening(Duration::from_secs(10));
        s
    }

    /// Another server's host key (for tests of a mismatch).
    pub fn other_host_key(&self) -> String {
        let p = self.dir.path().join("other_key");
        keygen(&p);
        std::fs::read_to_string(p.with_extension("pub")).expect("key").trim().to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn wait_listening(&mut self, limit: Duration) {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited with {status}:\n{}", self.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sshd not listening after {limit:?}:\n{}", self.log());
    }
}

fn whoami() -> String {
    Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "root".into())
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
