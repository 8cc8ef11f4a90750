//! The choices the fast CPU ops leave to their caller: which convolution algorithm, which SIMD
//! kernels, and the tiling. They travel as values with each op ([`ConvOptions`] with a conv,
//! [`Isa`] with a max-pool), so that two convolutions in one process can run differently and
//! tests need no process-wide switch.

use std::sync::OnceLock;

/// Which convolution algorithm `Backend::Fast` uses on the CPU for 3×3 stride-1 layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ConvAlgo {
    /// Per layer: a direct kernel for 3×3 stride-1 padding-1 layers with at most 32 input and
    /// 32 output channels on maps of at least 8 × 8, one dense product on 2 × 2 maps, Winograd
    /// F(2×2, 3×3) where it pays (3×3, stride 1, padding ≤ 2, at least [`AUTO_MIN_CHANNELS`]
    /// input and output channels), im2col + gemm elsewhere.
    #[default]
    Auto,
    /// im2col + gemm everywhere.
    Im2col,
    /// Winograd for every 3×3 stride-1 layer with padding ≤ 2, whatever its channel counts.
    Winograd,
}

/// With [`ConvAlgo::Auto`], layers with fewer input or output channels use im2col: with few
/// channels the transforms cost more than the multiplications they save (VGG's first layer has
/// 3 input channels; at the CPU configs' widths im2col was as fast or faster up to 16 → 32
/// channels, forward and backward, docs/benchmarks.md).
pub const AUTO_MIN_CHANNELS: usize = 32;

/// Which code the hand-written SIMD kernels (Winograd transforms, max-pool rows) run. Both give
/// the same bits; `Portable` exists so that tests cover the code a CPU without AVX-512 runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Isa {
    /// AVX-512F intrinsics where the CPU has them (detected at run time), portable Rust
    /// elsewhere.
    #[default]
    Detect,
    /// Portable Rust everywhere.
    Portable,
}

/// How `Backend::Fast` computes a convolution on the CPU (cuDNN makes its own choices).
///
/// `Default` is the built-in tuning with the algorithm named by the environment variable
/// `PYRAMID_CONV_ALGO` (`auto`, `im2col` or `winograd`; anything else is `auto`, and
/// [`ConvOptions::env_problem`] reports it), read once per process. The tiling fields only change speed; `algo` changes the rounding as well (Winograd
/// and im2col round differently). The results do not depend on the rayon thread count under
/// any options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvOptions {
    /// Which algorithm 3×3 stride-1 layers use; changes the rounding of the results.
    pub algo: ConvAlgo,
    /// Which SIMD code the Winograd transforms run; the same bits either way.
    pub isa: Isa,
    /// im2col: target bytes of one chunk of the im2col matrix (rows of one image are chunked
    /// so that it stays cache-sized).
    pub im2col_tile_bytes: usize,
    /// im2col: minimum gemm columns per work unit; smaller feature maps are grouped by image up
    /// to it.
    pub im2col_min_cols: usize,
    /// Winograd forward (and input gradient): target floats of one block's transformed input
    /// and output together (`16 (C + O) × tiles`).
    pub winograd_block_floats: usize,
    /// Winograd weight gradient: the same target for its blocks, of which it keeps up to 8 in
    /// memory at once on wide layers.
    pub winograd_grad_w_block_floats: usize,
}

impl ConvOptions {
    /// The built-in tuning, with [`ConvAlgo::Auto`].
    const BUILTIN: Self = Self {
        algo: ConvAlgo::Auto,
        isa: Isa::Detect,
        im2col_tile_bytes: 2 << 20,
        im2col_min_cols: 256,
        // 16 MB: larger blocks mean fewer repackings of the transformed kernels per call
        // (one per block and point), which dominated the deep layers at 96 × 96: 256 → 512 at
        // 12 × 12 went from 51 to 40 ms (batch 64, 2 threads) when this was 4 MB.
        winograd_block_floats: 1 << 22,
        winograd_grad_w_block_floats: 1 << 20,
    };

    /// The problem with `$PYRAMID_CONV_ALGO`, if it is set to something that is not an
    /// algorithm (the default options then use `auto`). Programs should refuse to start on it.
    pub fn env_problem() -> Option<String> {
        match std::env::var("PYRAMID_CONV_ALGO").as_deref() {
            Ok("" | "auto" | "im2col" | "winograd") | Err(std::env::VarError::NotPresent) => None,
            Ok(other) => Some(format!(
                "PYRAMID_CONV_ALGO = {other:?}: expected auto, im2col or winograd"
            )),
            Err(std::env::VarError::NotUnicode(_)) => {
                Some("PYRAMID_CONV_ALGO is not valid UTF-8".into())
            }
        }
    }

    fn from_env() -> Self {
        let algo = match std::env::var("PYRAMID_CONV_ALGO").as_deref() {
            Ok("im2col") => ConvAlgo::Im2col,
            Ok("winograd") => ConvAlgo::Winograd,
            _ => ConvAlgo::Auto,
        };
        Self {
            algo,
            ..Self::BUILTIN
        }
    }
}

impl Default for ConvOptions {
    fn default() -> Self {
        static DEFAULT: OnceLock<ConvOptions> = OnceLock::new();
        *DEFAULT.get_or_init(Self::from_env)
    }
}

/// The convolution algorithm of the default options (`PYRAMID_CONV_ALGO`, see
/// [`ConvOptions`]): what [`crate::conv2d`] uses.
pub fn conv_algo() -> ConvAlgo {
    ConvOptions::default().algo
}
