//! Per-execution engine overhead for a trivial guest (`_start` writes "ok"
//! to stdout): one `PreparedModule::run` — WASI context, store,
//! instantiation from the pool, the call, collecting the output — with the
//! settings `atom run` uses. CPU work only, so Criterion's figures carry
//! from run to run better than the end-to-end `benches/processes.sh`.
//!
//!   cargo bench --bench engine

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

use atom::engine::wasmtime_engine::{EngineSettings, WasmtimeEngine};
use atom::engine::{
    finish_thread_work, GuestDocument, GuestInput, GuestLimits, ProcessEngine, Properties,
};

const OK_GUEST: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "ok")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

fn trivial_guest(c: &mut Criterion) {
    // As `atom run` sizes it by default: general workers + low-latency slots + 4.
    let engine = WasmtimeEngine::new(EngineSettings {
        max_instances: 64,
        max_memory: 256 << 20,
        cache_dir: None,
    })
    .expect("engine");
    let module = engine.prepare(OK_GUEST.as_bytes()).expect("prepares");
    let env: Vec<(String, String)> = (0..12)
        .map(|i| (format!("DDP_PROPERTY_{i}"), format!("value {i}")))
        .collect();
    let properties = Properties::new();
    let document = vec![b'x'; 1024];
    let input = || GuestInput {
        document: GuestDocument::Bytes(&document),
        env: &env,
        properties: &properties,
        limits: GuestLimits {
            max_time: Duration::from_secs(30),
            max_memory: 64 << 20,
            max_output: 16 << 20,
        },
    };
    let run = module.run(input());
    assert!(
        run.outcome.is_ok(),
        "the guest runs: {:?}",
        run.outcome.err()
    );
    c.bench_function("engine: trivial guest, one execution", |b| {
        b.iter(|| module.run(input()))
    });
    // What a worker waits for: the run alone, with the slot's reset and
    // the next instantiation done afterwards, as workers do them once the
    // result is recorded.
    c.bench_function("engine: trivial guest, the run a worker waits for", |b| {
        b.iter_custom(|iterations| {
            let mut waited = Duration::ZERO;
            for _ in 0..iterations {
                let started = std::time::Instant::now();
                let run = module.run(input());
                waited += started.elapsed();
                std::hint::black_box(run);
                finish_thread_work();
            }
            waited
        })
    });
}

criterion_group!(benches, trivial_guest);
criterion_main!(benches);
