//! Reading and writing sysfs attributes. Writes never create files: on real
//! sysfs the attribute exists or the kernel does not offer it, and a fake
//! tree in a test must create what it wants written.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

/// Write `value` to an existing attribute in one `write(2)`, as sysfs wants.
pub(crate) fn write_attr(path: &Path, value: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// Read a file, returning `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
