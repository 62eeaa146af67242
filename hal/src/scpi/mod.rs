//! SCPI over raw TCP for the photonic bench (spec: shared/specs/scpi-instruments.md). Under construction.
