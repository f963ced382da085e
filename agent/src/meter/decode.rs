//! Raw Modbus registers → numbers, for every [`DataType`] and [`WordOrder`].
//!
//! Registers arrive as 16-bit words in address order. For a 32-bit value the
//! word order names where the value's big-endian bytes `A B C D` sit in those
//! words: `abcd` = `[AB, CD]` (big-endian, the Modbus norm), `cdab` =
//! `[CD, AB]` (word-swapped), `badc` = `[BA, DC]` (bytes swapped inside each
//! word), `dcba` = `[DC, BA]` (little-endian). For 16-bit types only the byte
//! swap matters: `badc` and `dcba` read a word as `BA`.

use crate::config::{DataType, Register, WordOrder};

/// Why registers could not be turned into a number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("expected {expected} register(s) for {data_type:?}, got {got}")]
    WrongLength {
        data_type: DataType,
        expected: usize,
        got: usize,
    },
    #[error(
        "the float32 bits {bits:#010x} are not a finite number (meter not ready, or wrong word order?)"
    )]
    NotFinite { bits: u32 },
}

/// How many registers one value of this type spans.
pub fn register_count(data_type: DataType) -> u16 {
    match data_type {
        DataType::U16 | DataType::I16 => 1,
        DataType::U32 | DataType::I32 | DataType::F32 => 2,
    }
}

/// Decodes `words` (exactly [`register_count`] of them) and applies `register.scale`.
pub fn decode(register: &Register, words: &[u16]) -> Result<f64, DecodeError> {
    let expected = usize::from(register_count(register.data_type));
    if words.len() != expected {
        return Err(DecodeError::WrongLength {
            data_type: register.data_type,
            expected,
            got: words.len(),
        });
    }
    let raw = match register.data_type {
        DataType::U16 => f64::from(word16(words[0], register.word_order)),
        DataType::I16 => f64::from(word16(words[0], register.word_order) as i16),
        DataType::U32 => f64::from(bits32(words, register.word_order)),
        DataType::I32 => f64::from(bits32(words, register.word_order) as i32),
        DataType::F32 => {
            let bits = bits32(words, register.word_order);
            let value = f32::from_bits(bits);
            if !value.is_finite() {
                return Err(DecodeError::NotFinite { bits });
            }
            f64::from(value)
        }
    };
    Ok(raw * register.scale)
}

fn word16(word: u16, order: WordOrder) -> u16 {
    match order {
        WordOrder::Abcd | WordOrder::Cdab => word,
        WordOrder::Badc | WordOrder::Dcba => word.swap_bytes(),
    }
}

