//! Filesystem change detection between a layer and its parent (Go's `ChangesDirs`).
