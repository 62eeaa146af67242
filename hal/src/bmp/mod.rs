//! SpiNNaker Board Management Processor over UDP (spec: shared/specs/spinnaker-bmp.md). Under construction.
