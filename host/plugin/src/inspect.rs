//! Reads a plugin's contract from its binary without compiling it: the top-level imports and
//! exports of the component, the `cooperbench:agent` version it was built against, and the
//! imports this host does not provide. Takes milliseconds even for an 18 MB Python component,
//! so a wrong plugin is refused before anything is compiled or cached.

use serde::Serialize;
use wasmparser::{Chunk, Encoding, Parser, Payload};

use super::{SUPPORTED_WIT_VERSIONS, WIT_PACKAGE};

/// WASI 0.2 packages the host links. They grant nothing: no preopened directory, no
/// environment, arguments or stdin, no network; stdout/stderr go to the agent's plugin log.
const PROVIDED_WASI_PACKAGES: &[&str] = &[
    "wasi:io",
    "wasi:clocks",
    "wasi:random",
    "wasi:cli",
    "wasi:filesystem",
    "wasi:sockets",
];

/// The interface names a component imports and exports at its top level.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ComponentInterfaces {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// A `namespace:package/interface@version` name split into its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceName<'a> {
    /// `namespace:package`, e.g. `wasi:http`.
    pub package: &'a str,
    /// Interface within the package, e.g. `types`.
    pub interface: &'a str,
    /// Version, when the name carries one.
    pub version: Option<&'a str>,
}

impl<'a> InterfaceName<'a> {
    /// Splits `wasi:http/types@0.2.3`; `None` for plain names (functions, unnamed items).
    pub fn parse(name: &'a str) -> Option<InterfaceName<'a>> {
        let (path, version) = match name.split_once('@') {
            Some((p, v)) => (p, Some(v)),
            None => (name, None),
        };
        let (package, interface) = path.split_once('/')?;
        package.contains(':').then_some(InterfaceName {
            package,
            interface,
            version,
        })
    }
}

/// Reads the top-level import and export names of a component without validating or
/// compiling its code. Errors say why the bytes are not a component.
pub fn read_interfaces(bytes: &[u8]) -> Result<ComponentInterfaces, String> {
    if !bytes.starts_with(b"\0asm") {
        // wasmtime also accepts the text format; so does this check.
        let binary = wat::parse_bytes(bytes).map_err(|_| {
            "not a WebAssembly file (neither the `\\0asm` binary header nor the text format)"
                .to_string()
        })?;
        return match binary {
            std::borrow::Cow::Owned(b) => read_interfaces(&b),
            std::borrow::Cow::Borrowed(_) => Err("not a WebAssembly file".into()),
        };
    }
    let mut parser = Parser::new(0);
    let mut offset = 0usize;
    let mut found = ComponentInterfaces {
        imports: Vec::new(),
        exports: Vec::new(),
    };
    loop {
        let rest = bytes.get(offset..).unwrap_or_default();
        let (consumed, payload) = match parser.parse(rest, true) {
            Ok(Chunk::Parsed { consumed, payload }) => (consumed, payload),
            Ok(Chunk::NeedMoreData(_)) => return Err("the file is truncated".into()),
            Err(e) => return Err(e.to_string()),
        };
        offset += consumed;
        match payload {
            Payload::Version { encoding, .. } if encoding != Encoding::Component => {
                return Err(
                    "it is a core WebAssembly module, not a component (build for \
                            wasm32-wasip2, or wrap it with `wasm-tools component new`)"
                        .into(),
                );
            }
            Payload::ComponentImportSection(reader) => {
                for import in reader {
                    let import = import.map_err(|e| e.to_string())?;
                    found.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| e.to_string())?;
                    found.exports.push(export.name.name.to_string());
                }
            }
            // Nested modules and components are the implementation, not the contract:
            // skip their bytes instead of parsing them.
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => {
                offset = unchecked_range.end;
            }
            Payload::End(_) => return Ok(found),
            _ => {}
        }
    }
}

/// What a component's contract says about it being a cbench agent plugin.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentExport {
    /// Exports `cooperbench:agent/agent@VERSION`.
    Versioned(String),
    /// Exports `cooperbench:agent/agent` with no version.
    Unversioned,
    /// Does not export the agent interface.
    Missing,
}

impl ComponentInterfaces {
    /// Which `cooperbench:agent/agent` export the component has.
    pub fn agent_export(&self) -> AgentExport {
        let mut unversioned = false;
        for name in &self.exports {
            if let Some(parsed) = InterfaceName::parse(name) {
                if parsed.package == WIT_PACKAGE && parsed.interface == "agent" {
                    match parsed.version {
                        Some(v) => return AgentExport::Versioned(v.to_string()),
                        None => unversioned = true,
                    }
                }
            }
        }
        if unversioned {
            AgentExport::Unversioned
        } else {
            AgentExport::Missing
        }
    }

