//! Forces tiny im2col chunks so that the row-chunked and grouped code paths are exercised on
//! small shapes (a separate test binary, since the tiling knob is process-global).
mod common;
use common::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn conv_matches_candle_small_tiles(c in case_strategy(), tile in 1usize..4096, min_cols in 1usize..64) {
        pyramid_ops::set_tiling(tile, min_cols);
        check_conv(&c).map_err(TestCaseError::fail)?;
    }
}
