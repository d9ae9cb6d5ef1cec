//! The admin token: from configuration, else from the data directory, else generated
//! there once (and printed once so the operator can use it).

use std::path::Path;

use anyhow::Context;
use rand::Rng;

const FILE: &str = "admin-token";

/// Returns the admin token, creating and storing one on first start.
pub fn admin_token(configured: &str, data_dir: &Path) -> anyhow::Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_owned());
    }
    let path = data_dir.join(FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let t = existing.trim();
        if !t.is_empty() {
            return Ok(t.to_owned());
        }
    }
    let bytes: [u8; 24] = rand::rng().random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &token)
        .with_context(|| format!("cannot store the admin token in {}", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        "generated an admin token (shown once; set SURGE_ADMIN_TOKEN to choose your own): {token}"
    );
    Ok(token)
}

fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = admin_token("", dir.path()).expect("generate");
        assert_eq!(a.len(), 48);
        assert_eq!(admin_token("", dir.path()).expect("reuse"), a);
        assert_eq!(admin_token("mine", dir.path()).expect("configured"), "mine");
    }
}
