//! The wasmtime engine: one `Engine` for the runtime, modules compiled once
//! per deploy (precompiled artifacts cached on disk, keyed by the module's
//! hash and the engine's compatibility hash), an `InstancePre` per module,
//! the pooling allocator, epoch interruption driven by one ticker thread,
//! a resource limiter for memory and capped output pipes.
//!
//! Guests run asynchronously on a small runtime of the worker's own thread:
//! the epoch makes running code yield every tick, and a timeout around the
//! whole call stops a guest at its time limit whether it computes or waits
//! in a host call (a WASI sleep cannot outlast the limit).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap, TypedFunc,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use super::host_abi::{self, HostState};
use super::stdin::StreamStdin;
use super::{
    GuestDocument, GuestFailure, GuestInput, GuestRun, OutputDocument, PreparedModule,
    ProcessEngine,
};

/// How often the ticker advances the epoch: the granularity of time limits.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The process log of one run is cut here.
const MAX_STDERR: usize = 1 << 20;
/// Table elements a guest may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Settings of the engine as a whole.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Guests that may be instantiated at once (pooling allocator slots).
    pub max_instances: u32,
    /// The most linear memory any guest may have.
    pub max_memory: usize,
    /// Where precompiled modules are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
}

pub struct WasmtimeEngine {
    engine: Engine,
    linker: Arc<Linker<GuestState>>,
    settings: EngineSettings,
}

/// Store data of one guest run.
struct GuestState {
    wasi: WasiP1Ctx,
    host: HostState,
    limiter: MemoryLimiter,
}

/// Refuses memory growth past the limit and remembers the attempt, so the
/// execution's error says what happened rather than "trap".
struct MemoryLimiter {
    max_memory: usize,
    refused: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.refused = Some(desired);
            // An error (not `false`) traps: guests rarely handle a failed grow.
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl WasmtimeEngine {
    /// Builds the engine and starts its epoch ticker thread.
    pub fn new(settings: EngineSettings) -> Result<Arc<WasmtimeEngine>, String> {
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_core_instances(settings.max_instances)
            .total_memories(settings.max_instances)
            .total_tables(settings.max_instances)
            .total_stacks(settings.max_instances)
            .max_memory_size(settings.max_memory)
            // A slot's memory is reset for the next guest by rewriting the
            // pages the last one touched (found with PAGEMAP_SCAN on Linux
            // 6.7+, else the first MiB) instead of `madvise` and a page
            // fault per page on reuse: a trivial guest's run went from
            // about 14-21 us to 8-9 us (`cargo bench --bench engine`).
            // Reset either way, so no guest sees another's data.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        // Reserve only what a guest may use (not wasmtime's 4 GiB per slot):
        // the pool then needs a few GiB of address space rather than
        // 100+, which keeps `ulimit -v` and valgrind workable. The price is
        // explicit bounds checks in guest code.
        config
            .memory_reservation(settings.max_memory as u64)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).map_err(|e| format!("starting wasmtime: {e:#}"))?;
        let mut linker: Linker<GuestState> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut GuestState| &mut s.wasi)
            .map_err(|e| format!("linking WASI: {e:#}"))?;
        host_abi::add_to_linker(&mut linker, |s: &mut GuestState| &mut s.host)
            .map_err(|e| format!("linking the atom module: {e:#}"))?;
        if let Some(dir) = &settings.cache_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("creating module cache {}: {e}", dir.display()))?;
        }
        start_ticker(engine.weak());
        Ok(Arc::new(WasmtimeEngine {
            engine,
            linker: Arc::new(linker),
            settings,
        }))
    }

    /// The module for these bytes: from the cache when it was compiled
    /// before by a compatible engine, else compiled (and cached).
    fn module(&self, bytes: &[u8]) -> Result<Module, String> {
        let Some(dir) = &self.settings.cache_dir else {
            return compile(&self.engine, bytes);
        };
        let path = dir.join(format!("{}.cwasm", self.cache_key(bytes)));
        if path.is_file() {
            // SAFETY: the file is one we serialised ourselves into the
            // runtime's own data directory, under a name that includes the
            // engine's compatibility hash; wasmtime also checks its header.
            match unsafe { Module::deserialize_file(&self.engine, &path) } {
                Ok(module) => return Ok(module),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cached module unusable; compiling again")
                }
            }
        }
        let module = compile(&self.engine, bytes)?;
        if let Err(e) = module
            .serialize()
            .map_err(|e| e.to_string())
            .and_then(|artifact| write_atomically(&path, &artifact).map_err(|e| e.to_string()))
        {
            tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled module");
        }
        Ok(module)
    }

    fn cache_key(&self, bytes: &[u8]) -> String {
        let mut compat = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut compat);
        let mut digest = Sha256::new();
        digest.update(compat.finish().to_le_bytes());
        digest.update(bytes);
        digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Whether a module has a start function; `None` when the bytes are not
