//! Detection throughput: a log of realistic build noise (at least 1M lines) with the corpus
//! cases mixed in, through the parser, the monitor and every built-in plugin; the same log
//! through a native `RegexSet` of the same rules; and through GNU `grep -E -c` with the same
//! patterns translated to ERE, and ripgrep with them as they are, on logs of four shapes.
//! Prints lines/s and the ratios, and beside them `wc -l` on the same file: no tool that reads
//! every byte goes faster, so it shows what lines/s a shape allows at all on this machine.
//!
//! `cargo bench -p nixtest --bench throughput` (NIXTEST_BENCH_LINES to change the size,
//! NIXTEST_BENCH_SHAPES=bench,long,markers,hits to pick shapes, NIXTEST_BENCH_TOOLS=0 to leave
//! grep and ripgrep out, as when profiling).
//!
//! A replay has a fixed cost besides its lines: the plugins build their rules inside the
//! sandbox the first time a line reaches them. It is printed on its own (a replay of the
//! corpus cases alone), and `lines/s` is also given without it, so that logs of any size
//! compare.

use nixtest::facts::GuestFacts;
use nixtest::plugin::{HostOptions, PluginHost};
use regex::RegexSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// xorshift64*: a small deterministic generator, so every run measures the same log.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn hash(&mut self) -> String {
        const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
        (0..32)
            .map(|_| ALPHABET[(self.next() % 32) as usize] as char)
            .collect()
    }
}

const PACKAGES: &[&str] = &[
    "glibc-2.39",
    "gcc-13.2.0",
    "openssl-3.0.13",
    "systemd-255.4",
    "linux-6.6.21",
    "perl-5.38.2",
    "python3-3.11.8",
    "util-linux-2.39.3",
    "coreutils-9.4",
    "nix-2.18.1",
    "grub-2.12",
    "e2fsprogs-1.47.0",
];
const FILES: &[&str] = &[
    "main.c",
    "util.c",
    "parse.y",
    "hash.cc",
    "io.rs",
    "lib.rs",
    "crypto/evp.c",
    "fs/ext4/inode.c",
];

fn noise_line(rng: &mut Rng) -> String {
    let pkg = rng.pick(PACKAGES);
    let file = rng.pick(FILES);
    match rng.next() % 16 {
        0 => format!("building '/nix/store/{}-{pkg}.drv'...", rng.hash()),
        1 => format!(
            "copying path '/nix/store/{}-{pkg}' from 'https://cache.nixos.org'...",
            rng.hash()
        ),
        2 => format!(
            "gcc -O2 -fPIC -Wall -I../include -c {file} -o {}.o",
            file.replace('.', "_")
        ),
        3 => format!("  CC       src/{}.lo", file.trim_end_matches(".c")),
        4 => format!(
            "checking for {}... yes",
            rng.pick(&[
                "stdint.h",
                "pthread_create",
                "working alloca.h",
                "gcc option to accept ISO C99"
            ])
        ),
        5 => format!(
            "[ {:>3}%] Building CXX object src/CMakeFiles/core.dir/{file}.o",
            rng.next() % 100
        ),
        6 => format!(
            "make[{}]: Entering directory '/build/{pkg}/src'",
            rng.next() % 4
        ),
        7 => format!("patching file {file}"),
        8 => format!(
            "libtool: compile:  gcc -DHAVE_CONFIG_H -I. -g -O2 -c {file}  -fPIC -DPIC -o .libs/x.o"
        ),
        9 => format!(
            "unpacking source archive /nix/store/{}-{pkg}.tar.xz",
            rng.hash()
        ),
        10 => format!(
            "\x1b[32;1m   Compiling\x1b[0m {} v0.{}.{}",
            rng.pick(&["serde", "libc", "regex", "tokio"]),
            rng.next() % 20,
            rng.next() % 9
        ),
        11 => format!(
            "{file}:{}:{}: warning: unused variable 'tmp' [-Wunused-variable]",
            rng.next() % 900,
            rng.next() % 80
        ),
        12 => format!(
            "installing '/nix/store/{}-{pkg}/lib/lib{}.so'",
            rng.hash(),
            pkg.split('-').next().unwrap()
        ),
        13 => format!(
            "these {} paths will be fetched ({:.1} MiB download, {:.1} MiB unpacked):",
            rng.next() % 300,
            (rng.next() % 9000) as f64 / 10.0,
            (rng.next() % 30000) as f64 / 10.0
        ),
        14 => format!(
            "running install tests in /build/{pkg}/tests: {} passed",
            rng.next() % 400
        ),
        _ => format!("  /nix/store/{}-{pkg}", rng.hash()),
    }
}

