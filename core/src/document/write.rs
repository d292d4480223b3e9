//! Writing outputs: every file goes through a temporary file renamed over the target.

use crate::error::{Error, Result};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use super::metadata::{pixel_digest, Metadata, KEYWORD};
use super::{check_size, image_error};

/// Writes `bytes` to `path` through a temporary file in the same directory, renamed over the
/// target once complete: a failed write leaves no truncated file behind. A symbolic link is
/// written through (its target is replaced, the link stays); a target that is not a regular file
/// (a device such as `/dev/null`, a FIFO) is written into directly, never replaced by a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    // The temporary file's own name in a message would only confuse: the target is named.
    let plain = |e: std::io::Error| {
        Error::io(
            path,
            e.raw_os_error()
                .map_or_else(|| e.kind().into(), std::io::Error::from_raw_os_error),
        )
    };
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path).map_err(|e| {
            Error::io(
                path,
                std::io::Error::new(
                    e.kind(),
                    format!("a symbolic link whose target cannot be written ({e})"),
                ),
            )
        })?,
        _ => path.to_path_buf(),
    };
    if let Ok(m) = std::fs::metadata(&target) {
        if !m.is_file() {
            if m.is_dir() {
                return Err(Error::io(
                    path,
                    std::io::Error::other("is a directory, not a file"),
                ));
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .map_err(plain)?;
            f.write_all(bytes).map_err(plain)?;
            return f.flush().map_err(plain);
        }
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".arpg-").suffix(".part");
    // A new file gets the permissions any new file gets (0666 less the umask), not the
    // temporary file's private 0600; a replaced file keeps its own.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(&dir).map_err(plain)?;
    if let Ok(existing) = std::fs::metadata(&target) {
        // Best effort: the content is what matters; a mode we cannot copy stays the default.
        let _ = tmp.as_file().set_permissions(existing.permissions());
    }
    tmp.write_all(bytes).map_err(plain)?;
    tmp.as_file().sync_all().map_err(plain)?;
    tmp.persist(&target).map_err(|e| plain(e.error))?;
    Ok(())
}

/// The file a large output (a checkpoint written through its own temporary file) goes to:
/// `path`, or the target of the symbolic link `path` is; an error when it is a device, a FIFO
/// or a directory (a checkpoint is never written into one, nor replaces one with a file).
pub fn regular_output(path: &Path) -> Result<PathBuf> {
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?
        }
        _ => path.to_path_buf(),
    };
    match std::fs::metadata(&target) {
        Ok(m) if !m.is_file() => Err(Error::io(
            path,
            std::io::Error::other("not a regular file: name a file to write"),
        )),
        _ => Ok(target),
    }
}

/// Writes an RGB8 PNG with optional metadata (its pixel digest set to these pixels), atomically.
pub fn write_png(
    path: &Path,
    width: usize,
    height: usize,
    rgb: &[u8],
    metadata: Option<&Metadata>,
) -> Result<()> {
    check_size(width, height).map_err(|why| image_error(path, why))?;
    if rgb.len() != width * height * 3 {
        return Err(Error::Internal(format!(
            "{} bytes for a {width}x{height} RGB image",
            rgb.len()
        )));
    }
    let mut bytes = Vec::new();
    {
        let png_err = |e: png::EncodingError| image_error(path, e.to_string());
        let mut enc = png::Encoder::new(&mut bytes, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        if let Some(m) = metadata {
            let mut m = m.clone();
            m.pixels_sha256 = Some(pixel_digest(width, height, rgb));
            let p = m.patch.max(1);
            let whole = width.div_ceil(p) * p == width && height.div_ceil(p) * p == height;
            m.size = (!whole).then_some([width, height]);
            let json = serde_json::to_string(&m).map_err(|e| Error::Json {
                context: "metadata".into(),
                err: e,
            })?;
            // Plain tEXt: every PNG reader lists it (the JSON is ASCII, a few KB at most).
            enc.add_text_chunk(KEYWORD.to_string(), json)
                .map_err(png_err)?;
        }
        let mut writer = enc.write_header().map_err(png_err)?;
        writer.write_image_data(rgb).map_err(png_err)?;
        writer.finish().map_err(png_err)?;
    }
    write_atomic(path, &bytes)
}

/// Writes an RGB8 image in the format its extension names (PNG, JPEG or WebP; PNG when it names
/// none), atomically (see [`write_atomic`]): a full disk is an error, never an empty file.
pub fn write_image(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
    let format = match image::ImageFormat::from_path(path) {
        Ok(image::ImageFormat::Png) | Err(_) => return write_png(path, width, height, rgb, None),
        Ok(f) => f,
    };
    check_size(width, height).map_err(|why| image_error(path, why))?;
    let img =
        image::RgbImage::from_raw(width as u32, height as u32, rgb.to_vec()).ok_or_else(|| {
            Error::Internal(format!(
                "{} bytes for a {width}x{height} RGB image",
                rgb.len()
            ))
        })?;
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, format)
        .map_err(|e| image_error(path, e.to_string()))?;
    write_atomic(path, bytes.get_ref())
}
