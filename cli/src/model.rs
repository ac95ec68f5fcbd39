//! `fleetctl model push DIR SOURCE`: cuts a model directory into content-addressed chunks,
//! uploads the ones the origin lacks, then the manifest, and prints the digest that pins it in
//! the spec (`[apps.X.model]`).

use std::path::PathBuf;

use anyhow::Context as _;
use fleet_core::artifact::{self, Origin};

use crate::Output;

#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    pub cmd: ModelCmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelCmd {
    /// Upload a model directory (config.json, tokenizer.json, *.safetensors …) to an origin.
    #[command(
        after_help = "Examples:\n  fleetctl model push ./llama-3-8b s3://models/llama-3-8b\n  fleetctl model push ./tiny file:///srv/models --chunk-size 4MiB\n\nS3 takes the standard AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID …) and, for an\nS3-compatible store, AWS_ENDPOINT_URL. Chunks already at the origin are not sent again.\nThe printed digest goes in the spec:\n  [apps.llm.model]\n  source = \"s3://models/llama-3-8b\"\n  digest = \"sha256:…\""
    )]
    Push {
        dir: PathBuf,
        /// Where: s3://bucket/prefix or file:///dir (https:// and gs:// origins are read-only).
        source: String,
        /// Chunk size: bytes, or with KiB, MiB or GiB.
        #[arg(long, default_value = "64MiB")]
        chunk_size: String,
    },
}

pub fn run(args: ModelArgs, o: Output) -> anyhow::Result<()> {
    match args.cmd {
        ModelCmd::Push { dir, source, chunk_size } => push(dir, &source, &chunk_size, o),
    }
}

fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let (num, mult) = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        .iter()
        .find_map(|(suf, m)| t.strip_suffix(suf).map(|n| (n.trim(), *m)))
        .unwrap_or((t, 1));
    let n: u64 = num.parse().map_err(|_| anyhow::anyhow!("--chunk-size `{s}`: write bytes or a size such as 64MiB"))?;
    let size = n.checked_mul(mult).ok_or_else(|| anyhow::anyhow!("--chunk-size `{s}` is too large"))?;
    if !(artifact::MIN_CHUNK_SIZE..=artifact::MAX_CHUNK_SIZE).contains(&size) {
        anyhow::bail!("--chunk-size `{s}` is outside 4KiB..=1GiB");
    }
    Ok(size)
}

fn push(dir: PathBuf, source: &str, chunk_size: &str, o: Output) -> anyhow::Result<()> {
    let origin: Origin = source.parse()?;
    let chunk_size = parse_size(chunk_size)?;
    if !dir.is_dir() {
        anyhow::bail!(
            "{} is not a directory: give the model's directory (config.json, *.safetensors …)",
            dir.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report = rt.block_on(async {
        let store = fleet_providers::origin::open(&origin).await?;
        fleet_providers::origin::push(&dir, &origin, store, chunk_size).await
    });
    let r = report.with_context(|| format!("pushing {} to {origin}", dir.display()))?;
    match o {
        Output::Json | Output::Yaml => {
            let v = serde_json::json!({
                "digest": r.digest.to_string(), "source": origin.to_string(), "files": r.files, "chunks": r.chunks,
                "uploaded_chunks": r.uploaded, "bytes": r.bytes, "uploaded_bytes": r.uploaded_bytes,
            });
            crate::output::print(&v, o == Output::Yaml);
        }
        _ => {
            outln!(
                "pushed {} to {origin}: {} files, {} bytes in {} chunks ({} sent, {} already there)",
                dir.display(),
                r.files,
                r.bytes,
                r.chunks,
                r.uploaded,
                r.chunks - r.uploaded
            );
            outln!("digest: {}", r.digest);
            outln!("\nin the spec:\n  [apps.APP.model]\n  source = \"{origin}\"\n  digest = \"{}\"", r.digest);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunk_sizes_take_units_and_are_bounded() {
        assert_eq!(super::parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(super::parse_size("8192").unwrap(), 8192);
        assert!(super::parse_size("1KiB").unwrap_err().to_string().contains("outside 4KiB..=1GiB"));
        assert!(super::parse_size("lots").unwrap_err().to_string().contains("such as 64MiB"));
    }
}
