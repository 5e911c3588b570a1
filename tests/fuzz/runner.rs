//! The time-budgeted driver every target runs under.
//!
//! proptest generates each case from its strategy and, when a case fails, shrinks it to a
//! minimal one; this driver only decides how long to go on. Every case gets its own seed,
//! drawn from the run's seed, and its own `TestRunner`, so that a failure is replayed by its
//! case seed alone (`--replay`), without re-running the cases before it.

use std::fmt::Debug;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseResult, TestError, TestRng, TestRunner};

/// After this many failures a target stops: they are usually one bug found again.
const MAX_FAILURES: u64 = 3;

/// One named fuzz target.
pub struct Target {
    pub name: &'static str,
    /// Sets up what the target needs once per run (keys, verifiers), then calls [`fuzz`].
    pub run: fn(&Budget) -> Outcome,
}

/// How long and from where a target runs.
#[derive(Debug, Clone)]
pub struct Budget {
    pub duration: Duration,
    /// Seeds the per-run setup and the sequence of case seeds.
    pub run_seed: u64,
    /// Run exactly this one case instead of a timed run.
    pub replay: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub cases: u64,
    pub failures: u64,
    pub elapsed: Duration,
}

/// Runs `test` on cases of `strategy` until the budget is spent (or the one replayed case ran).
/// Panics inside `test` count as failures, with the panic message as the reason.
pub fn fuzz<S>(
    target: &str,
    budget: &Budget,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) -> Outcome
where
    S: Strategy,
    S::Value: Debug,
{
    let started = Instant::now();
    let mut outcome = Outcome::default();
    let mut seeds = SplitMix(budget.run_seed);
    loop {
        let case_seed = match budget.replay {
            Some(seed) if outcome.cases == 0 => seed,
            Some(_) => break,
            None if started.elapsed() >= budget.duration => break,
            None => seeds.next(),
        };
        let mut runner = TestRunner::new_with_rng(config(), rng(case_seed));
        let tree = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree,
            Err(reason) => panic!("target {target}: the strategy cannot generate: {reason}"),
        };
        outcome.cases += 1;
        match runner.run_one(tree, &test) {
            Ok(_) => {}
            Err(TestError::Fail(reason, minimal)) => {
                outcome.failures += 1;
                report_failure(target, budget, case_seed, &reason, &minimal);
                if outcome.failures >= MAX_FAILURES {
                    break;
                }
            }
            Err(TestError::Abort(reason)) => {
                panic!("target {target}: proptest aborted: {reason}")
            }
        }
    }
    outcome.elapsed = started.elapsed();
    outcome
}

fn report_failure(
    target: &str,
    budget: &Budget,
    case_seed: u64,
    reason: &impl std::fmt::Display,
    minimal: &impl Debug,
) {
    eprintln!("fuzz {target}: FAILED case {case_seed:#018x}: {reason}");
    eprintln!("  minimal input (after shrinking): {minimal:#?}");
    eprintln!(
        "  reproduce: scripts/fuzz --seed {:#018x} --replay {case_seed:#018x} {target}",
        budget.run_seed
    );
}

fn config() -> Config {
    Config {
        // Regression files would land in the source tree; failures are reported with a seed.
        failure_persistence: None,
        max_shrink_iters: 100_000,
        max_shrink_time: 60_000,
        ..Config::default()
    }
}

/// XorShift rather than proptest's default ChaCha: in the unoptimized build `cargo test` makes,
/// ChaCha's SIMD code took most of the time of the cheaper targets.
fn rng(case_seed: u64) -> TestRng {
    let mut expand = SplitMix(case_seed);
    let mut seed = [0u8; 16];
    for chunk in seed.chunks_mut(8) {
        chunk.copy_from_slice(&expand.next().to_le_bytes());
    }
    TestRng::from_seed(RngAlgorithm::XorShift, &seed)
}

/// SplitMix64: turns one seed into a stream of well-mixed seeds.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// What the command line asked for.
struct Args {
    duration: Duration,
    run_seed: u64,
    replay: Option<u64>,
    /// Like cargo's test filters: a target runs when its name contains one of them.
    filters: Vec<String>,
}

/// Without arguments (as `cargo test` runs it) every target runs for a few seconds.
const DEFAULT_SECONDS: f64 = 3.0;

const USAGE: &str = "usage: fuzz [--seconds N] [--seed S] [--replay CASE_SEED] [FILTER...]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        duration: Duration::from_secs_f64(DEFAULT_SECONDS),
        run_seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|now| now.as_nanos() as u64)
            .unwrap_or_default(),
        replay: None,
        filters: Vec::new(),
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = |name: &str| words.next().ok_or(format!("{name} needs a value"));
        match word.as_str() {
            "--seconds" => {
                args.duration = value("--seconds")?
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or("--seconds must be a number of seconds")?;
            }
            "--seed" => args.run_seed = parse_seed(&value("--seed")?)?,
            "--replay" => args.replay = Some(parse_seed(&value("--replay")?)?),
            "--help" | "-h" => return Err(USAGE.to_owned()),
            // Flags meant for libtest (`cargo test -- --nocapture`) mean nothing here.
            flag if flag.starts_with('-') => {}
            // `cargo test NAME` hands NAME to every test binary: a filter that names no target
            // runs nothing, as it would in libtest.
            filter => args.filters.push(filter.to_owned()),
        }
    }
    Ok(args)
}

fn parse_seed(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("not a seed: {text:?}"))
}

/// Runs the selected targets one after the other and prints a line per target, then a summary
/// in the shape of cargo's test summary (which scripts/test adds up).
pub fn main(targets: &[Target]) -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    let selected: Vec<&Target> = targets
        .iter()
        .filter(|t| {
            args.filters.is_empty() || args.filters.iter().any(|f| t.name.contains(f.as_str()))
        })
        .collect();
    println!(
        "fuzzing {} target(s), {:.0} s each, run seed {:#018x}",
        selected.len(),
        args.duration.as_secs_f64(),
        args.run_seed
    );
    let started = Instant::now();
    let (mut passed, mut failed) = (0, 0);
    for target in selected {
        let budget = Budget {
            duration: args.duration,
            run_seed: args.run_seed,
            replay: args.replay,
        };
        let outcome = (target.run)(&budget);
        println!(
            "fuzz {:<8} {:>10} cases in {:>7.1} s ({:>8.0}/s), {} failure(s)",
            target.name,
            outcome.cases,
            outcome.elapsed.as_secs_f64(),
            outcome.cases as f64 / outcome.elapsed.as_secs_f64().max(1e-9),
            outcome.failures
        );
        if outcome.failures == 0 {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s\n",
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