    /// Imports the host cannot satisfy for a plugin of `wit_version`, each with advice.
    pub fn unprovided_imports(&self, wit_version: &str) -> Vec<UnprovidedImport> {
        self.imports
            .iter()
            .filter(|name| !is_provided(name, wit_version))
            .map(|name| UnprovidedImport {
                name: name.clone(),
                advice: advice_for(name),
            })
            .collect()
    }
}

/// An import the host does not link, and what the author can do about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnprovidedImport {
    pub name: String,
    pub advice: String,
}

fn is_provided(name: &str, wit_version: &str) -> bool {
    let Some(parsed) = InterfaceName::parse(name) else {
        return false;
    };
    if parsed.package == WIT_PACKAGE {
        return parsed.version == Some(wit_version);
    }
    // wasmtime links WASI 0.2.x imports to its 0.2 implementation whatever the patch level.
    PROVIDED_WASI_PACKAGES.contains(&parsed.package)
        && parsed.version.is_some_and(|v| v.starts_with("0.2."))
}

fn advice_for(name: &str) -> String {
    let parsed = InterfaceName::parse(name);
    match parsed.as_ref().map(|p| p.package) {
        Some("wasi:http") => "plugins have no network (LLM calls go through `cooperbench:agent/llm`); \
            ComponentizeJS adds wasi:http by default: build with `-d http -d fetch-event` \
            (the JS kit's build script does); for other toolchains drop the HTTP client from the build"
            .into(),
        Some(WIT_PACKAGE) => format!(
            "this host serves {WIT_PACKAGE} {}; a plugin's imports must have the same version as its \
             `agent` export — rebuild against cbench's wit/agent.wit",
            SUPPORTED_WIT_VERSIONS.join(", ")
        ),
        Some(p) if PROVIDED_WASI_PACKAGES.contains(&p) => format!(
            "this host links {p} 0.2.x; rebuild with a WASI 0.2 (wasm32-wasip2) toolchain"
        ),
        _ => "the host provides only WASI 0.2 (granting nothing) and the cooperbench:agent \
              imports; remove this dependency from the plugin"
            .into(),
    }
}

/// What a provided interface gives a plugin, for `cbench plugin inspect`.
fn grant_note(name: &str) -> &'static str {
    let Some(parsed) = InterfaceName::parse(name) else {
        return "";
    };
    match (parsed.package, parsed.interface) {
        (WIT_PACKAGE, _) => "cbench contract",
        ("wasi:filesystem", _) => "linked, grants nothing: no directory is preopened",
        ("wasi:sockets", _) => "linked, grants nothing: every network operation is denied",
        ("wasi:cli", "environment") => "linked: no environment variables, no arguments",
        ("wasi:cli", "stdin") => "linked: stdin is empty",
        ("wasi:cli", "stdout" | "stderr") => {
            "linked: captured into the agent's plugin_output.log (bounded)"
        }
        ("wasi:cli", "exit") => "linked: exiting ends the agent with an error",
        ("wasi:clocks" | "wasi:random" | "wasi:io", _) => "linked",
        ("wasi:cli", _) => "linked",
        _ => "",
    }
}

/// One import and whether this host links it.
#[derive(Debug, Clone, Serialize)]
pub struct ImportStatus {
    pub name: String,
    pub provided: bool,
    /// What it grants (provided) or what to do about it (not provided).
    pub note: String,
}

/// Everything `cbench plugin inspect` reports about a file.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub path: String,
    pub size_bytes: u64,
    pub sha256: String,
    /// `cooperbench:agent@<version>` when the plugin exports the agent interface with a version.
    pub wit_package: Option<String>,
    /// Whether this host serves that version.
    pub wit_supported: bool,
    pub exports: Vec<String>,
    pub imports: Vec<ImportStatus>,
    /// From `info()`, when known (compiled now or earlier).
    pub name: Option<String>,
    pub version: Option<String>,
    /// Why cbench would refuse it; `None` when it would run it.
    pub refused: Option<String>,
    /// Time spent reading the binary, in milliseconds.
    pub read_ms: f64,
}

