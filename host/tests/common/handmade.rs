//! Components made by hand, for what Rust cannot express or what an honest SDK would never
//! emit: several linear memories, an unbounded table, a start function that never returns,
//! metadata of any shape. A core module is written in WAT with the canonical ABI's export
//! names, the contract's WIT is embedded, and wit-component turns it into a component.

use std::fmt::Write;

/// The metadata a hand-made detector returns from `describe`.
#[derive(Debug, Clone)]
pub struct Meta {
    pub name: String,
    pub version: String,
    pub description: String,
    pub categories: Vec<String>,
    pub literals: Vec<String>,
    pub patterns: Vec<String>,
    pub context_lines: u32,
}

impl Meta {
    pub fn named(name: &str) -> Self {
        Meta {
            name: name.into(),
            version: "0.1.0".into(),
            description: "made by hand".into(),
            categories: vec!["other".into()],
            literals: Vec::new(),
            patterns: Vec::new(),
            context_lines: 0,
        }
    }
}

impl Meta {
    /// The largest metadata the host's caps allow (near each cap, every field at once).
    pub fn largest() -> Self {
        Meta {
            description: "d".repeat(1024),
            categories: (0..32).map(|i| format!("category-{i}")).collect(),
            literals: (0..256)
                .map(|i| format!("{i:03}{}", "l".repeat(60)))
                .collect(),
            patterns: (0..128)
                .map(|i| format!("error {i}: [a-z]+ failed at {}", "x".repeat(200)))
                .collect(),
            context_lines: 64,
            ..Meta::named("largest")
        }
    }
}

/// Core-module pieces beyond the metadata: extra declarations (memories, tables, a start
/// function) and the body of `feed` (run before it returns an empty list).
#[derive(Debug, Clone, Default)]
pub struct Body {
    pub decls: String,
    pub feed: String,
}

/// Data laid out in the module's memory, with the offset of each piece.
struct Data {
    bytes: Vec<u8>,
}

impl Data {
    fn put(&mut self, b: &[u8], align: usize) -> u32 {
        while !self.bytes.len().is_multiple_of(align) {
            self.bytes.push(0);
        }
        let at = self.bytes.len() as u32;
        self.bytes.extend_from_slice(b);
        at
    }

    fn string(&mut self, s: &str) -> [u32; 2] {
        [self.put(s.as_bytes(), 1), s.len() as u32]
    }

    fn strings(&mut self, list: &[String]) -> [u32; 2] {
        let pairs: Vec<[u32; 2]> = list.iter().map(|s| self.string(s)).collect();
        let mut b = Vec::new();
        for [p, l] in &pairs {
            b.extend_from_slice(&p.to_le_bytes());
            b.extend_from_slice(&l.to_le_bytes());
        }
        [self.put(&b, 4), pairs.len() as u32]
    }
}

const BASE: u32 = 1024;

fn wat_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for byte in b {
        let _ = write!(s, "\\{byte:02x}");
    }
    s
}

/// A detector component with `meta` and `body`.
pub fn detector(meta: &Meta, body: &Body) -> Vec<u8> {
    let mut d = Data { bytes: Vec::new() };
    // An empty list<finding> for feed and finish: (ptr, len) = (8, 0) relative to BASE.
    let empty = d.put(&[8, 0, 0, 0, 0, 0, 0, 0], 8) + BASE;
    let name = d.string(&meta.name);
    let version = d.string(&meta.version);
    let description = d.string(&meta.description);
    let categories = d.strings(&meta.categories);
    let capabilities = [d.put(&[], 1), 0];
    let literals = d.strings(&meta.literals);
    let patterns = d.strings(&meta.patterns);
    let mut record = Vec::new();
    for [p, l] in [
        name,
        version,
        description,
        categories,
        capabilities,
        literals,
        patterns,
    ] {
        record.extend_from_slice(&(p + BASE).to_le_bytes());
        record.extend_from_slice(&l.to_le_bytes());
    }
    record.extend_from_slice(&meta.context_lines.to_le_bytes());
    // Lists of strings hold pointers: relocate them by BASE.
    let meta_at = d.put(&record, 4) + BASE;
    for [list, len] in [categories, literals, patterns] {
        for i in 0..len {
            let at = (list + i * 8) as usize;
            let p = u32::from_le_bytes(d.bytes[at..at + 4].try_into().unwrap()) + BASE;
            d.bytes[at..at + 4].copy_from_slice(&p.to_le_bytes());
        }
    }
    let heap = (BASE as usize + d.bytes.len()).div_ceil(65536) * 65536;
    let pages = heap / 65536 + 1;
    let iface = "nixtest:plugin/detector@0.1.0";
    let wat = format!(
        r#"(module
  (memory (export "memory") {pages})
  (global $heap (mut i32) (i32.const {heap}))
  (data (i32.const {BASE}) "{data}")
  {decls}
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
        (i32.xor (i32.sub (local.get 2) (i32.const 1)) (i32.const -1))))
    (global.set $heap (i32.add (local.get $p) (local.get 3)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.add
                  (i32.div_u
                    (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
                    (i32.const 65536))
                  (i32.const 1)))
              (i32.const -1))
          (then unreachable))))
    (local.get $p))
  (func (export "{iface}#describe") (result i32)
    (i32.const {meta_at}))
  (func (export "{iface}#feed") (param i32 i32) (result i32)
    {feed}
    (i32.const {empty}))
  (func (export "{iface}#finish") (result i32)
    (i32.const {empty}))
)"#,
        data = wat_bytes(&d.bytes),
        decls = body.decls,
        feed = body.feed,
    );
    let mut module = wat::parse_str(&wat).unwrap_or_else(|e| panic!("hand-made WAT: {e}"));
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve
        .push_dir(super::workspace_root().join("wit/v0.1.0"))
        .expect("the contract's WIT parses");
    let world = resolve
        .select_world(&[pkg], Some("detector-plugin"))
        .expect("the detector world");
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("metadata embeds");
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .expect("a valid module")
        .encode()
        .expect("a component")
}