/// a core module we can read (then nothing is instantiated ahead).
fn has_start_function(bytes: &[u8]) -> Option<bool> {
    let binary = if bytes.starts_with(b"\0asm") {
        std::borrow::Cow::Borrowed(bytes)
    } else {
        wat::parse_bytes(bytes).ok()?
    };
    let mut rest = binary.strip_prefix(b"\0asm\x01\0\0\0")?;
    const START_SECTION: u8 = 8;
    while let Some((&id, after_id)) = rest.split_first() {
        let (size, after_size) = leb128_u32(after_id)?;
        if id == START_SECTION {
            return Some(true);
        }
        rest = after_size.get(size as usize..)?;
    }
    Some(false)
}

/// An unsigned LEB128 number of at most 32 bits, and what follows it.
fn leb128_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut value: u32 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(5) {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

fn compile(engine: &Engine, bytes: &[u8]) -> Result<Module, String> {
    Module::new(engine, bytes).map_err(|e| format!("does not compile: {e:#}"))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// One thread advances every engine's epoch; it ends with the engine.
fn start_ticker(engine: wasmtime::EngineWeak) {
    let spawned = std::thread::Builder::new()
        .name("atom-epoch-ticker".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match engine.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the epoch ticker; guests will not be time-limited");
    }
}

impl ProcessEngine for WasmtimeEngine {
    fn prepare(&self, bytes: &[u8]) -> Result<Arc<dyn PreparedModule>, String> {
        let module = self.module(bytes)?;
        match module.get_export("_start") {
            Some(wasmtime::ExternType::Func(_)) => {}
            _ => {
                return Err(
                    "exports no _start function; build it as a WASI command (a program with main)"
                        .into(),
                )
            }
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| format!("imports something Atom does not provide: {e:#}"))?;
        Ok(Arc::new(WasmtimeModule {
            id: MODULE_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            engine: self.engine.clone(),
            pre,
            instantiate_ahead: has_start_function(bytes) == Some(false),
        }))
    }

    fn max_memory(&self) -> usize {
        self.settings.max_memory
    }
}

struct WasmtimeModule {
    /// Tells this module's ready instances from another module's.
    id: u64,
    engine: Engine,
    pre: InstancePre<GuestState>,
    /// Whether an instance may be made ahead of its run: not when the
    /// module has a start function, which would run before the run's
    /// stdin and environment are bound.
    instantiate_ahead: bool,
}

/// Numbers prepared modules for [`Ready`].
static MODULE_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// An instance made ahead, after the thread's previous run, and not run yet.
struct Ready {
    module: u64,
    max_memory: usize,
    store: Store<GuestState>,
    start: TypedFunc<(), ()>,
}

/// What a thread does after a run once its result is recorded: drop the
/// finished store (the pool slot's memory is reset then) and make the next
/// instance of the same module.
struct Deferred {
    finished: Store<GuestState>,
    next: Option<NextInstance>,
}

struct NextInstance {
    module: u64,
    engine: Engine,
    pre: InstancePre<GuestState>,
    max_memory: usize,
}

thread_local! {
    /// At most one of each per thread, so a thread holds at most one pool
    /// slot between runs (the pool is sized with a slot per worker).
    static READY: std::cell::RefCell<Option<Ready>> = const { std::cell::RefCell::new(None) };
    static DEFERRED: std::cell::RefCell<Option<Deferred>> = const { std::cell::RefCell::new(None) };
}

/// Does this thread's deferred work: resets the slot of the last run and
/// instantiates ahead for the next. Workers call it after recording an
/// execution's result; a run calls it first when nobody did.
pub fn finish_thread_work() {
    let Some(deferred) = DEFERRED.with(|d| d.borrow_mut().take()) else {
        return;
    };
    drop(deferred.finished);
    let Some(next) = deferred.next else { return };
    // One ready instance per thread: the one made for another module goes.
    drop(READY.with(|r| r.borrow_mut().take()));
    let mut store = new_store(&next.engine, GuestState::idle(next.max_memory));
    let made = block_on_worker(next.pre.instantiate_async(&mut store)).and_then(|instance| {
        instance
            .and_then(|i| i.get_typed_func::<(), ()>(&mut store, "_start"))
            .map_err(|e| format!("{e:#}"))
    });
    match made {
        Ok(start) => READY.with(|r| {
            *r.borrow_mut() = Some(Ready {
                module: next.module,
                max_memory: next.max_memory,
                store,
                start,
            })
        }),
        // The run will instantiate then, and report why if it fails again.
        Err(e) => tracing::debug!(error = %e, "could not instantiate ahead"),
    }
}

impl GuestState {
    /// The state of an instance made ahead: replaced before it runs.
    fn idle(max_memory: usize) -> GuestState {
        GuestState {
            wasi: WasiCtxBuilder::new().build_p1(),
            host: HostState::default(),
            limiter: MemoryLimiter {
                max_memory,
                refused: None,
            },
        }
    }
}

fn new_store(engine: &Engine, state: GuestState) -> Store<GuestState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // Yield to the run's timeout at every epoch tick.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    store
}

impl WasmtimeModule {
    /// The instance made ahead for this module on this thread, if any.
    fn take_ready(&self, max_memory: usize) -> Option<(Store<GuestState>, TypedFunc<(), ()>)> {
        READY.with(|r| {
            let mut ready = r.borrow_mut();
            match ready.take() {
                Some(found) if found.module == self.id && found.max_memory == max_memory => {
                    Some((found.store, found.start))
                }
                // Another module's: its slot is freed before this run takes one.
                other => {
                    drop(other);
                    None
                }
            }
        })
    }
}

impl PreparedModule for WasmtimeModule {
    fn run(&self, input: GuestInput<'_>) -> GuestRun {
        let started = Instant::now();
        finish_thread_work();
        let limits = input.limits;
        let stdout = CappedPipe::new(limits.max_output);
        let stderr = MemoryOutputPipe::new(MAX_STDERR);
        let mut builder = WasiCtxBuilder::new();
        match input.document {
            GuestDocument::Bytes(bytes) => builder.stdin(MemoryInputPipe::new(bytes.to_vec())),
            GuestDocument::Stream(reader) => builder.stdin(StreamStdin::new(reader)),
        };
        let state = GuestState {
            wasi: builder
                .stdout(stdout.clone())
                .stderr(stderr.clone())
                .envs(input.env)
                .arg("process")
                .build_p1(),
            host: HostState {
                properties: input.properties.clone(),
                max_output: limits.max_output,
                ..HostState::default()
            },
            limiter: MemoryLimiter {
                max_memory: limits.max_memory,
                refused: None,
            },
        };
        let (mut store, ready) = match self.take_ready(limits.max_memory) {
            Some((mut store, start)) => {
                *store.data_mut() = state;
                store.set_epoch_deadline(1);
                (store, Some(start))
            }
            None => (new_store(&self.engine, state), None),
        };

        let mut instantiate = Duration::ZERO;
        let called = {
            let pre = &self.pre;
            let store = &mut store;
            let instantiate = &mut instantiate;
            let call = async move {
                let start = match ready {
                    Some(start) => start,
                    None => {
                        let instance = pre.instantiate_async(&mut *store).await?;
                        instance.get_typed_func::<(), ()>(&mut *store, "_start")?
                    }
                };
                *instantiate = started.elapsed();
                start.call_async(&mut *store, ()).await
            };
            block_on_worker(async { tokio::time::timeout(limits.max_time, call).await })
        };
        let host = std::mem::take(&mut store.data_mut().host);
        let refused = store.data().limiter.refused;
        // More output than the limit fails the run however the guest
        // ended: a guest that ignored a failed write (or -4 from `emit`)
        // must not end COMPLETE with its output cut short.
        let overflowed = stdout.overflowed() || host.output_limit_hit;
        let outcome = match called {
            _ if overflowed => Err(GuestFailure::OutputLimit(limits.max_output)),
            Err(reason) => Err(GuestFailure::Instantiate(reason)),
            Ok(Err(_elapsed)) => Err(GuestFailure::TimeLimit(limits.max_time)),
            Ok(Ok(Ok(()))) => Ok(()),
            // proc_exit(0), as Rust's std calls it: a normal end.
            Ok(Ok(Err(e))) if e.downcast_ref::<I32Exit>().is_some_and(|x| x.0 == 0) => Ok(()),
            Ok(Ok(Err(e))) => Err(classify(e, refused, limits)),
        }
        .and_then(|()| collect(host, &stdout, limits.max_output));
        let total = started.elapsed();
        // An instance runs once: the store is dropped, and the next
        // instance made, after the caller has recorded this result.
        DEFERRED.with(|d| {
            *d.borrow_mut() = Some(Deferred {
                finished: store,
                next: self.instantiate_ahead.then(|| NextInstance {
                    module: self.id,
                    engine: self.engine.clone(),
                    pre: self.pre.clone(),
                    max_memory: limits.max_memory,
                }),
            })
        });
        GuestRun {
            outcome,
            stderr: stderr.contents().to_vec(),
            instantiate,
            total,
        }
    }
}

thread_local! {
    /// Each worker thread drives its guests on its own single-threaded runtime.
    static WORKER_RUNTIME: Result<tokio::runtime::Runtime, String> =
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| format!("starting the guest runtime: {e}"));
}

