//! Quick look at group commit: `cargo run --release -p metanode-store
//! --example put_storm -- DIR [threads] [puts_per_thread] [size_bytes]`.
//! The real, peer-compared numbers come from `cargo xtask bench storage`.

use std::time::Instant;

use metanode_store::{Store, StoreOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .expect("usage: put_storm DIR [threads] [puts] [size]");
    let threads: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let puts: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(500);
    let size: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let store = Store::open(StoreOptions::new(dir)).expect("open store");
    println!("io: {} ({})", store.io_name(), store.io_reason());
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut data = vec![0u8; size];
                for i in 0..puts {
                    data[..8].copy_from_slice(&t.to_le_bytes());
                    data[8..16].copy_from_slice(&i.to_le_bytes());
                    store.put(&data, true).expect("put");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let secs = start.elapsed().as_secs_f64();
    let s = store.stats();
    println!(
        "{} puts of {size} B in {secs:.2} s = {:.0} puts/s; {} flushes ({:.1} puts/flush)",
        s.puts_total,
        s.puts_total as f64 / secs,
        s.put_batches_total,
        s.puts_total as f64 / s.put_batches_total.max(1) as f64
    );
}
