//! rlo-runtime: binds batches (safetensors), runs compiled objectives on a backend (interp, cpu,
//! cuda), splits optimizer steps into micro-batches exactly, and hosts the `rloc` CLI.
