//! CRC-64/GO-ISO (Go's `hash/crc64` with the ISO table): carry-less multiplication folding
//! (`crc-fast`, CPU features detected at run time) for long inputs, slicing-by-8 for short ones.

const POLY: u64 = 0xD800_0000_0000_0000;

const fn make_tables() -> [[u64; 256]; 8] {
    let mut t = [[0u64; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut j = 0;
        while j < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            j += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut crc = t[0][i];
        let mut k = 1;
        while k < 8 {
            crc = t[0][(crc & 0xff) as usize] ^ (crc >> 8);
            t[k][i] = crc;
            k += 1;
        }
        i += 1;
    }
    t
}

static TABLES: [[u64; 256]; 8] = make_tables();

/// Below this length the table is faster than setting up the SIMD path.
const SIMD_MIN: usize = 256;

/// Updates a CRC-64/GO-ISO value with `data` (start with 0, like Go's `crc64.Update`).
pub fn crc64_update(crc: u64, data: &[u8]) -> u64 {
    if data.len() < SIMD_MIN {
        return table_update(crc, data);
    }
    // The register holds the complemented value (init and xorout are all ones).
    let mut d = crc_fast::Digest::new_with_init_state(crc_fast::CrcAlgorithm::Crc64GoIso, !crc);
    d.update(data);
    d.finalize()
}

/// Slicing-by-8 update.
fn table_update(crc: u64, data: &[u8]) -> u64 {
    let t = &TABLES;
    let mut crc = !crc;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = crc ^ u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        crc = t[7][(v & 0xff) as usize]
            ^ t[6][((v >> 8) & 0xff) as usize]
            ^ t[5][((v >> 16) & 0xff) as usize]
            ^ t[4][((v >> 24) & 0xff) as usize]
            ^ t[3][((v >> 32) & 0xff) as usize]
            ^ t[2][((v >> 40) & 0xff) as usize]
            ^ t[1][((v >> 48) & 0xff) as usize]
            ^ t[0][(v >> 56) as usize];
    }
    for &b in chunks.remainder() {
        crc = t[0][((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// CRC-64/GO-ISO of `data`: polynomial 0x1B reflected, init and xorout all ones.
///
/// ```
/// assert_eq!(storage_tarsplit::crc64_iso(b"123456789"), 0xB909_56C7_75A4_1001);
/// ```
pub fn crc64_iso(data: &[u8]) -> u64 {
    crc64_update(0, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitwise(data: &[u8]) -> u64 {
        let mut crc = !0u64;
        for &b in data {
            crc ^= u64::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn check_values() {
        assert_eq!(crc64_iso(b"123456789"), 0xB909_56C7_75A4_1001);
        assert_eq!(crc64_iso(b"c"), 0x3740_0000_0000_0000);
        assert_eq!(crc64_iso(b""), 0);
    }

    #[test]
    fn slicing_matches_bitwise_and_incremental() {
        let data: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 1000, 5000] {
            assert_eq!(crc64_iso(&data[..len]), bitwise(&data[..len]), "len {len}");
        }
        let (a, b) = data.split_at(1234);
        assert_eq!(crc64_update(crc64_update(0, a), b), crc64_iso(&data));
    }

    #[test]
    fn simd_path_matches_the_table_at_every_split() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        for len in [255, 256, 257, 1000, 4096, 65_537, 300_000] {
            assert_eq!(
                crc64_iso(&data[..len]),
                table_update(0, &data[..len]),
                "len {len}"
            );
        }
        assert_eq!(crc64_iso(&data[..1000]), bitwise(&data[..1000]));
        for split in [1, 255, 256, 4097, 100_003] {
            let (a, b) = data.split_at(split);
            assert_eq!(
                crc64_update(crc64_update(0, a), b),
                table_update(0, &data),
                "split {split}"
            );
        }
        assert_eq!(crc64_iso(&[b'1'; 1024]), table_update(0, &[b'1'; 1024]));
    }
}
