//! Linux sysfs backend: hwmon chips, thermal zones, power supplies, RAPL powercap zones and
//! PCI functions, read as plain files under a root (`/sys`, or a fixture tree in tests).
//!
//! - [`read`]: [`SysfsReader`], the only code that touches files: one bounded read or write
//!   per call, on a blocking thread, under a per-file deadline, with stuck files remembered.
//! - [`hwmon`], [`thermal`], [`power_supply`], [`powercap`], [`pci`]: one source each.
//! - [`device`]: [`SysfsSources`] (the sources of one device, reusable by other backends such
//!   as Loihi 2) and [`SysfsDevice`] (the [`crate::Device`] for any kind of card).
//! - [`config`]: [`SysfsConfig`] and its validation.
//! - `class_dir`: a thermal or powercap zone's directory, found by its attribute and remembered.
//! - [`discover`]: enumerate chips and PCI functions by rule.

mod class_dir;
pub mod config;
pub mod device;
pub mod discover;
pub mod hwmon;
pub mod pci;
pub mod power_supply;
pub mod powercap;
pub mod read;
pub mod source;
pub mod thermal;

pub use config::SysfsConfig;
pub use device::{SysfsDevice, SysfsSources};
pub use discover::{discover_hwmon, discover_pci};
pub use read::SysfsReader;
pub use source::SourceReport;

/// Locks state a source keeps between reads (a found directory, a counter mark). A panic
/// elsewhere cannot leave it torn: each value is replaced in one step, so a poisoned lock's
/// value is still good.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
