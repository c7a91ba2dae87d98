//! The policy document parser and validator sees operator- and API-supplied bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pag0_policy::CompiledPolicy::compile(data);
});
