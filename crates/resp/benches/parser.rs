//! Criterion micro-benchmarks of the request decoder: a pipelined batch of small SETs (the hot path
//! of redis-benchmark), one large bulk fed in 16 KiB reads, and inline commands.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shoal_resp::{Decoded, Limits, RequestDecoder};
use std::hint::black_box;

fn set_batch(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        let key = format!("key:{i:012}");
        v.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$64\r\n", key.len()).as_bytes(),
        );
        v.extend_from_slice(&[b'x'; 64]);
        v.extend_from_slice(b"\r\n");
    }
    v
}

fn decode_all(d: &mut RequestDecoder, buf: &[u8], args: &mut Vec<std::ops::Range<usize>>) -> usize {
    let mut pos = 0;
    let mut frames = 0;
    loop {
        match d.decode(buf, pos, args) {
            Ok(Decoded::Frame { end, .. }) => {
                frames += 1;
                pos = end;
            }
            Ok(Decoded::Empty { end }) => pos = end,
            _ => return frames,
        }
    }
}

fn bench(c: &mut Criterion) {
    let batch = set_batch(16);
    let mut g = c.benchmark_group("decoder");
    g.throughput(Throughput::Elements(16));
    g.bench_function("pipelined 16 SETs of 64 bytes", |b| {
        let mut d = RequestDecoder::new(Limits::default());
        let mut args = Vec::new();
        b.iter(|| black_box(decode_all(&mut d, black_box(&batch), &mut args)))
    });
    let inline = b"SET key:000000000001 somevalue\r\nGET key:000000000001\r\n".repeat(8);
    g.throughput(Throughput::Elements(16));
    g.bench_function("inline 16 commands", |b| {
        let mut d = RequestDecoder::new(Limits::default());
        let mut args = Vec::new();
        b.iter(|| black_box(decode_all(&mut d, black_box(&inline), &mut args)))
    });
    let mut big = b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$1048576\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'v', 1 << 20));
    big.extend_from_slice(b"\r\n");
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("1 MiB bulk in 16 KiB reads", |b| {
        let mut args = Vec::new();
        b.iter(|| {
            let mut d = RequestDecoder::new(Limits::default());
            let mut got = 0;
            for end in (16 * 1024..=big.len())
                .step_by(16 * 1024)
                .chain([big.len()])
            {
                if let Ok(Decoded::Frame { .. }) = d.decode(&big[..end], 0, &mut args) {
                    got += 1;
                    break;
                }
            }
            black_box(got)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
