//! Catalog loading errors. Each names the file, and where it can the line and column, and says
//! what to do; a catalog that fails to load is not loaded at all.

use std::path::PathBuf;

use crate::cloud::UnknownCloud;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{file}:{line}: column {index} '{column}': {message}")]
    Field { file: String, line: u64, column: String, index: usize, message: String },

    #[error("{file}:1: missing required column '{column}'; a SkyPilot vms.csv needs {expected}")]
    MissingColumn { file: String, column: String, expected: String },

    #[error("{file}:{line}: {message}")]
    Malformed { file: String, line: u64, message: String },

    #[error(
        "{file}: cannot tell which cloud this catalog is for: {source}; name the file after the cloud (aws.csv) or put it in a folder named after it (aws/vms.csv)"
    )]
    CloudOfFile {
        file: String,
        #[source]
        source: UnknownCloud,
    },

    #[error(
        "{file}: not a catalog: the header has neither SkyPilot's columns (InstanceType, AcceleratorName, Price, ...) nor fleet's (cloud, region, instance_type, usd_per_hour, ...)"
    )]
    UnknownFormat { file: String },

    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: no catalog files (*.csv) found there", path.display())]
    NoFiles { path: PathBuf },
}
