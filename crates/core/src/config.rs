//! The retention layer's configuration: one strictly typed struct with an enum
//! per axis of the design (read, write, write source, gate, keys, slot age,
//! sharing, persistence). These types are what a suite YAML's `retention:`
//! block deserializes into, so every field rejects unknown keys, and every
//! `kind`-tagged axis also accepts its bare name (`read: dense`) as shorthand
//! for `{ kind: dense }`. The read and write axes are a kind enum (what
//! differs between backends) beside the options every kind shares. Checks
//! serde cannot express live in [`RetentionConfig::validate`]: the shared
//! ones here, each backend's own rules (k ≤ slots, rates in [0, 1]) in its
//! backend's file, reached through the registry in `backends.rs`.

use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer};
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// A complete retention-layer configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Capacity of each memory, in slots.
    pub slots: usize,
    /// Read heads (multi-head memory attention).
    #[serde(default = "default_heads")]
    pub heads: usize,
    /// Per-head key/value width d_k; `None` means d_model / heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    #[serde(default, deserialize_with = "kind_or_name")]
    pub read: ReadConfig,
    #[serde(default, deserialize_with = "kind_or_name")]
    pub write: WriteConfig,
    #[serde(default, deserialize_with = "kind_or_name")]
    pub gate: GateConfig,
    #[serde(default)]
    pub keys: KeyMode,
    #[serde(default, deserialize_with = "kind_or_name")]
    pub slot_age: SlotAge,
    #[serde(default)]
    pub sharing: Sharing,
    #[serde(default)]
    pub persistence: Persistence,
    /// Which transformer blocks get a retention layer (models only; the
    /// scaling probes use one free-standing layer).
    #[serde(default, skip_serializing_if = "Layers::is_all")]
    pub layers: Layers,
    /// How the retention projections W_Q, W_K, W_V, W_O, W_u are drawn
    /// (default `candle`).
    #[serde(default, deserialize_with = "kind_or_name")]
    pub init: InitConfig,
}

/// How a linear layer's parameters are drawn at initialisation. The paper
/// leaves it open; every choice is an axis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum InitConfig {
    /// candle's `linear`: weights Kaiming normal, std √(2/fan_in) (a ReLU
    /// gain); biases uniform ±1/√fan_in.
    Candle {},
    /// PyTorch's `nn.Linear`: weights and biases uniform ±1/√fan_in.
    Torch {},
    /// Weights Normal(0, std), biases 0; projections that write into the
    /// residual stream scaled by 1/√(2·layers) (GPT-2).
    Normal { std: f64 },
}

/// The retention layer's default is candle's draw, the model's PyTorch's
/// ([`InitConfig::model_default`]): of the combinations measured in
/// `reports/recall-ablation`, that one binds keys to values in the recall
/// suite on every seed (reports/recall/README.md).
impl Default for InitConfig {
    fn default() -> Self {
        InitConfig::Candle {}
    }
}

impl InitConfig {
    /// The default of `model.init`: PyTorch's `nn.Linear` draw.
    pub fn model_default() -> Self {
        InitConfig::Torch {}
    }

    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        match self {
            InitConfig::Normal { std } if !(std.is_finite() && *std > 0.0) => {
                Err(ConfigError::Invalid {
                    field: format!("{field}.std"),
                    message: format!("must be a positive number, got {std}"),
                })
            }
            _ => Ok(()),
        }
    }

    /// A linear layer `in_dim → out_dim` drawn this way; `out_scale`
    /// multiplies the std of `normal` (residual projections).
    pub fn linear(
        &self,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        out_scale: f64,
        vb: candle_nn::VarBuilder,
    ) -> candle_core::Result<candle_nn::Linear> {
        use candle_nn::Init;
        let bound = 1.0 / (in_dim as f64).sqrt();
        let (w_init, b_init) = match *self {
            InitConfig::Candle {} => {
                return if bias {
                    candle_nn::linear(in_dim, out_dim, vb)
                } else {
                    candle_nn::linear_no_bias(in_dim, out_dim, vb)
                };
            }
            InitConfig::Torch {} => (
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            ),
            InitConfig::Normal { std } => (
                Init::Randn {
                    mean: 0.0,
                    stdev: std * out_scale,
                },
                Init::Const(0.0),
            ),
        };
        let w = vb.get_with_hints((out_dim, in_dim), "weight", w_init)?;
        let b = if bias {
            Some(vb.get_with_hints(out_dim, "bias", b_init)?)
        } else {
            None
        };
        Ok(candle_nn::Linear::new(w, b))
    }
}