fn block_on_worker<F: std::future::Future>(future: F) -> Result<F::Output, String> {
    WORKER_RUNTIME.with(|runtime| match runtime {
        Ok(runtime) => Ok(runtime.block_on(future)),
        Err(e) => Err(e.clone()),
    })
}

/// Turns a wasmtime error into the reason a user reads.
fn classify(
    error: wasmtime::Error,
    memory_refused: Option<usize>,
    limits: super::GuestLimits,
) -> GuestFailure {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return GuestFailure::Exit(exit.0);
    }
    if let Some(requested) = memory_refused {
        return GuestFailure::MemoryLimit {
            limit: limits.max_memory,
            requested,
        };
    }
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return GuestFailure::TimeLimit(limits.max_time);
    }
    let text = format!("{error:#}");
    if text.contains("instance") && text.contains("limit") {
        return GuestFailure::Instantiate(text);
    }
    GuestFailure::Trap(text)
}

/// Emitted documents, then stdout as the last one when not empty.
fn collect(
    host: HostState,
    stdout: &CappedPipe,
    max_output: usize,
) -> Result<Vec<OutputDocument>, GuestFailure> {
    let mut documents = host.documents;
    let out = stdout.take();
    if host.emitted_bytes + out.len() > max_output {
        return Err(GuestFailure::OutputLimit(max_output));
    }
    if !out.is_empty() {
        documents.push(OutputDocument {
            bytes: out,
            properties: host.properties,
        });
    }
    Ok(documents)
}

