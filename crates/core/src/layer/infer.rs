//! The retention read without an autograd graph, on plain slices: what
//! evaluation and the scaling probes run (docs/ARCHITECTURE.md, "Reads at
//! scale"), and the exact top-k ranking every top-k read uses.
//!
//! Under [`no_grad`] a read of f32 memory on the CPU computes the query
//! projection, the scan over memory ([`retbench_kernels::scan`]), the value and output
//! projections as loops over the parameters' storage: no candle op, no
//! tensor of size m, one pass over memory for all queries of the call. It
//! reads in content space for recomputed keys (q·W_K against the raw slots,
//! as the layer's reassociated form does) and scores cached keys with each
//! head's query placed in its own span of the key row. The key bias adds the
//! same score to every slot of a query, so it changes no weight and is left
//! out; the value bias is added back in proportion to the weight mass.
//! Reads that must record usage statistics, learned slot age, other dtypes
//! and devices, and backends that ask for every score take the tensor path.

use std::cell::Cell;

use candle_core::{DType, Tensor};
use multiversion::multiversion;

use super::RetentionLayer;
use crate::config::SlotAge;
use crate::error::{Error, Result};
use crate::memory::MemoryState;
use crate::read::{RERANK, ScanQueries, Selection};
use retbench_kernels::math::{exp_f32, row_stats};
use retbench_kernels::scan::{self, Rows, dot};
use retbench_kernels::{Kernels, kernels, storage_f32};

thread_local! {
    static NO_GRAD: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with gradients off on this thread: reads inside build no
/// autograd graph (and take the slice path where it applies). Like
/// PyTorch's `torch.no_grad()`: a backward pass through a result computed
/// here reaches no parameter of the read.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            NO_GRAD.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(NO_GRAD.with(|g| g.replace(true)));
    f()
}

/// Whether reads on this thread build a graph (not inside [`no_grad`]).
pub fn grad_enabled() -> bool {
    !NO_GRAD.with(|g| g.get())
}

/// y = W·x (+ b), W [n, k] row-major. Compiled for the CPU's vector width
/// too: the build's baseline (SSE2) took most of a 100-slot read in these.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn matvec(w: &[f32], b: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
    let k = x.len();
    for (i, yi) in y.iter_mut().enumerate() {
        *yi = dot(&w[i * k..(i + 1) * k], x) + b.map_or(0.0, |b| b[i]);
    }
}

impl RetentionLayer {
    /// Whether the slice paths apply to reads of `mem` by this layer.
    fn slices_apply(&self, mem: &MemoryState) -> bool {
        kernels() == Kernels::Fused
            && mem.device().is_cpu()
            && mem.dtype() == DType::F32
            && !matches!(self.cfg.slot_age, SlotAge::Learned { .. })
    }

    /// Query rows for scanning `mem`, from per-head queries `q` [B, H, T, d_k].
    fn scan_queries(&self, q: &[f32], b: usize, t: usize) -> Result<ScanQueries> {
        if self.cfg.keys.cached() {
            Ok(self.key_space_queries(q, b, t))
        } else {
            self.content_space_queries(q, b, t)
        }
    }

    /// Rows q·W_K[h]: each head's query in content space (d wide).
    fn content_space_queries(&self, q: &[f32], b: usize, t: usize) -> Result<ScanQueries> {
        let (nh, dk, d) = (self.heads, self.head_dim, self.d_model);
        let per = nh * t;
        let (ws, wl) = self.w_k.weight().storage_and_layout();
        let wk = storage_f32(&ws, wl).ok_or_else(|| Error::Usage("W_K is not f32".into()))?;
        let rows = (0..b)
            .map(|bi| {
                let mut out = vec![0f32; per * d];
                for (row, o) in out.chunks_exact_mut(d).enumerate() {
                    let h = row / t;
                    let qr = &q[(bi * per + row) * dk..(bi * per + row + 1) * dk];
                    for (e, &qe) in qr.iter().enumerate() {
                        let w = &wk[(h * dk + e) * d..(h * dk + e + 1) * d];
                        o.iter_mut().zip(w).for_each(|(o, w)| *o += qe * w);
                    }
                }
                out
            })
            .collect();
        Ok(ScanQueries { width: d, rows })
    }