fn corpus() -> Vec<String> {
    let dir = std::env::var_os("NIXTEST_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("note: no corpus at {}; noise only", dir.display());
        return Vec::new();
    };
    let mut cases: Vec<String> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    cases.sort();
    cases
}

/// The shapes of log measured: the bench's build noise with corpus cases; the same with
/// long lines (linker and compiler command lines of 1–8 KiB); with many markers (a third of
/// the lines: progress, metrics, phases); with many prefilter hits (a third of the lines hold
/// a detector's literal, such as `/dev/`, `error: ` or `mount`, and are no failure).
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Bench,
    LongLines,
    Markers,
    PrefilterHits,
}

impl Shape {
    fn key(self) -> &'static str {
        match self {
            Shape::Bench => "bench",
            Shape::LongLines => "long",
            Shape::Markers => "markers",
            Shape::PrefilterHits => "hits",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shape::Bench => "bench log",
            Shape::LongLines => "long lines",
            Shape::Markers => "many markers",
            Shape::PrefilterHits => "many prefilter hits",
        }
    }

    fn line(self, rng: &mut Rng) -> String {
        let third = rng.next().is_multiple_of(3);
        match self {
            Shape::Bench => noise_line(rng),
            Shape::LongLines if rng.next().is_multiple_of(4) => {
                let n = 16 + (rng.next() % 112) as usize;
                let mut l = String::from("gcc -O2 -fPIC");
                for _ in 0..n {
                    l.push_str(&format!(
                        " -I/nix/store/{}-{}/include",
                        rng.hash(),
                        rng.pick(PACKAGES)
                    ));
                }
                l
            }
            Shape::LongLines => noise_line(rng),
            Shape::Markers if third => match rng.next() % 4 {
                0 => format!(
                    "::PROGRESS::build::{} of 4000 derivations",
                    rng.next() % 4000
                ),
                1 => format!("::METRIC::store_mb::{}", rng.next() % 9000),
                2 => format!("::CONTEXT::building {}", rng.pick(PACKAGES)),
                _ => format!(
                    "::PHASE::{}",
                    rng.pick(&["install", "generate_config", "build"])
                ),
            },
            Shape::PrefilterHits if third => {
                let pkg = rng.pick(PACKAGES);
                match rng.next() % 6 {
                    0 => format!("mounting /dev/vdb{} on /mnt/boot", rng.next() % 4),
                    1 => format!("these {} dependencies will be built:", rng.next() % 90),
                    2 => format!("note: keeping the build directory of {pkg} (no error: kept)"),
                    3 => format!("resolved {pkg} in {} ms", rng.next() % 900),
                    4 => format!("partition table of /dev/vdb has {} entries", rng.next() % 8),
                    _ => format!(
                        "copying {pkg}: enough space on /mnt ({} MiB free)",
                        rng.next() % 9000
                    ),
                }
            }
            Shape::Markers | Shape::PrefilterHits => noise_line(rng),
        }
    }
}

fn make_log(lines: usize, shape: Shape) -> (Vec<u8>, usize) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let cases = corpus();
    let mut out = String::with_capacity(lines * 80);
    let mut n = 0;
    let mut injected = 0;
    while n < lines {
        if !cases.is_empty() && rng.next().is_multiple_of(5000) {
            let case = &cases[(rng.next() % cases.len() as u64) as usize];
            out.push_str(case);
            if !case.ends_with('\n') {
                out.push('\n');
            }
            n += case.lines().count();
            injected += 1;
        } else {
            out.push_str(&shape.line(&mut rng));
            out.push('\n');
            n += 1;
        }
    }
    (out.into_bytes(), injected)
}

fn rust_patterns() -> Vec<String> {
    let mut p = Vec::new();
    p.extend(disk_fix::patterns());
    p.extend(disk_space::patterns());
    p.extend(memory_pressure::patterns());
    p.extend(network_fix::patterns());
    p.extend(nix_errors::patterns());
    p
}