fn default_heads() -> usize {
    1
}

/// How queries read the slots: the kind of read, and the options every kind
/// shares. In YAML it is one flat map (`{ kind: topk, k: 8, bias: true }`);
/// see [`ReadWire`] for why the file form is a separate type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ReadWire", into = "ReadWire")]
pub struct ReadConfig {
    pub kind: ReadKind,
    /// How the readout joins the residual stream.
    pub integrate: Integrate,
    /// Biases on W_Q, W_K and W_V (the paper is silent; default none).
    pub bias: bool,
}

/// What differs between read backends: which slots a query attends to.
/// The rules each kind imposes on the rest of the config live with its
/// backend (`read::*::check`, reached through `backends`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// Softmax over every occupied slot: O(m) per query (the paper).
    Dense,
    /// Softmax over the k highest-scoring occupied slots, selected exactly.
    Topk { k: usize },
    /// Softmax over k slots found through an inverted-file index over the
    /// cached keys (approximate top-k; `keys: cached` and append writes
    /// only): `lists` clusters (default √slots), the `probe` best of them
    /// scanned per query.
    Ivf {
        k: usize,
        lists: Option<usize>,
        probe: usize,
    },
    /// Product keys (Lample et al. 2019): slot (i, j) of a memory of n²
    /// slots has the learned key [c1_i; c2_j]; a query's halves pick their
    /// k best sub-keys each, and the k best of the k² sums are read. Keys
    /// are parameters, trained end to end; an append write goes to the slot
    /// its key addresses (single head, append writes, no slot age).
    ProductKeys { k: usize },
}

/// The YAML and JSON form of [`ReadConfig`]: one `kind`-tagged map holding
/// the kind's own options and the shared ones. It exists because serde's
/// `flatten` cannot be combined with `deny_unknown_fields`; a derived
/// tagged enum keeps every error message (the full list of expected keys)
/// and every config hash exactly as they were when the shared options were
/// fields of each variant. Nothing outside this file sees it.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ReadWire {
    Dense {
        #[serde(default)]
        integrate: Integrate,
        #[serde(default)]
        bias: bool,
    },
    Topk {
        k: usize,
        #[serde(default)]
        integrate: Integrate,
        #[serde(default)]
        bias: bool,
    },
    Ivf {
        k: usize,
        #[serde(default)]
        lists: Option<usize>,
        #[serde(default = "default_probe")]
        probe: usize,
        #[serde(default)]
        integrate: Integrate,
        #[serde(default)]
        bias: bool,
    },
    ProductKeys {
        k: usize,
        #[serde(default)]
        integrate: Integrate,
        #[serde(default)]
        bias: bool,
    },
}

impl From<ReadWire> for ReadConfig {
    fn from(w: ReadWire) -> Self {
        let (kind, integrate, bias) = match w {
            ReadWire::Dense { integrate, bias } => (ReadKind::Dense, integrate, bias),
            ReadWire::Topk { k, integrate, bias } => (ReadKind::Topk { k }, integrate, bias),
            ReadWire::Ivf {
                k,
                lists,
                probe,
                integrate,
                bias,
            } => (ReadKind::Ivf { k, lists, probe }, integrate, bias),
            ReadWire::ProductKeys { k, integrate, bias } => {
                (ReadKind::ProductKeys { k }, integrate, bias)
            }
        };
        ReadConfig {
            kind,
            integrate,
            bias,
        }
    }
}

impl From<ReadConfig> for ReadWire {
    fn from(c: ReadConfig) -> Self {
        let ReadConfig {
            kind,
            integrate,
            bias,
        } = c;
        match kind {
            ReadKind::Dense => ReadWire::Dense { integrate, bias },
            ReadKind::Topk { k } => ReadWire::Topk { k, integrate, bias },
            ReadKind::Ivf { k, lists, probe } => ReadWire::Ivf {
                k,
                lists,
                probe,
                integrate,
                bias,
            },
            ReadKind::ProductKeys { k } => ReadWire::ProductKeys { k, integrate, bias },
        }
    }
}