    /// Rows in the space of key rows (H·d_k wide): each head's query in its
    /// own span, zero elsewhere.
    fn key_space_queries(&self, q: &[f32], b: usize, t: usize) -> ScanQueries {
        let (nh, dk) = (self.heads, self.head_dim);
        let (per, w) = (nh * t, nh * dk);
        let rows = (0..b)
            .map(|bi| {
                let mut out = vec![0f32; per * w];
                for (row, o) in out.chunks_exact_mut(w).enumerate() {
                    let h = row / t;
                    o[h * dk..(h + 1) * dk]
                        .copy_from_slice(&q[(bi * per + row) * dk..(bi * per + row + 1) * dk]);
                }
                out
            })
            .collect();
        ScanQueries { width: w, rows }
    }

    /// Runs `f` on the memory's contents and on the rows its reads score
    /// (cached keys, else the contents), as f32 slices; `None` when they are
    /// not f32 on the CPU.
    fn with_rows<R>(
        &self,
        mem: &MemoryState,
        f: impl FnOnce(&[f32], &[f32]) -> Result<R>,
    ) -> Result<Option<R>> {
        let (cs, cl) = mem.content().storage_and_layout();
        let Some(content) = storage_f32(&cs, cl) else {
            return Ok(None);
        };
        let keys_guard = mem.keys().map(|k| k.storage_and_layout());
        let keys = match (&keys_guard, self.cfg.keys) {
            (Some((s, l)), keys) if keys.cached() => match storage_f32(s, l) {
                Some(k) => k,
                None => return Ok(None),
            },
            _ => content,
        };
        f(content, keys).map(Some)
    }

    /// Exact top-k slots per query row of `q` [B, H, T, d_k] by one scan over
    /// memory with a bounded heap; `None` where the slice paths do not apply
    /// (the caller ranks all scores instead). Ties go to the lower slot.
    /// With reduced-precision keys the scan runs over them for
    /// [`RERANK`]·k candidates, re-ranked exactly.
    pub(crate) fn rank_top_k(
        &self,
        q: &Tensor,
        mem: &MemoryState,
        k: usize,
    ) -> Result<Option<Vec<u32>>> {
        if !self.slices_apply(mem) || q.dtype() != DType::F32 {
            return Ok(None);
        }
        let (b, _, t, _) = q.dims4()?;
        let qv: Vec<f32> = q.detach().flatten_all()?.to_vec1()?;
        self.rank_queries(&self.scan_queries(&qv, b, t)?, &qv, t, mem, k)
    }

    /// The scan-space rows of per-head queries `q` (the tensor path's
    /// [`crate::read::ReadQuery::scan_queries`]); `None` where the slice
    /// paths do not apply.
    pub(crate) fn tensor_scan_queries(
        &self,
        q: &Tensor,
        mem: &MemoryState,
    ) -> Result<Option<ScanQueries>> {
        if !self.slices_apply(mem) || q.dtype() != DType::F32 {
            return Ok(None);
        }
        let (b, _, t, _) = q.dims4()?;
        let qv: Vec<f32> = q.detach().flatten_all()?.to_vec1()?;
        self.scan_queries(&qv, b, t).map(Some)
    }

