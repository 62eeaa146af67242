//! Discovery by rule: the agent can ask for "every hwmon chip named `loihi2`" or "every PCI
//! function with vendor 0x8086 and device 0x0b00" instead of listing each device in its config.
//!
//! These run once, synchronously, while the agent builds its devices. They read only
//! attributes the kernel serves from memory (hwmon `name`, PCI `vendor` and `device`), never a
//! driver's sensor callback, so they cannot block on a broken driver the way sensor reads can.
//! An entry that cannot be read is skipped: it is someone else's device.

use std::path::{Path, PathBuf};

use super::read::{natural_key, parse_hex_u32, read_static_attr};

/// Entries of `dir`, in natural order (`hwmon2` before `hwmon10`); empty if unreadable.
fn entries(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort_by_key(|n| natural_key(n));
    names
}

/// Directories `<root>/class/hwmon/hwmonN` whose `name` is `name`, in hwmon order. Each can be
/// given to [`super::SysfsConfig::hwmon`] as it is.
pub fn discover_hwmon(root: &Path, name: &str) -> Vec<PathBuf> {
    let base = root.join("class/hwmon");
    entries(&base)
        .into_iter()
        .filter(|e| e.starts_with("hwmon"))
        .map(|e| base.join(e))
        .filter(|dir| read_static_attr(&dir.join("name")).is_ok_and(|n| n == name))
        .collect()
}

/// Addresses (`DDDD:BB:DD.F`) of the PCI functions under `<root>/bus/pci/devices` with this
/// vendor id, and this device id when one is given, in address order.
pub fn discover_pci(root: &Path, vendor: u16, device: Option<u16>) -> Vec<String> {
    let base = root.join("bus/pci/devices");
    let id = |dir: &Path, attr: &str| {
        let path = dir.join(attr);
        read_static_attr(&path)
            .ok()
            .and_then(|s| parse_hex_u32(&path, &s).ok())
    };
    let mut addrs = entries(&base);
    // Fixed-width hex addresses sort correctly as text (a natural sort would not: 0a < 10).
    addrs.sort();
    addrs
        .into_iter()
        .filter(|addr| {
            let dir = base.join(addr);
            id(&dir, "vendor") == Some(u32::from(vendor))
                && device.is_none_or(|d| id(&dir, "device") == Some(u32::from(d)))
        })
        .collect()
}
