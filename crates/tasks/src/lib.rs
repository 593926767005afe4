//! retbench-tasks: task generators and scorers (copy, entity tracking, drift,
//! scaling probes) and their metrics. Not built yet: it arrives with the
//! harness and model issues.
