//! Misuses of `#[task]` and `#[flow]` give readable compile errors.

#[test]
fn misuse_gives_readable_errors() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
