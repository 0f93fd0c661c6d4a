//! Named volumes the host makes for a pair (the team setting's scratchpad): a size-capped
//! tmpfs the engine keeps, mounted into each agent container of the pair and no other.

use std::collections::HashMap;

use bollard::models::VolumeCreateRequest;

use super::{is_not_found, DockerError, Engine};

/// Creates volume `name`: a tmpfs of at most `size_bytes`, writable by every user.
pub async fn create_tmpfs(
    engine: &Engine,
    name: &str,
    labels: HashMap<String, String>,
    size_bytes: u64,
) -> Result<(), DockerError> {
    engine
        .api()
        .create_volume(VolumeCreateRequest {
            name: Some(name.to_string()),
            driver: Some("local".into()),
            // The kernel caps it: nothing an agent writes there can pass the size.
            driver_opts: Some(HashMap::from([
                ("type".to_string(), "tmpfs".to_string()),
                ("device".to_string(), "tmpfs".to_string()),
                ("o".to_string(), format!("size={size_bytes},mode=1777")),
            ])),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .map_err(DockerError::api(format!("creating volume {name}")))?;
    Ok(())
}

/// Removes volume `name` (already gone is fine).
pub async fn remove(engine: &Engine, name: &str) -> Result<(), DockerError> {
    match engine
        .api()
        .remove_volume(
            name,
            Some(
                bollard::query_parameters::RemoveVolumeOptionsBuilder::default()
                    .force(true)
                    .build(),
            ),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(DockerError::api(format!("removing volume {name}"))(e)),
    }
}