fn default_probe() -> usize {
    8
}

/// How the readout R joins the residual stream of its block. Every read
/// backend takes `integrate` and `bias` (biases on W_Q, W_K and W_V; the
/// paper is silent, the default has none). W_O never has one, so that an
/// empty memory still reads exactly zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Integrate {
    /// X̃ = LN(X + Z + R): the paper's form; the block's residual stream
    /// leaves it normalised.
    #[default]
    PostNorm,
    /// X̃ = X + Z + R: a plain pre-norm residual, as the blocks without
    /// retention have.
    Add,
}

impl ReadConfig {
    /// A read of `kind` with the default integration and no biases.
    pub fn of(kind: ReadKind) -> Self {
        ReadConfig {
            kind,
            integrate: Integrate::default(),
            bias: false,
        }
    }

    /// Dense reads with the default integration and no biases.
    pub fn dense() -> Self {
        ReadConfig::of(ReadKind::Dense)
    }

    /// Exact top-k reads with the default integration and no biases.
    pub fn topk(k: usize) -> Self {
        ReadConfig::of(ReadKind::Topk { k })
    }
}

/// How a write vector enters memory: the kind of write, and the options
/// every kind shares. One flat map in YAML, as for [`ReadConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "WriteWire", into = "WriteWire")]
pub struct WriteConfig {
    pub kind: WriteKind,
    /// What vector(s) u a write derives from the hidden states.
    pub source: WriteSource,
    /// Whether u passes through a learned W_u before it is stored (the
    /// paper's form); without it the stored content is u.
    pub project: bool,
    /// Which hidden states of its block the layer writes from.
    pub from: WriteFrom,
}

/// What differs between write backends: where a write goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WriteKind {
    /// Option A: a new slot per write; when full, `evict` picks the victim.
    Append { evict: Evict },
    /// Option B: blend into content-addressed slots,
    /// M' = M + rate·w ⊙ (v − M) with `erase`, M' = M + rate·w ⊙ v without.
    /// Free slots are filled first (w one-hot on the free slot).
    Attention { rate: f64, erase: bool },
}

/// The file form of [`WriteConfig`] (see [`ReadWire`] for why it is a
/// separate type).
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum WriteWire {
    Append {
        #[serde(default)]
        evict: Evict,
        #[serde(default, deserialize_with = "kind_or_name")]
        source: WriteSource,
        #[serde(default = "default_project")]
        project: bool,
        #[serde(default)]
        from: WriteFrom,
    },
    Attention {
        rate: f64,
        #[serde(default = "default_erase")]
        erase: bool,
        #[serde(default, deserialize_with = "kind_or_name")]
        source: WriteSource,
        #[serde(default = "default_project")]
        project: bool,
        #[serde(default)]
        from: WriteFrom,
    },
}

impl From<WriteWire> for WriteConfig {
    fn from(w: WriteWire) -> Self {
        let (kind, source, project, from) = match w {
            WriteWire::Append {
                evict,
                source,
                project,
                from,
            } => (WriteKind::Append { evict }, source, project, from),
            WriteWire::Attention {
                rate,
                erase,
                source,
                project,
                from,
            } => (WriteKind::Attention { rate, erase }, source, project, from),
        };
        WriteConfig {
            kind,
            source,
            project,
            from,
        }
    }
}

impl From<WriteConfig> for WriteWire {
    fn from(c: WriteConfig) -> Self {
        let WriteConfig {
            kind,
            source,
            project,
            from,
        } = c;
        match kind {
            WriteKind::Append { evict } => WriteWire::Append {
                evict,
                source,
                project,
                from,
            },
            WriteKind::Attention { rate, erase } => WriteWire::Attention {
                rate,
                erase,
                source,
                project,
                from,
            },
        }
    }
}

fn default_erase() -> bool {
    true
}

/// No W_u by default: with per-token writes and keys recomputed at read
/// time W_u only duplicates W_K and W_V, and it slows binding in the recall
/// suite (`reports/recall-ablation`). `project: true` is the paper's form.
fn default_project() -> bool {
    false
}