/// Reads `path` and reports its contract without compiling it. Only an unreadable file is an
/// error; a wrong plugin is reported in `refused`.
pub fn inspect_file(path: &std::path::Path) -> Result<Inspection, super::PluginError> {
    let started = std::time::Instant::now();
    let bytes = std::fs::read(path).map_err(|source| super::PluginError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let refused = super::check_contract(path, &bytes)
        .err()
        .map(|e| e.to_string());
    let interfaces = read_interfaces(&bytes).unwrap_or(ComponentInterfaces {
        imports: Vec::new(),
        exports: Vec::new(),
    });
    let version = match interfaces.agent_export() {
        AgentExport::Versioned(v) => Some(v),
        _ => None,
    };
    let imports = interfaces
        .imports
        .iter()
        .map(|name| {
            let provided = version.as_deref().is_some_and(|v| is_provided(name, v));
            ImportStatus {
                name: name.clone(),
                provided,
                note: if provided {
                    grant_note(name).to_string()
                } else {
                    advice_for(name)
                },
            }
        })
        .collect();
    Ok(Inspection {
        path: path.display().to_string(),
        size_bytes: bytes.len() as u64,
        sha256: crate::fsutil::sha256_hex(&bytes),
        wit_supported: version
            .as_deref()
            .is_some_and(|v| SUPPORTED_WIT_VERSIONS.contains(&v)),
        wit_package: version.map(|v| format!("{WIT_PACKAGE}@{v}")),
        exports: interfaces.exports,
        imports,
        name: None,
        version: None,
        refused,
        read_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

impl Inspection {
    /// The report as a person reads it.
    pub fn render(&self) -> String {
        let mut out = format!("plugin   {}\n", self.path);
        out.push_str(&format!(
            "size     {} ({} bytes)\nsha256   {}\n",
            crate::progress::human_bytes(self.size_bytes),
            self.size_bytes,
            self.sha256
        ));
        let contract = match (&self.wit_package, self.wit_supported) {
            (Some(p), true) => format!("{p} (served by this host)"),
            (Some(p), false) => format!(
                "{p} (NOT served by this host, which serves {})",
                SUPPORTED_WIT_VERSIONS.join(", ")
            ),
            (None, _) => "none: it does not export a versioned cooperbench:agent/agent".into(),
        };
        out.push_str(&format!("contract {contract}\n"));
        match (&self.name, &self.version) {
            (Some(n), Some(v)) => out.push_str(&format!("agent    {n} {v}\n")),
            _ if self.refused.is_none() => out.push_str(
                "agent    name and version come from info(): add --compile (compiles and caches it)\n",
            ),
            _ => {}
        }
        for (i, e) in self.exports.iter().enumerate() {
            let label = if i == 0 { "exports" } else { "" };
            out.push_str(&format!("{label:<8} {e}\n"));
        }
        for (i, import) in self.imports.iter().enumerate() {
            let label = if i == 0 { "imports" } else { "" };
            let mark = if import.provided { "✓" } else { "✗" };
            let note = if import.note.is_empty() {
                String::new()
            } else {
                format!("  — {}", import.note)
            };
            out.push_str(&format!("{label:<8} {mark} {}{note}\n", import.name));
        }
        match &self.refused {
            None => out.push_str("verdict  ✓ cbench can run it\n"),
            Some(why) => out.push_str(&format!("verdict  ✗ refused: {why}\n")),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_package_interface_and_version() {
        assert_eq!(
            InterfaceName::parse("wasi:http/types@0.2.3"),
            Some(InterfaceName {
                package: "wasi:http",
                interface: "types",
                version: Some("0.2.3")
            })
        );
        assert_eq!(InterfaceName::parse("run"), None);
    }

    #[test]
    fn wasi_http_and_foreign_versions_are_not_provided() {
        let component = ComponentInterfaces {
            imports: vec![
                "wasi:io/streams@0.2.6".into(),
                "wasi:cli/stdout@0.2.0".into(),
                "cooperbench:agent/llm@0.1.0".into(),
                "wasi:http/outgoing-handler@0.2.3".into(),
                "wasi:io/streams@0.3.0".into(),
                "cooperbench:agent/sandbox@0.2.0".into(),
            ],
            exports: vec!["cooperbench:agent/agent@0.1.0".into()],
        };
        assert_eq!(
            component.agent_export(),
            AgentExport::Versioned("0.1.0".into())
        );
        let missing: Vec<String> = component
            .unprovided_imports("0.1.0")
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(
            missing,
            [
                "wasi:http/outgoing-handler@0.2.3",
                "wasi:io/streams@0.3.0",
                "cooperbench:agent/sandbox@0.2.0"
            ]
        );
        // Each says what to do: a mismatched cooperbench import points at the WIT to build with.
        let advice = &component.unprovided_imports("0.1.0")[2].advice;
        assert!(
            advice.contains("rebuild against cbench's wit/agent.wit"),
            "{advice}"
        );
    }

    #[test]
    fn a_core_module_is_not_a_component() {
        let module = b"\0asm\x01\0\0\0";
        let err = read_interfaces(module).unwrap_err();
        assert!(err.contains("core WebAssembly module"), "{err}");
        assert!(read_interfaces(b"not wasm").is_err());
    }
}
