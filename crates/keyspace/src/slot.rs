//! Key → slot: CRC16 (XMODEM, polynomial 0x1021) of the key or of its `{hash tag}`, modulo 16384, as
//! Redis Cluster defines it. Every key lives in a slot even outside cluster mode, because the keyspace
//! is stored per slot (slot digests, slot listings and resharding all need it).

/// Number of hash slots.
pub const SLOTS: usize = 16384;

/// `TABLES[k][x]`: the CRC16 state after byte `x` followed by `k` zero bytes, from state 0. The
/// CRC is linear, so four bytes at once are four independent lookups (slicing by 4) instead of a
/// chain of four: every command hashes its key here.
const fn crc16_tables() -> [[u16; 256]; 4] {
    let mut t = [[0u16; 256]; 4];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut j = 0;
        while j < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            j += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 4 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev << 8) ^ t[0][(prev >> 8) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

static CRC16_TABLES: [[u16; 256]; 4] = crc16_tables();

/// CRC16-XMODEM: four bytes per step, the tail byte by byte.
pub fn crc16(bytes: &[u8]) -> u16 {
    let t = &CRC16_TABLES;
    let mut crc: u16 = 0;
    let mut chunks = bytes.chunks_exact(4);
    for c in &mut chunks {
        let (hi, lo) = ((crc >> 8) as u8, crc as u8);
        crc = t[3][(hi ^ c[0]) as usize]
            ^ t[2][(lo ^ c[1]) as usize]
            ^ t[1][c[2] as usize]
            ^ t[0][c[3] as usize];
    }
    crc16_bytewise(crc, chunks.remainder())
}

/// Continues a CRC16 byte by byte (the definition [`crc16`] is checked against).
pub fn crc16_bytewise(crc: u16, bytes: &[u8]) -> u16 {
    bytes.iter().fold(crc, |crc, &b| {
        (crc << 8) ^ CRC16_TABLES[0][(((crc >> 8) as u8) ^ b) as usize]
    })
}

/// The part of the key that is hashed: the content of the first `{...}` if it is non-empty.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The slot of a key.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOTS as u16 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_cluster_spec() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 16383);
        assert_eq!(key_slot(b"foo{{bar}}zap"), crc16(b"{bar") & 16383);
        // Slicing by 4 equals the byte-at-a-time definition at every length.
        let data: Vec<u8> = (0..64u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        for len in 0..=data.len() {
            assert_eq!(
                crc16(&data[..len]),
                crc16_bytewise(0, &data[..len]),
                "len {len}"
            );
        }
    }
}
