//! The `product_keys` read (Lample et al. 2019, "Large Memory Layers with
//! Product Keys"): a memory of n² slots whose keys are learned, not
//! projected from the contents. Slot s = i·n + j has the key [c1_i; c2_j]
//! (two sub-key tables of n rows, d_k/2 wide). A query's halves score their
//! own table, keep k sub-keys each, and the k best of the k² sums — among
//! occupied slots — are read: O(n·d_k + k²) per query instead of O(n²·d_k).
//! The layer scores the chosen slots with these keys on both paths, so the
//! sub-keys get gradients through the softmax over the k; an append write
//! goes to the slot its own key (W_K·v) addresses, evicting what is there,
//! so a read with that key finds it. docs/ARCHITECTURE.md, "Reads at scale".

use candle_core::{DType, Tensor};
use candle_nn::{Init, VarBuilder};

use super::{ReadBackend, ReadQuery, ReadRecipe, Selection};
use crate::config::{KeyMode, RetentionConfig, SlotAge, WriteKind};
use crate::error::{ConfigError, Error, Result};
use retbench_kernels::scan::{self, Rows};

#[derive(Debug)]
pub struct ProductKeys {
    pub k: usize,
    /// Sub-keys per half (√slots).
    pub n: usize,
    /// Sub-key width (d_k / 2).
    pub half: usize,
    /// Sub-key tables [n, half], parameters of the layer.
    pub c1: Tensor,
    pub c2: Tensor,
}

impl ProductKeys {
    /// Sub-key tables under `vb` ("pk_c1", "pk_c2"), N(0, 1/half) so that a
    /// sub-key has about unit norm.
    pub fn new(k: usize, slots: usize, head_dim: usize, vb: &VarBuilder) -> Result<Self> {
        let n = (slots as f64).sqrt().round() as usize;
        if n * n != slots || !head_dim.is_multiple_of(2) {
            return Err(Error::Usage(format!(
                "product keys need n² slots and an even key width (got {slots} slots, d_k {head_dim})"
            )));
        }
        let half = head_dim / 2;
        let init = Init::Randn {
            mean: 0.0,
            stdev: 1.0 / (half as f64).sqrt(),
        };
        Ok(ProductKeys {
            k,
            n,
            half,
            c1: vb.get_with_hints((n, half), "pk_c1", init)?,
            c2: vb.get_with_hints((n, half), "pk_c2", init)?,
        })
    }

    /// Runs `f` on both tables as f32 slices: borrowed from f32 CPU
    /// storage (no copy per read), else copied.
    fn with_tables<R>(&self, f: impl FnOnce(&[f32], &[f32]) -> R) -> Result<R> {
        let (s1, l1) = self.c1.storage_and_layout();
        let (s2, l2) = self.c2.storage_and_layout();
        if let (Some(a), Some(b)) = (
            retbench_kernels::storage_f32(&s1, l1),
            retbench_kernels::storage_f32(&s2, l2),
        ) {
            return Ok(f(a, b));
        }
        drop((s1, s2));
        let flat = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.detach().to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        Ok(f(&flat(&self.c1)?, &flat(&self.c2)?))
    }

    /// The k' best sub-keys of `table` for `q` (indices and scores).
    fn best(&self, q: &[f32], table: &[f32], k: usize) -> Vec<(u32, f32)> {
        let rows = Rows {
            keys: table,
            key_width: self.half,
            values: table,
            value_width: self.half,
            occupied: None,
        };
        scan::top_k(q, 1, rows, k)
            .into_iter()
            .filter(|&i| i != u32::MAX)
            .map(|i| {
                let r = &table[i as usize * self.half..(i as usize + 1) * self.half];
                (i, scan::dot(q, r))
            })
            .collect()
    }

    /// The slot a key of width d_k addresses: the best sub-key of each half.
    pub fn address(&self, key: &[f32], c1: &[f32], c2: &[f32]) -> usize {
        let i = self.best(&key[..self.half], c1, 1)[0].0 as usize;
        let j = self.best(&key[self.half..], c2, 1)[0].0 as usize;
        i * self.n + j
    }

    /// The slots a write of keys `keys` [rows, d_k] goes to.
    pub fn addresses(&self, keys: &Tensor) -> Result<Vec<usize>> {
        let keys: Vec<f32> = keys
            .detach()
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        self.with_tables(|c1, c2| {
            keys.chunks_exact(2 * self.half)
                .map(|k| self.address(k, c1, c2))
                .collect()
        })
    }
}

/// Product keys before their sub-key tables exist (they are parameters,
/// made in [`ReadRecipe::build`]).
#[derive(Debug, Clone, Copy)]
pub struct ProductKeysRecipe {
    pub k: usize,
}

