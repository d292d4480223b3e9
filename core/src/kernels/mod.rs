//! Hand-written CPU kernels for the sampler's hot path: the small-M matrix product
//! `y = x Wᵀ` of every linear layer (`x` `(M, K)` f32 activations, `W` `(N, K)` weights in f32,
//! f16 or bf16, f32 accumulation).
//!
//! Batch-1 decoding with CFG multiplies a few to a few dozen rows by every weight matrix, so the
//! step is bound by reading the weights. The kernel reads each weight once from memory for all
//! rows: the weights are cut into chunks that fit in L2 (one chunk per task of a persistent
//! thread pool), and a register tile of rows x weight rows is accumulated in vector registers
//! (up to 8 x 2 on AVX-512, 4 x 2 on AVX2/FMA and the portable tier; `tile_rows`,
//! `tile_cols`). Reduced-precision weights are widened exactly to f32 in registers (bf16 by a
//! 16-bit shift, f16 by the F16C conversion), so f16/bf16 weights halve the bytes read and give
//! the same arithmetic as f32 weights holding the same values.
//!
//! The code path is chosen at run time ([`Tier::detect`]) from what the CPU offers; the
//! environment variable `ARPG_KERNEL` (`auto`, `avx512`, `avx2`, `portable`, `candle`) forces one,
//! and tests compare every supported tier with candle's own matmul.

mod attention;
#[cfg(target_arch = "x86_64")]
pub(crate) mod bf16_conv;
#[cfg(target_arch = "x86_64")]
pub(crate) mod bf16_gemm;
mod conv;
mod fused;
#[cfg(target_arch = "x86_64")]
pub(crate) mod group_norm;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape};
use half::{bf16, f16};
use rayon::prelude::*;

pub(crate) use attention::Attention;
pub(crate) use conv::Conv2d;
pub(crate) use fused::{add, RmsNorm, RopeHeads, SwiGlu};

/// Whether the fused CPU ops may replace candle's chain for `x`: f32 on the CPU, no gradient
/// to keep, and our kernels not switched off.
pub(crate) fn fuses(x: &candle_core::Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && !x.track_op() && choice() != Choice::Candle
}

/// A CPU code path of the kernels, from the most portable to the widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Plain Rust (any CPU; auto-vectorised where the compiler can).
    Portable,
    /// x86-64 AVX2 + FMA + F16C, 8 lanes.
    Avx2Fma,
    /// x86-64 AVX-512F, 16 lanes.
    Avx512,
    /// [`Tier::Avx512`] plus AVX512-BF16: bf16 weights multiply bf16-rounded activations with
    /// `vdpbf16ps` (two products per lane and instruction, f32 accumulation), as PyTorch's bf16
    /// path does; f32 and f16 weights take the AVX-512 path unchanged.
    Avx512Bf16,
}

impl Tier {
    /// Every tier, narrowest first.
    pub const ALL: [Tier; 4] = [
        Tier::Portable,
        Tier::Avx2Fma,
        Tier::Avx512,
        Tier::Avx512Bf16,
    ];

