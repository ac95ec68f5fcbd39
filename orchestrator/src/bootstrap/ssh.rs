//! A small SSH client over russh: connect with a timeout and a verified host key, authenticate
//! with a key, run commands (with optional stdin), nothing more. russh's default accepts no host
//! key; ours accepts exactly the expected one, or records the first one seen when there is none
//! yet (trust on first use; the caller pins it).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect to {addr}: {why}")]
    Connect { addr: SocketAddr, why: String },
    #[error("no SSH answer from {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error(
        "host key mismatch at {addr}: expected {expected}, the server offered {offered}; refusing to connect (the \
         instance was replaced, or someone is in the middle). Check the node, then delete its recorded key to trust \
         a new one"
    )]
    HostKeyMismatch { addr: SocketAddr, expected: String, offered: String },
    #[error(
        "{addr} refused the fleet's SSH key for user '{user}': add its public key to the image or instance metadata"
    )]
    Auth { addr: SocketAddr, user: String },
    #[error("`{cmd}` on {addr} failed (exit {status}): {stderr}")]
    Command { addr: SocketAddr, cmd: String, status: u32, stderr: String },
    #[error("SSH session with {addr} broke: {why}")]
    Session { addr: SocketAddr, why: String },
}

impl SshError {
    /// Worth trying again later (the machine is still booting, or the network hiccuped).
    pub fn is_transient(&self) -> bool {
        matches!(self, SshError::Connect { .. } | SshError::Timeout { .. } | SshError::Session { .. })
    }
}

/// SHA256 fingerprint as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

struct Client {
    /// The keys the server may present; any when empty (first contact).
    expected: Vec<PublicKey>,
    offered: Arc<Mutex<Option<PublicKey>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        // Host certificates are not used by the clouds fleet rents from.
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else { return Ok(false) };
        *self.offered.lock().expect("offered lock") = Some(key.clone());
        Ok(self.expected.is_empty() || self.expected.iter().any(|e| e.key_data() == key.key_data()))
    }
}

pub struct Session {
    handle: Handle<Client>,
    addr: SocketAddr,
    /// The host key the server proved it holds.
    pub host_key: PublicKey,
}

impl Session {
    /// Connects, checks that the server's host key is one of `expected` (any key when empty: the
    /// caller records [`Session::host_key`]), and authenticates as `user` with `key`.
    pub async fn connect(
        addr: SocketAddr,
        user: &str,
        key: &PrivateKey,
        expected: &[PublicKey],
        timeout: Duration,
    ) -> Result<Session, SshError> {
        let config =
            Arc::new(client::Config { inactivity_timeout: Some(Duration::from_secs(120)), ..Default::default() });
        let offered = Arc::new(Mutex::new(None));
        let handler = Client { expected: expected.to_vec(), offered: offered.clone() };
        let connected = tokio::time::timeout(timeout, client::connect(config, addr, handler))
            .await
            .map_err(|_| SshError::Timeout { addr, timeout })?;
        let offered_key = offered.lock().expect("offered lock").clone();
        let mut handle = match connected {
            Ok(h) => h,
            Err(e) => {
                return Err(match &offered_key {
                    Some(got) if !expected.is_empty() && !expected.iter().any(|k| k.key_data() == got.key_data()) => {
                        let expected = expected.iter().map(fingerprint).collect::<Vec<_>>().join(" or ");
                        SshError::HostKeyMismatch { addr, expected, offered: fingerprint(got) }
                    }
                    _ => SshError::Connect { addr, why: e.to_string() },
                });
            }
        };
        let host_key = offered_key.ok_or_else(|| SshError::Connect { addr, why: "no host key offered".into() })?;
        let session = |e: russh::Error| SshError::Session { addr, why: e.to_string() };
        let hash = handle.best_supported_rsa_hash().await.map_err(session)?.flatten();
        let auth = tokio::time::timeout(
            timeout,
            handle.authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key.clone()), hash)),
        )
        .await
        .map_err(|_| SshError::Timeout { addr, timeout })?
        .map_err(session)?;
        if !auth.success() {
            return Err(SshError::Auth { addr, user: user.into() });
        }
        Ok(Session { handle, addr, host_key })
    }

    /// Runs `cmd` (through the login shell), feeding it `stdin`; returns exit status, stdout, stderr.
    pub async fn exec(&self, cmd: &str, stdin: Option<&[u8]>) -> Result<(u32, Vec<u8>, Vec<u8>), SshError> {
        let addr = self.addr;
        let session = |e: russh::Error| SshError::Session { addr, why: e.to_string() };
        let mut ch = self.handle.channel_open_session().await.map_err(session)?;
        ch.exec(true, cmd).await.map_err(session)?;
        if let Some(data) = stdin {
            ch.data(data).await.map_err(session)?;
        }
        ch.eof().await.map_err(session)?;
        let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), None);
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => err.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                _ => {}
            }
        }
        let status =
            status.ok_or_else(|| SshError::Session { addr, why: format!("`{cmd}` ended without a status") })?;
        Ok((status, out, err))
    }

    /// [`Session::exec`], with a non-zero exit turned into an error; returns stdout.
    pub async fn run(&self, cmd: &str, stdin: Option<&[u8]>) -> Result<String, SshError> {
        let (status, out, err) = self.exec(cmd, stdin).await?;
        if status != 0 {
            return Err(SshError::Command {
                addr: self.addr,
                cmd: cmd.chars().take(200).collect(),
                status,
                stderr: String::from_utf8_lossy(&err).trim().chars().take(500).collect(),
            });
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    pub async fn close(self) {
        let _ = self.handle.disconnect(Disconnect::ByApplication, "done", "en").await;
    }
}