    /// [`Self::rank_top_k`] for query rows already in the scanned space
    /// (`q`: the per-head queries they came from).
    fn rank_queries(
        &self,
        queries: &ScanQueries,
        q: &[f32],
        t: usize,
        mem: &MemoryState,
        k: usize,
    ) -> Result<Option<Vec<u32>>> {
        let (m, w) = (mem.slots(), queries.width);
        let low = mem
            .low
            .as_ref()
            .filter(|l| self.cfg.keys.reduced() == Some(l.precision()) && l.pending() == 0);
        let padded = low.map(|_| self.key_space_queries(q, queries.rows.len(), t));
        self.with_rows(mem, |_, keys| {
            let mut out = Vec::new();
            for (bi, qrows) in queries.rows.iter().enumerate() {
                let nq = qrows.len() / w;
                let own = &keys[bi * m * w..(bi + 1) * m * w];
                let occupied = &mem.meta.occupied[bi * m..(bi + 1) * m];
                if let (Some(low), Some(padded)) = (low, &padded) {
                    let c = (RERANK * k).min(m).max(k);
                    let candidates =
                        scan::top_k_in(&padded.rows[bi], nq, &low.view(bi, m, occupied), c);
                    out.extend(scan::rerank(qrows, nq, own, w, &candidates, k));
                    continue;
                }
                let rows = Rows {
                    keys: own,
                    key_width: w,
                    values: own,
                    value_width: w,
                    occupied: Some(occupied),
                };
                out.extend(scan::top_k(qrows, nq, rows, k));
            }
            Ok(out)
        })
    }

    /// The read of `h` [B, T, d] from `mem` on slices, or `None` where it
    /// does not apply. Calls the read backend for its selection like the
    /// tensor path; returns R [B, T, d] and the selection.
    pub(crate) fn read_slices(
        &self,
        h: &Tensor,
        mem: &MemoryState,
        want_usage: bool,
    ) -> Result<Option<(Tensor, Selection)>> {
        if grad_enabled() || want_usage || !self.slices_apply(mem) || h.dtype() != DType::F32 {
            return Ok(None);
        }
        let (b, t, d) = h.dims3()?;
        if d != self.d_model {
            return Ok(None); // the tensor path reports it
        }
        self.check_memory(mem, b)?;
        let (nh, dk, m) = (self.heads, self.head_dim, mem.slots());
        let h = h.contiguous()?;
        let (hs, hl) = h.storage_and_layout();
        let Some(hv) = storage_f32(&hs, hl) else {
            return Ok(None);
        };
        // Per-head queries [B, H, T, d_k] = W_Q·LN(h) + b_Q.
        let Some(q) = self.query_heads(hv, b, t) else {
            return Ok(None);
        };
        let queries = self.scan_queries(&q, b, t)?;
        let q_tensor = Tensor::from_vec(q.clone(), (b, nh, t, dk), h.device())?;
        let q_heads = q;
        // The backend's selection, as on the tensor path.
        let scorer = || -> Result<Tensor> {
            Err(Error::Usage(
                "scores over every slot are not computed on the slice path".into(),
            ))
        };
        let ranker = |k: usize| self.rank_queries(&queries, &q_heads, t, mem, k);
        let scan = || Ok(Some(queries.clone()));
        let mut query = crate::read::ReadQuery {
            mem,
            q: &q_tensor,
            scorer: &scorer,
            scores: None,
            ranker: Some(&ranker),
            scores_wanted: false,
            scan: &scan,
            scan_cache: None,
            q_host: Some(&q_heads),
        };
        let selection = match self.read.select(&mut query) {
            Ok(s) => s,
            // A backend that needs every score reads on the tensor path.
            Err(_) if query.scores_wanted => return Ok(None),
            Err(e) => return Err(e),
        };
        let scale = 1.0 / (dk as f32).sqrt();
        let w = queries.width;
        // Softmax-weighted slot contents per query row [B][H·T × d] and
        // the weight mass of each row.
        let per = nh * t;
        let mut wm = vec![0f32; b * per * d];
        let mut mass = vec![0f32; b * per];
        let mixed = self.with_rows(mem, |content, keys| {
            for bi in 0..b {
                let qrows = &queries.rows[bi];
                let occ = &mem.meta.occupied[bi * m..(bi + 1) * m];
                let keys_b = &keys[bi * m * w..(bi + 1) * m * w];
                let content_b = &content[bi * m * d..(bi + 1) * m * d];
                let out = &mut wm[bi * per * d..(bi + 1) * per * d];
                match &selection {
                    Selection::Occupied => {
                        let rows = Rows {
                            keys: keys_b,
                            key_width: w,
                            values: content_b,
                            value_width: d,
                            occupied: (mem.occupied(bi) < m).then_some(occ),
                        };
                        let got = scan::attend(qrows, per, rows, scale, out);
                        mass[bi * per..(bi + 1) * per].copy_from_slice(&got);
                    }
                    Selection::Rows { k, slots } => {
                        let chosen = Chosen {
                            qrows,
                            q_heads: &q_heads[bi * per * dk..(bi + 1) * per * dk],
                            slots: &slots[bi * per * k..(bi + 1) * per * k],
                            k: *k,
                            occ,
                            keys: keys_b,
                            key_width: w,
                            content: content_b,
                            scale,
                        };
                        self.mix_chosen(&chosen, out, &mut mass[bi * per..(bi + 1) * per])?;
                    }
                }
            }
            Ok(())
        })?;
        if mixed.is_none() {
            return Ok(None);
        }
        let Some(r) = self.project_out(&wm, &mass, b, t) else {
            return Ok(None);
        };
        Ok(Some((
            Tensor::from_vec(r, (b, t, d), h.device())?,
            selection,
        )))
    }
    /// Per-head queries [B, H, T, d_k] = W_Q·LN(h) + b_Q for h [B, T, d],
    /// or None where a parameter is not f32 on the CPU.
    fn query_heads(&self, hv: &[f32], b: usize, t: usize) -> Option<Vec<f32>> {
        let (d, nh, dk) = (self.d_model, self.heads, self.head_dim);
        let hd = nh * dk;
        let mut q = vec![0f32; b * hd * t];
        let ln = self.ln_q.params();
        let (gs, gl) = ln.0.storage_and_layout();
        let (bs, bl) = ln.1.storage_and_layout();
        let (ws, wl) = self.w_q.weight().storage_and_layout();
        let bq = self.w_q.bias().map(|b| b.storage_and_layout());
        let g = storage_f32(&gs, gl)?;
        let beta = storage_f32(&bs, bl)?;
        let wq = storage_f32(&ws, wl)?;
        let bq = bq.as_ref().and_then(|(s, l)| storage_f32(s, l));
        let mut x = vec![0f32; d];
        let mut y = vec![0f32; hd];
        for bi in 0..b {
            for ti in 0..t {
                let row = &hv[(bi * t + ti) * d..(bi * t + ti + 1) * d];
                let (mean, inv) = row_stats(row, ln.2 as f32);
                for (i, xi) in x.iter_mut().enumerate() {
                    *xi = (row[i] - mean) * inv * g[i] + beta[i];
                }
                matvec(wq, bq, &x, &mut y);
                for hi in 0..nh {
                    let at = ((bi * nh + hi) * t + ti) * dk;
                    q[at..at + dk].copy_from_slice(&y[hi * dk..(hi + 1) * dk]);
                }
            }
        }
        Some(q)
    }

