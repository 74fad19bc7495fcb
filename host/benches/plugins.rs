//! Plugin platform costs: cold compile of each built-in plugin, load from the compiled-code
//! cache, instantiation (on-demand and pooling allocators), and one detector call with 100
//! events. Run with `cargo bench -p nixtest --bench plugins`.

use nixtest::plugin::{HostOptions, Origin, PluginHost};
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<R>(reps: usize, mut f: impl FnMut() -> R) -> Duration {
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn show(d: Duration) -> String {
    if d >= Duration::from_millis(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    }
}

fn main() {
    let cache = tempfile::tempdir().unwrap();
    let host = PluginHost::new(HostOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let pooled = PluginHost::new(HostOptions {
        pooling: true,
        ..Default::default()
    })
    .unwrap();
    let log: String = (0..100)
        .map(|i| {
            if i % 10 == 0 {
                format!("sfdisk: cannot open /dev/sd{i}: No such file or directory\n")
            } else {
                format!("building '/nix/store/{i:032}-hello-2.12.drv'...\n")
            }
        })
        .collect();
    let events = nixtest_events::parse_log(log.as_bytes());

    println!(
        "{:<16} {:>10} {:>12} {:>12} {:>13} {:>14} {:>10}",
        "plugin", "size", "cold compile", "cache load", "instantiate", "inst. pooled", "feed(100)"
    );
    for (name, bytes, _) in nixtest::builtin::all() {
        let cold = time(3, || host.compile(bytes).unwrap());
        host.load(bytes, name, Origin::Builtin).unwrap();
        let cached = time(10, || host.load(bytes, name, Origin::Builtin).unwrap());
        let plugin = host.load(bytes, name, Origin::Builtin).unwrap();
        let inst = time(50, || plugin.instantiate().unwrap());
        let pooled_plugin = pooled.load(bytes, name, Origin::Builtin).unwrap();
        let inst_pooled = time(50, || pooled_plugin.instantiate().unwrap());
        // A fresh, warmed instance per sample (lazy rule compilation done), timing the call.
        let feed = median(
            (0..50)
                .map(|_| {
                    let mut i = plugin.instantiate().unwrap();
                    i.feed(&events[..1]).unwrap();
                    let t = Instant::now();
                    i.feed(&events).unwrap();
                    t.elapsed()
                })
                .collect(),
        );
        println!(
            "{:<16} {:>8} K {:>12} {:>12} {:>13} {:>14} {:>10}",
            name,
            bytes.len() / 1024,
            show(cold),
            show(cached),
            show(inst),
            show(inst_pooled),
            show(feed)
        );
        println!(
            "{:<16} cache load is {:.0}x faster than a cold compile",
            "",
            cold.as_secs_f64() / cached.as_secs_f64()
        );
    }
}