    /// The name `ARPG_KERNEL` and the benchmark use.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Portable => "portable",
            Tier::Avx2Fma => "avx2-fma",
            Tier::Avx512 => "avx512",
            Tier::Avx512Bf16 => "avx512-bf16",
        }
    }

    /// The tier whose vector code runs everything but the bf16 dot products.
    pub(crate) fn base(self) -> Tier {
        match self {
            Tier::Avx512Bf16 => Tier::Avx512,
            t => t,
        }
    }

    /// Whether this CPU can run the tier (detected at run time).
    pub fn is_supported(self) -> bool {
        match self {
            Tier::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512Bf16 => {
                Tier::Avx512.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// This tier if the CPU supports it, else [`Tier::Portable`].
    pub fn usable(self) -> Tier {
        if self.is_supported() {
            self
        } else {
            Tier::Portable
        }
    }

    /// The widest tier this CPU supports.
    pub fn detect() -> Tier {
        Tier::ALL
            .into_iter()
            .rev()
            .find(|t| t.is_supported())
            .unwrap_or(Tier::Portable)
    }

    /// Every tier this CPU supports, narrowest first.
    pub fn supported() -> Vec<Tier> {
        Tier::ALL.into_iter().filter(|t| t.is_supported()).collect()
    }
}

/// Which path the linear layers take on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Our kernel at this tier.
    Kernel(Tier),
    /// candle's own matmul (the path every other device takes).
    Candle,
}

impl Choice {
    /// `auto` (or empty), a tier name, or `candle`. A tier this CPU lacks is an error, never a
    /// crash at the first step.
    pub fn parse(s: &str) -> Result<Choice, String> {
        let tier = match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => return Ok(Choice::Kernel(Tier::detect())),
            "candle" => return Ok(Choice::Candle),
            "portable" => Tier::Portable,
            "avx2" | "avx2-fma" => Tier::Avx2Fma,
            "avx512" => Tier::Avx512,
            "avx512-bf16" => Tier::Avx512Bf16,
            other => {
                return Err(format!(
                    "unknown kernel `{other}` (expected auto, avx512-bf16, avx512, avx2, \
                     portable or candle)"
                ))
            }
        };
        if tier.is_supported() {
            Ok(Choice::Kernel(tier))
        } else {
            Err(format!("this CPU cannot run the {} kernels", tier.name()))
        }
    }

    /// What the benchmark prints: `avx512`, `avx2-fma`, `portable` or `candle`.
    pub fn name(self) -> &'static str {
        match self {
            Choice::Kernel(t) => t.name(),
            Choice::Candle => "candle",
        }
    }

    fn code(self) -> u8 {
        match self {
            Choice::Candle => 1,
            Choice::Kernel(Tier::Portable) => 2,
            Choice::Kernel(Tier::Avx2Fma) => 3,
            Choice::Kernel(Tier::Avx512) => 4,
            Choice::Kernel(Tier::Avx512Bf16) => 5,
        }
    }

    fn from_code(c: u8) -> Option<Choice> {
        Some(match c {
            1 => Choice::Candle,
            2 => Choice::Kernel(Tier::Portable),
            3 => Choice::Kernel(Tier::Avx2Fma),
            4 => Choice::Kernel(Tier::Avx512),
            5 => Choice::Kernel(Tier::Avx512Bf16),
            _ => return None,
        })
    }
}

/// 0: not decided yet; otherwise [`Choice::code`].
static CHOICE: AtomicU8 = AtomicU8::new(0);

/// The path in use: [`set_choice`]'s, else `ARPG_KERNEL`'s, else the widest supported tier. An
/// unusable `ARPG_KERNEL` is reported once on stderr and the widest tier is used.
pub fn choice() -> Choice {
    if let Some(c) = Choice::from_code(CHOICE.load(Ordering::Relaxed)) {
        return c;
    }
    let c = match std::env::var("ARPG_KERNEL") {
        Ok(v) => Choice::parse(&v).unwrap_or_else(|e| {
            eprintln!("ARPG_KERNEL: {e}; using {}", Tier::detect().name());
            Choice::Kernel(Tier::detect())
        }),
        Err(_) => Choice::Kernel(Tier::detect()),
    };
    CHOICE.store(c.code(), Ordering::Relaxed);
    c
}

/// The tier of [`choice`] (the widest supported one when candle's path is chosen).
pub(crate) fn choice_tier() -> Tier {
    match choice() {
        Choice::Kernel(t) => t,
        Choice::Candle => Tier::detect(),
    }
}

/// Forces the path for the whole process (tests, benchmarks). Returns an error for a tier this
/// CPU lacks.
pub fn set_choice(c: Choice) -> Result<(), String> {
    if let Choice::Kernel(t) = c {
        if !t.is_supported() {
            return Err(format!("this CPU cannot run the {} kernels", t.name()));
        }
    }
    CHOICE.store(c.code(), Ordering::Relaxed);
    Ok(())
}

