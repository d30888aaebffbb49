//! Every misuse of `#[derive(Event)]` gets a spanned error that says how to
//! fix it (one mistake a file under `tests/ui/`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
