//! A minimal streaming tar writer that puts names into headers verbatim.
//!
//! Why not `tar::Builder`: its path setters validate names (they refuse
//! `../escape` and strip `/abs`), and it has no PAX writer, while layer tests
//! need hostile names byte for byte and xattrs as `SCHILY.xattr.*` PAX
//! records. So we only borrow `tar::Header` for encoding the numeric fields
//! and write names, PAX extended headers, data and padding ourselves.
//!
//! Format: POSIX ustar headers. Names or link targets longer than the 100
//! bytes a ustar header holds go into PAX `path`/`linkpath` records (what Go's
//! `archive/tar` and GNU tar do), the header keeping a truncated copy.

use std::io::{self, Read, Write};

use tar::EntryType;

/// mtime written into every header. Fixed so that the same spec always gives
/// the same blob digests; not 0 only so extracted files don't look like 1970.
pub(crate) const MTIME: u64 = 1_700_000_000;

const BLOCK: usize = 512;
const NAME_FIELD: usize = 100;

/// What one tar entry's header says (the data is passed separately).
pub(crate) struct EntryHeader<'a> {
    pub name: &'a [u8],
    pub kind: EntryType,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub link: Option<&'a [u8]>,
    pub device: Option<(u32, u32)>,
    pub xattrs: &'a [(String, Vec<u8>)],
}

impl<'a> EntryHeader<'a> {
    /// A header with everything but the name defaulted: an empty regular
    /// file owned by root, mode 0644.
    pub fn new(name: &'a [u8], kind: EntryType) -> Self {
        EntryHeader {
            name,
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            link: None,
            device: None,
            xattrs: &[],
        }
    }
}

pub(crate) struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    /// Appends one entry, reading exactly `header.size` bytes from `data`.
    pub fn append(&mut self, header: &EntryHeader<'_>, data: &mut dyn Read) -> io::Result<()> {
        let mut pax = Vec::new();
        if header.name.len() > NAME_FIELD {
            pax_record(&mut pax, "path", header.name);
        }
        if let Some(link) = header.link
            && link.len() > NAME_FIELD
        {
            pax_record(&mut pax, "linkpath", link);
        }
        for (name, value) in header.xattrs {
            pax_record(&mut pax, &format!("SCHILY.xattr.{name}"), value);
        }
        if !pax.is_empty() {
            // The PAX header's own name is informational only; readers use
            // the records to amend the *next* header.
            let mut ph = EntryHeader::new(b"PaxHeader", EntryType::XHeader);
            ph.size = pax.len() as u64;
            self.write_header(&ph)?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }

        self.write_header(header)?;
        let copied = io::copy(&mut data.take(header.size), &mut self.out)?;
        if copied != header.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "entry {:?}: header says {} bytes, data had {copied}",
                    String::from_utf8_lossy(header.name),
                    header.size
                ),
            ));
        }
        self.pad(header.size)
    }

    /// Writes the two zero blocks that end an archive and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn write_header(&mut self, h: &EntryHeader<'_>) -> io::Result<()> {
        let mut th = tar::Header::new_ustar();
        th.set_entry_type(h.kind);
        th.set_mode(h.mode);
        th.set_uid(u64::from(h.uid));
        th.set_gid(u64::from(h.gid));
        th.set_mtime(MTIME);
        th.set_size(h.size);
        if let Some((major, minor)) = h.device {
            th.set_device_major(major)?;
            th.set_device_minor(minor)?;
        }
        // Verbatim copies (truncated when too long; the PAX record then has
        // the full value). This is the point of writing our own headers.
        let old = th.as_old_mut();
        copy_truncated(&mut old.name, h.name);
        if let Some(link) = h.link {
            copy_truncated(&mut old.linkname, link);
        }
        th.set_cksum();
        self.out.write_all(th.as_bytes())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }
}

fn copy_truncated(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Appends one PAX record, `"<len> <key>=<value>\n"`, where `<len>` counts
/// the whole record including its own digits.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1; // ' ' key '=' value '\n'
    let mut len = rest + 1;
    // Adding digits can add a digit (e.g. 98 -> 101); iterate to a fixpoint.
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        for value_len in 0..300 {
            let mut out = Vec::new();
            pax_record(&mut out, "path", &vec![b'a'; value_len]);
            let text = String::from_utf8(out.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), out.len(), "{text:?}");
        }
    }

    #[test]
    fn hostile_names_survive_verbatim() {
        let mut w = TarWriter::new(Vec::new());
        let mut h = EntryHeader::new(b"../escape", EntryType::Regular);
        h.size = 2;
        w.append(&h, &mut &b"hi"[..]).unwrap();
        let bytes = w.finish().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(&*entry.path_bytes(), b"../escape");
    }
}
