//! The README's fleet specs are real: every ```toml block in it parses as a fleet spec.

#[test]
fn every_toml_block_in_the_readme_is_a_valid_spec() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut blocks = 0;
    for (i, part) in readme.split("```toml\n").enumerate().skip(1) {
        let block = part.split("```").next().unwrap();
        if let Err(e) = fleet_core::spec::FleetSpec::parse("README.md", block) {
            panic!("README toml block {i} does not parse:\n{e}\n{block}");
        }
        blocks += 1;
    }
    assert!(blocks >= 1, "the README shows a fleet spec");
}
