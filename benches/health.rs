//! HealthMonitor hot path: one sample through the model (score, bands,
//! anomaly, least-squares prediction over a 1 000-sample window) with
//! scripted values, against the baseline of refreshing the built-in OS
//! probes once (sysinfo), which is what a real sample also pays.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use selfheal::health::Thresholds;
use selfheal::health::{CpuProbe, DiskProbe, MemoryProbe, ProcessRssProbe, ProcessThreadsProbe};
use selfheal::testing::GaussianNoise;
use selfheal::testing::{health_model, HealthModel};
use selfheal::{HealthConfig, HealthProbe};

const SEC: u64 = 1_000_000_000;

fn model(metrics: usize, window: usize) -> HealthModel {
    let mut cfg = HealthConfig::new()
        .history_capacity(1_000)
        .prediction_window(window)
        .prediction_min_samples(20.min(window));
    for i in 0..metrics {
        cfg = cfg.metric(format!("m{i}"), Thresholds::percent(80.0, 90.0));
    }
    health_model(&cfg).unwrap()
}

fn bench_model(c: &mut Criterion) {
    let mut g = c.benchmark_group("health_model_sample");
    for metrics in [1usize, 5] {
        g.throughput(Throughput::Elements(metrics as u64));
        g.bench_with_input(
            BenchmarkId::new("window_1000", metrics),
            &metrics,
            |b, &metrics| {
                let mut m = model(metrics, 1_000);
                let mut noise = GaussianNoise::new(1);
                let mut t = 0u64;
                // Fill the history so every sample fits 1 000 points.
                let mut values = vec![Some(0.0); metrics];
                for _ in 0..1_000 {
                    values
                        .iter_mut()
                        .for_each(|v| *v = Some(noise.sample(40.0, 2.0)));
                    m.sample(t, &values).unwrap();
                    t += SEC;
                }
                b.iter(|| {
                    values
                        .iter_mut()
                        .for_each(|v| *v = Some(noise.sample(40.0, 2.0)));
                    t += SEC;
                    black_box(m.sample(t, black_box(&values)).unwrap());
                });
            },
        );
    }
    g.finish();
}

fn bench_os_probes(c: &mut Criterion) {
    let probes: Vec<Arc<dyn HealthProbe>> = vec![
        Arc::new(CpuProbe::new()),
        Arc::new(MemoryProbe::new()),
        Arc::new(DiskProbe::new(std::env::temp_dir()).unwrap()),
        Arc::new(ProcessRssProbe::new().unwrap()),
        Arc::new(ProcessThreadsProbe::new()),
    ];
    let mut g = c.benchmark_group("health_os_probes");
    for p in &probes {
        let name = p.name().split(':').next().unwrap_or("disk").to_string();
        g.bench_function(BenchmarkId::new("sample", name), |b| {
            b.iter(|| black_box(p.sample().ok()));
        });
    }
    g.bench_function("sample_all_5", |b| {
        b.iter(|| {
            for p in &probes {
                black_box(p.sample().ok());
            }
        });
    });
    g.finish();
}

criterion_group!(benches, bench_model, bench_os_probes);
criterion_main!(benches);