/// Rust regex syntax to POSIX ERE as GNU grep reads it, for the subset the rules use.
fn to_ere(p: &str) -> String {
    // Flags (`(?i)`, `(?i-u)`) have no ERE form: grep runs case-sensitive, which only costs
    // it matches; a flagged group `(?i-u:` is a plain group.
    let flags = regex::Regex::new(r"\(\?[a-zA-Z-]+\)").unwrap();
    let groups = regex::Regex::new(r"\(\?[a-zA-Z-]*:").unwrap();
    let p = flags.replace_all(p, "");
    let p = groups.replace_all(&p, "(");
    let mut out = String::new();
    let mut chars = p.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '(' if chars.peek() == Some(&'?') => {
                // (?P<name>
                for c in chars.by_ref() {
                    if c == '>' {
                        break;
                    }
                }
                out.push('(');
            }
            '\\' => {
                let n = chars.next().unwrap_or('\\');
                let s = match (n, in_class) {
                    ('d', false) => "[0-9]".to_string(),
                    ('d', true) => "0-9".to_string(),
                    ('s', false) => "[[:space:]]".to_string(),
                    ('s', true) => "[:space:]".to_string(),
                    ('S', false) => "[^[:space:]]".to_string(),
                    ('w', false) => "[[:alnum:]_]".to_string(),
                    ('w', true) => "[:alnum:]_".to_string(),
                    ('b', _) => "\\b".to_string(),
                    (other, true) if other == ']' || other == '\\' || other == '-' => {
                        format!("\\{other}")
                    }
                    (other, true) => other.to_string(),
                    (other, false) => format!("\\{other}"),
                };
                out.push_str(&s);
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    out.push(chars.next().unwrap());
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '?' if !in_class && matches!(out.chars().last(), Some('*' | '+' | '?')) => {}
            _ => out.push(c),
        }
    }
    out
}

fn rate(lines: usize, d: Duration) -> f64 {
    lines as f64 / d.as_secs_f64()
}

fn best_of<R>(n: usize, mut f: impl FnMut() -> R) -> (Duration, R) {
    let mut best = None::<(Duration, R)>;
    for _ in 0..n {
        let t = Instant::now();
        let r = f();
        let d = t.elapsed();
        if best.as_ref().is_none_or(|(b, _)| d < *b) {
            best = Some((d, r));
        }
    }
    best.unwrap()
}