/// Which hidden states of its block a retention layer writes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteFrom {
    /// The block's input X⁽ˡ⁾ (the residual stream before self-attention).
    Input,
    /// The block's output X̃ after the read joined it.
    #[default]
    Output,
}

impl Default for WriteConfig {
    fn default() -> Self {
        WriteConfig::append(Evict::Fifo, WriteSource::Mean {})
    }
}

impl WriteConfig {
    /// A write of `kind` from `source`, with the default projection and
    /// write point.
    pub fn of(kind: WriteKind, source: WriteSource) -> Self {
        WriteConfig {
            kind,
            source,
            project: default_project(),
            from: WriteFrom::default(),
        }
    }

    /// Appends with the default projection and write point.
    pub fn append(evict: Evict, source: WriteSource) -> Self {
        WriteConfig::of(WriteKind::Append { evict }, source)
    }

    /// Attention writes with the default projection and write point.
    pub fn attention(rate: f64, erase: bool, source: WriteSource) -> Self {
        WriteConfig::of(WriteKind::Attention { rate, erase }, source)
    }
}

/// Which slot an append evicts when memory is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evict {
    /// The slot written longest ago.
    #[default]
    Fifo,
    /// The slot read (or written) longest ago.
    Lru,
    /// The slot with the least cumulative read weight.
    Lfu,
    /// The slot whose write had the lowest gate score.
    LowestScore,
    /// A uniformly random occupied slot, from the memory's seeded generator.
    Random,
}

/// What vector(s) u a write derives from the layer's hidden states [B, T, d].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WriteSource {
    /// Mean over positions: one write per sample (the paper).
    Mean {},
    /// The last position: one write per sample.
    Last {},
    /// Every position: T writes per sample.
    Token {},
    /// The mean of each chunk of `size` positions: ⌈T/size⌉ writes per sample.
    Chunk { size: usize },
    /// Attention pooling with a learned query: one write per sample.
    Learned {},
}

/// Whether a candidate write happens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GateConfig {
    /// Every candidate is written.
    None {},
    /// An external per-sample signal s ∈ [0, 1]; written when s ≥ threshold.
    Feedback { threshold: f64 },
    /// g = sigmoid(u·w + b), trainable (straight-through); written when g ≥ 0.5.
    Learned {},
    /// Novelty 1 − max cosine(key of v, stored keys); written when ≥ threshold.
    Surprise { threshold: f64 },
}

/// Where read keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// K = M·W_K at every read (the paper).
    #[default]
    Recompute,
    /// Keys computed once at write time and stored beside the slot.
    Cached,
    /// Keys computed at write time and stored in IEEE half precision beside
    /// the slot (2 bytes a component). Top-k ranking scans them for
    /// candidates and re-ranks those exactly against keys recomputed from
    /// the contents; everything else reads as `recompute`.
    F16,
    /// As `f16`, stored as int8 with one f32 scale per slot (max |x| / 127).
    Int8,
}

impl KeyMode {
    /// Whether f32 keys are kept beside the slots.
    pub fn cached(self) -> bool {
        self == KeyMode::Cached
    }

    /// The reduced-precision key storage this mode keeps, if any.
    pub fn reduced(self) -> Option<retbench_kernels::quant::Precision> {
        match self {
            KeyMode::F16 => Some(retbench_kernels::quant::Precision::F16),
            KeyMode::Int8 => Some(retbench_kernels::quant::Precision::Int8),
            KeyMode::Recompute | KeyMode::Cached => None,
        }
    }
}

/// Recency signal added to slot keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SlotAge {
    /// No recency signal (the paper).
    None {},
    /// A learned embedding of ⌊log2(age + 1)⌋, capped at `buckets − 1`, added to keys.
    Learned {
        #[serde(default = "default_buckets")]
        buckets: usize,
    },
}

fn default_buckets() -> usize {
    16
}

/// Whether the layers of a model share one memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    #[default]
    PerLayer,
    Shared,
}

/// The blocks of a model that carry a retention layer: `all`, or a list of
/// block indices (`[1]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Layers {
    #[default]
    All,
    List(Vec<usize>),
}