/// The value's bits, `A B C D` from most to least significant byte.
fn bits32(words: &[u16], order: WordOrder) -> u32 {
    let [b0, b1] = words[0].to_be_bytes();
    let [b2, b3] = words[1].to_be_bytes();
    let bytes = match order {
        WordOrder::Abcd => [b0, b1, b2, b3],
        WordOrder::Cdab => [b2, b3, b0, b1],
        WordOrder::Badc => [b1, b0, b3, b2],
        WordOrder::Dcba => [b3, b2, b1, b0],
    };
    u32::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RegisterKind;

    fn reg(data_type: DataType, word_order: WordOrder, scale: f64) -> Register {
        Register {
            kind: RegisterKind::Input,
            address: 0,
            data_type,
            word_order,
            scale,
        }
    }

    fn f32_reg(order: WordOrder) -> Register {
        reg(DataType::F32, order, 1.0)
    }

    // 230.5 = 0x4366_8000: sign 0, exponent 134 (2^7), mantissa 1.80078125.
    #[test]
    fn f32_abcd_is_big_endian() {
        assert_eq!(
            decode(&f32_reg(WordOrder::Abcd), &[0x4366, 0x8000]),
            Ok(230.5)
        );
    }

    #[test]
    fn f32_cdab_swaps_the_words() {
        assert_eq!(
            decode(&f32_reg(WordOrder::Cdab), &[0x8000, 0x4366]),
            Ok(230.5)
        );
    }

    #[test]
    fn f32_badc_swaps_bytes_inside_each_word() {
        assert_eq!(
            decode(&f32_reg(WordOrder::Badc), &[0x6643, 0x0080]),
            Ok(230.5)
        );
    }

    #[test]
    fn f32_dcba_is_little_endian() {
        assert_eq!(
            decode(&f32_reg(WordOrder::Dcba), &[0x0080, 0x6643]),
            Ok(230.5)
        );
    }

    #[test]
    fn the_word_orders_really_differ() {
        // The big-endian words read as CDAB are 0x8000_4366, a tiny negative number.
        let swapped = decode(&f32_reg(WordOrder::Cdab), &[0x4366, 0x8000]).unwrap();
        assert!(swapped < 0.0 && swapped > -1e-30, "{swapped}");
    }

    #[test]
    fn f32_negative_and_scaled() {
        // -1.0 = 0xBF80_0000; a DDSU666 reports kW, scaled by 1000 to W.
        assert_eq!(
            decode(
                &reg(DataType::F32, WordOrder::Abcd, 1000.0),
                &[0xBF80, 0x0000]
            ),
            Ok(-1000.0)
        );
        // 1.5 = 0x3FC0_0000
        assert_eq!(
            decode(
                &reg(DataType::F32, WordOrder::Abcd, 1000.0),
                &[0x3FC0, 0x0000]
            ),
            Ok(1500.0)
        );
    }

    #[test]
    fn f32_nan_and_infinity_are_errors() {
        let r = f32_reg(WordOrder::Abcd);
        assert_eq!(
            decode(&r, &[0x7FC0, 0x0000]),
            Err(DecodeError::NotFinite { bits: 0x7FC0_0000 })
        );
        assert_eq!(
            decode(&r, &[0x7F80, 0x0000]),
            Err(DecodeError::NotFinite { bits: 0x7F80_0000 })
        );
        assert_eq!(
            decode(&r, &[0xFF80, 0x0000]),
            Err(DecodeError::NotFinite { bits: 0xFF80_0000 })
        );
    }

    #[test]
    fn u32_in_every_word_order() {
        // 0x1234_5678 = 305419896
        for (order, words) in [
            (WordOrder::Abcd, [0x1234, 0x5678]),
            (WordOrder::Cdab, [0x5678, 0x1234]),
            (WordOrder::Badc, [0x3412, 0x7856]),
            (WordOrder::Dcba, [0x7856, 0x3412]),
        ] {
            assert_eq!(
                decode(&reg(DataType::U32, order, 1.0), &words),
                Ok(305_419_896.0),
                "{order:?}"
            );
        }
    }

    #[test]
    fn i32_in_every_word_order() {
        // -100000 = 0xFFFE_7960
        for (order, words) in [
            (WordOrder::Abcd, [0xFFFE, 0x7960]),
            (WordOrder::Cdab, [0x7960, 0xFFFE]),
            (WordOrder::Badc, [0xFEFF, 0x6079]),
            (WordOrder::Dcba, [0x6079, 0xFEFF]),
        ] {
            assert_eq!(
                decode(&reg(DataType::I32, order, 1.0), &words),
                Ok(-100_000.0),
                "{order:?}"
            );
        }
    }

    #[test]
    fn u32_above_i32_max_stays_positive() {
        assert_eq!(
            decode(&reg(DataType::U32, WordOrder::Abcd, 1.0), &[0xFFFF, 0xFFFE]),
            Ok(4_294_967_294.0)
        );
    }

    #[test]
    fn u16_and_i16_with_and_without_byte_swap() {
        // 0xFF38 = 65336 unsigned, -200 signed.
        assert_eq!(
            decode(&reg(DataType::U16, WordOrder::Abcd, 1.0), &[0xFF38]),
            Ok(65336.0)
        );
        assert_eq!(
            decode(&reg(DataType::I16, WordOrder::Abcd, 1.0), &[0xFF38]),
            Ok(-200.0)
        );
        assert_eq!(
            decode(&reg(DataType::I16, WordOrder::Cdab, 1.0), &[0xFF38]),
            Ok(-200.0)
        );
        assert_eq!(
            decode(&reg(DataType::I16, WordOrder::Badc, 1.0), &[0x38FF]),
            Ok(-200.0)
        );
        assert_eq!(
            decode(&reg(DataType::U16, WordOrder::Dcba, 1.0), &[0x38FF]),
            Ok(65336.0)
        );
    }

    #[test]
    fn scale_applies_to_integers() {
        // 2301 × 0.1 V
        let v = decode(&reg(DataType::U16, WordOrder::Abcd, 0.1), &[2301]).unwrap();
        assert!((v - 230.1).abs() < 1e-9, "{v}");
    }

    #[test]
    fn the_wrong_number_of_registers_is_an_error() {
        assert_eq!(
            decode(&f32_reg(WordOrder::Abcd), &[0x4366]),
            Err(DecodeError::WrongLength {
                data_type: DataType::F32,
                expected: 2,
                got: 1
            })
        );
        assert!(decode(&reg(DataType::U16, WordOrder::Abcd, 1.0), &[1, 2]).is_err());
    }

    #[test]
    fn register_counts() {
        assert_eq!(register_count(DataType::U16), 1);
        assert_eq!(register_count(DataType::I16), 1);
        assert_eq!(register_count(DataType::U32), 2);
        assert_eq!(register_count(DataType::I32), 2);
        assert_eq!(register_count(DataType::F32), 2);
    }
}
