//! The decoder-only transformer with retention hooks: token and learned
//! position embeddings, pre-LN blocks with causal multi-head self-attention
//! and a GELU feed-forward block, and a retention layer after self-attention
//! in the blocks that `retention_layers` names (docs/ARCHITECTURE.md):
//!
//! ```text
//! Z = Attn(LN1(X));  X̃ = LN(X + Z + R) with retention, X + Z without;  X' = X̃ + FFN(LN2(X̃))
//! ```
//!
//! (`read.integrate: add` makes the retention block's X̃ = X + Z + R; what
//! it writes is X̃, or X with `write.from: input`.)
//!
//! Memories live outside the model (one per retention layer, or one shared),
//! so that a caller decides what persists between sessions.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use retbench_core::layer::Norm;
use retbench_core::{InitConfig, MemoryState, RetentionConfig, RetentionLayer, Sharing, WriteFrom};
use retbench_kernels::fused;
use serde::{Deserialize, Serialize};

/// The transformer's shape. `vocab` and `max_len` may be left out of a suite
/// (`None`): the task fills them with what its data needs
/// ([`ModelConfig::fit`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    #[serde(default = "ffn_mult_default")]
    pub ffn_mult: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<usize>,
    /// How the base's linear layers are drawn (default `torch`;
    /// `retention.init` draws the retention projections). Embeddings are
    /// Normal(0, 1), or Normal(0, std) under `normal`.
    #[serde(
        default = "InitConfig::model_default",
        deserialize_with = "retbench_core::config::kind_or_name"
    )]
    pub init: InitConfig,
}

fn ffn_mult_default() -> usize {
    4
}

impl ModelConfig {
    /// A config with every field set.
    pub fn new(d_model: usize, layers: usize, heads: usize, vocab: usize, max_len: usize) -> Self {
        ModelConfig {
            d_model,
            layers,
            heads,
            ffn_mult: 4,
            vocab: Some(vocab),
            max_len: Some(max_len),
            init: InitConfig::model_default(),
        }
    }

    /// This config for data of `vocab` symbols and sequences up to `max_len`:
    /// unset fields take those values; set ones must be large enough.
    pub fn fit(&self, vocab: usize, max_len: usize) -> Result<ModelConfig, String> {
        let mut out = self.clone();
        for (name, field, need) in [
            ("vocab", &mut out.vocab, vocab),
            ("max_len", &mut out.max_len, max_len),
        ] {
            match *field {
                Some(v) if v < need => {
                    return Err(format!(
                        "model.{name}: {v} is too small, the task needs {need} (or leave it out)"
                    ));
                }
                Some(_) => {}
                None => *field = Some(need),
            }
        }
        Ok(out)
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("d_model", Some(self.d_model)),
            ("layers", Some(self.layers)),
            ("heads", Some(self.heads)),
            ("ffn_mult", Some(self.ffn_mult)),
            ("vocab", self.vocab),
            ("max_len", self.max_len),
        ] {
            if v == Some(0) {
                return Err(format!("model.{name}: must be at least 1"));
            }
        }
        if !self.d_model.is_multiple_of(self.heads) {
            return Err(format!(
                "model.heads: d_model {} is not divisible by {} heads",
                self.d_model, self.heads
            ));
        }
        self.init.validate("model.init").map_err(|e| e.to_string())
    }
}

/// An embedding table: candle's (Normal(0, 1)) except under `normal`.
fn embedding(
    n: usize,
    d: usize,
    init: InitConfig,
    vb: VarBuilder,
) -> candle_core::Result<Embedding> {
    match init {
        InitConfig::Normal { std } => {
            let table = vb.get_with_hints(
                (n, d),
                "weight",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
            )?;
            Ok(Embedding::new(table, d))
        }
        _ => candle_nn::embedding(n, d, vb),
    }
}

