//! Seeded xorshift32 noise for the inference tests: the same stream for the same seed, no dependency.

/// Endless xorshift32 values from `seed` (made odd, so never the all-zero state).
pub fn xorshift(seed: u32) -> impl Iterator<Item = u32> {
    let mut s = seed | 1;
    std::iter::repeat_with(move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    })
}