impl Layers {
    pub fn is_all(&self) -> bool {
        matches!(self, Layers::All)
    }

    /// The block indices for a model of `blocks` blocks, sorted, without
    /// duplicates; an index past the model is an error naming it.
    pub fn resolve(&self, blocks: usize) -> Result<Vec<usize>, ConfigError> {
        match self {
            Layers::All => Ok((0..blocks).collect()),
            Layers::List(list) => {
                let mut out = list.clone();
                out.sort_unstable();
                out.dedup();
                if let Some(&bad) = out.iter().find(|&&l| l >= blocks) {
                    return Err(ConfigError::Invalid {
                        field: "layers".into(),
                        message: format!(
                            "block {bad} does not exist: the model has blocks 0..{blocks}"
                        ),
                    });
                }
                Ok(out)
            }
        }
    }
}

impl Serialize for Layers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Layers::All => s.serialize_str("all"),
            Layers::List(l) => l.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Layers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Layers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`all` or a list of block indices such as [1]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Layers, E> {
                match v {
                    "all" => Ok(Layers::All),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Layers, A::Error> {
                let mut out = Vec::new();
                while let Some(l) = seq.next_element::<usize>()? {
                    out.push(l);
                }
                if out.is_empty() {
                    return Err(de::Error::invalid_length(0, &"at least one block index"));
                }
                Ok(Layers::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// How memory survives between sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Persistence {
    /// Kept in RAM.
    #[default]
    Process,
    /// Written as a snapshot after each session and loaded back before the next.
    Disk,
}

impl RetentionConfig {
    /// A dense-read, append-fifo, mean-source, ungated configuration.
    pub fn new(slots: usize) -> Self {
        RetentionConfig {
            slots,
            heads: 1,
            head_dim: None,
            read: ReadConfig::dense(),
            write: WriteConfig::default(),
            gate: GateConfig::None {},
            keys: KeyMode::Recompute,
            slot_age: SlotAge::None {},
            sharing: Sharing::PerLayer,
            persistence: Persistence::Process,
            layers: Layers::All,
            init: InitConfig::default(),
        }
    }

    /// Checks the constraints serde cannot express that are no backend's
    /// own: [`RetentionConfig::validate`] (in `backends.rs`, the registry)
    /// runs these, then the rules of the read and write backends the config
    /// names. `field` paths in errors are relative to the `retention` block.
    pub(crate) fn validate_shared(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, message: String| {
            Err(ConfigError::Invalid {
                field: field.to_string(),
                message,
            })
        };
        if self.slots == 0 {
            return bad("slots", "must be at least 1".into());
        }
        if self.heads == 0 {
            return bad("heads", "must be at least 1".into());
        }
        if self.head_dim == Some(0) {
            return bad("head_dim", "must be at least 1".into());
        }
        if let WriteSource::Chunk { size: 0 } = self.write.source {
            return bad("write.source.size", "must be at least 1".into());
        }
        match self.gate {
            GateConfig::Feedback { threshold } if !(threshold > 0.0 && threshold <= 1.0) => {
                return bad(
                    "gate.threshold",
                    format!("must be in (0, 1] so that feedback 0 never writes, got {threshold}"),
                );
            }
            GateConfig::Surprise { threshold } if !(0.0..=2.0).contains(&threshold) => {
                return bad(
                    "gate.threshold",
                    format!("novelty lies in [0, 2], got {threshold}"),
                );
            }
            _ => {}
        }
        if let SlotAge::Learned { buckets: 0 } = self.slot_age {
            return bad("slot_age.buckets", "must be at least 1".into());
        }
        self.init.validate("init")
    }

    /// Per-head width given the model width.
    pub fn head_dim(&self, d_model: usize) -> Result<usize, ConfigError> {
        match self.head_dim {
            Some(d) => Ok(d),
            None if d_model.is_multiple_of(self.heads) => Ok(d_model / self.heads),
            None => Err(ConfigError::Invalid {
                field: "heads".into(),
                message: format!(
                    "d_model {d_model} is not divisible by {} heads; set head_dim",
                    self.heads
                ),
            }),
        }
    }

    /// A stable hash of the canonical configuration (hex, 16 digits; fields
    /// at their defaults left out, see [`crate::canonical`]): part of
    /// snapshot headers, so that a memory is never loaded under another config.
    pub fn hash(&self) -> String {
        crate::canonical::canonical_hash(self)
    }
}

/// Deserializes a `kind`-tagged enum from either its tagged map or its bare
/// name: `dense` is read as `{ kind: dense }`. Maps go straight through, so
/// the YAML reader keeps its line and column for errors inside them.
pub fn kind_or_name<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    struct Visitor<T>(std::marker::PhantomData<T>);
    impl<'de, T: DeserializeOwned> de::Visitor<'de> for Visitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a name such as `dense`, or a map with a `kind` key")
        }
        fn visit_str<E: de::Error>(self, name: &str) -> Result<T, E> {
            let map = std::iter::once(("kind", name));
            T::deserialize(de::value::MapDeserializer::new(
                map.map(|(k, v)| (k.into_deserializer(), v.into_deserializer())),
            ))
            .map_err(|e: de::value::Error| E::custom(e))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_any(Visitor(std::marker::PhantomData))
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig::dense()
    }
}

impl Default for WriteSource {
    fn default() -> Self {
        WriteSource::Mean {}
    }
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig::None {}
    }
}