/// The guest's stdout: a memory pipe that refuses a write past its
/// capacity *and remembers that it did*. wasmtime's `MemoryOutputPipe`
/// only fails the write, so a guest that ignores write errors used to end
/// COMPLETE with its output silently cut at the limit.
#[derive(Clone)]
struct CappedPipe {
    capacity: usize,
    inner: Arc<std::sync::Mutex<CappedBuffer>>,
}

#[derive(Default)]
struct CappedBuffer {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl CappedPipe {
    fn new(capacity: usize) -> CappedPipe {
        CappedPipe {
            capacity,
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CappedBuffer> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.lock().bytes)
    }

    /// Appends, or records the overflow and keeps nothing more.
    fn append(&self, data: &[u8]) -> Result<(), String> {
        let mut buffer = self.lock();
        if buffer.overflowed || buffer.bytes.len() + data.len() > self.capacity {
            buffer.overflowed = true;
            return Err(format!("output limit of {} bytes exceeded", self.capacity));
        }
        buffer.bytes.extend_from_slice(data);
        Ok(())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.append(&bytes).map_err(|reason| {
            // The guest sees EIO (p1) and may stop; the run fails either way.
            StreamError::LastOperationFailed(wasmtime::Error::msg(reason))
        })
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        if self.overflowed() {
            return Err(StreamError::Closed);
        }
        // Never a short permit at the limit: the whole write is offered,
        // so an overflow is seen rather than cut off silently.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(
            self.append(buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{GuestLimits, Properties};

    fn engine() -> Arc<WasmtimeEngine> {
        engine_with_slots(4)
    }

    fn engine_with_slots(max_instances: u32) -> Arc<WasmtimeEngine> {
        WasmtimeEngine::new(EngineSettings {
            max_instances,
            max_memory: 64 << 20,
            cache_dir: None,
        })
        .expect("engine")
    }

    fn run(wat: &str, max_time: Duration) -> GuestRun {
        let module = engine().prepare(wat.as_bytes()).expect("prepares");
        module.run(GuestInput {
            document: GuestDocument::Bytes(b"doc"),
            env: &[],
            properties: &Properties::new(),
            limits: GuestLimits {
                max_time,
                max_memory: 1 << 20,
                max_output: 1 << 20,
            },
        })
    }

    #[test]
    fn a_sleeping_guest_is_stopped_at_its_time_limit() {
        let wat = r#"(module
          (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (i32.store (i32.const 16) (i32.const 1))
            (i64.store (i32.const 24) (i64.const 600000000000))
            (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;
        let started = Instant::now();
        let run = run(wat, Duration::from_millis(300));
        assert_eq!(
            run.outcome,
            Err(GuestFailure::TimeLimit(Duration::from_millis(300)))
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_thread_runs_guests_after_others_trapped_or_exited() {
        let exit = r#"(module
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start") (call $exit (i32.const 3))))"#;
        let grow = r#"(module (memory (export "memory") 1)
          (func (export "_start") (loop $l (drop (memory.grow (i32.const 16))) (br $l))))"#;
        assert_eq!(
            run(exit, Duration::from_secs(5)).outcome,
            Err(GuestFailure::Exit(3))
        );
        assert!(matches!(
            run(grow, Duration::from_secs(5)).outcome,
            Err(GuestFailure::MemoryLimit { .. })
        ));
        let spin = r#"(module (memory (export "memory") 1)
          (func (export "_start") (loop $l (br $l))))"#;
        assert_eq!(
            run(spin, Duration::from_millis(200)).outcome,
            Err(GuestFailure::TimeLimit(Duration::from_millis(200)))
        );
        a_sleeping_guest_is_stopped_at_its_time_limit();
    }

    /// Writes `chunks` × 64 KiB to stdout, ignoring every write error.
    fn careless_writer(chunks: u32) -> String {
        format!(
            r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 2)
          (func (export "_start") (local $n i32)
            (i32.store (i32.const 0) (i32.const 65536))
            (i32.store (i32.const 4) (i32.const 65536))
            (loop $more
              (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
              (local.set $n (i32.add (local.get $n) (i32.const 1)))
              (br_if $more (i32.lt_u (local.get $n) (i32.const {chunks}))))))"#
        )
    }

    #[test]
    fn output_limit_exceeded_on_stdout_fails_even_when_the_guest_ignores_it() {
        // 3 MiB against a 1 MiB limit: not COMPLETE with 1 MiB.
        let over = run(&careless_writer(48), Duration::from_secs(5));
        assert_eq!(over.outcome, Err(GuestFailure::OutputLimit(1 << 20)));
        let text = over.outcome.expect_err("fails").to_string();
        assert!(text.starts_with("output limit exceeded"), "{text}");
        assert!(text.contains("limits.max_output_mb = 1 MiB"), "{text}");
        // Exactly the limit is fine, and all of it is kept.
        let exact = run(&careless_writer(16), Duration::from_secs(5));
        let documents = exact.outcome.expect("at the limit");
        assert_eq!(documents.len(), 1);
        assert_eq!(documents[0].bytes.len(), 1 << 20);
    }

    #[test]
    fn output_limit_exceeded_through_emit_fails_even_when_minus_4_is_ignored() {
        // Emits 64 KiB twenty times (1.25 MiB), dropping every result.
        let wat = r#"(module
          (import "atom" "emit" (func $emit (param i32 i32) (result i32)))
          (memory (export "memory") 2)
          (func (export "_start") (local $n i32)
            (loop $more
              (drop (call $emit (i32.const 0) (i32.const 65536)))
              (local.set $n (i32.add (local.get $n) (i32.const 1)))
              (br_if $more (i32.lt_u (local.get $n) (i32.const 20))))))"#;
        assert_eq!(
            run(wat, Duration::from_secs(5)).outcome,
            Err(GuestFailure::OutputLimit(1 << 20))
        );
    }

    #[test]
    fn stdout_and_emitted_documents_are_collected() {
        let wat = r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
          (import "atom" "set_property" (func $set (param i32 i32 i32 i32) (result i32)))
          (import "atom" "emit" (func $emit (param i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 64) "k")
          (data (i32.const 72) "v")
          (data (i32.const 80) "one")
          (data (i32.const 96) "two")
          (func (export "_start")
            (drop (call $emit (i32.const 80) (i32.const 3)))
            (drop (call $set (i32.const 64) (i32.const 1) (i32.const 72) (i32.const 1)))
            (i32.store (i32.const 0) (i32.const 96))
            (i32.store (i32.const 4) (i32.const 3))
            (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
        let run = run(wat, Duration::from_secs(5));
        let documents = run.outcome.expect("runs");
        assert_eq!(documents.len(), 2);
        assert_eq!(documents[0].bytes, b"one");
        assert!(documents[0].properties.is_empty());
        assert_eq!(documents[1].bytes, b"two");
        assert_eq!(
            documents[1].properties.get("k").map(String::as_str),
            Some("v")
        );
    }

    fn small_limits() -> GuestLimits {
        GuestLimits {
            max_time: Duration::from_secs(5),
            max_memory: 1 << 20,
            max_output: 1 << 20,
        }
    }

    fn output(module: &dyn PreparedModule, stdin: &[u8], env: &[(String, String)]) -> Vec<u8> {
        let run = module.run(GuestInput {
            document: GuestDocument::Bytes(stdin),
            env,
            properties: &Properties::new(),
            limits: small_limits(),
        });
        let mut documents = run.outcome.expect("runs");
        assert_eq!(documents.len(), 1);
        documents.remove(0).bytes
    }

    /// Copies stdin to stdout, then the first environment entry, then
    /// a global's value as a digit (1 on a fresh instance).
    const ECHO: &str = r#"(module
      (import "wasi_snapshot_preview1" "fd_read" (func $r (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_get" (func $env (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (global $runs (mut i32) (i32.const 0))
      (func $write (param $at i32) (param $len i32)
        (i32.store (i32.const 0) (local.get $at))
        (i32.store (i32.const 4) (local.get $len))
        (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
      (func (export "_start")
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 1024))
        (drop (call $r (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (call $write (i32.const 1024) (i32.load (i32.const 8)))
        (drop (call $sizes (i32.const 16) (i32.const 20)))
        (if (i32.gt_u (i32.load (i32.const 16)) (i32.const 0))
          (then
            (drop (call $env (i32.const 32) (i32.const 4096)))
            (call $write (i32.load (i32.const 32)) (i32.sub (i32.load (i32.const 20)) (i32.const 1)))))
        (global.set $runs (i32.add (global.get $runs) (i32.const 1)))
        (i32.store8 (i32.const 64) (i32.add (i32.const 48) (global.get $runs)))
        (call $write (i32.const 64) (i32.const 1))))"#;

    /// An instance made ahead is bound to its own run's stdin and
    /// environment, and never runs twice (the global starts at 0 each time).
    #[test]
    fn an_instance_made_ahead_gets_its_runs_stdin_and_environment_and_runs_once() {
        let engine = engine();
        let module = engine.prepare(ECHO.as_bytes()).expect("prepares");
        for round in 0..5 {
            let stdin = format!("doc{round}|");
            let env = [("K".to_string(), format!("v{round}"))];
            assert_eq!(
                output(&*module, stdin.as_bytes(), &env),
                format!("doc{round}|K=v{round}1").into_bytes(),
                "round {round}"
            );
            // As a worker does once the result is recorded.
            finish_thread_work();
            assert!(
                READY.with(|r| r.borrow().is_some()),
                "an instance is ready after round {round}"
            );
        }
        assert_eq!(output(&*module, b"", &[]), b"1");
        finish_thread_work();
    }

    /// A start function runs while instantiating: such a module is not
    /// instantiated ahead, so the start function writes to its run's stdout.
    #[test]
    fn a_module_with_a_start_function_is_not_instantiated_ahead() {
        let wat = r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 16) "started")
          (func $init
            (i32.store (i32.const 0) (i32.const 16))
            (i32.store (i32.const 4) (i32.const 7))
            (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
          (start $init)
          (func (export "_start")))"#;
        assert_eq!(has_start_function(wat.as_bytes()), Some(true));
        assert_eq!(has_start_function(ECHO.as_bytes()), Some(false));
        let binary = wat::parse_str(ECHO).expect("assembles");
        assert_eq!(has_start_function(&binary), Some(false));
        assert_eq!(has_start_function(b"\0asm\x01\0\0\0\x08\xff"), None);
        let engine = engine();
        let module = engine.prepare(wat.as_bytes()).expect("prepares");
        for round in 0..3 {
            assert_eq!(output(&*module, b"", &[]), b"started", "round {round}");
            finish_thread_work();
            assert!(READY.with(|r| r.borrow().is_none()));
        }
    }

    /// The instance a thread made ahead for one module gives its pool slot
    /// back before the thread runs another module: with a single slot,
    /// alternating modules still run.
    #[test]
    fn a_ready_instance_gives_its_slot_to_another_module() {
        let engine = engine_with_slots(1);
        let echo = engine.prepare(ECHO.as_bytes()).expect("prepares");
        let other = engine
            .prepare(ECHO.replace("(i32.const 48)", "(i32.const 64)").as_bytes())
            .expect("prepares");
        for round in 0..3 {
            assert_eq!(output(&*echo, b"a", &[]), b"a1", "round {round}");
            finish_thread_work();
            assert_eq!(output(&*other, b"b", &[]), b"bA", "round {round}");
            finish_thread_work();
        }
    }

    /// Pool slots keep their memory resident between guests: what one
    /// guest left in memory (in the first page and past the first MiB)
    /// must be gone for the next one in the same slot, and grown memory
    /// must not come back either.
    #[test]
    fn a_guest_never_sees_what_the_previous_one_left_in_memory() {
        let wat = r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 32) "cleandirty")
          (func $say (param $dirty i32)
            (i32.store (i32.const 0)
              (select (i32.const 37) (i32.const 32) (local.get $dirty)))
            (i32.store (i32.const 4) (i32.const 5))
            (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
          (func (export "_start") (local $dirty i32)
            ;; Anything left by an earlier guest: a word in the first page,
            ;; a memory grown past 1 page, a word past the first MiB.
            (local.set $dirty
              (i32.or
                (i32.ne (i32.load (i32.const 4096)) (i32.const 0))
                (i32.gt_u (memory.size) (i32.const 1))))
            (call $say (local.get $dirty))
            ;; Leave traces for the next guest.
            (i32.store (i32.const 4096) (i32.const 0xdeadbeef))
            (drop (memory.grow (i32.const 20)))
            (i32.store (i32.const 1114112) (i32.const 0xdeadbeef))))"#;
        let engine = engine();
        let module = engine.prepare(wat.as_bytes()).expect("prepares");
        for round in 0..20 {
            let run = module.run(GuestInput {
                document: GuestDocument::Bytes(b""),
                env: &[],
                properties: &Properties::new(),
                limits: GuestLimits {
                    max_time: Duration::from_secs(5),
                    max_memory: 4 << 20,
                    max_output: 1 << 20,
                },
            });
            let documents = run.outcome.expect("runs");
            assert_eq!(documents[0].bytes, b"clean", "round {round}");
        }
    }
}
