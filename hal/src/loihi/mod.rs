//! Loihi 2 host backend: hwmon + power_supply energy, board-host reachability, SLURM state, vendor tool. Under construction.
