//! [`ClassDir`]: a device's directory under a sysfs class, found by one of its attributes (a
//! thermal zone by its `type`, a powercap zone by its `name`) and remembered. The numbering
//! (`thermal_zone3`) can change across boots and hotplug, the attribute does not; searching
//! on every read would cost one file read per zone in the class.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::lock;
use super::read::SysfsReader;
use crate::device::HalError;

/// Where to look, and for what: `<class>/<prefix>*` whose `attr` reads `want`.
pub struct ClassDir {
    class: &'static str,
    prefix: &'static str,
    attr: &'static str,
    /// For messages: "thermal zone of type", "powercap zone named".
    what: &'static str,
    want: String,
    found: Mutex<Option<PathBuf>>,
}

impl ClassDir {
    pub fn new(
        [class, prefix, attr, what]: [&'static str; 4],
        want: impl Into<String>,
    ) -> ClassDir {
        ClassDir {
            class,
            prefix,
            attr,
            what,
            want: want.into(),
            found: Mutex::new(None),
        }
    }

    /// The attribute value looked for: the zone's type or name.
    pub fn want(&self) -> &str {
        &self.want
    }

    fn found(&self) -> MutexGuard<'_, Option<PathBuf>> {
        lock(&self.found)
    }

    /// Absolute directory, once found.
    pub fn location(&self, reader: &SysfsReader) -> Option<PathBuf> {
        self.found().as_ref().map(|d| reader.path(d))
    }

    pub fn forget(&self) {
        *self.found() = None;
    }

    /// The directory (relative to the sysfs root) and its entries. A directory that cannot be
    /// listed is an error; the caller forgets it, so the next read searches again.
    pub async fn list(&self, reader: &SysfsReader) -> Result<(PathBuf, Vec<String>), HalError> {
        let dir = self.locate(reader).await?;
        let names = reader.list_dir(&dir).await?;
        Ok((dir, names))
    }

    async fn locate(&self, reader: &SysfsReader) -> Result<PathBuf, HalError> {
        if let Some(d) = self.found().clone() {
            return Ok(d);
        }
        let base = Path::new(self.class);
        let found = reader
            .find_dir_by_attr(base, self.prefix, self.attr, &self.want)
            .await?
            .ok_or_else(|| {
                HalError::Vanished(format!(
                    "no {} {:?} under {}",
                    self.what,
                    self.want,
                    reader.path(base).display()
                ))
            })?;
        *self.found() = Some(found.clone());
        Ok(found)
    }
}
