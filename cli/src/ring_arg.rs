//! Which ring a command works on: `--ring NAME`, else `$MEMTRACK_RING`,
//! else "default", with the same rules as the library (`memtrack_init`):
//! an empty name is refused, never turned into `/dev/shm/memtrack-`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use memtrack::ring_path;

/// `$MEMTRACK_RING`, if set.
///
/// # Errors
/// It is set but empty.
pub fn from_env() -> Result<Option<String>> {
    match std::env::var_os("MEMTRACK_RING") {
        None => Ok(None),
        Some(name) if name.is_empty() => {
            bail!("memtrack: MEMTRACK_RING is set but empty; name a ring or unset it")
        }
        Some(name) => Ok(Some(name.to_string_lossy().into_owned())),
    }
}

/// The ring file of `--ring` if given, else of `$MEMTRACK_RING`, else of
/// "default".
///
/// # Errors
/// The name given is empty, or names a record file (by path, or by a file
/// name that is no ring's but a recording's in this directory): every
/// command that takes a ring then says so, rather than "bad magic", or
/// `record` making a new ring beside the recording.
pub fn resolve(arg: Option<&str>) -> Result<PathBuf> {
    let name = match arg {
        Some(name) => name.to_owned(),
        None => from_env()?.unwrap_or_else(|| "default".to_owned()),
    };
    let path = path_of(&name)?;
    let given = Path::new(&name);
    if let Some(file) =
        [path.as_path(), given].into_iter().find(|p| is_record_file(p) && (*p == path || !path.exists()))
    {
        let file = crate::units::printable_path(file);
        bail!("memtrack: {file} is a record file, not a ring (read it with `memtrack report {file}`)");
    }
    Ok(path)
}

/// The ring file `name` names, without looking at it (`gc`, which lists
/// what is wrong with each file among others).
///
/// # Errors
/// `name` is empty.
pub fn path_of(name: &str) -> Result<PathBuf> {
    if name.is_empty() {
        bail!("memtrack: --ring needs a name (an empty one names no ring)");
    }
    Ok(ring_path(name))
}

/// Whether `path` starts with a record file's magic: a user who gives a
/// recording where a ring belongs is told so, not "corrupt header".
pub fn is_record_file(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && u64::from_le_bytes(magic) == crate::recording::FILE_MAGIC
}
