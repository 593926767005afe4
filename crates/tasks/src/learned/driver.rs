//! Training one run: the base first where the config asks for one (trained
//! or loaded, then frozen or fine-tuned), then the model with retention,
//! evaluations on the way and at the end, the controls, throughput, and the
//! checkpoint.

use super::*;

/// A folder for disk-persistence snapshots, removed when dropped.
pub(super) struct Scratch(PathBuf);

impl Scratch {
    pub(super) fn new(ctx: &TaskContext) -> Result<Self, TaskError> {
        let dir = match &ctx.artifacts {
            Some(a) => a.join("memory"),
            None => std::env::temp_dir().join(format!(
                "retbench-{}-{}-{}",
                ctx.config_hash,
                ctx.seed,
                std::process::id()
            )),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| TaskError::Invalid(format!("{}: {e}", dir.display())))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn count(varmap: &VarMap) -> usize {
    varmap.all_vars().iter().map(|v| v.elem_count()).sum()
}

/// Trains and evaluates one run of a learned task.
pub fn run(
    kind: &str,
    task: &dyn Episodes,
    spec: &RunSpec<'_>,
    ctx: &TaskContext,
) -> Result<Vec<Metric>, TaskError> {
    validate(task, spec)?;
    let model_cfg =
        fitted_model(task, spec.model.expect("validated")).map_err(TaskError::Invalid)?;
    let train = spec.train.expect("validated");
    let eval = spec.eval.cloned().unwrap_or_default();
    let r = Run {
        kind,
        task,
        ctx,
        train,
        dev: Device::Cpu,
        map: SeededVarMap::new(VarMap::new(), ctx.config_hash.clone(), ctx.seed),
        clock: std::cell::Cell::new((0.0, 0)),
        evals: EvalSet::new(kind, task, &eval, ctx.seed),
    };
    let persistence = spec
        .retention
        .map(|r| r.persistence)
        .unwrap_or(Persistence::Process);
    let scratch = Scratch::new(ctx)?;
    let between = Between::Persist(persistence, &scratch.0);
    let mut out = Vec::new();
    // A base first, without retention (a stand-in for a pretrained model),
    // trained here or loaded; then frozen, or fine-tuned with retention.
    if train.pretrains_base() {
        let base = r.base(&model_cfg, &mut out)?;
        if task.in_session_label().is_some() {
            let s = r.evals.score(task, &base, between, ctx.seed, 0, false)?;
            out.extend(
                r.in_session(&s)
                    .map(|a| Metric::new("in_session_before", a)),
            );
        }
    }
    let model = Model::new(&model_cfg, spec.retention, r.vb())?;
    let mut trainer = Trainer::new(train, r.map.varmap(), model_cfg.d_model)
        .map_err(|e| TaskError::Invalid(e.to_string()))?;
    let trained = r.train_with_evals(&model, &mut trainer, between, &eval, &mut out)?;
    let scores = r
        .evals
        .score(task, &model, between, ctx.seed, 0, task.telemetry())?;
    r.final_metrics(&scores, trained, &eval, &mut out);
    if model.has_retention() {
        r.controls(&model, &mut out)?;
    }
    r.throughput_and_sizes(&trainer, &mut out);
    if let Some(dir) = &ctx.artifacts {
        save_checkpoint(r.map.varmap(), dir, &ctx.config_hash)?;
    }
    Ok(out)
}

/// What the training loop leaves for the final evaluation.
#[derive(Default)]
struct Trained {
    /// (step, accuracy of the binding slice) at every evaluation so far.
    bind_curve: Vec<(usize, f64)>,
    /// Mean training loss since the last recorded evaluation.
    last_interval: f64,
    /// Steps trained: `train.steps`, or fewer when `train.stop` ended it.
    steps: usize,
    /// Whether `train.stop` ended the run.
    stopped: bool,
}

/// What every phase of one run reads.
struct Run<'a> {
    kind: &'a str,
    task: &'a dyn Episodes,
    ctx: &'a TaskContext,
    train: &'a TrainConfig,
    dev: Device,
    map: SeededVarMap,
    /// (seconds, steps) of training so far; reset after a base is trained.
    clock: std::cell::Cell<(f64, usize)>,
    evals: EvalSet,
}

impl Run<'_> {
    fn vb(&self) -> candle_nn::VarBuilder<'_> {
        self.map.var_builder(DType::F32, &self.dev)
    }

    /// One training step on a fresh batch of episodes; its loss.
    fn step_on(
        &self,
        model: &Model,
        trainer: &mut Trainer,
        rng: &mut ChaCha8Rng,
        step: usize,
    ) -> Result<f64, TaskError> {
        let batch = self.train.batch;
        let data = layout(self.task, self.task.generate(rng, batch), batch);
        let sessions = tensors(&data, batch, &self.dev)?;
        let start = Instant::now();
        let loss = trainer
            .step(model, &sessions, step as u64)
            .map_err(|e| TaskError::Invalid(e.to_string()))?;
        let (t, n) = self.clock.get();
        self.clock.set((t + start.elapsed().as_secs_f64(), n + 1));
        Ok(loss)
    }

    /// In-context accuracy on the task's in-session slice, if it has one.
    fn in_session(&self, s: &Scores) -> Option<f64> {
        let l = self.task.in_session_label()?;
        s.accuracy().find(|(x, _)| *x == l).map(|(_, a)| a)
    }

    /// Accuracy of the binding slice ([`Episodes::bind_label`]).
    fn bind_of(&self, s: &Scores) -> Option<f64> {
        match self.task.bind_label() {
            Some(l) => s.accuracy().find(|(x, _)| *x == l).map(|(_, a)| a),
            None => s.accuracy().last().map(|(_, a)| a),
        }
    }

    /// The base without retention, loaded from `train.base_init` or trained
    /// here (its training time goes to `base_seconds`); its parameters are
    /// copied into the run's.
    fn base(&self, model_cfg: &ModelConfig, out: &mut Vec<Metric>) -> Result<Model, TaskError> {
        let (train, invalid) = (self.train, TaskError::Invalid);
        if let Some(path) = &train.base_init {
            let base = Model::new(model_cfg, None, self.vb())?;
            checkpoint::load_into(self.map.varmap(), path, "base.")
                .map_err(|e| invalid(format!("train.base_init: {e}")))?;
            return Ok(base);
        }
        let steps = train.base_steps.unwrap_or(train.steps);
        let base_cfg = TrainConfig {
            steps,
            frozen_base: false,
            base_steps: None,
            stop: None,
            ..train.clone()
        };
        // The base's draws (initialisation, data) come from a key of what
        // the base depends on, not of the whole run: a frozen and a
        // fine-tuned run of one suite start from the same base.
        let key = base_key(self.kind, self.task, model_cfg, &base_cfg);
        let base_map = SeededVarMap::new(VarMap::new(), key.clone(), self.ctx.seed);
        let base = Model::new(model_cfg, None, base_map.var_builder(DType::F32, &self.dev))?;
        let mut trainer = Trainer::new(&base_cfg, base_map.varmap(), model_cfg.d_model)
            .map_err(|e| invalid(e.to_string()))?;
        let mut rng = stream(&key, self.ctx.seed, "train/base");
        for step in 0..steps {
            self.step_on(&base, &mut trainer, &mut rng, step)?;
        }
        out.push(Metric::new("base_seconds", self.clock.replace((0.0, 0)).0));
        let trained = base_map.varmap().data().lock().expect("varmap lock");
        for (name, var) in trained.iter() {
            self.map.set(name, &var.as_tensor().copy()?)?;
        }
        Ok(base)
    }

    /// The training loop, with an evaluation every `eval.every` steps
    /// (accuracy, eval and train loss at that step), until `train.steps` or
    /// until `train.stop` holds. The evaluation a run stops on is left to
    /// [`Run::final_metrics`], which scores that step as the last.
    fn train_with_evals(
        &self,
        model: &Model,
        trainer: &mut Trainer,
        between: Between<'_>,
        eval: &EvalConfig,
        out: &mut Vec<Metric>,
    ) -> Result<Trained, TaskError> {
        let (task, steps) = (self.task, self.train.steps);
        let mut train_rng = stream(&self.ctx.config_hash, self.ctx.seed, "train");
        let mut t = Trained::default();
        let (mut interval_loss, mut interval_n) = (0.0f64, 0usize);
        // Evaluations in a row at which the run was bound (`train.stop`).
        let mut held = 0usize;
        for step in 0..steps {
            interval_loss += self.step_on(model, trainer, &mut train_rng, step)?;
            interval_n += 1;
            let done = step + 1;
            t.steps = done;
            t.last_interval = interval_loss / interval_n as f64;
            // The evaluation at the last step is the final one.
            let due = eval.every.is_some_and(|e| done % e == 0) && done < steps;
            if !due {
                continue;
            }
            let s = self
                .evals
                .score(task, model, between, self.ctx.seed, 0, false)?;
            let bind = self.bind_of(&s);
            held = if bind.is_some_and(|a| a > BIND_THRESHOLD) {
                held + 1
            } else {
                0
            };
            if self.train.stop.as_ref().is_some_and(|st| st.stops(held)) {
                t.stopped = true;
                return Ok(t);
            }
            t.bind_curve.extend(bind.map(|a| (done, a)));
            let at = Some(done as u64);
            for m in s.accuracy_metrics(task, "accuracy") {
                out.push(Metric { step: at, ..m });
            }
            out.push(Metric {
                step: at,
                ..Metric::new("eval_loss", s.loss())
            });
            out.push(Metric {
                step: at,
                ..Metric::new("train_loss", t.last_interval)
            });
            (interval_loss, interval_n) = (0.0, 0);
        }
        Ok(t)
    }

    /// The final evaluation's metrics: telemetry, sequences, the side probe
    /// and gate scores where the task has them, in-context accuracy,
    /// `time_to_bind`, accuracy (repeated at the last step when curves are
    /// drawn) and losses.
    fn final_metrics(
        &self,
        scores: &Scores,
        trained: Trained,
        eval: &EvalConfig,
        out: &mut Vec<Metric>,
    ) {
        let Trained {
            mut bind_curve,
            last_interval,
            steps,
            stopped,
        } = trained;
        let task = self.task;
        out.extend(scores.telemetry_metrics(task.telemetry_key()));
        out.extend(scores.scorer_metrics(task));
        if task.side_probe() {
            out.extend(scores.stream_metrics(task));
        }
        if task.relevance() {
            out.extend(scores.gate_metrics());
        }
        out.extend(
            self.in_session(scores)
                .map(|a| Metric::new("in_session_after", a)),
        );
        bind_curve.extend(self.bind_of(scores).map(|a| (steps, a)));
        // Binding: the binding slice ([`Episodes::bind_label`]) crossing 0.9.
        out.push(Metric::new(
            "time_to_bind",
            time_to_bind(&bind_curve) as f64,
        ));
        if self.train.stop.is_some() {
            out.push(Metric::new("train_steps", steps as f64));
            out.push(Metric::new("stopped", f64::from(u8::from(stopped))));
        }
        let at_end = Some(steps as u64);
        for m in scores.accuracy_metrics(task, "accuracy") {
            if eval.every.is_some() {
                out.push(Metric {
                    step: at_end,
                    ..m.clone()
                });
            }
            out.push(m);
        }
        if eval.every.is_some() {
            out.push(Metric {
                step: at_end,
                ..Metric::new("eval_loss", scores.loss())
            });
            out.push(Metric {
                step: at_end,
                ..Metric::new("train_loss", last_interval)
            });
        }
        out.push(Metric::new("final_loss", scores.loss()));
    }

    /// The controls: memory changed (cleared) before a session, so what the
    /// model still gets right from there on cannot come from memory.
    fn controls(&self, model: &Model, out: &mut Vec<Metric>) -> Result<(), TaskError> {
        for c in self.task.controls() {
            let s = self.evals.score(
                self.task,
                model,
                Between::ClearBefore(c.clear_before),
                self.ctx.seed,
                c.clear_before,
                false,
            )?;
            out.extend(s.accuracy_metrics(self.task, c.metric));
        }
        Ok(())
    }

    /// Training throughput and time, and the parameter counts.
    fn throughput_and_sizes(&self, trainer: &Trainer, out: &mut Vec<Metric>) {
        let episode_tokens: usize = self.task.lengths().iter().sum::<usize>() * self.train.batch;
        let (seconds, steps) = self.clock.get();
        out.push(Metric::new(
            "train_tokens_per_s",
            (episode_tokens * steps) as f64 / seconds.max(1e-9),
        ));
        out.push(Metric::new("train_seconds", seconds));
        out.push(Metric::new(
            "trainable_params",
            trainer.trainable_params() as f64,
        ));
        out.push(Metric::new("total_params", count(self.map.varmap()) as f64));
    }
}

pub(super) fn save_checkpoint(varmap: &VarMap, dir: &Path, hash: &str) -> Result<(), TaskError> {
    checkpoint::save(varmap, &dir.join("model.safetensors"), hash)
        .map_err(|e| TaskError::Invalid(e.to_string()))
}
