//! Request-body pricing reads agent bytes before every priced request.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(facts) = pag0_policy::pricing::parse_request_body(data) {
        assert_eq!(facts.body_len, data.len());
    }
});