/// A weight element the kernels read: widened to f32 exactly.
pub trait Weight: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
}

impl Weight for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Weight for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl Weight for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

/// Most rows of x a register tile holds (the tile arrays' size).
pub(crate) const MR: usize = 8;

/// Bytes of weights one task reads: a chunk stays in L2 while every row tile of x passes over it.
const CHUNK_BYTES: usize = 192 << 10;

/// `yᵀ = (x Wᵀ)ᵀ`: `x` `(m, k)` row-major, `w` `(n, k)` row-major, result `(n, m)` row-major (each
/// task owns whole rows of the result, so the threads never share a cache line of output).
///
/// Panics if the slices are shorter than the shapes say (an internal invariant; [`linear`]
/// checks the shapes of what it is given).
pub fn matmul_t<W: Weight>(
    tier: Tier,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
) -> Vec<f32> {
    product(tier, x, m, k, w, n, true)
}

/// [`matmul_t`] on the calling thread only (for callers that already split the work).
pub(crate) fn matmul_t_serial<W: Weight>(
    tier: Tier,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
) -> Vec<f32> {
    product(tier, x, m, k, w, n, false)
}

fn product<W: Weight>(
    tier: Tier,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
    parallel: bool,
) -> Vec<f32> {
    // A tier this CPU cannot run (a caller's mistake) falls back to plain Rust rather than
    // executing instructions the CPU lacks.
    let tier = tier.usable();
    assert!(
        x.len() >= m * k && w.len() >= n * k,
        "matmul_t: slices shorter than shapes"
    );
    let mut yt = vec![0f32; n * m];
    if m == 0 || n == 0 {
        return yt;
    }
    let nr = tile_cols(tier);
    #[cfg(target_arch = "x86_64")]
    let dot = x86::Bf16Dot::new(tier, x, m, k, w);
    // Chunks of weight rows small enough to stay in L2 while every row tile of x passes over
    // them; in parallel, also enough of them for every thread to get several (balance).
    let by_cache = (CHUNK_BYTES / (k * std::mem::size_of::<W>()).max(1)).max(nr);
    let by_balance = if parallel {
        n.div_ceil(rayon::current_num_threads().max(1) * 4).max(nr)
    } else {
        n
    };
    let rows = by_cache.min(by_balance).div_ceil(nr) * nr;
    #[cfg(target_arch = "x86_64")]
    let packed = if dot.is_some() {
        Vec::new()
    } else {
        pack(tier, x, m, k)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let packed = pack(tier, x, m, k);
    let run = |(c, out): (usize, &mut [f32])| {
        let n0 = c * rows;
        let nc = out.len() / m;
        #[cfg(target_arch = "x86_64")]
        if let Some(dot) = &dot {
            return dot.chunk(n0, nc, out);
        }
        chunk(tier, x, &packed, m, k, &w[n0 * k..(n0 + nc) * k], nc, out);
    };
    if parallel {
        yt.par_chunks_mut(rows * m).enumerate().for_each(run);
    } else {
        yt.chunks_mut(rows * m).enumerate().for_each(run);
    }
    yt
}

/// Vector lanes of a tier's registers (f32).
pub(crate) fn lanes(tier: Tier) -> usize {
    match tier.base() {
        Tier::Avx512 => 16,
        _ => 8,
    }
}

/// `x` re-laid out per row tile so that one step of the vector loop reads the tile's rows from
/// one run of memory: tile `t` (rows `r0..r0+mr`) holds, for each block of `lanes` columns, the
/// block of every row in turn. Rows `k` floats apart would otherwise all fall in the same L1 set
/// (k = 1024 is a page) and evict each other. Only the whole blocks are packed; tails are read
/// from `x`.
fn pack(tier: Tier, x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let tier = tier.base();
    if tier == Tier::Portable {
        return Vec::new();
    }
    let l = lanes(tier);
    let body = k / l * l;
    let mut out = Vec::with_capacity(m * body);
    let mut r0 = 0;
    while r0 < m {
        let mr = tile_rows(tier).min(m - r0);
        for b in (0..body).step_by(l) {
            for r in r0..r0 + mr {
                out.extend_from_slice(&x[r * k + b..r * k + b + l]);
            }
        }
        r0 += mr;
    }
    out
}

/// Register-tile width (weight rows) of a tier.
pub(crate) fn tile_cols(tier: Tier) -> usize {
    match tier.base() {
        Tier::Avx512 => TILE_COLS_512,
        _ => 2,
    }
}

pub(crate) const TILE_COLS_512: usize = 2;

/// Register-tile height (rows of x) of a tier: AVX-512's 32 registers hold 8 x 2 accumulators,
/// so up to 8 rows (batch 1 with CFG, four tokens a step) see each weight once.
fn tile_rows(tier: Tier) -> usize {
    match tier.base() {
        Tier::Avx512 => 8,
        _ => 4,
    }
}

/// One chunk: every row tile of x against `nc` weight rows; `out` is `(nc, m)`.
#[allow(clippy::too_many_arguments)] // One call site; the shapes of one product.
fn chunk<W: Weight>(
    tier: Tier,
    x: &[f32],
    packed: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    nc: usize,
    out: &mut [f32],
) {
    let nr = tile_cols(tier);
    let body = k / lanes(tier) * lanes(tier);
    let mut tile = [[0f32; 4]; MR];
    let mut r0 = 0;
    while r0 < m {
        let mr = tile_rows(tier).min(m - r0);
        let xs = &x[r0 * k..(r0 + mr) * k];
        let xp = packed.get(r0 * body..(r0 + mr) * body).unwrap_or(&[]);
        let mut j0 = 0;
        while j0 < nc {
            let cols = if nc - j0 >= nr { nr } else { 1 };
            let ws = &w[j0 * k..(j0 + cols) * k];
            match tier {
                #[cfg(target_arch = "x86_64")]
                Tier::Avx512 | Tier::Avx512Bf16 | Tier::Avx2Fma => {
                    x86::tile(tier.base(), xs, xp, mr, ws, cols, k, &mut tile)
                }
                _ => portable::tile(xs, mr, ws, cols, k, &mut tile),
            }
            for (j, o) in out[(j0 * m)..((j0 + cols) * m)]
                .chunks_exact_mut(m)
                .enumerate()
            {
                for r in 0..mr {
                    o[r0 + r] = tile[r][j];
                }
            }
            j0 += cols;
        }
        r0 += mr;
    }
}

/// The product as a candle op (no backward): `x` `(.., K)` f32, `w` `(N, K)` f32/f16/bf16, both
/// contiguous CPU tensors; result `(.., N)` f32.
pub(crate) struct Linear(pub Tier);

/// The whole f32 buffer of a CPU operand of the op `op` (strided views index into it).
pub(crate) fn f32_storage<'a>(s: &'a CpuStorage, op: &str) -> candle_core::Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("{op} kernel: operands must be f32"),
    }
}

