//! `cbench plugin new`: a new plugin from a language kit (`kits/<lang>/`), embedded in the
//! binary so it works wherever cbench is installed. The plugin directory is self-contained:
//! its source, the kit's helper, the current contract (`wit/agent.wit`) and a `build.sh`.

use std::path::{Path, PathBuf};

use crate::cli::{PluginLanguage, PluginNewArgs};

/// The current contract, copied into every new plugin.
const CONTRACT: &str = include_str!("../../../wit/agent.wit");

/// The line of the Python and JS kits' build.sh choosing the default output.
const KIT_DEFAULT_OUTPUT: &str = r#"out="${2:-$src/$(basename "$src").wasm}""#;

/// Files of each kit's template: (path in the new plugin, contents, executable).
fn template(lang: PluginLanguage) -> Vec<(&'static str, &'static str, bool)> {
    match lang {
        PluginLanguage::Rust => vec![
            (
                "Cargo.toml",
                include_str!("../../../kits/rust/template/Cargo.toml"),
                false,
            ),
            (
                "src/lib.rs",
                include_str!("../../../kits/rust/template/src/lib.rs"),
                false,
            ),
            (
                "build.sh",
                include_str!("../../../kits/rust/template/build.sh"),
                true,
            ),
        ],
        PluginLanguage::Python => vec![
            (
                "app.py",
                include_str!("../../../kits/python/template/app.py"),
                false,
            ),
            (
                "cbench_agent.py",
                include_str!("../../../kits/python/cbench_agent.py"),
                false,
            ),
            (
                "build.sh",
                include_str!("../../../kits/python/build.sh"),
                true,
            ),
        ],
        PluginLanguage::Js => vec![
            (
                "agent.js",
                include_str!("../../../kits/js/template/agent.js"),
                false,
            ),
            (
                "cbench-agent.js",
                include_str!("../../../kits/js/cbench-agent.js"),
                false,
            ),
            ("build.sh", include_str!("../../../kits/js/build.sh"), true),
        ],
    }
}

/// Why a plugin could not be scaffolded.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("plugin name `{0}`: use letters, digits and `_`, starting with a letter (it names the crate/module and the .wasm)")]
    BadName(String),
    #[error("{0} already exists and is not empty; choose another name or --output directory")]
    Exists(PathBuf),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `create` wrote.
#[derive(Debug)]
pub struct Created {
    pub dir: PathBuf,
    pub name: String,
    pub lang: PluginLanguage,
    pub files: Vec<PathBuf>,
}

impl Created {
    /// What to tell the user: the files and the next commands.
    pub fn render(&self) -> String {
        let dir = self.dir.display();
        let mut out = format!("created {dir}:\n");
        for f in &self.files {
            out.push_str(&format!("  {}\n", f.display()));
        }
        let toolchain = match self.lang {
            PluginLanguage::Rust => "cargo with the wasm32-wasip2 target",
            PluginLanguage::Python => "componentize-py 0.25.1, installed on first build (pip)",
            PluginLanguage::Js => "componentize-qjs 0.4.5, installed on first build (npm)",
        };
        out.push_str(&format!(
            "next:\n  {dir}/build.sh        # builds {dir}/{name}.wasm ({toolchain})\n  \
             cbench plugin inspect {dir}/{name}.wasm\n  \
             cbench run --agent {dir}/{name}.wasm -m oracle\n",
            name = self.name
        ));
        out
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn write(path: &Path, contents: &str, executable: bool) -> Result<(), ScaffoldError> {
    let err = |source| ScaffoldError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    std::fs::write(path, contents).map_err(err)?;
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    }
    Ok(())
}

/// Creates the plugin directory (refusing to touch a non-empty one).
pub fn create(args: &PluginNewArgs) -> Result<Created, ScaffoldError> {
    if !valid_name(&args.name) {
        return Err(ScaffoldError::BadName(args.name.clone()));
    }
    let dir = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::Exists(dir));
    }
    let mut files = Vec::new();
    for (rel, contents, executable) in template(args.lang) {
        let path = dir.join(rel);
        // The kits' build scripts name the .wasm after its directory; a new plugin's after itself.
        let contents = contents.replace("__NAME__", &args.name).replace(
            KIT_DEFAULT_OUTPUT,
            &format!("out=\"${{2:-$src/{}.wasm}}\"", args.name),
        );
        write(&path, &contents, executable)?;
        files.push(PathBuf::from(rel));
    }
    let contract = dir.join("wit").join("agent.wit");
    write(&contract, CONTRACT, false)?;
    files.push(PathBuf::from("wit/agent.wit"));
    Ok(Created {
        dir,
        name: args.name.clone(),
        lang: args.lang,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_identifiers() {
        assert!(valid_name("my_agent2"));
        for bad in ["", "2fast", "my-agent", "a b", "../x"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn every_template_names_the_plugin_and_a_non_empty_dir_is_refused() {
        let root = tempfile::tempdir().unwrap();
        for lang in [
            PluginLanguage::Rust,
            PluginLanguage::Python,
            PluginLanguage::Js,
        ] {
            let dir = root.path().join(format!("{lang:?}"));
            let args = PluginNewArgs {
                name: "scout".into(),
                lang,
                output: Some(dir.clone()),
            };
            let created = create(&args).unwrap();
            assert!(dir.join("wit/agent.wit").is_file());
            for f in &created.files {
                let text = std::fs::read_to_string(dir.join(f)).unwrap();
                assert!(!text.contains("__NAME__"), "{f:?} keeps a placeholder");
            }
            let build = std::fs::read_to_string(dir.join("build.sh")).unwrap();
            assert!(build.contains("scout.wasm"), "{lang:?}: {build}");
            assert!(matches!(create(&args), Err(ScaffoldError::Exists(_))));
        }
    }
}