impl ReadRecipe for ProductKeysRecipe {
    fn check(&self, cfg: &RetentionConfig) -> std::result::Result<(), ConfigError> {
        let bad = |field: &str, message: String| {
            Err(ConfigError::Invalid {
                field: field.into(),
                message,
            })
        };
        let (k, slots) = (self.k, cfg.slots);
        super::check_k(k, slots)?;
        let n = (slots as f64).sqrt().round() as usize;
        if n < 2 || n * n != slots {
            return bad(
                "slots",
                format!(
                    "product keys need a square number of slots (n² for n sub-keys a half), got {slots}"
                ),
            );
        }
        if k > n {
            return bad(
                "read.k",
                format!("product keys pick k of each half's {n} sub-keys: k ≤ {n}, got {k}"),
            );
        }
        if cfg.heads != 1 {
            return bad("heads", "product keys address slots with one head".into());
        }
        if !matches!(cfg.write.kind, WriteKind::Append { .. }) {
            return bad(
                "write.kind",
                "product keys place each write in the slot its key addresses (append)".into(),
            );
        }
        if cfg.keys != KeyMode::Recompute {
            return bad(
                "keys",
                "product keys are parameters of the read; leave keys at recompute".into(),
            );
        }
        if !matches!(cfg.slot_age, SlotAge::None {}) {
            return bad("slot_age", "product keys take no slot age".into());
        }
        Ok(())
    }

    fn build(
        self: Box<Self>,
        cfg: &RetentionConfig,
        d_model: usize,
        vb: &VarBuilder,
    ) -> Result<Box<dyn ReadBackend>> {
        let head_dim = cfg.head_dim(d_model)?;
        Ok(Box::new(ProductKeys::new(self.k, cfg.slots, head_dim, vb)?))
    }
}

impl ReadBackend for ProductKeys {
    fn name(&self) -> &'static str {
        "product_keys"
    }

    fn k(&self) -> Option<usize> {
        Some(self.k)
    }

    fn select(&self, query: &mut ReadQuery<'_>) -> Result<Selection> {
        let mem = query.memory();
        let (b, nh, t, m) = query.dims()?;
        let q = query.query_rows()?;
        let (k, dk) = (self.k, 2 * self.half);
        let kk = k.min(self.n);
        let mut slots = Vec::with_capacity(b * nh * t * k);
        // Per query row, the k' best sub-keys of each half.
        type Halves = (Vec<(u32, f32)>, Vec<(u32, f32)>);
        let halves: Vec<Halves> = self.with_tables(|c1, c2| {
            q.chunks_exact(dk)
                .map(|qr| {
                    (
                        self.best(&qr[..self.half], c1, kk),
                        self.best(&qr[self.half..], c2, kk),
                    )
                })
                .collect()
        })?;
        for (row, (a, c)) in halves.iter().enumerate() {
            let occupied = &mem.meta().occupied[(row / (nh * t)) * m..][..m];
            // The k best occupied of the k² sums. Both lists come in
            // increasing sub-key order, so slot ids arrive increasing and an
            // equal score keeps the lower slot; occupancy (a random access
            // into the memory's flags) is checked only for a sum that would
            // enter.
            let mut pick = scan::Selector::new(k);
            for &(i, si) in a {
                for &(j, sj) in c {
                    let (sc, s) = (si + sj, i as usize * self.n + j as usize);
                    if sc > pick.bar() && occupied[s] {
                        pick.offer_one(sc, s as u32);
                    }
                }
            }
            slots.extend(pick.finish());
        }
        Ok(Selection::Rows { k, slots })
    }

    fn attended(&self, occupied: usize) -> usize {
        self.k.min(occupied)
    }

    fn keys_of(&self, slots: &[u32]) -> Result<Option<Tensor>> {
        let dev = self.c1.device();
        let n = self.n as u32;
        let i: Vec<u32> = slots.iter().map(|&s| s / n).collect();
        let j: Vec<u32> = slots.iter().map(|&s| s % n).collect();
        let i = Tensor::from_vec(i, slots.len(), dev)?;
        let j = Tensor::from_vec(j, slots.len(), dev)?;
        Ok(Some(Tensor::cat(
            &[self.c1.index_select(&i, 0)?, self.c2.index_select(&j, 0)?],
            1,
        )?))
    }

    fn owns_keys(&self) -> bool {
        true
    }

    fn score_slots(&self, q: &[f32], slots: &[u32], out: &mut [f32]) -> Result<bool> {
        let (h, n) = (self.half, self.n);
        self.with_tables(|c1, c2| {
            for (o, &s) in out.iter_mut().zip(slots) {
                if s as usize >= n * n {
                    *o = f32::NEG_INFINITY; // padding
                    continue;
                }
                let (i, j) = (s as usize / n, s as usize % n);
                *o = scan::dot(&q[..h], &c1[i * h..(i + 1) * h])
                    + scan::dot(&q[h..2 * h], &c2[j * h..(j + 1) * h]);
            }
        })?;
        Ok(true)
    }

    fn address_writes(&self, keys: &dyn Fn() -> Result<Tensor>) -> Result<Option<Vec<usize>>> {
        self.addresses(&keys()?).map(Some)
    }
}