/// The elements of a contiguous f32 CPU operand of the op `op`.
pub(crate) fn f32_operand<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    contiguous(f32_storage(s, op)?, l)
}

fn contiguous<'a, T>(s: &'a [T], l: &Layout) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("kernel: operand is not contiguous"),
    }
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "arpg-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let xdims = xl.dims();
        let (n, k) = match wl.dims() {
            [n, k] => (*n, *k),
            d => candle_core::bail!("linear kernel: weight must be (N, K), got {d:?}"),
        };
        let Some((&kx, lead)) = xdims.split_last() else {
            candle_core::bail!("linear kernel: input is a scalar");
        };
        if kx != k {
            candle_core::bail!("linear kernel: input has {kx} features, the weight {k}");
        }
        let m: usize = lead.iter().product();
        let x = match xs {
            CpuStorage::F32(v) => contiguous(v, xl)?,
            other => {
                candle_core::bail!("linear kernel: input must be f32, got {:?}", other.dtype())
            }
        };
        let yt = match ws {
            CpuStorage::F32(v) => matmul_t(self.0, x, m, k, contiguous(v, wl)?, n),
            CpuStorage::BF16(v) => matmul_t(self.0, x, m, k, contiguous(v, wl)?, n),
            CpuStorage::F16(v) => matmul_t(self.0, x, m, k, contiguous(v, wl)?, n),
            other => candle_core::bail!(
                "linear kernel: weights must be f32, f16 or bf16, got {:?}",
                other.dtype()
            ),
        };
        let y = transpose(&yt, n, m);
        let mut shape = lead.to_vec();
        shape.push(n);
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }
}

