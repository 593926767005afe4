//! The one place that turns a [`RetentionConfig`] into backends: the only
//! exhaustive match over the read, write, eviction and gate axes. Adding a
//! backend is a file under `read/`, `write/`, `evict.rs` or `gate.rs`, a
//! config variant, and one arm here (see `docs/ARCHITECTURE.md`).

use candle_nn::VarBuilder;

use crate::config::{Evict, GateConfig, ReadConfig, RetentionConfig, WriteConfig};
use crate::error::Result;
use crate::evict::{self, EvictionPolicy};
use crate::gate::{self, Gate};
use crate::read::{self, ReadBackend};
use crate::write::{self, WriteBackend};

/// The behaviour a retention layer delegates.
#[derive(Debug)]
pub struct Backends {
    pub read: Box<dyn ReadBackend>,
    pub write: Box<dyn WriteBackend>,
    pub gate: Box<dyn Gate>,
}

/// Builds the backends `cfg` names; parameters they own (the learned gate)
/// are created through `vb`, scoped as the layer's own.
pub fn build(cfg: &RetentionConfig, d_model: usize, vb: &VarBuilder) -> Result<Backends> {
    let read: Box<dyn ReadBackend> = match cfg.read {
        ReadConfig::Dense { .. } => Box::new(read::Dense),
        ReadConfig::Topk { k, .. } => Box::new(read::TopK { k }),
        ReadConfig::Ivf {
            k, lists, probe, ..
        } => Box::new(read::Ivf {
            k,
            lists: lists.unwrap_or_else(|| read::Ivf::default_lists(cfg.slots)),
            probe,
        }),
        ReadConfig::ProductKeys { k, .. } => Box::new(read::ProductKeys::new(
            k,
            cfg.slots,
            cfg.head_dim(d_model)?,
            vb,
        )?),
    };
    let write: Box<dyn WriteBackend> = match cfg.write {
        WriteConfig::Append { evict, .. } => Box::new(write::Append {
            evict: eviction(evict),
        }),
        WriteConfig::Attention { rate, erase, .. } => Box::new(write::Attention { rate, erase }),
    };
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
