//! Files into and out of a container: tar archives built and streamed through the engine,
//! never a command run inside it.

use std::io::Read;

use futures_util::StreamExt;

use super::Container;
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};

use crate::{is_not_found, DockerError};

impl Container {
    /// Extracts `entries` under `dest_dir` (which must exist); parents are created.
    pub async fn upload(&self, dest_dir: &str, entries: &[TarEntry]) -> Result<(), DockerError> {
        self.upload_archive(dest_dir, tar_archive(entries)?).await
    }

    /// Extracts a ready tar archive under `dest_dir` (which must exist).
    pub async fn upload_archive(
        &self,
        dest_dir: &str,
        archive: Vec<u8>,
    ) -> Result<(), DockerError> {
        self.engine
            .api()
            .upload_to_container(
                &self.id,
                Some(
                    UploadToContainerOptionsBuilder::default()
                        .path(dest_dir)
                        .build(),
                ),
                bollard::body_full(archive.into()),
            )
            .await
            .map_err(DockerError::api(format!("copying files into {dest_dir}")))
    }

    /// A tar archive of `path` (a file or a directory) inside the container.
    pub async fn download(&self, path: &str) -> Result<Vec<u8>, DockerError> {
        let mut bytes = Vec::new();
        self.download_into(path, &mut bytes, "memory").await?;
        Ok(bytes)
    }

    /// Streams a tar archive of `path` inside the container into `consume`, which reads it
    /// on a blocking thread as it arrives (nothing is buffered beyond a few chunks).
    pub async fn download_with<R: Send + 'static>(
        &self,
        path: &str,
        consume: impl FnOnce(&mut dyn std::io::Read) -> R + Send + 'static,
    ) -> Result<R, DockerError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
        let reader = tokio::task::spawn_blocking(move || {
            let mut reader = ChannelReader {
                rx,
                current: bytes::Bytes::new(),
            };
            consume(&mut reader)
        });
        let mut stream = self.archive_of(path);
        let mut failure = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    // The consumer stopped reading (it had enough): stop the transfer.
                    if tx.send(Ok(chunk)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let e = archive_error(path, e);
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let result = reader
            .await
            .map_err(|e| DockerError::Other(format!("reading the archive of {path}: {e}")))?;
        match failure {
            Some(e) => Err(e),
            None => Ok(result),
        }
    }

    /// Streams a tar archive of `path` inside the container into the host file `dest`.
    pub async fn download_to_file(
        &self,
        path: &str,
        dest: &std::path::Path,
    ) -> Result<(), DockerError> {
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| DockerError::Other(format!("creating {}: {e}", dest.display())))?;
        self.download_into(path, &mut file, &dest.display().to_string())
            .await
    }

    /// The engine's tar stream of `path` inside the container.
    fn archive_of(
        &self,
        path: &str,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, bollard::errors::Error>> + '_ {
        self.engine.api().download_from_container(
            &self.id,
            Some(
                DownloadFromContainerOptionsBuilder::default()
                    .path(path)
                    .build(),
            ),
        )
    }

    async fn download_into<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        path: &str,
        writer: &mut W,
        dest: &str,
    ) -> Result<(), DockerError> {
        use tokio::io::AsyncWriteExt;
        let mut stream = self.archive_of(path);
        let write_err = |e: std::io::Error| DockerError::Other(format!("writing {dest}: {e}"));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| archive_error(path, e))?;
            writer.write_all(&chunk).await.map_err(write_err)?;
        }
        writer.flush().await.map_err(write_err)
    }

    /// The contents of one regular file inside the container.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, DockerError> {
        let archive = self.download(path).await?;
        let mut tar = tar::Archive::new(archive.as_slice());
        let mut entries = tar
            .entries()
            .map_err(|e| DockerError::Other(format!("reading the archive of {path}: {e}")))?;
        if let Some(entry) = entries.next() {
            let mut entry = entry
                .map_err(|e| DockerError::Other(format!("reading the archive of {path}: {e}")))?;
            if !entry.header().entry_type().is_file() {
                return Err(DockerError::Other(format!("{path} is not a regular file")));
            }
            let mut contents = Vec::new();
            entry
                .read_to_end(&mut contents)
                .map_err(|e| DockerError::Other(format!("reading {path}: {e}")))?;
            return Ok(contents);
        }
        Err(DockerError::Other(format!("{path}: empty archive")))
    }
}

/// One file (or directory, when `contents` is None) of an upload.
#[derive(Debug, Clone)]
pub struct TarEntry {
    pub path: String,
    pub contents: Option<Vec<u8>>,
    pub mode: u32,
}

impl TarEntry {
    /// A regular file.
    pub fn file(path: &str, contents: &[u8], mode: u32) -> TarEntry {
        TarEntry {
            path: path.to_string(),
            contents: Some(contents.to_vec()),
            mode,
        }
    }

    /// A directory.
    pub fn dir(path: &str) -> TarEntry {
        TarEntry {
            path: path.to_string(),
            contents: None,
            mode: 0o755,
        }
    }
}

/// An uncompressed tar of `entries` (root-owned, modified now, so build tools see them as new).
pub fn tar_archive(entries: &[TarEntry]) -> Result<Vec<u8>, DockerError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(entry.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(now);
        let result = match &entry.contents {
            Some(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(bytes.len() as u64);
                builder.append_data(&mut header, &entry.path, bytes.as_slice())
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, &entry.path, std::io::empty())
            }
        };
        result.map_err(|e| DockerError::Other(format!("archiving {}: {e}", entry.path)))?;
    }
    builder
        .into_inner()
        .map_err(|e| DockerError::Other(format!("finishing an archive: {e}")))
}

/// What failed copying `path` out of a container, in words a user can act on.
fn archive_error(path: &str, e: bollard::errors::Error) -> DockerError {
    if is_not_found(&e) {
        DockerError::NoSuchPath(path.to_string())
    } else {
        DockerError::api(format!("copying {path} out of the container"))(e)
    }
}

/// A blocking reader over chunks sent from an async task.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
