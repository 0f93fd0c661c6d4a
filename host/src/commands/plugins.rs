//! Plugins, their compile cache and the models they can use: `plugin …`, `cache …`, `models`.

use std::process::ExitCode;

use crate::cli::*;

/// `cbench plugin inspect`.
pub async fn plugin_inspect(args: PluginInspectArgs) -> anyhow::Result<ExitCode> {
    // A name is looked up as `run --agent` looks it up.
    let spec = args.file.to_string_lossy();
    let file = crate::plugin::search::SearchPath::from_env()
        .resolve("plugin inspect", &spec)?
        .path;
    let mut report = crate::plugin::inspect::inspect_file(&file)?;
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(crate::plugin::PluginHost::default_cache_dir);
    let host = crate::plugin::PluginHost::new(&cache_dir)?;
    // Compiled before (a run, or --compile): asking it its name takes milliseconds.
    if (args.compile || host.is_cached(&file)) && report.refused.is_none() {
        match host.load(&file).await {
            Ok((plugin, _)) => {
                report.name = Some(plugin.identity.name.clone());
                report.version = Some(plugin.identity.version.clone());
            }
            Err(e) => report.refused = Some(e.to_string()),
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.refused.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `cbench plugin new`.
pub async fn plugin_new(args: PluginNewArgs) -> anyhow::Result<ExitCode> {
    let created = crate::cli::scaffold::create(&args)?;
    println!("{}", created.render());
    Ok(ExitCode::SUCCESS)
}

/// `cbench plugin list`.
pub async fn plugin_list(args: PluginListArgs) -> anyhow::Result<ExitCode> {
    use crate::plugin::search::{Origin, SearchPath, COOPERBENCH_AGENTS};
    let search = SearchPath::from_env();
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(crate::plugin::PluginHost::default_cache_dir);
    let host = crate::plugin::PluginHost::new(&cache_dir)?;
    let mut rows = Vec::new();
    for found in search.list() {
        let mut inspection = crate::plugin::inspect::inspect_file(&found.path)?;
        if inspection.refused.is_none() {
            match host.load(&found.path).await {
                Ok((plugin, _)) => {
                    inspection.name = Some(plugin.identity.name.clone());
                    inspection.version = Some(plugin.identity.version.clone());
                }
                Err(e) => inspection.refused = Some(e.to_string()),
            }
        }
        rows.push((found, inspection));
    }
    if args.json {
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|(found, i)| {
                serde_json::json!({
                    "name": found.name,
                    "path": found.path,
                    "origin": found.origin,
                    "shadowed": found.shadowed,
                    "agent_name": i.name,
                    "agent_version": i.version,
                    "wit": i.wit_package,
                    "sha256": i.sha256,
                    "refused": i.refused,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("plugin search path (first match wins):");
    for (dir, origin) in &search.dirs {
        let origin = match origin {
            Origin::Variable => "from CBENCH_PLUGIN_PATH",
            Origin::WorkingDirectory => "./plugins",
            Origin::Installed => "installed by setup.sh",
            Origin::Checkout => "the checkout's plugins/",
        };
        println!("  {} ({origin})", dir.display().to_string().escape_debug());
    }
    if rows.is_empty() {
        println!("no plugins found: ./scripts/setup.sh builds and installs them, or set CBENCH_PLUGIN_PATH");
        return Ok(ExitCode::SUCCESS);
    }
    println!();
    println!(
        "{:<16} {:<24} {:<8} {:<14} FILE",
        "NAME", "AGENT", "WIT", "SHA256"
    );
    for (found, i) in &rows {
        let agent = match (&i.name, &i.version, &i.refused) {
            (_, _, Some(_)) => "refused".to_string(),
            (Some(n), Some(v), None) => format!("{n} {v}"),
            _ => "?".to_string(),
        };
        let wit = i
            .wit_package
            .as_deref()
            .and_then(|p| p.rsplit_once('@'))
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| "-".into());
        let note = if found.shadowed {
            "  (shadowed by an earlier one)".to_string()
        } else {
            String::new()
        };
        println!(
            "{:<16} {:<24} {:<8} {:<14} {}{note}",
            found.name.escape_debug().to_string(),
            agent.escape_debug().to_string(),
            wit,
            &i.sha256[..12.min(i.sha256.len())],
            found.path.display().to_string().escape_debug()
        );
        if let Some(reason) = &i.refused {
            println!("    refused: {}", reason.escape_debug());
        }
    }
    for (cb, ours) in COOPERBENCH_AGENTS {
        println!("{cb} (CooperBench) → {ours}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `cbench cache info`.
pub async fn cache_info(args: CacheInfoArgs) -> anyhow::Result<ExitCode> {
    let cache = compile_cache(args.cache_dir);
    let entries = cache.entries()?;
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    println!(
        "compiled plugins in {}: {} entries, {} (cap {}; {}=MiB changes it)",
        cache.dir().display(),
        entries.len(),
        crate::progress::human_bytes(total),
        crate::progress::human_bytes(cache.max_bytes()),
        crate::plugin::cache::MAX_MB_ENV
    );
    for e in &entries {
        println!(
            "  {:>10}  last used {}  {}",
            crate::progress::human_bytes(e.bytes),
            chrono::DateTime::from_timestamp(e.last_used as i64, 0)
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default(),
            e.path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cbench cache prune`.
pub async fn cache_prune(args: CachePruneArgs) -> anyhow::Result<ExitCode> {
    let cache = compile_cache(args.cache_dir);
    let target = if args.all {
        0
    } else {
        args.max_size.unwrap_or(cache.max_bytes())
    };
    let report = cache.prune_to(target, None)?;
    println!(
        "removed {} compiled plugin(s) ({}); kept {} ({}) in {}",
        report.removed,
        crate::progress::human_bytes(report.freed_bytes),
        report.kept,
        crate::progress::human_bytes(report.kept_bytes),
        cache.dir().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The compiled-plugin cache at `dir` (default location otherwise), knowing this engine so
/// entries of other wasmtime versions are pruned first.
fn compile_cache(dir: Option<std::path::PathBuf>) -> crate::plugin::CompileCache {
    let dir = dir.unwrap_or_else(crate::plugin::PluginHost::default_cache_dir);
    match crate::plugin::PluginHost::new(&dir) {
        Ok(host) => host.compile_cache().clone(),
        Err(_) => crate::plugin::CompileCache::new(&dir),
    }
}

/// `cbench models`.
pub async fn models(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    use crate::llm::providers::{catalog, Credentials};
    let credentials = Credentials::load(std::path::Path::new("."))?;
    let forms = catalog();
    if args.json {
        let json: Vec<serde_json::Value> = forms
            .iter()
            .map(|f| {
                serde_json::json!({
                    "form": f.form,
                    "wire": f.wire.name(),
                    "example": f.example,
                    "note": f.note,
                    "variables": f.vars.iter().map(|v| serde_json::json!({
                        "names": v.names,
                        "required": v.required,
                        "purpose": v.purpose,
                        "set": v.set_in(&credentials),
                    })).collect::<Vec<_>>(),
                    "ready": f.vars.iter().all(|v| !v.required || v.set_in(&credentials).is_some()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Model strings `-m` accepts (LiteLLM's names; default {}). Variables come from the environment or ./.env; ✓ set, ✗ missing (values are never shown).\n",
        crate::cli::DEFAULT_MODEL
    );
    for f in &forms {
        let ready = f
            .vars
            .iter()
            .all(|v| !v.required || v.set_in(&credentials).is_some());
        println!(
            "{} {:<26} e.g. {}",
            if ready { "✓" } else { "✗" },
            f.form,
            f.example
        );
        for v in &f.vars {
            let state = match v.set_in(&credentials) {
                Some(name) => format!("✓ {name} set"),
                None if v.required => "✗ not set".to_string(),
                None => "· not set (optional)".to_string(),
            };
            println!(
                "      {:<50} {:<24} {}",
                v.names.join(" | "),
                state,
                v.purpose
            );
        }
        if !f.note.is_empty() {
            println!("      {}", f.note);
        }
    }
    println!(
        "\nBuilt in, no key: oracle (replays the gold patches), scripted:<file>, replay:<run dir>."
    );
    Ok(ExitCode::SUCCESS)
}
