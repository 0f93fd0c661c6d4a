//! Arguments of `cbench plugin …` (author tooling) and `cbench cache …`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// `cbench plugin …`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a new agent plugin from the kit of a language; it builds and runs as it is.
    New(PluginNewArgs),
    /// Show a plugin's contract (WIT version, imports, exports, hash) read from the binary,
    /// without compiling it; exits 1 when cbench would refuse it.
    Inspect(PluginInspectArgs),
    /// Plugins a name resolves to (`--agent NAME`), in search-path order: name, version, WIT,
    /// sha256, file.
    List(PluginListArgs),
}

/// Raw `cbench plugin list` arguments.
#[derive(Debug, Args)]
pub struct PluginListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Cache for compiled plugins (default ~/.cache/cbench; env CBENCH_CACHE_DIR); listing
    /// compiles each plugin once (cached) to ask its name and version.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// Languages with a plugin kit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PluginLanguage {
    /// Rust with wit-bindgen (cargo, wasm32-wasip2).
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-qjs (QuickJS).
    Js,
}

/// Raw `cbench plugin new` arguments.
#[derive(Debug, Args)]
pub struct PluginNewArgs {
    /// Plugin name (letters, digits, `_`; also the directory created).
    pub name: String,
    /// Language of the plugin.
    #[arg(long, value_enum)]
    pub lang: PluginLanguage,
    /// Directory to create the plugin in (default: ./NAME).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

/// Raw `cbench plugin inspect` arguments.
#[derive(Debug, Args)]
pub struct PluginInspectArgs {
    /// The plugin's .wasm file, or a plugin name on the search path (as for `run --agent`).
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also compile it (cached, as `run` would) to call `info()` for its name and version.
    #[arg(long)]
    pub compile: bool,
    /// Cache for compiled plugins (default ~/.cache/cbench; env CBENCH_CACHE_DIR).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// `cbench cache …`.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Size, cap and entries of the compiled-plugin cache.
    Info(CacheInfoArgs),
    /// Remove compiled plugins, least recently used first, down to a size (default: the cap).
    Prune(CachePruneArgs),
}

/// Raw `cbench cache info` arguments.
#[derive(Debug, Args)]
pub struct CacheInfoArgs {
    /// Cache directory (default ~/.cache/cbench; env CBENCH_CACHE_DIR).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// Raw `cbench cache prune` arguments.
#[derive(Debug, Args)]
pub struct CachePruneArgs {
    /// Cache directory (default ~/.cache/cbench; env CBENCH_CACHE_DIR).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Keep at most this much (e.g. 200M, 1G); default: the cap (CBENCH_CACHE_MAX_MB, else 1 GiB).
    #[arg(long, value_parser = crate::plugin::cache::parse_size, conflicts_with = "all")]
    pub max_size: Option<u64>,
    /// Remove every compiled plugin.
    #[arg(long)]
    pub all: bool,
}