impl Default for SlotAge {
    fn default() -> Self {
        SlotAge::None {}
    }
}

/// One entry of the backend catalogue that `retbench list` prints.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CatalogEntry {
    /// The axis, as the key under `retention:`.
    pub axis: &'static str,
    /// A value exactly as a user types it in YAML.
    pub yaml: &'static str,
    pub about: &'static str,
}

/// Every backend and option, as YAML a user would write. A test parses each
/// entry into [`RetentionConfig`], so this list cannot drift from the types.
pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        axis: "read",
        yaml: "{ kind: dense }",
        about: "softmax over every occupied slot, O(m) per query (the paper)",
    },
    CatalogEntry {
        axis: "read",
        yaml: "{ kind: topk, k: 32 }",
        about: "exact top-k slots by score, softmax over those; 1 <= k <= slots",
    },
    CatalogEntry {
        axis: "read",
        yaml: "{ kind: product_keys, k: 8 }",
        about: "learned product keys (Lample 2019) over n^2 slots; writes go where their key addresses",
    },
    CatalogEntry {
        axis: "read",
        yaml: "{ kind: ivf, k: 32, probe: 8 }",
        about: "approximate top-k via an inverted-file index over cached keys (lists default sqrt(slots)); keys: cached, append writes",
    },
    CatalogEntry {
        axis: "read",
        yaml: "{ kind: dense, integrate: add }",
        about: "X~ = X + Z + R, a pre-norm residual (default post_norm: LN(X + Z + R))",
    },
    CatalogEntry {
        axis: "read",
        yaml: "{ kind: dense, bias: true }",
        about: "biases on W_Q, W_K, W_V (any read kind; default none)",
    },
    CatalogEntry {
        axis: "write",
        yaml: "{ kind: append, evict: fifo, source: mean }",
        about: "option A: new slot per write; evict the oldest write when full",
    },
    CatalogEntry {
        axis: "write",
        yaml: "{ kind: append, evict: lru }",
        about: "evict the slot read (or written) longest ago",
    },
    CatalogEntry {
        axis: "write",
        yaml: "{ kind: append, evict: lfu }",
        about: "evict the slot with the least cumulative read weight",
    },
    CatalogEntry {
        axis: "write",
        yaml: "{ kind: append, evict: lowest_score }",
        about: "evict the slot whose write had the lowest gate score",
    },
    CatalogEntry {
        axis: "write",
        yaml: "{ kind: append, evict: random }",
        about: "evict a uniformly random slot (seeded)",
    },
    CatalogEntry {
        axis: "write",
        yaml: "{ kind: attention, rate: 0.5, erase: true }",
        about: "option B: M' = M + rate*w*(v - M), w content-addressed; free slots fill first",
    },
    CatalogEntry {
        axis: "write",
        yaml: "{ kind: attention, rate: 0.5, erase: false }",
        about: "additive blend M' = M + rate*w*v (no erase)",
    },
    CatalogEntry {
        axis: "write",
        yaml: "{ kind: append, project: true }",
        about: "store u W_u, a learned projection (the paper; default false: store u)",
    },
    CatalogEntry {
        axis: "write",
        yaml: "{ kind: append, from: input }",
        about: "write from the block's input X, not its output X~ (any write kind)",
    },
    CatalogEntry {
        axis: "write.source",
        yaml: "mean",
        about: "mean of the layer's hidden states, one write per sample (the paper)",
    },
    CatalogEntry {
        axis: "write.source",
        yaml: "last",
        about: "last position, one write per sample",
    },
    CatalogEntry {
        axis: "write.source",
        yaml: "token",
        about: "every position, T writes per sample",
    },
    CatalogEntry {
        axis: "write.source",
        yaml: "{ kind: chunk, size: 8 }",
        about: "mean of each chunk of `size` positions",
    },
    CatalogEntry {
        axis: "write.source",
        yaml: "learned",
        about: "attention pooling with a learned query",
    },
    CatalogEntry {
        axis: "gate",
        yaml: "{ kind: none }",
        about: "every candidate is written",
    },
    CatalogEntry {
        axis: "gate",
        yaml: "{ kind: feedback, threshold: 0.5 }",
        about: "external per-sample signal s in [0,1]; write when s >= threshold",
    },
    CatalogEntry {
        axis: "gate",
        yaml: "{ kind: learned }",
        about: "sigmoid(u.w + b) >= 0.5, trained straight-through",
    },
    CatalogEntry {
        axis: "gate",
        yaml: "{ kind: surprise, threshold: 0.2 }",
        about: "novelty 1 - max cosine to stored keys >= threshold",
    },
    CatalogEntry {
        axis: "keys",
        yaml: "recompute",
        about: "K = M W_K at every read (the paper)",
    },
    CatalogEntry {
        axis: "keys",
        yaml: "cached",
        about: "keys stored at write time",
    },
    CatalogEntry {
        axis: "keys",
        yaml: "f16",
        about: "f16 keys stored at write time; top-k scans them, re-ranks exactly",
    },
    CatalogEntry {
        axis: "keys",
        yaml: "int8",
        about: "int8 keys (per-slot scale) stored at write time; top-k scans them, re-ranks exactly",
    },
    CatalogEntry {
        axis: "slot_age",
        yaml: "{ kind: none }",
        about: "no recency signal (the paper)",
    },
    CatalogEntry {
        axis: "slot_age",
        yaml: "{ kind: learned, buckets: 16 }",
        about: "learned embedding of floor(log2(age+1)) added to keys",
    },
    CatalogEntry {
        axis: "sharing",
        yaml: "per_layer",
        about: "one memory per retention layer",
    },
    CatalogEntry {
        axis: "sharing",
        yaml: "shared",
        about: "one memory shared by all retention layers",
    },
    CatalogEntry {
        axis: "persistence",
        yaml: "process",
        about: "memory kept in RAM between sessions",
    },
    CatalogEntry {
        axis: "persistence",
        yaml: "disk",
        about: "snapshot written and reloaded between sessions",
    },
    CatalogEntry {
        axis: "layers",
        yaml: "all",
        about: "a retention layer in every transformer block (models only)",
    },
    CatalogEntry {
        axis: "layers",
        yaml: "[1]",
        about: "retention only in the listed blocks",
    },
    CatalogEntry {
        axis: "init",
        yaml: "candle",
        about: "Kaiming normal std sqrt(2/fan_in) (candle's linear; default; model.init defaults to torch)",
    },
    CatalogEntry {
        axis: "init",
        yaml: "torch",
        about: "uniform +-1/sqrt(fan_in) (PyTorch's nn.Linear)",
    },
    CatalogEntry {
        axis: "init",
        yaml: "{ kind: normal, std: 0.02 }",
        about: "Normal(0, std), output projection scaled 1/sqrt(2 layers) (GPT-2)",
    },
    CatalogEntry {
        axis: "heads",
        yaml: "4",
        about: "memory-attention heads (default 1)",
    },
    CatalogEntry {
        axis: "head_dim",
        yaml: "16",
        about: "per-head key width d_k (default d_model / heads)",
    },
];
