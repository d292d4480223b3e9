//! 8-bit float formats, decoded exactly so that fp8 checkpoints can be widened at load.
//!
//! Each format is `sign | exponent | mantissa` with its own bias and its own rule for the
//! special values; all of their finite values are exactly representable in bf16 (8 exponent
//! bits cover 2^-17 to 57344, and 3 mantissa bits fit in bf16's 7), so widening loses nothing.

use half::bf16;

/// The 8-bit float layouts torch and safetensors store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum F8 {
    /// `float8_e4m3fn` / `F8_E4M3`: bias 7, no infinities, only S.1111.111 is NaN (max 448).
    E4M3Fn,
    /// `float8_e5m2` / `F8_E5M2`: bias 15, IEEE-like (infinities and NaNs at exponent 31).
    E5M2,
    /// `float8_e4m3fnuz`: bias 8, no infinities, no negative zero: 0x80 is the only NaN.
    E4M3FnUz,
    /// `float8_e5m2fnuz`: bias 16, no infinities, no negative zero: 0x80 is the only NaN.
    E5M2FnUz,
}

impl F8 {
    /// The name `arpg info` shows (candle's spelling for the one format it knows).
    pub(super) fn name(self) -> &'static str {
        match self {
            F8::E4M3Fn => "f8e4m3",
            F8::E5M2 => "f8e5m2",
            F8::E4M3FnUz => "f8e4m3fnuz",
            F8::E5M2FnUz => "f8e5m2fnuz",
        }
    }

    /// Exact value of one encoded byte (NaN and infinities included).
    pub(super) fn decode(self, bits: u8) -> f32 {
        let (mantissa_bits, bias) = match self {
            F8::E4M3Fn => (3, 7),
            F8::E5M2 => (2, 15),
            F8::E4M3FnUz => (3, 8),
            F8::E5M2FnUz => (2, 16),
        };
        let exponent_max = (1i32 << (7 - mantissa_bits)) - 1;
        let exponent = i32::from(bits & 0x7f) >> mantissa_bits;
        let mantissa = i32::from(bits) & ((1 << mantissa_bits) - 1);
        match self {
            F8::E4M3Fn if exponent == exponent_max && mantissa == (1 << mantissa_bits) - 1 => {
                return f32::NAN
            }
            F8::E5M2 if exponent == exponent_max => {
                return if mantissa != 0 {
                    f32::NAN
                } else if bits & 0x80 != 0 {
                    f32::NEG_INFINITY
                } else {
                    f32::INFINITY
                };
            }
            F8::E4M3FnUz | F8::E5M2FnUz if bits == 0x80 => return f32::NAN,
            _ => {}
        }
        // Subnormals have no implicit leading one and the exponent of the smallest normal.
        let (significand, exponent) = if exponent == 0 {
            (mantissa, 1 - bias - mantissa_bits)
        } else {
            (
                mantissa + (1 << mantissa_bits),
                exponent - bias - mantissa_bits,
            )
        };
        // An integer below 16 times a power of two in f32's normal range: exact.
        let magnitude = significand as f32 * pow2(exponent);
        if bits & 0x80 != 0 {
            -magnitude
        } else {
            magnitude
        }
    }

    /// The decoded value of every byte.
    pub(super) fn table(self) -> [f32; 256] {
        let mut table = [0f32; 256];
        for (bits, v) in (0..=255u8).zip(table.iter_mut()) {
            *v = self.decode(bits);
        }
        table
    }

    /// Number of NaN or infinite values in `bytes`.
    pub(super) fn count_non_finite(self, bytes: &[u8]) -> usize {
        let table = self.table();
        bytes
            .iter()
            .filter(|&&b| !table[usize::from(b)].is_finite())
            .count()
    }

    /// Widens every byte to bf16 (exact for all finite values of every format).
    pub(super) fn widen_to_bf16(self, bytes: &[u8]) -> Vec<bf16> {
        let table = self.table().map(bf16::from_f32);
        bytes.iter().map(|&b| table[usize::from(b)]).collect()
    }
}

/// 2^k for k in f32's normal exponent range.
fn pow2(k: i32) -> f32 {
    f32::from_bits(((127 + k) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bit_patterns() {
        let e4m3 = F8::E4M3Fn;
        assert_eq!(e4m3.decode(0x38), 1.0);
        assert_eq!(e4m3.decode(0x7e), 448.0);
        assert_eq!(e4m3.decode(0x01), 2f32.powi(-9));
        assert_eq!(e4m3.decode(0x08), 2f32.powi(-6));
        assert_eq!(e4m3.decode(0xb8), -1.0);
        assert_eq!(e4m3.decode(0x80).to_bits(), (-0.0f32).to_bits());
        assert!(e4m3.decode(0x7f).is_nan() && e4m3.decode(0xff).is_nan());
        // S.1111.110 is a number in e4m3fn (no infinities).
        assert_eq!(e4m3.decode(0x78), 256.0);

        let e5m2 = F8::E5M2;
        assert_eq!(e5m2.decode(0x3c), 1.0);
        assert_eq!(e5m2.decode(0x7b), 57344.0);
        assert_eq!(e5m2.decode(0x01), 2f32.powi(-16));
        assert_eq!(e5m2.decode(0x7c), f32::INFINITY);
        assert_eq!(e5m2.decode(0xfc), f32::NEG_INFINITY);
        assert!(e5m2.decode(0x7d).is_nan());

        let e4m3fnuz = F8::E4M3FnUz;
        assert_eq!(e4m3fnuz.decode(0x40), 1.0);
        assert_eq!(e4m3fnuz.decode(0x7f), 240.0);
        assert_eq!(e4m3fnuz.decode(0x00), 0.0);
        assert!(e4m3fnuz.decode(0x80).is_nan());
        assert_eq!(e4m3fnuz.decode(0xff), -240.0);

        let e5m2fnuz = F8::E5M2FnUz;
        assert_eq!(e5m2fnuz.decode(0x40), 1.0);
        assert_eq!(e5m2fnuz.decode(0x7f), 57344.0);
        assert_eq!(e5m2fnuz.decode(0x01), 2f32.powi(-17));
        assert!(e5m2fnuz.decode(0x80).is_nan());
    }

    #[test]
    fn every_finite_value_widens_to_bf16_exactly() {
        for f in [F8::E4M3Fn, F8::E5M2, F8::E4M3FnUz, F8::E5M2FnUz] {
            let bytes: Vec<u8> = (0..=255).collect();
            let wide = f.widen_to_bf16(&bytes);
            for (&b, w) in bytes.iter().zip(&wide) {
                let v = f.decode(b);
                if v.is_finite() {
                    assert_eq!(w.to_f32(), v, "{f:?} {b:#04x}");
                }
            }
        }
        assert_eq!(F8::E4M3Fn.count_non_finite(&[0x7f, 0x00, 0xff]), 2);
        assert_eq!(F8::E5M2.count_non_finite(&[0x7c, 0x7b, 0x7e]), 2);
    }
}
