//! `weight.bin`: Core ML's blob storage file (MILBlob, version 2).
//!
//! A 64-byte header (`u32` blob count, `u32` version 2), then for each blob
//! a 64-byte metadata record (`u32` sentinel `0xDEADBEEF`, `u32` data type,
//! `u64` byte size, `u64` data offset) and the raw little-endian data, each
//! starting on a 64-byte boundary. A `BlobFileValue` points at the metadata
//! record's offset. Layout checked against coremltools' own writer.

use std::io::{self, Seek, SeekFrom, Write};

const ALIGN: u64 = 64;
const SENTINEL: u32 = 0xDEAD_BEEF;
const VERSION: u32 = 2;

/// Data type codes of blob metadata records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobType {
    F16 = 1,
    F32 = 2,
}

pub struct BlobWriter<W: Write + Seek> {
    out: W,
    /// Bytes written so far (the offset of the next write).
    len: u64,
    count: u32,
}

impl<W: Write + Seek> BlobWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&header(0))?;
        Ok(BlobWriter { out, len: ALIGN, count: 0 })
    }

    /// Appends one blob; returns the offset to put in its `BlobFileValue`.
    pub fn add(&mut self, ty: BlobType, data: &[u8]) -> io::Result<u64> {
        self.pad()?;
        let meta_at = self.len;
        let mut meta = [0u8; ALIGN as usize];
        meta[0..4].copy_from_slice(&SENTINEL.to_le_bytes());
        meta[4..8].copy_from_slice(&(ty as u32).to_le_bytes());
        meta[8..16].copy_from_slice(&(data.len() as u64).to_le_bytes());
        meta[16..24].copy_from_slice(&(meta_at + ALIGN).to_le_bytes());
        self.out.write_all(&meta)?;
        self.out.write_all(data)?;
        self.len += ALIGN + data.len() as u64;
        self.count += 1;
        Ok(meta_at)
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = self.len % ALIGN;
        if rem != 0 {
            let n = ALIGN - rem;
            self.out.write_all(&vec![0u8; n as usize])?;
            self.len += n;
        }
        Ok(())
    }

    /// Writes the blob count into the header; returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&header(self.count))?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn header(count: u32) -> [u8; ALIGN as usize] {
    let mut h = [0u8; ALIGN as usize];
    h[0..4].copy_from_slice(&count.to_le_bytes());
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes coremltools' `_BlobStorageWriter` writes for
    /// `write_float_data([1,2,3])` then `write_fp16_data([1,2])`.
    #[test]
    fn matches_coremltools_layout() {
        let mut w = BlobWriter::new(io::Cursor::new(Vec::new())).unwrap();
        let f: Vec<u8> = [1f32, 2., 3.].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(w.add(BlobType::F32, &f).unwrap(), 64);
        assert_eq!(w.add(BlobType::F16, &[0x00, 0x3c, 0x00, 0x40]).unwrap(), 192);
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(bytes.len(), 260);
        assert_eq!(&bytes[0..8], &[2, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(
            &bytes[64..88],
            &[0xef, 0xbe, 0xad, 0xde, 2, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&bytes[128..140], &f[..]);
        assert_eq!(
            &bytes[192..216],
            &[0xef, 0xbe, 0xad, 0xde, 1, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&bytes[256..260], &[0x00, 0x3c, 0x00, 0x40]);
    }
}
