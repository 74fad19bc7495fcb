//! Any bytes, cut into chunks anywhere, through the line splitter and the marker parser: no
//! panic, lines numbered one by one, no control characters left in messages, and the same
//! events whatever the chunking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixtest_events::{Event, EventParser, LineSplitter};

fn run(data: &[u8], cut: usize, max_line: usize) -> Vec<Event> {
    let mut splitter = LineSplitter::new(max_line);
    let mut parser = EventParser::default();
    let mut events = Vec::new();
    let cut = cut.min(data.len());
    for chunk in [&data[..cut], &data[cut..]] {
        splitter.push(chunk, |line| events.push(parser.parse(line)));
    }
    if let Some(line) = splitter.finish() {
        events.push(parser.parse(line));
    }
    events
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else {
        return;
    };
    let max_line = 16 + usize::from(first) * 4;
    let whole = run(data, data.len(), max_line);
    let split = run(data, usize::from(first) % (data.len() + 1), max_line);
    assert_eq!(whole, split, "chunking changed the events");
    for (i, e) in whole.iter().enumerate() {
        assert_eq!(e.line as usize, i + 1);
        assert!(!e.message.chars().any(|c| c.is_control() && c != '\t'), "{:?}", e.message);
    }
});