/// The product with bf16 weights packed for [`bf16_gemm::gemm`], as a candle op (no backward):
/// `x` `(.., K)` f32 contiguous on the CPU; result `(.., N)` f32.
#[cfg(target_arch = "x86_64")]
pub(crate) struct LinearPacked(pub std::sync::Arc<bf16_gemm::PackedBf16>);

#[cfg(target_arch = "x86_64")]
impl candle_core::CustomOp1 for LinearPacked {
    fn name(&self) -> &'static str {
        "arpg-linear-bf16-packed"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, k) = (self.0.n(), self.0.k());
        let Some((&kx, lead)) = xl.dims().split_last() else {
            candle_core::bail!("linear kernel: input is a scalar");
        };
        if kx != k {
            candle_core::bail!("linear kernel: input has {kx} features, the weight {k}");
        }
        let m: usize = lead.iter().product();
        let x = f32_operand(xs, xl, "linear")?;
        let Some(y) = bf16_gemm::gemm(Tier::Avx512Bf16, x, m, k, &self.0) else {
            candle_core::bail!("linear kernel: packed bf16 weights need AVX512-BF16");
        };
        let mut shape = lead.to_vec();
        shape.push(n);
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }
}

/// `yt` `(n, m)` row-major → `(m, n)`: each task owns a band of rows of the result and reads the
/// band's columns of `yt` one contiguous run per source row, so the band's destination lines stay
/// in L1 (writing one element per line across all rows missed the cache on every element: a
/// tenth of a batch-16 step went there).
fn transpose(yt: &[f32], n: usize, m: usize) -> Vec<f32> {
    const BAND: usize = 16;
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return y;
    }
    y.par_chunks_mut(BAND * n)
        .enumerate()
        .for_each(|(b, rows)| {
            let i0 = b * BAND;
            let h = rows.len() / n;
            for j in 0..n {
                let src = &yt[j * m + i0..j * m + i0 + h];
                for (r, v) in src.iter().enumerate() {
                    rows[r * n + j] = *v;
                }
            }
        });
    y
}

/// Whether the kernels can take weights of this dtype.
pub fn takes(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// A seeded stream of values in `[-0.5, 0.5)` for the kernels' unit tests (a 64-bit LCG).
#[cfg(test)]
pub(crate) fn test_values(mut seed: u64) -> impl FnMut() -> f32 {
    move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    }
}

#[cfg(test)]
mod tests {
    use super::transpose;

    #[test]
    fn transpose_moves_every_element_once() {
        for (n, m) in [(1, 1), (3, 17), (40, 33), (7, 1), (1, 50)] {
            let yt: Vec<f32> = (0..n * m).map(|v| v as f32).collect();
            let y = transpose(&yt, n, m);
            for j in 0..n {
                for i in 0..m {
                    assert_eq!(y[i * n + j], yt[j * m + i], "({n}, {m}) at ({i}, {j})");
                }
            }
        }
    }
}
