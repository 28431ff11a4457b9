//! Extracts a (possibly compressed) layer tar into a directory with the naive
//! (`UnpackLayer`) semantics and prints the digests, like the layer store would:
//! `cargo run -p storage-archive --example unpack_file -- LAYER.tar[.gz] DEST`.

use std::time::Instant;

use storage_archive::{UnpackOptions, open_diff, unpack};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, tar, dest] = args.as_slice() else {
        return Err("usage: unpack_file LAYER.tar[.gz|.zst|…] DEST".into());
    };
    let start = Instant::now();
    let input = std::fs::File::open(tar)?;
    let mut diff = open_diff(Box::new(input))?;
    let size = unpack(&mut diff, dest.as_ref(), &UnpackOptions::default())?;
    let stats = diff.finish()?;
    println!("size {size}");
    println!("compression {:?}", stats.compression);
    println!(
        "compressed {} {}",
        stats.compressed_digest, stats.compressed_size
    );
    println!(
        "uncompressed {} {}",
        stats.uncompressed_digest, stats.uncompressed_size
    );
    println!("uids {:?} gids {:?}", stats.uidset, stats.gidset);
    eprintln!("elapsed {:?}", start.elapsed());
    Ok(())
}