    /// The read of one memory's query rows over the slots a backend chose
    /// for each (`Selection::Rows`): softmax over the chosen slots' scores,
    /// the weighted sum of their contents into `out` [rows × d], and each
    /// row's weight mass (1, or 0 when nothing was chosen) into `mass`.
    fn mix_chosen(&self, c: &Chosen<'_>, out: &mut [f32], mass: &mut [f32]) -> Result<()> {
        let (d, dk, k, w) = (self.d_model, self.head_dim, c.k, c.key_width);
        let m = c.occ.len();
        let mut s = vec![0f32; k];
        let mut own = vec![0f32; k];
        for (row, mass) in mass.iter_mut().enumerate() {
            let chosen = &c.slots[row * k..(row + 1) * k];
            let qr = &c.qrows[row * w..(row + 1) * w];
            // Keys that are the read's parameters score with the query in
            // key space.
            let q_key = &c.q_heads[row * dk..(row + 1) * dk];
            let owned = self.read.score_slots(q_key, chosen, &mut own)?;
            let mut mx = f32::NEG_INFINITY;
            for ((sj, &j), &o) in s.iter_mut().zip(chosen).zip(&own) {
                *sj = if j == Selection::PAD {
                    f32::NEG_INFINITY
                } else if (j as usize) < m && c.occ[j as usize] {
                    let j = j as usize;
                    if owned {
                        c.scale * o
                    } else {
                        c.scale * dot(qr, &c.keys[j * w..(j + 1) * w])
                    }
                } else {
                    return Err(Error::Usage(format!(
                        "read backend {} selected slot {j}, which is empty or past {m}",
                        self.read.name()
                    )));
                };
                mx = mx.max(*sj);
            }
            if mx == f32::NEG_INFINITY {
                continue;
            }
            let z: f32 = s
                .iter_mut()
                .map(|x| {
                    // The scan's own exp (inlined, as in `scan::attend`),
                    // not libm's call. It clamps its argument, so a padded
                    // slot (-inf) would get e^-87, not 0, and its row would
                    // index the padding: padding weighs exactly 0.
                    *x = if *x == f32::NEG_INFINITY {
                        0.0
                    } else {
                        exp_f32(*x - mx)
                    };
                    *x
                })
                .sum();
            let o = &mut out[row * d..(row + 1) * d];
            for (&p, &j) in s.iter().zip(chosen) {
                if p != 0.0 {
                    let v = &c.content[j as usize * d..(j as usize + 1) * d];
                    let p = p / z;
                    o.iter_mut().zip(v).for_each(|(o, v)| *o += p * v);
                }
            }
            *mass = 1.0;
        }
        Ok(())
    }

