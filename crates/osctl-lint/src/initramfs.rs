//! Looking for one file inside an initramfs, as the kernel unpacks it.
//!
//! An initramfs is a sequence of `newc` cpio archives, each optionally
//! compressed, separated by zero padding: Debian's initramfs-tools writes an
//! uncompressed early archive (CPU microcode) followed by a compressed main
//! one; dracut does the same. The kernel unpacks them all in order; so does
//! this, streaming (nothing is written or kept), until it finds the name.
//! The cpio and decompression formats come from maintained crates (`cpio`,
//! `flate2`, `zstd`, `liblzma`); only the sequence is walked here.

use std::io::{self, BufRead, BufReader, Read};

/// Whether the initramfs holds the file.
#[derive(Debug, PartialEq, Eq)]
pub enum Contains {
    Yes,
    No,
    /// A part is compressed in a format this cannot read (its name).
    Unreadable(&'static str),
}

/// Compression formats the kernel may unpack, by their magic bytes.
const FORMATS: [(&[u8], &str); 7] = [
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x89LZO", "lzo"),
    (b"BZh", "bzip2"),
    (b"\x5d\x00\x00", "lzma"),
];

/// The cpio `newc` magic (`070701`; `070702` carries checksums).
const CPIO_MAGIC: &[u8] = b"07070";

/// A compressed part inside a compressed part is not something initramfs
/// builders write; stop there rather than recurse on hostile input.
const MAX_NESTING: u32 = 2;

/// Whether the initramfs read from `reader` holds a file named `name`
/// (relative, e.g. `usr/lib/osctl/osctl-root-setup`).
pub fn contains(reader: impl Read, name: &str) -> io::Result<Contains> {
    scan(BufReader::new(reader), name, 0)
}

fn scan<R: BufRead>(mut reader: R, name: &str, nesting: u32) -> io::Result<Contains> {
    loop {
        if !skip_zeros(&mut reader)? {
            return Ok(Contains::No);
        }
        let head = reader.fill_buf()?;
        if head.starts_with(CPIO_MAGIC) {
            let (rest, found) = scan_archive(reader, name)?;
            if found {
                return Ok(Contains::Yes);
            }
            reader = rest;
            continue;
        }
        let format = FORMATS
            .iter()
            .find(|(magic, _)| head.starts_with(magic))
            .map(|(_, format)| *format);
        let Some(format) = format else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "neither a cpio archive nor a compressed one",
            ));
        };
        if nesting >= MAX_NESTING {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "compressed parts nested too deep",
            ));
        }
        // A compressed part runs to the end of the file (the kernel reads
        // it so too): what it unpacks to is scanned in turn.
        let inner: Box<dyn Read> = match format {
            "gzip" => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
            "zstd" => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
            "xz" => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(reader)),
            other => return Ok(Contains::Unreadable(other)),
        };
        return scan(BufReader::new(inner), name, nesting + 1);
    }
}

/// Skips zero padding; `false` at the end of the input.
fn skip_zeros<R: BufRead>(reader: &mut R) -> io::Result<bool> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        let zeros = buf.iter().take_while(|b| **b == 0).count();
        let more = zeros < buf.len();
        reader.consume(zeros);
        if more {
            return Ok(true);
        }
    }
}

/// Reads one cpio archive up to its trailer; whether `name` was in it.
fn scan_archive<R: BufRead>(mut reader: R, name: &str) -> io::Result<(R, bool)> {
    loop {
        let entry = cpio::NewcReader::new(reader)?;
        if entry.entry().is_trailer() {
            return Ok((entry.finish()?, false));
        }
        let found = entry
            .entry()
            .name()
            .trim_start_matches("./")
            .trim_start_matches('/')
            == name;
        reader = entry.finish()?;
        if found {
            return Ok((reader, true));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use super::*;

    /// A newc archive with one empty file per name.
    fn archive(names: &[&str]) -> Vec<u8> {
        let inputs = names.iter().map(|n| {
            (
                cpio::NewcBuilder::new(n).mode(0o100755),
                Cursor::new(b"x".to_vec()),
            )
        });
        cpio::write_cpio(inputs, Vec::new()).unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    const WANT: &str = "usr/lib/osctl/osctl-root-setup";

    #[test]
    fn finds_the_file_in_every_layout_the_builders_write() {
        let early = archive(&["kernel/x86/microcode/GenuineIntel.bin"]);
        let main = archive(&["usr", "./usr/lib/osctl/osctl-root-setup", "init"]);
        let without = archive(&["usr", "init"]);
        let padded = |a: &[u8], b: &[u8]| [a, &[0u8; 512], b].concat();
        let cases: [(&str, Vec<u8>, Contains); 8] = [
            ("plain", main.clone(), Contains::Yes),
            ("plain, absent", without.clone(), Contains::No),
            ("gzip", gzip(&main), Contains::Yes),
            (
                "zstd",
                zstd::encode_all(&main[..], 1).unwrap(),
                Contains::Yes,
            ),
            (
                "xz",
                {
                    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                    e.write_all(&main).unwrap();
                    e.finish().unwrap()
                },
                Contains::Yes,
            ),
            ("early + gzip", padded(&early, &gzip(&main)), Contains::Yes),
            (
                "early + gzip, absent",
                padded(&early, &gzip(&without)),
                Contains::No,
            ),
            (
                "early + lz4",
                padded(&early, b"\x02\x21\x4c\x18rest"),
                Contains::Unreadable("lz4"),
            ),
        ];
        for (what, bytes, want) in cases {
            assert_eq!(contains(&bytes[..], WANT).unwrap(), want, "{what}");
        }
    }

    #[test]
    fn refuses_what_is_not_an_initramfs() {
        let e = contains(&b"MZ\x90\x00 a PE file"[..], WANT).unwrap_err();
        assert_eq!(e.to_string(), "neither a cpio archive nor a compressed one");
    }
}
