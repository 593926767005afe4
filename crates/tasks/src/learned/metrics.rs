//! The metric specs every learned task reports (accuracy per slice, its
//! controls, probes, continual-learning summaries, losses, throughput,
//! sizes, slot telemetry) and the binding criterion (`time_to_bind`).

use super::*;

/// The metrics of a learned task: accuracy per slice (with its chance
/// level), one per control, losses, throughput and sizes, and slot
/// telemetry per session when the task asks for it.
pub fn metric_specs(task: &dyn Episodes) -> Vec<MetricSpec> {
    let mut out = accuracy_specs(task);
    out.extend(output_specs(task));
    out.extend(continual_specs(task));
    out.extend(training_specs());
    out.extend(telemetry_specs(task));
    out
}

/// Accuracy per slice, one per control and per side-probe group, with the
/// task's chance and reference levels.
fn accuracy_specs(task: &dyn Episodes) -> Vec<MetricSpec> {
    let key = task.slice_key();
    let references = task.references();
    let with_chance = |s: MetricSpec| match task.chance() {
        Some(c) => s.chance(c),
        None => s,
    };
    let with_references = |s: MetricSpec| {
        references
            .iter()
            .fold(s, |s, (label, slice, v)| s.reference(label, slice, *v))
    };
    let sliced = |s: MetricSpec| match task.second_slice() {
        Some(k2) => s.sliced(key).sliced(k2),
        None => s.sliced(key),
    };
    let mut out = vec![with_references(with_chance(sliced(MetricSpec::share(
        "accuracy",
        "held-out accuracy",
    ))))];
    for c in task.controls() {
        out.push(with_references(with_chance(sliced(MetricSpec::share(
            c.metric, c.about,
        )))));
    }
    for (name, about) in task.probe_groups() {
        out.push(with_chance(MetricSpec::share(name, about).sliced(key)));
    }
    out
}

/// The task's own scorers' metrics (whole sequences, bit errors, stale
/// answers, …).
fn output_specs(task: &dyn Episodes) -> Vec<MetricSpec> {
    let key = task.slice_key();
    task.scorers().iter().flat_map(|s| s.specs(key)).collect()
}

/// Continual-learning summaries (side probe), gate quality (relevance) and
/// in-context accuracy before and after retention.
fn continual_specs(task: &dyn Episodes) -> Vec<MetricSpec> {
    let with_chance = |s: MetricSpec| match task.chance() {
        Some(c) => s.chance(c),
        None => s,
    };
    let mut out = Vec::new();
    if task.side_probe() {
        out.extend([
            MetricSpec::new(
                "forgetting",
                "max earlier accuracy on the first session's facts minus the last (Chaudhry et al. 2018, eq. 8, one task)",
            )
            .lower()
            .bounds(-1.0, 1.0),
            MetricSpec::new(
                "bwt",
                "backward transfer: last accuracy minus accuracy right after the facts (Lopez-Paz & Ranzato 2017, eq. 3, one task)",
            )
            .bounds(-1.0, 1.0),
            MetricSpec::new(
                "half_life",
                "later writes until accuracy loses half its excess over chance (interpolated; the stream's length if never, 0 if no excess)",
            )
            .unit("writes")
            .at_least(0.0)
            .censored(Censoring::Flagged {
                flag: "half_life_censored".into(),
            }),
            MetricSpec::share(
                "half_life_censored",
                "1 where accuracy never lost half its excess within the stream (half_life is then a lower bound)",
            )
            .neither()
            .no_plot(),
            MetricSpec::new(
                "memory_drift",
                "‖M_t − M_0‖/‖M_0‖ over the slots occupied after the first session",
            )
            .lower()
            .at_least(0.0)
            .sliced("writes"),
        ]);
    }
    if task.relevance() {
        out.extend([
            MetricSpec::share(
                "gate_precision",
                "share of the writes the gate passed that were relevant",
            ),
            MetricSpec::share(
                "gate_recall",
                "share of the relevant writes the gate passed",
            ),
            MetricSpec::share("gate_pass_rate", "share of candidate writes passed").neither(),
        ]);
    }
    if task.in_session_label().is_some() {
        out.extend([
            with_chance(MetricSpec::share(
                "in_session_before",
                "in-context accuracy of the base before retention was added",
            )),
            with_chance(MetricSpec::share(
                "in_session_after",
                "in-context accuracy of the final model",
            )),
        ]);
    }
    out
}

/// Binding time, losses, throughput, times and sizes: every learned run.
fn training_specs() -> Vec<MetricSpec> {
    let mut out = Vec::new();
    out.push(
        MetricSpec::new(
            "time_to_bind",
            "first evaluation step with accuracy above 0.9 on the binding slice (0: never)",
        )
        .unit("steps")
        .neither()
        .at_least(0.0)
        .censored(Censoring::ZeroIsNever),
    );
    out.push(
        MetricSpec::new(
            "train_steps",
            "steps trained: train.steps, or fewer where train.stop ended the run (runs with train.stop)",
        )
        .unit("steps")
        .neither()
        .at_least(0.0),
    );
    out.push(
        MetricSpec::new(
            "stopped",
            "1 where train.stop ended the run before train.steps, else 0 (runs with train.stop)",
        )
        .neither()
        .bounds(0.0, 1.0),
    );
    let loss = |name: &str, about: &str| {
        MetricSpec::new(name, about)
            .unit("nats")
            .lower()
            .at_least(0.0)
    };
    out.extend([
        loss("final_loss", "held-out loss at the end"),
        loss("eval_loss", "held-out loss"),
        loss("train_loss", "training loss"),
        MetricSpec::new("train_tokens_per_s", "training throughput")
            .unit("tokens/s")
            .at_least(0.0)
            .timing(),
        MetricSpec::new(
            "train_seconds",
            "training time (after the base, where one is trained first)",
        )
        .unit("s")
        .lower()
        .at_least(0.0)
        .timing()
        .no_plot(),
        MetricSpec::new("base_seconds", "training time of the base alone")
            .unit("s")
            .lower()
            .at_least(0.0)
            .timing()
            .no_plot(),
        MetricSpec::new("trainable_params", "trainable parameters")
            .neither()
            .at_least(0.0)
            .no_plot(),
        MetricSpec::new("total_params", "parameters")
            .neither()
            .at_least(0.0)
            .no_plot(),
    ]);
    out
}

/// Slot telemetry per session, where the task asks for it.
fn telemetry_specs(task: &dyn Episodes) -> Vec<MetricSpec> {
    let mut out = Vec::new();
    if task.telemetry() {
        let t = |name: &str, about: &str| {
            MetricSpec::new(name, about)
                .neither()
                .at_least(0.0)
                .sliced(task.telemetry_key())
        };
        out.extend([
            t("slot_occupancy", "occupied share of slots").bounds(0.0, 1.0),
            t("slot_usage_kl", "KL of read usage from uniform").unit("nats"),
            t("slot_usage_gini", "Gini coefficient of read usage").bounds(0.0, 1.0),
            t("slot_dead", "occupied slots never read").unit("slots"),
            t("slot_evictions", "evictions").unit("slots"),
        ]);
    }
    out
}

/// The accuracy at which a slice counts as bound (`time_to_bind`).
pub const BIND_THRESHOLD: f64 = 0.9;

/// The first step of `curve` (step, accuracy) whose accuracy exceeds
/// [`BIND_THRESHOLD`]; 0 when none does.
pub fn time_to_bind(curve: &[(usize, f64)]) -> usize {
    curve
        .iter()
        .find(|(_, a)| *a > BIND_THRESHOLD)
        .map_or(0, |(step, _)| *step)
}
