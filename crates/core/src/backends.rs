//! The registry: the one place that turns a [`RetentionConfig`] into
//! backends, and so the only exhaustive match over the read, write,
//! eviction and gate kinds. It also reaches each backend's own config rules
//! ([`RetentionConfig::validate`] lives here for that reason). Adding a
//! backend is its file under `read/`, `write/`, `evict.rs` or `gate.rs`, its
//! kind in `config.rs`, and one arm here (see `docs/ARCHITECTURE.md`).

use candle_nn::VarBuilder;

use crate::config::{Evict, GateConfig, ReadKind, RetentionConfig, WriteKind};
use crate::error::{ConfigError, Result};
use crate::evict::{self, EvictionPolicy};
use crate::gate::{self, Gate};
use crate::read::{self, ReadBackend, ReadRecipe};
use crate::write::{self, WriteBackend};

/// The behaviour a retention layer delegates.
#[derive(Debug)]
pub struct Backends {
    pub read: Box<dyn ReadBackend>,
    pub write: Box<dyn WriteBackend>,
    pub gate: Box<dyn Gate>,
}

/// The read `cfg` names, before its parameters exist.
pub fn read_recipe(cfg: &RetentionConfig) -> Box<dyn ReadRecipe> {
    match cfg.read.kind {
        ReadKind::Dense => Box::new(read::Dense),
        ReadKind::Topk { k } => Box::new(read::TopK { k }),
        ReadKind::Ivf { k, lists, probe } => Box::new(read::Ivf::new(k, lists, probe, cfg.slots)),
        ReadKind::ProductKeys { k } => Box::new(read::ProductKeysRecipe { k }),
    }
}

/// The write `cfg` names (writes own no parameters).
pub fn write_backend(cfg: &RetentionConfig) -> Box<dyn WriteBackend> {
    match cfg.write.kind {
        WriteKind::Append { evict } => Box::new(write::Append {
            evict: eviction(evict),
        }),
        WriteKind::Attention { rate, erase } => Box::new(write::Attention { rate, erase }),
    }
}

impl RetentionConfig {
    /// Checks what serde cannot express: the options no backend owns
    /// (`config.rs`), then the rules of the read and the write this config
    /// names. `field` paths in errors are relative to the `retention` block.
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        self.validate_shared()?;
        read_recipe(self).check(self)?;
        write_backend(self).check(self)
    }
}

/// Builds the backends `cfg` names; parameters they own (the learned gate,
/// product keys) are created through `vb`, scoped as the layer's own.
pub fn build(cfg: &RetentionConfig, d_model: usize, vb: &VarBuilder) -> Result<Backends> {
    let read = read_recipe(cfg).build(cfg, d_model, vb)?;
    let write = write_backend(cfg);
    let gate: Box<dyn Gate> = match cfg.gate {
        GateConfig::None {} => Box::new(gate::Open),
        GateConfig::Feedback { threshold } => Box::new(gate::Feedback { threshold }),
        GateConfig::Learned {} => Box::new(gate::Learned {
            linear: candle_nn::linear(d_model, 1, vb.pp("gate"))?,
        }),
        GateConfig::Surprise { threshold } => Box::new(gate::Surprise { threshold }),
    };
    Ok(Backends { read, write, gate })
}

/// The policy an `evict:` value names.
pub fn eviction(evict: Evict) -> Box<dyn EvictionPolicy> {
    match evict {
        Evict::Fifo => Box::new(evict::Fifo),
        Evict::Lru => Box::new(evict::Lru),
        Evict::Lfu => Box::new(evict::Lfu),
        Evict::LowestScore => Box::new(evict::LowestScore),
        Evict::Random => Box::new(evict::Random),
    }
}
