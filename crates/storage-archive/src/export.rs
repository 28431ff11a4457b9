//! Producing layer tars the way Go 1.60 does (`TarWithOptions`, `ExportChanges`).