/// Causal multi-head self-attention.
#[derive(Debug, Clone)]
struct SelfAttention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl SelfAttention {
    fn new(
        d: usize,
        heads: usize,
        init: InitConfig,
        residual: f64,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(SelfAttention {
            qkv: init.linear(d, 3 * d, true, 1.0, vb.pp("qkv"))?,
            proj: init.linear(d, d, true, residual, vb.pp("proj"))?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let qkv = fused::linear(x, &self.qkv)?;
        fused::linear(&fused::causal_attention(&qkv, self.heads)?, &self.proj)
    }
}

#[derive(Debug, Clone)]
struct Block {
    ln1: Norm,
    attn: SelfAttention,
    ln2: Norm,
    fc1: Linear,
    fc2: Linear,
}

/// What a forward pass over one session returns.
#[derive(Debug)]
pub struct Forward {
    /// [B, T, vocab]
    pub logits: Tensor,
    /// Per retention layer, the hidden states it writes from: the block
    /// output X̃, or its input X (`write.from`).
    pub hidden: Vec<Tensor>,
}

/// A decoder-only transformer with optional retention layers.
#[derive(Debug, Clone)]
pub struct Model {
    cfg: ModelConfig,
    tok: Embedding,
    pos: Embedding,
    blocks: Vec<Block>,
    ln_f: Norm,
    head: Linear,
    /// (block index, layer) for every block with retention.
    retention: Vec<(usize, RetentionLayer)>,
    sharing: Sharing,
}

impl Model {
    /// Builds the model; `retention` adds a retention layer (its config) after
    /// self-attention in each block listed in `at`. Base parameters live under
    /// `base.`, retention parameters under `retention.`, so a caller can train
    /// or freeze either set by name.
    pub fn new(
        cfg: &ModelConfig,
        retention: Option<&RetentionConfig>,
        vb: VarBuilder,
    ) -> retbench_core::Result<Self> {
        cfg.validate().map_err(retbench_core::Error::Usage)?;
        let unset = |name: &str| {
            retbench_core::Error::Usage(format!(
                "model.{name} is unset (ModelConfig::fit fills it from the task)"
            ))
        };
        let vocab = cfg.vocab.ok_or_else(|| unset("vocab"))?;
        let max_len = cfg.max_len.ok_or_else(|| unset("max_len"))?;
        let d = cfg.d_model;
        let base = vb.pp("base");
        let init = cfg.init;
        // GPT-2: projections into the residual stream shrink with depth.
        let residual = 1.0 / (2.0 * cfg.layers as f64).sqrt();
        let mut blocks = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let vb = base.pp(format!("block{l}"));
            blocks.push(Block {
                ln1: Norm::new(d, vb.pp("ln1"))?,
                attn: SelfAttention::new(d, cfg.heads, init, residual, vb.pp("attn"))?,
                ln2: Norm::new(d, vb.pp("ln2"))?,
                fc1: init.linear(d, cfg.ffn_mult * d, true, 1.0, vb.pp("fc1"))?,
                fc2: init.linear(cfg.ffn_mult * d, d, true, residual, vb.pp("fc2"))?,
            });
        }
        let (mut layers, mut sharing) = (Vec::new(), Sharing::PerLayer);
        if let Some(rcfg) = retention {
            sharing = rcfg.sharing;
            let at = rcfg
                .layers
                .resolve(cfg.layers)
                .map_err(|e| retbench_core::Error::Usage(format!("retention.{e}")))?;
            for l in at {
                // A shared memory is read and written through one set of
                // retention parameters.
                let name = match sharing {
                    Sharing::Shared => "retention.shared".to_string(),
                    Sharing::PerLayer => format!("retention.block{l}"),
                };
                layers.push((l, RetentionLayer::new(rcfg, d, vb.pp(name))?));
            }
        }
        Ok(Model {
            cfg: cfg.clone(),
            tok: embedding(vocab, d, init, base.pp("tok"))?,
            pos: embedding(max_len, d, init, base.pp("pos"))?,
            blocks,
            ln_f: Norm::new(d, base.pp("ln_f"))?,
            head: init.linear(d, vocab, true, 1.0, base.pp("head"))?,
            retention: layers,
            sharing,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Memories this model reads and writes: one per retention layer, or one
    /// when the memory is shared.
    pub fn new_memories(
        &self,
        batch: usize,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> retbench_core::Result<Vec<MemoryState>> {
        let n = match (self.sharing, self.retention.is_empty()) {
            (_, true) => 0,
            (Sharing::Shared, false) => 1,
            (Sharing::PerLayer, false) => self.retention.len(),
        };
        (0..n)
            .map(|i| {
                self.retention[i]
                    .1
                    .new_memory(batch, seed + i as u64, dtype, device)
            })
            .collect()
    }

    fn memory_index(&self, i: usize) -> usize {
        match self.sharing {
            Sharing::Shared => 0,
            Sharing::PerLayer => i,
        }
    }

    /// One session: reads memory in every retention block (`memories` as made
    /// by [`Model::new_memories`]; ignored when the model has no retention).
    pub fn forward(
        &self,
        tokens: &Tensor,
        memories: &mut [MemoryState],
    ) -> retbench_core::Result<Forward> {
        let (_, t) = tokens.dims2()?;
        let max_len = self.cfg.max_len.unwrap_or(0);
        if t > max_len {
            return Err(retbench_core::Error::Usage(format!(
                "sequence of {t} tokens exceeds max_len {max_len}"
            )));
        }
        let mut x = fused::embed(tokens, self.tok.embeddings(), self.pos.embeddings())?;
        let mut hidden = Vec::with_capacity(self.retention.len());
        for (l, block) in self.blocks.iter().enumerate() {
            let z = block.attn.forward(&block.ln1.forward(&x)?)?;
            let mixed = match self.retention.iter().position(|(at, _)| *at == l) {
                Some(i) => {
                    let m = self.memory_index(i);
                    let layer = &self.retention[i].1;
                    let out = layer.forward(&x, &z, &mut memories[m])?;
                    hidden.push(match layer.config().write.from {
                        WriteFrom::Input => x.clone(),
                        WriteFrom::Output => out.clone(),
                    });
                    out
                }
                None => (&x + z)?,
            };
            let h = fused::gelu(&fused::linear(&block.ln2.forward(&mixed)?, &block.fc1)?)?;
            let ffn = fused::linear(&h, &block.fc2)?;
            x = (mixed + ffn)?;
        }
        let logits = fused::linear(&self.ln_f.forward(&x)?, &self.head)?;
        Ok(Forward { logits, hidden })
    }

    /// Writes a session's hidden states into memory (after its forward pass).
    /// `feedback` is passed to feedback gates.
    pub fn write(
        &self,
        fwd: &Forward,
        memories: &mut [MemoryState],
        feedback: Option<&[f32]>,
    ) -> retbench_core::Result<()> {
        for (i, ((_, layer), h)) in self.retention.iter().zip(&fwd.hidden).enumerate() {
            let m = self.memory_index(i);
            layer.write(h, &mut memories[m], feedback)?;
        }
        Ok(())
    }

    /// Whether writes need a per-sample feedback signal (a feedback gate).
    pub fn needs_feedback(&self) -> bool {
        self.retention.iter().any(|(_, l)| l.needs_feedback())
    }

    /// How many retention layers the model has (the length of
    /// [`Forward::hidden`]).
    pub fn retention_layers(&self) -> usize {
        self.retention.len()
    }

    /// Whether this model has retention layers.
    pub fn has_retention(&self) -> bool {
        !self.retention.is_empty()
    }
}
