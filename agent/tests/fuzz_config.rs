//! The agent's config under mutated inputs (a short run; see `core/benches/fuzz.rs` for the
//! engine): bad input is an error naming the problem, never a panic.

#[path = "../../core/tests/fuzz_engine.rs"]
mod fuzz_engine;

#[test]
fn the_agent_config_parser_never_panics() {
    let seeds = [
        "fleet = \"t\"\nnode = 3\nendpoints = [\"http://127.0.0.1:2379\"]\nlease_ttl = \"5s\"\npoll = \"200ms\"\n[apps.llm]\nmodel = \"/m/llm.safetensors\"\nmax_concurrency = 4\n[burn_in]\ncpu_size = 128\niterations = 2\n[interruption]\nsource = \"aws\"\npoll = \"1s\"\n[rented]\ngpu_model = \"H100-SXM\"\ngpus = 8\ncheck_every = \"60s\"\n",
        "fleet = \"t\"\nnode = 1\ngateway = \"http://127.0.0.1:7070\"\ntoken_file = \"/nonexistent\"\n",
    ];
    let panics = fuzz_engine::run(5, 20_000, &seeds, |b| {
        let _ = fleet_agent::config::AgentConfig::parse("agent.toml", &String::from_utf8_lossy(b), None);
    });
    fuzz_engine::assert_no_panic("AgentConfig::parse", &panics);
}
