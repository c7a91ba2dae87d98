//! The SSE usage scanner reads upstream bytes in arbitrary chunks: whatever the split, it must
//! find the same usage as when fed the whole stream at once. Also the JSON usage reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pag0_policy::settle::{usage_from_json, SseUsageScanner};

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, stream)) = data.split_first() else {
        return;
    };
    let _ = usage_from_json(stream);

    let mut whole = SseUsageScanner::new();
    whole.feed(stream);

    let mut chunked = SseUsageScanner::new();
    let step = usize::from(split_seed % 17) + 1;
    for chunk in stream.chunks(step) {
        chunked.feed(chunk);
    }
    assert_eq!(
        whole.usage(),
        chunked.usage(),
        "usage depends on how the stream was split (step {step})"
    );
});
