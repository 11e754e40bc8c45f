//! Detached signatures over release files (the offline install bundle's SHA256SUMS) and
//! the man pages and completions the packages ship.

use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use dg_crypto::Sha256;
use dg_storage::signing::{KeyStore, PublicKeyRing};
use serde::{Deserialize, Serialize};

use crate::cli::{Cli, ReleaseCommand};

/// Domain separator of file signatures.
const CONTEXT: &[u8] = b"dg-file-signature-v1\n";

/// What a `.sig` file holds.
#[derive(Debug, Serialize, Deserialize)]
struct FileSignature {
    file: String,
    sha256: String,
    key_id: String,
    signature: String,
}

fn message(file: &str, sha256: &str, key_id: &str) -> Vec<u8> {
    let mut message = CONTEXT.to_vec();
    message.extend_from_slice(format!("{file}\n{sha256}\n{key_id}\n").as_bytes());
    message
}

fn digest(path: &Path) -> Result<(String, String), String> {
    let mut file = dg_storage::open_regular(path, dg_storage::Links::Follow)
        .map_err(|err| format!("{}: {err}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|err| format!("{}: {err}", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    Ok((name, hex::encode(hasher.finalize())))
}

fn sig_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".sig");
    name.into()
}

/// Runs a `release` subcommand.
///
/// # Errors
/// A message for the operator.
pub fn run(command: ReleaseCommand) -> Result<ExitCode, String> {
    match command {
        ReleaseCommand::Sign { keys, files } => {
            let store = KeyStore::open(&keys).map_err(|err| err.to_string())?;
            let key = store.active().map_err(|err| err.to_string())?;
            for path in files {
                let (file, sha256) = digest(&path)?;
                let signature = key.sign_hex(&message(&file, &sha256, &key.key_id)).map_err(|err| err.to_string())?;
                let sig = FileSignature { file, sha256, key_id: key.key_id.clone(), signature };
                let json = serde_json::to_vec_pretty(&sig).map_err(|err| err.to_string())?;
                std::fs::write(sig_path(&path), json).map_err(|err| format!("{}: {err}", path.display()))?;
                println!("signed {} with key {}", path.display(), key.key_id);
            }
            Ok(ExitCode::SUCCESS)
        }
        ReleaseCommand::Verify { pubkey, files } => {
            let text = dg_storage::read_text_bounded(&pubkey, 1024 * 1024, dg_storage::Links::Follow)
                .map_err(|err| format!("{}: {err}", pubkey.display()))?;
            let ring = PublicKeyRing::parse(&text).map_err(|err| err.to_string())?;
            let mut ok = true;
            for path in files {
                let (file, sha256) = digest(&path)?;
                let sig_file = sig_path(&path);
                let verdict = dg_storage::read_bounded(&sig_file, 64 * 1024, dg_storage::Links::Follow)
                    .map_err(|err| format!("{}: {err}", sig_file.display()))
                    .and_then(|bytes| serde_json::from_slice::<FileSignature>(&bytes).map_err(|err| err.to_string()))
                    .and_then(|sig| {
                        if sig.file != file || sig.sha256 != sha256 {
                            return Err("the file does not match its signature record".to_string());
                        }
                        ring.verify(&sig.key_id, &message(&file, &sha256, &sig.key_id), &sig.signature)
                            .map_err(|err| err.to_string())
                    });
                match verdict {
                    Ok(()) => println!("{}: VERIFIED", path.display()),
                    Err(reason) => {
                        ok = false;
                        println!("{}: FAILED ({reason})", path.display());
                    }
                }
            }
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

/// Writes man pages (`man/`) and bash, zsh and fish completions (`completions/`).
///
/// # Errors
/// A message for the operator.
pub fn generate_docs(out: &Path) -> Result<ExitCode, String> {
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    }
    clap_mangen::generate_to(Cli::command(), &man).map_err(|err| err.to_string())?;
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "dg-appliance", &completions)
            .map_err(|err| err.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}
