//! Builds minimal PE32+ images for tests: enough for `object` to parse and systemd-boot's rules
//! to apply (sections with raw data, no code that runs).

const FILE_ALIGNMENT: usize = 0x200;
const HEADERS_SIZE: usize = 0x400;
const SECTION_ALIGNMENT: u32 = 0x1000;

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A PE32+ EFI application with the given sections (names up to 8 bytes).
pub(crate) fn pe_with_sections(sections: &[(&str, &[u8])]) -> Vec<u8> {
    assert!(sections.len() <= 8, "headers hold at most 8 sections here");
    let raw_sizes: Vec<usize> = sections
        .iter()
        .map(|(_, d)| d.len().div_ceil(FILE_ALIGNMENT) * FILE_ALIGNMENT)
        .collect();
    let total = HEADERS_SIZE + raw_sizes.iter().sum::<usize>();
    let mut buf = vec![0u8; total];

    buf[0..2].copy_from_slice(b"MZ");
    put_u32(&mut buf, 0x3c, 0x40);
    buf[0x40..0x44].copy_from_slice(b"PE\0\0");
    let coff = 0x44;
    put_u16(&mut buf, coff, 0x8664);
    put_u16(&mut buf, coff + 2, sections.len() as u16);
    put_u16(&mut buf, coff + 16, 240);
    put_u16(&mut buf, coff + 18, 0x0022);

    let opt = coff + 20;
    let image_size = SECTION_ALIGNMENT * (sections.len() as u32 + 1);
    put_u16(&mut buf, opt, 0x20b);
    put_u32(&mut buf, opt + 16, SECTION_ALIGNMENT);
    put_u64(&mut buf, opt + 24, 0x1_0000_0000);
    put_u32(&mut buf, opt + 32, SECTION_ALIGNMENT);
    put_u32(&mut buf, opt + 36, FILE_ALIGNMENT as u32);
    put_u32(&mut buf, opt + 56, image_size);
    put_u32(&mut buf, opt + 60, HEADERS_SIZE as u32);
    put_u16(&mut buf, opt + 68, 10); // EFI application
    put_u32(&mut buf, opt + 108, 16);

    let mut sh = opt + 240;
    let mut raw = HEADERS_SIZE;
    for (i, ((name, data), raw_size)) in sections.iter().zip(&raw_sizes).enumerate() {
        assert!(name.len() <= 8);
        buf[sh..sh + name.len()].copy_from_slice(name.as_bytes());
        put_u32(&mut buf, sh + 8, data.len() as u32);
        put_u32(&mut buf, sh + 12, SECTION_ALIGNMENT * (i as u32 + 1));
        put_u32(&mut buf, sh + 16, *raw_size as u32);
        put_u32(&mut buf, sh + 20, raw as u32);
        put_u32(&mut buf, sh + 36, 0x4000_0040); // initialized data, readable
        buf[raw..raw + data.len()].copy_from_slice(data);
        sh += 40;
        raw += raw_size;
    }
    buf
}

/// A UKI-shaped PE: a code section plus `.osrel`.
pub(crate) fn uki(osrel: &str) -> Vec<u8> {
    pe_with_sections(&[(".text", &[0xC3; 16]), (".osrel", osrel.as_bytes())])
}

/// The `.osrel` our image builder is expected to embed (no ID/IMAGE_ID: old-style ordering by
/// file name, which the generation controls).
pub(crate) const PLAIN_OSREL: &str =
    "NAME=\"Metanode\"\nPRETTY_NAME=\"Metanode appliance\"\nVERSION=\"0.1.0\"\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uki::osrel_from_bytes;

    #[test]
    fn built_pe_parses_and_carries_osrel() {
        let image = uki(PLAIN_OSREL);
        let o = osrel_from_bytes(&image, "test").unwrap().unwrap();
        assert_eq!(o.title(), Some("Metanode appliance"));
        assert_eq!(o.version(), Some("0.1.0"));
        let no_osrel = pe_with_sections(&[(".text", &[0xC3; 4])]);
        assert_eq!(osrel_from_bytes(&no_osrel, "test").unwrap(), None);
    }
}