    /// R [B, T, d]: out[b, t, h·d_k + e] = W_V[h·d_k + e]·wm[b, h, t] +
    /// b_V·mass, then W_O (+ b_O); None where a parameter is not f32 on the
    /// CPU.
    fn project_out(&self, wm: &[f32], mass: &[f32], b: usize, t: usize) -> Option<Vec<f32>> {
        let (d, nh, dk) = (self.d_model, self.heads, self.head_dim);
        let per = nh * t;
        let (vs, vl) = self.w_v.weight().storage_and_layout();
        let (os, ol) = self.w_o.weight().storage_and_layout();
        let bv = self.w_v.bias().map(|b| b.storage_and_layout());
        let bo = self.w_o.bias().map(|b| b.storage_and_layout());
        let wv = storage_f32(&vs, vl)?;
        let wo = storage_f32(&os, ol)?;
        let bv = bv.as_ref().and_then(|(s, l)| storage_f32(s, l));
        let bo = bo.as_ref().and_then(|(s, l)| storage_f32(s, l));
        let mut r = vec![0f32; b * t * d];
        let mut o = vec![0f32; nh * dk];
        for bi in 0..b {
            for ti in 0..t {
                for hi in 0..nh {
                    let row = bi * per + hi * t + ti;
                    let x = &wm[row * d..(row + 1) * d];
                    let span = hi * dk..(hi + 1) * dk;
                    matvec(
                        &wv[span.start * d..span.end * d],
                        None,
                        x,
                        &mut o[span.clone()],
                    );
                    if let Some(bv) = bv {
                        for (oi, bi) in o[span.clone()].iter_mut().zip(&bv[span]) {
                            *oi += bi * mass[row];
                        }
                    }
                }
                matvec(wo, bo, &o, &mut r[(bi * t + ti) * d..(bi * t + ti + 1) * d]);
            }
        }
        Some(r)
    }
}

/// One memory's query rows and the slots chosen for each, for
/// [`RetentionLayer::mix_chosen`].
struct Chosen<'a> {
    /// Query rows in the scanned space [rows × key_width].
    qrows: &'a [f32],
    /// The same rows per head in key space [rows × d_k].
    q_heads: &'a [f32],
    /// k slot indices per row (`Selection::PAD` for none).
    slots: &'a [u32],
    k: usize,
    occ: &'a [bool],
    keys: &'a [f32],
    key_width: usize,
    content: &'a [f32],
    scale: f32,
}
