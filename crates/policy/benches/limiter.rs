//! Rate limiter benchmarks: the decision cost with 1 M tracked clients, from one thread and
//! from two threads at once, the cost of a new client in a full zone, and the measured heap
//! bytes per tracked client (a counting global allocator, not an estimate).
//!
//! Run: `CARGO_TARGET_DIR=/tmp/target-limiter cargo bench -p portcullis-policy --bench limiter`

use criterion::{criterion_group, Criterion};
use portcullis_policy::limiter::{Delay, Rate, Zone, ZoneSettings};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Counts live heap bytes so the memory figure is measured.
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator with the caller's arguments unchanged;
// the counter is bookkeeping only.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_ptr = System.realloc(ptr, layout, new_size);
        if !new_ptr.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new_ptr
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const T0: u64 = 1_700_000_000_000;
const CLIENTS: u32 = 1_000_000;

/// Distinct pseudo-random clients: three in four IPv4, one in four an IPv6 /64.
fn client(i: u32) -> IpAddr {
    let scrambled = i.wrapping_mul(0x9E37_79B1); // odd multiplier: a bijection on u32
    if i.is_multiple_of(4) {
        IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8_u128 << 96) | (u128::from(scrambled) << 64),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(scrambled))
    }
}

fn new_zone(max_clients: usize) -> Zone {
    Zone::new(ZoneSettings {
        name: "bench".into(),
        rate: Rate::per_second(10),
        burst: 20,
        delay: Delay::NoDelay,
        max_clients,
    })
}

/// A zone holding `clients` distinct clients; max_clients leaves 10 % headroom so per-shard
/// capacity (hash spread is not perfectly even) evicts none of them.
fn zone_with_clients(clients: u32) -> Zone {
    let zone = new_zone(clients as usize * 11 / 10);
    for i in 0..clients {
        zone.check(client(i), T0);
    }
    zone
}

/// xorshift64: a cheap per-thread sequence of uniformly random client indices.
fn next_index(state: &mut u64) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (((*state >> 32) * u64::from(CLIENTS)) >> 32) as u32
}

fn report_memory() {
    let cases = [
        (
            "1 M clients, max_clients 1.1 M",
            1_100_000usize,
            1_000_000u32,
        ),
        (
            "full zone: max_clients 1 M, 1.2 M distinct seen",
            1_000_000,
            1_200_000,
        ),
        (
            "full zone: max_clients 160 k, 200 k distinct seen",
            160_000,
            200_000,
        ),
    ];
    for (label, max_clients, seen) in cases {
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        let zone = new_zone(max_clients);
        for i in 0..seen {
            zone.check(client(i), T0);
        }
        let bytes = LIVE_BYTES.load(Ordering::Relaxed) - before;
        let tracked = zone.len();
        println!(
            "limiter memory [{label}]: {tracked} tracked, {} evicted, {bytes} heap bytes \
             measured = {:.1} bytes per tracked client (memory_bytes() reports {:.1}; nginx: 128)",
            zone.evictions(),
            bytes as f64 / tracked as f64,
            zone.memory_bytes() as f64 / tracked as f64,
        );
    }
}

fn bench_checks(c: &mut Criterion) {
    let zone = zone_with_clients(CLIENTS);
    assert_eq!(zone.len(), CLIENTS as usize, "no client may be evicted");
    let mut group = c.benchmark_group("limiter");

    group.bench_function("check/1M_clients/1_thread", |b| {
        let mut rng = 0x1234_5678_9ABC_DEF1;
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            black_box(zone.check(client(next_index(&mut rng)), T0 + (n >> 12)))
        })
    });

    // Each thread runs `iters` decisions concurrently; the slower thread's time per decision
    // is the latency under two-thread contention (throughput is twice that rate).
    group.bench_function("check/1M_clients/2_threads", |b| {
        b.iter_custom(|iters| {
            let barrier = Barrier::new(2);
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..2u64)
                    .map(|t| {
                        let (zone, barrier) = (&zone, &barrier);
                        scope.spawn(move || {
                            let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (t + 1).wrapping_mul(0xABCD);
                            barrier.wait();
                            let start = Instant::now();
                            for n in 0..iters {
                                let i = next_index(&mut rng);
                                black_box(zone.check(client(i), T0 + (n >> 12)));
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().unwrap_or(Duration::MAX))
                    .max()
                    .unwrap_or_default()
            })
        })
    });

    // The same path with a cache-resident table: the engine's own cost, without DRAM and TLB
    // misses (compare with the 1 M case to see how much is memory latency).
    let small = zone_with_clients(10_000);
    group.bench_function("check/10k_clients/1_thread", |b| {
        let mut rng = 0x1234_5678_9ABC_DEF1;
        b.iter(|| {
            let i = next_index(&mut rng) % 10_000;
            black_box(small.check(client(i), T0))
        })
    });

    // A never-seen client arriving at a full zone: insert plus LRU eviction.
    let full = new_zone(CLIENTS as usize);
    for i in 0..CLIENTS {
        full.check(client(i), T0);
    }
    group.bench_function("check/new_client_full_zone/1_thread", |b| {
        let mut i = CLIENTS;
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(full.check(client(i), T0))
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench_checks
}

fn main() {
    report_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
