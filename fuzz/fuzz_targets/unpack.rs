//! Feeds arbitrary bytes to the layer unpacker (overlay whiteouts) in a fresh directory;
//! it must never panic, and never create, change or link anything beside that directory.
//!
//! The input is a layer, plain or gzip/zstd-compressed (chosen by magic bytes, as the
//! store reads layers). A plain input gets the header checksum of each 512-byte block
//! recomputed first, so that mutated headers get past the tar parser to the unpacker.

#![no_main]

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_image::compress::{self, Compression};
use berth_image::unpack::{Unpacker, Whiteouts};
use libfuzzer_sys::fuzz_target;

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Sets the checksum of every non-zero 512-byte block as if it were a tar header.
fn fix_checksums(data: &mut [u8]) {
    for block in data.chunks_exact_mut(512) {
        if block.iter().all(|&b| b == 0) {
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
}

fuzz_target!(|data: &[u8]| {
    // <base>/root is unpacked into; <base>/outside/keep must stay as it is.
    let base = tempfile::Builder::new()
        .prefix("berth-fuzz-")
        .tempdir()
        .unwrap();
    let root = base.path().join("root");
    let outside = base.path().join("outside");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"keep").unwrap();

    let mut fixed;
    let input = if Compression::sniff(data) == Compression::None {
        fixed = data.to_vec();
        fix_checksums(&mut fixed);
        &fixed[..]
    } else {
        data
    };
    let mut unpacker = Unpacker::new(&root, Whiteouts::Overlay).unwrap();
    // Errors are fine (most inputs are not valid layers); panics and escapes are not.
    let _ = compress::decompress(input).and_then(|layer| unpacker.apply(layer));
    drop(unpacker);

    let expect: BTreeSet<String> = ["outside", "root"].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        names(base.path()),
        expect,
        "something was created beside the root"
    );
    assert_eq!(names(&outside), BTreeSet::from(["keep".to_string()]));
    let keep = std::fs::symlink_metadata(outside.join("keep")).unwrap();
    assert!(
        keep.is_file() && keep.nlink() == 1 && keep.len() == 4,
        "outside/keep changed: {keep:?}"
    );
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"keep");
    assert!(
        std::fs::symlink_metadata(&root).unwrap().is_dir(),
        "the root was replaced"
    );
    base.close().expect("remove the fuzz directory");
});
