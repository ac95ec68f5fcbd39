//! A small mutation fuzzer for fleet's parsers (shared by the crates' short fuzz tests and the
//! million-case bench, `cargo bench -p fleet-core --bench fuzz`): from valid seed texts it makes
//! structured and byte-level mutations — bytes replaced, inserted, deleted, lines duplicated or
//! dropped, spans spliced from other seeds, and tokens that broke parsers before (quoted non-ASCII
//! names, huge and negative numbers, empty arrays, stray brackets) — and calls the parser under
//! `catch_unwind`. A panic is a failure: parsers answer bad input with an error, never a panic.

#![allow(dead_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};

/// xorshift64*: fast and reproducible for a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }
}

const TOKENS: &[&str] = &[
    "\"é\"",
    "[\"\\\"é\", \"x\"]",
    "9223372036854775807",
    "-9223372036854775808",
    "1e309",
    "-1",
    "0",
    "\"\"",
    "[]",
    "{}",
    "[",
    "]",
    "=",
    "\"",
    "'",
    "\n",
    "\r\n",
    "\t",
    "\u{0}",
    "\u{feff}",
    "ó",
    "😀",
    "\\u0000",
    "inf",
    "nan",
    "99999999999999999999999",
    "0.0000001",
    "\"5m\"",
    "\"-5m\"",
    "\"99999999h\"",
    ",",
    ",,",
    "#",
    "[apps.x]",
    "[[quotas]]",
    "[budget]",
    "H100",
    "A100-80GB",
    "\"spot\"",
    "aws",
    "us-east-1",
    "\"1.5\"",
];

/// One mutant of `seeds[i]`.
pub fn mutate(rng: &mut Rng, seeds: &[&str]) -> Vec<u8> {
    let mut b = seeds[rng.below(seeds.len())].as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(8) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = rng.next_u64() as u8;
            }
            1 => b.insert(at, rng.next_u64() as u8),
            2 if !b.is_empty() => {
                let end = (at + rng.below(16)).min(b.len());
                b.drain(at.min(end)..end);
            }
            3 | 4 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                b.splice(at..at, t.iter().copied());
            }
            5 => {
                // A line from another seed, spliced in.
                let other: Vec<&str> = seeds[rng.below(seeds.len())].lines().collect();
                if !other.is_empty() {
                    let line = format!("{}\n", other[rng.below(other.len())]);
                    b.splice(at..at, line.bytes());
                }
            }
            6 => {
                // A line dropped or doubled.
                let text = String::from_utf8_lossy(&b).into_owned();
                let mut lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let i = rng.below(lines.len());
                    if rng.below(2) == 0 {
                        lines.remove(i);
                    } else {
                        lines.insert(i, lines[i]);
                    }
                }
                b = lines.join("\n").into_bytes();
            }
            _ => {
                // A digit run replaced by a huge or odd number.
                if let Some(i) = b.iter().position(|c| c.is_ascii_digit()) {
                    let t = TOKENS[2 + rng.below(6)].as_bytes();
                    b.splice(i..i + 1, t.iter().copied());
                }
            }
        }
    }
    b
}

/// Runs `parse` on `cases` mutants of `seeds` (seed `seed`); returns the inputs that panicked.
pub fn run(seed: u64, cases: u64, seeds: &[&str], mut parse: impl FnMut(&[u8])) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut panics = Vec::new();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for _ in 0..cases {
        let input = mutate(&mut rng, seeds);
        if catch_unwind(AssertUnwindSafe(|| parse(&input))).is_err() {
            panics.push(input);
            if panics.len() >= 5 {
                break;
            }
        }
    }
    std::panic::set_hook(hook);
    panics
}

/// Fails listing (lossily) the inputs that panicked.
pub fn assert_no_panic(what: &str, panics: &[Vec<u8>]) {
    assert!(
        panics.is_empty(),
        "{what} panicked on {} input(s), e.g.:\n{}",
        panics.len(),
        panics.iter().take(3).map(|p| format!("{:?}", String::from_utf8_lossy(p))).collect::<Vec<_>>().join("\n---\n")
    );
}

/// Valid inputs the mutants start from.
pub const SPEC_SEEDS: &[&str] = &[
    include_str!("../../examples/fleet.toml"),
    "[fleet]\nname = \"t\"\n[budget]\nmax_per_hour = \"400\"\nmax_per_month = 150000\n[[quotas]]\ncloud = \"aws\"\nmax_gpus = 64\n[apps.llm]\ngpu = [\"H100\", \"A100-80GB\"]\ngpus = 8\n[apps.llm.placement]\nclouds = [\"aws\", \"gcp\"]\nregions = [\"us-*\"]\nspot = \"auto\"\nmax_price_per_gpu_hour = \"4.00\"\n[apps.llm.scaling]\nkeep_alive = \"auto\"\nscaling_delay = \"30s\"\n[apps.llm.requests]\nmax_queue = 10\nresult_ttl = \"1h\"\n",
    "[clouds.azure]\nsubscription_id = \"00000000-0000-0000-0000-000000000001\"\nresource_group = \"fleet\"\nsubnet_id = \"/subscriptions/s/resourceGroups/fleet/providers/Microsoft.Network/virtualNetworks/v/subnets/n\"\nimage = \"a:b:c:latest\"\nssh_public_key = \"ssh-ed25519 AAAA fleet\"\n[clouds.gcp]\nproject = \"my-project\"\nzones = [\"us-central1-a\"]\n",
];

pub const CATALOG_SEEDS: &[&str] = &[
    "cloud,region,zone,instance_type,gpu,gpu_count,vcpus,memory_gib,interconnect,capacity,usd_per_hour,source,as_of\naws,us-east-1,use1-az1,p5.48xlarge,H100-SXM,8,192,2048,nvswitch,on-demand,55.04,x,2026-11-25\nlambda,us-east-1,,gpu_8x_h100_sxm5,H100-SXM,8,208,1800,nvswitch,spot,23.92,y,2026-11-25\n",
];

pub const SKYPILOT_SEEDS: &[&str] = &[
    "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,SpotPrice,AvailabilityZone\np5.48xlarge,H100,8.0,192.0,2048.0,98.32,us-east-1,12.5,use1-az1\np4d.24xlarge,A100,8.0,96.0,1152.0,32.77,us-west-2,,usw2-az1\n",
];
