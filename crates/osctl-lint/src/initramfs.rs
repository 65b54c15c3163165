//! Looking for one file inside an initramfs, as the kernel unpacks it.
//!
//! An initramfs is a sequence of parts separated by zero padding: `newc`
//! cpio archives, and compressed parts that each unpack to cpio archives.
//! Debian's initramfs-tools writes an uncompressed early archive (CPU
//! microcode) then a compressed main one; dracut does the same. The kernel
//! unpacks every part in order, a compressed one up to the end of its
//! stream, then goes on with what follows; what a compressed part unpacks to
//! must be cpio (the kernel does not decompress twice). This does the same,
//! streaming (nothing is written or kept), until it finds the name. The
//! cpio and decompression formats come from maintained crates (`cpio`,
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

/// A newc header: magic, then 13 fields of 8 hex digits.
const HEADER_LEN: usize = 110;
/// Where the header's name size (`c_namesize`) is.
const NAMESIZE_AT: usize = 94;
/// Longest name accepted (the kernel's PATH_MAX): the header's name size
/// is the archive's word, and the cpio crate allocates what it says.
const MAX_NAME: usize = 4096;

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

/// Whether the initramfs read from `reader` holds a file named `name`
/// (relative, e.g. `usr/lib/osctl/osctl-root-setup`).
pub fn contains(reader: impl Read, name: &str) -> io::Result<Contains> {
    scan(&mut BufReader::new(reader), name, true)
}

/// Scans parts until the end of `reader`; compressed parts only when
/// `outer` (inside one, the kernel accepts cpio only).
/// (Dynamic dispatch: a generic reader would nest decoder types without
/// end, one level per compressed part.)
fn scan(reader: &mut dyn BufRead, name: &str, outer: bool) -> io::Result<Contains> {
    loop {
        if !skip_zeros(reader)? {
            return Ok(Contains::No);
        }
        let head = reader.fill_buf()?;
        if head.starts_with(CPIO_MAGIC) {
            if scan_archive(reader, name)? {
                return Ok(Contains::Yes);
            }
            continue;
        }
        let format = FORMATS
            .iter()
            .find(|(magic, _)| head.starts_with(magic))
            .map(|(_, format)| *format);
        let Some(format) = format else {
            return Err(invalid("neither a cpio archive nor a compressed one"));
        };
        if !outer {
            return Err(invalid(
                "a compressed part inside a compressed part (the kernel unpacks one level)",
            ));
        }
        // Each decoder reads one stream and leaves what follows it in
        // `reader`, where the loop goes on.
        let found = match format {
            "gzip" => scan_inner(flate2::bufread::GzDecoder::new(&mut *reader), name)?,
            "zstd" => scan_inner(
                zstd::stream::read::Decoder::with_buffer(&mut *reader)?.single_frame(),
                name,
            )?,
            "xz" => scan_inner(liblzma::bufread::XzDecoder::new(&mut *reader), name)?,
            other => return Ok(Contains::Unreadable(other)),
        };
        if found == Contains::Yes {
            return Ok(found);
        }
    }
}

/// Scans what one compressed stream unpacks to, to its end.
fn scan_inner(decoder: impl Read, name: &str) -> io::Result<Contains> {
    let mut inner = BufReader::new(decoder);
    let found = scan(&mut inner, name, false)?;
    if found == Contains::No {
        // Padding after the last archive: read to the stream's end, so the
        // outer reader stands after it.
        io::copy(&mut inner, &mut io::sink())?;
    }
    Ok(found)
}

/// Skips zero padding; `false` at the end of the input.
fn skip_zeros(reader: &mut dyn BufRead) -> io::Result<bool> {
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
fn scan_archive(reader: &mut dyn BufRead, name: &str) -> io::Result<bool> {
    loop {
        let mut header = [0u8; HEADER_LEN];
        reader.read_exact(&mut header).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                invalid("a cpio archive ends in the middle of a header")
            }
            _ => e,
        })?;
        let namesize = std::str::from_utf8(&header[NAMESIZE_AT..NAMESIZE_AT + 8])
            .ok()
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            .ok_or_else(|| invalid("a cpio header with a bad name size"))?;
        if namesize > MAX_NAME + 1 {
            return Err(invalid("a cpio entry name longer than 4096 bytes"));
        }
        let entry = cpio::NewcReader::new(io::Cursor::new(header).chain(&mut *reader))?;
        let trailer = entry.entry().is_trailer();
        let found = entry
            .entry()
            .name()
            .trim_start_matches("./")
            .trim_start_matches('/')
            == name;
        entry.finish()?;
        if trailer {
            return Ok(false);
        }
        if found {
            return Ok(true);
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
        let cases: [(&str, Vec<u8>, Contains); 11] = [
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
            // The kernel goes on after a compressed part.
            (
                "gzip + plain",
                [gzip(&without), main.clone()].concat(),
                Contains::Yes,
            ),
            (
                "gzip + zstd",
                [gzip(&without), zstd::encode_all(&main[..], 1).unwrap()].concat(),
                Contains::Yes,
            ),
            ("gzip + padding", padded(&gzip(&without), &[]), Contains::No),
        ];
        for (what, bytes, want) in cases {
            assert_eq!(contains(&bytes[..], WANT).unwrap(), want, "{what}");
        }
    }

    #[test]
    fn refuses_what_the_kernel_would_not_unpack() {
        let main = archive(&[WANT]);
        // A name size of 512 MiB: refused from the header, not allocated.
        let mut bomb = archive(&["x"]);
        bomb[94..102].copy_from_slice(b"20000000");
        let cases: [(&str, Vec<u8>, &str); 4] = [
            (
                "a PE file",
                b"MZ\x90\x00 a PE file".to_vec(),
                "neither a cpio archive nor a compressed one",
            ),
            (
                "gzip inside gzip",
                gzip(&gzip(&main)),
                "a compressed part inside a compressed part (the kernel unpacks one level)",
            ),
            (
                "name bomb",
                bomb,
                "a cpio entry name longer than 4096 bytes",
            ),
            (
                "cut header",
                main[..50].to_vec(),
                "a cpio archive ends in the middle of a header",
            ),
        ];
        for (what, bytes, want) in cases {
            let e = contains(&bytes[..], WANT).unwrap_err();
            assert_eq!(e.to_string(), want, "{what}");
        }
    }
}
