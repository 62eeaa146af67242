//! Linux sysfs backend: hwmon, thermal zones, power supplies, powercap, PCI. Under construction.