/// How long a grep-like tool takes (best of 3) to count the matching lines, run as
/// `TOOL ARGS -f PATTERNS FILE` within `limit` (ripgrep can take many minutes on rules with
/// Unicode word boundaries over non-ASCII text); `None` when it ran past the limit.
fn tool_time(
    tool: &str,
    args: &[&str],
    patterns: &std::path::Path,
    file: &std::path::Path,
    limit: Duration,
) -> Option<Duration> {
    let mut best: Option<Duration> = None;
    for _ in 0..3 {
        let t = Instant::now();
        let out = Command::new("timeout")
            .arg(limit.as_secs().to_string())
            .arg(tool)
            .env("LC_ALL", "C.UTF-8")
            .args(args)
            .arg("-f")
            .arg(patterns)
            .arg(file)
            .output()
            .unwrap_or_else(|e| panic!("{tool} runs ({e}); scripts/setup.sh installs it"));
        let d = t.elapsed();
        if out.status.code() == Some(124) {
            return None;
        }
        // 1 is "no line matched"; 2 is an error (a rule the tool cannot read).
        assert!(
            out.status.code() != Some(2),
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        best = Some(best.map_or(d, |b| b.min(d)));
    }
    best
}

/// How long `wc -l` takes (best of 3) to count the file's lines: the least any tool that
/// reads every byte of the file needs, the floor under the other columns.
fn wc_time(file: &std::path::Path) -> Duration {
    best_of(3, || {
        let out = Command::new("wc")
            .arg("-l")
            .arg(file)
            .output()
            .expect("wc runs");
        assert!(out.status.success(), "wc -l failed");
    })
    .0
}

fn main() {
    let lines: usize = std::env::var("NIXTEST_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let host = PluginHost::new(HostOptions::default()).unwrap();
    let plugins = nixtest::plugins::builtins(&host).unwrap();
    let patterns = rust_patterns();
    let ere: Vec<String> = patterns.iter().map(|p| to_ere(p)).collect();
    let mut ere_file = tempfile::NamedTempFile::new().unwrap();
    ere_file.write_all(ere.join("\n").as_bytes()).unwrap();
    // ripgrep reads Rust's regex syntax: the rules as they are, but for group names (it joins
    // the rules into one regex, where a name may appear once).
    let names = regex::Regex::new(r"\(\?P?<[A-Za-z_][A-Za-z0-9_]*>").unwrap();
    let unnamed: Vec<String> = patterns
        .iter()
        .map(|p| names.replace_all(p, "(").into_owned())
        .collect();
    let mut rust_file = tempfile::NamedTempFile::new().unwrap();
    rust_file.write_all(unnamed.join("\n").as_bytes()).unwrap();
    let set = RegexSet::new(&patterns).unwrap();
    println!(
        "{} rules; each log {lines} lines or more; best of 3; ratio = replay time / tool time (below 1: replay is faster)",
        patterns.len()
    );
    // The fixed cost: the corpus cases alone reach every plugin's rules.
    let cases = corpus().concat();
    let (fixed, _) = best_of(3, || {
        nixtest::replay::replay(cases.as_bytes(), &plugins, &GuestFacts::default(), &[]).unwrap()
    });
    println!(
        "fixed cost of a replay (the corpus cases alone, {} lines; the plugins build their rules): {:.0} ms",
        cases.lines().count(),
        fixed.as_secs_f64() * 1e3
    );
    println!(
        "| log | MiB | replay | lines/s | lines/s past the fixed cost | parsed | grep -E | rg | replay/grep | replay/rg | wc -l (lines/s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let wanted = std::env::var("NIXTEST_BENCH_SHAPES").unwrap_or_default();
    let shapes = [
        Shape::Bench,
        Shape::LongLines,
        Shape::Markers,
        Shape::PrefilterHits,
    ]
    .into_iter()
    .filter(|s| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == s.key()));
    for shape in shapes {
        let (log, _injected) = make_log(lines, shape);
        let total_lines = log.iter().filter(|&&b| b == b'\n').count();
        let (pipeline, report) = best_of(3, || {
            nixtest::replay::replay(&log[..], &plugins, &GuestFacts::default(), &[]).unwrap()
        });
        // A plugin disabled by a fault makes a run faster and wrong: never a result.
        assert!(
            report.faults.is_empty(),
            "plugin faults: {:?}",
            report.faults
        );
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&log).unwrap();
        // NIXTEST_BENCH_KEEP_LOGS=DIR keeps each log (for `nixtest replay`, perf, memory).
        if let Some(keep) = std::env::var_os("NIXTEST_BENCH_KEEP_LOGS") {
            let name = shape.name().replace(' ', "-");
            let path = PathBuf::from(&keep).join(format!("{name}.log"));
            std::fs::create_dir_all(&keep)
                .and_then(|()| std::fs::write(&path, &log))
                .unwrap_or_else(|e| panic!("NIXTEST_BENCH_KEEP_LOGS: writing {path:?}: {e}"));
        }
        let limit = Duration::from_secs(60);
        let wc = wc_time(file.path());
        let floor = format!(
            "{:.0} ms ({:.2}M)",
            wc.as_secs_f64() * 1e3,
            rate(total_lines, wc) / 1e6
        );
        // (grep, rg), each None when it ran past the limit; not run at all when left out.
        let tools = (!std::env::var("NIXTEST_BENCH_TOOLS").is_ok_and(|v| v == "0")).then(|| {
            (
                tool_time("grep", &["-E", "-c"], ere_file.path(), file.path(), limit),
                tool_time(
                    "rg",
                    &["-c", "--no-config"],
                    rust_file.path(),
                    file.path(),
                    limit,
                ),
            )
        });
        let ms = |d: Option<Duration>| {
            d.map_or(format!("> {} s", limit.as_secs()), |d| {
                format!("{:.0} ms", d.as_secs_f64() * 1e3)
            })
        };
        let ratio = |d: Option<Duration>| match d {
            Some(d) => format!("{:.2}", pipeline.as_secs_f64() / d.as_secs_f64()),
            None => format!("< {:.3}", pipeline.as_secs_f64() / limit.as_secs_f64()),
        };
        let [grep, rg, grep_ratio, rg_ratio] = match tools {
            Some((grep, rg)) => [ms(grep), ms(rg), ratio(grep), ratio(rg)],
            None => Default::default(),
        };
        println!(
            "| {} | {:.1} | {:.0} ms | {:.2}M | {:.2}M | {:.1} % | {grep} | {rg} | {grep_ratio} | {rg_ratio} | {floor} |",
            shape.name(),
            log.len() as f64 / (1 << 20) as f64,
            pipeline.as_secs_f64() * 1e3,
            rate(total_lines, pipeline) / 1e6,
            rate(total_lines, pipeline.saturating_sub(fixed)) / 1e6,
            report.parsed_lines as f64 * 100.0 / total_lines as f64,
        );
        if shape == Shape::Bench {
            let text = std::str::from_utf8(&log).unwrap();
            let (native, _) = best_of(3, || text.lines().filter(|l| set.is_match(l)).count());
            println!(
                "| (reference: a native RegexSet, line by line) | | {:.0} ms | {:.2}M | | | | | | | |",
                native.as_secs_f64() * 1e3,
                rate(total_lines, native) / 1e6
            );
        }
    }
}
