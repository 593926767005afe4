//! Reference levels of the recall task: chance, and what a predictor scores
//! that knows session 1's values but not which key each belongs to (see
//! `recall::Unbound`). A learned run that plateaus at the second level has
//! memory that carries the values without binding them to keys.
//!
//! ```sh
//! cargo run --release -p retbench-tasks --example recall_levels
//! cargo run --release -p retbench-tasks --example recall_levels -- '{"pairs": 4}'
//! ```

use retbench_core::rng::stream;
use retbench_tasks::recall::RecallConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let task = std::env::args().nth(1).unwrap_or_else(|| "{}".into());
    let cfg: RecallConfig = serde_json::from_str(&task)
        .map_err(|e| format!("the argument is the task block as JSON ({task}): {e}"))?;
    cfg.validate()?;
    let batch = 100_000;
    let data = cfg.generate(&mut stream("recall_levels", 0, "episodes"), batch);
    let levels = cfg.unbound_accuracy(&data, batch);
    println!(
        "recall task {} — {batch} episodes",
        serde_json::to_string(&cfg)?
    );
    println!(
        "{:<6} {:>8} {:>14} {:>24}",
        "slice", "chance", "values only", "values not yet asked"
    );
    for (gap, l) in levels.iter().enumerate() {
        println!(
            "{:<6} {:>8.4} {:>14.4} {:>24.4}",
            format!("gap={gap}"),
            1.0 / cfg.values as f64,
            l.values,
            l.values_not_yet_asked
        );
    }
    Ok(())
}
