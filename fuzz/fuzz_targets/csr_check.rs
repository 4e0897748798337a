#![no_main]

// The body is crates/tether-fuzz's, shared with the stable smoke test.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _accepted = tether_fuzz::csr_check(data);
});
