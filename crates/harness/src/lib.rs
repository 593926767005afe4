//! retbench-harness: suite YAML → validated plan → parallel, resumable runs →
//! run store, shards and provenance. Not built yet: it arrives with the
//! harness issue.
